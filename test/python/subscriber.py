"""A KV-event subscriber as a vLLM consumer writes one, for interop tests.

Every payload is decoded with msgspec's strict typed decoder into the vLLM
structs (--encoding map: today's structs; array: the array-era ones), so a
batch it prints is a batch vLLM's own types accept. Replay replies of both
shapes (["", topic, seq, payload] and ["", seq, payload]) and both end markers
are accepted.

  --from-seq N   replay from N first (DEALER ["", N]), then follow live
  --count N      exit 0 after N batches (replayed + live, duplicates dropped)

Prints one JSON object per line: {"ready": true} once connected, then
{"seq": s, "source": "replay"|"live", "topic": t, "batch": <tail --json form>}
per batch, {"replay_done": true, "last": s} when the replay has ended,
and {"error": ...} (exit 1) for anything it cannot decode. Exits 2 after
--max-seconds without reaching --count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import msgspec
import zmq

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, str(Path(__file__).parent))
from vllm_structs import STRUCTS, batch_json  # noqa: E402

END_SEQ = (-1).to_bytes(8, "big", signed=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--replay-endpoint")
    ap.add_argument("--topic", default="")
    ap.add_argument("--encoding", choices=["map", "array"], default="map")
    ap.add_argument("--from-seq", type=int)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--max-seconds", type=float, default=30)
    a = ap.parse_args()

    decoder = msgspec.msgpack.Decoder(type=STRUCTS[a.encoding][0])  # strict by default
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt_string(zmq.SUBSCRIBE, a.topic)
    sub.connect(a.endpoint)
    deadline = time.monotonic() + a.max_seconds
    seen = 0
    last = -1

    def out(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def emit(seq: int, source: str, topic: bytes, payload: bytes) -> None:
        nonlocal seen, last
        if seq <= last:
            return  # already applied (a live batch that the replay also carried)
        try:
            batch = decoder.decode(payload)
        except msgspec.ValidationError as e:
            out({"error": f"seq {seq}: msgspec rejected the payload: {e}", "payload_hex": payload.hex()})
            raise SystemExit(1)
        last = seq
        seen += 1
        out({"seq": seq, "source": source, "topic": topic.decode(), "batch": batch_json(batch)})

    live: list[list[bytes]] = []
    try:
        time.sleep(0.2)  # let the SUB connect before anything we must see is published
        out({"ready": True})
        if a.from_seq is not None:
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(a.replay_endpoint)
            dealer.send_multipart((b"", a.from_seq.to_bytes(8, "big")))
            while True:
                if time.monotonic() > deadline:
                    out({"error": "replay did not end in time"})
                    return 2
                # Keep draining live frames meanwhile; they are applied after the replay.
                while sub.poll(0):
                    live.append(sub.recv_multipart())
                if not dealer.poll(100):
                    continue
                frames = dealer.recv_multipart()
                if frames[0] != b"" or len(frames) not in (3, 4):
                    out({"error": f"bad replay reply of {len(frames)} frames"})
                    return 1
                topic = frames[1] if len(frames) == 4 else b""
                seq_bytes, payload = frames[-2], frames[-1]
                if seq_bytes == END_SEQ and payload == b"":
                    break
                emit(int.from_bytes(seq_bytes, "big"), "replay", topic, payload)
            dealer.close(0)
            out({"replay_done": True, "last": last})
        for topic, seq_bytes, payload in live:
            emit(int.from_bytes(seq_bytes, "big"), "live", topic, payload)
        while seen < a.count:
            if time.monotonic() > deadline:
                out({"error": f"only {seen} of {a.count} batches within {a.max_seconds} s"})
                return 2
            if sub.poll(100):
                topic, seq_bytes, payload = sub.recv_multipart()
                emit(int.from_bytes(seq_bytes, "big"), "live", topic, payload)
        return 0
    finally:
        sub.close(0)
        ctx.destroy(linger=0)


if __name__ == "__main__":
    sys.exit(main())
