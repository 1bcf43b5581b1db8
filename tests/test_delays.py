"""Projection delays (cores/timing.py): the golden model's equations with delays, on every split, and clear
errors where a delay cannot be honoured."""

import dataclasses
import tomllib
from importlib import resources

import pytest

from s2emu.build import build
from s2emu.engines import run_engine
from s2emu.cores.roles import make_pe
from s2emu.errors import PacketError, RecipeError
from s2emu.recipe import parse_recipe
from s2emu.router.packets import PacketBatch
from s2emu.runner import run

from conftest import smoke, with_learning
from test_bad_input import parse_error, smoke_doc
from test_checkpoint import stopped_and_resumed
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


def delayed_smoke(**overrides):
    """The smoke recipe with every delay at least 3 ticks: windows up to 3 are exact."""
    return with_delays(smoke(**{"epochs": 1, "batch": 4, **overrides}),
                       input_to_hidden=3, hidden_to_hidden=3, hidden_to_out=4)


def test_a_window_up_to_the_smallest_delay_gives_the_same_bits():
    r = delayed_smoke()
    base = run(r)
    for window in (2, 3):
        got = run(r, window=window)
        assert got["window"] == window and got["ticks"] == base["ticks"] + window - 1
        assert got["state_digest"] == base["state_digest"] and got["router"] == base["router"]
        # every count but one: which tick a packet arrives at moves with the window, and so may the packets
        # counted in with the PE's heaviest tick
        drop = lambda counters: [{k: v for k, v in c.items() if k != "peak_tick_packets_in"} for c in counters]  # noqa: E731
        assert drop(got["pe_counters"]) == drop(base["pe_counters"])
    assert run(r, window="auto")["window"] == 3


def test_a_window_beyond_what_the_delays_prove_is_refused():
    with pytest.raises(RecipeError, match=r"--window 4: .* every 3 ticks \(projection input->hidden has delay 3\)"):
        build(delayed_smoke(), window=4, plan_memory=False)
    online = with_learning(delayed_smoke(), signal="online")
    with pytest.raises(RecipeError, match="online learning signal"):
        build(online, window=2, plan_memory=False)
    assert build(smoke(epochs=1), window="auto", plan_memory=False).window == 1  # every delay 1


def test_a_late_delivery_the_bound_would_refuse_fails_loudly():
    """Without the bound, a window longer than a delay would deliver packets after they should act: the
    ring refuses them rather than silently changing the result."""
    b = build(delayed_smoke(), window=3, plan_memory=False)
    b = dataclasses.replace(b, window=5)
    with pytest.raises(PacketError, match="after they should have acted"):
        run_engine("local", b)


def test_a_windowed_run_resumes_to_the_same_digest(tmp_path):
    full, resumed = stopped_and_resumed(delayed_smoke(), tmp_path, window=3)
    assert 0 < resumed["resumed_from_tick"] < full["ticks"]
    assert resumed["state_digest"] == full["state_digest"]


@pytest.mark.ray
def test_ray_windowed_exchange_gives_the_local_bits(ray_local, tmp_path):
    r = delayed_smoke()
    base = run(r)
    for ppp in (1, 4):
        got = run(r, engine="ray", window=3, pes_per_process=ppp)
        assert got["state_digest"] == base["state_digest"] and got["router"] == base["router"]
    full, resumed = stopped_and_resumed(r, tmp_path, engine="ray", window=3)
    assert resumed["state_digest"] == full["state_digest"] == base["state_digest"]


@pytest.mark.ray
def test_a_windowed_mesh_with_a_wire_down_for_a_while_gives_the_one_chip_bits(ray_local):
    """Windows, many chips and emergency routing together: six chips (a router actor each on ray), window 3,
    and the wire 1:N down from tick 50 until 400 (both its ends detour inside the board): the one-chip
    digest on both engines, the same router counters, and packets detoured only while the wire was down."""
    r = delayed_smoke()
    one = run(r)["state_digest"]
    mesh = r.with_overrides(chips=6, pes_per_chip=1, failing_links=["1:N@50-400"])
    local = run(mesh, window=3)
    assert local["state_digest"] == one and local["router"]["emergency_routed"] > 0
    assert local["router"]["dropped"] == 0 and local["hops"] >= 2
    got = run(mesh, engine="ray", window=3)
    assert got["state_digest"] == one and got["router"] == local["router"]
