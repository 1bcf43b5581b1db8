"""Backpropagation through time for a stack of spiking layers, full or truncated, end to end or in local blocks
(SCIENCE.md seed C), written by hand in numpy, with every array a PE keeps allocated in its SRAM ledger.

The forward dynamics are the neuron PE's (cores/eprop_pe.py), per layer l and step t, with inputs x (the layer
below's spikes at t, or the input frame; the layer's own spikes at t-1 when it is recurrent):

    a_t = rho a_{t-1} + (1 - rho) z_{t-1}          (ALIF only; A_t = v_th + beta a_t, else A_t = v_th)
    v_t = alpha v_{t-1} + (1 - alpha) I_t - z_{t-1} A_t,   I_t = sum_q W_q^T x_q(t)
    z_t = H(v_t - A_t)                               (backward: dz/du = psi(u), the surrogate)

A readout y_t = kappa y_{t-1} + W^T z_t sits on the last layer of each block; the loss is the framewise
cross-entropy sum_t CE(softmax(y_t), label) / T, so every step has its error at once and truncation needs no
look-ahead. The prediction is the argmax of the mean of the last block's readout.

Truncation K: the steps of a sample are cut into windows of K; at the end of each window the gradient of that
window's losses is propagated back through that window only (the state entering it is a constant), and added
to the gradient applied at the end of the sample (TBPTT(K, K)). K = T is full BPTT. The history a window needs
(u, z, a, inputs, readout errors) is kept for K steps only: that is the memory truncation saves.

Local blocks: the layers are cut into blocks, each with its own readout (a local classifier); a block's input
is the previous block's spikes, taken as a constant, so no error crosses a block boundary.

Split over PEs (cores/bptt_pe.py), a PE holds a column slice [lo, hi) of every layer: its neurons, their incoming
weights, their state and history, and the whole layers' spikes it receives. The sums that run over a layer's
neurons in the backward pass (W dI, into the layer itself through the recurrence and into the layer below) are
chained from PE to PE. Every sum whose terms would be split runs strictly in ascending order of its terms
(`synaptic_sum`), so the chained sum and the one-PE sum are the same bits; the readouts' products have
the same shapes on every split and keep numpy's own loops (`mm`).

Counting (the `counts` dict): MACs are multiply-accumulates the rule performs (forward synaptic events counted
per spike and target, backward and gradient products per nonzero operand pair as dense loops would do them);
accesses are words of SRAM read or written (weights read per MAC, history written and read once per value,
gradient read and written per gradient MAC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .neurons import NeuronConstants, surrogate
from .kernels import synaptic_sum


@dataclass(frozen=True)
class LayerSpec:
    name: str
    n: int
    constants: NeuronConstants
    inputs: tuple[tuple[str, int], ...]  # (projection name, n_pre) of the feed-forward input, then recurrent
    recurrent: bool


def mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a times b without BLAS: numpy's own loops sum in a fixed order, while a BLAS's order can depend on its
    thread count, which differs between the driver and a Ray actor (the engines must agree bit for bit)."""
    return np.einsum("ij,jk->ik", a, b)


def spike(u: np.ndarray, relax: float) -> np.ndarray:
    """The spike function: H(u), or with relax > 0 the smooth sigmoid(u / relax) (finite-difference tests)."""
    if relax > 0:
        return (1.0 / (1.0 + np.exp(-u.astype(np.float64) / relax))).astype(np.float32)
    return (u > 0).astype(np.float32)


def spike_derivative(kind: str, u: np.ndarray, v_th: float, relax: float) -> np.ndarray:
    if relax > 0:
        s = 1.0 / (1.0 + np.exp(-u.astype(np.float64) / relax))
        return (s * (1 - s) / relax).astype(np.float32)
    return surrogate(kind, u, v_th)


def new_counts() -> dict:
    return {"macs": 0, "accesses": 0}


