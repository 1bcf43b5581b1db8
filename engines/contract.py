"""What every engine returns and reports: the contract between the engines and the runner (no engine code)."""

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
    restarted_from: list[int] = field(default_factory=list)  # (ray) the tick each of those restarts went back to
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
