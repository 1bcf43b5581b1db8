"""Firing-rate regularization of e-prop (Bellec et al. 2020; docs/learning-rules.md): the PEs' gradients against
the float64 reference (tests/eprop_reference.py), the rates it moves, the same bits on every split, window and
engine, its recipe keys, its memory, and nothing changed while it is off."""

import tomllib

import numpy as np
import pytest

from s2emu import snn
from s2emu.build import build
from s2emu.cores import eprop_pe
from s2emu.engines import run_engine
from s2emu.errors import RecipeError
from s2emu.host.base import TEST
from s2emu.recipe import load_recipe, parse_recipe, resolve_recipe_path
from s2emu.runner import assemble_spikes, memory_summary, run

from conftest import smoke, with_learning
from test_bad_input import parse_error
from test_checkpoint import stopped_and_resumed
from test_delays import delayed_smoke
from test_eprop_reference import GRAD_TOL, agrees, assert_agrees, compare, make_recipe, run_chip
from test_equivalence import _compare_with_golden, digests

# the reference network's neurons fire about 0.2 spikes per tick: a target of 200 Hz (0.2 at 1 ms a tick) puts
# some above it and some below; c_reg 3 moves the input and recurrent gradients by 20-30% of their largest element
REG = dict(reg_rate=3.0, target_rate_hz=200.0)
SMOKE_DIGEST = "5bbcab0393eecefe47c003b0cb67a1c830a0616a7ad3b408dae1c7023d140474"  # benchmarks/results/smoke.json


# -- the PEs against the reference ---------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("atoms", [4, 10], ids=["3pes", "1pe"])  # PEs of 4, 4 and 2 (a group and one alone)
@pytest.mark.parametrize("signal", ["end_of_sample", "online"])
@pytest.mark.parametrize("model", ["alif", "lif"])
def test_pe_gradients_with_rate_regularization_match_the_equations(model, signal, atoms, batch):
    """With the regularization on, every gradient the PEs hand Adam is the reference's; and the reference
    without it is far from them, so the regularization is in what was compared."""
    recipe = make_recipe(model, atoms=atoms, batch=batch, signal=signal, **REG)
    chip = run_chip(recipe)
    worst, spikes_match, n_spikes = compare(recipe, chip)
    assert n_spikes >= 60, f"too few spikes ({n_spikes}) for the comparison to mean anything"
    assert spikes_match and agrees(worst, spikes_match), worst
    without = compare(with_learning(recipe, reg_rate=0.0), chip)[0]
    assert max(without["d_in"], without["d_rec"]) > 1000 * GRAD_TOL, without


def test_pe_gradients_with_rate_regularization_per_source_4pes():
    assert_agrees(make_recipe(atoms=3, eligibility_layout="per_source", signal="online", **REG))


@pytest.mark.parametrize("mutate, signal", [
    # online, the signal from the count over the whole sample (count / T) instead of the steps so far
    (lambda real: lambda S, step: real(S, S.T - 1), "online"),
    # without the (1 - kappa) that puts e, not ebar, under c_reg
    (lambda real: lambda S, step: real(S, step) / np.float32(1 - S.c.kappa), "end_of_sample"),
], ids=["online_rate_over_T", "without_1_minus_kappa"])
def test_a_mistake_in_the_regularization_signal_fails(monkeypatch, mutate, signal):
    recipe = make_recipe(signal=signal, **REG)
    monkeypatch.setattr(eprop_pe, "rate_signal", mutate(eprop_pe.rate_signal))
    worst, spikes_match, _ = compare(recipe)
    assert not agrees(worst, spikes_match) and worst["d_in"] > 1000 * GRAD_TOL, worst


# -- what it does ---------------------------------------------------------------------------------------------

def firing_rate(recipe) -> float:
    """The hidden neurons' mean spikes per tick over the test samples, after the recipe's training."""
    b = build(recipe)
    raw = run_engine("local", b)
    spikes = assemble_spikes(b, raw)["hidden"]
    test = np.flatnonzero(b.plan.split == TEST)
    n_ticks = (b.plan.idx[test] >= 0).sum() * b.dataset.steps * recipe.network["hidden"].size
    return np.isin(spikes[:, 0] // b.clock.ticks_per_sample, test).sum() / n_ticks


@pytest.mark.parametrize("signal", ["end_of_sample", "online"])
@pytest.mark.parametrize("target_hz", [10.0, 100.0], ids=["from_above", "from_below"])
def test_regularization_moves_the_firing_rate_towards_its_target(signal, target_hz):
    """The smoke network fires about 0.03 spikes per tick (30 Hz at 1 ms a tick) after one epoch (16 updates).
    The same epoch with a large c_reg ends with the test samples' rate more than half the way to 10 Hz or to
    100 Hz (the regularization's sign mistaken, it would move away)."""
    base = with_learning(smoke(epochs=1, batch=8), signal=signal, lr=0.03)
    before = firing_rate(base)
    assert 0.02 < before < 0.04
    after = firing_rate(with_learning(base, reg_rate=100.0, target_rate_hz=target_hz))
    target = target_hz / 1000
    assert (after - before) / (target - before) > 0.5 and abs(after - target) < abs(before - target) / 2, \
        (before, after, target)


# -- the same bits everywhere ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", [
    dict(),
    dict(signal="online", feedback="random"),
])
def test_regularization_gives_the_same_bits_on_every_split_and_matches_the_golden_model(variant):
    r = with_learning(smoke(epochs=2, batch=4), reg_rate=30.0, target_rate_hz=60.0, **variant)
    _compare_with_golden(r)
    d = digests(r, [1, 3])
    assert len(set(d.values())) == 1, d
    assert d[1] != run(with_learning(r, reg_rate=0.0))["state_digest"]


