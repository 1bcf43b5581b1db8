"""The network a recipe describes: populations, projections, learning rule, and initial weights.

Populations are PyNN-like: a name, a neuron model, a size and `max_atoms_per_core` (neurons per PE).
Models:
  input    streamed by the host: analog values (one MC-with-payload packet per channel per tick) or,
           with encoding = "spikes", one MC packet without payload per spike
  lif/alif spiking neurons of ../shared/SCIENCE.md (lif is alif with beta = 0 and no adaptation state)
  readout  leaky readout y(t) = kappa y(t-1) + sum_j W_jk z_j; softmax cross-entropy of mean y
  relu     a non-spiking layer a = max(0, W^T x) of a feed-forward ("layered") network, no bias
  softmax  the output layer of a layered network: softmax of W^T x, cross-entropy loss

A layered network (SCIENCE.md seed B, LeNet-300-100) is a chain input -> relu ... -> softmax, one projection
into each layer; its projections may be sparse (`connectivity` < 1, trained with DEEP R, cores/deepr.py).

Initial weights are drawn here, globally, from the recipe seed and the projection's name, and only then
cut into PE slices: that is what makes every split of the network over PEs start from the same weights.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace

import numpy as np

from .errors import RecipeError

NEURON_PARAMS = ("tau_m", "tau_a", "v_th", "beta", "tau_out")
# SCIENCE.md seed A parameters (time in ticks).
DEFAULTS = {"tau_m": 5.0, "tau_a": 150.0, "v_th": 1.6, "beta": 0.184, "tau_out": 10.0}
MODEL_PARAMS = {
    "input": (),
    "lif": ("tau_m", "v_th"),
    "alif": ("tau_m", "tau_a", "v_th", "beta"),
    "readout": ("tau_out",),
    "relu": (),
    "softmax": (),
}
LAYER_MODELS = ("relu", "softmax")
MAX_DELAY = 64  # ticks; a delayed projection keeps that many ticks of presynaptic values in SRAM


@dataclass(frozen=True)
class Population:
    name: str
    model: str
    size: int
    params: dict
    max_atoms_per_core: int | None = None
    encoding: str = "analog"  # input only: "analog" values (MC with payload) or "spikes" (MC without payload)

    @staticmethod
    def params_for(model: str) -> tuple[str, ...]:
        return MODEL_PARAMS[model]

    def param(self, key: str) -> float:
        return float(self.params.get(key, DEFAULTS[key]))

    @property
    def is_neuron(self) -> bool:
        return self.model in ("lif", "alif")

    @property
    def is_layer(self) -> bool:
        return self.model in LAYER_MODELS

    @property
    def is_split(self) -> bool:
        """Cut over PEs by --pes (and grown by weak scaling): neurons and layers, not inputs or readouts."""
        return self.is_neuron or self.is_layer

    def slices(self) -> list[tuple[int, int]]:
        """Contiguous [lo, hi) neuron ranges, one per PE. Readouts stay whole: the softmax needs all of them.
        (Layered networks are cut by the mapper, into as many slices as their largest layer asks for.)"""
        if self.model == "readout" or self.model == "input":
            return [(0, self.size)]
        per = self.max_atoms_per_core or self.size
        return [(lo, min(lo + per, self.size)) for lo in range(0, self.size, per)]


@dataclass(frozen=True)
class Projection:
    pre: str
    post: str
    init_scale: float = 1.0
    connectivity: float = 1.0  # fraction of the n_pre x n_post connections kept active (DEEP R's K / size)
    delay: int = 1  # ticks from a presynaptic spike (or value) to its postsynaptic effect (cores/timing.py)
    weights: object = None  # s2emu.arrays.FixedWeights: initial weights given instead of the seeded draw

    @property
    def name(self) -> str:
        return f"{self.pre}->{self.post}"


@dataclass(frozen=True)
class LearningSpec:
    rule: str = "eprop"
    feedback: str = "symmetric"
    signal: str = "end_of_sample"
    surrogate: str = "multi_gaussian"
    eligibility_layout: str = "per_synapse"
    lr: float = 0.01
    lr_decay: float = 1.0
    lr_decay_every: int = 0  # in epochs; 0 = never
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-5
    l2: float = 0.0
    reg_rate: float = 0.0  # e-prop: firing-rate regularization c_reg, 0 = off (docs/learning-rules.md)
    target_rate_hz: float = 10.0  # e-prop: the rate it pulls each neuron towards
    l1: float = 1e-5  # DEEP R: L1 shrinkage of theta per sample (times lr)
    noise: float = 3e-4  # DEEP R: exploration noise, lr * noise * N(0, 1) per sample
    rewire_every: int = 10  # DEEP R: samples between rewirings
    truncation: int = 0  # BPTT: window of steps gradients flow back through; 0 = the whole sample
    blocks: tuple = ()  # BPTT: local blocks (tuples of hidden population names); () = one block


@dataclass(frozen=True)
class Network:
    populations: tuple[Population, ...]
    projections: tuple[Projection, ...]

    def __post_init__(self):
        names = [p.name for p in self.populations]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise RecipeError(f"population name used twice: {', '.join(sorted(dup))}")
        self._check_fixed_weights(names)
        inputs = [p for p in self.populations if p.model == "input"]
        if self.layered:
            self._check_layered(inputs)
            return
        readouts = [p for p in self.populations if p.model == "readout"]
        if len(inputs) != 1 or len(readouts) != 1:
            raise RecipeError(f"the network needs exactly one 'input' and one 'readout' population "
                              f"(has {len(inputs)} and {len(readouts)})")
        for i, pr in enumerate(self.projections):
            if pr.connectivity != 1.0:
                raise RecipeError(f"'projections[{i}].connectivity': sparse projections are for layered "
                                  f"networks (relu/softmax) trained with DEEP R")
            if not 1 <= pr.delay <= MAX_DELAY:
                raise RecipeError(f"'projections[{i}].delay' must be 1 to {MAX_DELAY} ticks, got {pr.delay}")
        seen = set()
        for i, pr in enumerate(self.projections):
            for end in (pr.pre, pr.post):
                if end not in names:
                    raise RecipeError(f"'projections[{i}]' names unknown population '{end}'"
                                      f" (populations: {', '.join(names)})")
            if (pr.pre, pr.post) in seen:
                raise RecipeError(f"'projections[{i}]': projection {pr.name} given twice")
            seen.add((pr.pre, pr.post))
            post, pre = self[pr.post], self[pr.pre]
            if post.model == "input":
                raise RecipeError(f"'projections[{i}]': the input population '{post.name}' cannot receive a projection")
            if post.model == "readout" and not pre.is_neuron:
                raise RecipeError(f"'projections[{i}]': a readout reads spiking populations, not '{pre.model}'")
            if pre.model == "readout":
                raise RecipeError(f"'projections[{i}]': readout '{pre.name}' cannot project onward")
        for p in self.populations:
            if p.is_neuron and not any(pr.post == p.name for pr in self.projections):
                raise RecipeError(f"population '{p.name}' receives no projection")
        # the sample clock times the input's arrival and the readout's window by these two (cores/timing.py)
        for end, which in ((self.input.name, "pre"), (self.readout.name, "post")):
            delays = {pr.delay for pr in self.projections if getattr(pr, which) == end}
            if len(delays) > 1:
                raise RecipeError(f"the projections {'from' if which == 'pre' else 'into'} '{end}' need one delay "
                                  f"(the sample clock times the {'input' if which == 'pre' else 'readout'} by it); "
                                  f"got {', '.join(map(str, sorted(delays)))}")

    def _check_fixed_weights(self, names):
        """Explicit initial weights fit their projection."""
        for i, pr in enumerate(self.projections):
            if pr.weights is None or pr.pre not in names or pr.post not in names:
                continue  # unknown ends are refused below, with the rest of the topology
            want = (self[pr.pre].size, self[pr.post].size)
            if pr.weights.shape != want:
                raise RecipeError(f"'projections[{i}].weights' of {pr.name} has shape {pr.weights.shape}, the "
                                  f"populations need {want} ([n_pre, n_post])")

    def check_eprop(self):
        """e-prop's learning signal comes from the readout: every spiking population must project to it. Its
        recurrent projections have no self-connections (their traces are held at 0; the seeded draw zeroes
        them, and explicit weights must too)."""
        for i, pr in enumerate(self.projections):
            if pr.pre == pr.post and pr.weights is not None and np.diagonal(pr.weights.array).any():
                j = int(np.flatnonzero(np.diagonal(pr.weights.array))[0])
                raise RecipeError(f"'projections[{i}].weights' of {pr.name}: neuron {j} connects to itself; "
                                  f"e-prop's recurrent projections have no self-connections (diagonal 0)")
        for p in self.populations:
            if p.is_neuron and not any(pr.pre == p.name and self[pr.post].model == "readout"
                                       for pr in self.projections):
                raise RecipeError(f"population '{p.name}' does not project to the readout "
                                  f"(e-prop's learning signal comes from the readout)")

    def spiking_stack(self) -> list[tuple[Population, Projection, Projection | None]]:
        """The hidden layers of a stack that BPTT trains, in order, each with its feed-forward input projection
        and its recurrent one (or None): input -> h1 -> h2 ... -> readout, optional h -> h, nothing else."""
        hidden = [p for p in self.populations if p.is_neuron]
        chain = [self.input.name, *(p.name for p in hidden), self.readout.name]
        by_pair = {(pr.pre, pr.post): pr for pr in self.projections}
        want = set(zip(chain, chain[1:])) | {(h.name, h.name) for h in hidden}
        extra = [pr.name for pr in self.projections if (pr.pre, pr.post) not in want]
        missing = [f"{a}->{b}" for a, b in zip(chain, chain[1:]) if (a, b) not in by_pair]
        if extra or missing:
            raise RecipeError(f"BPTT trains a stack {' -> '.join(chain)} (each hidden layer optionally recurrent); "
                              + (f"not part of it: {', '.join(extra)}" if extra else f"missing: {', '.join(missing)}"))
        return [(h, by_pair[(prev, h.name)], by_pair.get((h.name, h.name))) for prev, h in zip(chain, hidden)]

    @property
    def layered(self) -> bool:
        return any(p.is_layer for p in self.populations)

    def _check_layered(self, inputs):
        """input -> relu ... -> softmax, in population order, one projection into each layer."""
        pops = self.populations
        if pops[0].model != "input" or len(inputs) != 1 or pops[-1].model != "softmax" \
                or any(p.model != "relu" for p in pops[1:-1]):
            raise RecipeError("a layered network lists its populations as input, relu ..., softmax "
                              f"(got {', '.join(p.model for p in pops)}); spiking models do not mix in")
        want = [(a.name, b.name) for a, b in zip(pops, pops[1:])]
        got = [(pr.pre, pr.post) for pr in self.projections]
        if got != want:
            raise RecipeError(f"a layered network has one projection from each layer to the next, in order: "
                              f"{', '.join(f'{a}->{b}' for a, b in want)} (got {', '.join(f'{a}->{b}' for a, b in got)})")
        for i, pr in enumerate(self.projections):
            if pr.delay != 1:
                raise RecipeError(f"'projections[{i}].delay': a layered network's layers run one tick after "
                                  f"another (delay 1); delays are for spiking networks")
            if not 0 < pr.connectivity <= 1:
                raise RecipeError(f"'projections[{i}].connectivity' must be in (0, 1], got {pr.connectivity}")

    @property
    def input_delay(self) -> int:
        """Ticks from the host's frame to the spiking populations: their first step of a sample is at this
        local tick (cores/timing.py)."""
        return next((pr.delay for pr in self.projections if pr.pre == self.input.name), 1)

    @property
    def readout_delay(self) -> int:
        return next((pr.delay for pr in self.projections if pr.post == self.readout.name), 1)

    def __getitem__(self, name: str) -> Population:
        for p in self.populations:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.populations)

    @property
    def input(self) -> Population:
        return next(p for p in self.populations if p.model == "input")

    @property
    def readout(self) -> Population:
        """The population whose outputs the host reads (a spiking network's readout, a layered one's softmax)."""
        return next(p for p in self.populations if p.model in ("readout", "softmax"))

    def incoming(self, post: str) -> list[Projection]:
        return [pr for pr in self.projections if pr.post == post]

    def split_over(self, pes: int) -> "Network":
        """Every spiking population (every layer of a layered network) cut into (at most) `pes` slices of
        near-equal size."""
        return self._with_split(lambda p: replace(p, max_atoms_per_core=max(1, math.ceil(p.size / pes))))

    def grown(self, factor: float) -> "Network":
        """Every spiking population (every layer) `factor` times as large, inputs and readouts unchanged: the
        network of a weak-scaling step (s2emu/scale.py)."""
        return self._with_split(lambda p: replace(p, size=max(1, round(p.size * factor))))

    def _with_split(self, change) -> "Network":
        return replace(self, populations=tuple(change(p) if p.is_split else p for p in self.populations))

    @property
    def n_weights(self) -> int:
        return sum(self[p.pre].size * self[p.post].size for p in self.projections)

    @property
    def n_active_weights(self) -> int:
        """Connections kept active: K per sparse projection, all of a dense one."""
        from .cores.deepr import budget
        return sum(budget(self[p.pre].size, self[p.post].size, p.connectivity) for p in self.projections)


def _rng(seed: int, what: str) -> np.random.Generator:
    # Keyed by name, not by order, so adding a projection does not change the others' weights.
    return np.random.default_rng([seed, zlib.crc32(what.encode())])


def initial_weights(network: Network, seed: int) -> dict[str, np.ndarray]:
    """Global float32 weight matrices [n_pre, n_post] (row = presynaptic source, as synapse rows on the chip).

    N(0, init_scale^2 / n_pre); recurrent self-connections (i == j) are zero and stay zero. A projection with
    explicit weights (Projection.weights) starts from those instead.
    """
    weights = {}
    for pr in network.projections:
        if pr.weights is not None:
            weights[pr.name] = pr.weights.array.copy()
            continue
        n_pre, n_post = network[pr.pre].size, network[pr.post].size
        w = _rng(seed, pr.name).standard_normal((n_pre, n_post)) * (pr.init_scale / math.sqrt(n_pre))
        if pr.pre == pr.post:
            np.fill_diagonal(w, 0.0)
        weights[pr.name] = w.astype(np.float32)
    return weights


def random_feedback(network: Network, seed: int) -> dict[str, np.ndarray]:
    """Fixed random feedback matrices B [n_hidden, n_out] for random e-prop, one per population read out."""
    out = network.readout
    fb = {}
    for pr in network.incoming(out.name):
        n = network[pr.pre].size
        fb[pr.pre] = (_rng(seed, f"feedback:{pr.pre}").standard_normal((n, out.size))
                      / math.sqrt(out.size)).astype(np.float32)
    return fb
