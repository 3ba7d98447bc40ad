"""Writes the codec golden fixtures (test/fixtures/codec/*.json) with msgspec.

Every `map_hex` / `array_hex` is what msgspec writes for that batch with the vLLM
structs of test/python/vllm_structs.py, so `test/codec/golden.test.ts` checks our
encoder byte for byte against the Python reference. Two deliberate choices of our
encoder are reproduced with msgspec too:
- a batch without a rank is the 2-element `[ts, events]` (the pre-data-parallel
  vLLM EventBatch), where the current struct would write `[ts, events, nil]`;
- a legacy-array event carries its optional fields (which real array-era vLLM
  never had) up to the last non-nil one. Without optionals the bytes equal the
  array-era vLLM struct's, which this script asserts.

Run: .venv/bin/python test/python/golden.py   (rewrites the fixtures)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, str(Path(__file__).parent))
from vllm_structs import (  # noqa: E402
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    LegacyAllBlocksCleared,
    LegacyBlockRemoved,
    LegacyBlockStored,
    LegacyKVEventBatch,
    batch_json,
)

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "codec"
enc = msgspec.msgpack.Encoder()


class OldEventBatch(msgspec.Struct, array_like=True, gc=False):
    """vLLM before data parallelism: [ts, events]."""

    ts: float
    events: list[Any]


def tokens(n: int, start: int = 0) -> list[int]:
    widths = [0, 1, 127, 128, 255, 256, 65535, 65536, 151_935]
    return [widths[i % len(widths)] + start for i in range(n)]


def digest(seed: int) -> bytes:
    return bytes((seed * 31 + i * 7) % 256 for i in range(32))


CASES: dict[str, tuple[str, float, int | None, list[Any]]] = {
    "u64-hashes": (
        "unsigned 64-bit hashes above 2^63 (uint64), token ids of every int width",
        1790000000.25, 0,
        [BlockStored(block_hashes=[17270480062156288726, (1 << 64) - 1, 1 << 63], parent_block_hash=(1 << 63) + 5,
                     token_ids=tokens(48), block_size=16, lora_id=None, medium="GPU", lora_name=None)],
    ),
    "negative-hashes": (
        "signed 64-bit hashes: negative fixint, int8, int16, int32, int64, -2^63",
        1790000001.5, 1,
        [BlockStored(block_hashes=[-1, -33, -129, -40000, -(1 << 40), -(1 << 63)], parent_block_hash=-7,
                     token_ids=tokens(96, 3), block_size=16, lora_id=None, medium="GPU", lora_name=None),
         BlockRemoved(block_hashes=[-(1 << 63), -1], medium="GPU")],
    ),
    "bytes-hashes": (
        "32-byte digest hashes (bin 8) as block and parent hashes",
        1790000002.125, 0,
        [BlockStored(block_hashes=[digest(1), digest(2)], parent_block_hash=digest(0), token_ids=tokens(32),
                     block_size=16, lora_id=None, medium="GPU", lora_name=None),
         BlockRemoved(block_hashes=[digest(0)], medium="CPU")],
    ),
    "small-int-hashes": (
        "hashes at every int-width boundary: 0, 127, 128, 255, 256, 65535, 65536, 2^32-1, 2^32",
        1790000003.0, 2,
        [BlockStored(block_hashes=[0, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32],
                     parent_block_hash=None, token_ids=tokens(36), block_size=4, lora_id=3, medium=None,
                     lora_name="my-lora")],
    ),
    "optional-fields": (
        "every optional field set (map: only set ones written; array: up to the last non-nil one)",
        1790000004.75, 0,
        [BlockStored(block_hashes=[11, 12], parent_block_hash=10, token_ids=tokens(32), block_size=16, lora_id=5,
                     medium="CPU", lora_name="adapter-a", extra_keys=[("adapter-a", 1), None], group_idx=1,
                     kv_cache_spec_kind="sliding_window", kv_cache_spec_sliding_window=4096, locality="LOCAL",
                     ownership="tier-2", session_id="sess-42"),
         BlockStored(block_hashes=[13], parent_block_hash=12, token_ids=tokens(16), block_size=16, lora_id=None,
                     medium="GPU", lora_name=None, group_idx=2),
         BlockRemoved(block_hashes=[11], medium="CPU", group_idx=1, locality="REMOTE", ownership="tier-2")],
    ),
    "two-element-batch": (
        "no rank: the 2-element [ts, events] batch",
        1790000005.5, None,
        [AllBlocksCleared(), BlockRemoved(block_hashes=[42], medium=None)],
    ),
    "mixed-batch": (
        "a typical batch: clear, store two chained blocks, remove one; rank 3",
        1790000006.0625, 3,
        [AllBlocksCleared(),
         BlockStored(block_hashes=[9000000000000000000, 9000000000000000001], parent_block_hash=None,
                     token_ids=tokens(32, 100), block_size=16, lora_id=None, medium="GPU", lora_name=None),
         BlockRemoved(block_hashes=[9000000000000000001], medium="GPU")],
    ),
    "empty-whole-ts": (
        "no events; a whole-number timestamp is still a float64",
        1790000000.0, 0,
        [],
    ),
}

LEGACY = {BlockStored: LegacyBlockStored, BlockRemoved: LegacyBlockRemoved, AllBlocksCleared: LegacyAllBlocksCleared}


def array_event(ev: Any) -> list[Any]:
    """Tag, then every field in order up to the last required or non-nil one."""
    names = ev.__struct_fields__
    n_required = len(names) - len(ev.__struct_defaults__)
    values = [getattr(ev, k) for k in names]
    n = len(values)
    while n > n_required and values[n - 1] is None:
        n -= 1
    return [type(ev).__struct_config__.tag, *values[:n]]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (about, ts, rank, events) in CASES.items():
        array_events = [array_event(e) for e in events]
        if rank is None:
            map_bytes = enc.encode(OldEventBatch(ts=ts, events=events))
            array_bytes = enc.encode(OldEventBatch(ts=ts, events=array_events))
        else:
            map_bytes = enc.encode(KVEventBatch(ts=ts, events=events, data_parallel_rank=rank))
            array_bytes = enc.encode([ts, array_events, rank])
        # Without optional fields the array form is exactly the array-era vLLM struct's.
        if all(len(a) - 1 <= len(LEGACY[type(e)].__struct_fields__) for a, e in zip(array_events, events)):
            legacy = [LEGACY[type(e)](*a[1:]) for a, e in zip(array_events, events)]
            legacy_bytes = enc.encode(LegacyKVEventBatch(ts=ts, events=legacy, data_parallel_rank=rank)) \
                if rank is not None else enc.encode(OldEventBatch(ts=ts, events=legacy))
            assert legacy_bytes == array_bytes, name
        # Both decode strictly into the vLLM structs.
        if rank is not None:
            assert msgspec.msgpack.decode(map_bytes, type=KVEventBatch) == KVEventBatch(ts, events, rank)
        doc = {
            "about": about,
            "producer": f"msgspec {msgspec.__version__}, structs of test/python/vllm_structs.py (test/python/golden.py)",
            "batch": batch_json(KVEventBatch(ts=ts, events=events, data_parallel_rank=rank)),
            "map_hex": map_bytes.hex(),
            "array_hex": array_bytes.hex(),
        }
        (OUT / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {name}.json ({len(map_bytes)} / {len(array_bytes)} bytes)")


if __name__ == "__main__":
    main()
