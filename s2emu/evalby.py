"""`s2emu eval --by engine|voice`: accuracy per group of clips, the groups named by the corpus's manifest.csv.

The evaluation keeps the class heard for every test clip, in the order the loader reads them, so each group's
figures come from the one run. Where that order is not known (clips skipped as unreadable), each group is
evaluated on its own instead: a view of the corpus (a temporary folder holding the group's clips as its test
split, and the background noise) runs through the same model. Clips are independent streams and every engine and batch gives the same bits, so the
group's rows of that confusion matrix are the rows its clips have in the whole run. The view's own silence
windows are left out; the whole run's silence windows are the group `_silence_` (they belong to no voice), so
the groups' counts add up to the run's `n_test`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from .errors import S2EmuError
from .host.speech_commands import (CLIP_MANIFEST, NOISE_DIR, SILENCE, SPLITS, Corpus, clip_manifest,
                                   index_splits)

GROUP_KEYS = ("engine", "voice")


def _metrics(confusion, rows: slice) -> dict:
    """n, accuracy and balanced accuracy of some rows (true classes) of a confusion matrix."""
    m = np.asarray(confusion)
    keep = np.zeros_like(m)
    keep[rows] = m[rows]
    n = int(keep.sum())
    support = keep.sum(axis=1)
    present = support > 0
    diag = np.diag(keep)
    return {"n": n, "accuracy": float(diag.sum() / n) if n else float("nan"),
            "balanced_accuracy": float(np.mean(diag[present] / support[present])) if present.any() else float("nan")}


def clip_groups(recipe, by: str) -> dict[str, list]:
    """{group: the clips of the evaluated split in it}, from the corpus's manifest.csv: checked before the
    evaluation runs, so a corpus without one fails at once."""
    if by not in GROUP_KEYS:
        raise S2EmuError(f"--by {by}: group by one of {', '.join(GROUP_KEYS)}")
    d = recipe.data
    if d.get("kind") != "speech_commands":
        raise S2EmuError(f"--by needs a corpus with a {CLIP_MANIFEST} (data kind 'speech_commands'), "
                         f"not data kind '{d.get('kind')}'")
    if d.get("max_test"):
        raise S2EmuError("--by evaluates every clip of the split: the recipe's max_test must be 0")
    corpus = Corpus(d["path"])
    rows = clip_manifest(corpus)
    if rows is None:
        raise S2EmuError(f"{d['path']}: no {CLIP_MANIFEST}, so its clips have no engine or voice; --by needs a "
                         f"corpus made by `s2emu synth` (the bundled data/kws_synth.tar.xz predates manifests)")
    index = index_splits(corpus, tuple(d["words"]))
    split = d["test_split"]
    clips = [p for s in (SPLITS if split == "all" else (split,)) for p in index[s].paths if p is not None]
    groups: dict[str, list] = {}
    for p in clips:
        if p not in rows:
            raise S2EmuError(f"{d['path']}: clip {p} is not in {CLIP_MANIFEST}")
        groups.setdefault(rows[p][by], []).append(p)
    return groups


def evaluate_by(recipe, groups: dict[str, list], result: dict, run_group) -> dict:
    """{group: {"n", "accuracy", "balanced_accuracy"}} of an evaluation `result` of `recipe` over all the
    clips of `groups`; run_group(recipe) evaluates a recipe the way `result` was made (same model, engine and
    batch) and returns its result (only when the run's own predictions cannot be matched to its clips)."""
    from .host.metrics import confusion
    d = recipe.data
    pred = result.get("_arrays", {}).get("predictions")
    if pred is not None and not result.get("skipped_files"):
        index = index_splits(Corpus(d["path"]), tuple(d["words"]))
        split = d["test_split"]
        order = [(p, y) for s in (SPLITS if split == "all" else (split,)) if len(index[s].labels)
                 for p, y in zip(index[s].paths, index[s].labels)]
        if len(order) == len(pred):  # the loader's order: each split's clips, then its silence windows
            truth = np.array([y for _, y in order])
            where = {}
            for i, (p, _) in enumerate(order):
                where.setdefault(SILENCE if p is None else p, []).append(i)
            out = {}
            n = len(result["classes"])
            for name, clips in groups.items():
                rows = [i for p in clips for i in where.get(p, [])]
                out[name] = _metrics(confusion(truth[rows], pred[rows], n), slice(None))
            if where.get(SILENCE):
                out[SILENCE] = _metrics(confusion(truth[where[SILENCE]], pred[where[SILENCE]], n), slice(None))
            return out
    corpus = Corpus(d["path"])
    clips = [p for ps in groups.values() for p in ps]
    noise = [f for f in corpus.files if f.startswith(NOISE_DIR + "/") and f.endswith(".wav")]
    out = {}
    whole = np.asarray(result["confusion"])
    total = np.zeros_like(whole)
    total[0] = whole[0]
    with tempfile.TemporaryDirectory(prefix="s2emu-by-") as tmp:
        views = {name: Path(tmp) / f"group{i}" for i, name in enumerate(sorted(groups))}
        group_of = {p: name for name, ps in groups.items() for p in ps}
        rels = [*clips, *noise]
        for i in corpus.reading_order(rels):  # an archive is read once, front to back
            rel = rels[i]
            data = corpus.read(rel)
            for view in ([views[group_of[rel]]] if rel in group_of else views.values()):
                (view / rel).parent.mkdir(parents=True, exist_ok=True)
                (view / rel).write_bytes(data)
        for name, view in views.items():
            (view / "testing_list.txt").write_text("".join(p + "\n" for p in groups[name]))
            got = run_group(dataclasses.replace(recipe, data={**d, "path": str(view), "test_split": "test"}))
            out[name] = _metrics(got["confusion"], slice(1, None))  # row 0: the view's own silence windows
            total[1:] += np.asarray(got["confusion"])[1:]
    if not np.array_equal(total, whole):  # the premise above: a clip is heard alike in the group and the whole
        raise S2EmuError(f"--by: the groups' clips were heard differently than in the whole run "
                         f"(confusion {total.tolist()} != {whole.tolist()})")
    if result["classes"][0] == SILENCE and np.asarray(result["confusion"])[0].sum():
        out[SILENCE] = _metrics(result["confusion"], slice(0, 1))
    return out
