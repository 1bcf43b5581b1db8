"""A PE that runs a layered (non-spiking) network: ReLU layers and a softmax output, sparse weights trained with
DEEP R (cores/deepr.py), batch-1 SGD as on the chip (SCIENCE.md seed B).

Timing (cores/timing.py, T = 1 frame per sample, S = 3 ticks):

    s = 0   host sends the pixels (and the label, P2P)
    s = 1   the PE runs the forward pass, and when the sample trains: the loss, the backward pass, the DEEP R
            update and, every `rewire_every` samples, the rewiring
    s = 2   the PE sends the output layer's values to the host (which reads sample k's values at s = 0 of k+1)

Everything this PE keeps is in its SRAM ledger: the sparse layers (uint16 row, uint16 column, float32 theta and
a sign bit per active connection), and one activation and one error vector per layer.
"""

from __future__ import annotations

import numpy as np

from s2emu.errors import PacketError
from s2emu.router.packets import PacketBatch

from .deepr import SparseLayer, budget
from .pe import LABEL_TAG, ProcessingElement


class LayeredPE(ProcessingElement):
    def __init__(self, config: dict):
        super().__init__(config)
        L = self.ledger
        self.layers = config["layers"]  # per projection: name, n_pre, n_post, lo, hi, connectivity, init_scale, weights
        self.seed = int(config["seed"])
        self.sparse, self.act, self.delta = [], [], []
        self.act.append(L.alloc(f"{self.layers[0]['pre']}.values", (self.layers[0]["n_pre"],), batched=True))
        for i, ly in enumerate(self.layers):
            k = budget(ly["n_pre"], ly["n_post"], ly["connectivity"])
            sl = SparseLayer(L, ly["name"], ly["n_pre"], ly["n_post"], ly["lo"], ly["hi"], k, i, self.seed)
            if ly.get("weights") is not None:
                self._load(sl, ly["weights"])
            else:  # K connections drawn uniformly over the layer, thetas |N(0, 1)| * init_scale / sqrt(fan-in)
                fan_in = k / ly["n_post"]
                sl.rewire(np.zeros(ly["n_post"], np.int64), k, 0, init_scale=ly["init_scale"] / np.sqrt(fan_in))
            self.sparse.append(sl)
            self.act.append(L.alloc(f"{ly['post']}.values", (ly["hi"] - ly["lo"],), batched=True))
            self.delta.append(L.alloc(f"{ly['post']}.errors", (ly["hi"] - ly["lo"],), batched=True))
        self.labels = L.alloc("label", (1,), np.int32, batched=True)
        self.n_out = self.layers[-1]["n_post"]
        self.value_keys = np.asarray(config["out_keys"], dtype=np.uint32)
        self.counters.update(macs=0, dormant=0, rewired=0)

    @staticmethod
    def _load(sl: SparseLayer, w: np.ndarray):
        """Start from a trained model's dense slice: its nonzero weights are the active connections."""
        rows, cols = np.nonzero(np.asarray(w).T)[::-1]  # sorted by (column, row), as the storage keeps them
        n = len(rows)
        if n > sl.capacity:
            raise PacketError(f"{sl.name}: the model has {n} nonzero weights, more than K = {sl.capacity}")
        vals = np.asarray(w)[rows, cols].astype(np.float32)
        sl.rows[:n], sl.cols[:n], sl.theta[:n] = rows, cols + sl.lo, np.abs(vals)
        sl.signs[:] = 0
        sl.signs[:(n + 7) // 8] = np.packbits((vals < 0).astype(np.uint8), bitorder="little")
        sl.n = n

    def step(self, tick: int, inbound: PacketBatch | None) -> PacketBatch:
        x, err, inbound = self._decode(inbound)
        if err is not None:
            raise PacketError(f"{self.label}: a layered PE receives no error packets")
        if inbound is not None and len(inbound.p2p_dest):
            self._take_labels(inbound)
        sample, s = self.clock.where(tick)
        if s == 1 and sample < self.clock.n_samples:
            self.act[0][...] = x[0] if x[0] is not None else 0
            self._forward()
            if self.learning and self.clock.learns(sample):
                self._backward()
                self._update(sample)
        if s == 2:
            return self._out(tick, mcp_keys=self.value_keys, mcp_payload=self.act[-1].T)
        return self._out(tick)

    def _take_labels(self, inbound: PacketBatch):
        sel = inbound.p2p_tag == LABEL_TAG
        if not sel.all() or sel.sum() != 1:
            raise PacketError(f"{self.label}: expected one label packet (P2P tag {LABEL_TAG}) per sample")
        lab = inbound.p2p_payload[sel][0]
        if np.any(lab >= self.n_out):
            raise PacketError(f"{self.label}: label {int(lab.max())} out of range for {self.n_out} classes")
        self.labels[:, 0] = lab

    def _forward(self):
        for i, sl in enumerate(self.sparse):
            for b in range(self.B):
                self.act[i + 1][b] = sl.forward(self.act[i][b])
            self.counters["macs"] += sl.n * self.B
            if i < len(self.sparse) - 1:
                np.maximum(self.act[i + 1], 0, out=self.act[i + 1])

    def _backward(self):
        """Softmax cross-entropy error at the output, then through each layer: delta = (W delta') * relu'."""
        z = self.act[-1][0]
        p = np.exp(z - z.max())
        p /= p.sum()
        p[self.labels[0, 0]] -= 1
        self.delta[-1][0] = p
        for i in range(len(self.sparse) - 1, 0, -1):
            acc = np.zeros(self.layers[i]["n_pre"], np.float32)
            self.sparse[i].backward(self.delta[i][0], acc)
            self.counters["macs"] += self.sparse[i].n
            self.delta[i - 1][0] = acc * (self.act[i][0] > 0)

    def _update(self, sample: int):
        lc, lr = self.lc, self.lr_for(sample)
        self.updates += 1
        for i, sl in enumerate(self.sparse):
            self.counters["dormant"] += sl.update(self.act[i][0], self.delta[i][0], lr=lr, l1=lc["l1"],
                                                  noise=lc["noise"], sample=sample)
            self.counters["macs"] += sl.n
        if self.updates % lc["rewire_every"] == 0:
            round_ = self.updates // lc["rewire_every"]
            for i, sl in enumerate(self.sparse):
                before = sl.n
                sl.rewire(sl.active_per_column(), sl.capacity, round_)
                self.counters["rewired"] += sl.n - before
        self.counters["updates"] += 1

    def weights(self) -> dict[str, np.ndarray]:
        return {ly["name"]: sl.dense() for ly, sl in zip(self.layers, self.sparse)}

    def active_connections(self) -> dict[str, int]:
        return {ly["name"]: sl.n for ly, sl in zip(self.layers, self.sparse)}

    def recordings(self) -> dict:
        return {}
