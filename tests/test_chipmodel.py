"""The chip's time and energy model (s2emu/chipmodel.py): hand-computed figures, overrides, and what a run reports."""

import pytest

from s2emu.chipmodel import ASSUMPTIONS, chip_model, parse_assumptions
from s2emu.errors import S2EmuError


def counters(pe, macs, accesses, pin, pout, peak, optimizer=0):
    c = {"pe": pe, "macs": macs, "accesses": accesses, "packets_in": pin, "packets_out": pout,
         "optimizer_elements": optimizer}
    c.update({f"peak_tick_{k}": v for k, v in
              zip(("macs", "accesses", "packets_in", "packets_out", "optimizer_elements"), (*peak, 0)[:5])})
    return c


def test_a_hand_computed_chip():
    pes = [counters(0, 3000, 2000, 100, 10, (300, 200, 10, 1)),
           counters(1, 600, 400, 50, 5, (60, 40, 5, 1))]
    m = chip_model(pes, {"routed": 40, "p2p_routed": 2}, ticks=10, samples=2, streams=1, step_seconds=None,
                   wall_seconds=1.0)
    # PE 0's peak tick: 300 MACs x 3 + 200 accesses x 2 + 10 x 100 + 1 x 20 + 500 = 2,820 cycles at 300 MHz
    assert m["bottleneck_pe"] == 0 and m["seconds_per_tick_peak"] == pytest.approx(2820 / 300e6)
    assert m["real_time"] and m["real_time_margin"] == pytest.approx(1e-3 / (2820 / 300e6))
    cycles = (3000 * 3 + 2000 * 2 + 100 * 100 + 10 * 20 + 10 * 500) + (600 * 3 + 400 * 2 + 50 * 100 + 5 * 20 + 10 * 500)
    assert m["dynamic_joules"] == pytest.approx(cycles * 20e-12 + 42 * 1e-9)
    assert m["chip_seconds"] == pytest.approx(10 * 1e-3)  # paced to the 1 ms step
    assert m["static_joules"] == pytest.approx((2 * 1e-3 + 0.1) * 10e-3)
    assert m["energy_per_sample_joules"] == pytest.approx((m["dynamic_joules"] + m["static_joules"]) / 2)
    assert m["gpu_vs_chip"] == pytest.approx(300 * 0.01 / m["energy_per_sample_joules"])
    # the same PEs spread over three chips: each chip in use pays its own static power
    three = chip_model(pes, {"routed": 40, "p2p_routed": 2, "chips": [{}, {}, {}]}, ticks=10, samples=2, streams=1,
                       step_seconds=None, wall_seconds=1.0)
    assert three["static_joules"] == pytest.approx((2 * 1e-3 + 3 * 0.1) * 10e-3)
    # and every router that handles a packet on its way is priced: 7 run straight on, 3 detours passed,
    # 2 point-to-point packets sent on toward their chip
    hops = chip_model(pes, {"routed": 40, "p2p_routed": 2, "default_routed": 7, "emergency_routed": 3,
                            "p2p_forwarded": 2, "chips": [{}, {}, {}]}, ticks=10, samples=2, streams=1,
                      step_seconds=None, wall_seconds=1.0)
    assert hops["dynamic_joules"] - three["dynamic_joules"] == pytest.approx(12 * 1e-9)


def test_the_optimizer_is_priced_once_per_chip():
    pes = [counters(0, 0, 0, 0, 0, (0, 0, 0, 0, 100), optimizer=100)]
    m = chip_model(pes, {}, ticks=1, samples=8, streams=8, step_seconds=None, wall_seconds=1.0)
    assert m["seconds_per_tick_peak"] == pytest.approx((100 * 57 + 500) / 300e6)


def test_overrides_and_streams():
    pes = [counters(0, 32_000, 0, 0, 0, (32_000, 0, 0, 0))]
    one = chip_model(pes, {}, ticks=1, samples=32, streams=32, step_seconds=0.01, wall_seconds=1.0)
    # 32 streams are 32 chips: one chip's tick does 1,000 MACs, 3,500 cycles with the tick overhead
    assert one["seconds_per_tick_peak"] == pytest.approx(3500 / 300e6) and one["tick_seconds"] == 0.01
    slow = chip_model(pes, {}, ticks=1, samples=32, streams=32, step_seconds=0.01, wall_seconds=1.0,
                      overrides=parse_assumptions(["clock_mhz=0.1"]))
    assert not slow["real_time"] and slow["chip_seconds"] == pytest.approx(3500 / 0.1e6)
    assert slow["assumptions"]["clock_mhz"]["value"] == 0.1 and set(slow["assumptions"]) == set(ASSUMPTIONS)


@pytest.mark.parametrize("item, message", [("clock=3", "NAME one of"), ("clock_mhz", "NAME=VALUE"),
                                           ("clock_mhz=fast", "not a number"), ("clock_mhz=-1", "positive")])
def test_bad_assumptions_are_named(item, message):
    with pytest.raises(S2EmuError, match=message):
        parse_assumptions([item])


def test_a_run_reports_its_chip_time_and_splitting_lowers_the_bottleneck():
    from conftest import smoke
    from s2emu.runner import run

    one, four = (run(smoke(pes=p, epochs=1)) for p in (1, 4))
    for r in (one, four):
        cm = r["chip_model"]
        assert cm["tick_seconds"] == 1e-3 and cm["energy_per_sample_joules"] > 0
        assert {p["pe"] for p in cm["per_pe"]} == {c["pe"] for c in r["pe_counters"]}
    assert four["chip_model"]["seconds_per_tick_peak"] < one["chip_model"]["seconds_per_tick_peak"]
