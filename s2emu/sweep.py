"""`s2emu sweep`: truncation length x local blocks for BPTT recipes (SCIENCE.md seed C), against full BPTT.

Each setting is a full run (train, then test) of the recipe with `learning.truncation` and `learning.blocks`
replaced. Per row: test accuracy, SRAM of the PE at batch 1 (and the BPTT history part of it), and the MACs and
SRAM accesses the learning rule counted per sample (cores/bptt.py states what is counted). Ratios are against
the recipe's full, end-to-end BPTT row. Writes sweep.csv, sweep.md, sweep.json and sweep.png.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from .build import build
from .errors import RecipeError
from .runner import run

FIELDS = ("recipe", "truncation", "blocks", "accuracy", "balanced_accuracy", "total_bytes", "history_bytes",
          "macs_per_sample", "accesses_per_sample", "accuracy_vs_full", "memory_vs_full", "macs_vs_full",
          "accesses_vs_full", "wall_seconds")


def block_scheme(recipe, scheme: str) -> tuple[tuple[str, ...], ...]:
    """'e2e': one block; 'layer': a block per hidden layer; an integer n: consecutive groups of n layers."""
    hidden = [h.name for h, _, _ in recipe.network.spiking_stack()]
    if scheme == "e2e":
        return ()
    if scheme == "layer":
        return tuple((h,) for h in hidden)
    try:
        n = int(scheme)
    except ValueError:
        raise RecipeError(f"--blocks: '{scheme}' is not e2e, layer or a number of layers per block") from None
    if n < 1:
        raise RecipeError(f"--blocks: {n} layers per block must be >= 1")
    return tuple(tuple(hidden[i:i + n]) for i in range(0, len(hidden), n))


def truncations(spec: str, steps: int) -> list[int]:
    """'1,5,all' -> [1, 5, 0] (0 = all steps); lengths at or past the sample's steps are full BPTT too."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part == "all":
            k = 0
        else:
            try:
                k = int(part)
            except ValueError:
                raise RecipeError(f"--truncation: '{part}' is not a number of steps or 'all'") from None
            if k < 1:
                raise RecipeError(f"--truncation: {k} must be >= 1 (or 'all')")
            k = 0 if k >= steps else k
        if k not in out:
            out.append(k)
    return out


def sweep(recipes, truncation: str, blocks: str, *, epochs=None, progress=None) -> list[dict]:
    rows = []
    for recipe in recipes:
        if recipe.learning.rule != "bptt":
            raise RecipeError(f"{recipe.name}: sweep varies BPTT's truncation and blocks; the recipe's rule is "
                              f"'{recipe.learning.rule}'")
        if epochs is not None:
            recipe = recipe.with_overrides(epochs=epochs)
        steps = build(recipe, streams=1, load_data=False).dataset.steps
        schemes = [(s, block_scheme(recipe, s)) for s in blocks.split(",")]
        settings = [(0, "e2e", ())] + [(k, name, b) for name, b in schemes for k in truncations(truncation, steps)]
        recipe_rows = []
        for k, name, b in dict.fromkeys(settings):
            r = dataclasses.replace(recipe, learning=dataclasses.replace(recipe.learning, truncation=k, blocks=b))
            res = run(r)
            mem = build(r, streams=1, load_data=False).memory[0]
            c = res["pe_counters"][0]
            n = _samples(res) * res["streams"]  # stream-samples: the counts cover every stream
            row = {"recipe": recipe.name, "truncation": k or "all", "steps": steps, "blocks": name,
                   "accuracy": res["accuracy"],
                   "balanced_accuracy": res["balanced_accuracy"], "total_bytes": res["total_bytes"],
                   "history_bytes": sum(i["bytes"] for i in mem["items"] if i["name"].startswith("history.")),
                   "macs_per_sample": c["macs"] / n, "accesses_per_sample": c["accesses"] / n,
                   "wall_seconds": res["wall_seconds"]}
            recipe_rows.append(row)
            if progress is not None:
                progress(row)
        base = recipe_rows[0]
        for row in recipe_rows:
            row["accuracy_vs_full"] = row["accuracy"] - base["accuracy"]
            for key, field in (("memory_vs_full", "total_bytes"), ("macs_vs_full", "macs_per_sample"),
                               ("accesses_vs_full", "accesses_per_sample")):
                row[key] = row[field] / base[field] - 1 if base[field] else None
        rows += recipe_rows
    return rows


def _samples(result: dict) -> int:
    """Sample steps the run took (training passes and the test pass; each carries `streams` samples), from
    its tick count."""
    return (result["ticks"] - 1) // (result["steps_per_sample"] + 2)


def write(rows: list[dict], out_dir) -> dict:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows({k: row[k] for k in FIELDS} for row in rows)
    (d / "sweep.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    md = ["| recipe | truncation | blocks | accuracy | vs full BPTT | SRAM B | history B | memory vs full | "
          "MACs / sample | MACs vs full | accesses / sample | accesses vs full |", "|" + "---|" * 12]
    pct = lambda v: "" if v is None else f"{100 * v:+.1f}%"  # noqa: E731
    for r in rows:
        md.append(f"| {r['recipe']} | {r['truncation']} | {r['blocks']} | {r['accuracy']:.3f} | "
                  f"{100 * r['accuracy_vs_full']:+.1f} pts | {r['total_bytes']:,} | {r['history_bytes']:,} | "
                  f"{pct(r['memory_vs_full'])} | {r['macs_per_sample']:,.0f} | {pct(r['macs_vs_full'])} | "
                  f"{r['accesses_per_sample']:,.0f} | {pct(r['accesses_vs_full'])} |")
    (d / "sweep.md").write_text("\n".join(md) + "\n")
    paths = {"csv": str(d / "sweep.csv"), "markdown": str(d / "sweep.md"), "json": str(d / "sweep.json")}
    try:
        paths["plot"] = _plot(rows, d / "sweep.png")
    except ImportError:
        pass
    return paths


def _plot(rows, path) -> str:
    from .plots import _pyplot

    plt = _pyplot()

    metrics = (("accuracy", "test accuracy"), ("total_bytes", "SRAM (B)"), ("macs_per_sample", "MACs / sample"),
               ("accesses_per_sample", "SRAM accesses / sample"))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (key, label) in zip(axes, metrics):
        for (recipe, blocks) in dict.fromkeys((r["recipe"], r["blocks"]) for r in rows):
            sel = [r for r in rows if r["recipe"] == recipe and r["blocks"] == blocks]
            xs = [r["steps"] if r["truncation"] == "all" else int(r["truncation"]) for r in sel]
            order = sorted(range(len(xs)), key=xs.__getitem__)
            ax.plot([xs[i] for i in order], [sel[i][key] for i in order], "o-", label=f"{recipe} {blocks}")
        ax.set_xscale("log")
        ax.set_xlabel("truncation K, steps (rightmost: all = full BPTT)")
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
