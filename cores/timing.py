"""The timing model, stated once.

One tick is one model time step. A packet sent during tick t is delivered at tick t+1 (PACKET_DELAY), as on
SpiNNaker, where a PE's timer tick processes the packets that arrived since the previous tick.

A sample of T input frames therefore flows through the chip in S = T + 2 ticks (local tick s = tick mod S):

    s = 0        every PE: apply the learning signal of the previous sample, update weights, reset state
    s = 0..T-1   host sends input frame s (and, at s = 0, the label to the readout PE)
    s = 1..T     neuron PEs integrate frame s-1 and the recurrent spikes of tick s-1   (model step t = s-1)
    s = 2..T+1   the readout integrates the spikes of tick s-1                           (model step t = s-2)
    s = T+1      the readout sends mean outputs to the host and the learning signal to the neuron PEs,
                 which receive it at s = 0 of the next sample
A run of N samples takes N*S + 1 ticks: the last tick only delivers the last learning signal.

A layered network (cores/mlp.py) has its own depth: S = T + 2 on one PE, S = T + 5 + 2P split over P PEs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PACKET_DELAY = 1
PIPELINE_DEPTH = 2  # input -> neuron PE -> readout PE


@dataclass(frozen=True, eq=False)
class SampleClock:
    steps: int  # T: frames per sample
    learn: np.ndarray  # bool per sample step: does this sample train the network?
    epoch: np.ndarray  # int per sample step: the epoch it belongs to (learning-rate schedule)
    depth: int = PIPELINE_DEPTH  # ticks of a sample beyond its T frames

    @classmethod
    def make(cls, steps: int, learn, epoch, depth: int = PIPELINE_DEPTH) -> "SampleClock":
        learn, epoch = np.asarray(learn, dtype=bool), np.asarray(epoch, dtype=np.int64)
        if steps < 1 or learn.shape != epoch.shape or learn.ndim != 1 or depth < 1:
            raise ValueError("SampleClock needs steps >= 1, depth >= 1 and one learn flag and epoch per sample")
        return cls(steps, learn, epoch, int(depth))

    @property
    def ticks_per_sample(self) -> int:
        return self.steps + self.depth

    @property
    def n_samples(self) -> int:
        return len(self.learn)

    @property
    def n_ticks(self) -> int:
        return self.n_samples * self.ticks_per_sample + 1

    def where(self, tick: int) -> tuple[int, int]:
        """(sample index, local tick s) of a global tick."""
        return divmod(tick, self.ticks_per_sample)

    def learns(self, sample: int) -> bool:
        return 0 <= sample < self.n_samples and bool(self.learn[sample])

    def to_dict(self) -> dict:
        return {"steps": self.steps, "learn": self.learn, "epoch": self.epoch, "depth": self.depth}

    @classmethod
    def from_dict(cls, d: dict) -> "SampleClock":
        return cls.make(d["steps"], d["learn"], d["epoch"], d.get("depth", PIPELINE_DEPTH))
