"""PEs stepped together: the fast path for a population's PEs that share one process (the local engine, and a
--pes-per-process actor process).

A group is a population's neuron PEs of one shape (same slice size, projections, constants, learning rule,
streams and schedule). Each keeps all that makes it a PE: its ledger, counters, key map, packets in and out,
recordings and checkpoint state. Only its arrays live elsewhere: side by side with the other members' along
the neuron axis (the last) of arrays the group shares, given out by its ledger's backing; PE p's are columns
[p n, (p + 1) n). So the group is one wide PE, and neuron_tick (cores/eprop_pe.py), the very code a PE runs alone,
advances all of its members in one set of numpy calls: every operation is elementwise but the synaptic sum,
whose order (ascending source) does not depend on the split, so each PE's bits are what it computes alone
(tests/test_group.py compares states, counters and packets).

Why: at batch 1 a hidden PE's arrays are tiny (10 neurons) and its step is numpy's per-call overhead, paid
once per PE; a group pays it once, on rows as long as the population's slice.

The members must see the same presynaptic input, as a population's PEs do (each holds every source's row);
a tick on which they do not, a sample's first and last ticks, and a batch the fast decoder refuses (which
also names the PE at fault) step each PE on its own.
"""

from __future__ import annotations

import pickle

import numpy as np

from s2emu.errors import PacketError

from .eprop_pe import NeuronPE, apply_update, fold_learning_signal, neuron_tick
from .pe import find_each_once
from .roles import make_pe


class StackedStore:
    """Backing for the ledgers of P PEs of `width` neurons each (cores/sram.py): each named array holds the P
    side by side along its last axis, the neuron axis; PE p's array is its columns [p width, (p + 1) width),
    a view the PE reads and writes as its own."""

    def __init__(self, size: int, width: int):
        self.size, self.width = size, width
        self.arrays: dict[str, np.ndarray] = {}

    def backing(self, p: int):
        n = self.width

        def alloc(name, shape, dtype, fill):
            if not shape or shape[-1] != n:
                raise ValueError(f"PE {p} of a group allocates '{name}' as {list(shape)}: a group's arrays end "
                                 f"with the neuron axis ({n})")
            a = self.arrays.get(name)
            if a is None:
                a = self.arrays[name] = np.full((*shape[:-1], self.size * n), fill, dtype=dtype)
            elif a.shape[:-1] != tuple(shape[:-1]) or a.dtype != dtype:
                raise ValueError(f"PE {p} of a group allocates '{name}' as {dtype}{list(shape)}, "
                                 f"the group holds {a.dtype}{list(a.shape)}")
            view = a[..., p * n:(p + 1) * n]
            view[...] = fill
            return view
        return alloc


