"""`s2emu scale`: strong and weak scaling of a recipe across PE counts.

Strong scaling keeps the recipe's network and splits it over P PEs (`--pes P`): every row must end with the
same state_digest (the split does not change a bit). Weak scaling keeps the neurons per PE of the first count
P0 and grows every spiking population (every layer) by P / P0, inputs and readouts unchanged, so the work per
PE stays put while the network grows (a fully recurrent layer's synapses per PE still grow with P: each PE
listens to every neuron). Each row is one full run (train, then test) on the chosen engine.

Per row: wall time per tick, SRAM of the largest and the mean PE, packets routed per tick, router table
entries, the chip model's time per tick at peak and energy per sample (s2emu/chipmodel.py), accuracy and
digest. A row whose network does not fit the machine (SRAM, PEs per chip, router entries) is kept with its
`error` instead of stopping the sweep. Writes scale.json, scale.csv, scale.md and scale.png.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
from pathlib import Path

from .errors import MachineError, RecipeError, RoutingError
from .runner import run

MODES = ("strong", "weak")
FIELDS = ("mode", "pes", "pes_total", "neurons", "weights", "ticks", "ms_per_tick", "ticks_per_second",
          "sram_max_pe_bytes", "sram_mean_pe_bytes", "total_bytes", "fits", "packets_per_tick",
          "router_entries", "chip_us_per_tick", "chip_real_time", "bottleneck_pe",
          "energy_per_sample_joules", "accuracy", "state_digest", "error")


def parse_pes(spec: str) -> list[int]:
    try:
        pes = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise RecipeError(f"--pes: '{spec}' is not a comma-separated list of PE counts") from None
    if not pes or min(pes) < 1:
        raise RecipeError(f"--pes: PE counts must be >= 1, got '{spec}'")
    return sorted(dict.fromkeys(pes))


def parse_modes(spec: str) -> list[str]:
    modes = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise RecipeError(f"--mode: expected strong, weak or both (comma-separated), got '{spec}'")
    return modes


def scaled_recipe(recipe, mode: str, pes: int, base_pes: int):
    """The recipe of one row: split over `pes` PEs, and for weak scaling grown by pes / base_pes first."""
    if mode == "weak" and pes != base_pes:
        recipe = dataclasses.replace(recipe, network=recipe.network.grown(pes / base_pes))
    return recipe.with_overrides(pes=pes)


def scale(recipe, pes: list[int], modes: list[str], *, engine: str = "local", repeats: int = 1,
          progress=None, row_done=None, **run_options) -> list[dict]:
    """Run every (mode, PE count); progress(label) returns a progress object for one run (or None);
    row_done(row) hears of each finished row."""
    rows = []
    for mode in modes:
        for p in pes:
            r = scaled_recipe(recipe, mode, p, pes[0])
            row = {"mode": mode, "pes": p, "neurons": sum(q.size for q in r.network.populations if q.is_split),
                   "weights": r.network.n_weights}
            try:
                results = []
                for i in range(repeats):
                    bar = progress(f"{mode} {p} PEs" + (f" ({i + 1}/{repeats})" if repeats > 1 else "")) \
                        if progress else None
                    try:
                        results.append(run(r, engine=engine, progress=bar, **run_options))
                    finally:
                        if bar is not None:
                            bar.stop()
                row.update(_figures(results, r.machine.pe_budget))
            except (MachineError, RoutingError) as e:  # does not fit this machine: keep the row, say why
                row.update({k: None for k in FIELDS if k not in row}, fits=False, error=str(e))
            rows.append(row)
            if row_done is not None:
                row_done(row)
    return rows


def _figures(results: list[dict], budget: int) -> dict:
    r = results[0]
    wall = statistics.median(x["wall_seconds"] for x in results)
    per_pe = [p["bytes"] for p in r["per_pe"]]
    cm = r["chip_model"]
    return {"pes_total": r["pes"], "ticks": r["ticks"], "repeats": len(results), "wall_seconds": wall,
            "ms_per_tick": 1000 * wall / r["ticks"], "ticks_per_second": r["ticks"] / wall,
            "sram_max_pe_bytes": max(per_pe), "sram_mean_pe_bytes": sum(per_pe) / len(per_pe),
            "total_bytes": r["total_bytes"], "per_pe": per_pe, "fits": max(per_pe) <= budget,
            "packets_per_tick": r["router"]["routed"] / r["ticks"], "router_entries": r["router_entries"],
            "chip_us_per_tick": 1e6 * cm["seconds_per_tick_peak"], "chip_real_time": cm["real_time"],
            "bottleneck_pe": cm["bottleneck_pe"], "energy_per_sample_joules": cm["energy_per_sample_joules"],
            "accuracy": r["accuracy"], "state_digest": r["state_digest"], "error": None}


def summary(rows: list[dict]) -> dict:
    """Strong scaling's speed-up and efficiency against its first row, and whether the split kept every bit."""
    strong = [r for r in rows if r["mode"] == "strong" and r["error"] is None]
    out = {"strong_digests_identical": len({r["state_digest"] for r in strong}) <= 1 if strong else None}
    if strong:
        base = strong[0]
        out["strong_speedup"] = {r["pes"]: base["ms_per_tick"] / r["ms_per_tick"] for r in strong}
        out["strong_chip_speedup"] = {r["pes"]: base["chip_us_per_tick"] / r["chip_us_per_tick"] for r in strong}
    weak = [r for r in rows if r["mode"] == "weak" and r["error"] is None]
    if weak:
        out["weak_efficiency"] = {r["pes"]: weak[0]["ms_per_tick"] / r["ms_per_tick"] for r in weak}
    return out


