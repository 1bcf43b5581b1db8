"""s2emu.nir: networks to and from NIR, the Neuromorphic Intermediate Representation (the `nir` package's
HDF5 files). Optional extra: pip install 's2emu[nir]' (nir, h5py).

    net = s2emu.nir.from_nir("model.nir", dt=1e-3)       # an snn.Network (no data: give it some, or run it)
    graph = s2emu.nir.to_nir(net, dt=1e-3)               # a nir.NIRGraph; write("model.nir", net) saves one

What maps exactly. An Input is the input population (spikes or analog values: NIR does not say; `input_encoding`,
default spikes). Linear, and Affine with a zero bias, are projections (NIR weights are [post, pre], s2emu's
[pre, post]); chains of Linear, Scale and Flatten between two populations fold into one matrix; a path from a
population back to itself is a recurrent projection. LIF is s2emu's lif: NIR's tau dv/dt = (v_leak - v) + R I,
stepped by dt, is v <- alpha v + (1 - alpha) R I with alpha = exp(-dt / tau) (integrator "exp", the chip's
discretisation) or 1 - dt / tau (integrator "euler", forward Euler, as snnTorch and Norse step it); s2emu's
tau_m = -1 / ln(alpha), R goes into the incoming weights, and per-neuron thresholds are scaled into them too
(the spikes are the same; the recorded voltages are those of the scaled neurons). LI is the readout
(kappa = exp(-dt / tau), incoming weights times R (1 - kappa)). A Delay of d steps on a projection between
spiking populations is its delay 1 + d (every hop of the chip takes a tick, cores/timing.py).

What is approximated, with a warning (NIRApproximationWarning). NIR's LIF resets to v_reset after a spike;
s2emu's neurons subtract the threshold (the same when v barely crosses it). NIR's edges act within a step;
on the chip each hop takes a tick, so a spiking layer fed by another spiking layer sees its input a tick
later than in the graph. A Delay on the input's or the readout's projections shifts the whole sample (the
sample clock absorbs those delays). A delay that is not a whole number of steps is rounded. A graph whose
output is a spiking layer gets a readout (identity weights) so the chip can run it.

What is refused, in one line naming the node and why: Affine with a bias (no bias currents), CubaLIF and
CubaLI (no synaptic current filter), IF and I (no leak-free neurons), Threshold, convolutions and pooling,
a leak voltage, per-neuron time constants, more than one input or readout.

ALIF has no NIR node: it is exported as a LIF (what other tools see: a plain LIF, without adaptation) with
node metadata {"s2emu": <the population's recipe table as JSON>}, and every population and projection
carries such metadata, with the graph's (name, seed, learning rule, schedule, recording, dt). from_nir reads
them back where they agree with the node's own parameters, so recipe -> NIR -> s2emu is the same network, to
the bit. Initial weights are exported as they are (the seeded draw, or trained weights); where a projection's
weights are exactly its seeded draw, import restores the seeded form.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from . import snn
from .errors import S2EmuError
from .network import DEFAULTS

META = "s2emu"  # metadata key: the recipe table of a population, projection or network, as JSON
POPULATION_NODES = ("Input", "LIF", "LI")
PATH_NODES = ("Linear", "Affine", "Scale", "Flatten", "Delay")
REFUSED = {
    "CubaLIF": "a current-based synapse (tau_syn), which s2emu's neurons do not have",
    "CubaLI": "a current-based synapse (tau_syn), which s2emu's readout does not have",
    "IF": "no leak; s2emu's neurons are leaky (lif, alif)",
    "I": "a leak-free integrator; s2emu's readout is leaky (LI)",
    "Threshold": "a stateless threshold; s2emu's spiking neurons are LIF",
    "Conv1d": "a convolution; s2emu's projections are dense matrices",
    "Conv2d": "a convolution; s2emu's projections are dense matrices",
    "SumPool2d": "pooling; s2emu's projections are dense matrices",
    "AvgPool2d": "pooling; s2emu's projections are dense matrices",
}


class NIRError(S2EmuError):
    """A NIR graph (or a network) that s2emu cannot translate: one line naming the node and why."""


class NIRApproximationWarning(UserWarning):
    """A NIR node translated with an approximation (the message says which and how)."""


def _nir():
    try:
        import nir
    except ImportError:
        raise S2EmuError("NIR needs the nir and h5py packages: pip install 's2emu[nir]'") from None
    return nir


def _approx(message: str) -> None:
    warnings.warn(message, NIRApproximationWarning, stacklevel=3)


def _meta(node) -> dict | None:
    raw = (getattr(node, "metadata", None) or {}).get(META)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf8")
    if isinstance(raw, np.ndarray):
        raw = raw.item()
        raw = raw.decode("utf8") if isinstance(raw, bytes) else raw
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# ------------------------------------------------------------------------------------------------ export

def to_nir(net: snn.Network, dt: float = 1e-3, weights: dict[str, np.ndarray] | None = None):
    """The network as a nir.NIRGraph, one tick = dt seconds. weights: {projection: [n_pre, n_post]} to
    export (default: the network's trained weights, else its initial ones)."""
    nir = _nir()
    if not dt > 0:
        raise NIRError(f"dt must be > 0 seconds, got {dt!r}")
    recipe = net.recipe(net._placeholder_data())
    if recipe.network.layered:
        raise NIRError(f"network '{net.name}' is layered (relu, softmax): NIR has no ReLU or softmax node")
    if weights is None:
        weights = net.weights if net.weights is not None else net.initial_weights()
    seeded = _seeded_weights(recipe)
    from .cores.neurons import NeuronConstants

    nodes, edges = {}, []
    out = recipe.network.readout
    for p in recipe.network.populations:
        table = next(q for q in net.populations if q.name == p.name)._table()
        meta = {META: json.dumps(table)}
        n = p.size
        if p.model == "input":
            nodes[p.name] = nir.Input(input_type={"input": np.array([n])}, metadata=meta)
        elif p.is_neuron:
            nodes[p.name] = nir.LIF(tau=np.full(n, p.param("tau_m") * dt), r=np.ones(n), v_leak=np.zeros(n),
                                    v_threshold=np.full(n, p.param("v_th")), v_reset=np.zeros(n),
                                    metadata={**meta, "reset": "subtract"})
        else:  # readout: LI with R (1 - kappa) = 1, so NIR's v is the chip's y
            kappa = NeuronConstants.make("readout", tau_out=p.param("tau_out")).kappa
            nodes[p.name] = nir.LI(tau=np.full(n, p.param("tau_out") * dt), r=np.full(n, 1.0 / (1.0 - kappa)),
                                   v_leak=np.zeros(n), metadata=meta)
    nodes["output"] = nir.Output(output_type={"output": np.array([out.size])})
    edges.append((out.name, "output"))
    for pr in recipe.network.projections:
        w = np.asarray(weights[pr.name], np.float32)
        table = {"init_scale": pr.init_scale, "delay": pr.delay,
                 "seeded": bool(pr.weights is None and np.array_equal(w, seeded[pr.name]))}
        nodes[pr.name] = nir.Linear(weight=np.ascontiguousarray(w.T), metadata={META: json.dumps(table)})
        src = pr.pre
        if pr.delay > 1:  # the first tick is the hop itself
            nodes[f"{pr.name}.delay"] = nir.Delay(delay=np.full(net[pr.pre].size, (pr.delay - 1) * dt))
            edges.append((pr.pre, f"{pr.name}.delay"))
            src = f"{pr.name}.delay"
        edges += [(src, pr.name), (pr.name, pr.post)]
    graph_meta = {"name": recipe.name, "description": recipe.description, "seed": recipe.seed, "dt": dt,
                  "learning": (net.learning or snn.NoLearning()).table(),
                  "record": {"spikes": list(recipe.record_spikes), "voltage": list(recipe.record_voltage)},
                  "machine": snn.machine_table(recipe.machine), "model": recipe.model,
                  # NIR files keep nodes in name order; s2emu's order fixes each PE's summation order
                  "populations": [p.name for p in recipe.network.populations],
                  "projections": [pr.name for pr in recipe.network.projections],
                  "schedule": {"epochs": recipe.schedule.epochs, "batch": recipe.schedule.batch}}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={META: json.dumps(graph_meta, sort_keys=True)})


