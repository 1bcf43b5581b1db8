"""s2emu.snn: networks built, saved and inspected from Python, shaped after py-spinnaker2's `snn` module.

    from s2emu import snn, hardware
    inp = snn.Population(20, "spike_list", params={0: [1, 5], 3: [2]}, name="input")
    hid = snn.Population(40, "alif", params={"tau_m": 5.0, "v_th": 1.6}, name="hidden", record=("spikes", "v"))
    out = snn.Population(4, "readout", name="out")
    net = snn.Network("demo").add(inp, hid, out, snn.Projection(inp, hid, init_scale=3.0),
                                  snn.Projection(hid, hid), snn.Projection(hid, out))
    hardware.SpiNNaker2Chip().run(net, timesteps=30)
    hid.get_spikes()                                   # {neuron: [ticks]}

One model behind both front ends: a Network turns into the very Recipe (s2emu/recipe.py) a TOML file loads to,
through the same parser (`parse_recipe`), so both are checked, built and run by one path; `Network.from_recipe`
loads a TOML recipe into a Network and `Network.to_recipe` writes one (arrays a TOML file cannot hold, explicit
weights and input samples, go to a .npz beside it, s2emu/arrays.py). docs/api.md compares the names with
py-spinnaker2's.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
from pathlib import Path

import numpy as np

from .arrays import ArrayData, FixedWeights, write_npz
from .errors import RecipeError, S2EmuError
from .machine import PRESETS, Machine
from .network import MAX_DELAY, MODEL_PARAMS
from .recipe import LEARNING_SCHEMA, POPULATION_SCHEMA, PROJECTION_SCHEMA, Recipe, load_recipe, parse_recipe
from .atomic import write_atomically
from .schema import check_table

# the recipes' models, and py-spinnaker2's name for an input of spike times
MODELS = ("input", "spike_list", "lif", "alif", "readout", "relu", "softmax")
# py-spinnaker2 names a user may bring, and what s2emu has instead (hints in errors)
PY_SPINNAKER2_PARAMS = {
    "threshold": "s2emu calls it 'v_th'",
    "alpha_decay": "s2emu takes 'tau_m' (alpha = exp(-1 / tau_m)) and scales the input by 1 - alpha",
    "i_offset": "s2emu's neurons have no bias current",
    "reset": "s2emu's neurons reset by subtraction",
    "v_reset": "s2emu's neurons reset by subtraction",
    "t_refrac": "s2emu's neurons have no refractory period",
}
PY_SPINNAKER2_MODELS = ("lif_no_delay", "lif_curr_exp", "lif_curr_exp_no_delay", "lif_conv2d", "izhikevich",
                        "poisson_process")
SPIKING = ("lif", "alif")
DEFAULT_RECORD = ("spikes",)  # py-spinnaker2's habit; only spiking populations have spikes to record
_unnamed = itertools.count()


def _err_prefix(where: str, e: RecipeError) -> RecipeError:
    return RecipeError(f"{where}: {e}")


# --------------------------------------------------------------------------------------------- populations

class Population:
    """`size` neurons of one model: "input" (analog values, or spikes with params={"encoding": "spikes"}),
    "spike_list" (an input of spike times, params {neuron: [ticks]}, as py-spinnaker2), "lif", "alif",
    "readout", "relu", "softmax". params: the model's parameters (network.py MODEL_PARAMS; the recipe's
    defaults otherwise). record: "spikes" and/or "v" (voltage) of lif/alif populations; an input records the
    spikes it sends."""

    def __init__(self, size, neuron_model, params=None, name=None, record=DEFAULT_RECORD):
        self.name = f"population{next(_unnamed)}" if name is None else name
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise RecipeError(f"population name {self.name!r} must be an identifier (letters, digits, _)")
        where = f"population '{self.name}'"
        if neuron_model not in MODELS:
            hint = " (py-spinnaker2's models map to 'lif', 'alif' or 'spike_list' here)" \
                if neuron_model in PY_SPINNAKER2_MODELS else ""
            raise RecipeError(f"{where}: unknown neuron model {neuron_model!r}; s2emu has "
                              f"{', '.join(MODELS)}{hint}")
        params = dict(params or {})
        self.neuron_model, self.spike_times, encoding = neuron_model, None, "analog"
        if neuron_model == "spike_list":
            self.spike_times = _spike_times(params, size, where)
            params, model, encoding = {}, "input", "spikes"
        else:
            model = neuron_model
            if model == "input" and "encoding" in params:
                encoding = params.pop("encoding")
        allowed = MODEL_PARAMS[model]
        for key in params:
            if key not in allowed:
                hint = PY_SPINNAKER2_PARAMS.get(key)
                raise RecipeError(f"{where}: model '{model}' has no parameter {key!r} (it takes: "
                                  f"{', '.join(allowed) or 'no parameters'})" + (f"; {hint}" if hint else ""))
        self.model, self.encoding, self.size, self._params = model, encoding, size, params
        self.max_atoms_per_core = None
        self.record = _record(record, where, model, record is DEFAULT_RECORD)
        self._record_default = record is DEFAULT_RECORD
        self._check()
        self._spikes = None  # (rows [n, 4]: sample, stream, tick, neuron) after a run
        self._voltages = None  # (sample, tick [n], v [n, streams, neurons]) after a run

    @property
    def params(self) -> dict:
        """The model's parameters; for a spike_list, its spike times {neuron: [ticks]} (py-spinnaker2 scripts
        set `pop.params = spike_times` before each run)."""
        return self.spike_times if self.neuron_model == "spike_list" else self._params

    @params.setter
    def params(self, value):
        if self.neuron_model == "spike_list":
            self.spike_times = _spike_times(dict(value), self.size, f"population '{self.name}'")
            return
        fresh = Population(self.size, self.neuron_model, value, self.name, ())  # checks them as the constructor
        self._params, self.encoding = fresh._params, fresh.encoding

    def set_max_atoms_per_core(self, n: int) -> "Population":
        """Neurons per PE (py-spinnaker2's name): the population is cut into ceil(size / n) PEs."""
        old, self.max_atoms_per_core = self.max_atoms_per_core, n
        try:
            self._check()
        except RecipeError:
            self.max_atoms_per_core = old
            raise
        return self

    def _table(self) -> dict:
        """The population's [[populations]] table in a recipe."""
        t = {"name": self.name, "model": self.model, "size": self.size}
        if self.max_atoms_per_core is not None:
            t["max_atoms_per_core"] = self.max_atoms_per_core
        if self.encoding != "analog":
            t["encoding"] = self.encoding
        t.update(self._params)
        return t

    def _check(self):
        try:
            check_table(self._table(), POPULATION_SCHEMA, "")
        except RecipeError as e:
            raise _err_prefix(f"population '{self.name}'", e) from None

    @property
    def recorded_spikes(self) -> bool:
        return "spikes" in self.record and self.model in SPIKING

    @property
    def recorded_voltage(self) -> bool:
        return "v" in self.record

    def get_spikes(self, sample: int = 0, stream: int = 0) -> dict[int, list[int]]:
        """{neuron: [ticks]} of the last run: ticks counted from the start of the sample (frame t leaves the host
        at tick t, a spiking population steps it at tick t + the input's delay). `sample`: which sample of a
        run of several (train runs: training samples first, then the test pass)."""
        if self._spikes is None:
            raise S2EmuError(f"population '{self.name}' has no recorded spikes: "
                             + ("record=('spikes',) and run the network first" if self.model in SPIKING or
                                self.model == "input" else f"a {self.model} population does not spike"))
        rows = self._spikes[(self._spikes[:, 0] == sample) & (self._spikes[:, 1] == stream)]
        out = {j: [] for j in range(self.size)}
        for tick, j in rows[:, 2:]:
            out[int(j)].append(int(tick))
        return out

    def get_voltages(self, sample: int = 0, stream: int = 0) -> dict[int, np.ndarray]:
        """{neuron: v at each of the sample's steps} (float32) of the last run; record=("v",) first."""
        if self._voltages is None:
            raise S2EmuError(f"population '{self.name}' has no recorded voltages: record=('v',) (lif, alif) "
                             f"and run the network first")
        samples, _, v = self._voltages
        sel = v[samples == sample, stream]
        return {j: sel[:, j].copy() for j in range(self.size)}

    def get_voltage_ticks(self, sample: int = 0) -> np.ndarray:
        """The ticks (from the start of the sample) get_voltages' values belong to."""
        if self._voltages is None:
            return self.get_voltages(sample)  # raises
        samples, ticks, _ = self._voltages
        return ticks[samples == sample].copy()

    def __repr__(self):
        return f"Population({self.size}, {self.neuron_model!r}, name={self.name!r})"


def _spike_times(params: dict, size: int, where: str) -> dict[int, list[int]]:
    out = {}
    for neuron, ticks in params.items():
        if isinstance(neuron, bool) or not isinstance(neuron, (int, np.integer)) or not 0 <= neuron < size:
            raise RecipeError(f"{where}: spike_list params map neuron indices 0..{size - 1} to lists of ticks; "
                              f"got key {neuron!r}")
        ticks = list(ticks) if np.ndim(ticks) else [ticks]
        if any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0 for t in ticks):
            raise RecipeError(f"{where}: neuron {neuron}'s spike times must be ticks >= 0, got {ticks}")
        out[int(neuron)] = sorted(set(int(t) for t in ticks))
    return out


