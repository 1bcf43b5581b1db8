"""The golden model: ../shared/SCIENCE.md's equations as one dense network in plain numpy, tick for tick.

It shares nothing with the emulated chip but the inputs (data, schedule, initial weights) and the
surrogate function: no PEs, no packets, no slices, dense matrix products. Its model step t of sample k
corresponds to chip tick k*S + d_in + t for the neurons (the input projection's delay after the host sends
frame t) and k*S + d_in + d_out + t for the readout, as cores/timing.py states; tests compare the two.
A recurrent projection of delay d feeds step t with the spikes of step t - d.

Supports the topology e-prop recipes use: input -> one spiking population (with or without recurrence)
-> readout. Online learning signals carry the chip's delay: L(t), computed by the readout from y(t),
meets the eligibility trace ebar(min(t + d_out, T-1)). Firing-rate regularization (docs/learning-rules.md): the
signal c_reg (1 - kappa) (f_j - f_target) / T, from the spikes per step so far, meets ebar(t) at every step online,
and at the end of a sample, from the sample's rate, it is added to the task's signal.
"""

from __future__ import annotations

import numpy as np

from .cores.neurons import NeuronConstants, surrogate
from .host.base import TEST, TRAIN
from .network import initial_weights, random_feedback
from .recipe import target_spikes_per_tick


class _Adam:
    def __init__(self, shape, lc):
        self.m, self.v, self.lc = np.zeros(shape, np.float32), np.zeros(shape, np.float32), lc

    def step(self, w, g, lr, t):
        lc = self.lc
        g = g + np.float32(lc.l2) * w
        self.m = np.float32(lc.beta1) * self.m + np.float32(1 - lc.beta1) * g
        self.v = np.float32(lc.beta2) * self.v + np.float32(1 - lc.beta2) * g * g
        mhat = self.m / np.float32(1 - lc.beta1 ** t)
        vhat = self.v / np.float32(1 - lc.beta2 ** t)
        return w - np.float32(lr) * mhat / (np.sqrt(vhat) + np.float32(lc.eps))


