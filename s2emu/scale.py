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

Across chips (`--chips 1,4,16,48`), a row is a machine of N chips on the most nearly square mesh (48: 8 x 6):

* strong: the recipe's network, unchanged, spread evenly over the N chips (ceil(PEs / N) PEs per chip, at most
  the machine's): only the routing changes, so every row must end with the same state_digest.
* weak: a network per chip (`tile`): chip c holds a copy of the recipe's spiking populations, each copy fed by
  the one input, and each copy's recurrent populations also project to their copies on the neighbouring chips
  (all six links, init_scale x LATERAL_SCALE), so packets cross the mesh every tick. The recipe's network must
  fit one chip; a chip gets as many PEs as it takes (152 for a network that fills a chip), the last chip holds
  the recipe's own populations and the readout, every other chip a copy named NAME_cK one slice larger (the
  readout's PE is free there), so every PE is used. The readout reads every copy when it learns (e-prop's
  learning signal comes from it), else the last chip's alone. One chip is the recipe itself.

Chip rows add the chips in use, the mesh, the hop rounds per tick and the packets that cross a wire between two
chips per tick (`link_packets_per_tick`, each wire crossed counted once).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
from pathlib import Path

from .errors import MachineError, RecipeError, RoutingError
from .machine import LINK_NAMES
from .network import Network, Projection

MODES = ("strong", "weak")
FIELDS = ("mode", "pes", "pes_total", "neurons", "weights", "ticks", "ms_per_tick", "ticks_per_second",
          "sram_max_pe_bytes", "sram_mean_pe_bytes", "total_bytes", "fits", "packets_per_tick",
          "router_entries", "chip_us_per_tick", "chip_real_time", "bottleneck_pe",
          "energy_per_sample_joules", "accuracy", "state_digest", "error")
CHIP_FIELDS = ("chips", "mesh", "chips_in_use", "pes_per_chip", "hops", "link_packets_per_tick")
LATERAL_SCALE = 0.5  # weak rows across chips: a lateral projection's init_scale, times its recurrent one's


def _parse_counts(spec: str, option: str, what: str) -> list[int]:
    try:
        counts = [int(c) for c in spec.split(",") if c.strip()]
    except ValueError:
        raise RecipeError(f"{option}: '{spec}' is not a comma-separated list of {what} counts") from None
    if not counts or min(counts) < 1:
        raise RecipeError(f"{option}: {what} counts must be >= 1, got '{spec}'")
    return sorted(dict.fromkeys(counts))


def parse_pes(spec: str) -> list[int]:
    return _parse_counts(spec, "--pes", "PE")


def parse_chips(spec: str) -> list[int]:
    return _parse_counts(spec, "--chips", "chip")


DEFAULT_PES = "1,2,4,8"  # `s2emu scale --pes`'s default


def parse_axis(recipe, pes_spec: str, chips_spec: str | None) -> tuple:
    """(recipe, PE counts, chip counts or None) of `s2emu scale`'s --pes and --chips. With --chips the rows are
    chip counts, and a --pes of one count splits the recipe's network first (the default list is ignored)."""
    if not chips_spec:
        return recipe, parse_pes(pes_spec), None
    chips = parse_chips(chips_spec)
    if pes_spec != DEFAULT_PES:
        split = parse_pes(pes_spec)
        if len(split) != 1:
            raise RecipeError(f"--pes with --chips: one PE count to split the network over first, got '{pes_spec}'")
        recipe = recipe.with_overrides(pes=split[0])
    return recipe, [], chips


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


def pes_needed(recipe) -> int:
    """The PEs the recipe's network is placed on (router/mapper.py): its slices, the readout's PE included."""
    from .router.mapper import _place_stack, place

    net = recipe.network
    big = dataclasses.replace(recipe.machine, chips=1, width=0, pes_per_chip=1 << 20, dead_links=(),
                              failing_links=())  # room for any network: placement alone, no mesh
    if recipe.learning.rule == "bptt":  # a BPTT stack: whole on one PE, or split with the readout apart
        split = any(len(p.slices()) > 1 for p in net.populations if p.is_neuron)
        return len(_place_stack(net, big)) if split else 1
    return len(place(net, big))


def _machine(recipe, what: str, **shape):
    try:
        return dataclasses.replace(recipe.machine, width=0, **shape).validate()
    except MachineError as e:
        raise RecipeError(f"{what}: {e}") from None