def _record(record, where: str, model: str, default: bool) -> tuple[str, ...]:
    if isinstance(record, str):
        record = (record,)
    out = []
    for what in record:
        what = "v" if what == "voltage" else what
        if what not in ("spikes", "v"):
            raise RecipeError(f"{where}: cannot record {what!r} (record 'spikes' and/or 'v')")
        if what == "v" and model not in SPIKING:
            raise RecipeError(f"{where}: only lif and alif populations record voltages ('v'), not {model}")
        if what == "spikes" and model not in SPIKING + ("input",) and not default:
            raise RecipeError(f"{where}: a {model} population has no spikes to record")
        out.append(what)
    return tuple(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------- projections

class Projection:
    """Synapses from `pre` to `post`: an explicit connection list [[i, j, w, delay], ...] (py-spinnaker2's;
    the delay column is optional), a dense `weights` matrix [pre.size, post.size], or neither: the recipe's
    seeded initialisation N(0, init_scale^2 / n_pre) with `connectivity` (DEEP R's fraction kept active).
    Connections missing from a list start at weight 0; a learning rule trains them like the others.
    `delay`: ticks (1 to 64); s2emu has one delay per projection."""

    def __init__(self, pre, post, connections=None, *, weights=None, init_scale=1.0, connectivity=1.0,
                 delay=None):
        for end, what in ((pre, "pre"), (post, "post")):
            if not isinstance(end, Population):
                raise RecipeError(f"Projection {what} must be an snn.Population, got {type(end).__name__}")
        self.pre, self.post = pre, post
        where = f"projection '{self.name}'"
        if connections is not None and weights is not None:
            raise RecipeError(f"{where}: give a connection list or a weight matrix, not both")
        self.weights = None  # FixedWeights, or None for the seeded draw
        if connections is not None:
            matrix, list_delay = _connection_matrix(connections, pre.size, post.size, where)
            if delay is not None and list_delay is not None and delay != list_delay:
                raise RecipeError(f"{where}: delay={delay} but the connection list says {list_delay}")
            delay = delay if delay is not None else list_delay
            self.weights = FixedWeights(matrix, what=where)
        elif weights is not None:
            self.weights = weights if isinstance(weights, FixedWeights) else FixedWeights(weights, what=where)
            if self.weights.shape != (pre.size, post.size):
                raise RecipeError(f"{where}: weights have shape {self.weights.shape}, the populations need "
                                  f"{(pre.size, post.size)} ([pre.size, post.size])")
        self.init_scale, self.connectivity, self.delay = init_scale, connectivity, 1 if delay is None else delay
        try:
            check_table(self._table(), PROJECTION_SCHEMA, "")
        except RecipeError as e:
            raise _err_prefix(where, e) from None
        self._final = None  # weights after the last run or training

    @property
    def name(self) -> str:
        return f"{self.pre.name}->{self.post.name}"

    def _table(self) -> dict:
        t = {"pre": self.pre.name, "post": self.post.name}
        for key, default in (("init_scale", 1.0), ("connectivity", 1.0), ("delay", 1)):
            if getattr(self, key) != default:
                t[key] = getattr(self, key)
        if self.weights is not None:
            t["weights"] = self.weights
        return t

    def get_weights(self) -> np.ndarray:
        """The [pre.size, post.size] weights after the last run or training (as the PEs held them)."""
        if self._final is None:
            raise S2EmuError(f"projection '{self.name}' has not run yet (its initial weights: "
                             f"Network.initial_weights())")
        return self._final.copy()

    def __repr__(self):
        return f"Projection({self.pre.name!r} -> {self.post.name!r})"


def _connection_matrix(connections, n_pre: int, n_post: int, where: str) -> tuple[np.ndarray, int | None]:
    """[[i, j, w(, delay)], ...] as a dense [n_pre, n_post] matrix and the list's one delay (None if absent)."""
    rows = np.asarray(connections, dtype=np.float64) if len(connections) else np.zeros((0, 3))
    if rows.ndim != 2 or rows.shape[1] not in (3, 4):
        raise RecipeError(f"{where}: connections must be rows [pre, post, weight] or [pre, post, weight, "
                          f"delay], got shape {rows.shape}")
    if not np.isfinite(rows).all():
        raise RecipeError(f"{where}: connections hold NaN or infinite values")
    i, j = rows[:, 0], rows[:, 1]
    for idx, n, what in ((i, n_pre, "pre"), (j, n_post, "post")):
        bad = (idx != np.round(idx)) | (idx < 0) | (idx >= n)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise RecipeError(f"{where}: connection {k} names {what} neuron {idx[k]:g}; {what} has 0..{n - 1}")
    i, j = i.astype(np.int64), j.astype(np.int64)
    flat = i * n_post + j
    uniq, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[counts > 1][0])
        raise RecipeError(f"{where}: connection {dup // n_post} -> {dup % n_post} is given twice")
    delay = None
    if rows.shape[1] == 4 and len(rows):
        delays = np.unique(rows[:, 3])
        if len(delays) > 1:
            raise RecipeError(f"{where}: connections have delays {', '.join(f'{d:g}' for d in delays[:5])}; "
                              f"s2emu has one delay per projection (split it into populations, or pick one)")
        if delays[0] != round(delays[0]) or not 1 <= delays[0] <= MAX_DELAY:
            raise RecipeError(f"{where}: delay {delays[0]:g} must be a whole number of ticks, 1 to {MAX_DELAY}")
        delay = int(delays[0])
    matrix = np.zeros((n_pre, n_post), np.float64)
    matrix[i, j] = rows[:, 2]
    return matrix, delay


