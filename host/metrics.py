"""Classification metrics reported by every run (JSON keys `accuracy`, `balanced_accuracy`, `chance`)."""

from __future__ import annotations

import numpy as np


def confusion(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(truth, int), np.asarray(pred, int)), 1)
    return m


def accuracy(truth, pred) -> float:
    truth, pred = np.asarray(truth), np.asarray(pred)
    return float(np.mean(truth == pred)) if len(truth) else float("nan")


def balanced_accuracy(truth, pred, n_classes: int) -> float:
    """Mean recall over the classes present in `truth` (robust to class imbalance)."""
    m = confusion(truth, pred, n_classes)
    support = m.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(m)[present] / support[present]))


def cross_entropy(scores: np.ndarray, labels: np.ndarray) -> float:
    s = scores - scores.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(labels)), labels]))