def spread(recipe, chips: int):
    """A strong row across chips: the recipe's network unchanged on a machine of `chips` chips, its PEs spread
    evenly over them (ceil(PEs / chips) a chip, at most the machine's)."""
    per_chip = min(recipe.machine.pes_per_chip, -(-pes_needed(recipe) // chips))
    return dataclasses.replace(recipe, machine=_machine(recipe, f"--chips {chips}", chips=chips,
                                                        pes_per_chip=per_chip))


def tile(recipe, chips: int, lateral_scale: float = LATERAL_SCALE, name: str | None = None):
    """A weak row across chips: a network per chip (this module's docstring says how), on a machine of
    `chips` chips of as many PEs as the recipe's network takes. The recipe's network must fit one chip."""
    net = recipe.network
    if net.layered or recipe.learning.rule in ("bptt", "deepr"):
        raise RecipeError("weak scaling across chips tiles a spiking network (e-prop or inference): a layered or "
                          "BPTT network has no copy per chip")
    given = [pr.name for pr in net.projections if pr.weights is not None]
    if given:
        raise RecipeError(f"weak scaling across chips draws each copy's weights from the seed; {given[0]} has "
                          f"explicit weights")
    base = pes_needed(recipe)
    if base > recipe.machine.pes_per_chip:
        raise RecipeError(f"weak scaling across chips tiles a network of one chip; this one needs {base} PEs, the "
                          f"chip has {recipe.machine.pes_per_chip} (split it over fewer: --pes)")
    machine = _machine(recipe, f"--chips {chips}", chips=chips, pes_per_chip=base)
    spiking = [p for p in net.populations if p.is_neuron]
    last = chips - 1  # the chip of the recipe's own populations and the readout

    def copy(population: str, c: int) -> str:
        return population if c == last else f"{population}_c{c}"

    pops = [net.input]
    for c in range(chips):
        for p in spiking:
            q = dataclasses.replace(p, name=copy(p.name, c))
            if c != last and p is spiking[-1]:  # the readout's PE is free on this chip: one slice more
                per = p.max_atoms_per_core or p.size
                q = dataclasses.replace(q, size=p.size + per, max_atoms_per_core=per)
            pops.append(q)
    pops.append(net.readout)
    reads_all = recipe.learning.rule != "none"
    projs = []
    for pr in net.projections:
        pre, post = net[pr.pre], net[pr.post]
        for c in range(chips):
            if pre.model == "input":
                projs.append(dataclasses.replace(pr, post=copy(pr.post, c)))
            elif post.model == "readout":
                if reads_all or c == last:
                    projs.append(dataclasses.replace(pr, pre=copy(pr.pre, c)))
            else:
                projs.append(dataclasses.replace(pr, pre=copy(pr.pre, c), post=copy(pr.post, c)))
    g = machine.geometry
    for pr in net.projections:
        if pr.pre == pr.post and net[pr.pre].is_neuron:
            for c in range(chips):
                # (a torus of side 1 or 2 is its own neighbour: no projection to itself twice)
                for n in sorted({g.neighbour(c, link) for link in range(len(LINK_NAMES))} - {None, c}):
                    projs.append(Projection(copy(pr.pre, c), copy(pr.post, n),
                                            init_scale=pr.init_scale * lateral_scale, delay=pr.delay))
    return dataclasses.replace(
        recipe, name=name or recipe.name, machine=machine, network=Network(tuple(pops), tuple(projs)),
        record_spikes=tuple(copy(p, c) for p in recipe.record_spikes for c in range(chips)),
        record_voltage=tuple(copy(p, c) for p in recipe.record_voltage for c in range(chips)))


def chips_recipe(recipe, mode: str, chips: int):
    """The recipe of one row across chips: spread (strong) or tiled (weak) over `chips` chips."""
    return spread(recipe, chips) if mode == "strong" else tile(recipe, chips)


def scale(recipe, pes: list[int], modes: list[str], *, engine: str = "local", repeats: int = 1,
          progress=None, row_done=None, chips: list[int] | None = None, **run_options) -> list[dict]:
    """Run every (mode, PE count), or with `chips`, every (mode, chip count) (this module's docstring);
    progress(label) returns a progress object for one run (or None); row_done(row) hears of each finished
    row."""
    from .runner import run  # here, not at the top: the CLI reads this module's DEFAULT_PES as it starts

    rows = []
    for mode in modes:
        for n in chips or pes:
            row = {"mode": mode}
            try:
                if chips:
                    r = chips_recipe(recipe, mode, n)
                    g = r.machine.geometry
                    row.update(chips=n, pes=pes_needed(r), mesh=[g.width, g.height],
                               pes_per_chip=r.machine.pes_per_chip)
                    label = f"{mode} {n} chips"
                else:
                    r = scaled_recipe(recipe, mode, n, pes[0])
                    row["pes"] = n
                    label = f"{mode} {n} PEs"
                row.update(neurons=sum(q.size for q in r.network.populations if q.is_split),
                           weights=r.network.n_weights)
                results = []
                for i in range(repeats):
                    bar = progress(label + (f" ({i + 1}/{repeats})" if repeats > 1 else "")) if progress else None
                    try:
                        results.append(run(r, engine=engine, progress=bar, **run_options))
                    finally:
                        if bar is not None:
                            bar.stop()
                row.update(_figures(results, r.machine.pe_budget))
                if chips:
                    row.update(_chip_figures(results[0]))
            except (MachineError, RoutingError, RecipeError) as e:  # does not fit: keep the row, say why
                if isinstance(e, RecipeError) and not chips:
                    raise
                row.update({k: None for k in (*FIELDS, *(CHIP_FIELDS if chips else ())) if k not in row},
                           fits=False, error=str(e))
            rows.append(row)
            if row_done is not None:
                row_done(row)
    return rows


def _chip_figures(r: dict) -> dict:
    links = sum(r["router"]["link_sent"].values())
    return {"chips_in_use": r["chips"], "hops": r["hops"], "link_packets_per_tick": links / r["ticks"]}


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


def _axis(rows: list[dict]) -> str:
    """What the rows count: "chips" (--chips) or "pes"."""
    return "chips" if any("chips" in r for r in rows) else "pes"


def summary(rows: list[dict]) -> dict:
    """Strong scaling's speed-up and efficiency against its first row, and whether the split kept every bit;
    keyed by PE count, or by chip count for rows across chips."""
    axis = _axis(rows)
    strong = [r for r in rows if r["mode"] == "strong" and r["error"] is None]
    out = {"strong_digests_identical": len({r["state_digest"] for r in strong}) <= 1 if strong else None}
    if strong:
        base = strong[0]
        out["strong_speedup"] = {r[axis]: base["ms_per_tick"] / r["ms_per_tick"] for r in strong}
        out["strong_chip_speedup"] = {r[axis]: base["chip_us_per_tick"] / r["chip_us_per_tick"] for r in strong}
    weak = [r for r in rows if r["mode"] == "weak" and r["error"] is None]
    if weak:
        out["weak_efficiency"] = {r[axis]: weak[0]["ms_per_tick"] / r["ms_per_tick"] for r in weak}
    if axis == "chips":
        out["axis"] = "chips"
    return out


def write(rows: list[dict], summ: dict, out_dir, title: str) -> dict:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    chips = _axis(rows) == "chips"
    fields = (*FIELDS, *CHIP_FIELDS) if chips else FIELDS
    with open(d / "scale.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows({k: row.get(k) for k in fields} for row in rows)
    (d / "scale.json").write_text(json.dumps({"title": title, "rows": rows, **summ}, indent=1) + "\n")
    md = _chip_table(rows, title) if chips else _pes_table(rows, title)
    if summ.get("strong_digests_identical") is not None:
        md.append(f"\nStrong scaling, same digest at every {'chip count' if chips else 'split'}: "
                  f"{summ['strong_digests_identical']}.")
    (d / "scale.md").write_text("\n".join(md) + "\n")
    paths = {"csv": str(d / "scale.csv"), "markdown": str(d / "scale.md"), "json": str(d / "scale.json")}
    try:
        paths["plot"] = _plot(rows, d / "scale.png", title)
    except ImportError:
        pass
    return paths


def _chip_table(rows: list[dict], title: str) -> list[str]:
    md = [title, "", "| mode | chips (mesh, in use) | PEs (per chip) | neurons | weights | ms / tick | largest PE B | "
          "fits | packets / tick | link packets / tick | hops | router entries | chip us / tick | energy / sample | "
          "accuracy | digest |", "|" + "---|" * 16]
    for r in rows:
        shape = f"{r['chips']} ({r['mesh'][0]}x{r['mesh'][1]}" if r.get("mesh") else f"{r['chips']} ("
        if r["error"]:
            md.append(f"| {r['mode']} | {shape}) | {r['pes'] or ''} | {r['neurons'] or 0:,} | {r['weights'] or 0:,} "
                      f"| does not fit: {r['error']} |" + " |" * 10)
            continue
        md.append(f"| {r['mode']} | {shape}, {r['chips_in_use']}) | {r['pes_total']:,} ({r['pes_per_chip']}) | "
                  f"{r['neurons']:,} | {r['weights']:,} | {r['ms_per_tick']:.2f} | {r['sram_max_pe_bytes']:,} | "
                  f"{'yes' if r['fits'] else 'no'} | {r['packets_per_tick']:,.1f} | "
                  f"{r['link_packets_per_tick']:,.1f} | {r['hops']} | {r['router_entries']:,} | "
                  f"{r['chip_us_per_tick']:.0f} | {1e3 * r['energy_per_sample_joules']:.3g} mJ | "
                  f"{r['accuracy']:.3f} | `{r['state_digest'][:12]}` |")
    return md


def _pes_table(rows: list[dict], title: str) -> list[str]:
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
    return md


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
    axis = _axis(rows)
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, (key, label) in zip(axes.ravel(), metrics):
        for mode in MODES:
            sel = [r for r in ok if r["mode"] == mode]
            if sel:
                ax.plot([r[axis] for r in sel], [r[key] for r in sel], "o-", label=mode)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("chips" if axis == "chips" else "PEs the network is split over")
        ax.set_title(label, fontsize=10)
    axes[0, 0].legend()
    fig.suptitle(title + ("\nstrong: the network spread over the chips; weak: a copy of it per chip"
                          if axis == "chips" else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