# ---------------------------------------------------------------------------------------------- learning

_LEARN_DEFAULTS = {k: spec[1] for k, spec in LEARNING_SCHEMA.items()}


class LearningRule:
    """A recipe's [learning] table: `rule` and its options (defaults: the recipe's, LEARNING_SCHEMA)."""
    rule = "none"

    def __init__(self, **options):
        if "blocks" in options:
            options["blocks"] = [[b.name if isinstance(b, Population) else b for b in block]
                                 for block in options["blocks"]]
        self.options = options
        try:
            check_table(self.table(), LEARNING_SCHEMA, "learning")
        except RecipeError as e:
            raise _err_prefix(f"learning rule {type(self).__name__}", e) from None

    def table(self) -> dict:
        return {"rule": self.rule, **self.options}

    @staticmethod
    def from_spec(spec) -> "LearningRule":
        """The rule object of a recipe's LearningSpec, holding every option that differs from the default."""
        options = {k: v for k, v in dataclasses.asdict(spec).items() if k != "rule"}
        options["blocks"] = [list(b) for b in options["blocks"]]
        options = {k: v for k, v in options.items() if v != _LEARN_DEFAULTS[k]}
        rule = RULES[spec.rule].__new__(RULES[spec.rule])
        LearningRule.__init__(rule, **options)
        return rule

    def __eq__(self, other):
        return isinstance(other, LearningRule) and self.table() == other.table()

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


