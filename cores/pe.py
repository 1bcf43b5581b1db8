"""The processing element: a plain object, no Ray. `step(tick, inbound) -> outbound` is the whole contract.

A PE owns a slice of one population (spiking LIF/ALIF neurons, or the readout), the synapse rows that target
them (one row per presynaptic source, as on SpiNNaker), the e-prop eligibility traces and the Adam state,
all allocated through its SRAM ledger. Timing follows cores/timing.py.

Why results are identical for every split over PEs: weights are cut from global matrices; inbound packets
are processed in key order (= global neuron order); a neuron's synaptic input is accumulated row by row in
that order (event-driven, as on the chip, never through BLAS whose summation order depends on matrix
shapes); everything else is elementwise.
"""

from __future__ import annotations

import functools
import operator

import numpy as np

from s2emu.errors import PacketError
from s2emu.router.packets import PacketBatch, shared_empty

from .kernels import eprop_traces, synaptic_sum, warm_kernels
from .neurons import NeuronConstants, surrogate
from .optimizer import Adam
from .sram import SramLedger
from .timing import SampleClock

LABEL_TAG = 1  # P2P tag: class labels from the host to the readout PE
KIND_SYNAPSE, KIND_ERROR = 0, 1  # what an inbound MC key means to this PE
WORK = ("macs", "accesses", "packets_in", "packets_out", "optimizer_elements")  # what the chip model prices
OPTIMIZER_WEIGHT = 20  # an Adam step of one weight takes about 20 MACs' time (s2emu/chipmodel.py: 57 cycles vs 3)

_EMPTY_U32 = shared_empty(np.uint32, (0,))
_WORK_OF = operator.itemgetter(*WORK)  # a PE's counters -> its WORK tuple


@functools.lru_cache(maxsize=None)
def _no_payloads(streams: int) -> tuple:
    """A batch's parts after its spike keys when it has nothing else: MCP keys and payload, P2P dest, tag and
    payload, each an empty read-only array."""
    return (_EMPTY_U32, shared_empty(np.float32, (0, streams)), _EMPTY_U32, _EMPTY_U32,
            shared_empty(np.uint32, (0, streams)))


def spikes_batch(src, tick, streams, keys: np.ndarray) -> PacketBatch:
    """A batch of spikes alone (keys: uint32, contiguous), a PE's batch on most ticks; built without checks."""
    return PacketBatch.unchecked(int(src), int(tick), int(streams), keys, *_no_payloads(streams))


def make_batch(src, tick, streams, *, mc_keys=None, mcp_keys=None, mcp_payload=None,
               p2p_dest=None, p2p_tag=None, p2p_payload=None) -> PacketBatch:
    """A packet batch from optional parts (missing parts are empty)."""
    u32 = lambda a: _EMPTY_U32 if a is None else np.ascontiguousarray(a, dtype=np.uint32)  # noqa: E731
    if mcp_keys is None and p2p_dest is None and mcp_payload is None and p2p_tag is None and p2p_payload is None:
        return spikes_batch(src, tick, streams, u32(mc_keys))  # spikes alone, or nothing
    m = u32(mcp_keys)
    p = u32(p2p_dest)
    # the conversions above give every array its dtype and shape, which is all the checked constructor
    # would verify (~10 us a batch, every PE every tick); values are checked where batches are encoded
    return PacketBatch.unchecked(
        int(src), int(tick), int(streams), u32(mc_keys), m,
        (shared_empty(np.float32, (0, streams)) if mcp_payload is None
         else np.ascontiguousarray(mcp_payload, dtype=np.float32).reshape(len(m), streams)),
        p, u32(p2p_tag),
        (shared_empty(np.uint32, (0, streams)) if p2p_payload is None
         else np.ascontiguousarray(p2p_payload, dtype=np.uint32).reshape(len(p), streams)),
    )


