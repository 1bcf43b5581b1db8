"""Everything a run needs before it starts: the mapping, the data, the schedule, and one plain-dict
configuration per PE and for the host (plain dicts of numbers and numpy arrays, so they travel to Ray actors).

Building also constructs each PE once at batch 1 to fill its SRAM ledger: a slice that does not fit is
refused here, before any engine starts.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np

from .cores.neurons import NeuronConstants
from .cores.mlp import KIND_ACTS, KIND_CHAIN, KIND_COUNTS, layered_depth
from .cores.bptt_pe import KIND_CHAIN_DONE, KIND_CHAIN_PART, KIND_ERRORS, KIND_SPIKES, bptt_schedule
from .cores.pe import KIND_ERROR, KIND_SYNAPSE
from .cores.roles import make_pe
from .host.base import Plan, make_plan
from .host.datasets import Dataset, load_dataset, placeholder_dataset
from .network import initial_weights, random_feedback
from .errors import RecipeError
from .recipe import Recipe, target_spikes_per_tick
from .router.mapper import Mapping, map_network, partition_name


@dataclass(frozen=True, eq=False)
class Build:
    recipe: Recipe
    mapping: Mapping
    dataset: Dataset
    plan: Plan
    pe_configs: list[dict]
    host_config: dict
    memory: list[dict]  # per PE ledger report at batch 1
    window: int = 1  # ticks per exchange (window_bound); what is sent at t is delivered at t + window

    @property
    def n_ticks(self) -> int:
        """The clock's ticks, and window - 1 more: the last sample's outputs arrive that much later."""
        return self.clock.n_ticks + self.window - 1

    @property
    def clock(self):
        return self.plan.clock(self.dataset.steps, self.host_config["depth"], self.host_config["frames"])

    @property
    def total_bytes(self) -> int:
        return sum(m["total"] for m in self.memory)


def _global_keys(mapping: Mapping, population: str, what: str) -> np.ndarray:
    """Keys of all neurons of a population's partition, in global neuron order."""
    part = partition_name(population, what)
    n_slices = len(mapping.keys.slice_sizes[mapping.keys.partition_id(part)])
    return np.concatenate([mapping.keys.keys(part, s) for s in range(n_slices)]).astype(np.uint32)


def _source_keys(mapping: Mapping, population: str) -> np.ndarray:
    pop = mapping.network[population]
    return _global_keys(mapping, population, "values" if pop.model == "input" else "spikes")


class _KeyMap:
    """What the keys a PE receives mean to it: (kind, which, row) per key, sorted by key (cores/pe.py _lookup)."""

    def __init__(self):
        self.parts = {"keys": [], "kind": [], "proj": [], "row": []}

    def add(self, keys, kind: int, which: int, rows=None):
        keys = np.asarray(keys, np.uint32)
        self.parts["keys"].append(keys)
        self.parts["kind"].append(np.full(len(keys), kind, np.int8))
        self.parts["proj"].append(np.full(len(keys), which, np.int32))
        self.parts["row"].append(np.arange(len(keys), dtype=np.int32) if rows is None else np.asarray(rows, np.int32))

    def table(self) -> dict:
        order = np.argsort(np.concatenate(self.parts["keys"]), kind="stable")
        return {k: np.concatenate(a)[order] for k, a in self.parts.items()}


def window_bound(recipe: Recipe) -> tuple[int, str]:
    """The most ticks the endpoints may advance between exchanges with the results unchanged, and why no more.

    In a window of K ticks, what an endpoint sends is delivered K ticks later, all at once (cores/timing.py).
    That is exact where every packet acts at least K ticks after it is sent: a projection's values act after
    its delay (the delay rings absorb the wait), the end-of-sample learning signal at the neurons' first
    step of the next sample (the input delay later), the label at the readout's first step. So K is the
    smallest delay, where nothing needs an answer in the next tick: not an online learning signal, nor a
    layered network's or split BPTT stack's tick-by-tick schedule."""
    net, lc = recipe.network, recipe.learning
    if net.layered:
        return 1, "a layered network passes its values and sums on every tick (cores/mlp.py)"
    if lc.rule == "bptt":
        return 1, "BPTT's forward and backward schedule exchanges on every tick (cores/bptt_pe.py)"
    if lc.rule != "none" and lc.signal == "online":
        return 1, "the online learning signal acts on the tick after the readout sends it"
    shortest = min(net.projections, key=lambda pr: pr.delay)
    return shortest.delay, f"projection {shortest.name} has delay {shortest.delay}"


