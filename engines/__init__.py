"""Engines run the same PE, router and host objects: `local` in one process, `ray` as one actor per PE."""

from __future__ import annotations

from .contract import ENGINES, TRANSPORTS, LiveStatus, RawRun  # noqa: F401 - the package's names


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
