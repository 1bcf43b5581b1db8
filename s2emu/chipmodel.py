"""A time and energy model of the emulated chip: the work each PE counted (MACs, SRAM accesses, packets in and
out) priced in Cortex-M4F cycles, turned into time per tick and energy per sample.

Every number is an assumption with a name, a unit and a source, overridable (`s2emu run --assume NAME=VALUE`).
SpiNNaker 2 has no public per-operation figures (SCIENCE.md): where no measurement exists the source says
"assumption" and why the value is plausible. docs/chip-model.md explains the model and its limits.

Time: a PE's cycles in a tick = MACs x cycles_per_mac + accesses x cycles_per_access + packets_in x
cycles_per_packet_in + packets_out x cycles_per_packet_out + weights stepped by the optimizer x
cycles_per_optimizer_element + cycles_per_tick. The chip keeps real time if its
busiest PE's heaviest tick (`peak_tick_*` counters) fits the time step. Energy: every cycle costs pj_per_cycle,
every packet each router handles nj_per_packet (router_passes), and for as long as the run lasts on the chip (paced to the time step when it
keeps up, else at its peak-tick speed) every used PE draws static_mw_per_pe and the rest of the chip
chip_static_watts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import S2EmuError


@dataclass(frozen=True)
class Assumption:
    value: float
    unit: str
    source: str


ASSUMPTIONS: dict[str, Assumption] = {
    "clock_mhz": Assumption(300.0, "MHz", "SCIENCE.md: the host toolchain runs the PEs at 150 or 300 MHz"),
    "cycles_per_mac": Assumption(3.0, "cycles", "ARM Cortex-M4 TRM: VMLA.F32 / VFMA.F32 take 3 cycles (operand "
                                 "loads are counted as accesses)"),
    "cycles_per_access": Assumption(2.0, "cycles", "ARM Cortex-M4 TRM: LDR takes 2 cycles (back-to-back loads 1); "
                                    "the PE's SRAM is local, no cache"),
    "cycles_per_packet_in": Assumption(100.0, "cycles", "assumption: interrupt entry and exit (12 + 12 cycles on "
                                       "the M4) and a handler that decodes the key and queues its row"),
    "cycles_per_packet_out": Assumption(20.0, "cycles", "assumption: key and payload written to the router's "
                                        "memory-mapped registers, a check of its ready flag"),
    "cycles_per_optimizer_element": Assumption(57.0, "cycles", "ARM Cortex-M4 TRM: an Adam step of one weight is "
                                               "5 multiply-adds (3 cycles each), VSQRT.F32 and VDIV.F32 (14 "
                                               "each) and 7 words read or written (2 each)"),
    "cycles_per_tick": Assumption(500.0, "cycles", "assumption: the timer interrupt and the tick's loop overhead"),
    "tick_seconds": Assumption(0.001, "s", "SpiNNaker's default 1 ms time step; data with a physical step use "
                               "theirs (keyword features: a 10 ms hop)"),
    "pj_per_cycle": Assumption(20.0, "pJ", "assumption: about 20 uW/MHz for a Cortex-M4F-class core in 22 nm FDSOI "
                               "near 0.5 V; SpiNNaker 1's 0.034 W per active core at 200 MHz (130 nm) is 170 pJ"),
    "nj_per_packet": Assumption(1.0, "nJ", "SpiNNaker 1: 25 pJ per bit routed, a 40-bit packet (SCIENCE.md); an "
                                "upper bound for SpiNNaker 2"),
    "static_mw_per_pe": Assumption(1.0, "mW", "assumption: leakage and clock tree of a PE in 22 nm FDSOI"),
    "chip_static_watts": Assumption(0.1, "W", "assumption: the rest of a SpiNNaker 2 chip while it runs (router, "
                                    "idle PEs, I/O, DRAM standby); SpiNNaker 1's 0.35 W idle per chip (130 nm, "
                                    "SCIENCE.md) bounds it from above"),
    "gpu_watts": Assumption(300.0, "W", "NVIDIA V100 SXM2 board power (TDP), as seed A compares with"),
    "gpu_seconds_per_sample": Assumption(0.01, "s", "assumption: a 100-step recurrent network trained at batch 1 "
                                         "is latency-bound on a GPU, about 0.1 ms of kernels per step"),
    "cpu_watts": Assumption(65.0, "W", "assumption: a desktop x86 package (TDP) as seed B compares with; the time "
                            "is this emulator's own wall time per sample, an upper bound on a native program"),
}


def parse_assumptions(items: list[str] | None) -> dict[str, float]:
    """--assume NAME=VALUE ... -> {name: value}, with a clear error for unknown names and bad values."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or name not in ASSUMPTIONS:
            raise S2EmuError(f"--assume {item}: expected NAME=VALUE with NAME one of {', '.join(ASSUMPTIONS)}")
        try:
            v = float(value)
        except ValueError:
            raise S2EmuError(f"--assume {item}: {value!r} is not a number") from None
        if not v > 0:
            raise S2EmuError(f"--assume {item}: must be positive")
        out[name] = v
    return out


