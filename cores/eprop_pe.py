"""e-prop's PEs: a slice of a spiking population (NeuronPE) and the readout (ReadoutPE), with SCIENCE.md's
neuron dynamics, eligibility traces and learning signal.

A neuron PE owns a slice [lo, hi) of one LIF/ALIF population, the synapse rows that target it (one row per
presynaptic source, as on SpiNNaker), its eligibility traces and Adam state, all in its SRAM ledger. The
readout is kept whole (its softmax needs every output) and sends each neuron PE its learning signal. Timing
follows cores/timing.py.

neuron_tick, fold_learning_signal and apply_update take a NeuronPE's state or a group's (cores/group.py: PEs of
one shape side by side as one wide PE), so a group runs the very code a PE runs alone.

Why results are identical for every split over PEs: weights are cut from global matrices; inbound packets
are processed in key order (= global neuron order); a neuron's synaptic input is accumulated row by row in
that order (event-driven, as on the chip, never through BLAS whose summation order depends on matrix
shapes); everything else is elementwise.
"""

from __future__ import annotations

import numpy as np

from s2emu.errors import PacketError
from s2emu.router.packets import PacketBatch, spikes_batch

from .kernels import eprop_traces, synaptic_sum
from .neurons import NeuronConstants, surrogate
from .pe import ProcessingElement


def neuron_tick(S, x: list, learn: bool, step: int) -> list[int]:
    """One tick of SCIENCE.md's neuron dynamics and, if `learn`, its e-prop eligibility traces (and the spike
    count of the firing-rate regularization, whose signal online learning folds in here), on the state of S: a
    NeuronPE, or a group of them stepped together as one wide PE (cores/group.py: its members side by side on
    the neuron axis). Every operation is elementwise but the ordered synaptic sum, so a group's result is each
    of its PEs' own, bit for bit. x: per projection, presynaptic values [B, n_pre] or None; step: the model
    step within the sample, 0 .. T-1. Returns the active presynaptic rows per projection."""
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
        if S.spike_count is not None:
            S.spike_count += S.z
            if S.online:
                fold_learning_signal(S, rate_signal(S, step))
    return rows


def rate_signal(S, step: int) -> np.ndarray:
    """The firing-rate regularization's learning signal [B, n] after model step `step` of a sample (S: a NeuronPE
    or a group, as in neuron_tick): c_reg (1 - kappa) (f_j - f_target) / T, f_j the neuron's spikes per step so
    far in the sample, at its last step its rate over the sample (docs/learning-rules.md)."""
    scale, target = S.rate_reg
    return scale * (S.spike_count / np.float32(step + 1) - target)


def fold_learning_signal(S, L: np.ndarray) -> None:
    """The learning signal L [B, n] folded into S's gradient slots (S: a NeuronPE, or a group of them, as in
    neuron_tick): online, grad += sum_b L_b ebar_b in stream order; at the end of a sample the slot holds the
    ebar sum, which becomes the gradient (at batch 1 in place, as on the chip; with B streams summed into
    slot 0, which carries the batch gradient to apply_update). At the end of a sample the firing-rate
    regularization's signal of the whole sample is added to L: both multiply the ebar sum."""
    if S.spike_count is not None and not S.online:
        L = L + rate_signal(S, S.T - 1)
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
    over the streams, then cleared, as is the spike count of the firing-rate regularization; a self-recurrent
    projection's diagonal (no self-connections) stays 0."""
    for q, pr in enumerate(S.projections):
        g = S.grad[q] if S.online else S.grad[q][0]
        g /= np.float32(S.B)
        if pr["self_recurrent"]:
            g[S.diagonal] = 0
        S.adam[q].step(S.W[q], g, lr, t)
        S.grad[q][...] = 0
    if S.spike_count is not None:
        S.spike_count[...] = 0


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
        # firing-rate regularization, only when on: each neuron's spikes in the sample so far (held, like the
        # gradient slot, until the update clears it), and rate_signal's float32 constants
        reg = self.learning and lc["reg_rate"] > 0
        self.spike_count = L.alloc("spike_count", (n,), batched=True) if reg else None
        self.rate_reg = (np.float32(lc["reg_rate"] * (1 - self.c.kappa) / self.T),
                         np.float32(config["target_rate"])) if reg else None
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
        self._release_config()

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
        return self._advance(tick, x, self.learning and self.clock.learns(sample), s - self.offset)

    def _reset(self):
        # not the gradient slot: at the end of a sample it holds the ebar sum until the learning signal
        # arrives, which may be after this tick (a windowed exchange delivers it late); _update clears it
        for arr in (self.v, self.a, self.z, *self.epsv, *self.epsa, *self.ebar):
            if arr is not None:
                arr[...] = 0

    def _advance(self, tick, x, learn: bool, step: int) -> PacketBatch:
        self._note_work(self._tick_work(neuron_tick(self, x, learn, step), learn))
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
        epsa 3, e 3, ebar 1, the ebar sum 1; words: epsv, epsa, ebar and the sum each read and written. With
        firing-rate regularization, per neuron and stream the spike count (1, read and written) and online its
        signal (1 per neuron, then per synapse 1 into the gradient, read and written)."""
        macs = words = 0
        adaptive, summed = int(self.c.adaptive), int(not self.online)
        reg = self.rate_reg is not None
        folded = int(reg and self.online)
        for pr in self.projections:
            syn = pr["n_pre"] * self.n * self.B
            ev_ops = syn if self.per_synapse else pr["n_pre"] * self.B
            macs += ev_ops + syn * (3 * adaptive + 3 + 1 + summed + folded)
            words += 2 * ev_ops + 2 * syn * (adaptive + 1 + summed + folded)
        if reg:
            macs += self.n * self.B * (1 + folded)
            words += 2 * self.n * self.B
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
        self._log_voltage(tick)
        if self.record_spikes and len(fired):
            self._log_spikes(tick, *((0, fired) if self.B == 1 else np.nonzero(self.z)))

    def _log_voltage(self, tick) -> None:
        if self.record_voltage:
            self.voltage_log.append(np.concatenate([[tick], np.asarray(self.v, np.float64).ravel()]))

    def _log_spikes(self, tick, b, j: np.ndarray) -> None:
        """Log spikes of stream(s) b by this PE's neurons j at tick."""
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
        self._release_config()

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
