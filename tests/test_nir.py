"""NIR in and out (s2emu.nir) on real files written and read by the `nir` package."""

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from s2emu import hardware, snn  # noqa: E402
from s2emu import nir as s2nir  # noqa: E402
from s2emu.recipe import load_recipe  # noqa: E402
from s2emu.runner import run  # noqa: E402


def chip(**kw):
    return hardware.SpiNNaker2Chip(progress=False, **kw)


def through_file(net, tmp_path, dt=1e-3, **kw):
    path = s2nir.write(tmp_path / f"{net.name}.nir", net, dt=dt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", s2nir.NIRApproximationWarning)  # an s2emu export needs none
        return s2nir.from_nir(path, dt=dt, **kw)


@pytest.mark.parametrize("name", ["smoke", "eprop_kws", "tlbptt_digits", "tlbptt_kws"])
def test_recipe_to_nir_file_and_back_is_the_same_network(name, tmp_path):
    net = snn.Network.from_recipe(name)
    back = through_file(net, tmp_path)
    back.data = net.data  # NIR carries no data
    assert snn.canonical(back.recipe()) == snn.canonical(load_recipe(name))


def test_recipe_to_nir_and_back_runs_to_the_same_digest(tmp_path):
    net = snn.Network.from_recipe("smoke")
    back = through_file(net, tmp_path)
    back.data = net.data
    want = run(load_recipe("smoke").with_overrides(epochs=1, batch=8))["state_digest"]
    assert chip().train(back, epochs=1, batch=8)["state_digest"] == want


def test_trained_weights_and_alif_survive_a_file_and_other_tools_see_lif(tmp_path):
    net = snn.Network.from_recipe("smoke")
    chip().train(net, epochs=1, batch=8)
    path = s2nir.write(tmp_path / "trained.nir", net, dt=1e-3)
    graph = nir.read(path)
    hidden = graph.nodes["hidden"]
    assert type(hidden).__name__ == "LIF"  # what snnTorch, Norse ... see
    assert json.loads(str(hidden.metadata["s2emu"]))["model"] == "alif"
    back = s2nir.from_nir(path, dt=1e-3)
    assert back["hidden"].model == "alif" and back["hidden"].params["tau_a"] == 150.0
    for pr in back.projections:
        assert pr.weights.array.tobytes() == net.weights[pr.name].tobytes()


def test_delays_and_spike_inputs_round_trip(tmp_path):
    inp = snn.Population(5, "input", {"encoding": "spikes"}, name="x")
    a = snn.Population(6, "lif", {"tau_m": 4.0, "v_th": 0.7}, name="a")
    b = snn.Population(3, "alif", name="b")
    out = snn.Population(2, "readout", {"tau_out": 7.0}, name="y")
    net = snn.Network("delays", seed=4).add(
        inp, a, b, out, snn.Projection(inp, a, init_scale=2.0), snn.Projection(a, b, delay=3),
        snn.Projection(b, b, delay=2), snn.Projection(a, out, delay=2), snn.Projection(b, out, delay=2))
    back = through_file(net, tmp_path)
    data = (None, None, np.zeros((1, 4, 5), np.float32), [0])
    assert snn.canonical(back.recipe(data)) == snn.canonical(net.recipe(data))
    assert back["x"].encoding == "spikes" and back.projection("a", "b").delay == 3


def lif_graph(tau=5e-3, r=(1.0, 2.0), v_th=(100.0, 100.0), w=((0.7,), (1.3,)), **lif):
    n = len(r)
    return nir.NIRGraph(
        nodes={"in": nir.Input(input_type={"input": np.array([1])}),
               "w": nir.Linear(weight=np.array(w, float)),
               "lif": nir.LIF(tau=np.full(n, tau), r=np.array(r), v_leak=np.zeros(n),
                              v_threshold=np.array(v_th, float), **lif),
               "w_out": nir.Linear(weight=np.eye(n)),
               "li": nir.LI(tau=np.full(n, 0.01), r=np.ones(n), v_leak=np.zeros(n)),
               "out": nir.Output(output_type={"output": np.array([n])})},
        edges=[("in", "w"), ("w", "lif"), ("lif", "w_out"), ("w_out", "li"), ("li", "out")])


@pytest.mark.parametrize("integrator", ["exp", "euler"])
def test_a_foreign_lif_steps_as_nir_says(integrator, tmp_path):
    """Below threshold, the chip's LIF is NIR's equation stepped by dt: v <- alpha v + (1 - alpha) R W x."""
    dt, tau = 1e-3, 5e-3
    path = tmp_path / "lif.nir"
    nir.write(path, lif_graph(tau=tau))
    with pytest.warns(s2nir.NIRApproximationWarning, match="subtract the threshold"):
        net = s2nir.from_nir(path, dt=dt, integrator=integrator)
    lif = net["lif"]
    lif.record = ("spikes", "v")
    alpha = math.exp(-dt / tau) if integrator == "exp" else 1 - dt / tau
    assert math.isclose(lif.params["tau_m"], -1 / math.log(alpha))
    x = np.zeros((12, 1), np.float32)
    x[[0, 3, 4, 9]] = 1
    chip().run(net, 12, inputs=x)
    v_chip = np.stack([lif.get_voltages()[j] for j in range(2)], axis=1)
    v, want = np.zeros(2), []
    for t in range(12):
        v = alpha * v + (1 - alpha) * np.array([1.0, 2.0]) * np.array([0.7, 1.3]) * x[t, 0]
        want.append(v.copy())
    np.testing.assert_allclose(v_chip, np.array(want), rtol=1e-5, atol=1e-6)


def test_per_neuron_thresholds_fold_into_the_weights():
    """A neuron of threshold t fed W spikes as one of threshold c fed W c / t: the same spikes."""
    x = np.zeros((20, 1), np.float32)
    x[::2] = 1
    spikes = []
    for v_th in ((0.3, 0.6), (0.6, 0.6)):
        w = ((1.8,), (1.8,)) if v_th[0] == 0.6 else ((0.9,), (1.8,))  # neuron 0: half the weight, half the threshold
        with pytest.warns(s2nir.NIRApproximationWarning):
            net = s2nir.from_nir(lif_graph(r=(1.0, 1.0), v_th=v_th, w=w), dt=1e-3)
        chip().run(net, 20, inputs=x)
        spikes.append(net["lif"].get_spikes())
    assert spikes[0] == spikes[1] and spikes[0][0]


def test_an_snntorch_style_recurrent_subgraph_is_a_recurrent_projection():
    from importlib import util
    from pathlib import Path

    spec = util.spec_from_file_location("ex", Path(__file__).parent.parent / "examples" / "nir_on_ray.py")
    ex = util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = ex.write_snntorch_style_graph(Path(d) / "g.nir", beta=0.9, dt=1e-4)
        graph = nir.read(path)
        with pytest.warns(s2nir.NIRApproximationWarning):
            net = s2nir.from_nir(path, dt=1e-4, integrator="euler")
    lif = net["lif1_lif"]
    assert math.isclose(lif.params["tau_m"], -1 / math.log(0.9))  # snnTorch's beta is the decay per step
    rec = net.projection("lif1_lif", "lif1_lif")
    r = 1 / (1 - 0.9)  # snnTorch: r = tau / dt
    want = (graph.nodes["lif1"].nodes["w_rec"].weight * r).T
    assert np.array_equal(rec.weights.array, want.astype(np.float32))
    assert [p.name for p in net.outputs] == ["lif2"]


def test_scale_flatten_and_delay_fold_into_projections():
    g = nir.NIRGraph(
        nodes={"in": nir.Input(input_type={"input": np.array([2, 2])}),
               "flat": nir.Flatten(input_type={"input": np.array([2, 2])}, start_dim=0),
               "s": nir.Scale(scale=np.array([1.0, 2.0, 3.0, 4.0])),
               "w": nir.Linear(weight=np.ones((3, 4))),
               "a": nir.LIF(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
               "d": nir.Delay(delay=np.full(3, 0.002)),
               "w2": nir.Linear(weight=np.eye(3)),
               "b": nir.LIF(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
               "w3": nir.Linear(weight=np.ones((2, 3))),
               "li": nir.LI(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2)),
               "out": nir.Output(output_type={"output": np.array([2])})},
        edges=[("in", "flat"), ("flat", "s"), ("s", "w"), ("w", "a"), ("a", "d"), ("d", "w2"), ("w2", "b"),
               ("b", "w3"), ("w3", "li"), ("li", "out")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", s2nir.NIRApproximationWarning)
        net = s2nir.from_nir(g, dt=1e-3)
    assert np.array_equal(net.projection("in", "a").weights.array, np.tile([[1.0], [2.0], [3.0], [4.0]], 3))
    assert net.projection("a", "b").delay == 3  # the hop's tick and 2 steps of delay


@pytest.mark.parametrize("change, words", [
    (lambda g: g.nodes.__setitem__("w", nir.Affine(weight=np.ones((2, 1)), bias=np.ones(2))),
     "node 'w' (Affine): a nonzero bias"),
    (lambda g: g.nodes.__setitem__("lif", nir.CubaLIF(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2),
                                                       v_leak=np.zeros(2), v_threshold=np.ones(2))),
     "node 'lif' (CubaLIF): a current-based synapse"),
    (lambda g: g.nodes.__setitem__("lif", nir.IF(r=np.ones(2), v_threshold=np.ones(2))), "node 'lif' (IF): no leak"),
    (lambda g: g.nodes.__setitem__("lif", nir.LIF(tau=np.array([0.005, 0.006]), r=np.ones(2), v_leak=np.zeros(2),
                                                   v_threshold=np.ones(2))),
     "node 'lif' (LIF): per-neuron time constant tau"),
    (lambda g: g.nodes.__setitem__("lif", nir.LIF(tau=np.full(2, 0.005), r=np.ones(2), v_leak=np.ones(2),
                                                   v_threshold=np.ones(2))),
     "node 'lif' (LIF): a leak voltage"),
    (lambda g: g.nodes.__setitem__("lif", nir.LIF(tau=np.full(2, 0.0005), r=np.ones(2), v_leak=np.zeros(2),
                                                   v_threshold=np.ones(2))), None),  # euler: dt > tau
])
def test_what_cannot_map_is_refused_in_one_line_naming_the_node(change, words):
    g = lif_graph()
    change(g)
    with pytest.raises(s2nir.NIRError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore", s2nir.NIRApproximationWarning)
        s2nir.from_nir(g, dt=1e-3, integrator="euler")
    assert "\n" not in str(e.value)
    assert (words or "a smaller dt") in str(e.value)


def test_a_layered_network_has_no_nir():
    with pytest.raises(s2nir.NIRError, match="NIR has no ReLU"):
        s2nir.to_nir(snn.Network.from_recipe("deepr_mnist"))


def test_the_command_line_exports_and_imports(tmp_path):
    def s2emu(*args):
        p = subprocess.run([sys.executable, "-m", "s2emu", *args], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        return p

    s2emu("export-nir", "smoke", "--out", "smoke.nir")
    assert type(nir.read(tmp_path / "smoke.nir").nodes["hidden"]).__name__ == "LIF"
    nir.write(tmp_path / "foreign.nir", lif_graph(v_th=(0.1, 0.1)))
    out = json.loads(s2emu("import-nir", "foreign.nir", "--out", "foreign.toml", "--json").stdout)
    assert any("subtract the threshold" in a for a in out["approximations"])
    ran = json.loads(s2emu("run", "foreign.toml", "--json", "--quiet", "--out", "-").stdout)
    assert ran["n_test"] == 1 and ran["pes"] == 2


def test_a_file_snntorch_exported_runs_to_snntorchs_own_spikes():
    """tests/data/snntorch_rleaky.nir: snnTorch 1.0 exported it (tests/data/make_snntorch_nir.py), with the
    spikes its RLeaky layer fired for a spike input. Imported with snnTorch's integrator (forward Euler: its beta
    is the decay per step) the chip's layer fires the same spikes, every one: snnTorch's Leaky subtracts the
    threshold as s2emu does, and steps input t at its step t, as the chip's tick t + 1."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    with pytest.warns(s2nir.NIRApproximationWarning):
        net = s2nir.from_nir(data / "snntorch_rleaky.nir", dt=1e-4, integrator="euler")
    assert [p.name for p in net.populations] == ["input", "n_1_lif", "n_3", "n_3_readout"]
    assert net.projection("n_1_lif", "n_1_lif").delay == 1
    ref = np.load(data / "snntorch_rleaky.npz")
    x, want = ref["x"], ref["hidden_spikes"]
    chip().run(net, len(x), inputs=x)
    got = np.zeros_like(want)
    for j, ticks in net["n_1_lif"].get_spikes().items():
        got[np.asarray(ticks, int) - 1, j] = 1
    assert want.sum() > 30 and np.array_equal(got, want)
