"""The PEs' e-prop held to tests/eprop_reference.py: SCIENCE.md's equations in float64, sharing no code with the
chip (issue 22, "e-prop checked against the equations alone").

What is compared: for every training sample, the gradient each PE hands its optimizer (Adam.step's argument,
caught just before the step and assembled over the PEs into global matrices), and the hidden spikes and
voltages, against the reference run on the same input with the weights that sample saw. The mutation tests at
the end show that a mistake in code the golden model shares with the PEs (the surrogate, the neuron constants)
now fails, as do mistakes in the PE's own trace constants and learning signal.

Tolerance. The chip computes in float32 (eps 6e-8); over a 20-step sample its traces, filters and sums differ
from float64 by at most 8e-7 of each gradient matrix's largest element (measured over every case below).
GRAD_TOL = 1e-5 of that element leaves more than ten times that, while a mistake in the equations moves the
gradients by far more: evaluating the reference with a mistake in it, the smallest seen was 8e-3 (epsa taken
before its update, as Bellec et al. order it, instead of after, as SCIENCE.md does); dropping the adaptation
term gives 1.5e-2, pairing the online L(t) with ebar(t) instead of ebar(t+1) 8e-2, and the mutations below
5e-2 to 20. Spikes must match exactly: a threshold crossing within float32 rounding of v = A would flip one,
and none does in these seeded runs.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from s2emu.build import build
from s2emu.cores import kernels, neurons
from s2emu.cores.eprop_pe import ReadoutPE
from s2emu.cores.neurons import NeuronConstants
from s2emu.cores.optimizer import Adam
from s2emu.engines import local, run_engine
from s2emu.host.base import TRAIN
from s2emu.network import random_feedback
from s2emu.recipe import parse_recipe
from s2emu.runner import assemble_spikes, assemble_voltage

import eprop_reference as ref  # tests/, beside this file

GRAD_TOL = 1e-5  # max |chip - reference| / max |reference|, per gradient matrix (see the module docstring)
VOLT_TOL = 1e-5  # the same, for the hidden voltages
N_IN, N_HIDDEN, N_OUT, T = 4, 10, 3, 20
# neuron parameters away from the defaults (a default-valued mistake cannot hide), and an adaptation fast
# enough to matter within 20 steps
ALIF = {"tau_m": 5.0, "tau_a": 25.0, "v_th": 1.0, "beta": 0.5}
LIF = {"tau_m": 6.0, "v_th": 1.0}
TAU_OUT = 8.0


def make_recipe(model="alif", atoms=4, recurrent=True, batch=1, seed=3, **learning):
    """4 inputs -> 10 hidden, `atoms` per PE (4: PEs of 4, 4 and 2, so a group of two and a PE alone) -> 3
    readouts; 20-step samples, one per class to train on (one epoch) and one to test; every hidden neuron
    fires in these runs (about 120 spikes over the 3 training samples)."""
    doc = {
        "name": "eprop_reference", "seed": seed,
        "data": {"kind": "patterns", "classes": N_OUT, "channels": N_IN, "steps": T, "train_per_class": 1,
                 "test_per_class": 1, "noise": 1.0, "jitter": 2, "active_fraction": 0.4},
        "populations": [
            {"name": "input", "model": "input", "size": N_IN},
            {"name": "hidden", "model": model, "size": N_HIDDEN, "max_atoms_per_core": atoms,
             **(ALIF if model == "alif" else LIF)},
            {"name": "out", "model": "readout", "size": N_OUT, "tau_out": TAU_OUT}],
        "projections": [{"pre": "input", "post": "hidden", "init_scale": 8.0},
                        *([{"pre": "hidden", "post": "hidden", "init_scale": 1.5}] if recurrent else []),
                        {"pre": "hidden", "post": "out", "init_scale": 1.0}],
        "learning": {"rule": "eprop", **learning},
        "schedule": {"epochs": 1, "batch": batch},
        "record": {"spikes": ["hidden"], "voltage": ["hidden"]},
    }
    return parse_recipe(doc)


def run_chip(recipe):
    """Run the recipe on the local engine (the real PEs, router and host; PEs grouped where they group).
    Returns the build, the raw run, and per projection and optimizer step (one per training batch, in order)
    the global weights before the step and the gradient the optimizer was given, [steps, n_pre, n_post]."""
    steps, made = [], []
    real_step, real_make_pes = Adam.step, local.make_pes

    def spy_step(adam, w, grad, lr, t):
        steps.append((w, w.copy(), grad.copy()))  # before Adam.step changes either
        return real_step(adam, w, grad, lr, t)

    def keep_pes(*args, **kwargs):  # the engine's PE objects: which weights each array holds
        made.append(real_make_pes(*args, **kwargs))
        return made[-1]

    with pytest.MonkeyPatch.context() as mp:  # undone on return; a test's own mutations stay
        mp.setattr(Adam, "step", spy_step)
        mp.setattr(local, "make_pes", keep_pes)
        b = build(recipe)
        raw = run_engine("local", b)
    pes, groups = made[0]
    columns = {}  # id(weight array) -> (projection, the global postsynaptic columns it holds)
    for pe in pes:
        for q, pr in enumerate(pe.projections):
            columns[id(pe.W[q])] = pr["name"], np.arange(pe.config["lo"], pe.config["hi"])
    for g in groups:  # a group steps its members' weights as one array, side by side
        for q, pr in enumerate(g.projections):
            columns[id(g.W[q])] = pr["name"], np.concatenate([np.arange(m.lo, m.hi) for m in g.members])
    net = recipe.network
    n_updates = int((b.plan.split == TRAIN).sum())
    shape = {pr.name: (n_updates, net[pr.pre].size, net[pr.post].size) for pr in net.projections}
    before = {name: np.full(s, np.nan, np.float32) for name, s in shape.items()}
    grads = {name: np.full(s, np.nan, np.float32) for name, s in shape.items()}
    taken = {}
    for w, w_before, g in steps:
        name, cols = columns[id(w)]
        k = taken[id(w)] = taken.get(id(w), -1) + 1
        before[name][k][:, cols], grads[name][k][:, cols] = w_before, g
    for name in shape:  # every column of every update was seen
        assert not np.isnan(grads[name]).any() and not np.isnan(before[name]).any(), name
    return b, raw, before, grads


def relative_error(chip, reference):
    return float(np.abs(chip - reference).max() / np.abs(reference).max())


def compare(recipe, chip_run=None):
    """The chip's run (run_chip's) against the reference, every training sample of every stream: the largest
    relative error of each gradient and of the voltages, whether every spike matched, how many spikes."""
    b, raw, before, grads = chip_run or run_chip(recipe)
    net, lc = recipe.network, recipe.learning
    hidden = net["hidden"]
    d_in = net.input_delay
    S = T + d_in + net.readout_delay  # ticks per sample (cores/timing.py)
    spikes = assemble_spikes(b, raw)["hidden"]
    ticks, volts = assemble_voltage(b, raw)["hidden"]
    fb = random_feedback(net, recipe.seed)["hidden"].T.astype(np.float64) if lc.feedback == "random" else None
    params = {k: hidden.param(k) for k in ("tau_m", "tau_a", "v_th")}
    beta = hidden.param("beta") if hidden.model == "alif" else 0.0  # LIF: ALIF without adaptation
    keys = {"d_in": "input->hidden", "d_rec": "hidden->hidden", "d_out": "hidden->out"}
    keys = {k: name for k, name in keys.items() if name in grads}
    worst = dict.fromkeys([*keys, "v"], 0.0)
    spikes_match, n_spikes = True, 0
    for k, step in enumerate(np.flatnonzero(b.plan.split == TRAIN)):
        w = {name: before[name][k].astype(np.float64).T for name in before}  # SCIENCE.md's W[post, pre]
        batch_grad = {key: 0.0 for key in keys}
        streams = b.plan.idx[step]
        for stream, i in enumerate(streams):
            r = ref.eprop_sample(b.dataset.x_train[i], int(b.dataset.y_train[i]), w["input->hidden"],
                                 w.get("hidden->hidden"), w["hidden->out"], w["hidden->out"] if fb is None else fb,
                                 tau_out=TAU_OUT, beta=beta, surrogate=lc.surrogate, signal=lc.signal,
                                 # the patterns data has no physical step: a tick is 1 ms (docs/learning-rules.md)
                                 reg_rate=lc.reg_rate, target_rate=lc.target_rate_hz / 1000, **params)
            for key in keys:  # the batch's gradient: the mean over its streams
                batch_grad[key] = batch_grad[key] + r[key] / len(streams)
            mine = spikes[(spikes[:, 0] >= step * S) & (spikes[:, 0] < (step + 1) * S) & (spikes[:, 1] == stream)]
            z = np.zeros((T, hidden.size))
            z[mine[:, 0] - step * S - d_in, mine[:, 2]] = 1  # model step t runs at local tick d_in + t
            spikes_match &= bool((z == r["z"]).all())
            n_spikes += int(r["z"].sum())
            at = (ticks >= step * S + d_in) & (ticks < step * S + d_in + T)
            worst["v"] = max(worst["v"], relative_error(volts[at, stream], r["v"]))
        for key, name in keys.items():
            worst[key] = max(worst[key], relative_error(grads[name][k].T, batch_grad[key]))
    return worst, spikes_match, n_spikes


def agrees(worst, spikes_match) -> bool:
    return spikes_match and worst["v"] < VOLT_TOL and all(worst[k] < GRAD_TOL for k in worst if k != "v")


def assert_agrees(recipe):
    worst, spikes_match, n_spikes = compare(recipe)
    assert n_spikes >= 80, f"too few spikes ({n_spikes}) for the comparison to mean anything"
    assert spikes_match, "the chip's spikes differ from the equations'"
    assert agrees(worst, spikes_match), worst


# -- the reference itself ------------------------------------------------------------------------------------

def test_reference_imports_nothing_but_numpy_and_the_standard_library():
    """Its independence is the point: parsed, not imported (s2emu is loaded in this process anyway)."""
    tree = ast.parse(Path(ref.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Name):
            assert node.id not in ("__import__", "exec", "eval"), f"a dynamic import or eval: {node.id}"
    assert roots <= {"numpy"} | (set(sys.stdlib_module_names) - {"importlib"}), roots
    assert "numpy" in roots


def test_reference_surrogates_have_their_published_shape():
    """Checks of the reference's own surrogates that do not repeat their formulas: the multi-Gaussian's
    integral is gamma (1 + h - h - h) = 0.5 * 0.85 and it is even; the triangle peaks at 0.3 / v_th, spans
    |u| < v_th and integrates to 0.3."""
    u = np.linspace(-40, 40, 800_001)
    du = u[1] - u[0]
    mg = ref.multi_gaussian(u, 1.6)
    assert abs(mg.sum() * du - 0.5 * 0.85) < 1e-9
    np.testing.assert_allclose(mg, mg[::-1], rtol=0, atol=1e-12)  # linspace is symmetric to rounding
    for v_th in (0.5, 1.6):
        tri = ref.triangle(u, v_th)
        assert abs(ref.triangle(np.array(0.0), v_th) - 0.3 / v_th) < 1e-15
        assert tri[np.abs(u) >= v_th].max() == 0
        assert abs(tri.sum() * du - 0.3) < 1e-6


# -- the PEs against the reference ---------------------------------------------------------------------------

@pytest.mark.parametrize("signal", ["end_of_sample", "online"])
@pytest.mark.parametrize("feedback", ["symmetric", "random"])
@pytest.mark.parametrize("surrogate", ["multi_gaussian", "triangle"])
@pytest.mark.parametrize("model", ["alif", "lif"])
def test_pe_gradients_match_the_equations(model, surrogate, feedback, signal):
    """Recurrent hidden layer over 3 PEs (a group of two and one alone), batch 1 as on the chip."""
    assert_agrees(make_recipe(model, surrogate=surrogate, feedback=feedback, signal=signal))


@pytest.mark.parametrize("layout", [
    dict(atoms=10),  # one PE
    dict(atoms=3, eligibility_layout="per_source", signal="online"),  # 4 PEs, each stepped alone
    dict(model="lif", recurrent=False, feedback="random"),  # no recurrence
    dict(batch=2, signal="online"),  # two streams: the gradient is their mean
    dict(batch=2, feedback="random"),  # at the end of a sample, the B-stream fold of the learning signal
], ids=["one_pe", "per_source_4pes", "lif_feedforward", "batch2_online", "batch2_end_of_sample"])
def test_pe_gradients_match_the_equations_on_other_layouts(layout):
    assert_agrees(make_recipe(**layout))


# -- mutations: mistakes in code the golden model shares with the PEs, and in the PEs' own constants ---------

def double_gamma(mp):
    """The multi-Gaussian's gamma doubled (cores/neurons.py, read by the PEs and the golden model alike)."""
    mp.setattr(neurons, "_GAMMA", 2 * neurons._GAMMA)


