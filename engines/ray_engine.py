"""The ray engine: one Ray actor (one process) per PE, a router actor and a host actor.

Each actor is a thin shell around the same plain object the local engine steps. A tick's packets from one
actor travel as one msgpack message (router/packets.py). The router actor is the chip's clock: it calls
every PE and the host for tick t in parallel, routes what they sent, and hands each its inbound batch at
tick t+1. Packets thus take one hop through the router per tick, never a detour through the driver, which
only asks the router to advance CHUNK ticks at a time and updates the progress bar.
"""

from __future__ import annotations

import logging
import os
import time

from s2emu.errors import S2EmuError

from . import RawRun

CHUNK = 25  # ticks the router advances per driver call (progress granularity)


def _actor_classes():
    import ray

    from s2emu.cores.pe import make_pe
    from s2emu.host.host import Host, make_host
    from s2emu.router.packets import decode, encode
    from s2emu.router.router import Router

    @ray.remote(num_cpus=0, max_restarts=0)
    class EndpointActor:
        """A PE or the host: any object with step(tick, inbound) -> outbound, behind msgpack bytes."""

        def __init__(self, kind, config):
            self.obj = make_pe(config) if kind == "pe" else make_host(config)

        def ready(self):
            return os.getpid()

        def step(self, tick, inbound):
            return encode(self.obj.step(tick, decode(inbound) if inbound is not None else None))

        def finish(self):
            if isinstance(self.obj, Host):
                return self.obj.results()
            return self.obj.weights(), self.obj.recordings(), dict(self.obj.counters)

    @ray.remote(num_cpus=0, max_restarts=0)
    class RouterActor:
        def __init__(self, table, endpoints, streams):
            self.endpoints = endpoints  # actor handles; endpoint e is endpoints[e]
            self.n = len(endpoints)
            self.router = Router(table, self.n, streams=streams)
            self.inbound = [None] * self.n
            self.busy = 0.0

        def ready(self):
            return os.getpid()

        def advance(self, start, count):
            """Run ticks start .. start+count-1: step every endpoint in parallel, route, deliver next tick."""
            for tick in range(start, start + count):
                outs = ray.get([a.step.remote(tick, self.inbound[e]) for e, a in enumerate(self.endpoints)])
                t = time.perf_counter()
                routed = self.router.route([decode(b) for b in outs], tick)
                self.inbound = [encode(routed[e]) for e in range(self.n)]
                self.busy += time.perf_counter() - t
            return start + count

        def counters(self):
            return self.router.counters_dict(), self.router.drop_report(), self.busy

    return EndpointActor, RouterActor


def start_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Attach to `address`, or start a small local Ray bound to loopback. True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 2, _node_ip_address="127.0.0.1",
                 object_store_memory=200 * 1024 * 1024, **kw)
    return True


def _unwrap(e: Exception) -> Exception:
    import ray

    if isinstance(e, ray.exceptions.RayTaskError) and isinstance(e.cause, S2EmuError):
        return e.cause
    if isinstance(e, ray.exceptions.RayActorError):
        return S2EmuError(f"an actor of the emulation died: {e}")
    return e


def run_ray(build, *, progress=None, address: str | None = None) -> RawRun:
    import ray

    started = start_ray(address)
    try:
        return _run(build, progress)
    except Exception as e:  # re-raise the user's error, not Ray's wrapper
        raise _unwrap(e) from None
    finally:
        if started:
            ray.shutdown()


def _run(build, progress) -> RawRun:
    import ray

    EndpointActor, RouterActor = _actor_classes()
    t0 = time.perf_counter()
    m = build.mapping
    pes = [EndpointActor.remote("pe", c) for c in build.pe_configs]
    host = EndpointActor.remote("host", build.host_config)
    actors = [*pes, host]
    router = RouterActor.remote(m.table, actors, build.host_config["streams"])
    ray.get([a.ready.remote() for a in (*actors, router)])
    t_start = time.perf_counter() - t0
    n_ticks = build.n_ticks
    t1 = time.perf_counter()
    pending = None  # one chunk queued behind the running one keeps the router busy between driver calls
    tick = 0
    while tick < n_ticks:
        count = min(CHUNK, n_ticks - tick)
        nxt = router.advance.remote(tick, count)
        if pending is not None:
            ray.get(pending[0])
            if progress is not None:
                progress(pending[1])
        pending = (nxt, count)
        tick += count
    ray.get(pending[0])
    if progress is not None:
        progress(pending[1])
    t_run = time.perf_counter() - t1
    finished = ray.get([p.finish.remote() for p in pes])
    counters, drops, router_busy = ray.get(router.counters.remote())
    results = ray.get(host.finish.remote())
    for a in (*actors, router):
        ray.kill(a)
    return RawRun(
        host_results=results,
        weights={c["pe_id"]: f[0] for c, f in zip(build.pe_configs, finished)},
        recordings={c["pe_id"]: f[1] for c, f in zip(build.pe_configs, finished)},
        pe_counters={c["pe_id"]: f[2] for c, f in zip(build.pe_configs, finished)},
        router_counters=counters,
        drop_report=drops,
        ticks=n_ticks,
        wall_seconds=time.perf_counter() - t0,
        phases={"start_actors": t_start, "run": t_run, "router_busy": router_busy},
    )