def _cycles(a: dict, macs, accesses, packets_in, packets_out, optimizer, ticks) -> float:
    return (macs * a["cycles_per_mac"] + accesses * a["cycles_per_access"] + packets_in * a["cycles_per_packet_in"]
            + packets_out * a["cycles_per_packet_out"] + optimizer * a["cycles_per_optimizer_element"]
            + ticks * a["cycles_per_tick"])


# Every time a router handles a packet: it matched an entry (routed), it ran straight on from a link
# (default_routed), a detour passed the chip beside a failed wire (emergency_routed), a point-to-point packet
# was delivered (p2p_routed) or sent on toward its chip (p2p_forwarded).
ROUTER_PASSES = ("routed", "default_routed", "emergency_routed", "p2p_routed", "p2p_forwarded")


def router_passes(router: dict) -> int:
    """Packets handled by routers, counted once per router that handled them (what nj_per_packet prices)."""
    return sum(router.get(k, 0) for k in ROUTER_PASSES)


def chip_model(pe_counters: list[dict], router: dict, ticks: int, samples: int, *, streams: int,
               step_seconds: float | None, wall_seconds: float, overrides: dict[str, float] | None = None) -> dict:
    """Modeled chip time and energy of a run. pe_counters: runner's per-PE counters; samples: the samples the
    run processed (training and test, every stream); step_seconds: the data's physical time step, if any.

    A run of B streams is B chips side by side (cores/sram.py): the PEs counted every stream's MACs and
    accesses, so one chip's tick does 1/B of them; a packet carries all streams' payloads, so one chip's PEs
    handle up to as many packets as counted (an upper bound), and B chips route up to B times as many; the
    optimizer steps once per sample for all streams, as each chip would for its own."""
    a = {k: v.value for k, v in ASSUMPTIONS.items()}
    if step_seconds is not None:
        a["tick_seconds"] = step_seconds
    a.update(overrides or {})
    hz = a["clock_mhz"] * 1e6
    per_pe = []
    B = streams
    for c in pe_counters:  # one chip's PE
        total = _cycles(a, c["macs"] / B, c["accesses"] / B, c["packets_in"], c["packets_out"],
                        c.get("optimizer_elements", 0), ticks)
        peak = _cycles(a, c["peak_tick_macs"] / B, c["peak_tick_accesses"] / B, c["peak_tick_packets_in"],
                       c["peak_tick_packets_out"], c.get("peak_tick_optimizer_elements", 0), 1)
        per_pe.append({"pe": c["pe"], "cycles": total, "cycles_per_tick_mean": total / ticks,
                       "cycles_per_tick_peak": peak, "load_peak": peak / hz / a["tick_seconds"]})
    busiest = max(per_pe, key=lambda p: p["cycles_per_tick_peak"])
    peak_s = busiest["cycles_per_tick_peak"] / hz
    mean_s = max(p["cycles_per_tick_mean"] for p in per_pe) / hz
    real_time = peak_s <= a["tick_seconds"]
    chip_seconds = ticks * max(a["tick_seconds"], peak_s)  # paced to the step when it keeps up
    cycles = B * sum(p["cycles"] for p in per_pe)  # all B chips
    packets = B * router_passes(router)
    dynamic_j = cycles * a["pj_per_cycle"] * 1e-12 + packets * a["nj_per_packet"] * 1e-9
    chips = len(router.get("chips") or [None])  # chips in use (a mesh's router counters list them)
    static_j = B * (len(per_pe) * a["static_mw_per_pe"] * 1e-3 + chips * a["chip_static_watts"]) * chip_seconds
    per_sample = (dynamic_j + static_j) / max(samples, 1)
    gpu = a["gpu_watts"] * a["gpu_seconds_per_sample"]
    cpu = a["cpu_watts"] * wall_seconds / max(samples, 1)
    return {
        "assumptions": {k: {"value": a[k], "unit": ASSUMPTIONS[k].unit, "source": ASSUMPTIONS[k].source}
                        for k in ASSUMPTIONS},
        "seconds_per_tick_peak": peak_s, "seconds_per_tick_mean": mean_s, "tick_seconds": a["tick_seconds"],
        "real_time": real_time, "real_time_margin": a["tick_seconds"] / peak_s if peak_s else None,
        "bottleneck_pe": busiest["pe"], "chip_seconds": chip_seconds,
        "energy_joules": dynamic_j + static_j, "dynamic_joules": dynamic_j, "static_joules": static_j,
        "energy_per_sample_joules": per_sample,
        "gpu_energy_per_sample_joules": gpu, "gpu_vs_chip": gpu / per_sample if per_sample else None,
        "cpu_energy_per_sample_joules": cpu, "cpu_vs_chip": cpu / per_sample if per_sample else None,
        "per_pe": per_pe,
    }