def _constants_with(**change):
    real = NeuronConstants.make

    def make(cls, model, tau_m=5.0, tau_a=150.0, v_th=1.6, beta=0.184, tau_out=10.0):
        c = real(model, tau_m=tau_m, tau_a=tau_a, v_th=v_th, beta=beta, tau_out=tau_out)
        taus = {"tau_m": tau_m, "tau_a": tau_a, "tau_out": tau_out}
        return dataclasses.replace(c, **{k: float(np.float32(math.exp(-1 / taus[t]))) for k, t in change.items()})
    return make


def kappa_from_tau_m(mp):
    """The readout / eligibility filter kappa built from tau_m (NeuronConstants.make: build.py and the golden
    model both call it), where SCIENCE.md has exp(-1/tau_out)."""
    mp.setattr(NeuronConstants, "make", classmethod(_constants_with(kappa="tau_m")))


def rho_from_tau_m(mp):
    """The adaptation decay rho built from tau_m instead of tau_a (NeuronConstants.make): a forward mistake."""
    mp.setattr(NeuronConstants, "make", classmethod(_constants_with(rho="tau_m")))


def signal_without_1_over_T(mp):
    """The learning signal L_j = sum_k B_kj err_k / T sent without its 1/T (cores/eprop_pe.py ReadoutPE._signal)."""
    real = ReadoutPE._signal
    mp.setattr(ReadoutPE, "_signal", lambda self, q, e: real(self, q, e) * np.float32(self.T))


