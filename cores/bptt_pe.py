"""A PE that trains a stack of spiking layers with BPTT: full, truncated, end to end or in local blocks
(cores/bptt.py), Adam at the end of each sample. The whole network lives on this one PE for now.

Timing as for e-prop (cores/timing.py, S = T + 2): the host sends frame s at local tick s and the label at s = 0;
the PE runs model step t = s - 1 of every layer at tick s = 1..T (the backward pass of a window at its last
step); at s = T + 1 it sends the mean of the last block's readout to the host; at s = 0 of the next sample it
applies the gradient and resets the state.
"""

from __future__ import annotations

import numpy as np

from s2emu.errors import PacketError
from s2emu.router.packets import PacketBatch

from .bptt import LayerSpec, SpikingStack
from .neurons import NeuronConstants
from .optimizer import Adam
from .pe import ProcessingElement


class BpttPE(ProcessingElement):
    def __init__(self, config: dict):
        super().__init__(config)
        lc = self.lc
        layers = [LayerSpec(ly["name"], ly["n"], NeuronConstants(**ly["constants"]),
                            tuple((name, n_pre) for name, n_pre in ly["inputs"]), ly["recurrent"])
                  for ly in config["layers"]]
        self.n_out = config["n_classes"]
        self.stack = SpikingStack(self.ledger, layers, config["blocks"], config["n_in"], self.n_out,
                                  config["kappa"], config["truncation"] or self.T, self.T, self.B,
                                  config["weights"], config["readouts"], lc["surrogate"], learning=self.learning)
        self.adam = {}
        if self.learning:
            for name, w in self._params().items():
                self.adam[name] = Adam(self.ledger, name, w.shape, beta1=lc["beta1"], beta2=lc["beta2"],
                                       eps=lc["eps"], l2=lc["l2"])
        self.value_keys = np.asarray(config["out_keys"], dtype=np.uint32)
        self.pending = False
        self.counters.update(macs=0, accesses=0)

    def _params(self) -> dict[str, np.ndarray]:
        st = self.stack
        return {**st.W, **{f"readout{b}": r for b, r in enumerate(st.R)}}

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
            self.stack.reset()
            return self._out(tick)
        if s <= self.T:
            frame = x[0] if x[0] is not None else np.zeros((self.B, self.projections[0]["n_pre"]), np.float32)
            before = dict(self.stack.counts)
            self.stack.step(frame, learn)
            for k in ("macs", "accesses"):
                self.counters[k] += self.stack.counts[k] - before[k]
            self.pending = learn
            return self._out(tick)
        y_mean = self.stack.y_sum / np.float32(self.T)
        return self._out(tick, mcp_keys=self.value_keys, mcp_payload=y_mean.T)

    def _update(self, sample: int):
        self.updates += 1
        lr = self.lr_for(sample)
        grads = self.stack.gradients()
        for name, w in self._params().items():
            g = grads[name]
            g /= np.float32(self.B)
            self.adam[name].step(w, g, lr, self.updates)
            g[...] = 0
        self.pending = False
        self.counters["updates"] += 1

    def weights(self) -> dict[str, np.ndarray]:
        """The network's projections; the last block's readout is the projection into the readout population
        (the other blocks' local classifiers are training aids, not part of the network)."""
        out = dict(self.stack.W)
        out[self.config["readout_projection"]] = self.stack.R[-1]
        return out

    def recordings(self) -> dict:
        return {}