def build(recipe: Recipe, *, streams: int | None = None, plan_memory: bool = True,
          weights: dict[str, np.ndarray] | None = None, load_data: bool = True, plan: Plan | None = None,
          window: int | str = 1) -> Build:
    """weights: start from these global matrices (a trained model) instead of the seeded initial ones.
    load_data=False: a placeholder data set of the right shape (for mapping and memory reports).
    window: ticks per exchange, at most window_bound's; "auto" takes that bound."""
    bound, why = window_bound(recipe)
    if window == "auto":
        window = bound
    if type(window) is not int or window < 1:
        raise RecipeError(f"--window must be an int >= 1 or 'auto', got {window!r}")
    if window > bound:
        raise RecipeError(f"--window {window}: this recipe exchanges at least every {bound} tick"
                          f"{'s' if bound > 1 else ''} ({why}); packets sent in a window must not act in it")
    net, lc = recipe.network, recipe.learning
    bptt = lc.rule == "bptt"
    blocks = [list(b) for b in lc.blocks] or [[h.name for h, _, _ in net.spiking_stack()]] if bptt else None
    mapping = map_network(net, recipe.machine, stack_blocks=blocks)
    split_stack = bptt and mapping.n_pes > 1
    dataset = load_dataset(recipe.data, recipe.seed, need_train=recipe.schedule.epochs > 0) if load_data else placeholder_dataset(recipe.data)
    B = streams or recipe.schedule.batch
    if lc.rule == "deepr" and B > 1 and recipe.schedule.epochs > 0:
        raise RecipeError(f"batch {B}: DEEP R trains one sample at a time (batch 1, as on the chip); larger "
                          f"batches are for evaluation only (--epochs 0, or s2emu eval)")
    if plan is None:
        plan = make_plan(len(dataset.y_train), len(dataset.y_test), epochs=recipe.schedule.epochs, batch=B,
                         seed=recipe.seed)
    depth, frames = (layered_depth(mapping.n_pes, len(net.projections)) if net.layered
                     else net.input_delay + net.readout_delay), ()
    if split_stack:
        sch = bptt_schedule(dataset.steps, lc.truncation or dataset.steps, mapping.n_pes - 1,
                            _block_indices(net, blocks), len(net.spiking_stack()))
        depth, frames = sch.ticks - dataset.steps, sch.frames
    clock = plan.clock(dataset.steps, depth, frames).to_dict()
    if net.layered:
        configs = [_layered_config(recipe, mapping, v, B, clock, weights) for v in mapping.vertices]
    elif bptt:
        configs = _bptt_configs(recipe, mapping, B, clock, weights, blocks)
    else:
        configs = _spiking_configs(recipe, mapping, B, clock, weights)
    memory = [make_pe({**c, "streams": 1}).memory() for c in configs] if plan_memory else []
    readout = net.readout
    host_config = {"endpoint": mapping.host, "streams": B, "steps": dataset.steps, "depth": depth, "frames": frames,
                   "plan": {"split": plan.split, "epoch": plan.epoch, "idx": plan.idx},
                   "x_train": dataset.x_train, "y_train": dataset.y_train, "x_test": dataset.x_test,
                   "y_test": dataset.y_test, "input_keys": _source_keys(mapping, net.input.name),
                   "value_keys": _global_keys(mapping, readout.name, "values"),
                   "readout_pe": [v.pe for v in mapping.vertices] if net.layered else mapping.readout_pe(),
                   "input_encoding": net.input.encoding}
    return Build(recipe, mapping, dataset, plan, configs, host_config, memory, window)


def _layered_config(recipe: Recipe, mapping: Mapping, v, B: int, clock: dict, weights) -> dict:
    """PE v of a layered network: its column slice of every layer, the keys it sends, and what the keys it
    receives mean (cores/mlp.py): input and layer values, chained backward sums, rewiring counts."""
    net = recipe.network
    n_pes = mapping.n_pes
    layers = []
    # a model's weights, else the projections given explicit ones; the others draw their own (cores/mlp.py)
    given = weights if weights is not None else {pr.name: pr.weights.array for pr in net.projections
                                                 if pr.weights is not None}
    for pr, (name, lo, hi) in zip(net.projections, v.layers):
        layers.append({"name": pr.name, "pre": pr.pre, "post": pr.post, "n_pre": net[pr.pre].size,
                       "n_post": net[pr.post].size, "lo": lo, "hi": hi, "connectivity": pr.connectivity,
                       "init_scale": pr.init_scale,
                       "weights": np.ascontiguousarray(given[pr.name][:, lo:hi]) if pr.name in given else None})
    km = _KeyMap()
    km.add(_global_keys(mapping, net.input.name, "values"), KIND_ACTS, 0)
    keys = {"values": mapping.keys.keys(partition_name(net.readout.name, "values"), v.pe)}
    if n_pes > 1:
        pops = [ly["post"] for ly in layers]
        keys["acts"] = [mapping.keys.keys(partition_name(p, "acts"), v.pe) for p in pops]
        keys["counts"] = [mapping.keys.keys(partition_name(p, "counts"), v.pe) for p in pops]
        keys["chain"] = {j: mapping.keys.keys(partition_name(layers[j]["pre"], "chain"), v.pe)
                         for j in range(1, len(layers))}
        for i, p in enumerate(pops):
            km.add(_global_keys(mapping, p, "acts"), KIND_ACTS, i + 1)
            km.add(_global_keys(mapping, p, "counts"), KIND_COUNTS, i)
        for j in range(1, len(layers)):  # the partial sums of the PE before, and the finished ones of the last
            part = partition_name(layers[j]["pre"], "chain")
            for src in sorted({v.pe - 1, n_pes - 1} - {-1}):
                km.add(mapping.keys.keys(part, src), KIND_CHAIN, j)
    keymap = km.table()
    first = net.projections[0]
    return {"pe_id": v.pe, "label": f"PE {v.pe} ({v.describe()})", "population": v.population, "lo": v.lo,
            "hi": v.hi, "streams": B, "clock": clock, "learning": asdict(recipe.learning),
            "budget": recipe.machine.pe_budget, "role": "layered", "seed": recipe.seed, "layers": layers,
            "n_pes": n_pes, "pe_index": v.pe, "keys": keys, "keymap": keymap,
            "incoming": [{"name": first.name, "pre": first.pre, "n_pre": net[first.pre].size}],
            "record": {"spikes": False, "voltage": False}}


