"""s2emu.hardware: the emulated chip, shaped after py-spinnaker2's `hardware.SpiNNaker2Chip`.

    chip = hardware.SpiNNaker2Chip(engine="local")          # or engine="ray": one process per PE
    chip.run(net, timesteps=100, inputs=x)                  # a plain run; pop.get_spikes(), pop.get_voltages()
    chip.train(net, data, epochs=5, batch=8)                # the dict `s2emu run --json` prints
    chip.evaluate(net)                                      # the dict `s2emu eval --json` prints
    chip.memory(net), chip.map(net)                         # what `s2emu memory` / `s2emu map` print as JSON

Every method turns the network into its Recipe (s2emu.snn) and calls what the command line calls: the runner
(s2emu/runner.py) and the report functions of s2emu/cli.py. So a network that does not fit its PEs is refused
while it is built, before any engine starts, naming the PE and its largest arrays, as `s2emu run` refuses it.
A run that raises (or is interrupted) changes nothing on the network and leaves no process behind (the ray
engine stops its actors, and the Ray it started); the next run starts afresh.
"""

from __future__ import annotations

import warnings

import numpy as np

from .arrays import ArrayData
from .engines import ENGINES, TRANSPORTS
from .errors import RecipeError, S2EmuError
from .progress import ProgressBar, err_console
from .snn import Network, Population, _spike_times, spike_array