def test_regularization_survives_a_late_learning_signal_and_a_restart(tmp_path):
    """A window of 3 ticks delivers the end-of-sample signal after the next sample's tick 0: the spike count it
    needs is still there (the update clears it, not the sample's start); and a checkpoint keeps it."""
    r = with_learning(delayed_smoke(), reg_rate=30.0, target_rate_hz=60.0)
    full, resumed = stopped_and_resumed(r, tmp_path, window=3)
    assert 0 < resumed["resumed_from_tick"] and resumed["state_digest"] == full["state_digest"]
    assert full["state_digest"] == run(r)["state_digest"]


@pytest.mark.ray
def test_regularization_is_the_same_bits_on_the_ray_engine(ray_local):
    r = with_learning(smoke(epochs=1, batch=2), reg_rate=30.0, target_rate_hz=60.0, signal="online")
    assert run(r, engine="ray")["state_digest"] == run(r)["state_digest"]


# -- off by default: nothing changes --------------------------------------------------------------------------

def test_off_the_smoke_recipe_keeps_its_digest_and_its_memory():
    r = run(smoke())
    assert r["state_digest"] == SMOKE_DIGEST and r["total_bytes"] == 70_756
    explicit = with_learning(smoke(), reg_rate=0.0, target_rate_hz=25.0)  # the target alone does nothing
    assert run(explicit)["state_digest"] == SMOKE_DIGEST


def test_its_spike_count_is_in_the_ledger_only_when_on():
    """4 bytes per hidden neuron, on the PE that holds it; the keyword recipe keeps its 698,020 B while off."""
    def spike_count_bytes(b):
        return [sum(i["bytes"] for i in pe["items"] if i["name"] == "spike_count")
                for pe in memory_summary(b, items=True)["per_pe"]]

    kws = load_recipe("eprop_kws")
    for recipe, neurons in ((smoke(), 40), (kws, 120)):
        off = build(recipe, streams=1, load_data=False)  # as `s2emu memory` builds it
        on = build(with_learning(recipe, reg_rate=1.0), streams=1, load_data=False)
        assert not any(spike_count_bytes(off))
        assert spike_count_bytes(on) == [4 * (pe["hi"] - pe["lo"]) if pe["population"] == "hidden" else 0
                                         for pe in memory_summary(on)["per_pe"]]
        assert on.total_bytes - off.total_bytes == 4 * neurons
    assert build(kws, streams=1, load_data=False).total_bytes == 698_020


# -- its recipe keys --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("learning, expect", [
    (dict(reg_rate=-1.0), "'learning.reg_rate' must be >= 0"),
    (dict(reg_rate=float("nan")), "'learning.reg_rate' must be a finite number"),
    (dict(target_rate_hz=-5.0), "'learning.target_rate_hz' must be >= 0"),
    (dict(reg_rate="high"), "'learning.reg_rate' must be a number"),
    (dict(reg_rate=1.0, target_rate_hz=1500.0), ("'learning.target_rate_hz' 1500 Hz is 1.5 spikes per tick of "
                                                  "1 ms; a neuron fires at most once a tick (1000 Hz)")),
])
def test_bad_regularization_keys_are_refused_with_one_line(learning, expect):
    assert expect in parse_error(lambda d: d["learning"].update(learning))


def recipe_doc(name: str) -> dict:
    return tomllib.loads(resolve_recipe_path(name).read_text(encoding="utf-8"))


def test_the_target_is_per_tick_of_the_data():
    """Keyword spotting's tick is the hop, 161 / 16,000 s: 99 Hz is under a spike a tick, 101 Hz over."""
    doc = recipe_doc("eprop_kws")
    doc["learning"].update(reg_rate=1.0, target_rate_hz=99.0)
    parse_recipe(doc)
    doc["learning"]["target_rate_hz"] = 101.0
    with pytest.raises(RecipeError, match=r"101 Hz is 1.02 spikes per tick of 10.1 ms"):
        parse_recipe(doc)
    b = build(smoke(), streams=1, load_data=False)  # no physical step: 1 ms
    assert next(c for c in b.pe_configs if c["role"] == "neuron")["target_rate"] == pytest.approx(0.01)


def test_regularization_belongs_to_eprop():
    doc = recipe_doc("tlbptt_kws")
    doc["learning"]["reg_rate"] = 1.0
    with pytest.raises(RecipeError, match="'learning.reg_rate' .* applies to e-prop only, not to rule 'bptt'"):
        parse_recipe(doc)


def test_a_recipe_with_regularization_round_trips_through_the_python_api():
    doc = recipe_doc("smoke")
    doc["learning"].update(reg_rate=2.5, target_rate_hz=12.0)
    r = parse_recipe(doc)
    assert (r.learning.reg_rate, r.learning.target_rate_hz) == (2.5, 12.0)
    assert snn.canonical(snn.Network.from_recipe(r).recipe()) == snn.canonical(r)
