"""The s2emu command line: info, run, eval, stream, memory, map, sweep, scale.

Every command's --json prints one JSON object on stdout; logs and progress go to stderr.
Errors caused by input are printed as one line (`error: ...`) with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from rich.console import Console
from rich.table import Table

from . import __version__
from .engines import ENGINES, TRANSPORTS
from .errors import OutputError, S2EmuError
from .host.download import add_parsers as add_data_parsers, cmd_data  # s2emu data speech-commands
from .detect import add_live_audio_options, add_parsers as add_detect_parsers, cmd_detect, cmd_longform
from .progress import ProgressBar, err_console

out_console = Console()


def npz_name(path) -> Path:
    """Where numpy saves an .npz given `path`: it adds ".npz" to a name without it."""
    return Path(path if str(path).endswith(".npz") else f"{path}.npz")


def save_recordings(path: str, arrays: dict) -> Path:
    """One .npz: W/<pre->post> [n_pre, n_post]; spikes/<pop> rows (tick, stream, neuron);
    voltage/<pop> [ticks, streams, neurons] with voltage_ticks/<pop>. Written atomically; returns its path."""
    from .atomic import write_atomically

    out = {f"W/{k}": v for k, v in arrays["weights"].items()}
    out.update({f"spikes/{k}": v for k, v in arrays["spikes"].items()})
    for k, (ticks, v) in arrays["voltage"].items():
        out[f"voltage/{k}"], out[f"voltage_ticks/{k}"] = v, ticks
    return write_atomically(npz_name(path), lambda f: np.savez_compressed(f, **out))


def _jsonable(obj):
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _load(args, corpus: bool = False):
    """The recipe with the command line's overrides. corpus: a command that reads the recipe's data gets its
    [data.synth] corpus as a path, synthesized first if it is not in the cache yet (with a progress bar)."""
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    recipe = recipe.with_overrides(seed=getattr(args, "seed", None), pes=getattr(args, "pes", None),
                                 epochs=getattr(args, "epochs", None), batch=getattr(args, "batch", None),
                                 data=getattr(args, "data", None), machine=getattr(args, "machine", None),
                                 skip_bad=getattr(args, "skip_bad", None), chips=getattr(args, "chips", None),
                                 pes_per_chip=getattr(args, "pes_per_chip", None),
                                 wrap=getattr(args, "wrap", None) or None, dead_links=getattr(args, "dead_link", None),
                                 failing_links=getattr(args, "link_fails", None))
    if corpus and recipe.data.get("kind") == "speech_commands" and not recipe.data["path"]:
        import dataclasses

        from .host.datasets import corpus_path
        path = corpus_path(recipe.data, progress=not getattr(args, "quiet", False))
        recipe = dataclasses.replace(recipe, data={**recipe.data, "path": path})
    return recipe


def _warn_skipped(result: dict, quiet: bool) -> None:
    bad = result.get("skipped_files") or []
    if bad and not quiet:
        err_console.print(f"[yellow]skipped {len(bad)} unreadable file(s) (--skip-bad):[/]")
        for line in bad[:10]:
            err_console.print(f"  {line}", soft_wrap=True)
        if len(bad) > 10:
            err_console.print(f"  ... and {len(bad) - 10} more (all of them under skipped_files in --json)")


def _model_weights(recipe, path):
    """Weights of the model at `path` (or None for the recipe's seeded initial weights)."""
    if not path:
        return None, {}
    from .model import load_model
    return load_model(path, recipe.network)


def _trained_model(recipe, path):
    """eval and stream need a model: --model, else the one the recipe names. (path, weights, meta)"""
    path = path or recipe.model
    if not path:
        raise S2EmuError(f"recipe {recipe.name} names no trained model: pass --model PATH")
    return (path, *_model_weights(recipe, path))


def _save_outputs(recipe, result, out_dir, quiet) -> dict:
    """model.npz, results.json and the figures of a run in out_dir; returns their paths."""
    from pathlib import Path

    from . import plots
    from .atomic import write_atomically
    from .model import save_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"recipe": recipe.name, "classes": result.get("classes"), "data": {k: v for k, v in recipe.data.items()
            if k != "path"}, "state_digest": result["state_digest"], "accuracy": result["accuracy"],
            "balanced_accuracy": result["balanced_accuracy"], "epochs": recipe.schedule.epochs, "seed": recipe.seed,
            "s2emu": __version__}
    files = {"model": str(out / "model.npz"), "results": str(out / "results.json")}
    save_model(files["model"], result["_arrays"]["weights"], meta)
    text = (json.dumps(_jsonable(result), default=_json_default, indent=1) + "\n").encode()
    write_atomically(files["results"], lambda f: f.write(text))
    if plots.available():
        files["figures"] = plots.write_run_figures(result, recipe, out)
    elif not quiet:
        err_console.print("no figures: matplotlib is not installed (pip install -e '.[plots]')")
    return files


