"""Writes snntorch_rleaky.nir and snntorch_rleaky.npz, the NIR file of tests/test_nir.py that another framework
exported, and what that framework computed with it. Run once, in a venv of its own (s2emu does not need torch):

    pip install torch==2.13.0 snntorch==1.0.0 nirtorch==2.6 nir==1.0.8 h5py numpy
    python tests/data/make_snntorch_nir.py

The network: 8 inputs -> Linear (no bias) -> RLeaky (16, all-to-all recurrent, subtract reset) -> Linear (no
bias) -> Leaky (3). snnTorch exports the RLeaky as a subgraph input -> lif -> w_rec -> lif -> output, its
parameters with dt = 1e-4 s, tau = dt / (1 - beta), r = tau / dt. The .npz holds a spike input x [40, 8]
and the RLeaky's spikes snnTorch computed for it, step by step, [40, 16].
"""

from pathlib import Path

import nir
import numpy as np
import snntorch as snn
from snntorch import utils as snn_utils
import torch
from snntorch.export_nir import export_to_nir

HERE = Path(__file__).resolve().parent
torch.manual_seed(0)
steps, n_in, n_hidden, n_out = 40, 8, 16, 3

net = torch.nn.Sequential(
    torch.nn.Linear(n_in, n_hidden, bias=False),
    snn.RLeaky(beta=0.85, linear_features=n_hidden, init_hidden=True, reset_mechanism="subtract"),
    torch.nn.Linear(n_hidden, n_out, bias=False),
    # per-neuron beta and threshold: with scalars, snnTorch exports a LIF of shape () that NIR's type check refuses
    snn.Leaky(beta=torch.full((n_out,), 0.9), threshold=torch.ones(n_out), init_hidden=True, output=True,
              reset_mechanism="subtract"),
)
with torch.no_grad():
    net[0].weight.mul_(2.5)
    net[1].recurrent.bias.zero_()  # s2emu's neurons take no bias current
    net[1].recurrent.weight.mul_(0.8)

x = (torch.rand(steps, n_in) < 0.3).float()
graph = export_to_nir(net, x[:1], ignore_dims=[0])  # dimension 0: the batch
nir.write(HERE / "snntorch_rleaky.nir", graph)

spikes = []
with torch.no_grad():
    snn_utils.reset(net)  # the hidden states export_to_nir left behind
    for t in range(steps):
        net(x[t:t + 1])
        spikes.append(net[1].spk[0].numpy().copy())
np.savez_compressed(HERE / "snntorch_rleaky.npz", x=x.numpy(), hidden_spikes=np.array(spikes, np.float32),
                    versions=np.array(f"torch {torch.__version__}, snntorch {snn.__version__}, nir {nir.__version__}"))
print(graph.nodes.keys(), graph.edges, int(np.sum(spikes)), "hidden spikes")