def group_key(config: dict):
    """What PEs must share to be stepped together (None: this PE steps alone). Every array of a neuron PE ends
    with its neuron axis but the per-source eligibility traces and the delay rings, so those PEs step alone."""
    lc = config["learning"]
    if config["role"] != "neuron" or (lc["rule"] != "none" and lc["eligibility_layout"] != "per_synapse") \
            or any(pr.get("delay", 1) > 1 for pr in config["incoming"]):  # a delay ring has no neuron axis either
        return None
    projections = tuple((pr["name"], pr["pre"], pr["n_pre"], pr["self_recurrent"]) for pr in config["incoming"])
    return (config["population"], config["hi"] - config["lo"], config["streams"], config["budget"], projections,
            pickle.dumps((config["learning"], config["constants"], config["record"], config["clock"],
                          config.get("offset"))))


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
        store = StackedStore(len(idx), configs[idx[0]]["hi"] - configs[idx[0]]["lo"])
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
    """P NeuronPEs of one shape, stepped together as one wide PE; `endpoints` are their indices among the
    engine's PEs. If a member raises, `at` is its index."""

    def __init__(self, members: list[NeuronPE], endpoints: list[int], store: StackedStore):
        self.members, self.endpoints, self.P = members, endpoints, len(members)
        m0 = members[0]
        self.n = m0.n
        name_of = {id(a): name for name, a in m0.ledger.arrays.items()}

        def whole(view):
            return None if view is None else store.arrays[name_of[id(view)]]

        # the state neuron_tick reads and writes, as m0 names it, all members side by side
        self.W, self.epsv, self.epsa, self.ebar, self.grad = (
            [whole(a) for a in arrays] for arrays in (m0.W, m0.epsv, m0.epsa, m0.ebar, m0.grad))
        self.v, self.a, self.z, self.I = (whole(a) for a in (m0.v, m0.a, m0.z, m0.I))
        self.spike_count, self.rate_reg, self.T = whole(m0.spike_count), m0.rate_reg, m0.T  # rate regularization
        self.c, self.lc, self.projections = m0.c, m0.lc, m0.projections
        self.per_synapse, self.online, self.B = m0.per_synapse, m0.online, m0.B
        # what apply_update (cores/eprop_pe.py) reads: the optimizer over the group's moments, every member's
        # self-synapses; and what each member's own Adam steps would have counted
        self.adam = [a.on(whole(a.m), whole(a.v)) for a in m0.adam]
        self.diagonal = (np.concatenate([m.diagonal[0] for m in members]), np.arange(self.P * self.n))
        self._optimizer_elements = sum(w.size for w in m0.W)
        self._bounds = np.arange(self.P + 1) * self.n  # member p's neurons: [bounds[p], bounds[p + 1])
        self._out_keys = np.concatenate([m.out_keys for m in members])  # member p's neuron i sends key p n + i
        self.at = 0
        self._decode_table()

    def _decode_table(self):
        """One sorted key table for all members: member p's key k is p << 32 | k, pointing at its column and
        block of a dense [P, B, columns] array (each member's own layout, NeuronPE._dense_layout)."""
        cols = []
        for m in self.members:
            if m._columns is None and len(m.km_keys):
                try:
                    m._dense_layout()
                except PacketError:  # a faulty key map: the PE raises it itself, at its first batch
                    m._columns = None
            cols.append(m._columns)
        self.fast = all(c is not None and c == cols[0] for c in cols)
        if not self.fast:  # members that do not share one layout step on their own, every tick
            return
        self._columns = cols[0]
        self._synapse_columns = cols[0][-1][0]  # the projections' sources; the learning signal after them
        # one member's decode serves all only where every member reads every source key the same way (members
        # that share one key map do: cores/pe.py KeyMapShare)
        m0 = self.members[0]
        if all(m._key_map is m0._key_map for m in self.members):
            self._one_map = True
        else:
            synapse_maps = [(m.km_keys[m._km_block < len(cols[0]) - 1].tobytes(),
                             m._km_column[m._km_block < len(cols[0]) - 1].tobytes()) for m in self.members]
            self._one_map = all(sm == synapse_maps[0] for sm in synapse_maps)
        self._table = None  # _member_table's, made when members first get different packets

    def _member_table(self):
        """The members' key maps as one sorted table (member p's key k is p << 32 | k) and, per entry, its member,
        column and block, for _decode_each. Made on first use: it is P key maps long, and a population whose
        members always get the same packets (no learning signal, as in inference) never needs it."""
        ms = self.members
        self._table = np.concatenate([(p << 32) + m.km_keys.astype(np.int64) for p, m in enumerate(ms)])
        self._padded = np.append(self._table, self._table[-1])
        self._member = np.repeat(np.arange(self.P, dtype=np.int32), [len(m.km_keys) for m in ms])
        self._column = np.concatenate([m._km_column for m in ms]).astype(np.int32)
        self._block = np.concatenate([m._km_block for m in ms]).astype(np.int32)
        self._mark = np.empty(len(self._table), np.intp)

    def _decode(self, inbounds):
        """The members' common presynaptic input (per projection [B, n_pre] or None) and their learning
        signals [(member, [B, n])]; None if the tick must step each member alone. The common case, every
        member sent the same packets without a learning signal, decodes one member's batch."""
        first = inbounds[0]
        if self._one_map and first is not None and len(first) and all(
                ib is first  # the router hands one batch to endpoints that get the same packets
                or ib is not None and ib.mc_keys.tobytes() == first.mc_keys.tobytes()
                and ib.mcp_keys.tobytes() == first.mcp_keys.tobytes()
                and ib.mcp_payload.tobytes() == first.mcp_payload.tobytes() for ib in inbounds[1:]):
            got = self.members[0]._scatter(first)
            if got is None or got[1][-1]:  # the careful path, or a learning signal (for member 0 alone)
                return self._decode_each(inbounds)
            n = len(first)  # every member got these packets
            for m in self.members:
                m.counters["packets_in"] += n
            dense, present = got
            return [dense[:, a:b] if present[q] else None for q, (a, b) in enumerate(self._columns[:-1])], []
        return self._decode_each(inbounds)

    def _decode_each(self, inbounds):
        """_decode for members that got different packets: all of them scattered into one dense [P, B,
        columns] array in a few numpy calls; None unless their presynaptic input is the same."""
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
        if not parts:  # point-to-point packets alone: each PE counts them
            return None
        # member p's key k is p << 32 | k in the group's table; spikes first, then payloads
        keys = np.concatenate([np.repeat(np.array(owner, np.int64) << 32, [len(k) for k in ks])
                               + np.concatenate(ks) for ks, owner in parts])
        if self._table is None:
            self._member_table()
        pos = find_each_once(keys, self._table, self._padded, self._mark)
        if pos is None:
            return None
        member, column = self._member[pos], self._column[pos]
        dense = np.zeros((self.P, self.B, self._columns[-1][1]), np.float32)
        n_spikes = sum(len(k) for k in spikes)
        dense[member[:n_spikes], :, column[:n_spikes]] = 1
        if payloads:
            dense[member[n_spikes:], :, column[n_spikes:]] = np.concatenate(payloads)
        synapses = dense[:, :, :self._synapse_columns]
        if self.P > 1 and not (synapses[1:] == synapses[0]).all():
            return None
        for p in got:
            self.members[p].counters["packets_in"] += len(inbounds[p])
        present = np.bincount(self._block[pos][member == 0], minlength=n_blocks) > 0
        x = [dense[0, :, a:b] if present[q] else None for q, (a, b) in enumerate(self._columns[:-1])]
        a, b = self._columns[-1]
        signals = np.bincount(member[self._block[pos] == n_blocks - 1], minlength=self.P)
        return x, [(p, dense[p, :, a:b]) for p in np.flatnonzero(signals)]

    def step(self, tick: int, inbounds: list) -> list:
        """The members' outbound batches for this tick, as each member's own step would give them."""
        self.at = 0
        m0 = self.members[0]
        sample, s = m0.clock.where(tick)
        if s == 0 and self.fast:
            outs = self._sample_start(tick, sample, inbounds)
            if outs is not None:
                return outs
        got = self._decode(inbounds) if self.fast and m0.steps_at(s) else None
        if got is None:
            return [self._each(p).step(tick, ib) for p, ib in enumerate(inbounds)]
        x, signals = got
        for p, L in signals:
            self._each(p)._take_learning_signal(L, inbounds[p].tick)
        learn = m0.learning and m0.clock.learns(sample)
        rows = neuron_tick(self, x, learn, s - m0.offset)  # every member's rows: they share the input
        work = m0._tick_work(rows, learn)  # and so every member's work: they have one shape
        outs = []
        if self.B == 1:  # spikes alone: the neurons that fired found once, member p's fired[cut[p]:cut[p + 1]]
            fired = np.flatnonzero(self.z[0])
            cut = np.searchsorted(fired, self._bounds).tolist()
            keys = self._out_keys[fired]
            fired %= self.n  # members are n wide: member p's neuron i is the group's p n + i
            for p, m in enumerate(self.members):
                self.at = p
                m._note_work(work)
                m._record(tick, fired[cut[p]:cut[p + 1]])
                outs.append(m._send_spikes(tick, keys[cut[p]:cut[p + 1]]))
            return outs
        # streams: each member's _emit, its numpy calls made once for the group (a fifth of a keyword tick
        # at batch 32 went to twelve members' small calls); each member gets the same values, in its order
        z = self.z
        fired = np.flatnonzero(z.any(axis=0))
        cut = np.searchsorted(fired, self._bounds).tolist()
        keys, payload = self._out_keys[fired], z[:, fired].T
        spikes = np.count_nonzero(z.reshape(self.B, self.P, self.n), axis=(0, 2)).tolist()
        at = [0] * (self.P + 1)  # member p's spikes: b, j [at[p]:at[p + 1]]
        if m0.record_spikes and len(fired):
            b, j = np.nonzero(z)  # stream-major, as each member's np.nonzero(its z): member p's in that order
            order = np.argsort(j // self.n, kind="stable")
            at = np.searchsorted(j[order], self._bounds).tolist()
            b, j = b[order], j[order]
        for p, m in enumerate(self.members):
            self.at = p
            m._note_work(work)
            m._log_voltage(tick)  # and its spikes, found above for the group:
            if m0.record_spikes and at[p] < at[p + 1]:
                m._log_spikes(tick, b[at[p]:at[p + 1]], j[at[p]:at[p + 1]] - p * self.n)
            m.counters["spikes"] += spikes[p]
            outs.append(m._out(tick, mcp_keys=keys[cut[p]:cut[p + 1]], mcp_payload=payload[cut[p]:cut[p + 1]]))
        return outs

    def _sample_start(self, tick: int, sample: int, inbounds: list) -> list | None:
        """Tick 0 of a sample (NeuronPE.step's), all members at once: the learning signal of the sample that
        ended (the weights change as it arrives: one Adam step over the group's arrays, not one per member),
        the pending online update, the reset. None: the members step alone (they got different packets)."""
        got = self._decode(inbounds)
        if got is None:
            return None
        m0 = self.members[0]
        signals = got[1]
        if len(signals) == self.P and m0.learning:
            self._take_learning_signals(np.concatenate([L for _, L in signals], axis=1), inbounds[0].tick)
        else:  # some members, or learning is off (the PE raises)
            for p, L in signals:
                self._each(p)._take_learning_signal(L, inbounds[p].tick)
        pending = [m.pending for m in self.members]
        if any(pending) and m0.clock.learns(sample - 1):
            if all(pending):
                self._update(sample - 1)
            else:
                for p in np.flatnonzero(pending):
                    self._each(p)._update(sample - 1)
        for m in self.members:
            m.pending = False
        NeuronPE._reset(self)
        outs = []
        for p, m in enumerate(self.members):
            self.at = p
            outs.append(m._out(tick))
        return outs

    def _take_learning_signals(self, L: np.ndarray, sent: int) -> None:
        """NeuronPE._take_learning_signal for every member at once; L: theirs side by side [B, P n]."""
        for m in self.members:
            m._count(*m._signal_work)
        fold_learning_signal(self, L)
        if self.online:
            for m in self.members:
                m.pending = True
            return
        done = self.members[0].clock.where(sent)[0]
        if self.members[0].clock.learns(done):
            self._update(done)

    def _update(self, sample: int) -> None:
        """NeuronPE._update for every member at once (they have taken the same steps)."""
        if len({m.updates for m in self.members}) != 1:  # cannot happen to PEs stepped alike; never assumed
            for p in range(self.P):
                self._each(p)._update(sample)
            return
        m0 = self.members[0]
        for m in self.members:
            m.updates += 1
            m.counters["optimizer_elements"] += self._optimizer_elements
            m.counters["updates"] += 1
        apply_update(self, m0.lr_for(sample), m0.updates)

    def _each(self, p: int) -> NeuronPE:
        self.at = p
        return self.members[p]