def cmd_info(args) -> dict:
    import numpy
    import ray

    from .machine import PRESETS
    from .recipe import builtin_recipes

    info = {"s2emu": __version__, "python": sys.version.split()[0], "numpy": numpy.__version__,
            "ray": ray.__version__, "machines": {k: m.to_dict() for k, m in PRESETS.items()},
            "recipes": builtin_recipes(), "engines": list(ENGINES)}
    if not args.json:
        out_console.print(f"[bold]s2emu {__version__}[/] - SpiNNaker 2 emulator (python {info['python']}, "
                          f"numpy {info['numpy']}, ray {info['ray']})")
        t = Table("machine preset", "chips", "PEs/chip", "SRAM/PE", "router entries", "clock MHz")
        for k, m in PRESETS.items():
            t.add_row(k, str(m.chips), str(m.pes_per_chip), f"{m.sram_bytes // 1024} KB", str(m.router_entries),
                      f"{m.clock_mhz:g}")
        out_console.print(t)
        out_console.print(f"bundled recipes: {', '.join(info['recipes'])}   engines: local, ray")
    return info


def cmd_run(args) -> dict:
    from .checkpoint import check_writable
    from .chipmodel import parse_assumptions
    from .runner import run

    recipe = _load(args, corpus=True)
    if args.checkpoint and args.checkpoint_every is None:
        raise S2EmuError("--checkpoint needs --checkpoint-every TICKS (how often to write one)")
    out_dir = None if args.out == "-" else Path(args.out or f"runs/{recipe.name}")
    ckpt = args.checkpoint or (str(out_dir / "checkpoint.s2ckpt") if out_dir else f"{recipe.name}.s2ckpt")
    # a place that cannot be written fails now, not after the run (a full disk shows only when written)
    if out_dir is not None:
        check_writable(out_dir / "model.npz", "--out", shown=out_dir)
    if args.save:
        check_writable(npz_name(args.save), "--save")
    if args.checkpoint_every:
        check_writable(ckpt, "--checkpoint")
    weights, _ = _model_weights(recipe, args.model)
    progress = ProgressBar(f"{recipe.name} on {args.engine}", enabled=not args.quiet)
    if not args.quiet:
        err_console.print(f"[bold]{recipe.name}[/]: {recipe.description}")
    try:
        result = run(recipe, engine=args.engine, address=args.address, transport=args.transport,
                     pes_per_process=args.pes_per_process, window=args.window,
                     progress=progress, allow_drops=args.allow_drops, weights=weights,
                     checkpoint=ckpt, checkpoint_every=args.checkpoint_every, resume=args.resume,
                     max_restarts=args.max_restarts, log=lambda m: err_console.print(f"[yellow]{m}[/]"),
                     assume=parse_assumptions(args.assume))
    finally:
        progress.stop()
    _warn_skipped(result, args.quiet)
    unsaved = _save_run(recipe, result, out_dir, args.save, args.quiet)
    if not args.json:
        t = Table(title=f"{recipe.name}: {result['pes']} PEs, engine {args.engine}, seed {recipe.seed}")
        t.add_column("metric")
        t.add_column("value", justify="right")
        t.add_row("test accuracy", f"{result['accuracy']:.3f}  (chance {result['chance']:.3f})")
        t.add_row("balanced accuracy", f"{result['balanced_accuracy']:.3f}")
        t.add_row("test samples", str(result["n_test"]))
        if result["train_curve"]:
            curve = " ".join(f"{p['accuracy']:.2f}" for p in result["train_curve"])
            t.add_row("train accuracy per epoch", curve)
        t.add_row("ticks", f"{result['ticks']:,} in {result['wall_seconds']:.1f} s "
                           f"({result['ticks_per_second']:.0f} ticks/s)")
        t.add_row("SRAM (all PEs, batch 1)", f"{result['total_bytes']:,} B")
        t.add_row("packets routed / dropped", f"{result['router']['routed']:,} / {result['router']['dropped']}")
        cm = result["chip_model"]
        t.add_row("chip model (docs/chip-model.md)",
                  f"{cm['seconds_per_tick_peak'] * 1e6:,.0f} us per tick at peak (PE {cm['bottleneck_pe']}), "
                  f"{'keeps' if cm['real_time'] else 'misses'} the {cm['tick_seconds'] * 1e3:g} ms step; "
                  f"{cm['energy_per_sample_joules'] * 1e3:.3g} mJ per sample")
        t.add_row("state_digest", result["state_digest"][:32] + "...")
        out_console.print(t)
    if unsaved:  # after the table and (in main) the JSON: the run's results are shown either way
        raise OutputError(unsaved, result)
    return result


