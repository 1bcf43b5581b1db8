"""PNG figures of a run: training curve, confusion matrix, spike raster of one clip (matplotlib, optional).

`pip install -e ".[plots]"` brings matplotlib; without it, runs still work and say that no figures were made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    return plt


def training_curve(result: dict, path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    tc = result["train_curve"]
    if tc:
        ax.plot([p["epoch"] for p in tc], [p["accuracy"] for p in tc], "o-", label="train accuracy")
        ax2 = ax.twinx()
        ax2.plot([p["epoch"] for p in tc], [p["loss"] for p in tc], "s--", color="tab:red", label="train loss")
        ax2.set_ylabel("train loss (cross-entropy)")
        ax2.legend(loc="center right")
    te = result["test_curve"]
    ax.plot([p["epoch"] for p in te], [p["accuracy"] for p in te], "D", color="tab:green", ms=8,
            label=f"test accuracy (balanced {result['balanced_accuracy']:.3f})")
    ax.axhline(result["chance"], color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title(f"{result['recipe']}: training on {result['engine']}, {result['pes']} PEs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_matrix(result: dict, path) -> None:
    plt = _pyplot()
    cm = np.asarray(result["confusion"], float)
    names = result.get("classes") or [str(k) for k in range(len(cm))]
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(cm)):
        for j in range(len(cm)):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test confusion: accuracy {result['accuracy']:.3f}, balanced {result['balanced_accuracy']:.3f}")
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def spike_raster(spikes: np.ndarray, first_tick: int, n_ticks: int, n_neurons: int, per_pe: int, path,
                 title: str) -> None:
    """spikes: rows (tick, stream, neuron) of one population; draws stream 0 over [first_tick, +n_ticks)."""
    plt = _pyplot()
    s = spikes[(spikes[:, 1] == 0) & (spikes[:, 0] >= first_tick) & (spikes[:, 0] < first_tick + n_ticks)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.scatter((s[:, 0] - first_tick) * 10, s[:, 2], s=4, c=s[:, 2] // max(per_pe, 1), cmap="tab20", marker="|")
    for b in range(per_pe, n_neurons, per_pe):
        ax.axhline(b - 0.5, color="grey", lw=0.3)
    ax.set_xlim(0, n_ticks * 10)
    ax.set_ylim(-0.5, n_neurons - 0.5)
    ax.set_xlabel("time in the clip (ms; one tick = 10 ms)")
    ax.set_ylabel(f"neuron (lines: PE boundaries, {per_pe} per PE)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_run_figures(result: dict, recipe, out_dir) -> list[str]:
    out = Path(out_dir)
    paths = [out / "training_curve.png", out / "confusion.png"]
    training_curve(result, paths[0])
    confusion_matrix(result, paths[1])
    spikes = result["_arrays"]["spikes"]
    if spikes:
        name = next(iter(spikes))
        pop = recipe.network[name]
        steps, ticks = result["steps_per_sample"], result["ticks"]
        first = ticks - 1 - (steps + 2)  # the last sample of the run (N*S + 1 ticks): a test clip, stream 0
        per_pe = pop.max_atoms_per_core or pop.size
        paths.append(out / "spike_raster.png")
        spike_raster(spikes[name], first, steps + 2, pop.size, per_pe, paths[2],
                     f"{name}: spikes of one test clip (the run's last sample, stream 0)")
    return [str(p) for p in paths]
