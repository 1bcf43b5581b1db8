"""Engines run the same PE, router and host objects: `local` in one process, `ray` as one actor per PE."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RawRun:
    """What an engine brings back from a run; s2emu.runner turns it into results."""
    host_results: dict
    weights: dict[int, dict]  # pe -> {projection: weight slice}
    recordings: dict[int, dict]  # pe -> {"spikes": ..., "voltage": ...}
    pe_counters: dict[int, dict]
    router_counters: dict
    drop_report: str | None
    ticks: int
    wall_seconds: float
    phases: dict = field(default_factory=dict)  # seconds spent per phase, where the engine can tell
    resumed_from: int = 0  # the tick a resumed run started from (0: from the start)
    checkpoints: int = 0  # checkpoints written
    restarts: int = 0  # times the emulation was restarted from a checkpoint after a process died (ray)
    chip_nodes: list | None = None  # (ray) the Ray node each chip in use ran on, in chip order


@dataclass
class LiveStatus:
    """What a live view reads while a run goes. On the ray engine the counters may be a chunk behind the
    chip and the scores a little older (they come from the actors between chunks)."""
    routed: int  # multicast packets routed so far
    mc_sent: list[int]  # multicast packets without payload sent so far, per endpoint: spikes at batch 1
    scores: object = None  # the stream host's scores per clip [clips, classes], NaN until a clip ends


ENGINES = ("local", "ray")
TRANSPORTS = ("channels", "calls")  # the ray engine's per-tick exchange; the local engine has none


def run_engine(name: str, build, *, progress=None, address: str | None = None,
               transport: str = "channels", observer=None, checkpointer=None, resume=None,
               max_restarts: int = 0, log=None, pes_per_process: int = 1) -> RawRun:
    """Run `build` on engine `name`. `transport` (ray only): "channels", direct channels between the
    router actor and the endpoints (fast, default), or "calls", one Ray actor call per endpoint per tick.
    `observer(status)`, if given, is called once before the first tick with a function that returns the
    run's LiveStatus at any time (for live views). `checkpointer` (s2emu.checkpoint.Checkpointer) writes the
    state every so many ticks; `resume`, a checkpoint's payload, continues from it. `max_restarts` (ray only):
    restarts from the last checkpoint when a process dies; `log(message)` hears of each. `pes_per_process`
    (ray only): PEs sharing one actor process (default 1: a process per PE)."""
    kw = {"progress": progress, "observer": observer, "checkpointer": checkpointer, "resume": resume}
    if name == "local":
        from .local import run_local
        return run_local(build, **kw)
    if name == "ray":
        from .ray_engine import run_ray
        return run_ray(build, address=address, transport=transport, max_restarts=max_restarts, log=log,
                       pes_per_process=pes_per_process, **kw)
    from s2emu.errors import S2EmuError
    raise S2EmuError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")