def _save_run(recipe, result, out_dir, save, quiet) -> str | None:
    """Write the run's outputs (--out folder, --save file). Where that fails (disk full, gone read-only), what
    failed is written to a new folder in the system's temporary folder, else in the current one, and the
    result's paths say where; returns the one-line message for that (None when all went as asked)."""
    import shutil
    import tempfile

    from .checkpoint import os_reason

    failed = []  # (flag and place, why, what it was)
    if out_dir is not None:
        try:
            result["outputs"] = _save_outputs(recipe, result, out_dir, quiet)
            if not quiet:
                err_console.print(f"saved the model, results and figures in {out_dir}/")
        except OSError as e:
            failed.append((f"--out {out_dir}", os_reason(e), "outputs"))
    if save:
        try:
            result["recordings"] = str(save_recordings(save, result["_arrays"]))
            if not quiet:
                err_console.print(f"saved weights and recordings to {result['recordings']}")
        except OSError as e:
            failed.append((f"--save {save}", os_reason(e), "recordings"))
    if not failed:
        return None
    why = "; ".join(f"could not write {where} ({reason})" for where, reason, _ in failed)
    tried = []
    for root in (tempfile.gettempdir(), os.getcwd()):
        here = None
        try:
            here = Path(tempfile.mkdtemp(prefix=f"s2emu-{recipe.name}-", dir=root))
            for _, _, what in failed:
                if what == "outputs":
                    result["outputs"] = _save_outputs(recipe, result, here, True)
                else:
                    result["recordings"] = str(save_recordings(here / npz_name(save).name, result["_arrays"]))
        except OSError as e:
            tried.append(f"{root}: {os_reason(e)}")
            if here is not None:
                shutil.rmtree(here, ignore_errors=True)
            continue
        saved = {("outputs",): "the model, results and figures", ("recordings",): "the recordings"}.get(
            tuple(w for _, _, w in failed), "the model, results, figures and recordings")
        return f"{why}; {saved} of this run are saved in {here}/ instead"
    return f"{why}; nothing of this run could be saved elsewhere either ({'; '.join(tried)})"


def eval_recipe(recipe, split: str | None, batch: int):
    """The recipe an evaluation runs: no training, `batch` streams, the corpus's `split` as test clips
    (shared with s2emu.hardware's evaluate)."""
    import dataclasses

    if split:
        if "test_split" not in recipe.data:
            raise S2EmuError(f"--split applies to corpus data sets, not to data kind '{recipe.data['kind']}'")
        recipe = dataclasses.replace(recipe, data={**recipe.data, "test_split": split})
    return recipe.with_overrides(epochs=0, batch=batch)


EVAL_KEYS = ("recipe", "engine", "accuracy", "balanced_accuracy", "chance", "test_loss", "n_test", "confusion",
             "classes", "state_digest", "ticks", "wall_seconds", "ticks_per_second", "skipped_files")


def eval_report(result: dict, recipe, model, meta: dict) -> dict:
    """`s2emu eval --json`'s object from a run's result (shared with s2emu.hardware's evaluate)."""
    out = {k: result[k] for k in EVAL_KEYS}
    out.update(model=None if model is None else str(model), data=recipe.data.get("path"),
               split=recipe.data.get("test_split"), model_meta=meta)
    return out


def cmd_eval(args) -> dict:
    """Evaluate a trained model (default: the recipe's shipped one) on a corpus split; no learning."""
    from .runner import run

    recipe = _load(args, corpus=True)
    path, weights, meta = _trained_model(recipe, args.model)
    recipe = eval_recipe(recipe, args.split, args.batch)
    if args.by:
        from .evalby import clip_groups, evaluate_by
        groups = clip_groups(recipe, args.by)
    progress = ProgressBar(f"eval {recipe.name}", enabled=not args.quiet)

    def evaluate(recipe, progress=None):
        return run(recipe, engine=args.engine, address=args.address, transport=args.transport,
                   pes_per_process=args.pes_per_process, window=args.window, progress=progress, weights=weights)
    try:
        result = evaluate(recipe, progress)
    finally:
        progress.stop()
    out = eval_report(result, recipe, path, meta)
    if args.by:
        out["by"] = evaluate_by(recipe, groups, result, evaluate)
    _warn_skipped(out, args.quiet)
    if not args.json:
        t = Table(title=f"{recipe.name}: model {path}")
        t.add_column("metric")
        t.add_column("value", justify="right")
        t.add_row("data", f"{out['data']} ({out['split']} split)" if out["data"] else recipe.data["kind"])
        t.add_row("accuracy", f"{out['accuracy']:.4f}  (chance {out['chance']:.3f})")
        t.add_row("balanced accuracy", f"{out['balanced_accuracy']:.4f}")
        t.add_row("clips", str(out["n_test"]))
        per_class = np.diag(np.asarray(out["confusion"])) / np.maximum(np.asarray(out["confusion"]).sum(1), 1)
        t.add_row("recall per class", " ".join(f"{c}:{r:.2f}" for c, r in zip(out["classes"], per_class)))
        out_console.print(t)
        if args.by:
            t = Table(args.by, "clips", "accuracy", "balanced accuracy", title=f"by {args.by}")
            for name, g in out["by"].items():
                t.add_row(name, str(g["n"]), f"{g['accuracy']:.4f}", f"{g['balanced_accuracy']:.4f}")
            out_console.print(t)
    return out