class Readouts:
    """The readout of every block, y_t = kappa y_{t-1} + R^T z_t on the block's top layer, its framewise error,
    and the backward pass through it. Beside the layers on one PE, or on a PE of its own when they are split
    (it needs every neuron of each top layer, which then arrive as spikes)."""

    def __init__(self, ledger, tops: list[int], n_classes: int, kappa: float, window: int, steps: int,
                 streams: int, readouts: list, learning: bool, counts: dict):
        L = ledger
        self.C, self.kappa, self.T, self.B, self.learning, self.counts = n_classes, np.float32(kappa), steps, \
            streams, learning, counts
        self.R = []
        for b, n in enumerate(tops):
            self.R.append(L.alloc(f"readout{b}.weights", (n, n_classes)))
            self.R[-1][...] = readouts[b]
        self.y = [L.alloc(f"readout{b}.y", (n_classes,), batched=True) for b in range(len(tops))]
        self.y_sum = L.alloc("readout.y_sum", (n_classes,), batched=True)
        self.label = L.alloc("label", (1,), np.int32, batched=True)
        if learning:
            self.h_e = [L.alloc(f"history.readout{b}.error", (window, n_classes), batched=True) for b in range(len(tops))]
            self.gR = [L.alloc(f"readout{b}.gradient", r.shape) for b, r in enumerate(self.R)]
            self.gy = [L.alloc(f"readout{b}.backward", (n_classes,), batched=True) for b in range(len(tops))]

    def reset(self):
        for arr in (*self.y, self.y_sum, *(self.gR if self.learning else ())):
            arr[...] = 0

    def forward(self, b: int, z: np.ndarray, k: int, learn: bool):
        """Block b's readout at window step k, from its top layer's spikes z [B, n]."""
        self.y[b] *= self.kappa
        self.y[b] += mm(z, self.R[b])
        self.counts["macs"] += int(np.count_nonzero(z)) * self.C
        if learn:
            p = np.exp(self.y[b] - self.y[b].max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(self.B), self.label[:, 0]] -= 1
            self.h_e[b][:, k] = p / np.float32(self.T)
        if b == len(self.y) - 1:  # the prediction: the last block's readout, summed over the sample
            self.y_sum += self.y[b]

    def backward(self, b: int, k: int, z: np.ndarray, last: bool) -> np.ndarray:
        """Step k of a window's backward pass through block b's readout (k descending; `last`: the window's
        last step, where it starts); z: the top layer's spikes at k. Returns dL/dz of the top layer at k."""
        gy = self.gy[b]
        if last:
            gy[...] = 0
        gy[...] = self.h_e[b][:, k] + self.kappa * gy
        self.gR[b] += mm(z.T, gy)
        nz, n = int(np.count_nonzero(z)), z.shape[1]
        self.counts["macs"] += (nz + n) * self.C
        self.counts["accesses"] += 2 * nz * self.C + n * self.C + self.C * self.B
        return mm(gy, self.R[b].T)


