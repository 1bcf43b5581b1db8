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
full disk, or altered. Only a regular file no larger than half this machine's memory is read (a FIFO would
hang the reader, /dev/zero would fill its memory). Decoded, the state is checked before any of it is used:
types, counts, the tick, finite PE state. Written to a temporary file in the same folder (a name unique to the
call), flushed to disk, then renamed over the old one, so a crash mid-write leaves the previous checkpoint whole.

A checkpoint belongs to one build (recipe, overrides, data, split): its fingerprint is checked on resume, and
a description of the run beside it (payload key "run") names what differs when the fingerprint does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import sys
import uuid
from pathlib import Path

import msgpack
import numpy as np

from .atomic import write_atomically
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


def check_writable(path, what: str, shown=None) -> Path:
    """Fail fast, before a long run, where `path` (a file to be written) cannot be: its folder cannot be made
    or written in (read-only disk, no permission), or the path is a folder or a device. Makes the folder.
    The message names the flag `what` and `shown` (default: path). A full disk still shows only when the
    real file is written."""
    path = Path(path)
    shown = path if shown is None else shown
    if path.exists() and not path.is_file():
        raise S2EmuError(f"{what} {path} is {_kind(path.stat().st_mode)}, not a file s2emu can write")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise S2EmuError(f"{what} {shown}: {folder} is {_kind(folder.stat().st_mode)}, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.probe"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise S2EmuError(f"{what} {shown}: cannot write in {folder} ({e.strerror or e})") from None
    return path


def os_reason(e: OSError) -> str:
    """An OSError as a short phrase: its message, and the file it names if any (a run writes several)."""
    return f"{e.strerror}: {e.filename}" if e.strerror and e.filename else str(e.strerror or e)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def max_checkpoint_bytes() -> int:
    """The largest checkpoint read: half this machine's memory (reading needs the file and its decoded state
    side by side); 64 GiB where the memory size is unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, OSError, ValueError):
        return 64 << 30


def write_checkpoint(path, payload: dict) -> Path:
    """Write atomically: a temporary file beside `path`, flushed to disk, renamed over it."""
    path = Path(path)
    body = pack(payload)
    head = MAGIC + _HEAD.pack(VERSION, hashlib.sha256(body).digest(), len(body))
    try:
        return write_atomically(path, lambda f: (f.write(head), f.write(body)))
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {os_reason(e)}") from None


def read_checkpoint(path) -> dict:
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below); regular files ignore it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # checked on the open file: no swap between a check and the read
            raise CheckpointError(f"{path} is {_kind(st.st_mode)}, not a checkpoint file")
        limit = max_checkpoint_bytes()
        if st.st_size > limit:
            raise CheckpointError(f"{path} is {st.st_size:,} bytes, more than half of this machine's memory "
                                  f"({limit:,} bytes): not a checkpoint this machine can resume")
        f = open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        n = len(MAGIC) + _HEAD.size
        try:
            head = f.read(n)
            if not head.startswith(MAGIC) or len(head) < n:
                raise CheckpointError(f"{path} is not an s2emu checkpoint (or is truncated before its header)")
            version, digest, length = _HEAD.unpack_from(head, len(MAGIC))
            if version != VERSION:
                raise CheckpointError(f"{path}: checkpoint format {version}, this s2emu reads format {VERSION}")
            have = st.st_size - n
            if have < length:  # before reading: read(length) would first allocate whatever the header says
                raise CheckpointError(f"{path} is truncated: {have:,} of {length:,} bytes of state")
            if have > length:
                raise CheckpointError(f"{path} has {have - length:,} bytes more than its header says: "
                                      f"the file was altered or damaged")
            body = f.read(length)
        except OSError as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
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
    _check_shape(payload, path)
    return payload


def _check_shape(payload: dict, path) -> None:
    """The types of a decoded payload's fields, each named when wrong (the checksum only says the file is as
    written, not that what wrote it was s2emu)."""
    def bad(field, want):
        got = payload[field] if field in payload else None
        raise CheckpointError(f"{path}: field '{field}' must be {want}, not {_what(got)}")

    def packets(row):
        return isinstance(row, list) and all(b is None or isinstance(b, bytes) for b in row)

    if not isinstance(payload["fingerprint"], str):
        bad("fingerprint", "a string")
    if not _is_int(payload["tick"]):
        bad("tick", "an int")
    if not isinstance(payload["endpoints"], list) or not all(isinstance(e, bytes) for e in payload["endpoints"]):
        bad("endpoints", "a list of encoded states (bytes)")
    if not isinstance(payload["router"], list) or not all(isinstance(r, dict) for r in payload["router"]):
        bad("router", "a list of maps, one per chip")
    if not packets(payload["inbound"]):
        bad("inbound", "a list of encoded packet batches (bytes or nil)")
    if not isinstance(payload.get("later", []), list) or not all(packets(r) for r in payload.get("later", [])):
        bad("later", "a list of lists of encoded packet batches")
    if not isinstance(payload.get("run", {}), dict):
        bad("run", "a map")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _what(v) -> str:
    if isinstance(v, np.ndarray):
        return f"an array of {v.dtype}{list(v.shape)}"
    return {type(None): "nil"}.get(type(v), type(v).__name__) + (f" {v!r}" if isinstance(v, (int, float, str)) and
                                                                len(repr(v)) < 40 else "")


def in_flight(payload: dict) -> list[list]:
    """A checkpoint's packets in flight: per tick from its own, each endpoint's encoded batch or None."""
    return [payload["inbound"], *payload.get("later", [])]


def describe(build) -> dict:
    """What a run was started with, flag by flag, for the message when a checkpoint's fingerprint does not match
    (the fingerprint decides; this only names the difference)."""
    r, m = build.recipe, build.recipe.machine
    try:
        data = json.loads(json.dumps(r.data, default=str))
    except (TypeError, ValueError):
        data = {}
    # the network and learning settings apart from their split over PEs (counted as "pes")
    settings = hashlib.sha256(repr((r.network.split_over(1), r.learning)).encode()).hexdigest()[:16]
    return {"recipe": r.name, "seed": r.seed, "epochs": r.schedule.epochs, "batch": r.schedule.batch,
            "pes": build.mapping.n_pes, "machine": m.name, "chips": m.chips, "pes_per_chip": m.pes_per_chip,
            "wrap": bool(m.wrap), "dead_links": sorted(m.dead_links), "failing_links": sorted(m.failing_links),
            "window": build.window, "data": data, "settings": settings}


_FLAGS = {  # run description key -> how its value reads on a command line
    "seed": "--seed {}", "epochs": "--epochs {}", "batch": "--batch {}", "pes": "{} PEs",
    "machine": "--machine {}", "chips": "--chips {}", "pes_per_chip": "--pes-per-chip {}",
    "wrap": lambda v: "--wrap" if v else "no --wrap", "dead_links": "--dead-link {}",
    "failing_links": "--link-fails {}", "window": "--window {}"}
_DATA_FLAGS = {"path": "--data {}", "skip_bad": lambda v: "--skip-bad" if v else "no --skip-bad",
               "test_split": "--split {}"}


def _show(fmt, v) -> str:
    """v as a flag reads; one line, however odd the value in a foreign checkpoint."""
    if isinstance(v, list):
        v = ",".join(map(str, v)) or "(none)"
    text = fmt(v) if callable(fmt) else fmt.replace("{}", str(v))
    return " ".join(text.split())[:200]


def differences(theirs: dict, ours: dict) -> list[str]:
    """Each field in which two run descriptions differ, with both values: 'the checkpoint has X, this run Y'."""
    def one(fmt, a, b):
        note = " (--pes)" if fmt == "{} PEs" else ""  # the PE count follows from --pes
        return f"the checkpoint has {_show(fmt, a)}, this run {_show(fmt, b)}{note}"

    if theirs.get("recipe") != ours.get("recipe"):  # then everything else differs too: the recipe says it
        return [one("recipe {}", theirs.get("recipe"), ours.get("recipe"))]
    out = [one(fmt, theirs.get(k), ours[k]) for k, fmt in _FLAGS.items() if k in theirs and theirs[k] != ours[k]]
    a, b = theirs.get("data"), ours["data"]
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                out.append(one(_DATA_FLAGS.get(k, f"data.{k} = {{}}"), a.get(k), b.get(k)))
    if "settings" in theirs and theirs["settings"] != ours["settings"] and not out:
        out.append("the recipe's network or learning settings differ (was the recipe file edited?)")
    return out


def check_matches(payload: dict, build, path) -> None:
    """Refuse, with one line naming what is wrong, a checkpoint of another run or one whose decoded contents
    do not fit this run (counts, the tick, types, NaN or infinite PE state)."""
    if payload["fingerprint"] != fingerprint(build):
        diffs = differences(payload["run"], describe(build)) if isinstance(payload.get("run"), dict) else []
        what = ("; ".join(diffs) if diffs else
                "recipe, overrides, data or split differ" if "run" not in payload else
                "the same flags, so the recipe file's settings, the starting weights (--model) or the data's "
                "contents differ")
        raise CheckpointError(f"{path} was written by a different emulation ({what}): resume with the same command "
                              f"line that wrote it")
    n_end, tick = build.mapping.n_endpoints, payload["tick"]
    if not 0 < tick < build.n_ticks:
        raise CheckpointError(f"{path}: tick {tick} does not fit this run of {build.n_ticks} ticks "
                              f"(a checkpoint is written between its first and its last tick)")
    for field, have in (("endpoints", len(payload["endpoints"])), ("inbound", len(payload["inbound"])),
                        *((f"later[{i}]", len(r)) for i, r in enumerate(payload.get("later", [])))):
        if have != n_end:
            raise CheckpointError(f"{path}: '{field}' holds {have} entries, this run has {n_end} endpoints")
    if len(payload.get("later", [])) != build.window - 1:
        raise CheckpointError(f"{path}: packets in flight for {len(payload.get('later', [])) + 1} ticks, this run "
                              f"(--window {build.window}) has them for {build.window}")
    if len(payload["router"]) != len(build.mapping.tables):
        raise CheckpointError(f"{path}: router state of {len(payload['router'])} chips, this run uses "
                              f"{len(build.mapping.tables)}")
    for chip, state in enumerate(payload["router"]):
        for k, v in state.items():
            if not (_is_int(v) and v >= 0 or isinstance(v, np.ndarray) and v.dtype.kind in "iu"
                    or k == "first_drops" and isinstance(v, list)):
                raise CheckpointError(f"{path}: router {chip}'s counter '{k}' must be a count, not {_what(v)}")
    for e, blob in enumerate(payload["endpoints"]):  # one at a time: only one endpoint's state is held decoded
        who = "the host" if e == build.mapping.host else f"endpoint {e} (a PE)"
        try:
            state = unpack(blob)
        except Exception as err:  # noqa: BLE001 - any malformed msgpack
            raise CheckpointError(f"{path}: the state of {who} does not decode ({str(err) or type(err).__name__})") \
                from None
        scores = (build.clock.n_samples, build.host_config["streams"], len(build.host_config["value_keys"]))
        _check_endpoint(state, scores if e == build.mapping.host else None, f"{path}: {who}")


def _check_endpoint(state, host_scores: tuple | None, who: str) -> None:
    """A decoded endpoint state: the maps and counts a PE's or the host's restore reads, and no NaN or infinite
    number in a PE (a run whose state went NaN fails at its next readout packet; the host's scores are NaN
    until their sample ends)."""
    want = ("scores", "counters") if host_scores else ("ledger", "counters", "attrs")
    if not isinstance(state, dict) or not set(want) <= set(state):
        raise CheckpointError(f"{who}: state must be a map with {', '.join(want)}, not {_what(state)}")
    counters = state["counters"]
    if not isinstance(counters, dict) or not all(isinstance(k, str) and _is_int(v) and v >= 0
                                                 for k, v in counters.items()):
        raise CheckpointError(f"{who}: 'counters' must map names to counts")
    if host_scores:
        scores = state["scores"]
        if not isinstance(scores, np.ndarray) or scores.dtype != np.float32 or scores.shape != host_scores:
            raise CheckpointError(f"{who}: 'scores' must be an array of float32{list(host_scores)}, "
                                  f"not {_what(scores)}")
        if np.isinf(scores).any():
            raise CheckpointError(f"{who}: 'scores' holds infinite values")
        return
    if not isinstance(state["ledger"], dict) or not isinstance(state["attrs"], dict):
        raise CheckpointError(f"{who}: 'ledger' and 'attrs' must be maps")
    for name, a in state["ledger"].items():
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
            raise CheckpointError(f"{who}: SRAM array '{name}' must be a numeric array, not {_what(a)}")
    for kind, tree in (("SRAM array", state["ledger"]), ("state", state["attrs"])):
        for where, _ in _numbers(tree, ""):
            raise CheckpointError(f"{who}: {kind} '{where}' holds NaN or infinite values")


def _numbers(obj, where: str) -> list:
    """[(where, value)] of the first float array or number under obj that is not finite (empty if none)."""
    if isinstance(obj, np.ndarray):
        return [(where, obj)] if obj.dtype.kind in "fc" and not np.isfinite(obj).all() else []
    if isinstance(obj, float):
        return [(where, obj)] if not np.isfinite(obj) else []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = _numbers(v, f"{where}.{k}" if where and isinstance(obj, dict) else f"{where}[{k}]"
                         if where else str(k))
        if found:
            return found
    return []


class Checkpointer:
    """When and where a run writes checkpoints: after every `every` ticks (not after the last).

    The folder is checked for writing when the run is set up (a read-only or missing place fails at once, not
    hours later). A write that fails mid-run (a full disk) is reported through `log` and the run goes on: its
    results are what it is for, the checkpoint on disk stays whole (atomic writes), and the next one due tries
    again. `failed` counts the writes that failed."""

    def __init__(self, path, every: int, build, log=None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise S2EmuError(f"--checkpoint-every must be at least 1 tick, got {every!r}")
        self.path, self.every = check_writable(path, "--checkpoint"), int(every)
        self.fingerprint = fingerprint(build)
        self.run = describe(build)
        self.n_ticks = build.n_ticks
        self.written = self.failed = 0
        self._failing, self._last_error = 0, None  # failures in a row, and the message last told
        self.last_tick = None
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))

    def due(self, ticks_done: int) -> bool:
        return ticks_done % self.every == 0 and ticks_done < self.n_ticks

    def next_due(self, ticks_done: int) -> int:
        """The first tick count after ticks_done at which a checkpoint is due (n_ticks if none)."""
        return min(self.n_ticks, (ticks_done // self.every + 1) * self.every)

    def write(self, tick: int, endpoints: list[bytes], router: dict, inbound: list, later=()) -> None:
        """endpoints: each endpoint's packed state (pack(obj.snapshot())); inbound: each endpoint's packets
        for the next tick (router/packets.py encode), or None; later: the same for each tick after it that
        already has packets in flight (a window of K ticks: K - 1 of them)."""
        try:
            write_checkpoint(self.path, {"fingerprint": self.fingerprint, "tick": tick, "endpoints": endpoints,
                                         "router": router, "inbound": inbound, "later": list(later),
                                         "run": self.run})
        except CheckpointError as e:
            self.failed += 1
            self._failing += 1
            if str(e) != self._last_error:  # once per cause, not at every checkpoint of a long run
                kept = (f"the last one this run wrote (tick {self.last_tick}) is whole" if self.last_tick is not None
                        else "none has been written yet")
                self.log(f"warning: the checkpoint at tick {tick} was not written ({e}); the run goes on and tries "
                         f"again at every one due (told again if the cause changes); {kept}")
                self._last_error = str(e)
            return
        if self._failing:
            self.log(f"checkpoints are written again: tick {tick}, after {self._failing} that failed")
        self._failing, self._last_error = 0, None
        self.written += 1
        self.last_tick = tick
