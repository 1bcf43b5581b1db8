"""A PE that runs a layered (non-spiking) network: ReLU layers and a softmax output, sparse weights trained with
DEEP R (cores/deepr.py), batch-1 SGD as on the chip (SCIENCE.md seed B).

Split over P PEs, PE p holds column slice p of every layer (its post neurons and their incoming connections).
A sample of L layers takes S = T + 5 + 2P ticks (L = 3; cores/timing.py), all PEs in step:

    s = 0              host sends the pixels to every PE, and the label (P2P) to every PE
    s = 1 .. L         forward: layer l's slice from the full activations of layer l-1; its values go to all PEs
    s = L + 1          output error: softmax of the full logits minus the one-hot label, for the PE's slice
    then, for each projection j = L-1 .. 1, P ticks of a chain: PE p adds sum over its columns of w * delta to
                       the partial sums of the n_pre rows that PE p-1 handed it, and hands them to PE p+1; the
                       last PE sends the finished sums to all PEs, which take their slice's error (times ReLU')
    s = S - 2          every PE updates its connections (DEEP R); when a rewiring is due, sends its per-column
                       active counts to all PEs
    s = S - 1          rewiring (every PE draws the same positions and adds its own); the output layer's values
                       go to the host, which reads them at s = 0 of the next sample

On one PE nothing needs to travel: every step runs at s = 1 and the values leave at s = 2 (S = T + 2).

Why the bits do not depend on P: a column's forward sum runs over its rows in ascending order inside one PE;
the chain visits columns in ascending order for every row, which is the order one PE's storage visits them
(cores/deepr.py); updates are elementwise; random numbers are hashed from positions, and every PE knows every
column's active count before a rewiring.
"""

from __future__ import annotations

import numpy as np

from s2emu.errors import PacketError
from s2emu.router.packets import PacketBatch

from .deepr import SparseLayer, budget
from .pe import ProcessingElement

KIND_ACTS, KIND_CHAIN, KIND_COUNTS = 0, 2, 3  # what an inbound key means: `proj` is a buffer or layer index


def layered_depth(n_pes: int, n_layers: int = 3) -> int:
    """Ticks of a sample beyond its one frame (cores/timing.py depth)."""
    return 2 if n_pes == 1 else n_layers + 2 + (n_layers - 1) * n_pes


def slice_capacity(k: int, n_pre: int, n_post: int, cols: int, n_pes: int) -> int:
    """Connections a column slice can hold: K on one PE; split, its share of K with room for DEEP R moving
    connections between columns (1.5x + 8), at most every position of the slice."""
    if n_pes == 1:
        return k
    return min(n_pre * cols, int(np.ceil(1.5 * k * cols / n_post)) + 8)


