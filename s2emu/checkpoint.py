"""Checkpoints: the whole state of an emulation at a tick boundary, in a file that cannot run code when read.

What a checkpoint holds (payload keys fingerprint, tick, endpoints, router, inbound): every PE's SRAM ledger (all the arrays it keeps: neurons, synapses, traces, optimizer
state) and the few plain values beside it (counters, the optimizer's step, flags); the host's scores so far;
the router's counters; and the packets in flight (routed during the last tick, delivered at the next). The data
position and the PRNG need nothing more: the host's plan fixes which sample comes at which tick, and every
random number a PE draws is hashed from positions (cores/deepr.py), not taken from a stream.

File layout: MAGIC, a format version (uint32, little endian), the sha256 of the body, the body's length
(uint64), then the body: msgpack of plain maps, lists, numbers, strings and bytes, with numpy arrays as maps
{"__nd__": dtype, "shape": [...], "data": bytes}. msgpack never constructs objects other than these, so a
checkpoint from anywhere is safe to read. A file whose length or checksum is wrong is refused: truncated by a
full disk, or altered. Written to a temporary file in the same folder, flushed to disk, then renamed over the
old one, so a crash mid-write leaves the previous checkpoint whole.

A checkpoint belongs to one build (recipe, overrides, data, split): its fingerprint is checked on resume.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import msgpack
import numpy as np

from .errors import S2EmuError

MAGIC = b"S2EMU-CKPT\n"
VERSION = 2  # 2: the router state is a list, one per chip
_HEAD = struct.Struct("<I32sQ")  # version, sha256 of the body, body length


class CheckpointError(S2EmuError):
    pass


def _default(obj):
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {"__nd__": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _hook(d):
    if "__nd__" in d:
        return np.frombuffer(d["data"], dtype=np.dtype(d["__nd__"])).reshape(d["shape"]).copy()
    return d


def pack(obj) -> bytes:
    """Plain data (dicts, lists, numbers, strings, bytes, numpy arrays) as msgpack bytes."""
    return msgpack.packb(obj, default=_default, use_bin_type=True, strict_types=False)


def unpack(data: bytes):
    return msgpack.unpackb(data, object_hook=_hook, raw=False, strict_map_key=False)


def fingerprint(build) -> str:
    """What makes two runs the same emulation: every PE's and the host's configuration (weights, data, plan,
    clock, keys) and the routing table."""
    h = hashlib.sha256()
    h.update(pack(build.pe_configs))
    h.update(pack({k: v for k, v in build.host_config.items() if k != "kind"}))
    h.update(pack([(c, [(e.key, e.mask, e.route) for e in t.entries]) for c, t in sorted(build.mapping.tables.items())]))
    if build.window > 1:  # its packets in flight are for more ticks (older checkpoints hash as window 1)
        h.update(pack({"window": build.window}))
    if build.mapping.machine.failing_links:  # wires that fail mid-run change the routes from then on
        # a wire down for good hashes as [chip, link, from], as before spans that end existed
        h.update(pack({"failing_links": sorted([*end, a, *([] if b is None else [b])]
                                               for end, spans in build.mapping.machine.failures.items()
                                               for a, b in spans)}))
    return h.hexdigest()


def write_checkpoint(path, payload: dict) -> Path:
    """Write atomically: a temporary file beside `path`, flushed to disk, renamed over it."""
    path = Path(path)
    body = pack(payload)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + _HEAD.pack(VERSION, hashlib.sha256(body).digest(), len(body)))
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}") from None
    try:  # the rename itself reaches the disk with the folder
        fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def read_checkpoint(path) -> dict:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    n = len(MAGIC) + _HEAD.size
    if not data.startswith(MAGIC) or len(data) < n:
        raise CheckpointError(f"{path} is not an s2emu checkpoint (or is truncated before its header)")
    version, digest, length = _HEAD.unpack_from(data, len(MAGIC))
    if version != VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version}, this s2emu reads format {VERSION}")
    body = data[n:]
    if len(body) != length:
        raise CheckpointError(f"{path} is truncated: {len(body):,} of {length:,} bytes of state")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"{path} fails its checksum: the file was altered or damaged")
    try:
        payload = unpack(body)
    except Exception as e:  # noqa: BLE001 - a valid checksum over bad msgpack: written by something else
        raise CheckpointError(f"{path}: the state does not decode ({e})") from None
    if not isinstance(payload, dict) or not {"fingerprint", "tick", "endpoints", "router", "inbound"} <= set(payload):
        raise CheckpointError(f"{path}: not an emulation state")
    return payload


def in_flight(payload: dict) -> list[list]:
    """A checkpoint's packets in flight: per tick from its own, each endpoint's encoded batch or None."""
    return [payload["inbound"], *payload.get("later", [])]


def check_matches(payload: dict, build, path) -> None:
    if payload["fingerprint"] != fingerprint(build):
        raise CheckpointError(f"{path} was written by a different emulation (recipe, overrides, data or split "
                              f"differ): resume with the same command line that wrote it")
    if not 0 < payload["tick"] < build.n_ticks or len(payload["endpoints"]) != build.mapping.n_endpoints:
        raise CheckpointError(f"{path}: tick {payload['tick']} or its {len(payload['endpoints'])} endpoints do "
                              f"not fit this run of {build.n_ticks} ticks")


class Checkpointer:
    """When and where a run writes checkpoints: after every `every` ticks (not after the last)."""

    def __init__(self, path, every: int, build):
        if every < 1:
            raise S2EmuError(f"--checkpoint-every must be at least 1 tick, got {every}")
        self.path, self.every = Path(path), int(every)
        self.fingerprint = fingerprint(build)
        self.n_ticks = build.n_ticks
        self.written = 0
        self.last_tick = None

    def due(self, ticks_done: int) -> bool:
        return ticks_done % self.every == 0 and ticks_done < self.n_ticks

    def next_due(self, ticks_done: int) -> int:
        """The first tick count after ticks_done at which a checkpoint is due (n_ticks if none)."""
        return min(self.n_ticks, (ticks_done // self.every + 1) * self.every)

    def write(self, tick: int, endpoints: list[bytes], router: dict, inbound: list, later=()) -> None:
        """endpoints: each endpoint's packed state (pack(obj.snapshot())); inbound: each endpoint's packets
        for the next tick (router/packets.py encode), or None; later: the same for each tick after it that
        already has packets in flight (a window of K ticks: K - 1 of them)."""
        write_checkpoint(self.path, {"fingerprint": self.fingerprint, "tick": tick, "endpoints": endpoints,
                                     "router": router, "inbound": inbound, "later": list(later)})
        self.written += 1
        self.last_tick = tick
