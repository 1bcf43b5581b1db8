"""The Python API (s2emu.snn, s2emu.hardware): one model behind the API and the recipes, and the same runs,
reports and errors as the command line."""

import dataclasses
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from s2emu import hardware, snn
from s2emu.errors import RecipeError, S2EmuError, SramOverflowError
from s2emu.recipe import builtin_recipes, load_recipe
from s2emu.runner import run

ROOT = Path(__file__).resolve().parent.parent


def example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chip(**kw):
    return hardware.SpiNNaker2Chip(progress=False, **kw)


def small(recipe):
    """A few samples of a recipe, one epoch: a short run with the recipe's network and rule."""
    data = dict(recipe.data)
    if data["kind"] == "speech_commands" and not data["path"]:  # not the corpus synthesized on first use
        data.update(path=str(ROOT / "data" / "kws_synth.tar.xz"), augment_copies=0)
    if "max_train" in data:
        data.update(max_train=16, max_test=8)
    elif data["kind"] == "patterns":
        data.update(train_per_class=4, test_per_class=2)
    r = dataclasses.replace(recipe, data=data)
    return r.with_overrides(epochs=1, batch=min(r.schedule.batch, 4))


def tiny_network(rule=None, **hidden_params):
    """input (spike times) -> 12 LIF, recurrent -> 3 readouts, explicit input weights."""
    inp = snn.Population(6, "spike_list", params={0: [0, 4], 2: [1], 5: [3, 6]}, name="inp")
    hid = snn.Population(12, "lif", {"tau_m": 5.0, "v_th": 0.5, **hidden_params}, name="hid", record=("spikes", "v"))
    out = snn.Population(3, "readout", name="out")
    w = np.zeros((6, 12))
    w[0, :4], w[2, 4:8], w[5, 8:] = 4.0, 3.0, 5.0
    net = snn.Network("tiny", seed=3).add(inp, hid, out, snn.Projection(inp, hid, weights=w),
                                          snn.Projection(hid, hid, init_scale=0.5), snn.Projection(hid, out))
    if rule is not None:
        net.add(rule)
    return net


# ------------------------------------------------------------------ one model: recipes <-> networks

@pytest.mark.parametrize("name", builtin_recipes())
def test_every_shipped_recipe_round_trips(name, tmp_path):
    """load -> Network -> to_recipe -> load: an equal Recipe (paths compared as files), and the Network's
    own Recipe is that too."""
    loaded = load_recipe(name)
    net = snn.Network.from_recipe(name)
    assert snn.canonical(net.recipe()) == snn.canonical(loaded)
    path = net.to_recipe(tmp_path / f"{name}.toml")
    again = load_recipe(str(path))
    assert snn.canonical(again) == snn.canonical(loaded)
    assert snn.canonical(snn.Network.from_recipe(str(path)).recipe()) == snn.canonical(loaded)


@pytest.mark.parametrize("name", ["smoke", "deepr_mnist", "tlbptt_digits", "eprop_kws"])
def test_a_round_tripped_recipe_runs_to_the_same_digest(name, tmp_path):
    path = snn.Network.from_recipe(name).to_recipe(tmp_path / f"{name}.toml")
    a = run(small(load_recipe(name)))
    b = run(small(load_recipe(str(path))))
    assert a["state_digest"] == b["state_digest"]


def test_the_keyword_network_in_python_is_the_recipe():
    """examples/keyword_spotting.py builds recipes/eprop_kws.toml's network: the same Recipe, so by
    construction the same digest; and a short training through the API gives the TOML path's digest."""
    kws = example("keyword_spotting")
    assert snn.canonical(kws.keyword_network().recipe()) == snn.canonical(load_recipe("recipes/eprop_kws.toml"))
    toml = load_recipe("recipes/eprop_kws.toml").with_overrides(data=kws.BUNDLED)  # the small corpus: quick
    toml = dataclasses.replace(toml, data={**toml.data, "max_train": 64, "max_test": 32}).with_overrides(epochs=1)
    want = run(toml)["state_digest"]
    net = kws.keyword_network(kws.BUNDLED, max_train=64, max_test=32)
    got = chip().train(net, epochs=1)
    assert got["state_digest"] == want
    assert got["pes"] == 13 and got["n_test"] == 32


