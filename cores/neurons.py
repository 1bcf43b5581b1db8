"""Neuron constants and surrogate derivatives of ../shared/SCIENCE.md, shared by the PE and the golden model.

Only the constants and the surrogate functions are shared; the golden model writes the dynamics again,
densely, so that it checks the PE rather than repeating it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NeuronConstants:
    alpha: float  # exp(-1/tau_m): membrane decay
    rho: float  # exp(-1/tau_a): adaptation decay (unused when beta == 0)
    kappa: float  # exp(-1/tau_out): readout / eligibility filter decay
    v_th: float
    beta: float
    adaptive: bool

    @classmethod
    def make(cls, model: str, tau_m=5.0, tau_a=150.0, v_th=1.6, beta=0.184, tau_out=10.0) -> "NeuronConstants":
        adaptive = model == "alif"
        f32 = lambda x: float(np.float32(x))  # noqa: E731 - constants are float32 on the chip
        return cls(alpha=f32(math.exp(-1.0 / tau_m)), rho=f32(math.exp(-1.0 / tau_a)),
                   kappa=f32(math.exp(-1.0 / tau_out)), v_th=f32(v_th), beta=f32(beta if adaptive else 0.0),
                   adaptive=adaptive)


# Multi-Gaussian surrogate: gamma[(1+h)N(u;0,s) - hN(u;s,6s) - hN(u;-s,6s)], s = 0.5, h = 0.15, gamma = 0.5.
_S, _H, _GAMMA = 0.5, 0.15, 0.5


def _gauss(u, mu, sigma):
    return np.exp(-((u - mu) ** 2) / (2.0 * sigma * sigma)) / (math.sqrt(2.0 * math.pi) * sigma)


def surrogate(kind: str, u: np.ndarray, v_th: float) -> np.ndarray:
    """pseudo-derivative psi(u) of the spike function at u = v - A. Computed in float64, returned as float32."""
    u = np.ascontiguousarray(u, dtype=np.float64)
    if kind == "multi_gaussian":
        psi = _GAMMA * ((1 + _H) * _gauss(u, 0.0, _S) - _H * _gauss(u, _S, 6 * _S) - _H * _gauss(u, -_S, 6 * _S))
    elif kind == "triangle":  # Bellec et al. 2020: 0.3/v_th * max(0, 1 - |u|/v_th)
        psi = (0.3 / v_th) * np.maximum(0.0, 1.0 - np.abs(u) / v_th)
    else:
        raise ValueError(f"unknown surrogate '{kind}'")
    return psi.astype(np.float32)