_D = _LEARN_DEFAULTS


class EProp(LearningRule):
    """e-prop (SCIENCE.md seed A): eligibility traces on the PEs, the learning signal from the readout."""
    rule = "eprop"

    def __init__(self, *, feedback=_D["feedback"], signal=_D["signal"], surrogate=_D["surrogate"],
                 eligibility_layout=_D["eligibility_layout"], lr=_D["lr"], lr_decay=_D["lr_decay"],
                 lr_decay_every=_D["lr_decay_every"], beta1=_D["beta1"], beta2=_D["beta2"], eps=_D["eps"],
                 l2=_D["l2"], reg_rate=_D["reg_rate"], target_rate_hz=_D["target_rate_hz"]):
        super().__init__(feedback=feedback, signal=signal, surrogate=surrogate,
                         eligibility_layout=eligibility_layout, lr=lr, lr_decay=lr_decay,
                         lr_decay_every=lr_decay_every, beta1=beta1, beta2=beta2, eps=eps, l2=l2,
                         reg_rate=reg_rate, target_rate_hz=target_rate_hz)


class DeepR(LearningRule):
    """DEEP R (SCIENCE.md seed B) on a layered network with sparse projections (connectivity < 1)."""
    rule = "deepr"

    def __init__(self, *, lr=_D["lr"], lr_decay=_D["lr_decay"], lr_decay_every=_D["lr_decay_every"],
                 l1=_D["l1"], noise=_D["noise"], rewire_every=_D["rewire_every"]):
        super().__init__(lr=lr, lr_decay=lr_decay, lr_decay_every=lr_decay_every, l1=l1, noise=noise,
                         rewire_every=rewire_every)


