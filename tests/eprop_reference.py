"""e-prop written again from ../shared/SCIENCE.md alone, in float64 numpy: the yardstick for the PEs' gradients.

Why a second reference: the golden model (s2emu/golden.py) shares the surrogate and the neuron constants with
the PEs, so a mistake in that shared code passes the golden comparison. This file imports nothing from s2emu
(tests/test_eprop_reference.py checks that); it is the equations, one sample at a time, not an engine.

Notation as in SCIENCE.md: W[j, i] is the synapse from i to j (the chip stores the transpose, rows per source).
Where SCIENCE.md is silent the project's documented choices hold (README.md, cores/timing.py):
- model step t takes the input frame x(t) and the recurrent spikes z(t-1); all state starts at 0 each sample;
- LIF is ALIF with beta = 0 (s2emu/network.py);
- the online learning signal L(t), computed from the readout at step t, travels one tick, so it meets the
  eligibility trace of step t+1; the last one, L(T-1), has no step T and meets ebar(T-1);
- firing-rate regularization (Bellec et al. 2020, Methods; docs/learning-rules.md), the loss
  E_reg = c_reg / 2 sum_j (f_j - f_target)^2 with f_j neuron j's spikes per step over the sample, reaches the
  weights as a second learning signal L_reg_j = c_reg (1 - kappa) (f_j - f_target) / T on the same ebar: at the
  end of a sample with the sample's f_j; online at every step t, with f_j(t) = its spikes up to t / (t + 1),
  meeting ebar(t) (it is the neuron's own, it does not travel).
"""

from __future__ import annotations

import numpy as np


def multi_gaussian(u, v_th):
    """gamma [(1+h) N(u; 0, s) - h N(u; s, 6s) - h N(u; -s, 6s)], s = 0.5, h = 0.15, gamma = 0.5 (v_th unused)."""
    s, h, gamma = 0.5, 0.15, 0.5

    def normal(mu, sigma):
        return np.exp(-((u - mu) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)

    return gamma * ((1 + h) * normal(0.0, s) - h * normal(s, 6 * s) - h * normal(-s, 6 * s))


def triangle(u, v_th):
    """Bellec et al. 2020: 0.3 / v_th * max(0, 1 - |u| / v_th)."""
    return 0.3 / v_th * np.maximum(0.0, 1.0 - np.abs(u) / v_th)


SURROGATES = {"multi_gaussian": multi_gaussian, "triangle": triangle}


def softmax(y):
    e = np.exp(y - y.max())
    return e / e.sum()


def eprop_sample(x, label, w_in, w_rec, w_out, feedback, *, tau_m, tau_a, tau_out, v_th, beta,
                 surrogate="multi_gaussian", signal="end_of_sample", reg_rate=0.0, target_rate=0.0):
    """One sample through the ALIF network and its e-prop gradient.

    x [T, n_in]; w_in [n, n_in]; w_rec [n, n] or None (no recurrence); w_out [K, n]; feedback [K, n]: the
    matrix the learning signal goes through (w_out itself for symmetric e-prop, B for random e-prop);
    reg_rate: c_reg, target_rate: f_target in spikes per step (0: no rate regularization).
    Returns the forward pass (z, v [T, n], y [T, K]) and the gradients d_in, d_rec, d_out shaped as the weights.
    """
    x = np.asarray(x, np.float64)
    T, n_in = x.shape
    n, K = w_in.shape[0], w_out.shape[0]
    w_rec_ = np.zeros((n, n)) if w_rec is None else w_rec
    alpha, rho, kappa = np.exp(-1 / tau_m), np.exp(-1 / tau_a), np.exp(-1 / tau_out)
    psi_of = SURROGATES[surrogate]
    onehot = np.eye(K)[label]

    v, a, z_prev, zbar = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    # eligibility state per synapse [j, i], input synapses then recurrent ones side by side
    n_pre = n_in + n
    epsv = np.zeros(n_pre)  # depends on the presynaptic side only
    epsa, ebar, ebar_sum = np.zeros((n, n_pre)), np.zeros((n, n_pre)), np.zeros((n, n_pre))
    no_self = np.ones((n, n_pre))
    no_self[:, n_in:] -= np.eye(n)  # recurrent diagonal traces held at 0
    zs, vs, ys, zbars, ebars = [], [], [], [], []
    for t in range(T):
        a = rho * a + (1 - rho) * z_prev
        A = v_th + beta * a
        v = alpha * v + (1 - alpha) * (w_in @ x[t] + w_rec_ @ z_prev) - z_prev * A
        z = (v - A > 0).astype(np.float64)
        psi = psi_of(v - A, v_th)[:, None]
        epsv = alpha * epsv + np.concatenate([x[t], z_prev])  # z_pre: x(t) for inputs, z(t-1) recurrent
        epsa = (rho - (1 - rho) * beta * psi) * epsa + psi * epsv * (1 - rho) * (1 - alpha)
        e = psi * ((1 - alpha) * epsv - beta * epsa) * no_self
        ebar = kappa * ebar + e
        ebar_sum += ebar
        zbar = kappa * zbar + z
        zs.append(z), vs.append(v), ys.append(w_out @ zbar), zbars.append(zbar), ebars.append(ebar)
        z_prev = z
    y, zbar, z = np.array(ys), np.array(zbars), np.array(zs)
    rate = np.cumsum(z, axis=0) / np.arange(1, T + 1)[:, None]  # f_j(t): spikes per step up to step t
    L_reg = reg_rate * (1 - kappa) * (rate - target_rate) / T  # [T, n]; at T-1 from the sample's rate f_j

    if signal == "end_of_sample":  # L_j = sum_k B_kj (softmax_k(mean y) - onehot_k) / T
        err = softmax(y.mean(axis=0)) - onehot
        L = feedback.T @ err / T
        grad = (L + L_reg[-1])[:, None] * ebar_sum  # dE/dW_ji = (L_j + L_reg_j) sum_t ebar_ji(t)
        d_out = np.outer(err, zbar.mean(axis=0))  # mean_t err_k zbar_j(t)
    elif signal == "online":  # framewise loss: L_j(t) = sum_k B_kj (softmax_k(y(t)) - onehot_k) / T
        err = np.array([softmax(y[t]) - onehot for t in range(T)])
        grad = sum((feedback.T @ err[t] / T)[:, None] * ebars[min(t + 1, T - 1)] for t in range(T))
        grad = grad + sum(L_reg[t][:, None] * ebars[t] for t in range(T))
        d_out = err.T @ zbar / T
    else:
        raise ValueError(signal)
    return {"z": z, "v": np.array(vs), "y": y, "d_in": grad[:, :n_in],
            "d_rec": None if w_rec is None else grad[:, n_in:], "d_out": d_out}
