"""Packet batches: all packets one sender emits in one tick, and their msgpack wire format.

A batch carries B >= 1 independent streams (a batch axis, like B chips in lockstep), so every
payload has a trailing axis of length B. Three packet kinds travel together:

* multicast without payload (``mc_keys``): spikes, value 1.0 in every stream;
* multicast with payload (``mcp_keys`` + ``mcp_payload`` float32 [m, B], finite);
* point-to-point (``p2p_dest`` endpoint, ``p2p_tag`` < 256, ``p2p_payload`` uint32 [p, B]).

Wire format: one msgpack map per batch ``{"version": 1, "src", "tick", "streams", "mc_keys",
"mcp_keys", "mcp_payload", "p2p_dest", "p2p_tag", "p2p_payload"}`` where every array is a
``bin`` of little-endian raw bytes (uint32 or float32, payloads row-major [count, B]); the
counts follow from the byte lengths. ``decode`` validates everything and raises only
``PacketError``. Its arrays are READ-ONLY zero-copy views of the received bytes (consumers
only read them; copy before modifying).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Iterable, NamedTuple

import msgpack
import numpy as np

from s2emu.errors import PacketError, checked_int

__all__ = [
    "HOST", "WIRE_VERSION", "MAX_STREAMS", "MAX_PACKETS", "MAX_SRC", "MAX_TICK", "MAX_TAG",
    "PacketBatch", "Detour", "make_batch", "spikes_batch", "encode", "decode", "encode_many", "decode_many",
    "merge",
]

HOST = -1  # not used by the router: endpoints are ints chosen by the caller
WIRE_VERSION = 1
MAX_STREAMS = 4096
MAX_PACKETS = 1_000_000  # per batch, all kinds together
MAX_SRC = 2**31 - 1  # endpoint ids (and the router's own id) are far below this
MAX_TICK = 2**48  # ~8900 years of 1 ms ticks: anything above is corrupt
MAX_TAG = 255

_U32 = np.dtype(np.uint32)
_F32 = np.dtype(np.float32)
_FIELDS = ("version", "src", "tick", "streams", "mc_keys", "mcp_keys", "mcp_payload",
           "p2p_dest", "p2p_tag", "p2p_payload")
_ARRAYS = _FIELDS[4:]


def _as_int(value, what: str, lo: int, hi: int) -> int:
    return checked_int(value, what, lo, hi, error=PacketError)


@dataclass(eq=False)
class PacketBatch:
    """Packets one sender emits during one tick. Construct with ``make`` or ``empty``.

    The constructor checks only structure (dtypes, shapes, header ranges), which is O(1);
    ``validate`` also checks values (finite payloads, tags, packet count) and is run by
    ``make``, ``encode`` and ``decode``.
    """

    src: int
    tick: int
    streams: int
    mc_keys: np.ndarray  # uint32 [k]
    mcp_keys: np.ndarray  # uint32 [m]
    mcp_payload: np.ndarray  # float32 [m, B]
    p2p_dest: np.ndarray  # uint32 [p]
    p2p_tag: np.ndarray  # uint32 [p]
    p2p_payload: np.ndarray  # uint32 [p, B]

    def __post_init__(self) -> None:
        self.src = _as_int(self.src, "src", 0, MAX_SRC)
        self.tick = _as_int(self.tick, "tick", 0, MAX_TICK)
        self.streams = _as_int(self.streams, "streams", 1, MAX_STREAMS)
        m, p = _len1(self.mcp_keys, "mcp_keys"), _len1(self.p2p_dest, "p2p_dest")
        _len1(self.mc_keys, "mc_keys")
        for name, dtype, shape in (
            ("mc_keys", _U32, None), ("mcp_keys", _U32, None),
            ("mcp_payload", _F32, (m, self.streams)), ("p2p_dest", _U32, None),
            ("p2p_tag", _U32, (p,)), ("p2p_payload", _U32, (p, self.streams)),
        ):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
                got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
                raise PacketError(f"{name} must be a {dtype} array, got {got}")
            if shape is not None and arr.shape != shape:
                raise PacketError(f"{name} has shape {arr.shape}, expected {shape}")

    @classmethod
    def empty(cls, src: int, tick: int, streams: int) -> PacketBatch:
        b = _as_int(streams, "streams", 1, MAX_STREAMS)
        u, f = np.empty(0, _U32), np.empty((0, b), _F32)
        return cls(src, tick, b, u, u, f, u, u, np.empty((0, b), _U32))

    @classmethod
    def unchecked(cls, src, tick, streams, mc_keys, mcp_keys, mcp_payload, p2p_dest, p2p_tag,
                  p2p_payload) -> PacketBatch:
        """Build without any check, for producers whose inputs are already valid (the router
        slicing validated batches); skips the ~10 us constructor checks per batch."""
        self = object.__new__(cls)
        self.__dict__.update(src=src, tick=tick, streams=streams, mc_keys=mc_keys,
                             mcp_keys=mcp_keys, mcp_payload=mcp_payload, p2p_dest=p2p_dest,
                             p2p_tag=p2p_tag, p2p_payload=p2p_payload)
        return self

    @classmethod
    def make(cls, src: int, tick: int, streams: int = 1, *, mc_keys=(), mcp_keys=(),
             mcp_payload=None, p2p_dest=(), p2p_tag=None, p2p_payload=None) -> PacketBatch:
        """Build a validated batch from array-likes, converting dtypes.

        With ``streams == 1`` a 1-D payload of length m (or p) is taken as [m, 1].
        ``p2p_tag`` defaults to zeros. Values that do not fit the wire dtypes are refused.
        """
        b = _as_int(streams, "streams", 1, MAX_STREAMS)
        mc = _u32_array(mc_keys, "mc_keys")
        mk = _u32_array(mcp_keys, "mcp_keys")
        pd = _u32_array(p2p_dest, "p2p_dest")
        pt = np.zeros(len(pd), _U32) if p2p_tag is None else _u32_array(p2p_tag, "p2p_tag")
        mp = _payload(mcp_payload, len(mk), b, "mcp_payload", _F32)
        pp = _payload(p2p_payload, len(pd), b, "p2p_payload", _U32)
        batch = cls(src, tick, b, mc, mk, mp, pd, pt, pp)
        batch.validate()
        return batch

    def validate(self) -> PacketBatch:
        """Check values (O(packets)); return self. Raises PacketError."""
        n = len(self)
        if n > MAX_PACKETS:
            raise PacketError(f"batch from src {self.src} has {n} packets, limit is {MAX_PACKETS}")
        if self.p2p_tag.size and int(self.p2p_tag.max()) > MAX_TAG:
            i = int(np.argmax(self.p2p_tag > MAX_TAG))
            raise PacketError(f"p2p_tag[{i}] = {int(self.p2p_tag[i])} is not < {MAX_TAG + 1}")
        if self.mcp_payload.size and not np.isfinite(self.mcp_payload).all():
            i, s = np.argwhere(~np.isfinite(self.mcp_payload))[0]
            raise PacketError(
                f"mcp_payload[{i}, {s}] = {self.mcp_payload[i, s]} is not finite "
                f"(key 0x{int(self.mcp_keys[i]):08x})")
        return self

    def __len__(self) -> int:
        return len(self.mc_keys) + len(self.mcp_keys) + len(self.p2p_dest)

    def __eq__(self, other) -> bool:
        if not isinstance(other, PacketBatch):
            return NotImplemented
        if (self.src, self.tick, self.streams) != (other.src, other.tick, other.streams):
            return False
        # Exact comparison: same shapes and identical bytes (so -0.0 != 0.0).
        return all(a.shape == b.shape and a.tobytes() == b.tobytes()
                   for a, b in ((getattr(self, f), getattr(other, f)) for f in _ARRAYS))

    __hash__ = None  # mutable, value-compared

    def __repr__(self) -> str:
        return (f"PacketBatch(src={self.src}, tick={self.tick}, streams={self.streams}, "
                f"mc={len(self.mc_keys)}, mcp={len(self.mcp_keys)}, p2p={len(self.p2p_dest)})")


def _len1(arr, name: str) -> int:
    if not isinstance(arr, np.ndarray) or arr.ndim != 1:
        raise PacketError(f"{name} must be a 1-D array, got "
                          f"{arr.shape if isinstance(arr, np.ndarray) else type(arr).__name__}")
    return arr.shape[0]


def _u32_array(values, name: str) -> np.ndarray:
    """1-D uint32 copy of ``values``; refuses values outside [0, 2**32) naming the first."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.empty(0, _U32)
    if arr.ndim != 1:
        raise PacketError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == _U32:
        return arr.copy()
    if arr.dtype.kind not in "iu":
        raise PacketError(f"{name} must hold integers, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr > 0xFFFFFFFF)
    if bad.any():
        i = int(np.argmax(bad))
        raise PacketError(f"{name}[{i}] = {int(arr[i])} does not fit in 32 bits")
    return arr.astype(_U32)


def _payload(values, count: int, streams: int, name: str, dtype) -> np.ndarray:
    """[count, streams] array of ``dtype``; a 1-D array of length count is accepted if B == 1."""
    if values is None:
        if count:
            raise PacketError(f"{name} is missing for {count} packets")
        return np.empty((0, streams), dtype)
    arr = np.asarray(values)
    if count == 0 and arr.size == 0:  # e.g. [] for no packets, whatever its shape
        return np.empty((0, streams), dtype)
    if arr.ndim == 1 and streams == 1 and arr.shape[0] == count:
        arr = arr.reshape(count, 1)
    if arr.shape != (count, streams):
        raise PacketError(f"{name} has shape {arr.shape}, expected ({count}, {streams})")
    if dtype == _U32:
        return _u32_array(arr.ravel(), name).reshape(count, streams)
    if arr.dtype.kind not in "iuf":
        raise PacketError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr.astype(dtype)  # always a copy: the batch never aliases caller memory


def merge(batches: Iterable[PacketBatch], src: int, tick: int, streams: int) -> PacketBatch:
    """Concatenate the packets of ``batches`` (in the order given) into one batch."""
    batches = list(batches)
    for b in batches:
        if not isinstance(b, PacketBatch):
            raise PacketError(f"merge expects PacketBatch objects, got {type(b).__name__}")
        if b.streams != streams:
            raise PacketError(f"batch from src {b.src} has {b.streams} streams, expected {streams}")
    if not batches:
        return PacketBatch.empty(src, tick, streams)

    def cat(field):
        return np.concatenate([getattr(b, field) for b in batches])

    return PacketBatch(src, tick, streams, *(cat(f) for f in _ARRAYS))


# --------------------------------------------------------------------------- wire format

def encode(batch: PacketBatch) -> bytes:
    """Serialise a batch (validated first) to one msgpack message."""
    if not isinstance(batch, PacketBatch):
        raise PacketError(f"encode expects a PacketBatch, got {type(batch).__name__}")
    batch.validate()
    msg = {"version": WIRE_VERSION, "src": batch.src, "tick": batch.tick,
           "streams": batch.streams}
    for f in _ARRAYS:
        arr = getattr(batch, f)
        msg[f] = arr.tobytes() if _NATIVE_LITTLE else arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    return msgpack.packb(msg, use_bin_type=True)


_NATIVE_LITTLE = sys.byteorder == "little"
_LITTLE = {_U32: _U32.newbyteorder("<"), _F32: _F32.newbyteorder("<")}


def _view(buf: bytes, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """Read-only native-endian view (a copy only on big-endian hosts) of little-endian bytes; a shared empty
    array when there are none."""
    if not buf:
        return shared_empty(dtype, shape)
    arr = np.frombuffer(buf, dtype=_LITTLE[dtype]).reshape(shape)
    if not arr.dtype.isnative:
        arr = arr.astype(dtype)
        arr.flags.writeable = False
    return arr


def shared_empty(dtype, shape: tuple) -> np.ndarray:
    """A read-only empty array of `dtype` and `shape` (one of its dims 0), the same object every call: batches
    without packets of a kind share it instead of allocating their own."""
    key = (np.dtype(dtype), shape)
    got = _EMPTIES.get(key)
    if got is None:
        got = _EMPTIES[key] = np.zeros(shape, dtype)
        got.flags.writeable = False
    return got


_EMPTIES: dict = {}  # read-only empty arrays by (dtype, shape): most batches lack most kinds of packet
_EMPTY_U32 = shared_empty(np.uint32, (0,))


# --------------------------------------------------------------------------- the senders' batches

@functools.lru_cache(maxsize=None)
def _no_payloads(streams: int) -> tuple:
    """A batch's parts after its spike keys when it has nothing else: MCP keys and payload, P2P dest, tag and
    payload, each an empty read-only array."""
    return (_EMPTY_U32, shared_empty(np.float32, (0, streams)), _EMPTY_U32, _EMPTY_U32,
            shared_empty(np.uint32, (0, streams)))


def spikes_batch(src, tick, streams, keys: np.ndarray) -> PacketBatch:
    """A batch of spikes alone (keys: uint32, contiguous), a PE's batch on most ticks; built without checks."""
    return PacketBatch.unchecked(int(src), int(tick), int(streams), keys, *_no_payloads(streams))


def make_batch(src, tick, streams, *, mc_keys=None, mcp_keys=None, mcp_payload=None,
               p2p_dest=None, p2p_tag=None, p2p_payload=None) -> PacketBatch:
    """A packet batch from optional parts (missing parts are empty): what every PE and the host send each tick.
    Unlike PacketBatch.make it does not check values (~10 us a batch, every sender every tick): they are
    checked where batches are encoded."""
    u32 = lambda a: _EMPTY_U32 if a is None else np.ascontiguousarray(a, dtype=np.uint32)  # noqa: E731
    if mcp_keys is None and p2p_dest is None and mcp_payload is None and p2p_tag is None and p2p_payload is None:
        return spikes_batch(src, tick, streams, u32(mc_keys))  # spikes alone, or nothing
    m = u32(mcp_keys)
    p = u32(p2p_dest)
    # the conversions above give every array its dtype and shape, which is all the checked constructor
    # would verify
    return PacketBatch.unchecked(
        int(src), int(tick), int(streams), u32(mc_keys), m,
        (shared_empty(np.float32, (0, streams)) if mcp_payload is None
         else np.ascontiguousarray(mcp_payload, dtype=np.float32).reshape(len(m), streams)),
        p, u32(p2p_tag),
        (shared_empty(np.uint32, (0, streams)) if p2p_payload is None
         else np.ascontiguousarray(p2p_payload, dtype=np.uint32).reshape(len(p), streams)),
    )


class Detour(NamedTuple):
    """Packets on an emergency detour around a failed wire (router/router.py): `direction` is the link they
    were meant to cross, `first_leg` whether the chip that receives them must pass them on (the second leg)
    rather than route them. On a link message: [direction, first_leg, batch]."""
    direction: int
    first_leg: bool
    batch: PacketBatch


def encode_many(batches: list) -> bytes:
    """Several batches (a hop's packets on one link, one batch per source, some maybe on a Detour) as one
    message."""
    return msgpack.packb([[b.direction, b.first_leg, encode(b.batch)] if isinstance(b, Detour) else encode(b)
                          for b in batches], use_bin_type=True)


def decode_many(data: bytes) -> list[PacketBatch]:
    """Inverse of encode_many; any defect raises PacketError."""
    try:
        parts = msgpack.unpackb(data, raw=False, use_list=True, max_bin_len=len(data), max_str_len=0,
                                max_array_len=MAX_SRC, max_map_len=0, max_ext_len=0)
    except Exception as exc:  # every parser failure is a malformed message
        raise PacketError(f"link message is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(parts, list):
        raise PacketError("link message must be a list of packet batches")
    out = []
    for p in parts:
        if isinstance(p, bytes):
            out.append(decode(p))
        elif (isinstance(p, list) and len(p) == 3 and type(p[0]) is int and 0 <= p[0] < 6
              and type(p[1]) is bool and isinstance(p[2], bytes)):
            out.append(Detour(p[0], p[1], decode(p[2])))
        else:
            raise PacketError("link message must be a list of packet batches (or [direction, first_leg, batch] "
                              "detours)")
    return out


def decode(data: bytes) -> PacketBatch:
    """Parse and validate one message; any defect raises PacketError (never anything else)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PacketError(f"packet message must be bytes, got {type(data).__name__}")
    try:
        msg = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,
            max_bin_len=memoryview(data).nbytes, max_str_len=64, max_array_len=64, max_map_len=64,
            max_ext_len=64)
    except msgpack.ExtraData:
        raise PacketError("packet message has trailing data after the msgpack map") from None
    except Exception as exc:  # every parser failure is a malformed message
        raise PacketError(f"packet message is not valid msgpack ({type(exc).__name__})") from None
    if type(msg) is not dict or msg.keys() != _FIELD_SET:
        _refuse_fields(msg)
    src, tick, b = msg["src"], msg["tick"], msg["streams"]
    # one test passes a healthy header (decode runs for every batch on every hop); _refuse_header names
    # what is wrong with any other
    if not (type(src) is int and type(tick) is int and type(b) is int and msg["version"] == WIRE_VERSION  # noqa: E721
            and type(msg["version"]) is int and 0 <= src <= MAX_SRC and 0 <= tick <= MAX_TICK  # noqa: E721
            and 1 <= b <= MAX_STREAMS and all(type(msg[name]) is bytes for name in _ARRAYS)):
        _refuse_header(msg)
    k, m, p = _count(msg, "mc_keys"), _count(msg, "mcp_keys"), _count(msg, "p2p_dest")
    if k + m + p > MAX_PACKETS:
        raise PacketError(f"packet message has {k + m + p} packets, limit is {MAX_PACKETS}")
    if len(msg["mcp_payload"]) != 4 * m * b or len(msg["p2p_tag"]) != 4 * p or len(msg["p2p_payload"]) != 4 * p * b:
        _refuse_lengths(msg, m, p, b)
    # every header and length was checked above and the views have the right dtypes and shapes: the
    # constructor's structure checks would repeat them (~8 us a batch, on every hop)
    batch = PacketBatch.unchecked(
        src, tick, b,
        _view(msg["mc_keys"], _U32, (k,)), _view(msg["mcp_keys"], _U32, (m,)),
        _view(msg["mcp_payload"], _F32, (m, b)), _view(msg["p2p_dest"], _U32, (p,)),
        _view(msg["p2p_tag"], _U32, (p,)), _view(msg["p2p_payload"], _U32, (p, b)))
    return batch.validate()


_FIELD_SET = frozenset(_FIELDS)


def _count(msg: dict, name: str) -> int:
    n, rest = divmod(len(msg[name]), 4)
    if rest:
        raise PacketError(f"field {name!r} has {len(msg[name])} bytes, not a multiple of 4")
    return n


def _refuse_fields(msg) -> None:
    """Raise the PacketError that names why `msg` is not a map of exactly the wire format's fields."""
    if not isinstance(msg, dict):
        raise PacketError(f"packet message must be a msgpack map, got {type(msg).__name__}")
    for key in msg:
        if key not in _FIELDS:
            raise PacketError(f"packet message has unknown field {key!r}")
    for key in _FIELDS:
        if key not in msg:
            raise PacketError(f"packet message is missing field {key!r}")


def _refuse_header(msg: dict) -> None:
    """Raise the PacketError that names the first bad header or array field of `msg`."""
    for name, lo, hi in (("version", WIRE_VERSION, WIRE_VERSION), ("src", 0, MAX_SRC), ("tick", 0, MAX_TICK),
                         ("streams", 1, MAX_STREAMS)):
        v = msg[name]
        if type(v) is not int:  # noqa: E721 - bool must not pass as int
            raise PacketError(f"field {name!r} must be an int, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise PacketError(f"field {name!r} = {v} is out of range [{lo}, {hi}]")
    for name in _ARRAYS:
        if type(msg[name]) is not bytes:
            raise PacketError(f"field {name!r} must be bin (bytes), got {type(msg[name]).__name__}")
    raise AssertionError("decode refused a header that passes every check")


def _refuse_lengths(msg: dict, m: int, p: int, b: int) -> None:
    """Raise the PacketError that names the first payload or tag field whose length does not match."""
    for name, n, why in (("mcp_payload", m * b, f"{m} packets x {b} streams x 4"),
                         ("p2p_tag", p, f"{p} packets x 4"),
                         ("p2p_payload", p * b, f"{p} packets x {b} streams x 4")):
        if len(msg[name]) != 4 * n:
            raise PacketError(f"field {name!r} has {len(msg[name])} bytes, expected {4 * n} ({why})")