def _block_indices(net, blocks: list[list[str]]) -> list[list[int]]:
    names = [h.name for h, _, _ in net.spiking_stack()]
    return [[names.index(n) for n in b] for b in blocks]


def _bptt_configs(recipe: Recipe, mapping: Mapping, B: int, clock: dict, weights, blocks: list[list[str]]) -> list[dict]:
    """A BPTT stack: on one PE, every hidden layer, its readout and a local classifier for every block but the
    last (drawn like a projection, from the seed and the block's name); split, a PE per column slice of every
    layer and one for the readouts (cores/bptt_pe.py)."""
    net, lc = recipe.network, recipe.learning
    weights = weights if weights is not None else initial_weights(net, recipe.seed)
    tau_out = net.readout.param("tau_out")
    stack = net.spiking_stack()
    layers = []
    for h, ff, rec in stack:
        params = {k: h.param(k) for k in h.params_for(h.model)}
        layers.append({"name": h.name, "n": h.size,
                       "constants": asdict(NeuronConstants.make(h.model, tau_out=tau_out, **params)),
                       "inputs": [(ff.name, net[ff.pre].size)] + ([(rec.name, h.size)] if rec else []),
                       "recurrent": rec is not None})
    blk_idx = _block_indices(net, blocks)
    out_proj = net.incoming(net.readout.name)[0]
    readouts = []
    for b, blk in enumerate(blk_idx):
        n_last = stack[blk[-1]][0].size
        if b == len(blk_idx) - 1:
            readouts.append(weights[out_proj.name])
        else:
            rng = np.random.default_rng([recipe.seed, zlib.crc32(f"local_readout:{b}".encode())])
            readouts.append((rng.standard_normal((n_last, net.readout.size)) / np.sqrt(n_last)).astype(np.float32))
    n_in = net.input.size
    projections = [pr for _, ff, rec in stack for pr in (ff, rec) if pr is not None]
    common = {"streams": B, "clock": clock, "learning": asdict(lc), "budget": recipe.machine.pe_budget,
              "layers": layers, "blocks": blk_idx, "n_in": n_in, "n_classes": net.readout.size,
              "kappa": NeuronConstants.make("readout", tau_out=tau_out).kappa, "truncation": lc.truncation,
              "readout_projection": out_proj.name, "record": {"spikes": False, "voltage": False},
              "incoming": [{"name": stack[0][1].name, "pre": net.input.name, "n_pre": n_in}]}
    if mapping.n_pes == 1:
        v = mapping.vertices[0]
        km = _KeyMap()
        km.add(_source_keys(mapping, net.input.name), KIND_SYNAPSE, 0)
        return [{**common, "pe_id": 0, "label": f"PE 0 ({v.describe()})", "population": v.population, "lo": 0,
                 "hi": 0, "role": "bptt", "weights": {pr.name: weights[pr.name] for pr in projections},
                 "readouts": readouts, "keymap": km.table(),
                 "out_keys": mapping.keys.keys(partition_name(net.readout.name, "values"), 0)}]
    hidden, ro = mapping.vertices[:-1], mapping.vertices[-1]
    P = len(hidden)
    tops = [stack[blk[-1]][0].name for blk in blk_idx]
    keys = mapping.keys
    has_chain = {ly["name"]: partition_name(ly["name"], "chain") in keys.partition_names for ly in layers}
    configs = []
    for v in hidden:
        slices = [(lo, hi) for _, lo, hi in v.layers]
        km = _KeyMap()
        km.add(_global_keys(mapping, net.input.name, "values"), KIND_SPIKES, 0)
        for i, ly in enumerate(layers):
            name = ly["name"]
            km.add(_global_keys(mapping, name, "spikes"), KIND_SPIKES, i + 1)
            if has_chain[name]:
                part = partition_name(name, "chain")
                if v.pe > 0:
                    km.add(keys.keys(part, v.pe - 1), KIND_CHAIN_PART, i)
                km.add(keys.keys(part, P - 1), KIND_CHAIN_DONE, i)
            if name in tops:
                km.add(keys.keys(partition_name(name, "errors"), v.pe), KIND_ERRORS, i)
        configs.append({**common, "pe_id": v.pe, "label": f"PE {v.pe} ({v.describe()})", "population": v.population,
                        "lo": 0, "hi": 0, "role": "bptt_slice", "n_pes": P, "pe_index": v.pe, "slices": slices,
                        "weights": {pr.name: np.ascontiguousarray(weights[pr.name][:, lo:hi])
                                    for (lo, hi), (h, ff, rec) in zip(slices, stack)
                                    for pr in (ff, rec) if pr is not None},
                        "keys": {"spikes": [keys.keys(partition_name(ly["name"], "spikes"), v.pe) for ly in layers],
                                 "chain": {i: keys.keys(partition_name(ly["name"], "chain"), v.pe)
                                           for i, ly in enumerate(layers) if has_chain[ly["name"]]}},
                        "keymap": km.table()})
    km = _KeyMap()
    for name in tops:
        km.add(_global_keys(mapping, name, "spikes"), KIND_SPIKES, [ly["name"] for ly in layers].index(name) + 1)
    configs.append({**common, "pe_id": ro.pe, "label": f"PE {ro.pe} ({ro.describe()})", "population": ro.population,
                    "lo": ro.lo, "hi": ro.hi, "role": "bptt_readout", "n_pes": P, "readouts": readouts,
                    "keymap": km.table(), "out_keys": keys.keys(partition_name(net.readout.name, "values"), 0),
                    "error_keys": [_global_keys(mapping, name, "errors") for name in tops]})
    return configs


