"""The processing element: a plain object, no Ray. `step(tick, inbound) -> outbound` is the whole contract.

ProcessingElement is what every kind of PE shares: its configuration, SRAM ledger (cores/sram.py) and sample
clock (cores/timing.py); inbound packets decoded by its key map; its incoming projections' weights and delay
rings; the outbound batch and the counters the chip model prices; its checkpoint state. The kinds are
e-prop's neuron and readout PEs (cores/eprop_pe.py), BPTT's (cores/bptt_pe.py) and DEEP R's layered PE
(cores/mlp.py); cores/roles.py makes the one a configuration's role names.
"""

from __future__ import annotations

import hashlib
import operator
from collections import OrderedDict

import numpy as np

from s2emu.errors import PacketError
from s2emu.router.packets import PacketBatch, make_batch

from .optimizer import Adam
from .sram import SramLedger
from .timing import SampleClock

LABEL_TAG = 1  # P2P tag: class labels from the host to the PEs that learn from them
KIND_SYNAPSE, KIND_ERROR = 0, 1  # what an inbound MC key means to this PE
WORK = ("macs", "accesses", "packets_in", "packets_out", "optimizer_elements")  # what the chip model prices
OPTIMIZER_WEIGHT = 20  # an Adam step of one weight takes about 20 MACs' time (s2emu/chipmodel.py: 57 cycles vs 3)

_WORK_OF = operator.itemgetter(*WORK)  # a PE's counters -> its WORK tuple


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


class KeyMapShare:
    """One key map (cores/pe.py _lookup) and the decoding layouts made from it, shared by every PE in this process
    whose key map has the same contents: a population's PEs listen to the same sources, so without learning
    their maps are equal, and on a board each map is thousands of keys (13 bytes each, and 28 more per key
    for a layout). PEs only read them; `mark` is scratch for one find_each_once call at a time (a process
    steps one PE at a time)."""

    __slots__ = ("keys", "kind", "proj", "row", "layouts")

    def __init__(self, km: dict):
        self.keys = np.asarray(km["keys"], dtype=np.uint32)
        self.kind = np.asarray(km["kind"], dtype=np.int8)
        self.proj = np.asarray(km["proj"], dtype=np.int32)
        self.row = np.asarray(km["row"], dtype=np.int32)
        for a in (self.keys, self.kind, self.proj, self.row):
            a.flags.writeable = False
        self.layouts: dict = {}  # (n_pre per projection, learning-signal rows) -> _dense_layout's arrays


# the key maps made last, by the digest of their contents: a build makes its PEs population by population, so
# each population's PEs find theirs here; a few dozen are kept (a board's populations), the oldest let go first
_KEY_MAPS: "OrderedDict[bytes, KeyMapShare]" = OrderedDict()
KEY_MAPS_KEPT = 64


def shared_key_map(km: dict) -> KeyMapShare:
    """The KeyMapShare of a configuration's key map: the one already made for a map with the same contents, or a
    new one. The configuration's map is pointed at the shared arrays (the same contents), so the copy a build
    made for each PE is freed as its PE is made (s2emu/build.py makes every PE once to fill its ledger)."""
    arrays = [np.ascontiguousarray(km[k], dtype=d) for k, d in
              (("keys", np.uint32), ("kind", np.int8), ("proj", np.int32), ("row", np.int32))]
    h = hashlib.blake2b(digest_size=20)
    for a in arrays:
        h.update(len(a).to_bytes(8, "little"))
        h.update(a.tobytes())
    digest = h.digest()
    share = _KEY_MAPS.get(digest)
    if share is None:
        share = _KEY_MAPS[digest] = KeyMapShare(dict(zip(("keys", "kind", "proj", "row"), arrays)))
        if len(_KEY_MAPS) > KEY_MAPS_KEPT:
            _KEY_MAPS.popitem(last=False)
    else:
        _KEY_MAPS.move_to_end(digest)
    if isinstance(km, dict):
        km.update(keys=share.keys, kind=share.kind, proj=share.proj, row=share.row)
    return share


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
        self._key_map = shared_key_map(config["keymap"])  # read-only arrays, shared with PEs of the same map
        self.km_keys, self.km_kind = self._key_map.keys, self._key_map.kind
        self.km_proj, self.km_row = self._key_map.proj, self._key_map.row
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
        the learning signal after the last projection). Made once per key map and shape in a process, and
        shared (KeyMapShare)."""
        n_q = len(self.projections)
        synapse, error = self.km_kind == KIND_SYNAPSE, self.km_kind == KIND_ERROR
        error_rows = self.km_row[error]
        n_error = max(getattr(self, "n", 0), int(error_rows.max()) + 1 if len(error_rows) else 0)
        shape = (tuple(pr["n_pre"] for pr in self.projections), n_error)
        made = self._key_map.layouts.get(shape)
        if made is None:
            edges = np.cumsum([0, *shape[0], n_error])
            block = np.where(synapse, self.km_proj, n_q).astype(np.intp)
            known = error | (synapse & (self.km_proj >= 0) & (self.km_proj < n_q))
            if not known.all() or not ((self.km_row >= 0) & (self.km_row < np.diff(edges)[block])).all():
                raise PacketError(f"{self.label}: its key map names a row or projection it does not have")
            made = self._key_map.layouts[shape] = (
                list(zip(edges[:-1].tolist(), edges[1:].tolist())), block, (edges[block] + self.km_row).astype(np.intp),
                np.append(self.km_keys, self.km_keys[-1]), np.empty(len(self.km_keys), np.intp))
            for a in made[1:4]:
                a.flags.writeable = False
        self._columns, self._km_block, self._km_column, self._km_keys_padded, self._mark = made

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

    def _release_config(self) -> None:
        """Once the ledger is filled: let go of what the configuration carried only to fill it, the initial weights
        and feedback matrices (the ledger holds their copies) and the key map (in KeyMapShare now). Kept, they
        would be a second copy of every synapse row for the PE's whole life; on the ray engine nothing else
        holds them."""
        self.projections = [{k: v for k, v in pr.items() if k not in ("weights", "feedback")}
                            for pr in self.projections]
        self.config = {k: v for k, v in self.config.items() if k not in ("incoming", "keymap")}

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
