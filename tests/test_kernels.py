"""The compiled e-prop traces (cores/kernels.py) against the formula as numpy computes it pass by pass: same
bits in every layout (per synapse, per source), with and without adaptation, summed or online, at batch 1 and
more, on contiguous arrays and on a group member's strided views."""

from __future__ import annotations

import types

import numpy as np
import pytest

from s2emu.cores.kernels import eprop_traces
from s2emu.cores.neurons import NeuronConstants


def numpy_traces(S, q, x, psi):
    """SCIENCE.md's traces in numpy, one pass per operation (the code the kernel replaced)."""
    c = S.c
    one_a = np.float32(1 - c.alpha)
    k_va = np.float32((1 - c.rho) * (1 - c.alpha))
    psi3 = psi[:, None, :]
    epsv, ebar = S.epsv[q], S.ebar[q]
    e = np.empty(ebar.shape, np.float32)
    epsv *= c.alpha
    epsv += x[:, :, None] if S.per_synapse else x
    ev = epsv if S.per_synapse else epsv[:, :, None]
    if c.adaptive:
        epsa = S.epsa[q]
        epsa *= c.rho - np.float32(1 - c.rho) * c.beta * psi3
        tmp = psi3 * ev
        tmp *= k_va
        epsa += tmp
        np.multiply(ev, one_a, out=e)
        e -= epsa * c.beta
        e *= psi3
    else:
        np.multiply(ev, one_a, out=e)
        e *= psi3
    ebar *= c.kappa
    ebar += e
    if not S.online:
        S.grad[q] += ebar


def state(rng, B, n_pre, n, per_synapse, adaptive, online, strided):
    """A PE-like state with random traces; strided: every array a column slice of a wider one (a group member)."""
    c = NeuronConstants.make("alif" if adaptive else "lif", tau_m=20.0, tau_a=200.0, beta=1.8, tau_out=15.0)

    def arr(*shape):
        wide = rng.normal(size=(*shape[:-1], shape[-1] + 7)).astype(np.float32) if strided else None
        a = rng.normal(size=shape).astype(np.float32)
        if wide is None:
            return a
        wide[..., 3:3 + shape[-1]] = a
        return wide[..., 3:3 + shape[-1]]

    return types.SimpleNamespace(
        c=c, per_synapse=per_synapse, online=online,
        epsv=[arr(B, n_pre, n) if per_synapse else arr(B, n_pre)],
        epsa=[arr(B, n_pre, n) if adaptive else None], ebar=[arr(B, n_pre, n)],
        grad=[arr(n_pre, n) if online else arr(B, n_pre, n)])


@pytest.mark.parametrize("per_synapse", [True, False])
@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("B,strided,threads", [(1, False, 1), (3, False, 1), (1, True, 1), (2, True, 1),
                                               (9, False, 2), (9, True, 2)])
def test_traces_are_the_numpy_formula_bit_for_bit(per_synapse, adaptive, online, B, strided, threads):
    """threads 2: as the local engine runs them, 4 streams on a second thread and 5 on the caller's."""
    from s2emu.cores import kernels

    kernels.kernel_threads(threads)
    try:
        _check_traces(per_synapse, adaptive, online, B, strided)
    finally:
        kernels.kernel_threads(1)
    if threads > 1:
        assert kernels._helper is None  # kernel_threads(1) let the thread go


