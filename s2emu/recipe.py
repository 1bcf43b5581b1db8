"""Recipes: one TOML file per experiment (machine, network, learning rule, data, schedule, recording).

Loading a recipe never executes code: it is parsed by tomllib and checked against the schema below.
Every key is known, typed and range-checked; a mistake gets one error line naming the key
(and the closest known key, for typos).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from .arrays import FixedWeights, weights_from_file
from .errors import RecipeError
from .host.datasets import check_data_table  # data kinds own their schemas
from .machine import Machine, make_machine
from .network import MAX_DELAY, NEURON_PARAMS, LearningSpec, Network, Population, Projection
from .schema import REQUIRED, _in_range, _non_negative, _one_of, _positive, check_table

MACHINE_SCHEMA = {
    "preset": (str, "spinnaker2", None),
    "chips": (int, None, _positive),
    "width": (int, None, _positive),
    "pes_per_chip": (int, None, _positive),
    "sram_bytes": (int, None, _positive),
    "reserved_bytes": (int, None, _non_negative),
    "router_entries": (int, None, _positive),
    "clock_mhz": (float, None, _positive),
    "wrap": (bool, None, None),  # wrap-around links: a torus of boards
    "dead_links": (list, None, lambda v: None if all(isinstance(x, str) for x in v)
                   else 'must be a list of "CHIP:LINK" strings'),  # wires that are down, e.g. ["4:NE"]
    "failing_links": (list, None, lambda v: None if all(isinstance(x, str) for x in v)
                      else 'must be a list of "CHIP:LINK@TICK" strings'),  # wires that fail mid-run
}

POPULATION_SCHEMA = {
    "name": (str, REQUIRED, lambda v: None if v.isidentifier() else "must be an identifier (letters, digits, _)"),
    "model": (str, REQUIRED, _one_of("input", "lif", "alif", "readout", "relu", "softmax")),
    "size": (int, REQUIRED, _in_range(1, 1 << 16)),
    "max_atoms_per_core": (int, None, _in_range(1, 1 << 16)),
    "encoding": (str, None, _one_of("analog", "spikes")),
    "tau_m": (float, None, _positive),
    "tau_a": (float, None, _positive),
    "v_th": (float, None, _positive),
    "beta": (float, None, _non_negative),
    "tau_out": (float, None, _positive),
}

PROJECTION_SCHEMA = {
    "pre": (str, REQUIRED, None),
    "post": (str, REQUIRED, None),
    "init_scale": (float, 1.0, _non_negative),
    "connectivity": (float, 1.0, lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
    "delay": (int, 1, _in_range(1, MAX_DELAY)),  # ticks (cores/timing.py)
    # explicit initial weights: a .npz with W/<pre>-><post> (s2emu/arrays.py), or the Python API's FixedWeights
    "weights": (object, None, lambda v: None if isinstance(v, (str, FixedWeights)) else 'must be a ".npz" path'),
}

LEARNING_SCHEMA = {
    "rule": (str, "eprop", _one_of("eprop", "deepr", "bptt", "none")),
    "feedback": (str, "symmetric", _one_of("symmetric", "random")),
    "signal": (str, "end_of_sample", _one_of("end_of_sample", "online")),
    "surrogate": (str, "multi_gaussian", _one_of("multi_gaussian", "triangle")),
    "eligibility_layout": (str, "per_synapse", _one_of("per_synapse", "per_source")),
    "lr": (float, 0.01, _positive),
    "lr_decay": (float, 1.0, _in_range(0.0, 1.0)),
    "lr_decay_every": (int, 0, _non_negative),
    "beta1": (float, 0.9, _in_range(0.0, 0.999999)),
    "beta2": (float, 0.999, _in_range(0.0, 0.999999999)),
    "eps": (float, 1e-5, _positive),
    "l2": (float, 0.0, _non_negative),
    "reg_rate": (float, 0.0, _non_negative),  # e-prop: firing-rate regularization c_reg; 0 = off
    "target_rate_hz": (float, 10.0, _non_negative),  # e-prop: its target rate (Hz; target_spikes_per_tick)
    "l1": (float, 1e-5, _non_negative),
    "noise": (float, 3e-4, _non_negative),
    "rewire_every": (int, 10, _positive),
    "truncation": (int, 0, _non_negative),  # BPTT: gradients flow back at most this many steps; 0 = the whole sample
    "blocks": (list, [], None),  # BPTT: local blocks, lists of hidden population names; [] = one block (end to end)
}

SCHEDULE_SCHEMA = {
    "epochs": (int, 1, _in_range(0, 100000)),
    "batch": (int, 1, _in_range(1, 4096)),
}

RECORD_SCHEMA = {
    "spikes": (list, [], None),
    "voltage": (list, [], None),
}

TOP_SCHEMA = {
    "name": (str, REQUIRED, None),
    "description": (str, "", None),
    "seed": (int, 0, _in_range(0, 2**32 - 1)),
    "model": (str, "", None),  # a trained model (.npz) that eval and stream use; relative to the recipe's folder
    "machine": MACHINE_SCHEMA,
    "data": None,  # checked against the schema of the data kind it names (host/datasets.py)
    "populations": [POPULATION_SCHEMA],
    "projections": [PROJECTION_SCHEMA],
    "learning": LEARNING_SCHEMA,
    "schedule": SCHEDULE_SCHEMA,
    "record": RECORD_SCHEMA,
}




@dataclass(frozen=True)
class Schedule:
    epochs: int
    batch: int


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    seed: int
    machine: Machine
    network: Network
    learning: LearningSpec
    schedule: Schedule
    data: dict
    record_spikes: tuple[str, ...] = ()
    record_voltage: tuple[str, ...] = ()
    source: str = ""
    model: str = ""  # path of the recipe's trained model, "" if none

    def with_overrides(self, *, seed=None, pes=None, epochs=None, batch=None, data=None,
                       machine=None, skip_bad=None, chips=None, pes_per_chip=None, wrap=None,
                       dead_links=None, failing_links=None) -> "Recipe":
        """Apply command-line overrides. --pes N splits every neuron population over N PEs; --data points a
        corpus-based data set at another folder or archive; --machine swaps the machine preset; --chips and
        --pes-per-chip reshape it (a network needing more PEs than a chip has spans chips); --wrap joins the
        mesh into a torus, --dead-link takes wires down, --link-fails takes one down at a tick."""
        r = self
        from .errors import MachineError
        if machine is not None:
            try:
                r = replace(r, machine=make_machine(machine))
            except MachineError as e:
                raise RecipeError(f"--machine: {e}") from None
        if any(v is not None for v in (chips, pes_per_chip, wrap, dead_links, failing_links)):
            shape = {"chips": chips, "width": 0} if chips is not None else {}
            if pes_per_chip is not None:
                shape["pes_per_chip"] = pes_per_chip
            if wrap is not None:
                shape["wrap"] = bool(wrap)
            if dead_links is not None:
                shape["dead_links"] = tuple(dead_links)
            if failing_links is not None:
                shape["failing_links"] = tuple(failing_links)
            try:
                r = replace(r, machine=replace(r.machine, **shape).validate())
            except MachineError as e:
                raise RecipeError(f"--chips/--pes-per-chip/--wrap/--dead-link/--link-fails: {e}") from None
        if data is not None:
            if "path" not in r.data:
                raise RecipeError(f"--data applies to recipes that read a corpus; data kind '{r.data['kind']}' "
                                  f"is generated in code")
            r = replace(r, data={**r.data, "path": str(data)})
        if skip_bad:
            if "skip_bad" not in r.data:
                raise RecipeError(f"--skip-bad applies to recipes that read a folder of audio clips, not to data "
                                  f"kind '{r.data['kind']}'")
            r = replace(r, data={**r.data, "skip_bad": True})
        if seed is not None:
            r = replace(r, seed=seed)
        if pes is not None:
            if pes < 1:
                raise RecipeError(f"--pes must be >= 1, got {pes}")
            r = replace(r, network=r.network.split_over(pes))
        if epochs is not None or batch is not None:
            if (epochs is not None and epochs < 0) or (batch is not None and batch < 1):
                raise RecipeError("--epochs must be >= 0 and --batch >= 1")
            r = replace(r, schedule=Schedule(epochs if epochs is not None else r.schedule.epochs,
                                             batch if batch is not None else r.schedule.batch))
        return r


def builtin_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("s2emu.recipes").iterdir() if p.name.endswith(".toml"))


def resolve_recipe_path(spec: str) -> Path | Any:
    """A path to a TOML file, or the name of a bundled recipe ('smoke' or 'smoke.toml')."""
    p = Path(spec)
    if p.is_file():
        return p
    name = p.name[:-5] if p.name.endswith(".toml") else p.name
    bundled = resources.files("s2emu.recipes") / f"{name}.toml"
    if bundled.is_file():
        return bundled
    raise RecipeError(f"no recipe file '{spec}' (bundled recipes: {', '.join(builtin_recipes())})")


def load_recipe(spec: str) -> Recipe:
    path = resolve_recipe_path(spec)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{spec}: not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{spec}: cannot read: {e}") from None
    try:
        return parse_recipe(doc, source=str(spec), base_dir=Path(str(path)).parent)
    except RecipeError as e:
        raise RecipeError(f"{spec}: {e}") from None


DEFAULT_TICK_SECONDS = 1e-3  # a tick of data with no physical step: 1 ms, the step of Bellec et al.'s and NEST's e-prop


def step_seconds(data: dict) -> float | None:
    """The physical time of one step of the data, where it has one (audio features: the hop)."""
    if data.get("kind") == "speech_commands":
        return data["hop"] / data["sample_rate"]
    return None


def target_spikes_per_tick(learning: LearningSpec, data: dict) -> float:
    """The firing-rate regularization's target, learning.target_rate_hz, in spikes per tick: one tick is one step
    of the data (step_seconds: keyword spotting's hop, about 10 ms), or 1 ms where the data has no physical
    time."""
    return learning.target_rate_hz * (step_seconds(data) or DEFAULT_TICK_SECONDS)


def check_rate_regularization(learning: LearningSpec, data: dict) -> None:
    """reg_rate is e-prop's (the other rules' PEs have no use for it), and a target a neuron can reach: a spike
    per tick at most."""
    if learning.reg_rate > 0 and learning.rule != "eprop":
        raise RecipeError(f"'learning.reg_rate' (firing-rate regularization) applies to e-prop only, not to rule "
                          f"{learning.rule!r}; leave it at 0")
    target = target_spikes_per_tick(learning, data) if learning.rule == "eprop" else 0.0
    if target > 1:
        ticks_per_second = learning.target_rate_hz / target
        raise RecipeError(f"'learning.target_rate_hz' {learning.target_rate_hz:g} Hz is {target:.3g} spikes per tick "
                          f"of {1000 / ticks_per_second:.3g} ms; a neuron fires at most once a tick "
                          f"({ticks_per_second:.4g} Hz)")


def check_blocks(network: Network, blocks) -> None:
    """BPTT's local blocks: consecutive runs of the stack's hidden layers that together cover it, in order."""
    hidden = [h.name for h, _, _ in network.spiking_stack()]
    if not blocks:
        return
    flat = [name for b in blocks for name in b]
    if any(not isinstance(b, (list, tuple)) or not b for b in blocks) or flat != hidden:
        raise RecipeError(f"'learning.blocks' must cut the hidden layers {hidden} into consecutive non-empty "
                          f"lists, in order (e.g. {[[h] for h in hidden]}), got {[list(b) for b in blocks]}")


def parse_recipe(doc: dict, source: str = "", base_dir: Path | None = None) -> Recipe:
    d = check_table(doc, TOP_SCHEMA, "")
    m = {k: v for k, v in d["machine"].items() if v is not None and k != "preset"}
    from .errors import MachineError
    try:
        machine = make_machine(d["machine"]["preset"], **m)
    except MachineError as e:
        raise RecipeError(f"[machine]: {e}") from None
    pops = []
    for i, p in enumerate(d["populations"]):
        params = {k: p[k] for k in NEURON_PARAMS if p[k] is not None}
        allowed = Population.params_for(p["model"])
        for k in params:
            if k not in allowed:
                raise RecipeError(f"'populations[{i}].{k}' has no meaning for model '{p['model']}'"
                                  f" (it takes: {', '.join(allowed) or 'no parameters'})")
        if p["encoding"] is not None and p["model"] != "input":
            raise RecipeError(f"'populations[{i}].encoding' applies to the input population only")
        pops.append(Population(p["name"], p["model"], p["size"], params, p["max_atoms_per_core"],
                               p["encoding"] or "analog"))
    projs = [Projection(p["pre"], p["post"], p["init_scale"], p["connectivity"], p["delay"],
                        weights_from_file(p["weights"], f"{p['pre']}->{p['post']}", base_dir,
                                          f"'projections[{i}].weights'") if isinstance(p["weights"], str)
                        else p["weights"]) for i, p in enumerate(d["projections"])]
    network = Network(tuple(pops), tuple(projs))  # validates names and shapes
    learning = LearningSpec(**{k: (tuple(tuple(b) for b in v) if k == "blocks" else v)
                               for k, v in d["learning"].items()})
    if learning.rule == "eprop":
        network.check_eprop()
    if learning.rule == "bptt":
        check_blocks(network, learning.blocks)
        delayed = [pr.name for pr in network.projections if pr.delay != 1]
        if delayed:
            raise RecipeError(f"BPTT runs its stack with delay 1 on every projection (its backward schedule, "
                              f"cores/bptt_pe.py, is built on it); delayed: {', '.join(delayed)}")
    if network.layered != (learning.rule in ("deepr",)) and learning.rule != "none":
        raise RecipeError(f"'learning.rule' {learning.rule!r} does not train a "
                          f"{'layered (relu/softmax)' if network.layered else 'spiking'} network "
                          f"(e-prop trains spiking networks, DEEP R layered ones)")
    if learning.rule == "deepr" and d["schedule"]["batch"] != 1:
        raise RecipeError(f"'schedule.batch' must be 1 for DEEP R (online SGD, one sample at a time, as on "
                          f"the chip), got {d['schedule']['batch']}")
    data = check_data_table(d["data"], network, base_dir)
    check_rate_regularization(learning, data)
    for kind in ("spikes", "voltage"):
        for name in d["record"][kind]:
            if not isinstance(name, str) or name not in network.names:
                raise RecipeError(f"'record.{kind}' names unknown population {name!r}"
                                  f" (populations: {', '.join(network.names)})")
            # only the e-prop neuron PEs keep recordings (cores/pe.py); elsewhere the run would find none
            if not network[name].is_neuron or learning.rule == "bptt":
                raise RecipeError(f"'record.{kind}': population {name!r} records nothing: only lif and alif "
                                  f"populations outside a BPTT stack record spikes and voltages")
    return Recipe(
        name=d["name"], description=d["description"], seed=d["seed"], machine=machine, network=network,
        learning=learning, schedule=Schedule(**d["schedule"]), data=data,
        record_spikes=tuple(d["record"]["spikes"]), record_voltage=tuple(d["record"]["voltage"]), source=source,
        model=str(Path(base_dir) / d["model"]) if d["model"] and base_dir is not None else d["model"],
    )