def neuron_tick(S, x: list, learn: bool) -> list[int]:
    """One tick of SCIENCE.md's neuron dynamics and, if `learn`, its e-prop eligibility traces, on the state
    of S: a NeuronPE, or a group of them stepped together as one wide PE (cores/group.py: its members side by
    side on the neuron axis). Every operation is elementwise but the ordered synaptic sum, so a group's result
    is each of its PEs' own, bit for bit. x: per projection, presynaptic values [B, n_pre] or None. Returns
    the active presynaptic rows per projection."""
    c = S.c
    S.I[...] = 0
    rows = [0 if xq is None else synaptic_sum(S.I, xq, S.W[q]) for q, xq in enumerate(x)]
    z_prev = S.z.copy()
    if c.adaptive:
        S.a *= c.rho
        S.a += np.float32(1 - c.rho) * z_prev
        A = c.v_th + c.beta * S.a
    else:
        A = np.float32(c.v_th)
    S.v *= c.alpha
    S.v += np.float32(1 - c.alpha) * S.I
    S.v -= z_prev * A
    u = S.v - A
    S.z[...] = u > 0
    if learn:
        psi = surrogate(S.lc["surrogate"], u, c.v_th)
        for q, xq in enumerate(x):
            eprop_traces(S, q, np.zeros(S.ebar[q].shape[:-1], np.float32) if xq is None else xq, psi)
    return rows


def fold_learning_signal(S, L: np.ndarray) -> None:
    """The learning signal L [B, n] folded into S's gradient slots (S: a NeuronPE, or a group of them, as in
    neuron_tick): online, grad += sum_b L_b ebar_b in stream order; at the end of a sample the slot holds the
    ebar sum, which becomes the gradient (at batch 1 in place, as on the chip; with B streams summed into
    slot 0, which carries the batch gradient to apply_update)."""
    for q in range(len(S.projections)):
        if S.online:
            for b in range(S.B):
                S.grad[q] += L[b] * S.ebar[q][b]
        elif S.B == 1:
            S.grad[q][0] *= L[0]
        else:
            g = L[0] * S.grad[q][0]
            for b in range(1, S.B):
                g += L[b] * S.grad[q][b]
            S.grad[q][0] = g


def apply_update(S, lr: float, t: int) -> None:
    """Adam step t of every incoming projection of S (a NeuronPE or a group) from its gradient slot, averaged
    over the streams, then cleared; a self-recurrent projection's diagonal (no self-connections) stays 0."""
    for q, pr in enumerate(S.projections):
        g = S.grad[q] if S.online else S.grad[q][0]
        g /= np.float32(S.B)
        if pr["self_recurrent"]:
            g[S.diagonal] = 0
        S.adam[q].step(S.W[q], g, lr, t)
        S.grad[q][...] = 0


def find_each_once(keys: np.ndarray, table: np.ndarray, padded: np.ndarray, mark: np.ndarray) -> np.ndarray | None:
    """Each key's position in the sorted `table`, or None if a key is not there or comes twice. `padded` is the
    table with its last key repeated (searchsorted gives len(table) past the last key, and that slot holds a
    key that such keys exceed); `mark` is scratch of the table's length."""
    pos = np.searchsorted(table, keys)
    if (padded[pos] != keys).any():
        return None
    order = np.arange(len(keys))
    mark[pos] = order  # a repeated key keeps only one of its indices
    return None if (mark[pos] != order).any() else pos


def _get_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set_path(obj, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, last, value)