class BPTT(LearningRule):
    """BPTT (SCIENCE.md seed C): `truncation` steps back (0: the whole sample), `blocks` of hidden layers
    each trained by its own local classifier ([] : end to end)."""
    rule = "bptt"

    def __init__(self, *, truncation=_D["truncation"], blocks=_D["blocks"], surrogate=_D["surrogate"],
                 lr=_D["lr"], lr_decay=_D["lr_decay"], lr_decay_every=_D["lr_decay_every"], beta1=_D["beta1"],
                 beta2=_D["beta2"], eps=_D["eps"], l2=_D["l2"]):
        super().__init__(truncation=truncation, blocks=blocks, surrogate=surrogate, lr=lr, lr_decay=lr_decay,
                         lr_decay_every=lr_decay_every, beta1=beta1, beta2=beta2, eps=eps, l2=l2)


class NoLearning(LearningRule):
    """Weights stay as they start."""
    rule = "none"

    def __init__(self):
        super().__init__()


RULES = {"eprop": EProp, "deepr": DeepR, "bptt": BPTT, "none": NoLearning}


# ---------------------------------------------------------------------------------------------- networks

class Network:
    """Populations, projections, a learning rule and, for training, data: what a recipe describes.

    data: a recipe's [data] table as a dict (e.g. {"kind": "speech_commands", "path": ...}), or arrays:
    (x_train, y_train, x_test, y_test) with x [samples, steps, channels], or s2emu.arrays.ArrayData.
    machine: a recipe's [machine] table (e.g. {"preset": "prototype-64k"}); a chip's `machine=` overrides it.
    epochs, batch: the schedule's defaults (train() overrides them). model: a trained model file (.npz)."""

    def __init__(self, name: str = "network", *, seed: int = 0, description: str = "", data=None,
                 epochs: int = 1, batch: int = 1, machine: dict | None = None, model: str = ""):
        self.name, self.seed, self.description = name, seed, description
        self.epochs, self.batch, self.machine, self.model = epochs, batch, dict(machine or {}), model
        self.populations: list[Population] = []
        self.projections: list[Projection] = []
        self.learning: LearningRule | None = None
        self.data = None
        self.set_data(data)
        self.weights: dict[str, np.ndarray] | None = None  # trained weights (after train); runs start from them
        self.source = ""  # the recipe file it was loaded from

    # -- building

    def add(self, *objects) -> "Network":
        """Add populations, projections and a learning rule (or lists of them); returns the network."""
        for o in objects:
            if isinstance(o, (list, tuple)):
                self.add(*o)
            elif isinstance(o, Population):
                if any(p.name == o.name and p is not o for p in self.populations):
                    raise RecipeError(f"network '{self.name}' already has a population named '{o.name}'")
                if o not in self.populations:
                    self.populations.append(o)
            elif isinstance(o, Projection):
                if any(p.name == o.name and p is not o for p in self.projections):
                    raise RecipeError(f"network '{self.name}' already has a projection {o.name}")
                if o not in self.projections:
                    self.projections.append(o)
            elif isinstance(o, LearningRule):
                self.learning = o
            else:
                raise S2EmuError(f"Network.add takes snn.Population, snn.Projection and learning rules, "
                                 f"not {type(o).__name__}")
        return self

    def set_learning(self, rule: LearningRule | None) -> "Network":
        if rule is not None and not isinstance(rule, LearningRule):
            raise S2EmuError(f"set_learning takes snn.EProp, snn.DeepR, snn.BPTT or None, not {type(rule).__name__}")
        self.learning = rule
        return self

    def set_data(self, data) -> "Network":
        self.data = as_data(data)
        return self

    def __getitem__(self, name: str) -> Population:
        for p in self.populations:
            if p.name == name:
                return p
        raise KeyError(name)

    def projection(self, pre: str, post: str) -> Projection:
        for pr in self.projections:
            if (pr.pre.name, pr.post.name) == (pre, post):
                return pr
        raise KeyError(f"{pre}->{post}")

    @property
    def input(self) -> Population:
        inputs = [p for p in self.populations if p.model == "input"]
        if len(inputs) != 1:
            raise RecipeError(f"network '{self.name}' needs exactly one input population (has {len(inputs)})")
        return inputs[0]

    def reset_weights(self) -> None:
        """Forget trained weights: the next run starts from the initial ones."""
        self.weights = None

    # -- the recipe it is

    def recipe(self, data=None) -> Recipe:
        """The Recipe this network is, parsed and checked as a TOML file's would be. `data` replaces the
        network's own (as_data's forms)."""
        doc = self._doc(as_data(data) if data is not None else self.data)
        try:
            return parse_recipe(doc, source=self.source or f"<network {self.name}>")
        except RecipeError as e:
            raise RecipeError(self._named(str(e))) from None

    def initial_weights(self) -> dict[str, np.ndarray]:
        """The [n_pre, n_post] weights a run starts from when nothing was trained: explicit ones as given
        (float32), the others drawn from the seed as the recipe's."""
        from .network import initial_weights
        r = self.recipe(data=self._placeholder_data())
        return initial_weights(r.network, r.seed)

    def _doc(self, data) -> dict:
        for pr in self.projections:
            for end in (pr.pre, pr.post):
                if end not in self.populations:
                    raise RecipeError(f"projection '{pr.name}': population '{end.name}' is not in network "
                                      f"'{self.name}' (add it)")
        if data is None:
            data = self._spike_list_data()
        doc = {"name": self.name, "description": self.description, "seed": self.seed,
               "machine": dict(self.machine), "data": self._data_table(data),
               "populations": [p._table() for p in self.populations],
               "projections": [pr._table() for pr in self.projections],
               "learning": (self.learning or NoLearning()).table(),
               "schedule": {"epochs": self.epochs, "batch": self.batch},
               "record": self._record_table(bptt=self.learning is not None and self.learning.rule == "bptt")}
        if self.model:
            doc["model"] = self.model
        return doc

    def _record_table(self, bptt: bool) -> dict:
        # populations that record only by py-spinnaker2's default record nothing where nothing records (BPTT)
        keep = [p for p in self.populations if not (bptt and p._record_default)]
        return {"spikes": [p.name for p in keep if p.recorded_spikes],
                "voltage": [p.name for p in keep if p.recorded_voltage]}

    def _data_table(self, data) -> dict:
        if isinstance(data, ArrayData):
            enc = self.input.encoding if any(p.model == "input" for p in self.populations) else "analog"
            return {"kind": "arrays", "arrays": data, "encoding": enc}
        table = {k: v for k, v in data.items() if v is not None}
        if table.get("kind") == "arrays" and "arrays" in table:
            table.pop("path", None)  # the arrays are read: where from no longer matters
        return table

    def _spike_list_data(self) -> ArrayData:
        """A network without data whose input is a spike_list runs its spike times as one sample."""
        inp = next((p for p in self.populations if p.spike_times is not None), None)
        if inp is None:
            raise RecipeError(f"network '{self.name}' has no data: give it some (Network(data=...), "
                              f"set_data, or train(net, data)) or run it with inputs (chip.run(net, T, inputs))")
        steps = 1 + max((t for ts in inp.spike_times.values() for t in ts), default=0)
        return ArrayData(x_test=spike_array(inp.spike_times, steps, inp.size)[None])

    def _placeholder_data(self):
        """Data of the right shape for questions that need none (weights, memory): the network's own if any."""
        if self.data is not None or any(p.spike_times is not None for p in self.populations):
            return self.data
        return ArrayData(x_test=np.zeros((1, 1, self.input.size), np.float32))

    def _named(self, message: str) -> str:
        """A parser's message with `populations[i]` and `projections[i]` replaced by their names."""
        for table, items in (("populations", self.populations), ("projections", self.projections)):
            for i, item in enumerate(items):
                message = message.replace(f"{table}[{i}].", f"{item.name}.").replace(
                    f"'{table}[{i}]'", f"{table[:-1]} '{item.name}'")
        return message

    # -- recipes in and out

    @classmethod
    def from_recipe(cls, recipe) -> "Network":
        """The Network of a recipe: a TOML file, a bundled recipe's name ('smoke'), or a Recipe."""
        r = recipe if isinstance(recipe, Recipe) else load_recipe(str(recipe))
        net = cls(r.name, seed=r.seed, description=r.description, epochs=r.schedule.epochs,
                  batch=r.schedule.batch, machine=machine_table(r.machine), model=r.model)
        net.data = dict(r.data)
        for p in r.network.populations:
            params = dict(p.params)
            if p.model == "input" and p.encoding != "analog":
                params["encoding"] = p.encoding
            record = tuple(what for what, names in (("spikes", r.record_spikes), ("v", r.record_voltage))
                           if p.name in names)
            pop = Population(p.size, p.model, params, p.name, record)
            if p.max_atoms_per_core is not None:
                pop.set_max_atoms_per_core(p.max_atoms_per_core)
            net.add(pop)
        for pr in r.network.projections:
            net.add(Projection(net[pr.pre], net[pr.post], weights=pr.weights, init_scale=pr.init_scale,
                               connectivity=pr.connectivity, delay=pr.delay))
        if r.learning.rule != "none":
            net.learning = LearningRule.from_spec(r.learning)
        net.source = r.source
        return net

    def to_recipe(self, path, comment: str | None = None) -> Path:
        """Write the network as a TOML recipe at `path`, headed by `comment` (lines); explicit weights and
        array data go to <stem>.arrays.npz beside it, which the recipe names. Paths in it are relative to its
        folder. Returns the path written."""
        path = Path(path)
        folder = path.parent
        doc = self._doc(self.data)
        npz = path.with_name(f"{path.stem}.arrays.npz")
        arrays = {}
        for t in doc["projections"]:
            if isinstance(t.get("weights"), FixedWeights):
                arrays[f"W/{t['pre']}->{t['post']}"] = t["weights"].array
                t["weights"] = npz.name
        data = doc["data"]
        if data.get("kind") == "arrays":
            arrays.update(data.pop("arrays").arrays())
            data["path"] = npz.name
        elif data.get("path"):
            data["path"] = _relative(data["path"], folder)
        if doc.get("model"):
            doc["model"] = _relative(doc["model"], folder)
        folder.mkdir(parents=True, exist_ok=True)
        if arrays:
            write_npz(npz, arrays)
        text = toml_text(doc, comment or f"written by s2emu.snn Network.to_recipe from network '{self.name}'")
        write_atomically(path, lambda f: f.write(text.encode("utf-8")))
        return path

    def __repr__(self):
        rule = self.learning.rule if self.learning else "none"
        return (f"Network({self.name!r}: {len(self.populations)} populations, {len(self.projections)} "
                f"projections, learning {rule})")


