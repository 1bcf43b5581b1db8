"""The driver of a ray run: start the actors, advance the ticks, checkpoint, collect; restart when one dies."""

from __future__ import annotations

import time
from collections import deque

from s2emu.checkpoint import in_flight, read_checkpoint
from s2emu.errors import ActorDiedError, PlacementError, S2EmuError

from ..contract import TRANSPORTS, LiveStatus, RawRun
from . import waits
from .cluster import Placement, channel_host, process_groups, start_ray
from .raylet import RayletDownError, RayletWatch
from .waits import START_TIMEOUT, discard, get_all, unwrap, wait_for, wait_for_each

CHUNK = 25  # ticks the router advances per driver call (progress granularity)
CONNECT_TIMEOUT = 60.0  # seconds for the endpoints, already up, to connect their channels to the router
STALL_TIMEOUT = 300.0  # seconds without a chunk of CHUNK ticks (or a snapshot, or the results) done: a hang


def actor_classes():
    """The endpoint and router actor classes (Ray imported only when a ray run starts)."""
    import ray

    from .endpoint import EndpointActor
    from .router_actor import RouterActor

    remote = ray.remote(num_cpus=0, max_restarts=0)
    return remote(EndpointActor), remote(RouterActor)


class _HighWater:
    """Progress that never counts a tick twice: a restarted emulation replays ticks already reported."""

    def __init__(self, progress):
        self.progress, self.reported, self.at = progress, 0, 0

    def restart_at(self, tick: int) -> None:
        self.at = tick

    def __call__(self, n: int) -> None:
        self.at += n
        if self.at > self.reported and self.progress is not None:
            self.progress(self.at - self.reported)
            self.reported = self.at



def run_ray(build, *, progress=None, address: str | None = None, transport: str = "channels",
            on_ready=None, observer=None, checkpointer=None, resume=None, max_restarts: int = 0,
            log=None, pes_per_process: int = 1) -> RawRun:
    """Run `build` with one actor per PE. `transport`: "channels" (direct channels, default) or "calls"
    (one Ray call per endpoint per tick). `on_ready(pids)`, if given, is called once every actor is up
    with {"pes": [pid, ...], "host": pid, "router": pid} (tests use it to kill an actor). `observer`:
    as in engines.run_engine, and so are `checkpointer` and `resume`.

    max_restarts: when a process of the emulation dies (ActorDiedError), start every actor again from the last
    checkpoint (the resumed one, or the start) and replay, at most this many times; `log(message)` hears of
    each restart. Errors raised by the PEs themselves are not retried: they would happen again, and neither is
    the loss of this node's raylet (RayletDownError, raylet.py): nothing can restart without it. The RawRun
    describes the whole run: `wall_seconds` covers every attempt, `restarted_from` lists each restart's tick.

    pes_per_process: PEs sharing one actor process (consecutive PEs of a chip; 4 is SpiNNaker 2's quad-PE), each
    still its own object, stepped in turn over the process's one channel; 1 (the default) gives every PE its
    own process. Fewer processes take less memory, start faster and wake less often per tick; the bits do
    not change."""
    import ray

    if transport not in TRANSPORTS:
        raise S2EmuError(f"unknown ray transport '{transport}' (known: {', '.join(TRANSPORTS)})")
    if type(pes_per_process) is not int or pes_per_process < 1:
        raise S2EmuError(f"--pes-per-process must be an int >= 1, got {pes_per_process!r}")
    started = start_ray(address)
    watch = waits.watch = RayletWatch(checkpointer, started)
    mark = _HighWater(progress)
    state, restarted_from = resume, []  # restarted_from: the tick each automatic restart went back to
    t0 = time.perf_counter()
    try:
        while True:
            watch.check()
            mark.restart_at(int(state["tick"]) if state is not None else 0)
            attempt = time.perf_counter()
            try:
                raw = _run(build, mark, transport, on_ready, observer, checkpointer, state, pes_per_process)
            except Exception as e:  # noqa: BLE001 - re-raise the user's error, not Ray's wrapper
                err = unwrap(e)
                if isinstance(err, ActorDiedError):
                    try:
                        watch.check(look=True)  # an actor's raylet may be why it died: no restart then
                    except RayletDownError as down:
                        raise down from None
                if not isinstance(err, ActorDiedError) or len(restarted_from) >= max_restarts:
                    if isinstance(err, (ActorDiedError, PlacementError)) and checkpointer is not None \
                            and checkpointer.written:
                        err = type(err)(f"{err}; the last checkpoint, {checkpointer.path} (tick "
                                        f"{checkpointer.last_tick}), resumes the run: --resume {checkpointer.path}")
                    raise err from None
            else:
                # the whole run, not its last attempt: --resume's tick, every attempt's time
                raw.resumed_from = int(resume["tick"]) if resume is not None else 0
                raw.restarts, raw.restarted_from = len(restarted_from), restarted_from
                raw.phases["failed_attempts"] = attempt - t0  # and the restarts between them
                raw.wall_seconds = time.perf_counter() - t0
                return raw
            if checkpointer is not None and checkpointer.written:
                state = read_checkpoint(checkpointer.path)
            restarted_from.append(int(state["tick"]) if state is not None else 0)
            if log is not None:
                log(f"{err}; restarting every actor from tick {restarted_from[-1]} "
                    f"(restart {len(restarted_from)} of {max_restarts})")
    finally:
        waits.watch = None
        if watch.down is not None:
            watch.kill_ray()  # Ray's shutdown would wait for a stopped raylet for ever
        if started:
            ray.shutdown()
        watch.stop()



