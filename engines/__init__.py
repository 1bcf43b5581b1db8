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


ENGINES = ("local", "ray")
TRANSPORTS = ("channels", "calls")  # the ray engine's per-tick exchange; the local engine has none


def run_engine(name: str, build, *, progress=None, address: str | None = None,
               transport: str = "channels") -> RawRun:
    """Run `build` on engine `name`. `transport` (ray only): "channels", direct channels between the
    router actor and the endpoints (fast, default), or "calls", one Ray actor call per endpoint per tick."""
    if name == "local":
        from .local import run_local
        return run_local(build, progress=progress)
    if name == "ray":
        from .ray_engine import run_ray
        return run_ray(build, progress=progress, address=address, transport=transport)
    from s2emu.errors import S2EmuError
    raise S2EmuError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")
