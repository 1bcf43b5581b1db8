"""One runner executes any recipe: build -> engine -> results (metrics, state_digest, memory, counters)."""

from __future__ import annotations

import hashlib

import numpy as np

from .checkpoint import Checkpointer, check_matches, read_checkpoint
from .chipmodel import chip_model
from .build import Build, build as build_run
from .engines import RawRun, run_engine
from .errors import RoutingError, S2EmuError
from .recipe import Recipe, step_seconds


def assemble_weights(b: Build, raw: RawRun) -> dict[str, np.ndarray]:
    """Global [n_pre, n_post] matrices from the PEs' column slices."""
    out = {}
    for pr in b.recipe.network.projections:
        cols = [raw.weights[v.pe][pr.name] for v in b.mapping.vertices_of(pr.post)]
        out[pr.name] = np.concatenate(cols, axis=1)
    return out


def assemble_spikes(b: Build, raw: RawRun) -> dict[str, np.ndarray]:
    """Per recorded population: int64 [n, 3] rows (tick, stream, neuron), sorted."""
    out = {}
    for name in b.recipe.record_spikes:
        parts = [raw.recordings[v.pe]["spikes"] for v in b.mapping.vertices_of(name)]
        s = np.concatenate(parts, axis=1).T if parts else np.zeros((0, 3), np.int64)
        out[name] = s[np.lexsort((s[:, 2], s[:, 1], s[:, 0]))]
    return out


def assemble_voltage(b: Build, raw: RawRun) -> dict[str, np.ndarray]:
    """Per recorded population: (ticks [n], v [n, B, neurons])."""
    out = {}
    B = b.host_config["streams"]
    for name in b.recipe.record_voltage:
        logs = [raw.recordings[v.pe]["voltage"] for v in b.mapping.vertices_of(name)]
        ticks = logs[0][:, 0].astype(np.int64)
        v = np.concatenate([lg[:, 1:].reshape(len(lg), B, -1) for lg in logs], axis=2).astype(np.float32)
        out[name] = (ticks, v)
    return out


def state_digest(weights: dict[str, np.ndarray], spikes: dict[str, np.ndarray]) -> str:
    """sha256 of the final weights and the recorded spikes, in a canonical, split-independent order."""
    h = hashlib.sha256()
    for name in sorted(weights):
        w = np.ascontiguousarray(weights[name], dtype="<f4")
        h.update(f"W {name} {w.shape}\n".encode())
        h.update(w.tobytes())
    for name in sorted(spikes):
        s = np.ascontiguousarray(spikes[name], dtype="<i8")
        h.update(f"S {name} {s.shape}\n".encode())
        h.update(s.tobytes())
    return h.hexdigest()


def memory_summary(b: Build, items: bool = False) -> dict:
    """total_bytes and per_pe SRAM of a build; items=True adds each PE's ledger entries."""
    per_pe = [{"pe": v.pe, "population": v.population, "slice": v.describe(), "lo": v.lo, "hi": v.hi, "bytes": m["total"],
               "budget": m["budget"], **({"items": m["items"]} if items else {})}
              for v, m in zip(b.mapping.vertices, b.memory)]
    return {"total_bytes": b.total_bytes, "per_pe": per_pe}


SPARSE_STORAGE = ("rows", "cols", "theta", "signs")  # what a DEEP R layer keeps per active connection


def sparse_weight_bytes(b: Build) -> int:
    """SRAM the active connections of a layered network take, over all PEs (cores/deepr.py storage)."""
    return sum(i["bytes"] for m in b.memory for i in m["items"] if i["name"].rsplit(".", 1)[-1] in SPARSE_STORAGE)


def run_chip_model(b: Build, raw: RawRun, assume: dict[str, float] | None = None) -> tuple[list[dict], dict]:
    """A run's PE counters (a row per PE) and the chip model's time and energy for it (s2emu/chipmodel.py)."""
    pe_counters = [{"pe": pe, **c} for pe, c in sorted(raw.pe_counters.items())]
    model = chip_model(pe_counters, raw.router_counters, raw.ticks, int((b.plan.idx >= 0).sum()),
                       streams=b.host_config["streams"], step_seconds=step_seconds(b.recipe.data),
                       wall_seconds=raw.wall_seconds, overrides=assume)
    return pe_counters, model