def write(rows: list[dict], summ: dict, out_dir, title: str) -> dict:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "scale.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows({k: row.get(k) for k in FIELDS} for row in rows)
    (d / "scale.json").write_text(json.dumps({"title": title, "rows": rows, **summ}, indent=1) + "\n")
    md = [title, "", "| mode | PEs (split/total) | neurons | weights | ms / tick | largest PE B | fits | "
          "packets / tick | router entries | chip us / tick | energy / sample | accuracy | digest |",
          "|" + "---|" * 13]
    for r in rows:
        if r["error"]:
            md.append(f"| {r['mode']} | {r['pes']} | {r['neurons']:,} | {r['weights']:,} | "
                      f"does not fit: {r['error']} |" + " |" * 8)
            continue
        md.append(f"| {r['mode']} | {r['pes']}/{r['pes_total']} | {r['neurons']:,} | {r['weights']:,} | "
                  f"{r['ms_per_tick']:.2f} | {r['sram_max_pe_bytes']:,} | {'yes' if r['fits'] else 'no'} | "
                  f"{r['packets_per_tick']:.1f} | {r['router_entries']} | {r['chip_us_per_tick']:.0f} | "
                  f"{1e3 * r['energy_per_sample_joules']:.3g} mJ | {r['accuracy']:.3f} | "
                  f"`{r['state_digest'][:12]}` |")
    if summ.get("strong_digests_identical") is not None:
        md.append(f"\nStrong scaling, same digest at every split: {summ['strong_digests_identical']}.")
    (d / "scale.md").write_text("\n".join(md) + "\n")
    paths = {"csv": str(d / "scale.csv"), "markdown": str(d / "scale.md"), "json": str(d / "scale.json")}
    try:
        paths["plot"] = _plot(rows, d / "scale.png", title)
    except ImportError:
        pass
    return paths


def _plot(rows, path, title) -> str | None:
    from .plots import _pyplot

    plt = _pyplot()
    ok = [r for r in rows if r["error"] is None]
    if not ok:
        return None
    metrics = (("ms_per_tick", "wall ms per tick (emulator)"), ("sram_max_pe_bytes", "SRAM of the largest PE (B)"),
               ("packets_per_tick", "packets routed per tick"), ("router_entries", "router table entries"),
               ("chip_us_per_tick", "modeled chip us per tick (peak)"),
               ("energy_per_sample_joules", "modeled energy per sample (J)"))
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, (key, label) in zip(axes.ravel(), metrics):
        for mode in MODES:
            sel = [r for r in ok if r["mode"] == mode]
            if sel:
                ax.plot([r["pes"] for r in sel], [r[key] for r in sel], "o-", label=mode)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("PEs the network is split over")
        ax.set_title(label, fontsize=10)
    axes[0, 0].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