def epsa_input_without_1_minus_alpha(mp):
    """epsa's input term psi epsv (1 - rho)(1 - alpha) without (1 - alpha): a constant the compiled trace kernel
    takes as an argument on every call (cores/kernels.py), so patching it reaches the computation."""
    real = kernels._trace_constants

    def constants(c):
        alpha, one_a, _, rho, one_rho, beta, kappa = real(c)  # _: (1 - rho)(1 - alpha)
        return alpha, one_a, one_rho, rho, one_rho, beta, kappa
    mp.setattr(kernels, "_trace_constants", constants)


@pytest.mark.parametrize("mutate, variant, hits", [
    (double_gamma, dict(), "d_in"),
    (double_gamma, dict(signal="online", feedback="random"), "d_rec"),
    (kappa_from_tau_m, dict(), "d_out"),
    (rho_from_tau_m, dict(), "v"),
    (signal_without_1_over_T, dict(signal="online"), "d_in"),
    (signal_without_1_over_T, dict(feedback="random"), "d_rec"),
    (epsa_input_without_1_minus_alpha, dict(surrogate="triangle"), "d_in"),
], ids=["gamma_doubled", "gamma_doubled_online_random", "kappa_from_tau_m", "rho_from_tau_m",
        "signal_without_1_over_T_online", "signal_without_1_over_T", "epsa_without_1_minus_alpha"])
def test_a_mutation_of_the_shared_code_now_fails(monkeypatch, mutate, variant, hits):
    """Unmutated the chip agrees with the reference; mutated, it disagrees, by far more than GRAD_TOL, in the
    quantity the mutation touches (`hits`), and its own gradient moved: the mutation reached the PEs.
    monkeypatch undoes the mutation after the test."""
    recipe = make_recipe(**variant)
    clean = run_chip(recipe)
    assert agrees(*compare(recipe, clean)[:2])
    mutate(monkeypatch)
    mutated = run_chip(recipe)
    worst, spikes_match, _ = compare(recipe, mutated)
    assert not agrees(worst, spikes_match)
    assert worst[hits] > 1000 * GRAD_TOL, worst
    moved = max(relative_error(mutated[3][name], clean[3][name]) for name in clean[3])
    assert moved > 1000 * GRAD_TOL, "the mutation did not change the PEs' gradient"