class SpiNNaker2Chip:
    """The emulated SpiNNaker 2 machine a network runs on.

    engine: "local" (one process) or "ray" (an actor process per PE; `address` joins a Ray cluster,
    `pes_per_process` puts that many PEs in one process, `transport` picks the per-tick exchange).
    machine: a preset ("spinnaker2", "prototype-64k") replacing the network's; chips, pes_per_chip reshape it.
    window: ticks per exchange ("auto": the most the network allows). progress: a rich progress bar (it
    renders in Jupyter too). eth_ip: py-spinnaker2's board address, accepted and ignored (nothing to reach)."""

    def __init__(self, eth_ip=None, *, engine: str = "local", machine: str | None = None, chips: int | None = None,
                 pes_per_chip: int | None = None, pes_per_process: int = 1, address: str | None = None,
                 transport: str = "channels", window: int | str = 1, progress: bool = True,
                 allow_drops: bool = False, max_restarts: int = 0):
        if engine not in ENGINES:
            raise S2EmuError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
        if transport not in TRANSPORTS:
            raise S2EmuError(f"unknown transport {transport!r} (known: {', '.join(TRANSPORTS)})")
        if engine != "ray":
            for name, given in (("address", address is not None), ("transport", transport != "channels"),
                                ("pes_per_process", pes_per_process != 1), ("max_restarts", max_restarts != 0)):
                if given:
                    raise S2EmuError(f"{name} needs engine='ray'")
        if eth_ip is not None:
            warnings.warn("eth_ip: s2emu emulates the chip; there is no board to reach", stacklevel=2)
        self.engine, self.machine, self.chips, self.pes_per_chip = engine, machine, chips, pes_per_chip
        self.pes_per_process, self.address, self.transport, self.window = pes_per_process, address, transport, window
        self.progress, self.allow_drops, self.max_restarts = progress, allow_drops, max_restarts

    # -- the four things a chip does

    def run(self, net: Network, timesteps: int, inputs=None, **py_spinnaker2) -> dict:
        """A plain run (no learning) of `timesteps` input frames. inputs: values [timesteps, channels] for an
        analog input ([samples, timesteps, channels] runs several samples one after another), spike times
        {neuron: [ticks]} for a spike input, or None for a spike_list population's own spike times.
        Afterwards pop.get_spikes() and pop.get_voltages() hold what the recorded populations did and
        proj.get_weights() the weights. Starts from the network's trained weights, if it has some.
        Returns the dict `s2emu run --json` prints. py-spinnaker2's quantize_weights, sys_tick_in_s and debug
        are accepted and have no effect (weights stay float32; a tick is a step, not a wall-clock time)."""
        unknown = set(py_spinnaker2) - {"quantize_weights", "sys_tick_in_s", "debug"}
        if unknown:
            raise TypeError(f"run() got unexpected keyword arguments {sorted(unknown)}")
        if py_spinnaker2:
            warnings.warn(f"run({', '.join(sorted(py_spinnaker2))}=...): no effect on the emulator", stacklevel=2)
        steps = _steps(timesteps)
        inp = net.input
        x = run_inputs(inp, steps, inputs)
        recipe = self.recipe(net, ArrayData(x_test=x), epochs=0, batch=1)
        result = self._run(recipe, net.weights, f"{net.name}: run")
        self._collect(net, result, inputs=x)
        return _public(result)

    def train(self, net: Network, data=None, *, epochs: int | None = None, batch: int | None = None,
              seed: int | None = None) -> dict:
        """Train with the network's learning rule on `data` (the network's own if None; see snn.as_data), then
        test; the network keeps the trained weights (net.weights: later runs start from them, and so does a
        second train, with fresh optimizer state). epochs, batch, seed: as `s2emu run --epochs --batch
        --seed`. Returns the dict `s2emu run --json` prints."""
        if net.learning is None or net.learning.rule == "none":
            raise S2EmuError(f"network '{net.name}' has no learning rule: add one (snn.EProp(), snn.DeepR(), "
                             f"snn.BPTT())")
        recipe = self.recipe(net, data, epochs=epochs, batch=batch, seed=seed)
        result = self._run(recipe, net.weights, f"{net.name}: train")
        net.weights = result["_arrays"]["weights"]
        self._collect(net, result)
        return _public(result)

    def evaluate(self, net: Network, data=None, *, model: str | None = None, split: str | None = None,
                 batch: int = 64) -> dict:
        """Test without learning, as `s2emu eval`: the weights of `model` (a .npz), else the network's trained
        ones, else the model its recipe names, else its initial weights. split: a corpus's test, validation,
        train or all clips. Returns the dict `s2emu eval --json` prints."""
        from .cli import eval_recipe, eval_report
        from .model import load_model

        recipe = eval_recipe(self.recipe(net, data), split, batch)
        path, weights, meta = None, None, {}
        if model is not None or (net.weights is None and net.model):
            path = model if model is not None else net.model
            weights, meta = load_model(path, recipe.network)
        elif net.weights is not None:
            weights = net.weights
        result = self._run(recipe, weights, f"{net.name}: evaluate")
        self._collect(net, result)
        return eval_report(result, recipe, path, meta)

    def memory(self, net: Network) -> dict:
        """SRAM per PE, what `s2emu memory --json` prints. Nothing runs (and no data is read)."""
        from .cli import memory_report
        return memory_report(self.recipe(net, net._placeholder_data()))[0]

    def map(self, net: Network) -> dict:
        """Placement, keys and routing tables, what `s2emu map --json` prints."""
        from .cli import map_report
        return map_report(self.recipe(net, net._placeholder_data()))[0]

    # -- the recipe a network is on this chip

    def recipe(self, net: Network, data=None, *, epochs=None, batch=None, seed=None):
        """The network's Recipe with this chip's machine and the given overrides (as the CLI's flags)."""
        if not isinstance(net, Network):
            raise S2EmuError(f"expected an snn.Network, got {type(net).__name__}")
        return net.recipe(data).with_overrides(machine=self.machine, chips=self.chips,
                                               pes_per_chip=self.pes_per_chip, epochs=epochs, batch=batch,
                                               seed=seed)

    def _run(self, recipe, weights, label: str) -> dict:
        from .runner import run

        progress = ProgressBar(f"{label} on {self.engine}", enabled=self.progress)
        try:
            return run(recipe, engine=self.engine, address=self.address, transport=self.transport,
                       pes_per_process=self.pes_per_process, window=self.window, progress=progress,
                       allow_drops=self.allow_drops, weights=weights, max_restarts=self.max_restarts,
                       log=lambda m: err_console.print(f"[yellow]{m}[/]"))
        finally:
            progress.stop()

    @staticmethod
    def _collect(net: Network, result: dict, inputs: np.ndarray | None = None) -> None:
        """Hand the run's recordings and final weights to the populations and projections (only once the run
        has succeeded: a failed one leaves the network as it was)."""
        S = result["ticks_per_sample"]
        arrays = result["_arrays"]
        for pop in net.populations:
            pop._spikes = pop._voltages = None
            if pop.name in arrays["spikes"]:
                s = arrays["spikes"][pop.name]  # rows (tick, stream, neuron)
                pop._spikes = np.stack([s[:, 0] // S, s[:, 1], s[:, 0] % S, s[:, 2]], axis=1)
            elif pop.model == "input" and "spikes" in pop.record and inputs is not None \
                    and pop.encoding == "spikes":
                sample, t, j = np.nonzero(inputs)  # the host sends frame t at the sample's tick t
                pop._spikes = np.stack([sample, np.zeros_like(t), t, j], axis=1).astype(np.int64)
            if pop.name in arrays["voltage"]:
                ticks, v = arrays["voltage"][pop.name]
                pop._voltages = (ticks // S, ticks % S, v)
        for pr in net.projections:
            pr._final = arrays["weights"][pr.name]


def _public(result: dict) -> dict:
    from .cli import _jsonable
    return _jsonable(result)


def _steps(timesteps) -> int:
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise S2EmuError(f"timesteps must be an int >= 1, got {timesteps!r}")
    return int(timesteps)


def run_inputs(pop: Population, steps: int, inputs) -> np.ndarray:
    """A plain run's inputs as [samples, steps, channels] float32 (see SpiNNaker2Chip.run)."""
    where = f"population '{pop.name}'"
    if inputs is None:
        if pop.spike_times is None:
            raise S2EmuError(f"{where} needs inputs: run(net, timesteps, inputs=...) with values "
                             f"[timesteps, {pop.size}] (or make it a spike_list population)")
        return spike_array(pop.spike_times, steps, pop.size)[None]
    if isinstance(inputs, dict):
        if pop.encoding != "spikes":
            raise S2EmuError(f"{where} takes analog values [timesteps, {pop.size}]; spike times are for a "
                             f"spike_list population (or params={{'encoding': 'spikes'}})")
        try:
            return spike_array(_spike_times(inputs, pop.size, where), steps, pop.size)[None]
        except RecipeError as e:
            raise S2EmuError(f"{where}: {e}") from None
    try:
        x = np.array(inputs, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise S2EmuError(f"{where}: inputs are not an array of numbers ({e})") from None
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (steps, pop.size) or len(x) == 0:
        raise S2EmuError(f"{where}: inputs must be [timesteps, channels] = [{steps}, {pop.size}] (or [samples, "
                         f"{steps}, {pop.size}]), got shape {np.shape(inputs)}")
    if not np.isfinite(x).all():
        raise S2EmuError(f"{where}: inputs hold NaN or infinite values")
    if pop.encoding == "spikes" and not np.isin(x, (0.0, 1.0)).all():
        raise S2EmuError(f"{where} takes spikes: inputs must be 0 or 1 per tick and channel")
    return x
