"""What every host shares: the plan of a run's samples and the Host, the endpoint that streams their frames
into the chip, hands labels to the PEs that learn and collects the readout's outputs.

Like the PEs it is a plain object with `step(tick, inbound) -> outbound`; the ray engine wraps it in an actor.
Input values travel as MC packets with a float payload (one per channel per tick); labels as P2P packets.
The Host streams a data set held in memory; the streaming host (host/stream.py) is a Host whose frames are
computed from audio as it arrives; host/host.py's make_host makes the one a configuration asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s2emu.cores.pe import LABEL_TAG
from s2emu.cores.timing import PIPELINE_DEPTH, SampleClock
from s2emu.errors import PacketError, S2EmuError
from s2emu.router.packets import PacketBatch, make_batch

from .metrics import accuracy, balanced_accuracy, confusion, cross_entropy

TRAIN, TEST = 0, 1


@dataclass(frozen=True, eq=False)
class Plan:
    """What each sample step of the run does: which split, which samples per stream (-1 = padding)."""
    split: np.ndarray  # int8 [n_steps]
    epoch: np.ndarray  # int [n_steps]; test steps carry the epoch they follow
    idx: np.ndarray  # int [n_steps, B]

    @property
    def learn(self) -> np.ndarray:
        return self.split == TRAIN

    def clock(self, steps: int, depth: int = PIPELINE_DEPTH, frames=()) -> SampleClock:
        return SampleClock.make(steps, self.learn, self.epoch, depth, frames)


def make_plan(n_train: int, n_test: int, *, epochs: int, batch: int, seed: int, eval_every: int = 0) -> Plan:
    """Shuffled training epochs (remainder dropped), then a test pass; optionally a test pass every few epochs."""
    if epochs > 0 and n_train < batch:
        raise S2EmuError(f"batch {batch} is larger than the training set ({n_train} samples)")
    split, epoch, idx = [], [], []

    def test_pass(e):
        for lo in range(0, n_test, batch):
            chunk = np.full(batch, -1, np.int64)
            part = np.arange(lo, min(lo + batch, n_test))
            chunk[:len(part)] = part
            split.append(TEST), epoch.append(e), idx.append(chunk)

    for e in range(epochs):
        order = np.random.default_rng([seed, 0xE9, e]).permutation(n_train)
        for lo in range(0, n_train - batch + 1, batch):
            split.append(TRAIN), epoch.append(e), idx.append(order[lo:lo + batch])
        if eval_every and (e + 1) % eval_every == 0 and e + 1 < epochs:
            test_pass(e)
    test_pass(max(epochs - 1, 0))
    return Plan(np.array(split, np.int8), np.array(epoch, np.int64), np.stack(idx).astype(np.int64))


class Host:
    def __init__(self, config: dict):
        self.endpoint = int(config["endpoint"])
        self.B = int(config["streams"])
        self.plan = Plan(**config["plan"])
        self.clock = self.plan.clock(int(config["steps"]), int(config.get("depth", PIPELINE_DEPTH)),
                                     config.get("frames", ()))
        self.T = self.clock.steps
        self.x = {TRAIN: config["x_train"], TEST: config["x_test"]}
        self.y = {TRAIN: config["y_train"], TEST: config["y_test"]}
        self.input_keys = np.asarray(config["input_keys"], np.uint32)
        self.value_keys = np.asarray(config["value_keys"], np.uint32)
        self.label_pes = [int(p) for p in np.atleast_1d(config["readout_pe"])]  # who needs the labels
        self.n_classes = len(self.value_keys)
        self.spikes = config.get("input_encoding", "analog") == "spikes"
        if self.spikes:
            for split, x in self.x.items():
                if not np.isin(x, (0.0, 1.0)).all():
                    raise S2EmuError(f"host: spike input needs 0/1 data, but the {'train' if split == TRAIN else 'test'}"
                                     f" set has other values (set the input population's encoding to 'analog')")
        self.scores = np.full((self.clock.n_samples, self.B, self.n_classes), np.nan, np.float32)
        self.counters = {"packets_in": 0, "packets_out": 0}

    def step(self, tick: int, inbound: PacketBatch | None) -> PacketBatch:
        if inbound is not None and len(inbound):
            self._collect(tick, inbound)
        sample, s = self.clock.where(tick)
        t = self.clock.frame_at(s)
        if sample >= self.clock.n_samples or t < 0:
            return make_batch(self.endpoint, tick, self.B)
        split, idx = int(self.plan.split[sample]), self.plan.idx[sample]
        valid = idx >= 0
        frame = np.zeros((self.B, len(self.input_keys)), np.float32)
        frame[valid] = self._frames(split, idx[valid], t)
        if self.spikes:  # spike input: a packet per spike; with B streams, a 0/1 payload per stream
            fired = np.flatnonzero(frame.any(axis=0))
            parts = ({"mc_keys": self.input_keys[fired]} if self.B == 1 else
                     {"mcp_keys": self.input_keys[fired], "mcp_payload": frame[:, fired].T})
        else:
            parts = {"mcp_keys": self.input_keys, "mcp_payload": frame.T}
        if s == 0:
            labels = np.zeros(self.B, np.uint32)
            labels[valid] = self.y[split][idx[valid]]
            n = len(self.label_pes)
            parts.update(p2p_dest=self.label_pes, p2p_tag=[LABEL_TAG] * n, p2p_payload=np.tile(labels, (n, 1)))
        out = make_batch(self.endpoint, tick, self.B, **parts)
        self.counters["packets_out"] += len(out)
        return out

    def _frames(self, split: int, clips: np.ndarray, t: int) -> np.ndarray:
        """Frame t of these clips of a split, [len(clips), channels]."""
        return self.x[split][clips, t]

    def snapshot(self) -> dict:
        """The host's state for a checkpoint: the scores so far (the plan fixes what comes next)."""
        return {"scores": self.scores, "counters": dict(self.counters)}

    def restore(self, state: dict) -> None:
        self.scores[...] = state["scores"]
        self.counters.update(state["counters"])

    def _collect(self, tick: int, inbound: PacketBatch):
        self.counters["packets_in"] += len(inbound)
        if len(inbound.mc_keys) or len(inbound.p2p_dest):
            raise PacketError(f"host: unexpected packets at tick {tick} (only readout values are sent to the host)")
        pos = np.searchsorted(self.value_keys, inbound.mcp_keys)
        pos = np.minimum(pos, len(self.value_keys) - 1)
        if np.any(self.value_keys[pos] != inbound.mcp_keys):
            raise PacketError(f"host: received unknown key at tick {tick}")
        sample = self.clock.where(inbound.tick)[0]  # sent at sample k's last tick, they arrive in sample k+1
        self.scores[sample][:, pos] = inbound.mcp_payload.T

    def results(self) -> dict:
        """Per-epoch training accuracy and loss, and the final test metrics."""
        C = self.n_classes
        out = {"train_curve": [], "test_curve": []}

        def gather(mask):
            steps = np.flatnonzero(mask)
            idx = self.plan.idx[steps]
            valid = idx >= 0
            split = int(self.plan.split[steps[0]])
            truth = self.y[split][idx[valid]]
            scores = self.scores[steps][valid]
            return truth, scores

        for e in np.unique(self.plan.epoch[self.plan.split == TRAIN]):
            truth, scores = gather((self.plan.split == TRAIN) & (self.plan.epoch == e))
            out["train_curve"].append({"epoch": int(e) + 1, "accuracy": accuracy(truth, scores.argmax(1)),
                                       "loss": cross_entropy(scores, truth)})
        test_steps = self.plan.split == TEST
        for e in np.unique(self.plan.epoch[test_steps]):
            truth, scores = gather(test_steps & (self.plan.epoch == e))
            out["test_curve"].append({"epoch": int(e) + 1, "accuracy": accuracy(truth, scores.argmax(1))})
        last = self.plan.epoch[test_steps].max()
        truth, scores = gather(test_steps & (self.plan.epoch == last))
        missing = int(np.isnan(scores).any(axis=1).sum())  # the runner refuses results with missing outputs
        scores = np.nan_to_num(scores, nan=-np.inf)
        pred = scores.argmax(1)
        out.update(accuracy=accuracy(truth, pred), balanced_accuracy=balanced_accuracy(truth, pred, C),
                   chance=1.0 / C, test_loss=cross_entropy(scores, truth) if not missing else float("nan"), n_test=int(len(truth)),
                   confusion=confusion(truth, pred, C).tolist(), missing_outputs=missing,
                   predictions=pred.tolist())  # per test sample, in the data set's order (eval --by)
        return out
