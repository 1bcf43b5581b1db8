"""Trained models: the global weight matrices of a network and what they were trained on, in one .npz.

Entries `W/<pre>-><post>` [n_pre, n_post] float32 (the same entries `s2emu run --save` writes) and `meta`,
a JSON string: recipe name, class names, input feature spec, state_digest and test metrics of the run.
Loading checks every projection of the network is present with its shape, and nothing else is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import S2EmuError
from .network import Network


def save_model(path, weights: dict[str, np.ndarray], meta: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"W/{k}": np.asarray(v, np.float32) for k, v in weights.items()}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    tmp.replace(path)  # a crash never leaves half a model behind


def load_model(path, network: Network) -> tuple[dict[str, np.ndarray], dict]:
    path = Path(path)
    if not path.is_file():
        raise S2EmuError(f"no model file '{path}' (train one with `s2emu run RECIPE --out DIR`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            weights = {k[2:]: z[k].astype(np.float32) for k in z.files if k.startswith("W/")}
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise S2EmuError(f"{path}: not a model file ({e})") from None
    want = {pr.name: (network[pr.pre].size, network[pr.post].size) for pr in network.projections}
    missing, extra = sorted(set(want) - set(weights)), sorted(set(weights) - set(want))
    if missing or extra:
        raise S2EmuError(f"{path}: the model does not match the recipe's network "
                         f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'})")
    for name, shape in want.items():
        if weights[name].shape != shape:
            raise S2EmuError(f"{path}: projection {name} has shape {weights[name].shape}, the recipe needs {shape}")
        if not np.isfinite(weights[name]).all():
            raise S2EmuError(f"{path}: projection {name} holds NaN or infinite weights")
    return weights, meta
