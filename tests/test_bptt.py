"""Hand-written BPTT (cores/bptt.py) against finite differences on a smooth relaxation of the spike function:
end to end, in local blocks, and truncated (where the reference is the loss of each window with the state that
enters it held fixed)."""

import numpy as np
import pytest

from s2emu.cores.bptt import LayerSpec, SpikingStack
from s2emu.cores.neurons import NeuronConstants
from s2emu.cores.sram import SramLedger

T, N_IN, C = 7, 5, 3
RELAX = 0.4  # spikes are sigmoid(u / 0.4): smooth, so finite differences are the true gradient


def make_stack(blocks, truncation, seed=0):
    rng = np.random.default_rng(seed)
    layers = [
        LayerSpec("h1", 6, NeuronConstants.make("alif", tau_m=3.0, tau_a=8.0, v_th=0.5, beta=0.5),
                  (("in->h1", N_IN), ("h1->h1", 6)), True),
        LayerSpec("h2", 4, NeuronConstants.make("lif", tau_m=4.0, v_th=0.4), (("h1->h2", 6),), False),
    ]
    weights = {"in->h1": rng.normal(0, 0.8, (N_IN, 6)), "h1->h1": rng.normal(0, 0.5, (6, 6)),
               "h1->h2": rng.normal(0, 0.8, (6, 4))}
    readouts = [rng.normal(0, 0.8, (layers[blk[-1]].n, C)) for blk in blocks]
    st = SpikingStack(SramLedger("t", 1 << 24), layers, blocks, N_IN, C, kappa=0.8, truncation=truncation,
                      steps=T, streams=1, weights={k: v.astype(np.float32) for k, v in weights.items()},
                      readouts=[r.astype(np.float32) for r in readouts], relax=RELAX)
    return st


def frames(seed=1):
    return np.random.default_rng(seed).random((T, 1, N_IN)).astype(np.float32) * 2


def snapshot(st):
    return [a.copy() for a in (*st.v, *st.z, *st.y, *(a for a in st.a if a is not None))]


def restore(st, snap):
    for a, s in zip((*st.v, *st.z, *st.y, *(a for a in st.a if a is not None)), snap):
        a[...] = s


def window_losses(st, x, label, windows, block):
    """Sum over windows of block `block`'s framewise loss, each window started from the state the unperturbed
    run had when it began (the state entering a window is a constant of truncated BPTT)."""
    total = 0.0
    for w0, w1, snap in windows:
        restore(st, snap)
        for t in range(w0, w1):
            st.step(x[t], learn=False)
            y = st.y[block][0].astype(np.float64)
            total += (np.log(np.exp(y - y.max()).sum()) + y.max() - y[label]) / T
    return total


@pytest.mark.parametrize("blocks, truncation", [
    ([[0, 1]], T),  # full BPTT, end to end
    ([[0], [1]], T),  # full BPTT, two local blocks
    ([[0, 1]], 3),  # truncated: windows of 3, 3, 1 steps
    ([[0], [1]], 2),
])
def test_gradients_match_finite_differences(blocks, truncation):
    x, label = frames(), 2
    st = make_stack(blocks, truncation)
    st.reset()
    st.label[:] = label
    windows = []
    for t in range(T):
        if t % truncation == 0:
            windows.append([t, min(t + truncation, T), snapshot(st)])
        st.step(x[t], learn=True)
    grads = {k: v.copy() for k, v in st.gradients().items()}
    eps = 1e-3
    checked = 0
    for b, blk in enumerate(blocks):
        params = [f"readout{b}"] + [name for i in blk for name, _ in st.layers[i].inputs]
        for name in params:
            w = st.R[b] if name.startswith("readout") else st.W[name]
            g = grads[name]
            for idx in list(np.ndindex(w.shape))[::3]:
                old = w[idx]
                w[idx] = old + eps
                up = window_losses(st, x, label, windows, b)
                w[idx] = old - eps
                down = window_losses(st, x, label, windows, b)
                w[idx] = old
                assert (up - down) / (2 * eps) == pytest.approx(g[idx], abs=2e-4, rel=2e-2), (name, idx)
                checked += 1
    assert checked > 30


def test_truncation_keeps_only_k_steps_of_history():
    full, trunc = make_stack([[0, 1]], T), make_stack([[0, 1]], 2)
    hist = lambda st: sum(a.nbytes for a in (st.h_x, *st.h_u, *st.h_z, *st.h_e, *(a for a in st.h_a if a is not None)))  # noqa: E731
    assert hist(trunc) < hist(full) / 3


# ---------------------------------------------------------------- on the chip: recipe, PE, engines, sweep

import dataclasses  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from s2emu.errors import RecipeError  # noqa: E402
from s2emu.recipe import load_recipe  # noqa: E402
from s2emu.runner import run  # noqa: E402


def digits(train=640, test=320, epochs=2, pes=None, **learning):
    r = load_recipe("recipes/tlbptt_digits.toml").with_overrides(epochs=epochs, pes=pes)
    r = dataclasses.replace(r, data={**r.data, "max_train": train, "max_test": test})
    return dataclasses.replace(r, learning=dataclasses.replace(r.learning, **learning))


def test_bptt_learns_event_digits_on_the_chip():
    result = run(digits(epochs=3))
    assert result["accuracy"] > 0.3  # chance 0.1
    assert result["pe_counters"][0]["macs"] > 0 and result["pe_counters"][0]["accesses"] > 0


