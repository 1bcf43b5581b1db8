"""PEs stepped together: the fast path for a population's PEs that share one process (the local engine).

A group is a population's neuron PEs of one shape (same slice size, projections, constants, learning rule,
streams and schedule). Each keeps all that makes it a PE: its ledger, counters, key map, packets in and out,
recordings and checkpoint state. Only its arrays live elsewhere: as row p of arrays the group shares ([P, ...],
through the ledger's backing), so that one numpy call advances the dynamics and traces of all P PEs. That is
neuron_tick (cores/pe.py), the very code a PE runs alone: every operation is elementwise but the ordered
synaptic sum, whose order does not depend on the split, so each PE's bits are what it computes alone
(tests/test_group.py compares states, counters and packets).

Why: at batch 1 a hidden PE's arrays are tiny (10 neurons) and its step is numpy's per-call overhead, paid
once per PE; a group pays it once.

Ticks off the hot path (a sample's first and last, a batch the fast decoder refuses) step each PE on its own.
"""

from __future__ import annotations

import pickle

import numpy as np

from .pe import NeuronPE, make_pe, neuron_tick


class StackedStore:
    """Backing for the ledgers of P PEs (cores/sram.py): each named array is one [P, ...] array, PE p's is
    its row p (a view: the PE reads and writes it as its own)."""

    def __init__(self, size: int):
        self.size = size
        self.arrays: dict[str, np.ndarray] = {}

    def backing(self, p: int):
        def alloc(name, shape, dtype, fill):
            a = self.arrays.get(name)
            if a is None:
                a = self.arrays[name] = np.full((self.size, *shape), fill, dtype=dtype)
            elif a.shape[1:] != tuple(shape) or a.dtype != dtype:
                raise ValueError(f"PE {p} of a group allocates '{name}' as {dtype}{list(shape)}, "
                                 f"the group holds {a.dtype}{list(a.shape[1:])}")
            else:
                a[p] = fill
            return a[p]
        return alloc


def group_key(config: dict):
    """What PEs must share to be stepped together (None: this PE steps alone)."""
    if config["role"] != "neuron":
        return None
    projections = tuple((pr["name"], pr["pre"], pr["n_pre"], pr["self_recurrent"]) for pr in config["incoming"])
    return (config["population"], config["hi"] - config["lo"], config["streams"], config["budget"], projections,
            pickle.dumps((config["learning"], config["constants"], config["record"], config["clock"])))


def make_pes(configs: list[dict], group: bool = True) -> tuple[list, list["NeuronGroup"]]:
    """The PEs of `configs` (in order) and the groups that step some of them together (group=False: none)."""
    members: dict = {}
    if group:
        for i, c in enumerate(configs):
            key = group_key(c)
            if key is not None:
                members.setdefault(key, []).append(i)
    pes = [None] * len(configs)
    groups = []
    for idx in members.values():
        if len(idx) < 2:
            continue
        store = StackedStore(len(idx))
        for p, i in enumerate(idx):
            pes[i] = make_pe(configs[i], backing=store.backing(p))
        groups.append(NeuronGroup([pes[i] for i in idx], idx, store))
    return [pe if pe is not None else make_pe(c) for pe, c in zip(pes, configs)], groups


def step_plan(slots, objs, groups) -> list[tuple[list[int], object]]:
    """How to step the objects at `slots` (in that order) of `objs`: (positions in slots, stepper) pairs,
    a group's members together where all of them are among the slots, every other object alone; in the
    order of the first position. groups: (the slots of its members, group) pairs."""
    where = {slot: i for i, slot in enumerate(slots)}
    plan, grouped = [], set()
    for members, g in groups:
        if all(m in where for m in members):
            plan.append(([where[m] for m in members], g))
            grouped.update(members)
    plan += [([i], objs[slot]) for i, slot in enumerate(slots) if slot not in grouped]
    return sorted(plan, key=lambda item: item[0][0])


