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

Delays. A projection of delay d (network.py) acts d ticks after its values are sent; the PE holds them in a
ring of d ticks (cores/pe.py ProcessingElement._delayed), as SpiNNaker's synaptic input buffers do. The
input's projections share one delay d_in and the readout's incoming ones d_out, so the table above becomes:
neurons step at s = d_in .. d_in+T-1, the readout at s = d_in+d_out .. S-1, S = T + d_in + d_out (d_in =
d_out = 1: the table above). What would act in a later sample than it was sent in is dropped.

Windows (s2emu/build.py window_bound). An exchange every K ticks delivers what is sent at t at t + K: the
rings absorb the wait, and the end-of-sample learning signal, applied as it arrives, comes K - 1 ticks
after s = 0 but before the neurons' first step at s = d_in >= K. The run takes K - 1 more ticks.

A layered network (cores/mlp.py) has its own depth: S = T + 2 on one PE, S = T + 5 + 2P split over P PEs.
A BPTT stack split over PEs (cores/bptt_pe.py) pauses the input while a window's backward pass runs: its
frames leave the host at the ticks `frames` lists instead of at s = 0..T-1.
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
    frames: tuple[int, ...] = ()  # local tick at which each frame leaves the host; () = 0..T-1

    @classmethod
    def make(cls, steps: int, learn, epoch, depth: int = PIPELINE_DEPTH, frames=()) -> "SampleClock":
        learn, epoch = np.asarray(learn, dtype=bool), np.asarray(epoch, dtype=np.int64)
        if steps < 1 or learn.shape != epoch.shape or learn.ndim != 1 or depth < 1:
            raise ValueError("SampleClock needs steps >= 1, depth >= 1 and one learn flag and epoch per sample")
        frames = tuple(int(f) for f in frames)
        if frames and (len(frames) != steps or frames[0] != 0 or any(b <= a for a, b in zip(frames, frames[1:]))
                       or frames[-1] >= steps + depth):
            raise ValueError("SampleClock frames: one increasing local tick per frame, from 0, within the sample")
        return cls(steps, learn, epoch, int(depth), frames)

    def frame_at(self, s: int) -> int:
        """The frame the host sends at local tick s, or -1."""
        if not self.frames:
            return s if s < self.steps else -1
        i = int(np.searchsorted(self.frames, s))
        return i if i < self.steps and self.frames[i] == s else -1

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
        return {"steps": self.steps, "learn": self.learn, "epoch": self.epoch, "depth": self.depth,
                "frames": list(self.frames)}

    @classmethod
    def from_dict(cls, d: dict) -> "SampleClock":
        return cls.make(d["steps"], d["learn"], d["epoch"], d.get("depth", PIPELINE_DEPTH), d.get("frames", ()))