@pytest.mark.ray
@pytest.mark.slow
def test_the_keyword_network_trains_to_the_same_digest_on_ray(ray_local):
    kws = example("keyword_spotting")
    local = chip().train(kws.keyword_network(kws.BUNDLED, max_train=32, max_test=8), epochs=1)
    remote = chip(engine="ray", pes_per_process=4).train(kws.keyword_network(kws.BUNDLED, max_train=32, max_test=8),
                                                         epochs=1)
    assert remote["state_digest"] == local["state_digest"] and remote["engine"] == "ray"


def test_a_network_with_explicit_arrays_saves_beside_its_recipe(tmp_path):
    net = tiny_network(snn.EProp(lr=0.02))
    x = np.random.default_rng(0).random((6, 9, 6)).round().astype(np.float32)
    net.set_data((x, [0, 1, 2, 0, 1, 2], x[:3], [2, 1, 0]))  # the data feeds the input, not its spike times
    path = net.to_recipe(tmp_path / "tiny.toml")
    text = path.read_text()
    assert 'weights = "tiny.arrays.npz"' in text and 'path = "tiny.arrays.npz"' in text
    again = load_recipe(str(path))
    assert snn.canonical(again) == snn.canonical(net.recipe())
    assert run(again.with_overrides(batch=2))["state_digest"] == chip().train(net, batch=2)["state_digest"]


# ------------------------------------------------------------------ explicit weights reach the PEs

def test_a_connection_list_and_a_matrix_are_the_same_weights():
    pre, post = snn.Population(4, "input", name="a"), snn.Population(3, "lif", name="b")
    conns = [[0, 1, 0.5, 2], [3, 2, -1.25, 2], [1, 0, 0.1, 2]]
    by_list = snn.Projection(pre, post, conns)
    w = np.zeros((4, 3))
    w[0, 1], w[3, 2], w[1, 0] = 0.5, -1.25, 0.1
    assert by_list.weights == snn.Projection(pre, post, weights=w, delay=2).weights
    assert by_list.delay == 2