def cmd_stream(args) -> dict:
    """Stream audio through the chip in real time with a live view; accuracy over the clips at the end."""
    from .streaming import stream

    recipe = _load(args, corpus=args.source is None)  # the recipe's corpus only when it is what streams
    path, weights, _ = _trained_model(recipe, args.model)
    if not args.quiet:
        where = {"-": "standard input", "mic": "the microphone"}.get(args.source, args.source)
        err_console.print(f"[bold]streaming[/] {where or recipe.data.get('path')} through {recipe.name} "
                          f"on the {args.engine} engine" + (" (learning online)" if args.learn else ""))
    out = stream(recipe, args.source, engine=args.engine, address=args.address, transport=args.transport,
                 pes_per_process=args.pes_per_process, window=args.window, weights=weights, clips=args.clips,
                 loop=args.loop, seconds=args.seconds, rate=args.rate, channels=args.channels,
                 learn=args.learn, pace=not args.no_pace, console=err_console, live=not args.quiet)
    out["model"] = str(path)
    if not args.json:
        t = Table(title=f"stream: {out['clips']} clips on {out['engine']} ({out['pes']} PEs)")
        t.add_column("metric")
        t.add_column("value", justify="right")
        if out["accuracy"] is not None:
            t.add_row("accuracy", f"{out['accuracy']:.3f} over {out['n_labelled']} labelled clips "
                                  f"(balanced {out['balanced_accuracy']:.3f}, chance {out['chance']:.3f})")
        cap = "" if out["capacity_factor"] is None else f"; unpaced capacity {out['capacity_factor']:.2f}"
        t.add_row("real-time factor", f"{out['real_time_factor']:.2f} (keeping up needs "
                                      f"{out['required_real_time_factor']:.2f}{cap})")
        t.add_row("lag", f"max {out['lag_ms_max']:.0f} ms (first half {out['lag_ms_first_half_max']:.0f}, "
                         f"second half {out['lag_ms_second_half_max']:.0f}), final {out['lag_ms_final']:.0f} ms")
        t.add_row("packets/s", f"{out['packets_per_second']:,.0f}")
        out_console.print(t)
    return out


def memory_report(recipe) -> tuple[dict, object]:
    """`s2emu memory --json`'s object and the build it describes (shared with s2emu.hardware's memory)."""
    import dataclasses

    from .bptt_memory import bptt_memory
    from .build import build
    from .runner import memory_summary

    b = build(recipe, streams=1, load_data=False)
    per_pe = memory_summary(b, items=True)["per_pe"]
    result = {"recipe": recipe.name, "machine": recipe.machine.name, "pe_budget": recipe.machine.pe_budget,
              "layout": recipe.learning.eligibility_layout, "total_bytes": b.total_bytes, "per_pe": per_pe,
              "weights": recipe.network.n_weights}
    if recipe.learning.rule == "eprop":
        layouts = {}
        for layout in ("per_synapse", "per_source"):
            r = dataclasses.replace(recipe, learning=dataclasses.replace(recipe.learning, eligibility_layout=layout))
            bl = b if layout == recipe.learning.eligibility_layout else build(r, streams=1, load_data=False)
            layouts[layout] = {"total_bytes": bl.total_bytes,
                               "per_pe": [{k: p[k] for k in ("pe", "bytes")} for p in memory_summary(bl)["per_pe"]]}
        result["layouts"] = layouts
        result["saving_bytes"] = layouts["per_synapse"]["total_bytes"] - layouts["per_source"]["total_bytes"]
        result["bptt"] = bptt_memory(b.mapping, b.dataset.steps)
    if recipe.learning.rule == "deepr":
        from .runner import sparse_weight_bytes
        stored = sparse_weight_bytes(b)
        result["deepr"] = {"active_connections": recipe.network.n_active_weights,
                           "connectivity": recipe.network.n_active_weights / recipe.network.n_weights,
                           "weight_bytes": stored}
    return result, b