def write(path, net: snn.Network, dt: float = 1e-3, weights=None) -> Path:
    """to_nir, saved as an HDF5 .nir file."""
    nir = _nir()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, to_nir(net, dt, weights))
    return path


def _seeded_weights(recipe) -> dict[str, np.ndarray]:
    """Every projection's seeded draw, explicit weights or not."""
    import dataclasses

    from .network import initial_weights
    net = recipe.network
    drawn = dataclasses.replace(net, projections=tuple(dataclasses.replace(pr, weights=None) for pr in net.projections))
    return initial_weights(drawn, recipe.seed)


# ------------------------------------------------------------------------------------------------ import

def from_nir(graph, dt: float = 1e-3, *, input_encoding: str | None = None, integrator: str = "exp",
             name: str | None = None) -> snn.Network:
    """An snn.Network from a nir.NIRGraph or a .nir file; one step of the graph = one tick = dt seconds.
    input_encoding: "spikes" or "analog" (default: what an s2emu export says, else spikes). integrator:
    "exp" (exponential Euler, the chip's) or "euler" (forward Euler, as snnTorch and Norse step LIF).
    The network has no data: run it with inputs, or give it data to train on. `net.outputs` lists the
    populations the graph's Output nodes read."""
    nir = _nir()
    if isinstance(graph, (str, Path)):
        path = Path(graph)
        if not path.is_file():
            raise NIRError(f"no NIR file '{path}'")
        try:
            graph = nir.read(path)
        except Exception as e:  # noqa: BLE001 - h5py and nir raise many kinds; say which file
            raise NIRError(f"{path}: not a readable NIR file ({type(e).__name__}: {e})") from None
    if not dt > 0:
        raise NIRError(f"dt must be > 0 seconds, got {dt!r}")
    if integrator not in ("exp", "euler"):
        raise NIRError(f"integrator must be 'exp' or 'euler', got {integrator!r}")
    return _Importer(graph, dt, input_encoding, integrator, name).network()