def as_data(data):
    """None, a [data] table (dict with "kind"), ArrayData, a dict of x_train/y_train/x_test/y_test arrays, or
    the tuple (x_train, y_train, x_test, y_test)."""
    if data is None or isinstance(data, ArrayData):
        return data
    if isinstance(data, dict):
        if "kind" in data:
            return dict(data)
        unknown = set(data) - {"x_train", "y_train", "x_test", "y_test"}
        if unknown:
            raise RecipeError(f"data: a dict is a recipe's [data] table (with 'kind') or arrays x_train, "
                              f"y_train, x_test, y_test; unknown keys {sorted(unknown)}")
        return ArrayData(**data)
    if isinstance(data, (tuple, list)) and len(data) == 4:
        return ArrayData(*data)
    raise RecipeError(f"data: expected a [data] table (dict with 'kind'), arrays (x_train, y_train, x_test, "
                      f"y_test) or ArrayData, got {type(data).__name__}")


def spike_array(spike_times: dict[int, list[int]], steps: int, size: int) -> np.ndarray:
    """{neuron: [ticks]} as a 0/1 float32 array [steps, size]."""
    x = np.zeros((steps, size), np.float32)
    for j, ticks in spike_times.items():
        late = [t for t in ticks if t >= steps]
        if late:
            raise RecipeError(f"input neuron {j} spikes at tick {late[0]}, after the run's {steps} steps")
        x[ticks, j] = 1.0
    return x


