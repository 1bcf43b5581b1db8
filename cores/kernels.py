"""The PE's two inner loops, compiled with numba: the ordered synaptic sum and the e-prop eligibility traces.

Why compiled: numpy runs the traces as eleven passes over every synapse array (about 60 us a tick for the
keyword network's 24,000 hidden synapses, most of a tick), a loop over the synapses runs them in one pass
(about 10 us). numpy cannot fuse passes, so a loop compiler beats anything written here in numpy.

Why the bits do not change: each loop does the numpy code's float32 operations, element by element in the
same order (no fast-math, so no fused multiply-add or reassociation); the golden model (s2emu/golden.py),
still plain numpy, and tests/test_kernels.py hold them to that.

Compiled on first use and cached beside this file (numba's cache=True), so only processes that make learning
neuron, readout or BPTT PEs load numba (warm_kernels, as such a PE is made: a quarter second, or a few seconds
the first time on a machine), and only the first run on a machine compiles. numba costs a process about 38 MiB
(its compiler and LLVM); a process whose PEs only infer (learning rule "none": no traces) does without it and
sums synaptic rows with numpy's ordered reduction instead (_numpy_synaptic_sum, the code the kernel replaced:
the same float32 products and the same additions in the same order, so the same bits; tests/test_board.py).

Where the bits could differ from numpy's passes, no run goes: a NaN's sign and payload once a value is not
finite (numpy warns of overflow there, the loops do not), and a synaptic input that enters the sum as -0
with only -0 terms (numpy's reduction started from +0; the inputs start at +0 every tick).
"""

from __future__ import annotations

import functools
import os

import numpy as np


def _synaptic_sum(out, x, rows):
    """out[b, j] += x[b, i] * rows[i, j] for every source i active (x nonzero) in any stream, ascending i."""
    B, n_pre = x.shape
    n = out.shape[1]
    events = 0
    for i in range(n_pre):
        active = False
        for b in range(B):
            if x[b, i] != 0:
                active = True
        if not active:
            continue
        events += 1
        for b in range(B):
            xb = x[b, i]
            for j in range(n):
                out[b, j] += xb * rows[i, j]
    return events


def _eprop_traces(epsv, epsa, ebar, grad, x, psi, per_synapse, adaptive, summed,
                  alpha, one_a, k_va, rho, one_rho, beta, kappa):
    """One tick of one projection's traces: epsv [B, n_pre, n] per synapse or [B, n_pre, 1] per source, epsa
    and ebar [B, n_pre, n]; grad (summed: += ebar) [B, n_pre, n]; x [B, n_pre]; psi [B, n]. The operations and
    their order are those of e = psi (one_a epsv - beta epsa) as numpy computed it, pass by pass."""
    B, n_pre, n = ebar.shape
    for b in range(B):
        for i in range(n_pre):
            xi = x[b, i]
            if not per_synapse:
                epsv[b, i, 0] = epsv[b, i, 0] * alpha + xi
            for j in range(n):
                if per_synapse:
                    ev = epsv[b, i, j] * alpha + xi
                    epsv[b, i, j] = ev
                else:
                    ev = epsv[b, i, 0]
                p = psi[b, j]
                if adaptive:
                    ea = epsa[b, i, j] * (rho - one_rho * beta * p) + p * ev * k_va
                    epsa[b, i, j] = ea
                    e = (ev * one_a - ea * beta) * p
                else:
                    e = ev * one_a * p
                eb = ebar[b, i, j] * kappa + e
                ebar[b, i, j] = eb
                if summed:
                    grad[b, i, j] += eb


@functools.cache
def _compiled(fn):
    import numba  # here, not at import: routers and hosts never load it

    # nogil: a second thread may run the traces of half the streams (kernel_threads)
    try:
        return numba.njit(cache=True, error_model="numpy", nogil=True)(fn)
    except RuntimeError:  # nowhere to write the cache (a read-only install and home): compile in each process
        return numba.njit(error_model="numpy", nogil=True)(fn)


_helper = None  # kernel_threads: the thread that runs the second half of the streams' traces


def _forget_helper_in_child() -> None:
    """A forked child has no copy of the helper's thread: an executor it inherited would take work and never
    run it. The child starts without one (kernel_threads makes its own)."""
    global _helper
    _helper = None


os.register_at_fork(after_in_child=_forget_helper_in_child)


def kernel_threads(n: int) -> None:
    """Run the traces of a batch of streams on n threads (1 or 2): the local engine, which owns the machine's
    CPUs, asks for 2 where it has them; a Ray PE process has one CPU and keeps 1. The traces are most of a
    training tick and bound by memory traffic, which a second core adds to (1.6x on their part). Streams are
    independent, so the bits do not change."""
    global _helper
    if n > 1 and _helper is None:
        from concurrent.futures import ThreadPoolExecutor
        _helper = ThreadPoolExecutor(1, thread_name_prefix="s2emu-traces")
    elif n <= 1 and _helper is not None:
        _helper.shutdown()
        _helper = None


