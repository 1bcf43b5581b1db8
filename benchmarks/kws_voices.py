"""Does the keyword model hear words, or one synthesizer? Leave-one-engine-out and an augmentation ablation.

    python benchmarks/kws_voices.py [--experiments loeo,ablation] [--corpus DIR] [--extra-corpus DIR] [--epochs N]
        [--max-train N] [--ablation-engine festival] [--out DIR]

The corpus is the main recipe's (recipes/eprop_kws.toml, [data.synth]: every engine, made on first use and
cached) unless --corpus names another made by `s2emu synth` (it needs manifest.csv). Every run trains the
recipe's network (80 -> 120 ALIF -> 12, 13 PEs, local engine) from its seeded initial weights on a view of the
corpus (a folder of links to some of its clips) and evaluates the trained weights on other views, one per group.

- loeo: for each engine E, train on the training voices of the other engines, then test on every clip of E
  (all its voices: none was heard) and on the held-out test voices of each engine trained on.
- ablation: train without --ablation-engine as in loeo, with the recipe's augmentations, with none, and with
  each one left out in turn; test as loeo. The difference to "all" is what each augmentation is worth.
- reg: as the ablation's "all", with firing-rate regularization (--reg-rate, toward --target-rate-hz).

--seed runs with another seed; --cmn with each feature channel's mean over the clip removed as well.

Writes kws_voices.json and kws_voices.md (balanced accuracy per group; chance 1/12).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from _results import RESULTS, arguments, write_results

from s2emu.host import features
from s2emu.host.augment import AUGMENTATIONS
from s2emu.host.datasets import corpus_path
from s2emu.cli import eval_recipe
from s2emu.recipe import load_recipe
from s2emu.runner import run

ROOT = Path(__file__).resolve().parents[1]
ROOT_KEY = "_corpus"  # a manifest row's corpus folder, for rows of --extra-corpus


def make_view(corpus: Path, out: Path, rows: list[dict], train, test) -> tuple[int, int]:
    """A corpus folder of links: the rows `train(row)` picks as its training clips, `test(row)` as its test
    split, and the background noise (for silence windows)."""
    out.mkdir(parents=True)
    kept = [r for r in rows if train(r) or test(r)]
    for r in kept:
        (out / r["path"]).parent.mkdir(exist_ok=True)
        (out / r["path"]).symlink_to(Path(r.get(ROOT_KEY) or corpus) / r["path"])
    (out / "_background_noise_").mkdir()
    for f in sorted((corpus / "_background_noise_").iterdir()):
        (out / "_background_noise_" / f.name).symlink_to(f)
    tests = sorted(r["path"] for r in kept if not train(r))
    (out / "testing_list.txt").write_text("".join(p + "\n" for p in tests))
    (out / "validation_list.txt").write_text("")
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, [k for k in rows[0] if k != ROOT_KEY], extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(kept)
    return len(kept) - len(tests), len(tests)


def train_and_test(recipe, corpus, rows, tmp: Path, name: str, train, groups: dict, augment) -> dict:
    """Train on the view `train` picks (with the augmentations named), then test on each group's view."""
    view = tmp / name
    n_train, _ = make_view(corpus, view, rows, train, lambda r: False)
    (view / "testing_list.txt").write_text("")
    data = {**recipe.data, "path": str(view), "augment": list(augment), "augment_copies":
            recipe.data["augment_copies"] if augment else 0, "test_split": "train", "max_test": 1}
    t0 = time.perf_counter()
    r = run(dataclasses.replace(recipe, data=data))
    weights = r["_arrays"]["weights"]
    row = {"name": name, "augment": list(augment), "train_clips": n_train, "train_seconds": time.perf_counter() - t0,
           "train_accuracy": r["train_curve"][-1]["accuracy"], "state_digest": r["state_digest"], "groups": {}}
    for i, (g, pick) in enumerate(groups.items()):
        gv = tmp / f"{name}--group{i}"
        _, n_test = make_view(corpus, gv, rows, lambda r: False, pick)
        if not n_test:
            continue
        test = eval_recipe(dataclasses.replace(recipe, data={**recipe.data, "path": str(gv)}), "test", 64)
        e = run(test, weights=weights)
        row["groups"][g] = {"clips": e["n_test"], "accuracy": e["accuracy"],
                            "balanced_accuracy": e["balanced_accuracy"]}
        print(f"  {name} on {g}: balanced {e['balanced_accuracy']:.3f} ({e['n_test']} clips)", file=sys.stderr)
    return row


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--experiments", default="loeo,ablation")
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "eprop_kws.toml"))
    ap.add_argument("--corpus", help="a corpus made by s2emu synth (default: the recipe's [data.synth] corpus)")
    ap.add_argument("--extra-corpus", action="append", default=[], metavar="DIR",
                    help="another corpus made by s2emu synth (e.g. more voices) whose clips join the corpus's "
                         "(its train clips train, its test clips are held out; file names must not collide)")
    ap.add_argument("--epochs", type=int, help="override the recipe's epochs")
    ap.add_argument("--seed", type=int,
                    help="override the recipe's seed (initial weights, augmentation draws, silence windows)")
    ap.add_argument("--cmn", action="store_true",
                    help="an experiment: features with each channel's mean over the clip removed as well "
                         "(host/features.py normalise centre=True), computed afresh in a cache of their own")
    ap.add_argument("--max-train", type=int, default=0, help="train on a seeded subset of N clips (0: all)")
    ap.add_argument("--train-fraction", type=float, default=1.0,
                    help="train on this share of the training clips, picked by a hash of their paths (before "
                         "augmentation, so quick runs augment fewer clips)")
    ap.add_argument("--ablation-engine", default="festival", help="the engine left out in the ablation and reg")
    ap.add_argument("--variants", help="ablation: only these runs, e.g. 'none,without vtlp' (default: all, none "
                    "and each augmentation left out)")
    ap.add_argument("--reg-rate", type=float, default=10.0, help="reg: firing-rate regularization c_reg")
    ap.add_argument("--target-rate-hz", type=float, default=10.0, help="reg: its target rate")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe).with_overrides(epochs=args.epochs, seed=args.seed)
    # no spike recording: only the accuracies are wanted, and a recording of every tick costs minutes
    recipe = dataclasses.replace(recipe, data={**recipe.data, "max_train": args.max_train}, record_spikes=())
    corpus = Path(args.corpus or corpus_path(recipe.data)).resolve()
    with open(corpus / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for extra in args.extra_corpus:
        extra = Path(extra).resolve()
        with open(extra / "manifest.csv", newline="") as f:
            more = [{**r, ROOT_KEY: str(extra)} for r in csv.DictReader(f)]
        clash = {r["path"] for r in rows} & {r["path"] for r in more}
        if clash:
            raise SystemExit(f"--extra-corpus {extra}: {len(clash)} clips share a path with the corpus's "
                             f"(e.g. {min(clash)})")
        rows += more
    engines = sorted({r["engine"] for r in rows})
    augment = tuple(recipe.data["augment"]) if recipe.data["augment_copies"] else AUGMENTATIONS
    if not recipe.data["augment_copies"]:
        recipe = dataclasses.replace(recipe, data={**recipe.data, "augment_copies": 1})
    wanted = [x.strip() for x in args.experiments.split(",") if x.strip()]

    def picked(r):  # the --train-fraction share of the training clips, the same in every run
        return int(hashlib.sha256(r["path"].encode()).hexdigest()[:8], 16) < args.train_fraction * 16**8
    out = {"recipe": recipe.name, "corpus": str(corpus), "extra_corpora": args.extra_corpus,
           "epochs": recipe.schedule.epochs, "seed": recipe.seed, "cmn": args.cmn,
           "augment_copies": recipe.data["augment_copies"], "max_train": args.max_train,
           "train_fraction": args.train_fraction, "engines": engines,
           "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "loeo": [], "ablation": [], "reg": []}

    def groups_without(left_out):
        g = {f"{left_out} (left out, all voices)": lambda r: r["engine"] == left_out}
        g.update({f"{e} held-out voices": (lambda e: lambda r: r["engine"] == e and r["split"] == "test")(e)
                  for e in engines if e != left_out})
        return g

    with tempfile.TemporaryDirectory(prefix="s2emu-voices-") as tmp:
        tmp = Path(tmp)
        if args.cmn:  # the corpus is found already; its features, cached by content, must not be the plain ones
            os.environ["S2EMU_CACHE"] = str(tmp / "cmn-features")
            features.normalise = functools.partial(features.normalise, centre=True)
        if "loeo" in wanted:
            for e in engines:
                print(f"leave out {e}", file=sys.stderr)
                out["loeo"].append({"left_out": e, **train_and_test(
                    recipe, corpus, rows, tmp, f"loeo-{e}", lambda r, e=e: r["split"] == "train" and r["engine"] != e and picked(r),
                    groups_without(e), augment)})
        if "ablation" in wanted:
            e = args.ablation_engine
            variants = {"all": augment, "none": ()}
            variants.update({f"without {a}": tuple(x for x in augment if x != a) for a in augment})
            if args.variants:
                chosen = [v.strip() for v in args.variants.split(",")]
                unknown = [v for v in chosen if v not in variants]
                if unknown:
                    raise SystemExit(f"--variants: no variant {unknown[0]!r} (known: {', '.join(variants)})")
                variants = {v: variants[v] for v in chosen}
            for name, aug in variants.items():
                print(f"ablation: {name}", file=sys.stderr)
                out["ablation"].append({"left_out": e, "variant": name, **train_and_test(
                    recipe, corpus, rows, tmp, f"ablation-{name.replace(' ', '-')}",
                    lambda r: r["split"] == "train" and r["engine"] != e and picked(r), groups_without(e), aug)})

        if "reg" in wanted:
            e = args.ablation_engine
            reg = dataclasses.replace(recipe, learning=dataclasses.replace(
                recipe.learning, reg_rate=args.reg_rate, target_rate_hz=args.target_rate_hz))
            print(f"reg: c_reg {args.reg_rate:g}, target {args.target_rate_hz:g} Hz", file=sys.stderr)
            out["reg"].append({"left_out": e, "variant": f"all, c_reg {args.reg_rate:g} to {args.target_rate_hz:g} Hz",
                               "reg_rate": args.reg_rate, "target_rate_hz": args.target_rate_hz, **train_and_test(
                                   reg, corpus, rows, tmp, "reg", lambda r: r["split"] == "train"
                                   and r["engine"] != e and picked(r), groups_without(e), augment)})

    md = [f"Keyword model on voices it never heard ({out['date']}); recipe `{recipe.name}`, "
          f"{out['epochs']} epochs, {out['augment_copies']} augmented copies per clip; balanced accuracy, chance "
          f"0.083. Command: `python benchmarks/kws_voices.py --experiments {args.experiments}"
          f"{f' --epochs {args.epochs}' if args.epochs else ''}"
          f"{f' --seed {args.seed}' if args.seed is not None else ''}"
          f"{' --cmn' if args.cmn else ''}"
          f"{f' --max-train {args.max_train}' if args.max_train else ''}"
          f"{f' --train-fraction {args.train_fraction:g}' if args.train_fraction < 1 else ''}"
          f"{f' --variants {chr(34)}{args.variants}{chr(34)}' if args.variants else ''}"
          f"{''.join(f' --extra-corpus {x}' for x in args.extra_corpus)}"
          f"{f' --ablation-engine {args.ablation_engine}' if args.ablation_engine != 'festival' else ''}"
          f"{f' --out {args.out}' if args.out != str(RESULTS) else ''}`.", ""]
    for key, title in (("loeo", "Leave one engine out"), ("ablation", f"Ablation, {args.ablation_engine} left out"),
                       ("reg", f"Firing-rate regularization, {args.ablation_engine} left out")):
        if not out[key]:
            continue
        names = list(dict.fromkeys(g for row in out[key] for g in row["groups"]))
        md += [f"### {title}", "", "| run | train clips | " + " | ".join(names) + " |",
               "|---|---|" + "---|" * len(names)]
        for row in out[key]:
            cells = [f"{row['groups'][g]['balanced_accuracy']:.3f}" if g in row["groups"] else "-" for g in names]
            md.append(f"| {row.get('variant', row['name'])} | {row['train_clips']:,} | " + " | ".join(cells) + " |")
        md.append("")
    write_results(args.out, "kws_voices", out, md)


if __name__ == "__main__":
    main()
