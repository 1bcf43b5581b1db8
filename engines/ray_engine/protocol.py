"""The channel protocol between a router actor and its endpoint processes: message kinds and framing."""

from __future__ import annotations

import pickle
import struct
import traceback

from s2emu.errors import S2EmuError

# Channel messages: one channel per actor process, carrying the ticks of all its endpoints (one, or several
# PEs with --pes-per-process). Router -> process: 8-byte signed tick, then its endpoints' inbound batches
# (frame: lengths, then msgpack bytes; empty for no packets); tick STOP ends the serve loop. Process ->
# router: one status byte, then the endpoints' outbound batches framed the same way (OK), or a pickled
# (endpoint's place in the channel, exception, formatted traceback) (ERROR). The process's first message
# after connecting is its channel's index (8 bytes). Tick SNAPSHOT asks for the endpoints' states instead of
# a step: OK and the framed msgpack of each (s2emu/checkpoint.py).
TICK_FORMAT = "<q"
TICK_SIZE = struct.calcsize(TICK_FORMAT)
STOP, SNAPSHOT, WINDOW = -1, -2, -3
# Windowed exchange (s2emu/build.py window_bound): tick WINDOW, then (first tick, m) as WINDOW_FORMAT, then m
# ticks' inbound batches of every endpoint, tick by tick; the answer frames m ticks' outbound batches the same way.
WINDOW_FORMAT = "<qq"
WINDOW_SIZE = struct.calcsize(WINDOW_FORMAT)
LINK_HELLO = -10  # a router's first message on a link channel: LINK_HELLO - (the link, as the listener names it)
OK, ERROR = b"\x00", b"\x01"


class RemoteTraceback(Exception):
    """The traceback of an exception raised in an endpoint actor, attached as the exception's cause."""

    def __str__(self) -> str:
        return self.args[0]


def error_message(exc: BaseException, part: int = 0) -> bytes:
    """ERROR, then the pickled (part, exception, formatted traceback): part is which of the channel's
    endpoints raised."""
    tb = "".join(traceback.format_exception(exc))
    try:
        body = pickle.dumps((part, exc, tb))
        pickle.loads(body)  # some exceptions pickle but do not unpickle (custom __init__ arguments)
    except Exception:  # noqa: BLE001 - any failure: send the type and message instead
        body = pickle.dumps((part, RuntimeError(f"{type(exc).__name__}: {exc}"), tb))
    return ERROR + body


def frame(parts) -> bytes:
    """Several byte strings as one: their lengths (uint32 each), then their bytes; b"" stands for none."""
    return struct.pack(f"<{len(parts)}I", *map(len, parts)) + b"".join(parts)


def unframe(msg, start: int, n: int) -> list:
    """The n byte strings frame put in msg from offset start on (memoryviews, no copies)."""
    try:
        lengths = struct.unpack_from(f"<{n}I", msg, start)
    except struct.error:
        raise S2EmuError(f"a channel message of {len(msg)} bytes is too short for {n} parts") from None
    view, at, parts = memoryview(msg), start + 4 * n, []
    for length in lengths:
        parts.append(view[at:at + length])
        at += length
    if at != len(view):
        raise S2EmuError(f"a channel message of {len(view)} bytes frames {at}")
    return parts