class ProcessingElement:
    """Shared parts: configuration, ledger, inbound decoding, counters, recording, checkpoint state."""

    # plain values a PE keeps beside its ledger, saved in checkpoints; each class names its own (dotted paths
    # reach into parts); everything else a PE keeps is in its ledger
    STATE_ATTRS = ("updates",)

    def __init__(self, config: dict, backing=None):
        self.config = config
        self.pe_id = int(config["pe_id"])
        self.label = config["label"]
        self.B = int(config["streams"])
        self.clock = SampleClock.from_dict(config["clock"])
        self.T = self.clock.steps
        lc = config["learning"]
        self.learning = lc["rule"] != "none"
        self.lc = lc
        self.ledger = SramLedger(self.label, config["budget"], self.B, backing)
        self.projections = config["incoming"]  # list of dicts: name, pre, n_pre, weights, self_recurrent
        km = config["keymap"]
        self.km_keys = np.asarray(km["keys"], dtype=np.uint32)
        self.km_kind = np.asarray(km["kind"], dtype=np.int8)
        self.km_proj = np.asarray(km["proj"], dtype=np.int32)
        self.km_row = np.asarray(km["row"], dtype=np.int32)
        # macs / accesses: multiply-accumulates and SRAM words read or written by the network and its learning
        # rule (definitions beside each count; the optimizer step, the same Adam for every rule, is not counted)
        self.counters = {"packets_in": 0, "packets_out": 0, "synaptic_events": 0, "spikes": 0, "updates": 0,
                         "macs": 0, "accesses": 0, "optimizer_elements": 0}
        # the work of this PE's heaviest tick (most MACs + accesses + optimizer work), which the chip model prices: a tick must
        # fit its time step at its peak, not on average (s2emu/chipmodel.py)
        self.counters.update({f"peak_tick_{k}": 0 for k in WORK})
        self._work_before = (0,) * len(WORK)
        self.updates = 0  # optimizer steps taken (Adam's t)
        self._columns = None  # _scatter's layout, made on first use (_dense_layout)
        self.rings = []  # per projection: its delay ring (cores/timing.py) or None (delay 1); _alloc_projection

    # -- inbound -------------------------------------------------------------------------------------------
    def _decode(self, inbound: PacketBatch | None):
        """Dense presynaptic values per projection ([B, n_pre] or None) and the learning signal ([B, n] or None)."""
        x = [None] * len(self.projections)
        if inbound is None or len(inbound) == 0:
            return x, None, inbound
        got = self._scatter(inbound)
        if got is None:
            return self._decode_slow(inbound)
        self.counters["packets_in"] += len(inbound)
        dense, present = got
        for q, (a, b) in enumerate(self._columns[:-1]):
            if present[q]:
                x[q] = dense[:, a:b]
        a, b = self._columns[-1]
        return x, (dense[:, a:b] if present[-1] else None), inbound

    def _scatter(self, inbound: PacketBatch):
        """The hot path of _decode: every packet's value written straight into one dense [B, columns] array
        (each projection's sources, then the learning signal, side by side) in a few numpy calls, and which
        blocks got any. None when the batch needs the careful path: a repeated key (values add up, in key
        order), an unknown key or a wrong stream count (both raise there, with the key named)."""
        if not len(self.km_keys) or inbound.streams != self.B:
            return None
        if self._columns is None:
            self._dense_layout()
        keys, vals = self._keys_values(inbound)
        pos = find_each_once(keys, self.km_keys, self._km_keys_padded, self._mark)
        if pos is None:
            return None
        dense = np.zeros((self.B, self._columns[-1][1]), np.float32)
        dense[:, self._km_column[pos]] = 1 if vals is None else vals.T
        return dense, np.bincount(self._km_block[pos], minlength=len(self._columns)) > 0

    def _dense_layout(self):
        """Where each key-map entry lands in _scatter's dense array: its column and block (projection q, or
        the learning signal after the last projection)."""
        n_q = len(self.projections)
        synapse, error = self.km_kind == KIND_SYNAPSE, self.km_kind == KIND_ERROR
        error_rows = self.km_row[error]
        n_error = max(getattr(self, "n", 0), int(error_rows.max()) + 1 if len(error_rows) else 0)
        edges = np.cumsum([0] + [pr["n_pre"] for pr in self.projections] + [n_error])
        self._columns = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
        block = np.where(synapse, self.km_proj, n_q).astype(np.intp)
        known = error | (synapse & (self.km_proj >= 0) & (self.km_proj < n_q))
        if not known.all() or not ((self.km_row >= 0) & (self.km_row < np.diff(edges)[block])).all():
            raise PacketError(f"{self.label}: its key map names a row or projection it does not have")
        self._km_block = block
        self._km_column = (edges[block] + self.km_row).astype(np.intp)
        self._km_keys_padded = np.append(self.km_keys, self.km_keys[-1])
        self._mark = np.empty(len(self.km_keys), np.intp)

    def _decode_slow(self, inbound: PacketBatch):
        """_decode in key order through _lookup: repeated keys add up in that order; errors are raised."""
        x = [None] * len(self.projections)
        err = None
        kind, proj, row, vals, unique = self._lookup(inbound)
        # a key arrives at most once a tick in a healthy run: plain assignment; a repeated key adds up
        put = (lambda dst, r, v: dst.__setitem__(r, v)) if unique else np.add.at
        for q, pr in enumerate(self.projections):
            sel = (kind == KIND_SYNAPSE) & (proj == q)
            if sel.any():
                xq = np.zeros((self.B, pr["n_pre"]), np.float32)
                put(xq.T, row[sel], vals[sel])
                x[q] = xq
        sel = kind == KIND_ERROR
        if sel.any():
            err = np.zeros((self.B, self.n), np.float32)
            put(err.T, row[sel], vals[sel])
        return x, err, inbound

    def _keys_values(self, inbound: PacketBatch):
        """Every multicast key of a batch, spikes then payloads, and their values [n, B]; values None: spikes
        alone, value 1 in every stream. One kind only (the common case) needs no concatenation."""
        mc, mcp = inbound.mc_keys, inbound.mcp_keys
        if not len(mcp):
            return mc, None
        if not len(mc):
            return mcp, inbound.mcp_payload
        return (np.concatenate([mc, mcp]),
                np.concatenate([np.ones((len(mc), self.B), np.float32), inbound.mcp_payload]))

    def _lookup(self, inbound: PacketBatch | None):
        """What each inbound packet means, by the key map: (kind, which, row, values [n, B], unique), in key
        order (= global neuron order, so sums over packets do not depend on the split; spikes without payload
        have value 1); unique: no key came twice. Checks the streams and that every key is known."""
        if inbound is None or len(inbound) == 0:
            return None
        if inbound.streams != self.B:
            raise PacketError(f"{self.label}: batch with {inbound.streams} streams, expected {self.B}")
        self.counters["packets_in"] += len(inbound)
        keys, vals = self._keys_values(inbound)
        if vals is None:
            vals = np.ones((len(keys), self.B), np.float32)
        step = keys[1:].astype(np.int64) - keys[:-1]
        if (step < 0).any():  # the router delivers sources in order, so this is rare
            order = np.argsort(keys, kind="stable")
            keys, vals = keys[order], vals[order]
            step = keys[1:].astype(np.int64) - keys[:-1]
        pos = np.minimum(np.searchsorted(self.km_keys, keys), max(len(self.km_keys) - 1, 0))
        bad = (self.km_keys[pos] != keys) if len(self.km_keys) else np.ones(len(keys), bool)
        if np.any(bad):
            raise PacketError(f"{self.label}: received key 0x{int(keys[np.argmax(bad)]):08x} at tick {inbound.tick} "
                              f"that it has no use for (routing table and key map disagree)")
        unique = bool((step != 0).all())  # sorted: repeats are neighbours
        return self.km_kind[pos], self.km_proj[pos], self.km_row[pos], vals, unique

    def _delayed(self, tick: int, inbound: PacketBatch | None, x: list) -> list:
        """The presynaptic values that act at `tick` (cores/timing.py). A delay-1 projection's act as they
        arrive; a delayed projection's wait in its ring, in the slot of the tick they act at (sent + delay),
        and leave it then. Values that would act in a later sample than they were sent in are dropped: each
        sample starts from rest. The ring does not care how late a batch arrives, as long as it is no later
        than the tick its values act at: that is what lets an engine deliver a window of ticks at once."""
        if not any(r is not None for r in self.rings):
            return x
        sent = None if inbound is None else inbound.tick
        out = list(x)
        for q, ring in enumerate(self.rings):
            if ring is None:
                continue
            d = ring.shape[1]
            if x[q] is not None and self.clock.where(sent + d)[0] == self.clock.where(sent)[0]:
                if sent + d < tick:
                    raise PacketError(f"{self.label}: values sent at tick {sent} arrived at tick {tick}, after "
                                      f"they should have acted (delay {d})")
                ring[:, (sent + d) % d] = x[q]
            slot = ring[:, tick % d]
            if slot.any():
                out[q] = slot.copy()
                slot[...] = 0
                self._count(0, 2 * slot.size)  # the slot read and cleared
            else:
                out[q] = None
        return out

    def _out(self, tick, **parts) -> PacketBatch:
        """The tick's outbound batch; every step ends here (or in _sent), so the tick's work is noted here too."""
        batch = make_batch(self.pe_id, tick, self.B, **parts)
        return self._sent(batch, len(batch))

    def _sent(self, batch: PacketBatch, n_packets: int) -> PacketBatch:
        """Note the tick's work (its packets out, and the peak tick as the chip model prices it); `batch` is sent."""
        c = self.counters
        c["packets_out"] += n_packets
        now = _WORK_OF(c)
        before = self._work_before
        self._work_before = now
        macs, accesses, optimizer = now[0] - before[0], now[1] - before[1], now[4] - before[4]
        if macs + accesses + OPTIMIZER_WEIGHT * optimizer > \
                c["peak_tick_macs"] + c["peak_tick_accesses"] + OPTIMIZER_WEIGHT * c["peak_tick_optimizer_elements"]:
            c.update({f"peak_tick_{k}": a - b for k, a, b in zip(WORK, now, before)})
        return batch

    def _alloc_projection(self, q: int, n: int):
        """Weights [n_pre, n] of incoming projection q (and its Adam state when learning) in the ledger."""
        pr, lc = self.projections[q], self.lc
        w = self.ledger.alloc(f"{pr['name']}.weights", (pr["n_pre"], n))
        w[...] = pr["weights"]
        self.W.append(w)
        d = int(pr.get("delay", 1))  # a delayed projection's values wait in a ring of d ticks: [B, d, n_pre]
        self.rings.append(self.ledger.alloc(f"{pr['name']}.delay_ring", (d, pr["n_pre"]), batched=True)
                          if d > 1 else None)
        if self.learning:
            self.adam.append(Adam(self.ledger, pr["name"], (pr["n_pre"], n), beta1=lc["beta1"], beta2=lc["beta2"],
                                  eps=lc["eps"], l2=lc["l2"], counts=self.counters))
        return pr["name"], pr["n_pre"]

    def _labels(self, inbound: PacketBatch, n_classes: int) -> np.ndarray:
        """The class label per stream from the host's one label packet (P2P, LABEL_TAG) of a sample."""
        sel = inbound.p2p_tag == LABEL_TAG
        if not sel.all() or sel.sum() != 1:
            raise PacketError(f"{self.label}: expected one label packet (P2P tag {LABEL_TAG}) per sample")
        lab = inbound.p2p_payload[sel][0]
        if np.any(lab >= n_classes):
            raise PacketError(f"{self.label}: label {int(lab.max())} out of range for {n_classes} classes")
        return lab

    def _count(self, macs: int, accesses: int) -> None:
        self.counters["macs"] += int(macs)
        self.counters["accesses"] += int(accesses)

    def _state_attrs(self) -> list[str]:
        return [a for cls in reversed(type(self).__mro__) for a in cls.__dict__.get("STATE_ATTRS", ())]

    def snapshot(self) -> dict:
        """This PE's whole state (s2emu/checkpoint.py)."""
        return {"ledger": self.ledger.arrays, "counters": dict(self.counters),
                "attrs": {a: _get_path(self, a) for a in self._state_attrs()}}

    def restore(self, state: dict) -> None:
        self.ledger.restore(state["ledger"])
        self.counters.clear()
        self.counters.update(state["counters"])
        self._work_before = tuple(self.counters[k] for k in WORK)
        for a in self._state_attrs():
            _set_path(self, a, state["attrs"][a])

    def lr_for(self, sample: int) -> float:
        lc = self.lc
        decays = int(self.clock.epoch[sample]) // lc["lr_decay_every"] if lc["lr_decay_every"] else 0
        return lc["lr"] * lc["lr_decay"] ** decays

    def weights(self) -> dict[str, np.ndarray]:
        return {pr["name"]: self.W[q] for q, pr in enumerate(self.projections)}

    def memory(self) -> dict:
        return {"pe": self.pe_id, "label": self.label, "budget": self.ledger.budget,
                "total": self.ledger.total, "items": self.ledger.table()}


