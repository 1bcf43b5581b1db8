"""Adam with L2, as in ../shared/SCIENCE.md, over arrays allocated in the PE's SRAM ledger (float32, elementwise,
so every split of a weight matrix over PEs updates each weight identically)."""

from __future__ import annotations

import copy

import numpy as np

from .sram import SramLedger


class Adam:
    def __init__(self, ledger: SramLedger, name: str, shape, *, beta1: float, beta2: float, eps: float, l2: float,
                 counts: dict | None = None):
        """counts: the PE's counters; each step adds the weights it updates to `optimizer_elements`."""
        self.counts = counts
        self.m = ledger.alloc(f"{name}.adam_m", shape)
        self.v = ledger.alloc(f"{name}.adam_v", shape)
        self.beta1, self.beta2 = np.float32(beta1), np.float32(beta2)
        self.eps, self.l2 = np.float32(eps), np.float32(l2)

    def step(self, w: np.ndarray, grad: np.ndarray, lr: float, t: int) -> None:
        """In-place update of w by gradient grad at step t >= 1 (grad is overwritten)."""
        if self.l2:
            grad += self.l2 * w
        self.m *= self.beta1
        self.m += (1 - self.beta1) * grad
        self.v *= self.beta2
        self.v += (1 - self.beta2) * (grad * grad)
        c1 = np.float32(1.0 - float(self.beta1) ** t)
        c2 = np.float32(1.0 - float(self.beta2) ** t)
        w -= np.float32(lr) * (self.m / c1) / (np.sqrt(self.v / c2) + self.eps)
        if self.counts is not None:
            self.counts["optimizer_elements"] += w.size

    def on(self, m: np.ndarray, v: np.ndarray) -> "Adam":
        """The same optimizer over other moment arrays (a group's, cores/group.py, whose arrays hold its
        members' side by side); it counts nothing (the group counts for each member)."""
        twin = copy.copy(self)
        twin.m, twin.v, twin.counts = m, v, None
        return twin

    def state(self) -> dict:
        return {"m": self.m, "v": self.v}