class _Importer:
    def __init__(self, graph, dt, input_encoding, integrator, name):
        self.dt, self.integrator, self.encoding = dt, integrator, input_encoding
        self.meta = _meta(graph) or {}
        self.name = name or self.meta.get("name") or "nir_network"
        self.nodes, self.edges = _flatten(graph)
        self.scale = {}  # population node -> per-neuron factor on its incoming weights

    # -- the graph's populations and the paths between them

    def network(self) -> snn.Network:
        kinds = {k: type(n).__name__ for k, n in self.nodes.items()}
        for k, kind in kinds.items():
            if kind in REFUSED:
                raise NIRError(f"node '{k}' ({kind}): {REFUSED[kind]}")
            if kind not in POPULATION_NODES + PATH_NODES + ("Output",):
                raise NIRError(f"node '{k}' ({kind}): s2emu has no counterpart")
        inputs = [k for k, kind in kinds.items() if kind == "Input"]
        if len(inputs) != 1:
            raise NIRError(f"the graph has {len(inputs)} Input nodes ({', '.join(inputs) or 'none'}); an s2emu "
                           f"network has one input population")
        self.succ = {k: [] for k in self.nodes}
        for a, b in self.edges:
            self.succ[a].append(b)
        pops = {k: self._population(k, kinds[k]) for k in self.nodes if kinds[k] in POPULATION_NODES}
        readouts = [k for k in pops if kinds[k] == "LI"]
        if len(readouts) > 1:
            raise NIRError(f"LI nodes {', '.join(readouts)}: an s2emu network has one readout")
        paths = {}
        for src in pops:
            for dst, matrix, delay, via in self._paths(src):
                if kinds.get(dst) == "Input":
                    raise NIRError(f"node '{dst}' (Input) receives an edge (from '{src}')")
                key = (src, dst)
                if key in paths:
                    if paths[key][1] != delay:
                        raise NIRError(f"nodes '{src}' -> '{dst}': two paths with different delays; s2emu has one "
                                       f"delay per projection")
                    paths[key] = (paths[key][0] + matrix, delay, paths[key][2] + via)
                else:
                    paths[key] = (matrix, delay, via)
        outputs = sorted({src for (src, dst) in paths if dst == "__output__"})
        proj_paths = {k: v for k, v in paths.items() if k[1] != "__output__"}
        net = snn.Network(self.name, seed=int(self.meta.get("seed", 0)),
                          description=self.meta.get("description", f"imported from NIR ({len(self.nodes)} nodes)"),
                          machine=self.meta.get("machine"), model=self.meta.get("model", ""))
        sched = self.meta.get("schedule")
        if sched:
            net.epochs, net.batch = int(sched["epochs"]), int(sched["batch"])
        for k in self._order(pops, kinds):
            net.add(pops[k])
        if not readouts and (not outputs or any(kinds[o] != "LIF" for o in outputs) or len(outputs) != 1):
            raise NIRError(f"the graph has no LI node and its output is {', '.join(outputs) or 'nothing'}; "
                           f"s2emu needs one readout (an LI node, or one spiking layer read by an Output)")
        rank = {p.name: i for i, p in enumerate(net.populations)}
        want = {name: i for i, name in enumerate(self.meta.get("projections", []))}
        order = sorted(proj_paths, key=lambda k: (want.get(f"{pops[k[0]].name}->{pops[k[1]].name}", -1),
                                                  rank[pops[k[1]].name], rank[pops[k[0]].name]))
        for src, dst in order:
            net.add(self._projection(pops[src], pops[dst], kinds, *proj_paths[(src, dst)]))
        if not readouts:
            lif = pops[outputs[0]]
            ro = snn.Population(lif.size, "readout", name=_free_name(f"{lif.name}_readout",
                                                                    {p.name for p in pops.values()}))
            net.add(ro, snn.Projection(lif, ro, weights=np.eye(lif.size)))
            _approx(f"node '{outputs[0]}' (LIF) is the graph's output: added readout '{ro.name}' (identity "
                    f"weights, tau_out 10 ticks) so the chip can run it; its spikes are "
                    f"net['{lif.name}'].get_spikes()")
        record = self.meta.get("record")
        if record:  # an s2emu export: what its recipe recorded
            for pop in net.populations:
                pop.record = tuple(w for w, key in (("spikes", "spikes"), ("v", "voltage")) if pop.name in record[key])
                pop._record_default = False
        learning = self.meta.get("learning")
        if learning and learning.get("rule", "none") != "none":
            rule = dict(learning)
            net.learning = snn.LearningRule.__new__(snn.RULES[rule.pop("rule")])
            snn.LearningRule.__init__(net.learning, **rule)
        net.outputs = [pops[o] for o in outputs if o in pops]
        self._restore_seeded(net)
        return net

    def _order(self, pops, kinds) -> list[str]:
        """Population nodes in the exporter's order if it said, else as a walk from the input meets them, the
        readout last."""
        named = {pop.name: k for k, pop in pops.items()}
        if all(n in named for n in self.meta.get("populations", [])) and self.meta.get("populations"):
            return [named[n] for n in self.meta["populations"]]
        seen, frontier = [], [k for k in pops if kinds[k] == "Input"]
        while frontier:
            seen += [k for k in frontier if k not in seen]
            nxt = []
            for k in frontier:
                nxt += [d for d, *_ in self._paths(k) if d in pops and d not in seen and d not in nxt]
            frontier = nxt
        seen += [k for k in pops if k not in seen]
        return sorted(seen, key=lambda k: kinds[k] == "LI")

    def _paths(self, src):
        """(destination population or "__output__", matrix [n_dst, n_src], delay in ticks, node names) of every
        path from population `src` through path nodes."""
        n0 = self._size(src)
        stack = [(b, np.eye(n0), 0, (b,)) for b in self.succ[src]]
        while stack:
            node, m, delay, via = stack.pop()
            kind = type(self.nodes[node]).__name__
            if kind in POPULATION_NODES:
                yield node, m, delay, list(via[:-1])
                continue
            if kind == "Output":
                yield "__output__", m, delay, list(via[:-1])
                continue
            m, delay = self._through(node, kind, m, delay)
            for b in self.succ[node]:
                if b in via:
                    raise NIRError(f"node '{b}': a cycle of {', '.join(via)} without a neuron in it")
                stack.append((b, m, delay, via + (b,)))

    def _through(self, name, kind, m, delay):
        node = self.nodes[name]
        if kind in ("Linear", "Affine"):
            w = np.asarray(node.weight, np.float64)
            if w.ndim != 2:
                raise NIRError(f"node '{name}' ({kind}): weight of shape {w.shape}; s2emu takes [post, pre] matrices")
            if kind == "Affine" and np.any(np.asarray(node.bias) != 0):
                raise NIRError(f"node '{name}' (Affine): a nonzero bias; s2emu's neurons take no bias current "
                               f"(export the layer without bias)")
            if w.shape[1] != m.shape[0]:
                raise NIRError(f"node '{name}' ({kind}): takes {w.shape[1]} inputs, gets {m.shape[0]}")
            return w @ m, delay
        if kind == "Scale":
            s = np.asarray(node.scale, np.float64).reshape(-1)
            if len(s) != m.shape[0]:
                raise NIRError(f"node '{name}' (Scale): {len(s)} factors for {m.shape[0]} values")
            return s[:, None] * m, delay
        if kind == "Flatten":
            return m, delay
        d = np.asarray(node.delay, np.float64).reshape(-1) / self.dt  # Delay
        if d.size and not np.all(d == d[0]):
            raise NIRError(f"node '{name}' (Delay): per-neuron delays; s2emu has one delay per projection")
        steps = float(d[0]) if d.size else 0.0
        if abs(steps - round(steps)) > 1e-6:
            _approx(f"node '{name}' (Delay): {steps:g} steps of dt rounded to {round(steps)}")
        return m, delay + int(round(steps))

    def _size(self, name) -> int:
        node = self.nodes[name]
        shape = node.output_type.get("output") if node.output_type else None
        if shape is None:
            shape = node.input_type.get("input")
        return int(np.prod(np.asarray(shape))) if shape is not None else 0

    # -- populations

    def _alpha(self, tau: float) -> float:
        return math.exp(-self.dt / tau) if self.integrator == "exp" else 1.0 - self.dt / tau

    def _uniform(self, name, kind, what, values) -> float:
        v = np.asarray(values, np.float64).reshape(-1)
        if not np.all(v == v[0]):
            raise NIRError(f"node '{name}' ({kind}): per-neuron {what}; s2emu has one {what} per population")
        return float(v[0])

    def _population(self, name, kind) -> snn.Population:
        node, meta = self.nodes[name], _meta(self.nodes[name])
        pyname = name if name.isidentifier() else _identifier(name)
        if kind == "Input":
            size = self._size(name)
            # an s2emu export names a spike input's encoding; a foreign graph's input is spikes unless told
            enc = self.encoding or (meta.get("encoding", "analog") if meta else "spikes")
            if enc not in ("spikes", "analog"):
                raise NIRError(f"input_encoding must be 'spikes' or 'analog', got {enc!r}")
            return snn.Population(size, "input", {"encoding": "spikes"} if enc == "spikes" else {}, pyname, ())
        if np.any(np.asarray(node.v_leak) != 0):
            raise NIRError(f"node '{name}' ({kind}): a leak voltage v_leak; s2emu's neurons rest at 0")
        tau = self._uniform(name, kind, "time constant tau", node.tau)
        alpha = self._alpha(tau)
        if not 0 < alpha < 1:
            raise NIRError(f"node '{name}' ({kind}): tau = {tau:g} s and dt = {self.dt:g} s give a decay of "
                           f"{alpha:g} per step; it must be in (0, 1) (a smaller dt)")
        ticks = -1.0 / math.log(alpha)
        r = np.asarray(node.r, np.float64).reshape(-1)
        size = len(r)
        if kind == "LI":
            params = {"tau_out": ticks}
            if meta and meta.get("model") == "readout" and _close(meta.get("tau_out", DEFAULTS["tau_out"]), ticks) \
                    and np.allclose(r * (1 - alpha), 1.0, rtol=1e-6):
                params = {k: meta[k] for k in ("tau_out",) if k in meta}  # an s2emu readout: exactly as saved
                factor = np.ones(size)
            else:
                factor = r * (1 - alpha)
            self.scale[name] = factor
            return snn.Population(size, "readout", params, pyname, ())
        v_th = np.asarray(node.v_threshold, np.float64).reshape(-1)
        if np.any(v_th <= 0):
            raise NIRError(f"node '{name}' (LIF): a threshold <= 0")
        own = meta if meta and meta.get("model") in ("lif", "alif") else None
        if own and _close(own.get("tau_m", DEFAULTS["tau_m"]), ticks) and np.all(v_th == own.get("v_th", DEFAULTS["v_th"])) \
                and np.all(r == 1) and str((node.metadata or {}).get("reset", b"")).find("subtract") >= 0:
            params = {k: v for k, v in own.items() if k in ("tau_m", "tau_a", "v_th", "beta")}
            pop = snn.Population(size, own["model"], params, pyname)
            self.scale[name] = np.ones(size)
        else:
            common = float(v_th[0]) if np.all(v_th == v_th[0]) else float(np.max(v_th))
            # a neuron of threshold t fed W fires as one of threshold c fed W c / t (reset by subtraction too)
            self.scale[name] = r * (common / v_th)
            pop = snn.Population(size, "lif", {"tau_m": ticks, "v_th": common}, pyname)
            _approx(f"node '{name}' (LIF): resets to v_reset after a spike; s2emu's neurons subtract the "
                    f"threshold instead (the same when v barely crosses it)")
        if own and own.get("max_atoms_per_core"):
            pop.set_max_atoms_per_core(own["max_atoms_per_core"])
        return pop

    def _projection(self, pre, post, kinds, matrix, delay, via) -> snn.Projection:
        w = (matrix * self.scale[self._node_of(post)][:, None]).T  # [n_pre, n_post]
        meta = next((_meta(self.nodes[v]) for v in via if type(self.nodes[v]).__name__ in ("Linear", "Affine")
                     and _meta(self.nodes[v]) is not None), None)
        src_kind, dst_kind = kinds[self._node_of(pre)], kinds[self._node_of(post)]
        if dst_kind == "LI" and src_kind == "Input":
            raise NIRError(f"node '{self._node_of(post)}' (LI) reads the input directly; s2emu's readout reads "
                           f"spiking populations")
        ticks = 1 + delay
        if meta and "delay" in meta and meta["delay"] == ticks:
            ticks = meta["delay"]
        elif delay and (src_kind == "Input" or dst_kind == "LI"):
            _approx(f"projection {pre.name}->{post.name}: a Delay on the input's or the readout's projection "
                    f"shifts the whole sample on the chip (its sample clock absorbs it)")
        if src_kind == "LIF" and dst_kind == "LIF" and pre is not post and not meta:
            _approx(f"projection {pre.name}->{post.name}: NIR's edges act within a step; on the chip the hop "
                    f"takes a tick, so '{post.name}' sees '{pre.name}' one step later than in the graph")
        proj = snn.Projection(pre, post, weights=w, delay=ticks)
        proj._nir_seeded = bool(meta and meta.get("seeded"))
        proj._nir_init_scale = (meta or {}).get("init_scale", 1.0)
        return proj

    def _node_of(self, pop) -> str:
        return next(k for k in self.nodes if (k if k.isidentifier() else _identifier(k)) == pop.name)

    def _restore_seeded(self, net) -> None:
        """Projections whose weights are exactly their seeded draw go back to the seeded form (the recipe's)."""
        marked = [pr for pr in net.projections if getattr(pr, "_nir_seeded", False)]
        if not marked:
            return
        for pr in marked:
            pr.init_scale = pr._nir_init_scale
        try:
            seeded = _seeded_weights(net.recipe(net._placeholder_data()))
        except S2EmuError:
            return
        for pr in marked:
            if pr.weights is not None and np.array_equal(pr.weights.array, seeded[pr.name]):
                pr.weights = None