class NeuronGroup:
    """P NeuronPEs of one shape, stepped together; `endpoints` are their indices among the engine's PEs."""

    def __init__(self, members: list[NeuronPE], endpoints: list[int], store: StackedStore):
        self.members, self.endpoints, self.P = members, endpoints, len(members)
        m0 = members[0]
        name_of = {id(a): name for name, a in m0.ledger.arrays.items()}

        def stacked(view):
            return None if view is None else store.arrays[name_of[id(view)]]

        # the state neuron_tick reads and writes, as m0 names it, with the leading PE axis
        self.W, self.epsv, self.epsa, self.ebar, self.grad = (
            [stacked(a) for a in arrays] for arrays in (m0.W, m0.epsv, m0.epsa, m0.ebar, m0.grad))
        self.v, self.a, self.z, self.I = (stacked(a) for a in (m0.v, m0.a, m0.z, m0.I))
        self.c, self.lc, self.projections = m0.c, m0.lc, m0.projections
        self.per_synapse, self.online, self.B = m0.per_synapse, m0.online, m0.B
        self._scratch_arrays = {}
        self._decode_table()

    scratch = NeuronPE.scratch

    def _decode_table(self):
        """One sorted key table for all members: member p's key k is p << 32 | k, pointing at its column and
        block of the group's dense [P, B, columns] array (each member's own layout, NeuronPE._dense_layout)."""
        cols = []
        for m in self.members:
            if m._columns is None and len(m.km_keys):
                m._dense_layout()
            cols.append(m._columns)
        self.fast = all(c is not None and c == cols[0] for c in cols)
        if not self.fast:  # members that do not share one layout decode on their own, every tick
            return
        self._columns = cols[0]
        self._table = np.concatenate([(p << 32) + m.km_keys.astype(np.int64) for p, m in enumerate(self.members)])
        self._padded = np.append(self._table, self._table[-1])
        self._member = np.repeat(np.arange(self.P), [len(m.km_keys) for m in self.members])
        self._column = np.concatenate([m._km_column for m in self.members])
        self._block = np.concatenate([m._km_block for m in self.members])
        self._mark = np.empty(len(self._table), np.intp)

    def _decode(self, inbounds):
        """Every member's packets scattered into one dense array in a few numpy calls: (x per projection
        [P, B, n_pre] or None, [(member, learning signal [B, n])]). None: some batch needs its PE's careful
        path (a repeated or unknown key, a wrong stream count), which also names the PE at fault."""
        spikes, spike_owner, payload_keys, payloads, payload_owner, got = [], [], [], [], [], []
        for p, ib in enumerate(inbounds):
            if ib is None or not len(ib):
                continue
            if ib.streams != self.B:
                return None
            got.append(p)
            if len(ib.mc_keys):
                spikes.append(ib.mc_keys)
                spike_owner.append(p)
            if len(ib.mcp_keys):
                payload_keys.append(ib.mcp_keys)
                payloads.append(ib.mcp_payload)
                payload_owner.append(p)
        n_blocks = len(self._columns)
        if not got:
            return [None] * (n_blocks - 1), []
        parts = [(keys, owner) for keys, owner in ((spikes, spike_owner), (payload_keys, payload_owner)) if keys]
        # member p's key k is p << 32 | k in the group's table; spikes first, then payloads
        keys = np.concatenate([np.repeat(np.array(owner, np.int64) << 32, [len(k) for k in ks])
                               + np.concatenate(ks) for ks, owner in parts])
        pos = np.searchsorted(self._table, keys)
        if (self._padded[pos] != keys).any():
            return None
        order = np.arange(len(keys))
        self._mark[pos] = order  # a repeated key keeps only one of its indices
        if (self._mark[pos] != order).any():
            return None
        for p in got:
            self.members[p].counters["packets_in"] += len(inbounds[p])
        member, column = self._member[pos], self._column[pos]
        dense = np.zeros((self.P, self.B, self._columns[-1][1]), np.float32)
        n_spikes = sum(len(k) for k in spikes)
        dense[member[:n_spikes], :, column[:n_spikes]] = 1
        if payloads:
            dense[member[n_spikes:], :, column[n_spikes:]] = np.concatenate(payloads)
        present = np.bincount(member * n_blocks + self._block[pos], minlength=self.P * n_blocks)
        present = present.reshape(self.P, n_blocks) > 0
        x = [dense[:, :, a:b] if present[:, q].any() else None for q, (a, b) in enumerate(self._columns[:-1])]
        a, b = self._columns[-1]
        return x, [(p, dense[p, :, a:b]) for p in np.flatnonzero(present[:, -1])]

    def step(self, tick: int, inbounds: list) -> list:
        """The members' outbound batches for this tick, as each member's own step would give them. If a
        member raises, `at` is its index."""
        self.at = 0
        m0 = self.members[0]
        sample, s = m0.clock.where(tick)
        got = self._decode(inbounds) if self.fast and 0 < s <= m0.T else None
        if got is None:
            return [self._each(p).step(tick, ib) for p, ib in enumerate(inbounds)]
        x, signals = got
        for p, L in signals:
            self._each(p)._take_learning_signal(L)
        learn = m0.learning and m0.clock.learns(sample)
        neuron_tick(self, x, learn)
        # each member's active rows (the group's sum ran over their union: a row active elsewhere adds 0)
        rows = [np.zeros(self.P, np.int64) if xq is None else
                xq.reshape(self.P, -1, xq.shape[-1]).any(axis=1).sum(axis=1) for xq in x]
        outs = []
        for p, m in enumerate(self.members):
            m._note_work([int(r[p]) for r in rows], learn)
            outs.append(m._emit(tick))
        return outs

    def _each(self, p: int) -> NeuronPE:
        self.at = p
        return self.members[p]
