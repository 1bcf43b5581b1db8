"""The local engine: every PE, the router and the host as plain objects in this process, stepped in lockstep."""

from __future__ import annotations

import gc
import time
from collections import deque

from s2emu.checkpoint import in_flight, pack, unpack
from s2emu.cores.group import make_pes, step_plan
from s2emu.cores.kernels import kernel_threads
from s2emu.cpus import usable_cpus
from s2emu.host.host import make_host
from s2emu.router.mesh import Mesh
from s2emu.router.packets import decode, encode

from .contract import LiveStatus, RawRun


def run_local(build, *, progress=None, observer=None, checkpointer=None, resume=None, group=True) -> RawRun:
    """checkpointer (s2emu.checkpoint.Checkpointer): write the state every so many ticks; resume: a
    checkpoint's payload to continue from. group: step a population's PEs of one shape together
    (cores/group.py; same bits, counters and packets; False steps each PE alone).

    build.window K > 1 delivers what is sent at tick t at t + K, as the ray engine's windowed exchange does
    (one process gains nothing from the windows themselves; this is their reference)."""
    t0 = time.perf_counter()
    kernel_threads(min(2, usable_cpus()))  # this process steps every PE: it has the CPUs
    pes, groups = make_pes(build.pe_configs, group)
    host = make_host(build.host_config)
    m = build.mapping
    router = Mesh(m, streams=host.B)  # one router per chip
    actors = [*pes, host]  # endpoint e is actors[e]; the host is the last endpoint
    plan = step_plan(range(len(actors)), actors, [(g.endpoints, g) for g in groups])
    # in flight: what each endpoint receives at the next `window` ticks (the first is `inbound`)
    later = deque([[None] * len(actors) for _ in range(build.window - 1)])
    inbound = [None] * len(actors)
    start = 0
    if resume is not None:
        for actor, state in zip(actors, resume["endpoints"]):
            actor.restore(unpack(state))
        router.restore(resume["router"])
        inbound, *rest = [[None if b is None else decode(b) for b in batches] for batches in in_flight(resume)]
        later = deque(rest)
        start = int(resume["tick"])
        if progress is not None:
            progress(start)
    if observer is not None:
        scores = getattr(host, "clip_scores", lambda: None)
        observer(lambda: LiveStatus(router.routed, router.mc_sent(), scores()))
    n_ticks = build.n_ticks
    t_step = t_route = 0.0
    # what exists now (modules, numba's compiler, the PEs) lives through the run: leave it out of the cycle
    # collector's passes, whose full ones would otherwise scan numba's many objects (~20 us a tick); garbage
    # first (an earlier run's cycles), and hand back only what this run froze
    frozen_by_us = gc.get_freeze_count() == 0
    if frozen_by_us:
        gc.collect()
        gc.freeze()
    try:
        for tick in range(start, n_ticks):
            a = time.perf_counter()
            outs = [None] * len(actors)
            for at, stepper in plan:
                got = (stepper.step(tick, [inbound[e] for e in at]) if len(at) > 1
                       else [stepper.step(tick, inbound[at[0]])])
                for e, out in zip(at, got):
                    outs[e] = out
            b = time.perf_counter()
            later.append(router.route(outs, tick))  # delivered at tick + window (cores/timing.py)
            inbound = later.popleft()
            t_step += b - a
            t_route += time.perf_counter() - b
            if progress is not None:
                progress(1)
            if checkpointer is not None and checkpointer.due(tick + 1):
                now, *rest = [[None if b is None else encode(b) for b in batches] for batches in (inbound, *later)]
                checkpointer.write(tick + 1, [pack(a.snapshot()) for a in actors], router.snapshot(), now, rest)
    finally:
        if frozen_by_us:
            gc.unfreeze()  # a later run in this process must be able to free this one
    return RawRun(
        host_results=host.results(),
        weights={pe.pe_id: pe.weights() for pe in pes},
        recordings={pe.pe_id: pe.recordings() for pe in pes},
        pe_counters={pe.pe_id: dict(pe.counters) for pe in pes},
        router_counters=router.counters_dict(),
        drop_report=router.drop_report(),
        ticks=n_ticks,
        wall_seconds=time.perf_counter() - t0,
        phases={"step": t_step, "route": t_route},
        resumed_from=start,
        checkpoints=0 if checkpointer is None else checkpointer.written,
    )
