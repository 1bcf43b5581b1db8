"""The actor shell of an endpoint process: one or more PEs, or the host, stepped over one channel."""

from __future__ import annotations

import gc
import os
import struct

import ray

from s2emu.checkpoint import pack, unpack
from s2emu.cores.group import make_pes, step_plan
from s2emu.host.base import Host
from s2emu.host.host import make_host
from s2emu.router.packets import decode, encode

from .links import no_delay
from .protocol import OK, SNAPSHOT, STOP, TICK_FORMAT, TICK_SIZE, WINDOW, WINDOW_FORMAT, WINDOW_SIZE, \
    error_message, frame, unframe


class EndpointActor:
    """One process holding one or more endpoints (a PE, several PEs with --pes-per-process, or the host):
    objects with step(tick, inbound) -> outbound behind msgpack bytes, each addressed by its slot. On the
    channels transport one serve call steps all of them in turn, each tick, over one channel: a process
    wakes once a tick however many PEs it holds."""

    def __init__(self, specs):
        # a population's PEs of one shape in this process step together (cores/group.py, same bits)
        pe_slots = [i for i, (kind, _) in enumerate(specs) if kind == "pe"]
        pes, groups = make_pes([specs[i][1] for i in pe_slots])
        self.objs = [None if kind == "pe" else make_host(config) for kind, config in specs]
        for i, pe in zip(pe_slots, pes):
            self.objs[i] = pe
        self.groups = [([pe_slots[e] for e in g.endpoints], g) for g in groups]

    def ready(self):
        return os.getpid()

    def node(self):
        return ray.get_runtime_context().get_node_id()

    def step(self, slot, tick, inbound):
        return encode(self.objs[slot].step(tick, decode(inbound) if inbound is not None else None))

    def snapshot(self, slot):
        return pack(self.objs[slot].snapshot())

    def restore(self, slot, state):
        self.objs[slot].restore(unpack(state))

    def serve(self, address, authkey, channel, slots):
        """Step the endpoints in `slots`, in that order, over one direct channel to the router until it
        sends STOP or goes away.

        Raises only if the channel cannot be opened; once connected, every failure of an object is
        sent to the router (which raises it for the driver) and the call returns its status."""
        from multiprocessing.connection import Client

        objs = [self.objs[slot] for slot in slots]
        n = len(objs)
        plan = step_plan(slots, self.objs, self.groups)
        conn = no_delay(Client(tuple(address), family="AF_INET", authkey=authkey))
        gc.freeze()  # the collector need not scan what exists now, ~10% less time per tick
        try:
            conn.send_bytes(struct.pack(TICK_FORMAT, channel))
            while True:
                try:
                    msg = conn.recv_bytes()
                except (EOFError, OSError):
                    return "router closed the channel"
                (tick,) = struct.unpack_from(TICK_FORMAT, msg)
                if tick == STOP:
                    return "stopped"
                ticks, start = (tick,), TICK_SIZE
                if tick == WINDOW:  # m ticks in a row (windowed exchange)
                    first, m = struct.unpack_from(WINDOW_FORMAT, msg, TICK_SIZE)
                    ticks, start = range(first, first + m), TICK_SIZE + WINDOW_SIZE
                part, status = 0, None
                try:
                    parts = []
                    if tick == SNAPSHOT:
                        for part, obj in enumerate(objs):
                            parts.append(pack(obj.snapshot()))
                    else:
                        raws = unframe(msg, start, n * len(ticks))
                        parts = [b""] * len(raws)  # an empty batch travels as no bytes: most PEs send nothing
                        for w, tick in enumerate(ticks):
                            inbound = []
                            for part, raw in enumerate(raws[w * n:(w + 1) * n]):
                                inbound.append(decode(raw) if len(raw) else None)
                            for at, stepper in plan:
                                part = at[0]
                                if len(at) == 1:
                                    outs = [stepper.step(tick, inbound[part])]
                                else:
                                    try:
                                        outs = stepper.step(tick, [inbound[i] for i in at])
                                    except Exception:
                                        part = at[stepper.at]  # the member it was stepping raised
                                        raise
                                for i, batch in zip(at, outs):
                                    if len(batch):
                                        parts[w * n + i] = encode(batch)
                    out = OK + frame(parts)
                except Exception as e:  # noqa: BLE001 - every error goes to the router
                    out, status = error_message(e, part), "failed"
                try:
                    conn.send_bytes(out)
                except OSError:
                    return "router closed the channel"
                if status is not None:
                    return status
        finally:
            conn.close()

    def clip_scores(self):
        """The stream host's scores so far (answered during serve: the host actor of a watched run
        takes two calls at a time)."""
        scores = getattr(self.objs[0], "clip_scores", None)
        return None if scores is None else scores().copy()

    def finish(self, slot):
        obj = self.objs[slot]
        if isinstance(obj, Host):
            return obj.results()
        return obj.weights(), obj.recordings(), dict(obj.counters)