@pytest.mark.parametrize("split", [1, 2, 5, 12])
def test_the_pes_hold_exactly_the_given_weights_on_every_split(split):
    """A plain run (no learning) ends with the weights it started from: bit for bit the float32 of what was
    given, for every split of the hidden population."""
    net = tiny_network()
    rng = np.random.default_rng(7)
    rec = rng.standard_normal((12, 12)) / 3
    np.fill_diagonal(rec, 0)
    net.projection("hid", "hid").weights = snn.Projection(net["hid"], net["hid"], weights=rec).weights
    net["hid"].set_max_atoms_per_core(split)
    result = chip().run(net, timesteps=8)
    assert result["pes"] == -(-12 // split) + 1
    for pr in net.projections:
        given = pr.weights.array if pr.weights is not None else net.initial_weights()[pr.name]
        assert pr.get_weights().dtype == np.float32
        assert pr.get_weights().tobytes() == np.asarray(given, np.float32).tobytes()


def test_explicit_weights_learn_to_the_same_bits_on_every_split():
    digests = set()
    for split in (12, 5, 1):
        net = tiny_network(snn.EProp(lr=0.05))
        x = (np.random.default_rng(1).random((8, 10, 6)) < 0.3).astype(np.float32)
        net.set_data((x, [0, 1, 2, 0, 1, 2, 0, 1], x[:4], [0, 1, 2, 0]))
        net["hid"].set_max_atoms_per_core(split)
        digests.add(chip().train(net, batch=2)["state_digest"])
    assert len(digests) == 1


@pytest.mark.ray
def test_explicit_weights_are_the_same_bits_on_the_ray_engine(ray_local):
    def trained(engine):
        net = tiny_network(snn.EProp(lr=0.05))
        x = (np.random.default_rng(1).random((4, 10, 6)) < 0.3).astype(np.float32)
        net.set_data((x, [0, 1, 2, 0], x[:2], [0, 1]))
        net["hid"].set_max_atoms_per_core(4)
        return chip(engine=engine).train(net, batch=2)

    local, remote = trained("local"), trained("ray")
    assert remote["state_digest"] == local["state_digest"] and remote["engine"] == "ray"


# ------------------------------------------------------------------ plain runs

def test_a_plain_run_gives_spikes_and_voltages_per_neuron():
    net = tiny_network()
    result = chip().run(net, timesteps=8)
    spikes = net["hid"].get_spikes()
    assert set(spikes) == set(range(12))
    # input neuron 0 spikes at ticks 0 and 4 with weight 4 onto hidden 0-3 (threshold 0.5): they spike one tick
    # later, as the input's packet reaches their PE (cores/timing.py)
    assert all(spikes[j][:1] == [1] for j in range(4))
    assert net["inp"].get_spikes()[5] == [3, 6]
    v = net["hid"].get_voltages()
    ticks = net["hid"].get_voltage_ticks()
    assert list(ticks) == list(range(1, 9)) and len(v[0]) == 8 and v[0].dtype == np.float32
    # the same numbers `s2emu run --save` writes: spikes (tick, stream, neuron) rows
    rows = [(t, 0, j) for j, ts in spikes.items() for t in ts]
    assert result["spike_counts"]["hid"] == len(rows)
    assert result["ticks"] == result["ticks_per_sample"] + 1


def test_analog_inputs_and_several_samples():
    inp = snn.Population(5, "input", name="x")
    hid = snn.Population(8, "alif", name="h", record=("spikes",))
    out = snn.Population(2, "readout", name="y")
    net = snn.Network("analog").add(inp, hid, out, snn.Projection(inp, hid, init_scale=4.0),
                                    snn.Projection(hid, out))
    x = np.random.default_rng(2).random((3, 12, 5)).astype(np.float32)
    chip().run(net, 12, inputs=x)
    per_sample = [hid.get_spikes(sample=k) for k in range(3)]
    chip().run(net, 12, inputs=x[1])
    assert hid.get_spikes() == per_sample[1]  # each sample starts from rest
    with pytest.raises(S2EmuError, match=r"population 'x': inputs must be \[timesteps, channels\] = \[12, 5\]"):
        chip().run(net, 12, inputs=x[0, :10])
    with pytest.raises(S2EmuError, match="population 'x' takes analog values"):
        chip().run(net, 12, inputs={0: [1]})
    with pytest.raises(S2EmuError, match="population 'x' needs inputs"):
        chip().run(net, 12)


def test_trained_weights_carry_into_the_next_run():
    net = tiny_network(snn.EProp(lr=0.05))
    x = (np.random.default_rng(1).random((4, 10, 6)) < 0.3).astype(np.float32)
    net.set_data((x, [0, 1, 2, 0], x[:2], [0, 1]))
    chip().train(net, batch=2)
    trained = {k: v.copy() for k, v in net.weights.items()}
    assert not np.array_equal(trained["inp->hid"], net.initial_weights()["inp->hid"])
    chip().run(net, timesteps=10, inputs=x[0])
    assert all(np.array_equal(net.projection(*k.split("->")).get_weights(), w) for k, w in trained.items())
    net.reset_weights()
    chip().run(net, timesteps=10, inputs=x[0])
    assert np.array_equal(net.projection("inp", "hid").get_weights(), net.initial_weights()["inp->hid"])


# ------------------------------------------------------------------ the CLI's reports and dicts

def cli_json(*args):
    p = subprocess.run([sys.executable, "-m", "s2emu", *args, "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_memory_and_map_are_what_the_cli_prints():
    net = snn.Network.from_recipe("smoke")
    assert json.loads(json.dumps(chip().memory(net))) == cli_json("memory", "smoke")
    assert json.loads(json.dumps(chip().map(net))) == cli_json("map", "smoke")
    assert chip(machine="prototype-64k").memory(net)["pe_budget"] == 64 * 1024


def test_train_and_evaluate_return_the_cli_dicts():
    net = snn.Network.from_recipe("smoke")
    result = chip().train(net, epochs=1, batch=8)
    cli = cli_json("run", "smoke", "--epochs", "1", "--batch", "8", "--out", "-", "--quiet")
    assert result["state_digest"] == cli["state_digest"]
    assert set(result) == set(cli) and not any(k.startswith("_") for k in result)
    ev = chip().evaluate(net, batch=16)
    assert {"accuracy", "balanced_accuracy", "confusion", "model", "model_meta", "split"} <= set(ev)
    assert ev["accuracy"] == result["accuracy"]  # the trained weights, on the same test set


# ------------------------------------------------------------------ errors, as the CLI gives them

@pytest.mark.parametrize("make, words", [
    (lambda: snn.Population(3, "lif_curr_exp"), ["unknown neuron model 'lif_curr_exp'", "'lif'"]),
    (lambda: snn.Population(3, "lif", {"tau_a": 5.0}, name="h"),
     ["population 'h': model 'lif' has no parameter 'tau_a'"]),
    (lambda: snn.Population(3, "lif", {"threshold": 1.0}, name="h"),
     ["population 'h'", "'threshold'", "s2emu calls it 'v_th'"]),
    (lambda: snn.Population(3, "alif", {"tau_m": -1.0}, name="h"), ["population 'h': 'tau_m' must be > 0"]),
    (lambda: snn.Population(0, "lif", name="h"), ["population 'h': 'size' must be in [1, 65536]"]),
    (lambda: snn.Population(3, "lif", name="h").set_max_atoms_per_core(0), ["population 'h'", "max_atoms_per_core"]),
    (lambda: snn.Population(3, "readout", name="r", record="v"), ["population 'r'", "voltages"]),
    (lambda: snn.Population(3, "spike_list", {7: [1]}, name="s"), ["population 's'", "0..2"]),
    (lambda: snn.Projection(snn.Population(2, "input", name="a"), snn.Population(2, "lif", name="b"),
                            [[0, 1, 1.0, 1], [1, 1, 1.0, 3]]), ["projection 'a->b'", "one delay per projection"]),
    (lambda: snn.Projection(snn.Population(2, "input", name="a"), snn.Population(2, "lif", name="b"),
                            [[0, 2, 1.0]]), ["projection 'a->b'", "post neuron 2"]),
    (lambda: snn.Projection(snn.Population(2, "input", name="a"), snn.Population(2, "lif", name="b"),
                            weights=np.ones((3, 2))), ["projection 'a->b'", "(2, 2)"]),
    (lambda: snn.Projection(snn.Population(2, "input", name="a"), snn.Population(2, "lif", name="b"), delay=99),
     ["projection 'a->b': 'delay' must be in [1, 64]"]),
    (lambda: snn.EProp(signal="sometimes"), ["EProp", "'learning.signal' must be one of"]),
])
def test_wrong_parameters_name_the_population_and_the_parameter(make, words):
    with pytest.raises(RecipeError) as e:
        make()
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_network_errors_name_populations_not_indices():
    inp, out = snn.Population(3, "input", name="x"), snn.Population(2, "readout", name="y")
    net = snn.Network("bad").add(inp, out, snn.Projection(inp, out))
    with pytest.raises(RecipeError, match=r"projection 'x->y': a readout reads spiking populations"):
        net.recipe(data=(None, None, np.zeros((1, 4, 3)), [0]))
    h = snn.Population(3, "lif", name="h")
    selfish = snn.Network("self").add(inp, h, out, snn.Projection(inp, h),
                                      snn.Projection(h, h, weights=np.ones((3, 3))), snn.Projection(h, out))
    data = (None, None, np.zeros((1, 4, 3)), [0])
    selfish.recipe(data=data)  # a plain run keeps self-connections
    with pytest.raises(RecipeError, match="h->h.weights' of h->h: neuron 0 connects to itself; e-prop"):
        selfish.add(snn.EProp()).recipe(data=data)
    with pytest.raises(RecipeError, match="projection 'h->y': population 'h' is not in network 'bad'"):
        snn.Network("bad").add(inp, out, snn.Projection(h, out)).recipe()


def test_a_network_too_big_for_its_pes_is_refused_before_any_engine_starts(monkeypatch):
    import s2emu.runner

    started = []
    monkeypatch.setattr(s2emu.runner, "run_engine", lambda *a, **k: started.append(a))
    net = snn.Network.from_recipe("smoke")
    net["hidden"].set_max_atoms_per_core(40)  # all 40 on one PE ...
    for engine in ("local", "ray"):
        with pytest.raises(SramOverflowError) as e:
            chip(engine=engine, machine="prototype-64k").train(net, epochs=1)  # ... of 64 KB: no room
        assert "PE 0" in str(e.value) and "hidden->hidden" in str(e.value)
    assert not started


def test_train_needs_a_rule_and_data():
    net = tiny_network()
    with pytest.raises(S2EmuError, match="network 'tiny' has no learning rule"):
        chip().train(net)
    net = snn.Network.from_recipe("smoke")
    net.data = None
    with pytest.raises(RecipeError, match="network 'smoke' has no data"):
        chip().train(net)


# ------------------------------------------------------------------ notebooks: a failed run leaves nothing

def _alive_actors():
    from ray._private import state
    return [a for a in state.actors().values() if a.get("State") != "DEAD"]


def _interrupt_after_first_chunk(monkeypatch):
    from s2emu.progress import ProgressBar

    def advance(self, n=1):
        raise KeyboardInterrupt  # a user pressing stop in a notebook, mid-run
    monkeypatch.setattr(ProgressBar, "advance", advance)


def test_an_interrupted_local_run_leaves_the_network_as_it_was(monkeypatch):
    net = tiny_network()
    chip().run(net, timesteps=8)
    before = net["hid"].get_spikes()
    with monkeypatch.context() as m:
        _interrupt_after_first_chunk(m)
        with pytest.raises(KeyboardInterrupt):
            hardware.SpiNNaker2Chip(progress=True).run(net, timesteps=8)
    assert net["hid"].get_spikes() == before
    chip().run(net, timesteps=8)
    assert net["hid"].get_spikes() == before


@pytest.mark.ray
def test_a_ray_run_that_raises_leaves_no_actors_and_the_next_run_works(ray_local, monkeypatch):
    net = tiny_network()
    want = chip().run(net, timesteps=8)["state_digest"]
    with monkeypatch.context() as m:
        _interrupt_after_first_chunk(m)
        with pytest.raises(KeyboardInterrupt):
            hardware.SpiNNaker2Chip(engine="ray", progress=True).run(net, timesteps=8)
    deadline = time.monotonic() + 30
    while _alive_actors() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive_actors()
    assert chip(engine="ray").run(net, timesteps=8)["state_digest"] == want


def test_a_py_spinnaker2_script_runs_with_few_changes():
    """The shape of the scripts written for the chip (NIR paper's s2_*.py): spike_list inputs set through
    .params before each run, connection lists, record=["spikes", "v"], hw.run(net, timesteps)."""
    stim = snn.Population(size=2, neuron_model="spike_list", params={0: [1, 3], 1: [2]}, name="stim")
    pop1 = snn.Population(size=3, neuron_model="lif", params={"v_th": 0.5, "tau_m": 5.0}, name="pop1",
                          record=["spikes", "v"])
    out = snn.Population(size=2, neuron_model="readout", name="out")  # s2emu: a network has a readout
    net = snn.Network("my network")
    net.add(stim, pop1, out, snn.Projection(pre=stim, post=pop1, connections=[[0, 0, 4.0, 1], [1, 2, 4.0, 1]]),
            snn.Projection(pre=pop1, post=out, connections=[[0, 0, 1.0, 1]]))
    with pytest.warns(UserWarning, match="eth_ip"):
        hw = hardware.SpiNNaker2Chip(eth_ip="192.168.1.25")
    hw.progress = False
    with pytest.warns(UserWarning, match="quantize_weights"):
        hw.run(net, 10, quantize_weights=False)
    assert pop1.get_spikes()[0] == [2, 4] and pop1.get_spikes()[2] == [3]
    assert len(pop1.get_voltages()[0]) == 10
    stim.params = {0: [5]}
    hw.run(net, 10)
    assert pop1.get_spikes() == {0: [6], 1: [], 2: []}


@pytest.mark.parametrize("split", [None, 2])
def test_a_layered_network_starts_from_given_weights(split):
    """relu/softmax layers hold the nonzero entries of a given matrix as their active connections."""
    rng = np.random.default_rng(5)
    x = snn.Population(6, "input", name="x")
    h = snn.Population(4, "relu", name="h")
    y = snn.Population(3, "softmax", name="y")
    w1 = rng.standard_normal((6, 4)) * (rng.random((6, 4)) < 0.5)
    w2 = rng.standard_normal((4, 3))
    if split:
        h.set_max_atoms_per_core(split)
    net = snn.Network("layers").add(x, h, y, snn.Projection(x, h, weights=w1), snn.Projection(h, y, weights=w2))
    chip().run(net, 1, inputs=rng.random((3, 1, 6)))
    for pr, w in (("x", "h"), w1), (("h", "y"), w2):  # the same float32 numbers (a sparse zero has no sign)
        assert np.array_equal(net.projection(*pr).get_weights(), w.astype(np.float32))