def cmd_memory(args) -> dict:
    """SRAM per PE for the recipe's layout, both e-prop eligibility layouts side by side, and BPTT's estimate."""
    recipe = _load(args)
    result, b = memory_report(recipe)
    per_pe = result["per_pe"]
    if not args.json:
        t = Table(title=f"SRAM per PE: {recipe.name} on {recipe.machine.name} "
                        f"(budget {recipe.machine.pe_budget:,} B per PE, batch 1"
                        + (f", layout {result['layout']})" if recipe.learning.rule == "eprop" else ")"))
        for col in ("PE", "slice", "bytes", "% of budget", "largest arrays"):
            t.add_column(col, justify="right" if col in ("bytes", "% of budget") else "left")
        for p in per_pe:
            top = sorted(p["items"], key=lambda i: -i["bytes"])[:3]
            t.add_row(str(p["pe"]), p["slice"], f"{p['bytes']:,}",
                      f"{100 * p['bytes'] / p['budget']:.1f}", ", ".join(f"{i['name']} {i['bytes']:,}" for i in top))
        t.add_row("total", "", f"{b.total_bytes:,}", "", f"{b.total_bytes / 1024:.2f} KiB over {len(per_pe)} PEs")
        out_console.print(t)
        if "deepr" in result:
            dr = result["deepr"]
            out_console.print(f"DEEP R: {dr['active_connections']:,} of {recipe.network.n_weights:,} connections "
                              f"active ({100 * dr['connectivity']:.2f}%); their storage (uint16 row, uint16 column, "
                              f"float32 theta, 1 sign bit) takes {dr['weight_bytes']:,} B "
                              f"({dr['weight_bytes'] / 1000:.1f} KB)")
        if "layouts" in result:
            c = Table(title=f"training memory of {recipe.name}: e-prop layouts and BPTT "
                            f"(T = {result['bptt']['steps']} steps per sample)")
            for col in ("learning rule / layout", "total bytes", "KiB", "largest PE", "note"):
                c.add_column(col, justify="left" if col in ("learning rule / layout", "note") else "right")
            for name, note in (("per_synapse", "faithful: 7 float32 per synapse (SCIENCE.md)"),
                               ("per_source", f"one epsv per presynaptic source: saves "
                                              f"{result['saving_bytes']:,} B")):
                lay = result["layouts"][name]
                c.add_row(f"e-prop {name}", f"{lay['total_bytes']:,}", f"{lay['total_bytes'] / 1024:.2f}",
                          f"{max(p['bytes'] for p in lay['per_pe']):,}", note)
            bp = result["bptt"]
            c.add_row("BPTT, split as above", f"{bp['total_bytes']:,}", f"{bp['total_bytes'] / 1024:.2f}",
                      f"{max(p['bytes'] for p in bp['per_pe']):,}",
                      f"estimate; + {bp['history_bytes_per_step']:,} B per extra step")
            c.add_row("BPTT, one copy of histories", f"{bp['dense_bytes']:,}", f"{bp['dense_bytes'] / 1024:.2f}",
                      "", "estimate; the floor (GPU-style single memory)")
            out_console.print(c)
    return result


def cmd_sweep(args) -> dict:
    """Truncation x blocks for BPTT recipes: a table (CSV, Markdown, JSON) and a plot against full BPTT."""
    from .recipe import load_recipe
    from .sweep import sweep, write

    recipes = [load_recipe(r) for r in args.recipes]

    def progress(row):
        if not args.quiet:
            err_console.print(f"{row['recipe']}: truncation {row['truncation']}, blocks {row['blocks']}: accuracy "
                              f"{row['accuracy']:.3f}, SRAM {row['total_bytes']:,} B, "
                              f"{row['macs_per_sample']:,.0f} MACs / sample ({row['wall_seconds']:.0f} s)")

    rows = sweep(recipes, args.truncation, args.blocks, epochs=args.epochs, progress=progress)
    paths = write(rows, args.out)
    if not args.json:
        out_console.print(Path(paths["markdown"]).read_text())
        out_console.print(f"written: {', '.join(paths.values())}")
    return {"rows": rows, "outputs": paths}


def cmd_scale(args) -> dict:
    """Strong and weak scaling over PE counts: a table (CSV, Markdown, JSON) and plots."""
    import dataclasses

    from .chipmodel import parse_assumptions
    from .scale import parse_axis, parse_modes, scale, summary, write

    recipe, pes, chips = parse_axis(_load(args), args.pes_list, args.chips_list)
    modes = parse_modes(args.mode)
    limits = {k: v for k, v in (("max_train", args.train), ("max_test", args.test)) if v is not None}
    if limits:
        if "max_train" not in recipe.data:
            raise S2EmuError(f"--train/--test apply to corpus data sets, not to data kind '{recipe.data['kind']}'")
        recipe = dataclasses.replace(recipe, data={**recipe.data, **limits})

    def row_done(row):
        if args.quiet:
            return
        what = f"{row['chips']} chips" if chips else f"{row['pes']} PEs"
        if row["error"]:
            err_console.print(f"[yellow]{row['mode']} {what}: does not fit: {row['error']}[/]")
        else:
            err_console.print(f"{row['mode']} {what}: {row['ms_per_tick']:.2f} ms/tick, largest PE "
                              f"{row['sram_max_pe_bytes']:,} B, {row['packets_per_tick']:.1f} packets/tick, "
                              f"chip {row['chip_us_per_tick']:.0f} us/tick, digest {row['state_digest'][:12]}")

    rows = scale(recipe, pes, modes, engine=args.engine, repeats=args.repeats, row_done=row_done,
                 progress=None if args.quiet else lambda label: ProgressBar(label),
                 address=args.address, transport=args.transport, assume=parse_assumptions(args.assume),
                 pes_per_process=args.pes_per_process, window=args.window, chips=chips)
    summ = summary(rows)
    axis = f"--chips {','.join(map(str, chips))}" if chips else f"--pes {','.join(map(str, pes))}"
    title = (f"{recipe.name} on the {args.engine} engine, {axis}, "
             f"{recipe.schedule.epochs} epoch(s), batch {recipe.schedule.batch}")
    paths = write(rows, summ, args.out or f"runs/scale/{recipe.name}", title)
    if not args.json:
        out_console.print(Path(paths["markdown"]).read_text())
        out_console.print(f"written: {', '.join(paths.values())}")
    return {"recipe": recipe.name, "engine": args.engine, "rows": rows, **summ, "outputs": paths}


