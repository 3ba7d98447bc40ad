"""The KV-event wire structs, declared the way vLLM declares them.

Source of truth: vllm/distributed/kv_events.py (v0.28-era main). The batch is a
positional array (array_like=True); the events are tagged maps ("type" key).
The legacy encoding is the same field set with array_like=True on the events
too (older vLLM): ["BlockStored", field1, field2, ...]. The engine's __hash__
methods are left out: they play no part in encoding.

Every struct keeps msgspec's default strictness: a decoder built on these types
rejects a float where an int is expected, a string where bytes are, and so on.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

# vllm.v1.core.kv_cache_utils.ExternalBlockHash
ExternalBlockHash = Union[bytes, int]


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


# ---------------------------------------------------------------- current: map events


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    """Base class for all KV cache-related events"""


class BlockStored(KVCacheEvent):
    block_hashes: list[ExternalBlockHash]
    parent_block_hash: ExternalBlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None
    locality: str | None = None
    ownership: str | None = None
    session_id: str | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[ExternalBlockHash]
    medium: str | None
    group_idx: int | None = None
    locality: str | None = None
    ownership: str | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[Union[BlockStored, BlockRemoved, AllBlocksCleared]]


# ---------------------------------------------------------------- legacy: tagged-array events


# Older vLLM (the last release whose events were array_like): every field is
# required, so every field is on the wire, in order: ["BlockStored", f1, ..., f7].
# The optional fields above came after the switch to map events.
class LegacyKVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    """Base class for all KV cache-related events"""


class LegacyBlockStored(LegacyKVCacheEvent, tag="BlockStored"):
    block_hashes: list[ExternalBlockHash]
    parent_block_hash: ExternalBlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None


class LegacyBlockRemoved(LegacyKVCacheEvent, tag="BlockRemoved"):
    block_hashes: list[ExternalBlockHash]
    medium: str | None


class LegacyAllBlocksCleared(LegacyKVCacheEvent, tag="AllBlocksCleared"):
    pass


class LegacyKVEventBatch(EventBatch):
    events: list[Union[LegacyBlockStored, LegacyBlockRemoved, LegacyAllBlocksCleared]]


STRUCTS = {
    "map": (KVEventBatch, BlockStored, BlockRemoved, AllBlocksCleared),
    "array": (LegacyKVEventBatch, LegacyBlockStored, LegacyBlockRemoved, LegacyAllBlocksCleared),
}

# ---------------------------------------------------------------- JSON form (as `kv-events tail --json` prints it)


def hash_json(h: Any) -> Any:
    if h is None:
        return None
    if isinstance(h, bytes):
        return "0x" + h.hex()
    return str(h)


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def event_json(ev: Any) -> dict[str, Any]:
    tag = type(ev).__struct_config__.tag
    out: dict[str, Any] = {"type": tag}
    for name in ev.__struct_fields__:
        v = getattr(ev, name)
        if name in ("block_hashes",):
            out[name] = [hash_json(h) for h in v]
        elif name == "parent_block_hash":
            out[name] = hash_json(v)
        elif name in ev.__struct_fields__[: len(ev.__struct_fields__) - len(ev.__struct_defaults__)]:
            out[name] = _plain(v)  # required field: always present, even when None
        elif v is not None:
            out[name] = _plain(v)  # optional field: only when set
    return out


def batch_json(batch: Any) -> dict[str, Any]:
    return {
        "ts": batch.ts,
        "dp_rank": batch.data_parallel_rank,
        "events": [event_json(e) for e in batch.events],
    }


def make_batch(encoding: str, seq: int, ts: float, rank: int | None) -> Any:
    """A deterministic batch for seq: every hash kind (≥ 2^63, negative, bytes, small)
    and every event type appear over any 4 consecutive seqs."""
    Batch, S, R, Cleared = STRUCTS[encoding]

    def Stored(**kw: Any) -> Any:
        return S(**{k: v for k, v in kw.items() if k in S.__struct_fields__})

    def Removed(**kw: Any) -> Any:
        return R(**{k: v for k, v in kw.items() if k in R.__struct_fields__})

    big = (1 << 64) - 1 - seq  # unsigned 64-bit above 2^63
    neg = -(1 << 62) - seq  # signed, negative
    digest = bytes([(seq + i) % 256 for i in range(32)])
    toks = [(seq * 16 + i) * 997 % 151_000 for i in range(32)]
    kind = seq % 4
    if kind == 0:
        events = [Stored(block_hashes=[big, neg], parent_block_hash=None, token_ids=toks, block_size=16,
                         lora_id=None, medium="GPU", lora_name=None)]
    elif kind == 1:
        events = [Stored(block_hashes=[digest], parent_block_hash=big, token_ids=toks[:16], block_size=16,
                         lora_id=7, medium="CPU", lora_name="adapter", group_idx=1, session_id=f"s{seq}"),
                  Removed(block_hashes=[neg, seq], medium="GPU")]
    elif kind == 2:
        events = [Removed(block_hashes=[big], medium=None, group_idx=0, locality="LOCAL")]
    else:
        events = [Cleared(), Stored(block_hashes=[seq + 1], parent_block_hash=neg, token_ids=toks[:16],
                                    block_size=16, lora_id=None, medium=None, lora_name=None)]
    return Batch(ts=ts, events=events, data_parallel_rank=rank)