class SpikingStack:
    """Layers 0..L-1 (feed-forward chain, each optionally recurrent), blocks of them, one readout per block.

    This PE's column slice [lo, hi) of each layer (`slices`; default: all of it). weights: {projection name:
    [n_pre, hi - lo] float32}; readouts: one [n_top, C] per block, or None when they live on their own PE."""

    def __init__(self, ledger, layers: list[LayerSpec], blocks: list[list[int]], n_in: int, n_classes: int,
                 kappa: float, truncation: int, steps: int, streams: int, weights: dict, readouts: list | None,
                 surrogate_kind: str = "multi_gaussian", relax: float = 0.0, learning: bool = True,
                 slices: list[tuple[int, int]] | None = None, counts: dict | None = None):
        self.layers, self.blocks, self.C = layers, blocks, n_classes
        self.T, self.K, self.B = steps, min(truncation, steps), streams
        self.sur, self.relax, self.learning = surrogate_kind, relax, learning
        self.slices = slices or [(0, ly.n) for ly in layers]
        self.counts = counts if counts is not None else new_counts()
        self.first_of_block = {blk[0] for blk in blocks}
        L = ledger
        self.W = {}
        for ly, (lo, hi) in zip(layers, self.slices):
            for name, n_pre in ly.inputs:
                self.W[name] = L.alloc(f"{name}.weights", (n_pre, hi - lo))
                self.W[name][...] = weights[name]
        self.ro = None
        if readouts is not None:
            self.ro = Readouts(L, [layers[blk[-1]].n for blk in blocks], n_classes, kappa, self.K, steps,
                               streams, readouts, learning, self.counts)
        # state of this slice; and the whole layer's spikes of the last step (the slice's own when it is whole)
        widths = [hi - lo for lo, hi in self.slices]
        self.v = [L.alloc(f"{ly.name}.v", (w,), batched=True) for ly, w in zip(layers, widths)]
        self.a = [L.alloc(f"{ly.name}.a", (w,), batched=True) if ly.constants.adaptive else None
                  for ly, w in zip(layers, widths)]
        self.z = [L.alloc(f"{ly.name}.z", (w,), batched=True) for ly, w in zip(layers, widths)]
        self.zfull = [z if w == ly.n else L.alloc(f"{ly.name}.spikes_in", (ly.n,), batched=True)
                      for ly, w, z in zip(layers, widths, self.z)]
        self.t = 0  # step within the sample
        self.w0 = 0  # first step of the current window
        if not learning:
            return
        K = self.K
        # history of one window (K steps): the slice's u and a; the whole layers' spikes, one more step (the
        # spikes entering the window), and the input, which the weight gradients need
        self.h_x = L.alloc("history.input", (K, n_in), batched=True)
        self.h_u = [L.alloc(f"history.{ly.name}.u", (K, w), batched=True) for ly, w in zip(layers, widths)]
        zdt = np.float32 if relax else np.uint8  # spikes are bits; relaxed (test) spikes are not
        self.h_z = [L.alloc(f"history.{ly.name}.z", (K + 1, ly.n), zdt, batched=True) for ly in layers]
        self.h_a = [L.alloc(f"history.{ly.name}.a", (K, w), batched=True) if ly.constants.adaptive else None
                    for ly, w in zip(layers, widths)]
        self.gW = {name: L.alloc(f"{name}.gradient", w.shape) for name, w in self.W.items()}
        # the backward recursion's state, carried from step k + 1 to step k
        self.dv = [L.alloc(f"backward.{ly.name}.dv", (w,), batched=True) for ly, w in zip(layers, widths)]
        self.da = [L.alloc(f"backward.{ly.name}.da", (w,), batched=True) if ly.constants.adaptive else None
                   for ly, w in zip(layers, widths)]
        self.dI = [L.alloc(f"backward.{ly.name}.dI", (w,), batched=True) for ly, w in zip(layers, widths)]

    @property
    def R(self):
        return self.ro.R

    @property
    def y(self):
        return self.ro.y

    @property
    def label(self):
        return self.ro.label

    @property
    def h_e(self):
        return self.ro.h_e

    # ------------------------------------------------------------------ forward

    def reset(self):
        for arr in (*self.v, *self.z, *self.zfull, *(a for a in self.a if a is not None)):
            arr[...] = 0
        if self.ro is not None:
            self.ro.reset()
        if self.learning:
            for g in self.gW.values():
                g[...] = 0
            for hz in self.h_z:
                hz[...] = 0
        self.t = self.w0 = 0

    def step(self, x: np.ndarray, learn: bool):
        """One time step of the whole stack on input frame x [B, n_in] (all layers and readouts on this PE);
        at a window's end (and the sample's), the backward pass."""
        k = self.t - self.w0
        pre = x
        for i in range(len(self.layers)):
            self.forward_layer(i, pre, k, learn)
            self.take_spikes(i, self.z[i], k, learn)
            pre = self.z[i]
        for b, blk in enumerate(self.blocks):
            self.ro.forward(b, self.z[blk[-1]], k, learn)
        self.t += 1
        if learn and (self.t - self.w0 == self.K or self.t == self.T):
            self._backward(self.t - self.w0)
            self.next_window(self.t - self.w0)
            self.w0 = self.t

    def forward_layer(self, i: int, pre: np.ndarray, k: int, learn: bool):
        """Layer i's slice at window step k, from the whole layer below's spikes (or the input) at this step
        and the whole layer's own spikes of the last step (zfull)."""
        ly, c = self.layers[i], self.layers[i].constants
        width = self.slices[i][1] - self.slices[i][0]
        if learn and i == 0:
            self.h_x[:, k] = pre
        (ff, _), *rest = ly.inputs
        I = np.zeros((self.B, width), np.float32)
        for x, name in ((pre, ff), *((self.zfull[i], r) for r, _ in rest)):
            synaptic_sum(I, x, self.W[name])
            events = int(np.count_nonzero(x)) * width
            self.counts["macs"] += events
            self.counts["accesses"] += events
        z_prev = self.z[i].copy()
        if c.adaptive:
            self.a[i] *= np.float32(c.rho)
            self.a[i] += np.float32(1 - c.rho) * z_prev
            A = np.float32(c.v_th) + np.float32(c.beta) * self.a[i]
        else:
            A = np.float32(c.v_th)
        self.v[i] *= np.float32(c.alpha)
        self.v[i] += np.float32(1 - c.alpha) * I
        self.v[i] -= z_prev * A
        u = self.v[i] - A
        self.z[i][...] = spike(u, self.relax)
        if learn:
            self.h_u[i][:, k] = u
            if c.adaptive:
                self.h_a[i][:, k] = self.a[i]
            self.counts["accesses"] += (3 if c.adaptive else 2) * width * self.B

    def take_spikes(self, i: int, z: np.ndarray, k: int, learn: bool):
        """The whole layer i's spikes at window step k (this PE's own, or gathered from every PE's packets)."""
        if self.zfull[i] is not z:
            self.zfull[i][...] = z
        if learn:
            self.h_z[i][:, k + 1] = z

    def next_window(self, n: int):
        """The window of n steps just ended: its last spikes become the ones entering the next."""
        for hz in self.h_z:
            hz[:, 0] = hz[:, n]

    # ------------------------------------------------------------------ backward

    def _backward(self, n_steps: int):
        """Back through the n_steps of the window just ended, on one PE; gradients add to gW and the readouts'.
        The same steps as a split run's (cores/bptt_pe.py), in the same order, with no packets between them."""
        for b, blk in enumerate(self.blocks):
            top = blk[-1]
            dz_above = [None] * n_steps
            for k in range(n_steps - 1, -1, -1):
                dz_above[k] = self.ro.backward(b, k, self._z_hist(top, k), last=(k == n_steps - 1))
            for i in reversed(blk):
                below = [None] * n_steps
                rec = np.zeros((self.B, self.layers[i].n), np.float32)
                for k in range(n_steps - 1, -1, -1):
                    self.backward_step(i, k, n_steps, dz_above[k], rec)
                    rec, below[k] = self.chain(i, k, *self.chain_start(i))
                dz_above = below

    def _z_hist(self, i: int, k: int) -> np.ndarray:
        """Spikes of the whole layer i at window step k (k = -1: the step before the window)."""
        return self.h_z[i][:, k + 1].astype(np.float32)

    def chain_rows(self, i: int) -> tuple[int, int]:
        """(recurrent rows, feed-forward rows) of layer i's backward sums: dL/dz of itself at the step before
        (recurrent layers), and of the layer below at this step (unless it starts a block)."""
        ly = self.layers[i]
        return (ly.n if ly.recurrent else 0), (0 if i in self.first_of_block else ly.inputs[0][1])

    def chain_start(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        n_rec, n_ff = self.chain_rows(i)
        return np.zeros((self.B, n_rec), np.float32), np.zeros((self.B, n_ff), np.float32)

    def backward_step(self, i: int, k: int, n_steps: int, dz_out: np.ndarray, rec: np.ndarray):
        """Layer i's slice at window step k (k descending): dz_out [B, width] is dL/dz_k from above (outside its
        own recurrence), rec [B, width] the recurrent sum from step k+1 (zeros at the window's last step).
        Adds to the weight gradients; leaves dI_k for the chain."""
        ly, c = self.layers[i], self.layers[i].constants
        lo, hi = self.slices[i]
        width = hi - lo
        (ff, n_in), *rest = ly.inputs
        last = k == n_steps - 1
        if last:
            self.dv[i][...] = 0
            if c.adaptive:
                self.da[i][...] = 0
        dv_next, da_next = self.dv[i], self.da[i]
        u = self.h_u[i][:, k]
        dz = dz_out.copy()
        if rest:  # recurrent input of step k+1 is z_k
            dz += rec
        if not last:  # z_k resets v_{k+1} by A_{k+1}, and drives a_{k+1}
            A_next = (np.float32(c.v_th) + np.float32(c.beta) * self.h_a[i][:, k + 1]) if c.adaptive \
                else np.float32(c.v_th)
            dz -= A_next * dv_next
            if c.adaptive:
                dz += np.float32(1 - c.rho) * da_next
        psi = spike_derivative(self.sur, u, c.v_th, self.relax)
        du = dz * psi
        dv = du + np.float32(c.alpha) * dv_next
        z_prev = self._z_hist(i, k - 1)  # the whole layer (recurrent gradient); the slice's own for the reset
        if c.adaptive:  # A_k = v_th + beta a_k enters v_k (reset by z_{k-1}) and u_k
            dA = -z_prev[:, lo:hi] * dv - du
            da_next[...] = np.float32(c.beta) * dA + np.float32(c.rho) * da_next
        dI = np.float32(1 - c.alpha) * dv
        # weight gradients: feed-forward input at k, recurrent input z_{k-1}
        x = self.h_x[:, k] if i == 0 else self._z_hist(i - 1, k)
        synaptic_sum(self.gW[ff], x.T, dI)
        nzx = int(np.count_nonzero(x))
        self.counts["macs"] += nzx * width
        self.counts["accesses"] += 2 * nzx * width + (n_in if i == 0 else 0) * self.B
        if rest:
            synaptic_sum(self.gW[rest[0][0]], z_prev.T, dI)
            nzz = int(np.count_nonzero(z_prev))
            self.counts["macs"] += nzz * width
            self.counts["accesses"] += 2 * nzz * width
        self.counts["accesses"] += (3 if c.adaptive else 2) * width * self.B  # history read
        dv_next[...] = dv
        self.dI[i][...] = dI

    def chain(self, i: int, k: int, rec: np.ndarray, ff: np.ndarray):
        """Adds this slice's share of layer i's backward sums at step k to the partial sums rec [B, n] (dL/dz_{k-1}
        of layer i through the recurrence) and ff [B, n_in] (dL/dx_k of the layer below); returns them."""
        ly = self.layers[i]
        width = self.slices[i][1] - self.slices[i][0]
        (ff_name, _), *rest = ly.inputs
        for acc, name in ((rec, rest[0][0] if rest else None), (ff, ff_name)):
            if acc.shape[1] == 0 or (acc is rec and k == 0):  # nothing before the window, or below the block
                continue
            synaptic_sum(acc, self.dI[i], self.W[name].T)
            self.counts["macs"] += acc.shape[1] * width * self.B
            self.counts["accesses"] += acc.shape[1] * width
        return rec, ff

    # ------------------------------------------------------------------ learning

    def gradients(self) -> dict[str, np.ndarray]:
        out = dict(self.gW)
        if self.ro is not None:
            out.update({f"readout{b}": g for b, g in enumerate(self.ro.gR)})
        return out