def _flatten(graph) -> tuple[dict, list]:
    """Nodes and edges with nested NIRGraphs inlined (their nodes named "outer.inner") and the inner graphs'
    own Input and Output nodes bypassed."""
    nodes, edges = {}, []
    inner_in, inner_out = {}, {}
    for name, node in graph.nodes.items():
        if type(node).__name__ == "NIRGraph":
            sub_nodes, sub_edges = _flatten(node)
            ins = [k for k, n in node.nodes.items() if type(n).__name__ == "Input"]
            outs = [k for k, n in node.nodes.items() if type(n).__name__ == "Output"]
            if len(ins) != 1 or len(outs) != 1:
                raise NIRError(f"node '{name}' (NIRGraph): a subgraph needs one Input and one Output")
            for k, n in sub_nodes.items():
                nodes[f"{name}.{k}"] = n
            edges += [(f"{name}.{a}", f"{name}.{b}") for a, b in sub_edges]
            inner_in[name], inner_out[name] = f"{name}.{ins[0]}", f"{name}.{outs[0]}"
        else:
            nodes[name] = node
    for a, b in graph.edges:
        edges.append((inner_out.get(a, a), inner_in.get(b, b)))
    bypass = set(inner_in.values()) | set(inner_out.values())
    for k in bypass:  # an inner Input or Output passes its values on: join its edges
        ins = [a for a, b in edges if b == k]
        outs = [b for a, b in edges if a == k]
        edges = [(a, b) for a, b in edges if k not in (a, b)] + [(a, b) for a in ins for b in outs]
        del nodes[k]
    return nodes, edges