class _Watch:
    """The driver's view of a running emulation for an observer: router counters as of the last chunk,
    and the host's scores, fetched without blocking the run (one request in flight at a time)."""

    def __init__(self, host):
        self.host, self.status, self.pending, self.asked = host, LiveStatus(0, [], None), None, 0.0

    def update(self, router_counters):
        import ray

        self.status = LiveStatus(*router_counters, self.status.scores)
        if self.pending is not None and ray.wait([self.pending], timeout=0)[0]:
            self.status.scores = ray.get(self.pending)
            self.pending = None
        if self.pending is None and time.monotonic() - self.asked > 0.25:
            self.pending, self.asked = self.host.clip_scores.remote(), time.monotonic()




class _Chips:
    """The driver's view of the chips' router actors: which endpoints each serves, and the glue that turns
    their per-chip answers into the run's (global endpoint order)."""

    def __init__(self, mapping, endpoints, names, streams, RouterActor, placement, processes, window=1):
        """processes: (actor, its endpoints' global ids in slot order) of every endpoint process."""
        self.mapping = mapping
        self.chips = sorted(mapping.tables)
        self.endpoints = {c: mapping.chip_endpoints(c) for c in self.chips}
        chip_of = mapping.endpoint_chips
        self.processes = {c: [(a, eps) for a, eps in processes if chip_of[eps[0]] == c] for c in self.chips}
        self.routers = {}
        for c in self.chips:
            local = {e: i for i, e in enumerate(self.endpoints[c])}
            self.routers[c] = RouterActor.options(**placement.on(c)).remote(
                mapping.router(c, streams), [endpoints[e] for e in self.endpoints[c]],
                [names[e] for e in self.endpoints[c]], mapping.neighbours(c), mapping.rounds,
                [[local[e] for e in eps] for _, eps in self.processes[c]], window)

    @property
    def actors(self) -> list:
        return list(self.routers.values())

    def open_channels(self, host_ip) -> None:
        opened = get_all([r.open_channels.remote(host_ip) for r in self.actors], START_TIMEOUT, "opening channels")
        self.addresses = dict(zip(self.chips, opened))

    def serve(self) -> dict:
        """Every endpoint process's serve call (-> its first endpoint's global index), connecting it to its
        chip's router over channel i of that chip."""
        return {a.serve.remote(*self.addresses[c], i, list(range(len(eps)))): eps[0]
                for c in self.chips for i, (a, eps) in enumerate(self.processes[c])}

    def accept_channels(self, serving) -> None:
        calls = []
        for c, r in self.routers.items():  # each router connects to its lower-numbered neighbours
            peers = {link: self.addresses[n] for link, n in self.mapping.neighbours(c).items() if n < c}
            calls.append(r.accept_channels.remote(peers))
        deadline = time.monotonic() + CONNECT_TIMEOUT
        for ref in calls:
            wait_for(ref, serving, max(0.0, deadline - time.monotonic()),
                 "connecting the endpoints' and links' channels to the routers")

    def advance(self, tick, count) -> list:
        return [r.advance.remote(tick, count) for r in self.actors]

    def merged_status(self, answers) -> tuple:
        """(routed, mc_sent per global endpoint) from every chip's advance answer."""
        from s2emu.router.mesh import by_endpoint

        return (sum(a[0] for a in answers),
                by_endpoint(self.mapping.n_endpoints, ((self.endpoints[c], a[1]) for c, a in zip(self.chips, answers))))

    def snapshot(self) -> list:
        return [r.snapshot.remote() for r in self.actors]

    def merged_snapshot(self, answers) -> tuple:
        """(endpoint states, router states, inbound, inbound of the ticks after), global endpoint order, from
        every chip's snapshot (Checkpointer.write's arguments after the tick)."""
        from s2emu.router.mesh import by_endpoint

        n, chips = self.mapping.n_endpoints, list(zip(self.chips, answers))
        states = by_endpoint(n, ((self.endpoints[c], a[0]) for c, a in chips), fill=None)
        rows = [by_endpoint(n, ((self.endpoints[c], a[2][w]) for c, a in chips), fill=None)
                for w in range(len(answers[0][2]))]
        return states, [a[1] for a in answers], rows[0], rows[1:]

    def restore(self, resume) -> list:
        rows = in_flight(resume)
        return [r.restore.remote(st, [[row[e] for e in self.endpoints[c]] for row in rows])
                for (c, r), st in zip(self.routers.items(), resume["router"], strict=True)]


