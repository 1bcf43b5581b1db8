"""Backpropagation through time for a stack of spiking layers, full or truncated, end to end or in local blocks
(SCIENCE.md seed C), written by hand in numpy, with every array a PE keeps allocated in its SRAM ledger.

The forward dynamics are the PE's (cores/pe.py), per layer l and step t, with inputs x (the layer below's spikes
at t, or the input frame; the layer's own spikes at t-1 when it is recurrent):

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

Counting (the `counts` dict): MACs are multiply-accumulates the rule performs (forward synaptic events counted
per spike and target, backward and gradient products per nonzero operand pair as dense loops would do them);
accesses are words of SRAM read or written (weights read per MAC, history written and read once per value,
gradient read and written per gradient MAC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .neurons import NeuronConstants, surrogate


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


class SpikingStack:
    """Layers 0..L-1 (feed-forward chain, each optionally recurrent), blocks of them, one readout per block.

    weights: {projection name: [n_pre, n_post] float32}; readouts: one [n_last_of_block, C] per block."""

    def __init__(self, ledger, layers: list[LayerSpec], blocks: list[list[int]], n_in: int, n_classes: int,
                 kappa: float, truncation: int, steps: int, streams: int, weights: dict, readouts: list,
                 surrogate_kind: str = "multi_gaussian", relax: float = 0.0, learning: bool = True):
        self.layers, self.blocks, self.C, self.kappa = layers, blocks, n_classes, np.float32(kappa)
        self.T, self.K, self.B = steps, min(truncation, steps), streams
        self.sur, self.relax, self.learning = surrogate_kind, relax, learning
        L = ledger
        self.W = {}
        for ly in layers:
            for name, n_pre in ly.inputs:
                self.W[name] = L.alloc(f"{name}.weights", (n_pre, ly.n))
                self.W[name][...] = weights[name]
        self.R = []
        for b, blk in enumerate(blocks):
            last = layers[blk[-1]]
            self.R.append(L.alloc(f"readout{b}.weights", (last.n, n_classes)))
            self.R[-1][...] = readouts[b]
        # state
        self.v = [L.alloc(f"{ly.name}.v", (ly.n,), batched=True) for ly in layers]
        self.a = [L.alloc(f"{ly.name}.a", (ly.n,), batched=True) if ly.constants.adaptive else None for ly in layers]
        self.z = [L.alloc(f"{ly.name}.z", (ly.n,), batched=True) for ly in layers]
        self.y = [L.alloc(f"readout{b}.y", (n_classes,), batched=True) for b in range(len(blocks))]
        self.y_sum = L.alloc("readout.y_sum", (n_classes,), batched=True)
        self.label = L.alloc("label", (1,), np.int32, batched=True)
        self.t = 0  # step within the sample
        self.w0 = 0  # first step of the current window
        self.counts = {"macs": 0, "accesses": 0}
        if not learning:
            return
        K = self.K
        # history of one window (K steps); z keeps one more step: the spikes entering the window
        self.h_x = L.alloc("history.input", (K, n_in), batched=True)
        self.h_u = [L.alloc(f"history.{ly.name}.u", (K, ly.n), batched=True) for ly in layers]
        zdt = np.float32 if relax else np.uint8  # spikes are bits; relaxed (test) spikes are not
        self.h_z = [L.alloc(f"history.{ly.name}.z", (K + 1, ly.n), zdt, batched=True) for ly in layers]
        self.h_a = [L.alloc(f"history.{ly.name}.a", (K, ly.n), batched=True) if ly.constants.adaptive else None
                    for ly in layers]
        self.h_e = [L.alloc(f"history.readout{b}.error", (K, n_classes), batched=True) for b in range(len(blocks))]
        self.gW = {name: L.alloc(f"{name}.gradient", w.shape) for name, w in self.W.items()}
        self.gR = [L.alloc(f"readout{b}.gradient", r.shape) for b, r in enumerate(self.R)]

    # ------------------------------------------------------------------ forward

    def reset(self):
        for arr in (*self.v, *self.z, *self.y, self.y_sum, *(a for a in self.a if a is not None)):
            arr[...] = 0
        if self.learning:
            for g in (*self.gW.values(), *self.gR):
                g[...] = 0
            for hz in self.h_z:
                hz[...] = 0
        self.t = self.w0 = 0

    def step(self, x: np.ndarray, learn: bool):
        """One time step on input frame x [B, n_in]; at a window's end (and the sample's), the backward pass."""
        k = self.t - self.w0
        if learn:
            self.h_x[:, k] = x
        pre = x
        for i, ly in enumerate(self.layers):
            c = self.layers[i].constants
            I = self._input(i, pre)
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
                self.h_z[i][:, k + 1] = self.z[i]
                if c.adaptive:
                    self.h_a[i][:, k] = self.a[i]
                self.counts["accesses"] += (3 if c.adaptive else 2) * ly.n * self.B
            pre = self.z[i]
        for b, blk in enumerate(self.blocks):
            zl = self.z[blk[-1]]
            self.y[b] *= self.kappa
            self.y[b] += mm(zl, self.R[b])
            self.counts["macs"] += int(np.count_nonzero(zl)) * self.C
            if learn:
                p = np.exp(self.y[b] - self.y[b].max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(self.B), self.label[:, 0]] -= 1
                self.h_e[b][:, k] = p / np.float32(self.T)
        self.y_sum += self.y[-1]
        self.t += 1
        if learn and (self.t - self.w0 == self.K or self.t == self.T):
            n = self.t - self.w0
            self._backward(n)
            for hz in self.h_z:  # the spikes entering the next window
                hz[:, 0] = hz[:, n]
            self.w0 = self.t

    def _input(self, i: int, pre: np.ndarray) -> np.ndarray:
        ly = self.layers[i]
        (ff, _), *rest = ly.inputs
        I = mm(pre, self.W[ff])
        self.counts["macs"] += int(np.count_nonzero(pre)) * ly.n
        self.counts["accesses"] += int(np.count_nonzero(pre)) * ly.n
        for name, _ in rest:  # recurrent: own spikes of the previous step
            I += mm(self.z[i], self.W[name])
            self.counts["macs"] += int(np.count_nonzero(self.z[i])) * ly.n
            self.counts["accesses"] += int(np.count_nonzero(self.z[i])) * ly.n
        return I

    # ------------------------------------------------------------------ backward

    def _backward(self, n_steps: int):
        """Back through the n_steps of the window just ended; gradients add to gW, gR."""
        for b, blk in enumerate(self.blocks):
            gy = np.zeros((self.B, self.C), np.float32)
            top = self.layers[blk[-1]]
            dz_top = np.zeros((n_steps, self.B, top.n), np.float32)
            for k in range(n_steps - 1, -1, -1):
                gy = self.h_e[b][:, k] + self.kappa * gy
                zt = self._z_hist(blk[-1], k)
                self.gR[b] += mm(zt.T, gy)
                dz_top[k] = mm(gy, self.R[b].T)
                nz = int(np.count_nonzero(zt))
                self.counts["macs"] += (nz + top.n) * self.C
                self.counts["accesses"] += 2 * nz * self.C + top.n * self.C + self.C * self.B
            dz_above = dz_top
            for i in reversed(blk):
                dz_above = self._layer_backward(i, dz_above, n_steps, first_of_block=(i == blk[0]))

    def _z_hist(self, i: int, k: int) -> np.ndarray:
        """Spikes of layer i at window step k (k = -1: the step before the window)."""
        return self.h_z[i][:, k + 1].astype(np.float32)

    def _layer_backward(self, i: int, dz_out: np.ndarray, n_steps: int, first_of_block: bool):
        """dz_out [n_steps, B, n]: dL/dz_t of layer i from above (outside its own recurrence). Returns dL/dx_t
        of its feed-forward input (None when the input is the data or another block's spikes)."""
        ly, c = self.layers[i], self.layers[i].constants
        (ff, n_in), *rest = ly.inputs
        dv_next = np.zeros((self.B, ly.n), np.float32)
        da_next = np.zeros((self.B, ly.n), np.float32)
        dI_next = np.zeros((self.B, ly.n), np.float32)
        A_next = None
        dx = np.zeros((n_steps, self.B, n_in), np.float32) if not first_of_block else None
        for k in range(n_steps - 1, -1, -1):
            u = self.h_u[i][:, k]
            dz = dz_out[k].copy()
            if rest:  # recurrent input of step k+1 is z_k
                dz += mm(dI_next, self.W[rest[0][0]].T)
                self.counts["macs"] += ly.n * ly.n * self.B
                self.counts["accesses"] += ly.n * ly.n
            if A_next is not None:  # z_k resets v_{k+1} by A_{k+1}, and drives a_{k+1}
                dz -= A_next * dv_next
                if c.adaptive:
                    dz += np.float32(1 - c.rho) * da_next
            psi = spike_derivative(self.sur, u, c.v_th, self.relax)
            du = dz * psi
            dv = du + np.float32(c.alpha) * dv_next
            z_prev = self._z_hist(i, k - 1)
            if c.adaptive:
                a = self.h_a[i][:, k]
                A = np.float32(c.v_th) + np.float32(c.beta) * a
                dA = -z_prev * dv - du
                da = np.float32(c.beta) * dA + np.float32(c.rho) * da_next
                da_next = da
            else:
                A = np.float32(c.v_th)
            dI = np.float32(1 - c.alpha) * dv
            # weight gradients: feed-forward input at k, recurrent input z_{k-1}
            x = self.h_x[:, k] if i == 0 else self._z_hist(i - 1, k)
            self.gW[ff] += mm(x.T, dI)
            nzx = int(np.count_nonzero(x))
            self.counts["macs"] += nzx * ly.n
            self.counts["accesses"] += 2 * nzx * ly.n + (n_in if i == 0 else 0) * self.B
            if rest:
                self.gW[rest[0][0]] += mm(z_prev.T, dI)
                nzz = int(np.count_nonzero(z_prev))
                self.counts["macs"] += nzz * ly.n
                self.counts["accesses"] += 2 * nzz * ly.n
            if dx is not None:
                dx[k] = mm(dI, self.W[ff].T)
                self.counts["macs"] += n_in * ly.n * self.B
                self.counts["accesses"] += n_in * ly.n
            self.counts["accesses"] += (3 if c.adaptive else 2) * ly.n * self.B  # history read
            dv_next, dI_next, A_next = dv, dI, A
        return dx

    # ------------------------------------------------------------------ learning

    def gradients(self) -> dict[str, np.ndarray]:
        out = dict(self.gW)
        out.update({f"readout{b}": g for b, g in enumerate(self.gR)})
        return out
