"""PEs that train a stack of spiking layers with BPTT (cores/bptt.py): full, truncated, end to end or in local
blocks, Adam at the end of each sample.

On one PE (BpttPE) the whole stack and its readouts step together, with the timing of e-prop (cores/timing.py,
S = T + 2): the host sends frame s at local tick s and the label at s = 0; the PE runs model step t = s - 1 of
every layer at tick s = 1..T (a window's backward pass at its last step); at s = T + 1 it sends the mean of the
last block's readout to the host; at s = 0 of the next sample it applies the gradient and resets the state.

Split over P PEs (BpttSlicePE), PE p holds column slice p of every layer, and one more PE (BpttReadoutPE) holds
the readouts. A window of n steps (n = K, the truncation, or the rest of the sample) runs as (BpttSchedule):

    forward   frame t leaves the host at tick F(t) (consecutive within the window); layer i computes its slices
              of step t at F(t) + 1 + i and sends their spikes to every PE (each PE gathers the whole layer);
              the readout of block b, on the top layer l_b, runs step t at F(t) + 2 + l_b
    backward  from E = (last readout tick of the window) + 1, one step k per P ticks, k = n-1 .. 0: at tick
              c = E + (n-1-k) P + d P (d: the layer's depth below the top of its block) every PE computes its
              slice's dL/dI_k, and PE p adds its share of the layer's backward sums (recurrent: into step k-1;
              feed-forward: into the layer below at k) at c + p, handing them on to PE p+1; the last PE sends
              them to every PE, which have them at c + P: exactly when the layer's step k-1 and the layer below's
              step k run. The readout PE sends dL/dz_k of each top layer to its slices' PEs at c - 1.
    next      the next window's first frame leaves the host when the deepest layer's step 0 is done.

The readout sends the mean of the last block's output at S - 1 and every PE updates at s = 0 of the next sample.
A sample of W windows takes S = T + W (L + 1) + (T + W (D - 2)) P + 2 ticks, for L layers in blocks at most D
deep: BPTT cannot run online on a chip; truncation changes the chip time little (a pipeline fill per window
against a chain saved at each window's end) and saves history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from s2emu.errors import PacketError
from s2emu.router.packets import PacketBatch

from .bptt import LayerSpec, Readouts, SpikingStack
from .neurons import NeuronConstants
from .optimizer import Adam
from .pe import ProcessingElement

# what an inbound key means to a split BPTT PE (`which` is the layer; spikes: 0 is the input, i + 1 layer i)
KIND_SPIKES, KIND_ERRORS, KIND_CHAIN_PART, KIND_CHAIN_DONE = 0, 1, 2, 3


def _layer_specs(config: dict) -> list[LayerSpec]:
    return [LayerSpec(ly["name"], ly["n"], NeuronConstants(**ly["constants"]),
                      tuple((name, n_pre) for name, n_pre in ly["inputs"]), ly["recurrent"])
            for ly in config["layers"]]


def chain_rows(layers: list[LayerSpec], blocks: list[list[int]], i: int) -> tuple[int, int]:
    """(recurrent rows, feed-forward rows) of layer i's chained backward sums (SpikingStack.chain)."""
    ly = layers[i]
    return (ly.n if ly.recurrent else 0), (0 if any(i == blk[0] for blk in blocks) else ly.inputs[0][1])


@dataclass
class BpttSchedule:
    """The local ticks of a split BPTT sample (module docstring). Lists hold (layer or block, window step k,
    window length n) per tick."""
    steps: int
    window: int
    n_pes: int
    blocks: list[list[int]]
    n_layers: int
    frames: list[int] = field(default_factory=list)  # frame t leaves the host at local tick frames[t]
    forward: dict = field(default_factory=dict)  # tick -> [(i, k, n)]: layer i computes step k
    arrive: dict = field(default_factory=dict)  # tick -> [(i, k, n)]: layer i's spikes of step k are in
    readout_forward: dict = field(default_factory=dict)  # tick -> [(b, k, n)]
    backward: dict = field(default_factory=dict)  # tick c -> [(i, k, n)]; PE p adds to the chain at c + p
    readout_backward: dict = field(default_factory=dict)  # tick -> [(b, k, n)]
    window_start: dict = field(default_factory=dict)  # tick -> length of the window before (history shift)
    ticks: int = 0  # S

    def __post_init__(self):
        P, L = self.n_pes, self.n_layers
        depth = {i: len(blk) - 1 - blk.index(i) for blk in self.blocks for i in blk}
        D = max(len(blk) for blk in self.blocks)
        start = 0
        for w0 in range(0, self.steps, self.window):
            n = min(self.window, self.steps - w0)
            if w0:
                self.window_start[start + 1] = self.window  # before the window's first forward step
            for k in range(n):
                F = start + k
                self.frames.append(F)
                for i in range(L):
                    self._at(self.forward, F + 1 + i, (i, k, n))
                    self._at(self.arrive, F + 2 + i, (i, k, n))
                for b, blk in enumerate(self.blocks):
                    self._at(self.readout_forward, F + 2 + blk[-1], (b, k, n))
            E = start + n + L + 1  # the tick after the window's last readout step
            for k in range(n):
                for i, d in depth.items():
                    self._at(self.backward, E + (n - 1 - k + d) * P, (i, k, n))
                for b in range(len(self.blocks)):
                    self._at(self.readout_backward, E + (n - 1 - k) * P - 1, (b, k, n))
            start = E + (n - 1 + D - 1) * P  # the deepest layer's step 0: the next frame may leave now
        self.ticks = start + 2  # the readout's values leave at S - 1, after the last backward step

    @staticmethod
    def _at(table: dict, tick: int, item):
        table.setdefault(tick, []).append(item)


