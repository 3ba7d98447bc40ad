"""A KV-event publisher with vLLM's wire contract, for interop tests.

PUB frames (topic, seq 8 bytes BE, msgspec payload); a ROUTER replay endpoint
that answers ["", start_seq] with every buffered batch from start_seq, then the
end marker. Reply shapes:
  current (vLLM today):   ["", topic, seq, payload] ... ["", "", ff*8, ""]
  legacy  (SGLang, older vLLM): ["", seq, payload] ... ["", ff*8, ""]
Event encodings: map (current vLLM structs) or array (array-era vLLM structs).

Driven over stdin/stdout, one JSON object per line:
  out: {"ready": true, "endpoint": ..., "replay_endpoint": ...}
  in:  "publish N"  -> out: {"seq": s, "batch": <tail --json form>} per batch, then {"published": N}
  in:  "quit" or EOF -> exits 0
It also exits on its own after --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from pathlib import Path

import msgspec
import zmq

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, str(Path(__file__).parent))
from vllm_structs import batch_json, make_batch  # noqa: E402

END_SEQ = (-1).to_bytes(8, "big", signed=True)


def bind(sock: zmq.Socket, endpoint: str) -> str:
    sock.bind(endpoint)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:*")
    ap.add_argument("--replay-endpoint", default="tcp://127.0.0.1:*")
    ap.add_argument("--topic", default="kv-events")
    ap.add_argument("--encoding", choices=["map", "array"], default="map")
    ap.add_argument("--replay-shape", choices=["current", "legacy"], default="current")
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--buffer-steps", type=int, default=10_000)
    ap.add_argument("--max-seconds", type=float, default=60)
    a = ap.parse_args()

    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = bind(pub, a.endpoint)
    replay_endpoint = bind(router, a.replay_endpoint)
    topic = a.topic.encode()
    encoder = msgspec.msgpack.Encoder()
    buffer: deque[tuple[int, bytes]] = deque(maxlen=a.buffer_steps)
    next_seq = 0

    def out(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def publish(n: int) -> None:
        nonlocal next_seq
        for _ in range(n):
            seq = next_seq
            next_seq += 1
            batch = make_batch(a.encoding, seq, 1790000000.0 + seq * 0.25, a.rank)
            payload = encoder.encode(batch)
            pub.send_multipart((topic, seq.to_bytes(8, "big"), payload))
            buffer.append((seq, payload))
            out({"seq": seq, "batch": batch_json(batch)})
        out({"published": n})

    def serve_replay() -> None:
        frames = router.recv_multipart()
        if len(frames) != 3:
            return  # a malformed request gets no reply
        client_id, _, start = frames
        start_seq = int.from_bytes(start, "big")
        for seq, buf in buffer:
            if seq >= start_seq:
                if a.replay_shape == "current":
                    router.send_multipart((client_id, b"", topic, seq.to_bytes(8, "big"), buf))
                else:
                    router.send_multipart((client_id, b"", seq.to_bytes(8, "big"), buf))
        if a.replay_shape == "current":
            router.send_multipart((client_id, b"", b"", END_SEQ, b""))
        else:
            router.send_multipart((client_id, b"", END_SEQ, b""))

    stdin = sys.stdin.fileno()
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(stdin, zmq.POLLIN)
    out({"ready": True, "endpoint": endpoint, "replay_endpoint": replay_endpoint})
    deadline = time.monotonic() + a.max_seconds
    pending = b""
    try:
        while time.monotonic() < deadline:
            events = dict(poller.poll(100))
            if router in events:
                serve_replay()
            if stdin in events:
                chunk = os.read(stdin, 4096)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    cmd = line.decode().split()
                    if cmd[:1] == ["publish"]:
                        publish(int(cmd[1]))
                    elif cmd[:1] == ["quit"]:
                        return
    finally:
        pub.close(0)
        router.close(0)
        ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