def _check_traces(per_synapse, adaptive, online, B, strided):
    rng = np.random.default_rng(7)
    n_pre, n = 13, 9
    ours = state(rng, B, n_pre, n, per_synapse, adaptive, online, strided)
    ref = types.SimpleNamespace(**{k: [None if a is None else a.copy() for a in v] if isinstance(v, list) else v
                                   for k, v in vars(ours).items()})
    for tick in range(20):
        x = (rng.random((B, n_pre)) < 0.3).astype(np.float32)
        if tick % 5 == 0:
            x[...] = 0  # a silent tick: the traces still decay
        psi = (rng.random((B, n)) * (rng.random((B, n)) < 0.8)).astype(np.float32)
        if strided:  # as a group passes its decoded input: a column slice
            x = np.concatenate([x, x], axis=1)[:, n_pre // 2:n_pre // 2 + n_pre]
            psi = np.concatenate([psi, psi], axis=1)[:, 1:1 + n]
        eprop_traces(ours, 0, x, psi)
        numpy_traces(ref, 0, x, psi)
        for name in ("epsv", "epsa", "ebar", "grad"):
            a, r = getattr(ours, name)[0], getattr(ref, name)[0]
            if r is not None:
                assert a.tobytes() == np.ascontiguousarray(r).tobytes(), (name, tick)
    assert np.abs(ours.ebar[0]).sum() > 0


def test_kernels_refuse_other_dtypes():
    from s2emu.cores.kernels import synaptic_sum

    with pytest.raises(TypeError, match="float32"):
        synaptic_sum(np.zeros((1, 3)), np.ones((1, 2), np.float32), np.ones((2, 3), np.float32))


def test_the_local_engine_freezes_the_heap_for_its_ticks_only():
    """numba's compiler leaves many objects in the heap; the local engine keeps the collector's full passes off
    them while it ticks (gc.freeze), and hands them back after, or a second run in one process would leak
    the first."""
    import gc

    from s2emu.build import build
    from s2emu.engines.local import run_local

    from conftest import smoke

    b = build(smoke(epochs=1, batch=1, pes=2))
    seen = []
    run_local(b, progress=lambda n: seen.append(gc.get_freeze_count()))
    assert seen and min(seen) > 0
    assert gc.get_freeze_count() == 0
    gc.freeze()  # the caller's own freeze stays the caller's
    try:
        held = gc.get_freeze_count()
        run_local(b)
        assert gc.get_freeze_count() == held
    finally:
        gc.unfreeze()


def test_kernels_compile_without_a_cache_where_none_can_be_written(monkeypatch):
    """A read-only install and home: numba cannot cache (it raises as the kernel is compiled); the kernels
    then compile in each process instead of failing every engine."""
    import numba

    from s2emu.cores import kernels

    njit = numba.njit

    def no_cache(*args, **kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function '_synaptic_sum': no locator available for file")
        return njit(*args, **kw)

    monkeypatch.setattr(numba, "njit", no_cache)
    fn = kernels._compiled.__wrapped__(kernels._synaptic_sum)
    out = np.zeros((1, 2), np.float32)
    assert fn(out, np.ones((1, 3), np.float32), np.ones((3, 2), np.float32)) == 3
    assert out.tolist() == [[3.0, 3.0]]


def test_a_forked_child_makes_its_own_trace_thread():
    """The local engine's trace thread (kernel_threads) is not copied into a forked child: the child's traces
    run to the end, and the same bits, instead of waiting on an executor whose thread it does not have."""
    import multiprocessing

    from s2emu.cores import kernels

    kernels.kernel_threads(2)
    try:
        rng = np.random.default_rng(3)
        S = state(rng, 9, 5, 4, True, True, False, False)
        x = (rng.random((9, 5)) < 0.5).astype(np.float32)
        psi = rng.random((9, 4)).astype(np.float32)
        eprop_traces(S, 0, x, psi)  # the parent's thread exists and has run work
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            child = pool.apply_async(_traces_in_child, (S, x, psi)).get(timeout=60)
        eprop_traces(S, 0, x, psi)
        assert child.tobytes() == S.ebar[0].tobytes()
    finally:
        kernels.kernel_threads(1)


def _traces_in_child(S, x, psi):
    from s2emu.cores import kernels

    assert kernels._helper is None  # forgotten at the fork
    kernels.kernel_threads(2)
    eprop_traces(S, 0, x, psi)
    return S.ebar[0]


def test_usable_cpus_without_an_affinity_mask(monkeypatch):
    """macOS and Windows have no os.sched_getaffinity: the engine and augmentation count the machine's CPUs."""
    import os

    from s2emu.cpus import usable_cpus

    assert usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity")
    assert usable_cpus() == (os.cpu_count() or 1)
