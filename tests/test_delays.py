"""Projection delays (cores/timing.py): the golden model's equations with delays, on every split, and clear
errors where a delay cannot be honoured."""

import dataclasses
import tomllib
from importlib import resources

import pytest

from s2emu.build import build
from s2emu.cores.pe import make_pe
from s2emu.errors import PacketError, RecipeError
from s2emu.recipe import parse_recipe
from s2emu.router.packets import PacketBatch

from conftest import smoke, with_learning
from test_bad_input import parse_error, smoke_doc
from test_equivalence import _compare_with_golden, digests


def with_delays(recipe, **delays):
    """delays by projection name with '_to_' for '->': input_to_hidden=3."""
    named = {k.replace("_to_", "->"): v for k, v in delays.items()}
    projs = tuple(dataclasses.replace(p, delay=named.get(p.name, p.delay)) for p in recipe.network.projections)
    return dataclasses.replace(recipe, network=dataclasses.replace(recipe.network, projections=projs))


@pytest.mark.parametrize("signal, delays", [
    ("end_of_sample", dict(input_to_hidden=3, hidden_to_hidden=2, hidden_to_out=4)),
    ("online", dict(input_to_hidden=2, hidden_to_hidden=5, hidden_to_out=2)),
])
def test_delays_match_the_golden_model_on_every_split(signal, delays):
    r = with_delays(with_learning(smoke(epochs=2, batch=4), signal=signal), **delays)
    _compare_with_golden(r)  # every spike at its tick, weights after learning
    d = digests(r, [1, 4, 40])
    assert len(set(d.values())) == 1, d


def test_sample_clock_grows_by_the_input_and_readout_delays():
    r = smoke(epochs=1, batch=4)
    T = build(r, plan_memory=False).clock.steps
    b = build(with_delays(r, input_to_hidden=3, hidden_to_hidden=7, hidden_to_out=2), plan_memory=False)
    assert b.clock.ticks_per_sample == T + 3 + 2  # the recurrent delay does not lengthen a sample
    hidden = next(c for c in b.pe_configs if c["role"] == "neuron")
    assert hidden["offset"] == 3 and next(c for c in b.pe_configs if c["role"] == "readout")["offset"] == 5


def test_a_delay_ring_is_in_the_ledger_and_a_late_batch_is_refused():
    b = build(with_delays(smoke(epochs=1, batch=1), hidden_to_hidden=4), plan_memory=False)
    cfg = next(c for c in b.pe_configs if c["role"] == "neuron")
    pe = make_pe(cfg)
    ring = {i["name"]: i for i in pe.memory()["items"]}["hidden->hidden.delay_ring"]
    assert ring["bytes"] == 4 * 40 * 4  # 4 ticks of 40 presynaptic values, float32
    key = int(cfg["keymap"]["keys"][list(cfg["keymap"]["proj"]).index(1)])  # a recurrent source's key
    late = PacketBatch.make(0, 3, 1, mc_keys=[key])  # sent at tick 3: it acts at 7, but arrives at 8
    with pytest.raises(PacketError, match="sent at tick 3 arrived at tick 8"):
        pe.step(8, late)


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["projections"][1].update(delay=0), ["projections[1].delay", "[1, 64]"]),
    (lambda d: d["projections"][1].update(delay=65), ["projections[1].delay", "[1, 64]"]),
])
def test_delay_out_of_range_is_named(mutate, words):
    msg = parse_error(mutate)
    for w in words:
        assert w in msg, (w, msg)


def test_input_projections_need_one_delay():
    def two_hidden(d):
        d["populations"].insert(2, {**d["populations"][1], "name": "hidden2"})
        d["projections"] += [{"pre": "input", "post": "hidden2", "delay": 2},
                             {"pre": "hidden2", "post": "out"}]
    msg = parse_error(two_hidden)
    assert "from 'input' need one delay" in msg and "1, 2" in msg, msg


def test_bptt_and_layered_networks_refuse_delays():
    doc = smoke_doc()
    doc["learning"]["rule"] = "bptt"
    doc["projections"][1]["delay"] = 2
    with pytest.raises(RecipeError, match="BPTT runs its stack with delay 1"):
        parse_recipe(doc)
    doc = tomllib.loads((resources.files("s2emu.recipes") / "deepr_mnist.toml").read_text())
    doc["projections"][0]["delay"] = 2
    with pytest.raises(RecipeError, match="layered network's layers run one tick after another"):
        parse_recipe(doc)