def machine_table(m: Machine) -> dict:
    """A recipe's [machine] table for `m`: its preset and the fields that differ from it."""
    base = PRESETS[m.name]
    table = {"preset": m.name}
    for f in dataclasses.fields(Machine):
        if f.name != "name" and getattr(m, f.name) != getattr(base, f.name):
            v = getattr(m, f.name)
            table[f.name] = list(v) if isinstance(v, tuple) else v
    return table


def _relative(p: str, folder: Path) -> str:
    try:
        return os.path.relpath(os.path.abspath(p), os.path.abspath(folder))
    except ValueError:  # another drive
        return os.path.abspath(p)


# ------------------------------------------------------------------------------------------- TOML writer

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        text = repr(float(v))
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):  # a TOML basic string: JSON's escapes, and DEL, which TOML refuses raw
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table ([data.synth]'s counts per engine); keys quoted where TOML needs it
        return "{ " + ", ".join(f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', k) else json.dumps(k)} = {_toml_value(x)}"
                                for k, x in v.items()) + " }"
    raise RecipeError(f"cannot write a {type(v).__name__} into a TOML recipe")


def _defaults_of(table: str, kind: str | None = None) -> dict:
    from .host.datasets import SCHEMAS
    from .recipe import TOP_SCHEMA
    schema = SCHEMAS[kind] if table == "data" else TOP_SCHEMA[table]
    return {k: spec[1] if isinstance(spec, tuple) else _defaults_of_schema(spec) for k, spec in schema.items()}


def _defaults_of_schema(schema: dict) -> dict:
    return {k: spec[1] for k, spec in schema.items() if isinstance(spec, tuple)}


def toml_text(doc: dict, comment: str = "") -> str:
    """A recipe document as TOML: top-level keys, then its tables and arrays of tables. Values equal to the
    schema's default are left out of [data], [learning] and [schedule], except each table's kind or rule."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    for key in ("name", "description", "seed", "model"):
        if key in doc:
            lines.append(f"{key} = {_toml_value(doc[key])}")
    for table, always in (("machine", ("preset",)), ("data", ("kind",)), ("populations", None),
                          ("projections", None), ("learning", ("rule",)), ("schedule", ("epochs", "batch")),
                          ("record", ())):
        value = doc.get(table)
        if value is None:
            continue
        if always is None:
            for item in value:
                lines += ["", f"[[{table}]]"] + [f"{k} = {_toml_value(v)}" for k, v in item.items()]
            continue
        defaults = {} if table in ("machine", "record") else _defaults_of(table, value.get("kind"))
        items = [(k, v) for k, v in value.items()
                 if k in always or k not in defaults or v != defaults[k]]
        items = [(k, v) for k, v in items if not (table == "record" and not v)]
        # [data.synth]: written (even when all its values are defaults) exactly when there is no corpus path,
        # as the loader reads it; beside a path it is not used, and may not be given
        tables = [(k, v) for k, v in value.items() if isinstance(v, dict) and isinstance(defaults.get(k), dict)
                  and table == "data" and value.get("kind") == "speech_commands" and not value.get("path")]
        items = [(k, v) for k, v in items if not (isinstance(v, dict) and k in defaults)]
        if items or table != "record":
            lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in items]
        for k, sub in tables:
            lines += ["", f"[{table}.{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in sub.items()
                                                 if vv != defaults[k].get(kk)]
    return "\n".join(lines) + "\n"


def canonical(recipe: Recipe) -> Recipe:
    """The recipe with what names a file rather than a network made comparable: its source dropped, paths
    made absolute, data arrays kept without the file they came from. Two recipes of the same network (one
    loaded from TOML, one built in Python) are equal after this."""
    def norm(p):
        return os.path.realpath(p) if isinstance(p, str) and p else p
    data = dict(recipe.data)
    if data.get("kind") == "arrays":
        data.pop("path", None)
    elif "path" in data:
        data["path"] = norm(data["path"])
    return dataclasses.replace(recipe, source="", model=norm(recipe.model), data=data)