def map_report(recipe) -> tuple[dict, object]:
    """`s2emu map --json`'s object and the build it describes (shared with s2emu.hardware's map)."""
    from .build import build

    b = build(recipe, streams=1, load_data=False)
    d = b.mapping.to_dict()
    d["recipe"] = recipe.name
    return d, b


def cmd_map(args) -> dict:
    from .router.mapper import placement_report

    recipe = _load(args)
    d, b = map_report(recipe)
    if not args.json:
        t = Table(title=f"placement of {recipe.name}: {b.mapping.n_pes} PEs (+ host as endpoint {b.mapping.host})")
        for col in ("PE", "slice", "neurons", "key/mask", "SRAM bytes"):
            t.add_column(col)
        for row in placement_report(b.mapping, {m["pe"]: m["total"] for m in b.memory}):
            t.add_row(*row)
        out_console.print(t)
        k = d["keys"]
        out_console.print(f"keys: {k}")
        from .router.table import endpoints_of, links_of
        from .machine import LINK_NAMES
        m = b.mapping
        if len(m.tables) > 1:
            g = m.machine.geometry
            down = g.dead_wire_ends()
            out_console.print(f"mesh {g.width} x {g.height}{' torus' if g.wrap else ''}, {len(m.tables)} chips in use, "
                              f"{m.hops} hops a tick" + (f"; dead wire ends: {', '.join(down)}" if down else "")
                              + (f"; failing: {', '.join(m.machine.failing_links)} (emergency routing)"
                                 if m.machine.failing_links else ""))
        for chip, table in sorted(m.tables.items()):
            on_chip = m.chip_endpoints(chip)
            where = f"chip {chip} {m.machine.geometry.xy(chip)}: " if len(m.tables) > 1 else ""
            tt = Table(title=f"{where}router table: {len(table)} entries"
                             + (f" after merging ({m.entries_before_merge} before, all chips)" if len(m.tables) == 1
                                else "") + f", capacity {recipe.machine.router_entries}")
            for col in ("key", "mask", "endpoints") + (("links",) if len(m.tables) > 1 else ()):
                tt.add_column(col)
            for e in table.entries:
                ends = ["host" if on_chip[x] == m.host else f"PE {on_chip[x]}" for x in endpoints_of(e.route)]
                links = (", ".join(LINK_NAMES[i] for i in links_of(e.route)),) if len(m.tables) > 1 else ()
                tt.add_row(f"0x{e.key:08x}", f"0x{e.mask:08x}", ", ".join(ends), *links)
            out_console.print(tt)
    return d