def _run(build, progress, transport, on_ready, observer, checkpointer, resume, pes_per_process) -> RawRun:
    import ray

    from s2emu.router.mesh import merge_counters, merge_drop_reports

    EndpointActor, RouterActor = actor_classes()
    t0 = time.perf_counter()
    m = build.mapping
    if len(m.tables) > 1 and transport != "channels":
        raise S2EmuError(f"a machine of {len(m.tables)} chips runs on the channels transport only, not "
                         f"'{transport}'")
    placement = Placement(sorted(m.tables))
    chip_of = m.endpoint_chips
    groups = process_groups(build, pes_per_process)
    actors, chips, watch = [], None, None  # what the cleanup below kills, however far the start got
    serving = {}  # serve call -> endpoint index
    queued = deque()  # (advance calls, ticks, None) or (snapshot calls, 0, tick) not awaited yet; one queued
    # behind the running one keeps the routers busy between driver calls
    try:
        pes = []
        for g in groups:
            pes.append(EndpointActor.options(**placement.on(chip_of[g[0]])).remote(
                [("pe", build.pe_configs[p]) for p in g]))
            actors.append(pes[-1])
        host = EndpointActor.options(max_concurrency=2 if observer else 1, **placement.on(chip_of[m.host])).remote(
            [("host", build.host_config)])
        actors.append(host)  # actors: the endpoints' processes, PEs' then the host's
        watch = _Watch(host) if observer is not None else None
        endpoints = [None] * m.n_endpoints  # endpoint -> (its process's actor, its slot there)
        for a, g in zip(pes, groups):
            for slot, p in enumerate(g):
                endpoints[p] = (a, slot)
        endpoints[m.host] = (host, 0)
        names = [f"PE {c['pe_id']}" for c in build.pe_configs] + ["the host"]
        processes = [*zip(pes, groups), (host, [m.host])]
        if build.window > 1 and transport != "channels":
            raise S2EmuError(f"--window {build.window} runs on the channels transport only, not '{transport}'")
        chips = _Chips(m, endpoints, names, build.host_config["streams"], RouterActor, placement, processes,
                       build.window)
        chip_nodes = placement.wait()
        pids = get_all([a.ready.remote() for a in (*actors, *chips.actors)], START_TIMEOUT, "starting the actors")
        tick = 0
        if resume is not None:
            get_all([a.restore.remote(slot, st) for (a, slot), st in zip(endpoints, resume["endpoints"])]
                     + chips.restore(resume),
                     START_TIMEOUT, "restoring the checkpoint")
            tick = int(resume["tick"])  # (run_ray's progress already counts from here)
        start = tick
        if on_ready is not None:
            nodes = get_all([a.node.remote() for a in (*actors, *chips.actors)], START_TIMEOUT, "asking for nodes")
            per_pe = [i for i, g in enumerate(groups) for _ in g]  # PE -> its process (PEs in id order)
            on_ready({"pes": [pids[i] for i in per_pe], "host": pids[len(pes)], "router": pids[len(actors)],
                      "routers": pids[len(actors):], "chip_nodes": chip_nodes,
                      "nodes": {"pes": [nodes[i] for i in per_pe], "host": nodes[len(pes)],
                                "routers": nodes[len(actors):]}})
        if transport == "channels":
            chips.open_channels(channel_host())
            serving.update(chips.serve())
            chips.accept_channels(serving)
        t_start = time.perf_counter() - t0
        if watch is not None:
            observer(lambda: watch.status)
        n_ticks = build.n_ticks
        chunk = -(-CHUNK // build.window) * build.window  # whole windows
        t1 = time.perf_counter()
        while tick < n_ticks or queued:
            if tick < n_ticks:
                end = min(tick + chunk, checkpointer.next_due(tick) if checkpointer else n_ticks)
                queued.append((chips.advance(tick, end - tick), end - tick, None))
                tick = end
                if checkpointer is not None and checkpointer.due(tick):
                    queued.append((chips.snapshot(), 0, tick))
            if len(queued) >= 2 or tick >= n_ticks:
                refs, done, at = queued.popleft()
                what = "a chunk of ticks" if at is None else "a snapshot"
                got = wait_for_each(refs, serving, STALL_TIMEOUT, what)
                if at is not None:  # the state after `at` ticks
                    checkpointer.write(at, *chips.merged_snapshot(got))
                    continue
                if watch is not None:
                    watch.update(chips.merged_status(got))
                if progress is not None:
                    progress(done)
        t_run = time.perf_counter() - t1
        if transport == "channels":
            get_all([r.close_channels.remote() for r in chips.actors] + list(serving), STALL_TIMEOUT,
                     "closing the channels")
        finished = get_all([a.finish.remote(slot) for a, slot in endpoints[:m.n_pes]], STALL_TIMEOUT,
                            "collecting the PEs' results")
        *per_chip, results = get_all([r.counters.remote() for r in chips.actors] + [host.finish.remote(0)],
                                      STALL_TIMEOUT, "collecting the results")
    except BaseException:
        for a in (*actors, *(chips.actors if chips is not None else ())):
            ray.kill(a)
        discard([r for refs, _, _ in queued for r in refs] + list(serving)
                 + ([watch.pending] if watch and watch.pending else []))
        placement.remove()
        raise
    for a in (*actors, *chips.actors):
        ray.kill(a)
    placement.remove()
    return RawRun(
        host_results=results,
        weights={c["pe_id"]: f[0] for c, f in zip(build.pe_configs, finished)},
        recordings={c["pe_id"]: f[1] for c, f in zip(build.pe_configs, finished)},
        pe_counters={c["pe_id"]: f[2] for c, f in zip(build.pe_configs, finished)},
        router_counters=merge_counters([c for c, _, _ in per_chip], m.n_endpoints, m.machine.geometry),
        drop_report=merge_drop_reports([d for _, d, _ in per_chip]),
        ticks=n_ticks,
        wall_seconds=time.perf_counter() - t0,
        phases={"start_actors": t_start, "run": t_run, "router_busy": max(b for _, _, b in per_chip)},
        resumed_from=start,
        checkpoints=0 if checkpointer is None else checkpointer.written,
        chip_nodes=chip_nodes,
    )