def run(recipe: Recipe, *, engine: str = "local", address: str | None = None, transport: str = "channels",
        progress=None, allow_drops: bool = False, weights: dict[str, np.ndarray] | None = None,
        checkpoint: str | None = None, checkpoint_every: int | None = None, resume: str | None = None,
        max_restarts: int = 0, log=None, assume: dict[str, float] | None = None, pes_per_process: int = 1,
        window: int | str = 1) -> dict:
    """Run a recipe; returns the JSON-able result (and, under '_arrays', the assembled weights and spikes).

    weights: start from a trained model instead of the seeded initial weights. checkpoint_every: write the
    whole state to `checkpoint` after every so many ticks; resume: continue from a checkpoint file (written by
    the same command line). max_restarts (ray engine): restart from the last checkpoint when a process of the
    emulation dies, at most this many times; log(message) hears of each restart. assume: overrides of the chip
    model's assumptions (s2emu/chipmodel.py). pes_per_process (ray engine): PEs sharing one actor process.
    window: ticks per exchange (s2emu/build.py window_bound; "auto": the most the recipe allows)."""
    b = build_run(recipe, weights=weights, window=window)
    payload = None
    if resume is not None:
        payload = read_checkpoint(resume)
        check_matches(payload, b, resume)
    # checkpoint_every=0 is refused by Checkpointer, not taken as "no checkpoints"
    checkpointer = None
    if checkpoint_every is not None:
        checkpointer = Checkpointer(checkpoint or "s2emu.ckpt", checkpoint_every, b)
    if progress is not None:
        progress.start(b.n_ticks)
    raw = run_engine(engine, b, progress=progress.advance if progress is not None else None, address=address,
                     transport=transport, checkpointer=checkpointer, resume=payload, max_restarts=max_restarts,
                     log=log, pes_per_process=pes_per_process)
    if raw.drop_report and not allow_drops:
        raise RoutingError(raw.drop_report)
    if raw.host_results["missing_outputs"]:
        raise S2EmuError(f"{raw.host_results['missing_outputs']} test samples got no readout output")
    weights, spikes = assemble_weights(b, raw), assemble_spikes(b, raw)
    hr = raw.host_results
    pe_counters, model = run_chip_model(b, raw, assume)
    return {
        "recipe": recipe.name,
        "engine": engine,
        "seed": recipe.seed,
        "pes": b.mapping.n_pes,
        "streams": b.host_config["streams"],
        "epochs": recipe.schedule.epochs,
        "state_digest": state_digest(weights, spikes),
        "accuracy": hr["accuracy"],
        "balanced_accuracy": hr["balanced_accuracy"],
        "chance": hr["chance"],
        "test_loss": hr["test_loss"],
        "n_test": hr["n_test"],
        "train_curve": hr["train_curve"],
        "test_curve": hr["test_curve"],
        "confusion": hr["confusion"],
        "classes": list(b.dataset.classes),
        "ticks": raw.ticks,
        "steps_per_sample": b.dataset.steps,
        "ticks_per_sample": b.clock.ticks_per_sample,
        "window": b.window,
        "resumed_from_tick": raw.resumed_from,
        "checkpoints_written": raw.checkpoints,
        "restarts": raw.restarts,
        "restarted_from_ticks": list(raw.restarted_from),
        "skipped_files": list(b.dataset.skipped),
        "wall_seconds": raw.wall_seconds,
        "ticks_per_second": raw.ticks / raw.wall_seconds if raw.wall_seconds > 0 else None,
        "phases": raw.phases,
        **memory_summary(b),
        "router": raw.router_counters,
        "router_entries": b.mapping.router_entries,
        "chips": len(b.mapping.tables),
        "mesh": [recipe.machine.geometry.width, recipe.machine.geometry.height],
        "wrap": recipe.machine.wrap,
        "dead_links": list(recipe.machine.dead_links),
        "failing_links": list(recipe.machine.failing_links),
        "hops": b.mapping.hops,
        "chip_nodes": raw.chip_nodes,
        "pes_per_process": pes_per_process if engine == "ray" else None,
        "pe_counters": pe_counters,
        "chip_model": model,
        "spike_counts": {k: int(len(v)) for k, v in spikes.items()},
        "_arrays": {"weights": weights, "spikes": spikes, "voltage": assemble_voltage(b, raw),
                    "predictions": np.asarray(hr.get("predictions", []), np.int64)},
    }