def _spiking_configs(recipe: Recipe, mapping: Mapping, B: int, clock: dict, weights) -> list[dict]:
    net, lc = recipe.network, recipe.learning
    weights = weights if weights is not None else initial_weights(net, recipe.seed)
    feedback = random_feedback(net, recipe.seed) if lc.feedback == "random" else {}
    readout = net.readout
    tau_out = readout.param("tau_out")
    configs = []
    for v in mapping.vertices:
        pop = net[v.population]
        incoming, km = [], _KeyMap()
        for q, pr in enumerate(net.incoming(pop.name)):
            n_pre = net[pr.pre].size
            incoming.append({"name": pr.name, "pre": pr.pre, "n_pre": n_pre,
                             "weights": np.ascontiguousarray(weights[pr.name][:, v.lo:v.hi]),
                             "self_recurrent": pr.pre == pr.post, "delay": pr.delay,
                             "feedback": feedback.get(pr.pre)})
            km.add(_source_keys(mapping, pr.pre), KIND_SYNAPSE, q)
        cfg = {"pe_id": v.pe, "label": f"PE {v.pe} ({v.population}[{v.lo}:{v.hi}])", "population": v.population,
               "lo": v.lo, "hi": v.hi, "streams": B, "clock": clock, "learning": asdict(lc),
               "budget": recipe.machine.pe_budget, "incoming": incoming,
               # the local tick of its first step in a sample (cores/timing.py)
               "offset": net.input_delay + (0 if pop.is_neuron else net.readout_delay),
               "record": {"spikes": v.population in recipe.record_spikes,
                          "voltage": v.population in recipe.record_voltage}}
        if pop.is_neuron:
            params = {k: pop.param(k) for k in pop.params_for(pop.model)}
            cfg.update(role="neuron", constants=asdict(NeuronConstants.make(pop.model, tau_out=tau_out, **params)),
                       out_keys=mapping.keys.keys(partition_name(pop.name, "spikes"), v.slice_index),
                       target_rate=target_spikes_per_tick(lc, recipe.data))
            if lc.rule != "none":
                km.add(mapping.keys.keys(partition_name(pop.name, "errors"), v.slice_index), KIND_ERROR, -1)
        else:
            cfg.update(role="readout", constants={"kappa": NeuronConstants.make("readout", tau_out=tau_out).kappa},
                       out_keys=mapping.keys.keys(partition_name(pop.name, "values"), 0),
                       error_keys=[_global_keys(mapping, pr["pre"], "errors") for pr in incoming])
        cfg["keymap"] = km.table()
        configs.append(cfg)
    return configs