class LayeredPE(ProcessingElement):
    STATE_ATTRS = ("rewire_due", "active")

    @property
    def active(self) -> list[int]:
        """Active connections per layer (each SparseLayer keeps them in storage positions [0, n))."""
        return [sl.n for sl in self.sparse]

    @active.setter
    def active(self, counts: list[int]) -> None:
        for sl, n in zip(self.sparse, counts):
            sl.n = int(n)

    def __init__(self, config: dict):
        super().__init__(config)
        L = self.ledger
        self.layers = config["layers"]  # per projection: name, pre, post, n_pre, n_post, lo, hi, connectivity, ...
        self.P, self.p = int(config["n_pes"]), int(config["pe_index"])
        self.solo = self.P == 1
        self.seed = int(config["seed"])
        n_layers = len(self.layers)
        self.sparse, self.act, self.delta, self.acc, self.counts, self.k = [], [], [], {}, [], []
        self.act.append(L.alloc(f"{self.layers[0]['pre']}.values", (self.layers[0]["n_pre"],), batched=True))
        for i, ly in enumerate(self.layers):
            k = budget(ly["n_pre"], ly["n_post"], ly["connectivity"])
            cap = slice_capacity(k, ly["n_pre"], ly["n_post"], ly["hi"] - ly["lo"], self.P)
            sl = SparseLayer(L, ly["name"], ly["n_pre"], ly["n_post"], ly["lo"], ly["hi"], cap, i, self.seed)
            if ly.get("weights") is not None:
                self._load(sl, ly["weights"])
            else:  # K connections drawn uniformly over the layer, thetas |N(0, 1)| * init_scale / sqrt(fan-in)
                sl.rewire(np.zeros(ly["n_post"], np.int64), k, 0, init_scale=ly["init_scale"] / np.sqrt(k / ly["n_post"]))
            self.sparse.append(sl)
            self.k.append(k)
            self.act.append(L.alloc(f"{ly['post']}.values", (ly["n_post"],), batched=True))  # whole layer
            if self.learning:
                self.delta.append(L.alloc(f"{ly['post']}.errors", (ly["hi"] - ly["lo"],)))  # own slice
                if i > 0:
                    self.acc[i] = L.alloc(f"{ly['pre']}.backward_sums", (ly["n_pre"],))
                if not self.solo:
                    self.counts.append(L.alloc(f"{ly['post']}.active_per_column", (ly["n_post"],), np.uint16))
        self.labels = L.alloc("label", (1,), np.int32, batched=True)
        self.n_out = self.layers[-1]["n_post"]
        keys = config["keys"]  # this PE's outbound keys: values (to the host), and acts/chain/counts when split
        self.value_keys = np.asarray(keys["values"], np.uint32)
        self.act_keys = [np.asarray(k, np.uint32) for k in keys.get("acts", [])]
        self.chain_keys = {int(j): np.asarray(k, np.uint32) for j, k in keys.get("chain", {}).items()}
        self.count_keys = [np.asarray(k, np.uint32) for k in keys.get("counts", [])]
        self.rewire_due = False
        self.counters.update(macs=0, dormant=0, rewired=0)
        # the phases of a sample, by local tick (see the module docstring)
        self.S = self.clock.ticks_per_sample
        last = n_layers - 1
        if self.solo:
            self.forward_at = {1: list(range(n_layers))}
            self.chain_at, self.finish_at = {1: list(range(last, 0, -1))}, {}
            self.error_at = self.update_at = self.rewire_at = 1
        else:
            self.forward_at = {1 + i: [i] for i in range(n_layers)}
            self.error_at = n_layers + 1
            self.chain_at, self.finish_at = {}, {}
            for n, j in enumerate(range(last, 0, -1)):  # chain of projection j: its P ticks, PE p at start + p
                start = self.error_at + n * self.P
                self.chain_at.setdefault(start + self.p, []).append(j)
                self.finish_at[start + self.P] = j
            self.update_at = self.error_at + last * self.P
            self.rewire_at = self.update_at + 1
        if self.S - 1 < self.rewire_at:
            raise ValueError(f"{self.label}: a sample of {self.S} ticks is too short for this schedule")

    @staticmethod
    def _load(sl: SparseLayer, w: np.ndarray):
        """Start from a trained model's dense slice: its nonzero weights are the active connections."""
        w = np.asarray(w)
        cols, rows = np.nonzero(w.T)  # sorted by (column, row), as the storage keeps them
        n = len(rows)
        if n > sl.capacity:
            raise PacketError(f"{sl.name}: the model has {n} nonzero weights in this slice, more than it holds "
                              f"({sl.capacity})")
        vals = w[rows, cols].astype(np.float32)
        sl.rows[:n], sl.cols[:n], sl.theta[:n] = rows, cols + sl.lo, np.abs(vals)
        sl.signs[:] = 0
        sl.signs[:(n + 7) // 8] = np.packbits((vals < 0).astype(np.uint8), bitorder="little")
        sl.n = n

    # ------------------------------------------------------------ the tick

    def step(self, tick: int, inbound: PacketBatch | None) -> PacketBatch:
        self._receive(inbound)
        sample, s = self.clock.where(tick)
        out_keys, out_vals = [], []

        def send(keys, values):  # values [n, B] or [n] (batch 1)
            out_keys.append(keys)
            out_vals.append(values.reshape(len(keys), -1).astype(np.float32))

        if sample < self.clock.n_samples:
            learn = self.learning and self.clock.learns(sample)
            for i in self.forward_at.get(s, ()):
                self._forward(i)
                if not self.solo:
                    ly = self.layers[i]
                    send(self.act_keys[i], self.act[i + 1][:, ly["lo"]:ly["hi"]].T)
            if learn:
                if s == self.error_at:
                    self._output_error()
                j = self.finish_at.get(s)
                if j is not None:
                    self._finish(j)
                for j in self.chain_at.get(s, ()):
                    if self.solo or self.p == 0:
                        self.acc[j][...] = 0
                    self.sparse[j].backward(self.delta[j], self.acc[j])
                    self.counters["macs"] += self.sparse[j].n
                    if self.solo:
                        self._finish(j)
                    else:
                        send(self.chain_keys[j], self.acc[j])
                if s == self.update_at:
                    self._update(sample)
                    if self.rewire_due and not self.solo:
                        for i, sl in enumerate(self.sparse):
                            send(self.count_keys[i], sl.active_per_column())
                if s == self.rewire_at and self.rewire_due:
                    self._rewire()
            if s == self.S - 1:
                ly = self.layers[-1]
                send(self.value_keys, self.act[-1][:, ly["lo"]:ly["hi"]].T)
        if not out_keys:
            return self._out(tick)
        return self._out(tick, mcp_keys=np.concatenate(out_keys), mcp_payload=np.concatenate(out_vals))

    def _receive(self, inbound: PacketBatch | None):
        if inbound is not None and len(inbound.mc_keys):
            raise PacketError(f"{self.label}: a layered PE receives values, not spikes")
        got = self._lookup(inbound)
        if got is None:
            return
        if len(inbound.p2p_dest):
            self.labels[:, 0] = self._labels(inbound, self.n_out)
        kind, which, row, vals, _ = got
        for b in np.unique(which[kind == KIND_ACTS]):
            sel = (kind == KIND_ACTS) & (which == b)
            self.act[b][:, row[sel]] = vals[sel].T
        for j in np.unique(which[kind == KIND_CHAIN]):
            sel = (kind == KIND_CHAIN) & (which == j)
            self.acc[j][row[sel]] = vals[sel, 0]
        for i in np.unique(which[kind == KIND_COUNTS]):
            sel = (kind == KIND_COUNTS) & (which == i)
            self.counts[i][row[sel]] = vals[sel, 0]

    # ------------------------------------------------------------ the phases

    def _forward(self, i: int):
        ly, sl = self.layers[i], self.sparse[i]
        out = self.act[i + 1][:, ly["lo"]:ly["hi"]]
        for b in range(self.B):
            out[b] = sl.forward(self.act[i][b])
        if i < len(self.layers) - 1:
            np.maximum(out, 0, out=out)
        self.counters["macs"] += sl.n * self.B

    def _output_error(self):
        """Softmax cross-entropy: delta = softmax(z) - onehot(label), for this PE's output columns."""
        z = self.act[-1][0]
        p = np.exp(z - z.max())
        p /= p.sum()
        p[self.labels[0, 0]] -= 1
        ly = self.layers[-1]
        self.delta[-1][...] = p[ly["lo"]:ly["hi"]]

    def _finish(self, j: int):
        """The backward sums of projection j are complete: this PE's error of the layer below (times ReLU')."""
        ly = self.layers[j - 1]
        lo, hi = ly["lo"], ly["hi"]
        self.delta[j - 1][...] = self.acc[j][lo:hi] * (self.act[j][0, lo:hi] > 0)

    def _update(self, sample: int):
        lc, lr = self.lc, self.lr_for(sample)
        self.updates += 1
        for i, sl in enumerate(self.sparse):
            self.counters["dormant"] += sl.update(self.act[i][0], self.delta[i], lr=lr, l1=lc["l1"],
                                                  noise=lc["noise"], sample=sample)
            self.counters["macs"] += sl.n
        self.rewire_due = self.updates % lc["rewire_every"] == 0
        self.counters["updates"] += 1

    def _rewire(self):
        round_ = self.updates // self.lc["rewire_every"]
        for i, sl in enumerate(self.sparse):
            before = sl.n
            sl.rewire(sl.active_per_column() if self.solo else self.counts[i], self.k[i], round_)
            self.counters["rewired"] += sl.n - before
        self.rewire_due = False

    # ------------------------------------------------------------ reports

    def weights(self) -> dict[str, np.ndarray]:
        return {ly["name"]: sl.dense() for ly, sl in zip(self.layers, self.sparse)}

    def recordings(self) -> dict:
        return {}