class NeuronPE(ProcessingElement):
    """A slice [lo, hi) of a LIF/ALIF population, its incoming synapse rows and its e-prop state."""

    STATE_ATTRS = ("pending", "spike_log", "voltage_log")

    def __init__(self, config: dict, backing=None):
        super().__init__(config, backing)
        self.lo, self.hi = int(config["lo"]), int(config["hi"])
        n = self.n = self.hi - self.lo
        self.c = NeuronConstants(**config["constants"])
        L, lc = self.ledger, self.lc
        self.per_synapse = lc["eligibility_layout"] == "per_synapse"
        self.online = lc["signal"] == "online"
        self.W, self.adam, self.epsv, self.epsa, self.ebar, self.grad = [], [], [], [], [], []
        for q in range(len(self.projections)):
            name, n_pre = self._alloc_projection(q, n)
            if not self.learning:
                continue
            # Gradient slot: online, the shared gradient; end of sample, the sum of ebar per stream until the
            # learning signal arrives (at batch 1 it becomes the gradient in place, as on the chip).
            self.grad.append(L.alloc(f"{name}.gradient", (n_pre, n)) if self.online
                             else L.alloc(f"{name}.gradient", (n_pre, n), batched=True))
            self.epsv.append(L.alloc(f"{name}.epsv", (n_pre, n) if self.per_synapse else (n_pre,), batched=True))
            self.epsa.append(L.alloc(f"{name}.epsa", (n_pre, n), batched=True) if self.c.adaptive else None)
            self.ebar.append(L.alloc(f"{name}.ebar", (n_pre, n), batched=True))
        self.v = L.alloc("v", (n,), batched=True)
        self.a = L.alloc("a", (n,), batched=True) if self.c.adaptive else None
        self.z = L.alloc("z", (n,), batched=True)
        self.I = L.alloc("synaptic_input", (n,), batched=True)
        self.out_keys = np.asarray(config["out_keys"], dtype=np.uint32)
        self.record_spikes, self.record_voltage = config["record"]["spikes"], config["record"]["voltage"]
        self.spike_log: list[np.ndarray] = []
        self.voltage_log: list[np.ndarray] = []
        self.pending = False  # online: learning signals have arrived for the sample that just ended
        self.offset = int(config.get("offset", 1))  # local tick of its first step in a sample (cores/timing.py)
        self._trace_work = self._trace_work_per_tick()
        # a learning signal's work: per projection, the gradient (or ebar sum) times L, read and written
        syn = sum(pr["n_pre"] for pr in self.projections) * n * self.B
        self._signal_work = (syn, 2 * syn)
        self.diagonal = (np.arange(n) + self.lo, np.arange(n))  # (row, column) of its neurons' self-synapses

    def steps_at(self, s: int) -> bool:
        """Does it step its neurons at local tick s? T steps from its offset; before them the input is on
        its way, after them the readout reads the last spikes."""
        return self.offset <= s < self.offset + self.T

    def step(self, tick: int, inbound: PacketBatch | None) -> PacketBatch:
        x, err, _ = self._decode(inbound)
        sample, s = self.clock.where(tick)
        x = self._delayed(tick, inbound, x)
        if err is not None:
            self._take_learning_signal(err, inbound.tick)
        if s == 0:
            if self.pending and self.clock.learns(sample - 1):
                self._update(sample - 1)
            self.pending = False
            self._reset()
            return self._out(tick)
        if not self.steps_at(s):
            return self._out(tick)
        # traces only where the sample learns: a test sample's would never meet a learning signal (the readout
        # sends none, and the last one of a training sample arrives at the next sample's tick 0, before reset)
        return self._advance(tick, x, self.learning and self.clock.learns(sample))

    def _reset(self):
        # not the gradient slot: at the end of a sample it holds the ebar sum until the learning signal
        # arrives, which may be after this tick (a windowed exchange delivers it late); _update clears it
        for arr in (self.v, self.a, self.z, *self.epsv, *self.epsa, *self.ebar):
            if arr is not None:
                arr[...] = 0

    def _advance(self, tick, x, learn: bool) -> PacketBatch:
        self._note_work(self._tick_work(neuron_tick(self, x, learn), learn))
        return self._emit(tick)

    def _tick_work(self, rows: list[int], learn: bool) -> tuple[int, int, int]:
        """A tick's (synaptic events, MACs, SRAM accesses): `rows` active presynaptic rows per projection, and
        the traces if `learn`."""
        events = sum(rows)
        macs = events * self.n  # a MAC and a weight read per active row and neuron
        if learn:
            trace_macs, trace_words = self._trace_work
            return events, macs + trace_macs, macs + trace_words
        return events, macs, macs

    def _note_work(self, work: tuple[int, int, int]) -> None:
        c = self.counters
        c["synaptic_events"] += work[0]
        c["macs"] += work[1]
        c["accesses"] += work[2]

    def _trace_work_per_tick(self) -> tuple[int, int]:
        """(MACs, SRAM words) of one tick of traces. Per synapse and stream: epsv 1 MAC (per source: per row),
        epsa 3, e 3, ebar 1, the ebar sum 1; words: epsv, epsa, ebar and the sum each read and written."""
        macs = words = 0
        adaptive, summed = int(self.c.adaptive), int(not self.online)
        for pr in self.projections:
            syn = pr["n_pre"] * self.n * self.B
            ev_ops = syn if self.per_synapse else pr["n_pre"] * self.B
            macs += ev_ops + syn * (3 * adaptive + 3 + 1 + summed)
            words += 2 * ev_ops + 2 * syn * (adaptive + 1 + summed)
        return macs, words

    def _emit(self, tick) -> PacketBatch:
        """Record and send the tick's spikes (z, v as neuron_tick left them)."""
        fired = np.flatnonzero(self.z[0] if self.B == 1 else self.z.any(axis=0))
        self._record(tick, fired)
        if self.B == 1:
            return self._send_spikes(tick, self.out_keys[fired])
        self.counters["spikes"] += int(self.z.sum())
        return self._out(tick, mcp_keys=self.out_keys[fired], mcp_payload=self.z[:, fired].T)

    def _record(self, tick, fired: np.ndarray) -> None:
        """Log the tick's voltages and spikes (`fired`: the neurons that spiked in any stream) where asked."""
        if self.record_voltage:
            self.voltage_log.append(np.concatenate([[tick], np.asarray(self.v, np.float64).ravel()]))
        if self.record_spikes and len(fired):
            b, j = (0, fired) if self.B == 1 else np.nonzero(self.z)
            row = np.empty((3, len(j)), np.int64)  # (tick, stream, neuron) per spike
            row[0], row[1], row[2] = tick, b, j
            row[2] += self.lo
            self.spike_log.append(row)

    def _send_spikes(self, tick, keys: np.ndarray) -> PacketBatch:
        """At batch 1: the keys of the neurons that fired, sent as a batch of spikes alone (straight to
        spikes_batch, without make_batch's keyword parts) and counted."""
        self.counters["spikes"] += len(keys)
        return self._sent(spikes_batch(self.pe_id, tick, 1, keys), len(keys))

    def _take_learning_signal(self, L: np.ndarray, sent: int):
        """L[B, n], sent by the readout at tick `sent`, arrived: fold it into the gradient. Online signals
        come every step and the weights change at the next sample's tick 0 (pending); the end-of-sample
        signal comes once, so the weights change as it arrives (a windowed exchange delivers it after tick 0,
        but before the neurons' first step)."""
        if not self.learning:
            raise PacketError(f"{self.label}: received a learning signal but learning is off")
        self._count(*self._signal_work)
        fold_learning_signal(self, L)
        if self.online:
            self.pending = True
            return
        done = self.clock.where(sent)[0]
        if self.clock.learns(done):
            self._update(done)

    def _update(self, sample: int):
        self.updates += 1
        apply_update(self, self.lr_for(sample), self.updates)
        self.counters["updates"] += 1

    def recordings(self) -> dict:
        rec = {}
        if self.record_spikes:
            rec["spikes"] = (np.concatenate(self.spike_log, axis=1) if self.spike_log
                             else np.zeros((3, 0), np.int64))
        if self.record_voltage:
            rec["voltage"] = np.stack(self.voltage_log) if self.voltage_log else np.zeros((0, 1 + self.B * self.n))
        return rec