def test_truncation_and_blocks_change_memory_and_work_as_they_should():
    full, trunc, local = (run(digits(epochs=1, **kw)) for kw in ({}, {"truncation": 2},
                                                                     {"blocks": (("h1",), ("h2",))}))
    assert trunc["total_bytes"] < full["total_bytes"] < local["total_bytes"]  # history; the local classifier
    macs = lambda r: r["pe_counters"][0]["macs"]  # noqa: E731
    assert macs(local) < 0.8 * macs(full)  # no error crosses into h1 from h2


@pytest.mark.parametrize("learning", [{}, {"truncation": 4}, {"truncation": 10, "blocks": (("h1",), ("h2",))}])
def test_bptt_split_over_pes_is_the_same_bits(learning):
    """Column slices of every layer on P PEs, the readouts on one more, backward sums chained from PE to PE:
    the same weights, predictions and total work as the whole stack on one PE."""
    one = run(digits(train=64, test=32, epochs=1, **learning))
    largest = [max(p["bytes"] for p in one["per_pe"])]
    for pes in (2, 3):
        split = run(digits(train=64, test=32, epochs=1, pes=pes, **learning))
        assert split["pes"] == pes + 1
        assert split["state_digest"] == one["state_digest"], pes
        assert split["accuracy"] == one["accuracy"]
        total = lambda r, k: sum(c[k] for c in r["pe_counters"])  # noqa: E731
        assert total(split, "macs") == total(one, "macs")
        assert total(split, "accesses") > total(one, "accesses")  # every PE reads its own copy of the input
        largest.append(max(p["bytes"] for p in split["per_pe"]))
    assert largest == sorted(largest, reverse=True) and largest[-1] < 0.5 * largest[0]


def test_a_split_sample_pauses_the_input_while_a_window_learns():
    from s2emu.cores.bptt_pe import bptt_schedule
    P = 4
    full, trunc = bptt_schedule(28, 28, P, [[0, 1]], 2), bptt_schedule(28, 7, P, [[0, 1]], 2)
    assert full.frames == list(range(28))  # one window: the frames stream, then the backward pass
    for sch, n in ((full, 28), (trunc, 7)):
        h1, h2 = (sorted(c for c, items in sch.backward.items() for i, _, _ in items if i == layer)[:n]
                  for layer in (0, 1))
        assert set(np.diff(h1)) == set(np.diff(h2)) == {P}  # a step per chain of P ticks
        assert h1[0] == h2[0] + P  # the layer below waits for the layer above's sums
        assert h2[0] > sch.frames[n - 1] + 2  # after the window's last readout step
    assert trunc.frames[:7] == list(range(7)) and trunc.frames[7] == h1[-1]  # the next window waits
    assert trunc.ticks == 28 + 4 * 3 + 28 * P + 2 and full.ticks == 28 + 3 + 28 * P + 2  # module docstring's S


@pytest.mark.ray
def test_bptt_is_the_same_on_the_ray_engine(ray_local):
    r = digits(train=64, test=32, epochs=1, truncation=5, blocks=(("h1",), ("h2",)))
    one = run(r)["state_digest"]
    assert run(r, engine="ray")["state_digest"] == one
    assert run(r.with_overrides(pes=2), engine="ray")["state_digest"] == one


def test_bptt_recipe_errors_name_the_problem():
    import tomllib

    from s2emu.recipe import parse_recipe
    doc = tomllib.loads(open("recipes/tlbptt_digits.toml").read())
    with pytest.raises(RecipeError, match="learning.blocks' must cut the hidden layers"):
        parse_recipe({**doc, "learning": {**doc["learning"], "blocks": [["h2"], ["h1"]]}})
    extra = {**doc, "projections": [*doc["projections"], {"pre": "input", "post": "h2"}]}
    with pytest.raises(RecipeError, match="not part of it: input->h2"):
        parse_recipe(extra)
    from s2emu.build import build
    from s2emu.errors import MachineError
    pops = [{**p, "max_atoms_per_core": 1} if p["name"] == "h1" else p for p in doc["populations"]]
    with pytest.raises(MachineError, match="layer 'h2' has 64 neurons, fewer than the 128 PEs"):
        build(parse_recipe({**doc, "populations": pops}))


def test_sweep_writes_a_table_and_plot(tmp_path):
    recipe = tmp_path / "tiny.toml"
    text = open("recipes/tlbptt_digits.toml").read().replace("max_train = 3000", "max_train = 96") \
        .replace("max_test = 1000", "max_test = 32").replace('sram_bytes = 1048576', 'sram_bytes = 1048576')
    recipe.write_text(text.replace('kind = "mnist"', 'kind = "mnist"\npath = ""'))
    p = subprocess.run([sys.executable, "-m", "s2emu", "sweep", str(recipe), "--truncation", "3,all",
                        "--blocks", "e2e,layer", "--epochs", "1", "--out", str(tmp_path / "out"), "--json",
                        "--quiet"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(p.stdout)["rows"]
    assert [(r["truncation"], r["blocks"]) for r in rows] == [("all", "e2e"), (3, "e2e"), (3, "layer"),
                                                              ("all", "layer")]
    assert rows[0]["memory_vs_full"] == 0 and rows[1]["history_bytes"] < rows[0]["history_bytes"]
    for name in ("sweep.csv", "sweep.md", "sweep.json", "sweep.png"):
        assert (tmp_path / "out" / name).is_file()
