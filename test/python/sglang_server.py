"""A stand-in for an SGLang server with data-parallel attention, for the router's SGLang tests.

No model and no tokenizer: /v1/completions takes token-id prompts only and "generates" nothing.
What is faithful to SGLang is what the router depends on (read through the code search; nothing
copied):

- python/sglang/srt/disaggregation/kv_events.py: one ZmqEventPublisher per attention DP rank
  (attn_dp_rank), ports offset by the rank; msgspec structs with array_like=True (tagged arrays:
  ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
  cache_salt, session_id], trailing defaults omitted), the batch [ts, events, attn_dp_rank];
  block hashes are signed 64-bit ints (often negative); the replay ROUTER answers any 3-frame
  request with every buffered batch from int.from_bytes(frame, "big") in the older
  ["", seq, payload] shape, then ["", ff*8, ""].
- python/sglang/srt/entrypoints/openai/serving_base.py extract_routed_dp_rank_from_header: the
  X-Data-Parallel-Rank header picks the DP rank and wins over the body's routed_dp_rank
  (GenerateReqInput.routed_dp_rank; data_parallel_rank is its deprecated name); a header that is
  not an integer is a 400.

Usage: sglang_server.py --port P --events tcp://*:E --replay tcp://*:R --topic T --dp N --page-size 16
Prints {"ready": true} when serving. Routes: POST /v1/completions, GET /health, GET /v1/models,
GET /requests (the rank each request was asked for and got), GET /cache?rank=r,
POST /admin/store and /admin/evict {"rank", "token_ids", "cache_salt"?} (publish without a request).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlparse

import msgspec
import zmq

END_SEQ = (-1).to_bytes(8, "big", signed=True)


class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    pass


class BlockStored(KVCacheEvent):
    block_hashes: list[int]
    parent_block_hash: Optional[int]
    token_ids: list[int]
    block_size: int
    lora_id: Optional[int]
    medium: Optional[str] = None
    cache_salt: Optional[str] = None
    session_id: Optional[str] = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: Optional[str] = None


class KVEventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[BlockStored | BlockRemoved]
    attn_dp_rank: Optional[int] = None


def offset(endpoint: str, rank: int) -> str:
    if rank == 0:
        return endpoint
    base, port = endpoint.rsplit(":", 1)
    return f"{base}:{int(port) + rank}"


def page_hash(parent: Optional[int], tokens: list[int], salt: Optional[str]) -> int:
    h = hashlib.sha256()
    h.update(b"root" if parent is None else parent.to_bytes(8, "big", signed=True))
    h.update(b"".join(t.to_bytes(4, "big") for t in tokens))
    if salt is not None and parent is None:
        h.update(salt.encode())
    return int.from_bytes(h.digest()[:8], "big", signed=True)


class Rank:
    """One attention DP rank: its own radix of pages and its own publisher thread."""

    def __init__(self, rank: int, a: argparse.Namespace) -> None:
        self.rank = rank
        self.page = a.page_size
        self.blocks: dict[int, tuple[Optional[int], list[int]]] = {}
        self.lock = threading.Lock()
        self.queue: "queue.Queue[list]" = queue.Queue()
        self.seq = -1
        ctx = zmq.Context.instance()
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(offset(a.events, rank))
        self.replay = ctx.socket(zmq.ROUTER)
        self.replay.setsockopt(zmq.LINGER, 0)
        self.replay.bind(offset(a.replay, rank))
        self.topic = a.topic.encode()
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=10_000)
        threading.Thread(target=self.run, daemon=True).start()

    def chain(self, ids: list[int], salt: Optional[str]) -> list[tuple[int, Optional[int], list[int]]]:
        out, parent = [], None
        for i in range(0, len(ids) - len(ids) % self.page, self.page):
            toks = ids[i : i + self.page]
            h = page_hash(parent, toks, salt)
            out.append((h, parent, toks))
            parent = h
        return out

    def store(self, ids: list[int], salt: Optional[str]) -> int:
        """Caches the full pages of ids; returns the tokens that were already cached."""
        with self.lock:
            pages = self.chain(ids, salt)
            hit = 0
            while hit < len(pages) and pages[hit][0] in self.blocks:
                hit += 1
            new = pages[hit:]
            for h, p, t in new:
                self.blocks[h] = (p, t)
            if new:
                ev = BlockStored(
                    block_hashes=[h for h, _, _ in new],
                    parent_block_hash=new[0][1],
                    token_ids=[x for _, _, t in new for x in t],
                    block_size=self.page,
                    lora_id=None,
                    medium="GPU",
                    cache_salt=salt if new[0][1] is None else None,
                )
                self.queue.put([ev])
            return hit * self.page

    def evict(self, ids: list[int], salt: Optional[str]) -> None:
        with self.lock:
            gone = [h for h, _, _ in reversed(self.chain(ids, salt)) if self.blocks.pop(h, None) is not None]
            if gone:
                self.queue.put([BlockRemoved(block_hashes=gone, medium="GPU")])

    def run(self) -> None:
        enc = msgspec.msgpack.Encoder()
        while True:
            if self.replay.poll(5):
                frames = self.replay.recv_multipart()
                if len(frames) == 3:
                    ident, _, start = frames
                    first = int.from_bytes(start, "big")
                    for s, payload in list(self.buffer):
                        if s >= first:
                            self.replay.send_multipart((ident, b"", s.to_bytes(8, "big"), payload))
                    self.replay.send_multipart((ident, b"", END_SEQ, b""))
            try:
                events = self.queue.get_nowait()
            except queue.Empty:
                continue
            payload = enc.encode(KVEventBatch(ts=time.time(), events=events, attn_dp_rank=self.rank))
            self.seq += 1
            self.pub.send_multipart((self.topic, self.seq.to_bytes(8, "big"), payload))
            self.buffer.append((self.seq, payload))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--replay", required=True)
    ap.add_argument("--topic", default="kv-events")
    ap.add_argument("--dp", type=int, default=1)
    ap.add_argument("--page-size", type=int, default=16)
    a = ap.parse_args()
    ranks = [Rank(r, a) for r in range(a.dp)]
    requests: list[dict] = []
    rr = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self) -> dict:
            n = int(self.headers.get("content-length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def do_GET(self) -> None:
            u = urlparse(self.path)
            if u.path == "/health":
                return self.reply(200, {})
            if u.path == "/v1/models":
                return self.reply(200, {"object": "list", "data": [{"id": "sglang-model", "object": "model"}]})
            if u.path == "/requests":
                return self.reply(200, requests)
            if u.path == "/cache":
                r = ranks[int(parse_qs(u.query).get("rank", ["0"])[0])]
                with r.lock:
                    blocks = [{"hash": str(h), "parent_hash": None if p is None else str(p), "token_ids": t} for h, (p, t) in r.blocks.items()]
                return self.reply(200, {"seq": r.seq, "blocks": blocks})
            self.reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            u = urlparse(self.path)
            b = self.body()
            if u.path in ("/admin/store", "/admin/evict"):
                r = ranks[b["rank"]]
                (r.store if u.path == "/admin/store" else r.evict)(b["token_ids"], b.get("cache_salt"))
                return self.reply(200, {"ok": True})
            if u.path != "/v1/completions":
                return self.reply(404, {"error": "not found"})
            header = self.headers.get("x-data-parallel-rank")
            body_rank = b.get("routed_dp_rank", b.get("data_parallel_rank"))
            if header is not None:
                try:
                    rank = int(header)
                except ValueError:
                    return self.reply(400, {"error": f"Invalid X-Data-Parallel-Rank header: {header!r}"})
            elif body_rank is not None:
                rank = int(body_rank)
            else:
                rank = rr[0] % a.dp  # SGLang's own load balancing: round robin here
                rr[0] += 1
            if not 0 <= rank < a.dp:
                return self.reply(400, {"error": f"routed_dp_rank {rank} out of range [0, {a.dp})"})
            prompt = b.get("prompt")
            if not (isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)):
                return self.reply(400, {"error": "this stand-in takes token-id prompts only"})
            cached = ranks[rank].store(prompt, b.get("cache_salt"))
            requests.append({"rank": rank, "header": header, "body_rank": body_rank, "prompt_tokens": len(prompt), "cached_tokens": cached})
            self.reply(200, {
                "id": f"cmpl-{len(requests)}", "object": "text_completion", "created": int(time.time()), "model": b.get("model", "sglang-model"),
                "choices": [{"index": 0, "text": "", "finish_reason": "length", "logprobs": None}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": 0, "total_tokens": len(prompt), "prompt_tokens_details": {"cached_tokens": cached}},
            })

    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    ppid = os.getppid()

    def watch_parent() -> None:
        while os.getppid() == ppid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    main()