class ReadoutPE(ProcessingElement):
    """The readout population (kept whole: the softmax needs every output), its weights and the learning signal."""

    def __init__(self, config: dict):
        super().__init__(config)
        n = self.n = int(config["hi"]) - int(config["lo"])
        self.kappa = np.float32(config["constants"]["kappa"])
        L, lc = self.ledger, self.lc
        self.online = lc["signal"] == "online"
        self.W, self.adam, self.grad, self.zbar, self.zbar_sum, self.feedback = [], [], [], [], [], []
        for q, pr in enumerate(self.projections):
            name, n_pre = self._alloc_projection(q, n)
            self.zbar.append(L.alloc(f"{name}.zbar", (n_pre,), batched=True))
            if not self.learning:
                continue
            self.grad.append(L.alloc(f"{name}.gradient", (n_pre, n)))
            self.zbar_sum.append(None if self.online else L.alloc(f"{name}.zbar_sum", (n_pre,), batched=True))
            if lc["feedback"] == "random":
                fb = L.alloc(f"{name}.feedback", (n_pre, n))
                fb[...] = pr["feedback"]
                self.feedback.append(fb)
            else:
                self.feedback.append(self.W[q])  # symmetric e-prop: feedback through the readout weights themselves
        self.y = L.alloc("y", (n,), batched=True)
        self.y_sum = L.alloc("y_sum", (n,), batched=True)
        self.labels = L.alloc("label", (1,), np.int32, batched=True)
        self.value_keys = np.asarray(config["out_keys"], dtype=np.uint32)
        self.error_keys = [np.asarray(k, dtype=np.uint32) for k in config["error_keys"]]
        self.eye = np.eye(n, dtype=np.float32)
        self.offset = int(config.get("offset", 2))  # local tick of its first step in a sample (cores/timing.py)

    def step(self, tick: int, inbound: PacketBatch | None) -> PacketBatch:
        x, err, inbound = self._decode(inbound)
        x = self._delayed(tick, inbound, x)
        if err is not None:
            raise PacketError(f"{self.label}: a readout receives no learning signal")
        if inbound is not None and len(inbound.p2p_dest):
            self.labels[:, 0] = self._labels(inbound, self.n)
        sample, s = self.clock.where(tick)
        if s == 0:
            for arr in (self.y, self.y_sum, *self.zbar, *self.zbar_sum):
                if arr is not None:
                    arr[...] = 0
            return self._out(tick)
        if s < self.offset:
            return self._out(tick)
        learn = self.learning and self.clock.learns(sample)
        self.y *= self.kappa
        for q, xq in enumerate(x):
            zbar = self.zbar[q]
            zbar *= self.kappa
            if xq is not None:
                zbar += xq
                rows = synaptic_sum(self.y, xq, self.W[q])
                self.counters["synaptic_events"] += rows
                self._count(rows * self.n, rows * self.n)
            self._count(2 * zbar.size, 4 * zbar.size)  # zbar filter and its sum, read and written
            if learn and not self.online:
                self.zbar_sum[q] += zbar
        self.y_sum += self.y
        keys, payloads = [], []
        if learn and self.online:  # per-step learning signal from the framewise loss
            e = self._softmax(self.y) - self._onehot()
            for q in range(len(self.projections)):
                self._accumulate_readout_grad(q, self.zbar[q], e)
                keys.append(self.error_keys[q])
                payloads.append(self._signal(q, e))
        if s == self.offset + self.T - 1:
            y_mean = self.y_sum / np.float32(self.T)
            keys.append(self.value_keys)
            payloads.append(y_mean.T)
            if learn:
                if not self.online:
                    e = self._softmax(y_mean) - self._onehot()
                    for q in range(len(self.projections)):
                        self._accumulate_readout_grad(q, self.zbar_sum[q], e)
                        keys.append(self.error_keys[q])
                        payloads.append(self._signal(q, e))
                self._update(sample)
        if not keys:
            return self._out(tick)
        return self._out(tick, mcp_keys=np.concatenate(keys), mcp_payload=np.concatenate(payloads, axis=0))


    def _onehot(self) -> np.ndarray:
        return self.eye[self.labels[:, 0]]

    @staticmethod
    def _softmax(y: np.ndarray) -> np.ndarray:
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def _signal(self, q: int, e: np.ndarray) -> np.ndarray:
        """Learning signal L_j = sum_k F_jk e_k / T for every presynaptic neuron j: payload [n_pre, B]."""
        F = self.feedback[q]
        self._count(F.size * self.B, F.size * self.B)
        L = np.zeros((self.B, F.shape[0]), np.float32)
        for k in range(self.n):
            L += e[:, k, None] * F[:, k]
        return (L / np.float32(self.T)).T

    def _accumulate_readout_grad(self, q: int, zbar: np.ndarray, e: np.ndarray):
        """dE/dW_jk += sum_b zbar_bj e_bk / T, in stream order."""
        g = self.grad[q]
        self._count(g.size * self.B, 2 * g.size * self.B)
        for b in range(self.B):
            g += np.outer(zbar[b], e[b]) / np.float32(self.T)

    def _update(self, sample: int):
        self.updates += 1
        lr = self.lr_for(sample)
        for q in range(len(self.projections)):
            g = self.grad[q]
            g /= np.float32(self.B)
            self.adam[q].step(self.W[q], g, lr, self.updates)
            g[...] = 0
        self.counters["updates"] += 1

    def recordings(self) -> dict:
        return {}


def make_pe(config: dict, backing=None) -> ProcessingElement:
    """backing: where a neuron PE's arrays live (cores/group.py); other PEs keep their own."""
    if config["role"] == "layered":
        from .mlp import LayeredPE
        return LayeredPE(config)
    warm_kernels()  # every other PE runs the kernels: load (or compile) them now, not in a tick
    if config["role"].startswith("bptt"):
        from .bptt_pe import bptt_pe
        return bptt_pe(config)
    if config["role"] == "neuron":
        return NeuronPE(config, backing)
    return {"readout": ReadoutPE}[config["role"]](config)