def bptt_schedule(steps: int, window: int, n_pes: int, blocks: list[list[int]], n_layers: int) -> BpttSchedule:
    return BpttSchedule(int(steps), int(window), int(n_pes), [list(b) for b in blocks], int(n_layers))


class _BpttBase(ProcessingElement):
    """Adam over this PE's parameters at s = 0 of the sample after a training one."""

    def _init_adam(self):
        lc = self.lc
        self.adam = {}
        if self.learning:
            for name, w in self._params().items():
                self.adam[name] = Adam(self.ledger, name, w.shape, beta1=lc["beta1"], beta2=lc["beta2"],
                                       eps=lc["eps"], l2=lc["l2"], counts=self.counters)

    def _params(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _gradients(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _update(self, sample: int):
        self.updates += 1
        lr = self.lr_for(sample)
        grads = self._gradients()
        for name, w in self._params().items():
            g = grads[name]
            g /= np.float32(self.B)
            self.adam[name].step(w, g, lr, self.updates)
            g[...] = 0
        self.counters["updates"] += 1

    def recordings(self) -> dict:
        return {}


class BpttPE(_BpttBase):
    """The whole stack and its readouts on one PE."""

    STATE_ATTRS = ("pending", "stack.t", "stack.w0")

    def __init__(self, config: dict):
        super().__init__(config)
        lc = self.lc
        self.n_out = config["n_classes"]
        self.stack = SpikingStack(self.ledger, _layer_specs(config), config["blocks"], config["n_in"], self.n_out,
                                  config["kappa"], config["truncation"] or self.T, self.T, self.B,
                                  config["weights"], config["readouts"], lc["surrogate"], learning=self.learning,
                                  counts=self.counters)
        self._init_adam()
        self.value_keys = np.asarray(config["out_keys"], dtype=np.uint32)
        self.pending = False

    def _params(self) -> dict[str, np.ndarray]:
        st = self.stack
        return {**st.W, **{f"readout{b}": r for b, r in enumerate(st.R)}}

    def _gradients(self) -> dict[str, np.ndarray]:
        return self.stack.gradients()

    def step(self, tick: int, inbound: PacketBatch | None) -> PacketBatch:
        x, err, inbound = self._decode(inbound)
        if err is not None:
            raise PacketError(f"{self.label}: a BPTT PE receives no error packets")
        if inbound is not None and len(inbound.p2p_dest):
            self.stack.label[:, 0] = self._labels(inbound, self.n_out)
        sample, s = self.clock.where(tick)
        learn = self.learning and self.clock.learns(sample)
        if s == 0:
            if self.pending:
                self._update(sample - 1)
                self.pending = False
            self.stack.reset()
            return self._out(tick)
        if s <= self.T:
            frame = x[0] if x[0] is not None else np.zeros((self.B, self.projections[0]["n_pre"]), np.float32)
            self.stack.step(frame, learn)
            self.pending = learn
            return self._out(tick)
        y_mean = self.stack.ro.y_sum / np.float32(self.T)
        return self._out(tick, mcp_keys=self.value_keys, mcp_payload=y_mean.T)

    def weights(self) -> dict[str, np.ndarray]:
        """The network's projections; the last block's readout is the projection into the readout population
        (the other blocks' local classifiers are training aids, not part of the network)."""
        out = dict(self.stack.W)
        out[self.config["readout_projection"]] = self.stack.R[-1]
        return out


class _SplitBase(_BpttBase):
    """Shared by the PEs of a split stack: the schedule, and sending values or spikes."""

    def __init__(self, config: dict):
        super().__init__(config)
        self.layer_specs = _layer_specs(config)
        self.blocks = config["blocks"]
        self.P = int(config["n_pes"])
        self.K = min(config["truncation"] or self.T, self.T)
        self.sch = bptt_schedule(self.T, self.K, self.P, self.blocks, len(self.layer_specs))
        if self.sch.ticks != self.clock.ticks_per_sample:
            raise ValueError(f"{self.label}: the clock's {self.clock.ticks_per_sample} ticks per sample do not fit "
                             f"the BPTT schedule's {self.sch.ticks}")
        self.top_of = {blk[-1]: b for b, blk in enumerate(self.blocks)}

    def _spikes_out(self, keys, z, out):
        fired = np.flatnonzero(z.any(axis=0))
        if self.B == 1:
            out["mc"].append(keys[fired])
        else:
            out["k"].append(keys[fired])
            out["v"].append(z[:, fired].T)

    def _emit(self, tick, out) -> PacketBatch:
        parts = {}
        if out["mc"]:
            parts["mc_keys"] = np.concatenate(out["mc"])
        if out["k"]:
            parts["mcp_keys"] = np.concatenate(out["k"])
            parts["mcp_payload"] = np.concatenate(out["v"])
        return self._out(tick, **parts)


class BpttSlicePE(_SplitBase):
    """Column slice p of every layer of a split stack (module docstring)."""

    def __init__(self, config: dict):
        super().__init__(config)
        self.p = int(config["pe_index"])
        self.slices = [tuple(s) for s in config["slices"]]
        specs = self.layer_specs
        self.stack = SpikingStack(self.ledger, specs, self.blocks, config["n_in"], config["n_classes"],
                                  config["kappa"], self.K, self.T, self.B, config["weights"], None,
                                  self.lc["surrogate"], learning=self.learning, slices=self.slices,
                                  counts=self.counters)
        self._init_adam()
        L = self.ledger
        self.n_in = config["n_in"]
        self.frame = L.alloc("input.values", (self.n_in,), batched=True)
        self.spikes_in = [L.alloc(f"{ly.name}.spikes_arrived", (ly.n,), batched=True) for ly in specs]
        self.rows = [chain_rows(specs, self.blocks, i) for i in range(len(specs))]
        self.chain_in, self.chain_done, self.dz_in = {}, {}, {}
        if self.learning:
            for i, ly in enumerate(specs):
                rows = sum(self.rows[i])
                if rows:
                    self.chain_in[i] = L.alloc(f"{ly.name}.backward_sums_in", (rows,), batched=True)
                    self.chain_done[i] = L.alloc(f"{ly.name}.backward_sums", (rows,), batched=True)
                if i in self.top_of:
                    lo, hi = self.slices[i]
                    self.dz_in[i] = L.alloc(f"{ly.name}.errors", (hi - lo,), batched=True)
        keys = config["keys"]
        self.spike_keys = [np.asarray(k, np.uint32) for k in keys["spikes"]]
        self.chain_keys = {int(i): np.asarray(k, np.uint32) for i, k in keys["chain"].items()}
        self.chain_at = {}  # tick -> [(i, k)]: this PE's share of layer i's backward sums of step k
        for c, items in self.sch.backward.items():
            for i, k, n in items:
                n_rec, n_ff = self.rows[i]
                if n_ff or (n_rec and k > 0):
                    self.chain_at.setdefault(c + self.p, []).append((i, k))

    def _params(self) -> dict[str, np.ndarray]:
        return dict(self.stack.W)

    def _gradients(self) -> dict[str, np.ndarray]:
        return self.stack.gradients()

    def _receive(self, inbound: PacketBatch | None):
        self.frame[...] = 0
        for s in self.spikes_in:
            s[...] = 0
        got = self._lookup(inbound)
        if got is None:
            return
        if len(inbound.p2p_dest):
            raise PacketError(f"{self.label}: a BPTT slice PE takes no labels")
        kind, which, row, vals, _ = got
        for w in np.unique(which[kind == KIND_SPIKES]):
            sel = (kind == KIND_SPIKES) & (which == w)
            (self.frame if w == 0 else self.spikes_in[w - 1])[:, row[sel]] = vals[sel].T
        for k, table in ((KIND_ERRORS, self.dz_in), (KIND_CHAIN_PART, self.chain_in), (KIND_CHAIN_DONE, self.chain_done)):
            for w in np.unique(which[kind == k]):
                sel = (kind == k) & (which == w)
                table[int(w)][:, row[sel]] = vals[sel].T

    def step(self, tick: int, inbound: PacketBatch | None) -> PacketBatch:
        self._receive(inbound)
        sample, s = self.clock.where(tick)
        st, sch = self.stack, self.sch
        out = {"mc": [], "k": [], "v": []}
        if s == 0:
            if self.learning and self.clock.learns(sample - 1):
                self._update(sample - 1)
            st.reset()
        if sample >= self.clock.n_samples:
            return self._emit(tick, out)
        learn = self.learning and self.clock.learns(sample)
        for i, k, _ in sch.arrive.get(s, ()):
            st.take_spikes(i, self.spikes_in[i], k, learn)
        if learn and s in sch.window_start:
            st.next_window(sch.window_start[s])
        for i, k, _ in sch.forward.get(s, ()):
            st.forward_layer(i, self.frame if i == 0 else st.zfull[i - 1], k, learn)
            self._spikes_out(self.spike_keys[i], st.z[i], out)
        if learn:
            for i, k, n in sch.backward.get(s, ()):
                lo, hi = self.slices[i]
                if i in self.top_of:
                    dz_out = self.dz_in[i]
                else:  # the feed-forward part of the layer above's finished sums
                    dz_out = self.chain_done[i + 1][:, self.rows[i + 1][0]:][:, lo:hi]
                n_rec = self.rows[i][0]
                rec = (self.chain_done[i][:, lo:hi] if n_rec and k < n - 1
                       else np.zeros((self.B, hi - lo), np.float32))
                st.backward_step(i, k, n, dz_out, rec)
            for i, k in self.chain_at.get(s, ()):
                acc = self.chain_in[i].copy() if self.p else np.zeros_like(self.chain_in[i])
                n_rec = self.rows[i][0]
                st.chain(i, k, acc[:, :n_rec], acc[:, n_rec:])
                out["k"].append(self.chain_keys[i])
                out["v"].append(acc.T)
        return self._emit(tick, out)

    def weights(self) -> dict[str, np.ndarray]:
        return dict(self.stack.W)


class BpttReadoutPE(_SplitBase):
    """The readouts of a split stack: every block's top layer arrives as spikes; it sends each top layer's
    dL/dz to the PEs that hold its slices, and the prediction to the host."""

    def __init__(self, config: dict):
        super().__init__(config)
        specs = self.layer_specs
        self.n_out = config["n_classes"]
        tops = [blk[-1] for blk in self.blocks]
        self.ro = Readouts(self.ledger, [specs[i].n for i in tops], self.n_out, config["kappa"], self.K, self.T,
                           self.B, config["readouts"], self.learning, self.counters)
        self._init_adam()
        L = self.ledger
        self.spikes_in = {i: L.alloc(f"{specs[i].name}.spikes_arrived", (specs[i].n,), batched=True) for i in tops}
        if self.learning:
            self.h_z = [L.alloc(f"history.{specs[i].name}.z", (self.K, specs[i].n), np.uint8, batched=True)
                        for i in tops]
        self.value_keys = np.asarray(config["out_keys"], np.uint32)
        self.error_keys = [np.asarray(k, np.uint32) for k in config["error_keys"]]  # per block, global order

    def _params(self) -> dict[str, np.ndarray]:
        return {f"readout{b}": r for b, r in enumerate(self.ro.R)}

    def _gradients(self) -> dict[str, np.ndarray]:
        return {f"readout{b}": g for b, g in enumerate(self.ro.gR)}

    def step(self, tick: int, inbound: PacketBatch | None) -> PacketBatch:
        for a in self.spikes_in.values():
            a[...] = 0
        got = self._lookup(inbound)
        if got is not None:
            if len(inbound.p2p_dest):
                self.ro.label[:, 0] = self._labels(inbound, self.n_out)
            kind, which, row, vals, _ = got
            for w in np.unique(which):
                sel = which == w
                self.spikes_in[int(w) - 1][:, row[sel]] = vals[sel].T
        sample, s = self.clock.where(tick)
        out = {"mc": [], "k": [], "v": []}
        if s == 0:
            if self.learning and self.clock.learns(sample - 1):
                self._update(sample - 1)
            self.ro.reset()
        if sample >= self.clock.n_samples:
            return self._emit(tick, out)
        learn = self.learning and self.clock.learns(sample)
        for b, k, _ in self.sch.readout_forward.get(s, ()):
            z = self.spikes_in[self.blocks[b][-1]]
            if learn:
                self.h_z[b][:, k] = z
            self.ro.forward(b, z, k, learn)
        if learn:
            for b, k, n in self.sch.readout_backward.get(s, ()):
                dz = self.ro.backward(b, k, self.h_z[b][:, k].astype(np.float32), last=(k == n - 1))
                out["k"].append(self.error_keys[b])
                out["v"].append(dz.T)
        if s == self.clock.ticks_per_sample - 1:
            out["k"].append(self.value_keys)
            out["v"].append((self.ro.y_sum / np.float32(self.T)).T)
        return self._emit(tick, out)

    def weights(self) -> dict[str, np.ndarray]:
        return {self.config["readout_projection"]: self.ro.R[-1]}