_loaded = False  # warm_kernels has loaded the compiled kernels in this process: synaptic_sum takes them


@functools.cache
def warm_kernels() -> None:
    """Load both kernels (compiling them if no cache has them) for the arrays PEs pass: float32, C-ordered
    but x, which a group passes as a column slice of its decoded input. The driver makes PEs while it builds,
    so a first run on a machine compiles there, before Ray's processes would all compile at once."""
    global _loaded
    _loaded = True
    one = np.zeros((1, 1), np.float32)
    strided = np.zeros((1, 2), np.float32)[:, :1]
    consts = [np.float32(0)] * 7
    for x in (one, strided):
        synaptic_sum(one, x, one)
        _compiled(_eprop_traces)(one[None], one[None], one[None], one[None], x, one, True, True, True, *consts)


def _float32(*arrays) -> None:
    for a in arrays:
        if a.dtype != np.float32:
            raise TypeError(f"the PE's kernels take float32 arrays, got {a.dtype}")


def synaptic_sum(out: np.ndarray, x: np.ndarray, rows: np.ndarray) -> int:
    """out[B, n] += sum_i x[:, i] * rows[i], over the sources i active in any stream, in ascending order.

    The fixed order makes the sum bit-identical however the postsynaptic neurons are split. Returns the
    number of synaptic events (rows added), the chip's unit of synaptic work.
    """
    _float32(out, x, rows)
    if _loaded:
        return int(_compiled(_synaptic_sum)(out, x, rows))
    return _numpy_synaptic_sum(out, x, rows)


_SUM_ELEMENTS = 1 << 18  # bound on _numpy_synaptic_sum's temporary (1 MB of float32)


def _numpy_synaptic_sum(out: np.ndarray, x: np.ndarray, rows: np.ndarray) -> int:
    """synaptic_sum in numpy, for processes without numba: the active rows' products (float32, as the loop
    rounds them), the running sum folded into the first, then added along the rows' axis. numpy adds along a
    slow axis one term after another (pairwise summation runs only along the fast axis: numpy.sum, Notes), so
    this is the kernel's strict left-to-right loop, vectorised over the neurons."""
    active = np.flatnonzero(x[0] if x.shape[0] == 1 else x.any(axis=0))
    if len(active) == 0:
        return 0
    step = max(1, _SUM_ELEMENTS // out.size)
    for lo in range(0, len(active), step):
        part = active[lo:lo + step]
        terms = x.T[part][:, :, None] * rows[part][:, None, :]  # [k, B, n]
        terms[0] += out
        if out.size == 1:  # a lone sum would run along numpy's fast axis, pairwise: give it a second column
            terms = np.concatenate([terms.reshape(-1, 1), np.zeros((len(part), 1), np.float32)], axis=1)
            out[...] = np.add.reduce(terms, axis=0)[0]
        else:
            np.add.reduce(terms, axis=0, out=out)
    return len(active)


@functools.cache
def _trace_constants(c) -> tuple:
    """The float32 constants of the numpy formula, rounded as it rounded them: alpha, 1 - alpha, (1 - rho)
    (1 - alpha), rho, 1 - rho, beta, kappa (c: NeuronConstants, frozen, so found once per population)."""
    return (np.float32(c.alpha), np.float32(1 - c.alpha), np.float32((1 - c.rho) * (1 - c.alpha)),
            np.float32(c.rho), np.float32(1 - c.rho), np.float32(c.beta), np.float32(c.kappa))


def eprop_traces(S, q: int, x: np.ndarray, psi: np.ndarray) -> None:
    """One tick of projection q's e-prop traces on S's state (a NeuronPE or a group of them): epsv, epsa, e
    (never stored), ebar, and the ebar sum in the gradient slot unless S learns online."""
    epsv, epsa, ebar = S.epsv[q], S.epsa[q], S.ebar[q]
    summed = not S.online
    _float32(epsv, ebar, x, psi)
    kernel = _compiled(_eprop_traces)
    arrays = (epsv if S.per_synapse else epsv[:, :, None], ebar if epsa is None else epsa, ebar,  # arrays a
              S.grad[q] if summed else ebar, x, psi)  # branch never touches are passed as ebar
    rest = (S.per_synapse, S.c.adaptive, summed, *_trace_constants(S.c))
    half = len(x) // 2
    if _helper is None or half < _MIN_STREAMS_A_THREAD:
        kernel(*arrays, *rest)
        return
    second = _helper.submit(kernel, *(a[half:] for a in arrays), *rest)
    try:
        kernel(*(a[:half] for a in arrays), *rest)
    finally:
        second.result()


_MIN_STREAMS_A_THREAD = 4  # fewer: handing work to the thread costs more than it saves