def golden_run(b) -> dict:
    """Run the dense model on a Build's data, schedule and initial weights."""
    r = b.recipe
    net, lc = r.network, r.learning
    hidden = [p for p in net.populations if p.is_neuron]
    if len(hidden) != 1:
        raise ValueError("the golden model covers networks with one spiking population")
    hid, out = hidden[0], net.readout
    c = NeuronConstants.make(hid.model, tau_out=out.param("tau_out"),
                             **{k: hid.param(k) for k in hid.params_for(hid.model)})
    w0 = initial_weights(net, r.seed)
    names = {"in": f"{net.input.name}->{hid.name}", "rec": f"{hid.name}->{hid.name}",
             "out": f"{hid.name}->{out.name}"}
    recurrent = names["rec"] in w0
    delay = {pr.name: pr.delay for pr in net.projections}
    d_in, d_out, d_rec = (delay.get(names[k], 1) for k in ("in", "out", "rec"))
    W = {k: w0[n].copy() for k, n in names.items() if n in w0}
    fb = random_feedback(net, r.seed)[hid.name] if lc.feedback == "random" else None
    opt = {k: _Adam(w.shape, lc) for k, w in W.items()}
    ds, plan = b.dataset, b.plan
    X = {TRAIN: ds.x_train, TEST: ds.x_test}
    Y = {TRAIN: ds.y_train, TEST: ds.y_test}
    T, B, n, K = ds.steps, plan.idx.shape[1], hid.size, out.size
    S = T + d_in + d_out
    alpha, rho, kappa = np.float32(c.alpha), np.float32(c.rho), np.float32(c.kappa)
    beta, v_th = np.float32(c.beta), np.float32(c.v_th)
    f32 = np.float32
    eye = np.eye(K, dtype=np.float32)
    offdiag = (1 - np.eye(n, dtype=np.float32))[None]
    reg_scale, reg_target = f32(lc.reg_rate * (1 - c.kappa) / T), f32(target_spikes_per_tick(lc, r.data))
    spikes, scores = [], np.zeros((len(plan.split), B, K), np.float32)
    updates = 0

    def softmax(y):
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    for k in range(len(plan.split)):
        split, idx = int(plan.split[k]), plan.idx[k]
        valid = idx >= 0
        x = np.zeros((B, T, X[split].shape[2]), np.float32)
        x[valid] = X[split][idx[valid]]
        onehot = np.zeros((B, K), np.float32)
        onehot[valid] = eye[Y[split][idx[valid]]]
        learn = split == TRAIN and lc.rule != "none"
        v, a, z = (np.zeros((B, n), np.float32) for _ in range(3))
        zbar, zbar_sum, y, y_sum = (np.zeros((B, n), np.float32), np.zeros((B, n), np.float32),
                                    np.zeros((B, K), np.float32), np.zeros((B, K), np.float32))
        pre_n = {"in": x.shape[2], "rec": n}
        keys = ["in", "rec"] if recurrent else ["in"]
        epsv = {q: np.zeros((B, pre_n[q]), np.float32) for q in keys}
        epsa = {q: np.zeros((B, pre_n[q], n), np.float32) for q in keys}
        ebar = {q: np.zeros((B, pre_n[q], n), np.float32) for q in keys}
        E = {q: np.zeros((B, pre_n[q], n), np.float32) for q in keys}
        grad = {q: np.zeros((pre_n[q], n), np.float32) for q in keys}
        grad_out = np.zeros((n, K), np.float32)
        count = np.zeros((B, n), np.float32)  # spikes so far, for the rate regularization
        signals = {}  # online: L(t) by the step whose trace it meets, t + d_out
        F = W["out"] if fb is None else fb
        z_hist = [np.zeros((B, n), np.float32)] * d_rec  # z(t - d_rec) .. z(t - 1)
        for t in range(T):
            z_prev = z
            z_rec = z_hist[-d_rec]
            I = x[:, t] @ W["in"] + (z_rec @ W["rec"] if recurrent else 0)
            a = rho * a + f32(1 - rho) * z_prev
            A = v_th + beta * a
            v = alpha * v + f32(1 - alpha) * I - z_prev * A
            u = v - A
            z = (u > 0).astype(np.float32)
            z_hist = z_hist[1:] + [z]
            for bb, j in zip(*np.nonzero(z)):
                spikes.append((k * S + d_in + t, bb, j))
            if learn:
                psi = surrogate(lc.surrogate, u, float(v_th))[:, None, :]
                pre = {"in": x[:, t], "rec": z_rec}
                for q in keys:
                    epsv[q] = alpha * epsv[q] + pre[q]
                    ev = epsv[q][:, :, None]
                    if c.adaptive:
                        epsa[q] = (rho - f32(1 - rho) * beta * psi) * epsa[q] + psi * ev * f32((1 - rho) * (1 - alpha))
                        e = psi * (f32(1 - alpha) * ev - beta * epsa[q])
                    else:
                        e = psi * (f32(1 - alpha) * ev)
                    if q == "rec":
                        e = e * offdiag
                    ebar[q] = kappa * ebar[q] + e
                    E[q] += ebar[q]
                count += z
                if lc.reg_rate and lc.signal == "online":  # the regularization's signal meets ebar(t)
                    L_reg = reg_scale * (count / f32(t + 1) - reg_target)
                    for q in keys:
                        grad[q] += np.einsum("bj,bij->ij", L_reg, ebar[q])
                if t in signals:  # online: L(t - d_out) meets ebar(t)
                    L = signals.pop(t)
                    for q in keys:
                        grad[q] += np.einsum("bj,bij->ij", L, ebar[q])
            zbar = kappa * zbar + z
            zbar_sum += zbar
            y = zbar @ W["out"]
            y_sum += y
            if learn and lc.signal == "online":
                err = softmax(y) - onehot
                grad_out += np.einsum("bj,bk->jk", zbar, err) / f32(T)
                signals[t + d_out] = err @ F.T / f32(T)
        for t in sorted(signals):  # the last signals meet the last trace, ebar(T-1), in the order they come
            for q in keys:
                grad[q] += np.einsum("bj,bij->ij", signals[t], ebar[q])
        y_mean = y_sum / f32(T)
        scores[k] = y_mean
        if not learn:
            continue
        if lc.signal == "end_of_sample":
            err = softmax(y_mean) - onehot
            L = err @ F.T / f32(T)
            if lc.reg_rate:  # the sample's rate regularization rides on its one signal
                L = L + reg_scale * (count / f32(T) - reg_target)
            grad_out = np.einsum("bj,bk->jk", zbar_sum, err) / f32(T)
            for q in keys:
                grad[q] = np.einsum("bj,bij->ij", L, E[q])
        updates += 1
        decays = int(plan.epoch[k]) // lc.lr_decay_every if lc.lr_decay_every else 0
        lr = lc.lr * lc.lr_decay ** decays
        W["out"] = opt["out"].step(W["out"], grad_out / f32(B), lr, updates)
        for q in keys:
            g = grad[q] / f32(B)
            if q == "rec":
                np.fill_diagonal(g, 0)
            W[q] = opt[q].step(W[q], g, lr, updates)
    return {"weights": {names[q]: w for q, w in W.items()},
            "spikes": np.array(spikes, np.int64).reshape(-1, 3), "scores": scores}
