"""DEEP R on the emulated chip against dense training of the same LeNet-300-100, on the bundled MNIST subset.

    python benchmarks/deepr_mnist.py [--epochs 20] [--skip-seed-settings]

Three rows, one run each (seeded, deterministic):
  * DEEP R on one emulated 64 KB PE with the recipe's settings (recipes/deepr_mnist.toml);
  * DEEP R on the chip with the seed's settings (lr 0.05 halved every 2 epochs, L1 1e-5, noise 3e-4);
  * dense batch-1 SGD of the same network (784-300-100-10, no biases, ReLU, softmax cross-entropy, the recipe's
    learning-rate schedule), in numpy on the host: its 266,200 float32 weights (1,064,800 B) fit no PE.
Writes deepr_mnist.json and deepr_mnist.md.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from _results import arguments, write_results

from s2emu.host.datasets import load_dataset
from s2emu.recipe import load_recipe
from s2emu.build import build
from s2emu.runner import run, sparse_weight_bytes

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "deepr_mnist.toml"


def dense_sgd(recipe, epochs: int, lr0: float) -> dict:
    """Batch-1 SGD of the dense network, He-initialised, in the recipe's sample order and lr decay, from lr0
    (dense weights take a smaller step than DEEP R's thetas: at the recipe's 0.1 dense SGD diverges)."""
    data = load_dataset(recipe.data, recipe.seed)
    x_tr, x_te = data.x_train[:, 0], data.x_test[:, 0]
    sizes = [recipe.network[p.pre].size for p in recipe.network.projections] + [recipe.network.readout.size]
    rng = np.random.default_rng(recipe.seed)
    W = [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32) for a, b in zip(sizes, sizes[1:])]
    lc = recipe.learning
    t0 = time.perf_counter()
    curve = []
    for e in range(epochs):
        lr = np.float32(lr0 * lc.lr_decay ** (e // lc.lr_decay_every if lc.lr_decay_every else 0))
        for i in np.random.default_rng([recipe.seed, 0xE9, e]).permutation(len(x_tr)):
            acts = [x_tr[i]]
            for k, w in enumerate(W):
                a = acts[-1] @ w
                acts.append(np.maximum(a, 0) if k < len(W) - 1 else a)
            p = np.exp(acts[-1] - acts[-1].max())
            d = p / p.sum()
            d[data.y_train[i]] -= 1
            for k in range(len(W) - 1, -1, -1):
                grad = np.outer(acts[k], d)
                if k:
                    d = (W[k] @ d) * (acts[k] > 0)
                W[k] -= lr * grad
        h = x_te
        for k, w in enumerate(W):
            h = h @ w
            h = np.maximum(h, 0) if k < len(W) - 1 else h
        curve.append(float((h.argmax(1) == data.y_test).mean()))
        print(f"dense epoch {e + 1}: test accuracy {curve[-1]:.4f}", file=sys.stderr)
    return {"rule": f"dense SGD, lr {lr0} (host numpy reference)", "accuracy": curve[-1], "test_curve": curve,
            "weights": int(sum(w.size for w in W)), "weight_bytes": int(sum(w.nbytes for w in W)),
            "connectivity": 1.0, "wall_seconds": time.perf_counter() - t0, "fits_one_pe": False}


def chip(recipe, label: str) -> dict:
    r = run(recipe)
    weights_b = sparse_weight_bytes(build(recipe, streams=1, load_data=False))
    active = recipe.network.n_active_weights
    print(f"{label}: test accuracy {r['accuracy']:.4f}", file=sys.stderr)
    return {"rule": label, "accuracy": r["accuracy"], "balanced_accuracy": r["balanced_accuracy"],
            "test_curve": [c["accuracy"] for c in r["test_curve"]], "train_curve": r["train_curve"],
            "weights": active, "weight_bytes": weights_b, "connectivity": active / recipe.network.n_weights,
            "total_bytes": r["total_bytes"], "wall_seconds": r["wall_seconds"], "fits_one_pe": True,
            "state_digest": r["state_digest"], "pe_counters": r["pe_counters"]}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--skip-seed-settings", action="store_true")
    ap.add_argument("--dense-lr", type=float, default=0.01)
    args = ap.parse_args()
    recipe = load_recipe(str(RECIPE))
    epochs = args.epochs or recipe.schedule.epochs
    recipe = recipe.with_overrides(epochs=epochs)
    rows = [chip(recipe, "DEEP R, recipe settings (one 64 KB PE)")]
    if not args.skip_seed_settings:
        seed_lc = dataclasses.replace(recipe.learning, lr=0.05, lr_decay=0.5, lr_decay_every=2, l1=1e-5, noise=3e-4)
        rows.append(chip(dataclasses.replace(recipe, learning=seed_lc), "DEEP R, the seed's settings (one 64 KB PE)"))
    rows.append(dense_sgd(recipe, epochs, args.dense_lr))
    data = load_dataset(recipe.data, recipe.seed)
    out = {"benchmark": "deepr_mnist", "date": time.strftime("%Y-%m-%d"), "epochs": epochs,
           "train_samples": len(data.y_train), "test_samples": len(data.y_test), "rows": rows}
    md = [f"LeNet-300-100 on the bundled MNIST subset ({out['train_samples']:,} train / {out['test_samples']:,} "
          f"test digits), {epochs} epochs, batch 1, {out['date']}. Command: `python benchmarks/deepr_mnist.py`.", "",
          "| learning rule | test accuracy | active weights | connectivity | SRAM of the PE (B) | wall s |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        sram = f"{r['total_bytes']:,}" if r.get("total_bytes") else f"({r['weight_bytes']:,} B of weights: fits no PE)"
        md.append(f"| {r['rule']} | {r['accuracy']:.4f} | {r['weights']:,} | {100 * r['connectivity']:.2f}% | "
                  f"{sram} | {r['wall_seconds']:.0f} |")
    write_results(args.out, "deepr_mnist", out, md)


if __name__ == "__main__":
    main()