def _window(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an int >= 1 or 'auto', not {text!r}") from None


def _int_at_least(lo: int, meaning: str):
    """An argparse type: an int >= lo; the message (argparse adds the flag) says what the number means."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {lo} ({meaning}), got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo} ({meaning}), got {value}")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, `error: ...` with status 2, like every other input error; --help shows
    the usage. Subcommand parsers are of this class too (argparse makes them of the parent's class)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="s2emu", description="Emulate learning on the SpiNNaker 2 chip.")
    p.add_argument("--version", action="version", version=f"s2emu {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def engine_options(sp):
        sp.add_argument("--engine", choices=list(ENGINES), default="local")
        sp.add_argument("--address", help="Ray cluster address for --engine ray (default: start a local one)")
        sp.add_argument("--transport", choices=list(TRANSPORTS), default="channels",
                        help="the ray engine's per-tick exchange: direct channels (default) or Ray calls")
        sp.add_argument("--pes-per-process", type=int, default=1, metavar="K",
                        help="ray: K PEs of a chip share one actor process (4: a quad-PE; less memory, faster "
                             "start, same bits); default 1, a process per PE")
        sp.add_argument("--window", type=_window, default=1, metavar="K",
                        help="advance K ticks between exchanges, where every delay is at least K ticks (same "
                             "bits, K times fewer barriers on ray); 'auto': the most the recipe allows; default 1")

    def common(sp, overrides=True):
        sp.add_argument("recipe", help="recipe TOML file, or the name of a bundled recipe (e.g. smoke)")
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        if overrides:
            sp.add_argument("--pes", type=int, help="split every spiking population over N PEs")
            sp.add_argument("--seed", type=int, help="override the recipe seed")
            sp.add_argument("--machine", metavar="PRESET", help="run on another machine preset (e.g. "
                            "prototype-64k, spinnaker2; see s2emu info)")
            sp.add_argument("--chips", type=int, help="chips of the machine, on the most nearly square mesh")
            sp.add_argument("--pes-per-chip", type=int, help="PEs per chip (fewer spreads a network over chips)")
            sp.add_argument("--wrap", action="store_true", help="wrap-around links: the mesh of chips is a torus")
            sp.add_argument("--dead-link", action="append", metavar="CHIP:LINK",
                            help="a wire that is down (e.g. 4:NE; repeatable); routes go around it")
            sp.add_argument("--link-fails", action="append", metavar="CHIP:LINK@TICK[-UNTIL]",
                            help="a wire that fails at a tick of the run (e.g. 4:NE@500; 4:NE@500-800: back at "
                                 "tick 800; repeatable); the routers, whose tables do not know, send its packets "
                                 "around it while it is down (emergency routing)")

    sp = sub.add_parser("info", help="version, machine presets, bundled recipes")
    sp.add_argument("--json", action="store_true")
    sp = sub.add_parser("run", help="run a recipe on the emulated chip")
    common(sp)
    engine_options(sp)
    sp.add_argument("--epochs", type=int, help="override the recipe's epochs")
    sp.add_argument("--batch", type=int, help="override the recipe's batch (streams)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.add_argument("--allow-drops", action="store_true", help="report dropped packets without failing")
    sp.add_argument("--save", metavar="FILE.npz",
                    help="save final weights (W/<projection>) and recordings (spikes/<pop>, voltage/<pop>)")
    sp.add_argument("--out", metavar="DIR", help="where model.npz, results.json and the figures go "
                    "(default runs/<recipe name>; '-' writes nothing)")
    sp.add_argument("--model", metavar="FILE.npz", help="start from a trained model instead of initial weights")
    sp.add_argument("--data", metavar="PATH", help="corpus folder or archive instead of the recipe's")
    sp.add_argument("--skip-bad", action="store_true", default=None,
                    help="leave out corpus files that cannot be read (listed) instead of failing")
    sp.add_argument("--checkpoint-every", type=_int_at_least(1, "ticks between checkpoints"), metavar="TICKS",
                    help="write the whole emulation state every TICKS ticks (atomically, over the last one)")
    sp.add_argument("--checkpoint", metavar="FILE", help="where checkpoints go (default <out>/checkpoint.s2ckpt)")
    sp.add_argument("--resume", metavar="FILE", help="continue from a checkpoint written by the same command line")
    sp.add_argument("--assume", action="append", metavar="NAME=VALUE",
                    help="override an assumption of the chip's time and energy model (docs/chip-model.md)")
    sp.add_argument("--max-restarts", type=_int_at_least(0, "0: a dead process ends the run"), default=3,
                    metavar="N",
                    help="ray engine: when a process dies, restart from the last checkpoint, at most N times "
                         "(default 3; 0 ends the run)")
    sp = sub.add_parser("eval", help="evaluate a trained model on a corpus (plain and balanced accuracy)")
    common(sp)
    sp.add_argument("--model", metavar="FILE.npz", help="the model (default: the one the recipe names)")
    sp.add_argument("--data", metavar="PATH", help="corpus folder or archive in Speech Commands layout")
    sp.add_argument("--split", choices=["test", "validation", "train", "all"],
                    help="which clips to evaluate (default: the recipe's test_split, 'test')")
    sp.add_argument("--batch", type=int, default=64, help="streams evaluated side by side (default 64)")
    sp.add_argument("--skip-bad", action="store_true", default=None,
                    help="leave out corpus files that cannot be read (listed) instead of failing")
    sp.add_argument("--by", choices=["engine", "voice"],
                    help="also accuracy per synthesizer engine or voice (needs the corpus's manifest.csv)")
    engine_options(sp)
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp = sub.add_parser("stream", help="stream audio through the chip in real time, with a live view")
    common(sp)
    sp.add_argument("--source", metavar="DIR|FILE.wav|-|mic", help="corpus (its test split), one WAV file, '-' "
                    "(standard input: a WAV stream or raw 16-bit PCM, read as it arrives) or 'mic' (the default "
                    "microphone; pip install 's2emu[mic]'); default: the recipe's corpus")
    add_live_audio_options(sp)  # --rate, --channels, --seconds
    sp.add_argument("--clips", type=int, help="stream only the first N clips")
    sp.add_argument("--loop", action="store_true", help="with --clips N: start over at the end until N clips")
    sp.add_argument("--model", metavar="FILE.npz", help="the model (default: the one the recipe names)")
    sp.add_argument("--learn", action="store_true", help="learn online (batch 1) while streaming")
    sp.add_argument("--no-pace", action="store_true", help="run as fast as possible instead of at the audio rate")
    engine_options(sp)
    sp.add_argument("--quiet", action="store_true", help="no live view")
    sp = sub.add_parser("sweep", help="BPTT truncation x local blocks against full BPTT (table and plot)")
    sp.add_argument("recipes", nargs="+", help="BPTT recipe files")
    sp.add_argument("--truncation", default="1,5,10,25,all", help="truncation lengths K, 'all' = full BPTT")
    sp.add_argument("--blocks", default="e2e,layer", help="block schemes: e2e (one block), layer (a block per "
                    "hidden layer) or N (N layers per block)")
    sp.add_argument("--epochs", type=int, help="override the recipes' epochs")
    sp.add_argument("--out", default="runs/sweep", help="folder for sweep.{csv,md,json,png}")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--quiet", action="store_true")
    sp = sub.add_parser("scale", help="strong and weak scaling across PE counts (tables and plots)")
    sp.add_argument("recipe", help="recipe TOML file, or the name of a bundled recipe")
    from .scale import DEFAULT_PES  # parse_axis tells the default from a --pes given with --chips
    sp.add_argument("--pes", dest="pes_list", default=DEFAULT_PES, help=f"PE counts to split the network over "
                    f"(default {DEFAULT_PES})")
    sp.add_argument("--chips", dest="chips_list", metavar="CHIPS", help="chip counts instead (e.g. 1,4,16,48): strong, the "
                    "network spread over them; weak, a copy per chip joined to its neighbours (s2emu/scale.py)")
    sp.add_argument("--mode", default="strong,weak", help="strong (same network), weak (network grows with "
                    "the PEs), or both (default)")
    engine_options(sp)
    sp.add_argument("--epochs", type=int, default=1, help="epochs per run (default 1)")
    sp.add_argument("--batch", type=int, help="override the recipe's batch (streams)")
    sp.add_argument("--train", type=int, help="corpus recipes: train on a seeded subset of N clips")
    sp.add_argument("--test", type=int, help="corpus recipes: test on a seeded subset of N clips")
    sp.add_argument("--seed", type=int, help="override the recipe seed")
    sp.add_argument("--machine", metavar="PRESET", help="another machine preset (see s2emu info)")
    sp.add_argument("--repeats", type=int, default=1, help="runs per row; wall times are medians (default 1)")
    sp.add_argument("--assume", action="append", metavar="NAME=VALUE", help="chip model assumption override")
    sp.add_argument("--out", metavar="DIR", help="where scale.{csv,md,json,png} go (default runs/scale/<recipe>)")
    sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    sub.add_parser("synth", help="synthesize a keyword corpus with espeak-ng, flite, festival or pico "
                   "(s2emu synth --help)", add_help=False)
    sp = sub.add_parser("memory", help="per-PE SRAM table and totals")
    common(sp)
    sp = sub.add_parser("map", help="placement, keys and routing table report")
    common(sp)
    from .nir import add_parsers as add_nir_parsers  # import-nir, export-nir (the nir package loads on use)
    add_nir_parsers(sub)
    add_data_parsers(sub)
    add_detect_parsers(sub, common, engine_options)  # detect, longform (s2emu/detect.py)
    return p


def cmd_import_nir(args) -> dict:
    from .nir import cmd_import_nir as run_it
    result = run_it(args)
    if not args.json:
        for note in result["approximations"]:
            err_console.print(f"[yellow]approximated:[/] {note}", soft_wrap=True)
        out_console.print(f"wrote {result['recipe']}: {', '.join(result['populations'])}")
    return result


def cmd_export_nir(args) -> dict:
    from .nir import cmd_export_nir as run_it
    result = run_it(args)
    if not args.json:
        out_console.print(f"wrote {result['nir']} ({result['nodes']} nodes, dt {result['dt']:g} s)")
    return result


COMMANDS = {"info": cmd_info, "run": cmd_run, "eval": cmd_eval, "stream": cmd_stream, "memory": cmd_memory,
            "map": cmd_map, "sweep": cmd_sweep, "scale": cmd_scale, "import-nir": cmd_import_nir,
            "export-nir": cmd_export_nir, "data": cmd_data, "detect": cmd_detect, "longform": cmd_longform}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["synth"]:  # the corpus synthesizer has its own options (host/synth.py)
        from .host.synth import main as synth_main
        return synth_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command in ("run", "eval", "stream", "detect") and args.engine != "ray":
        for flag, given in (("--address", args.address), ("--transport", args.transport != "channels"),
                            ("--pes-per-process", args.pes_per_process != 1)):
            if given:
                err_console.print(f"error: {flag} needs --engine ray")
                return 2
    json_out, give_back = _stdout_for_json() if args.json else (None, None)
    try:
        try:
            result = COMMANDS[args.command](args)
        except S2EmuError as e:
            if isinstance(e, OutputError) and args.json:  # the run's results, though not all saved where asked
                json_out.write(json.dumps(_jsonable(e.result), default=_json_default) + "\n")
                json_out.flush()
            err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
            return 2
        except KeyboardInterrupt:
            err_console.print("interrupted")
            return 130
        if args.json:
            json_out.write(json.dumps(_jsonable(result), default=_json_default) + "\n")
            json_out.flush()
        return 0
    finally:
        if give_back is not None:
            give_back()


def _stdout_for_json():
    """(where --json writes its one object, a function that gives stdout back or None). While the command
    runs, whatever else writes to file descriptor 1 (Ray's raylet warnings when many actors start, a
    library's print, a child process) goes to stderr, so stdout carries the object alone; afterwards stdout
    is stdout again (for in-process callers). A captured sys.stdout (not descriptor 1) is left as it is."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdout, None
    if fd != 1:
        return sys.stdout, None
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def give_back():
        sys.stdout.flush()
        os.dup2(out.fileno(), 1)
        out.close()
    return out, give_back


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


if __name__ == "__main__":
    sys.exit(main())