def _identifier(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else f"n_{out}"


def _free_name(want: str, taken) -> str:
    name, i = want, 1
    while name in taken:
        i += 1
        name = f"{want}{i}"
    return name


# ------------------------------------------------------------------------------------------ command line

def add_parsers(sub) -> None:
    """`s2emu import-nir` and `s2emu export-nir` (s2emu/cli.py adds them)."""
    sp = sub.add_parser("import-nir", help="a NIR file (from snnTorch, Norse, ...) as an s2emu recipe")
    sp.add_argument("file", help="the .nir file")
    sp.add_argument("--out", metavar="RECIPE.toml", help="where the recipe goes (default: beside the file)")
    sp.add_argument("--dt", type=float, default=1e-3, help="seconds per step of the graph = per tick (default 1e-3)")
    sp.add_argument("--input", choices=["spikes", "analog"], help="what the input carries (default: spikes)")
    sp.add_argument("--integrator", choices=["exp", "euler"], default="exp",
                    help="how the graph's LIF was stepped: exp (exponential Euler, default) or euler (snnTorch, Norse)")
    sp.add_argument("--steps", type=int, default=100, help="steps of the placeholder sample in its [data] (default 100)")
    sp.add_argument("--json", action="store_true")
    sp = sub.add_parser("export-nir", help="a recipe's network (and a trained model) as a NIR file")
    sp.add_argument("recipe", help="recipe TOML file, or the name of a bundled recipe")
    sp.add_argument("--model", metavar="FILE.npz", help="trained weights to export (default: initial weights)")
    sp.add_argument("--out", metavar="FILE.nir", required=True)
    sp.add_argument("--dt", type=float, default=None, help="seconds per tick (default: the data's step, else 1e-3)")
    sp.add_argument("--json", action="store_true")


def cmd_import_nir(args) -> dict:
    from .arrays import ArrayData

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NIRApproximationWarning)
        net = from_nir(args.file, dt=args.dt, input_encoding=args.input, integrator=args.integrator)
    notes = [str(w.message) for w in caught if issubclass(w.category, NIRApproximationWarning)]
    if net.data is None:  # a recipe needs data: one silent sample to run until the user gives theirs
        net.set_data(ArrayData(x_test=np.zeros((1, args.steps, net.input.size), np.float32)))
        net.epochs, net.batch = 0, 1
        net.description += f"; [data] is a placeholder: one silent sample of {args.steps} steps"
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".toml")
    net.to_recipe(out)
    return {"recipe": str(out), "populations": [p.name for p in net.populations],
            "projections": [pr.name for pr in net.projections], "approximations": notes}


def cmd_export_nir(args) -> dict:
    from .model import load_model
    from .recipe import load_recipe
    from .recipe import step_seconds

    recipe = load_recipe(args.recipe)
    net = snn.Network.from_recipe(recipe)
    weights = load_model(args.model, recipe.network)[0] if args.model else None
    dt = args.dt or step_seconds(recipe.data) or 1e-3
    path = write(args.out, net, dt=dt, weights=weights)
    return {"nir": str(path), "dt": dt, "nodes": len(to_nir(net, dt, weights).nodes)}
