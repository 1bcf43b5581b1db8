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


def save_model(path, weights: dict[str, np.ndarray], meta: dict) -> Path:
    """Write atomically (s2emu/atomic.py write_atomically): a crash never leaves half a model behind, and
    two runs saving to the same path each replace it with a whole model of their own."""
    from .atomic import write_atomically

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"W/{k}": np.asarray(v, np.float32) for k, v in weights.items()}
    meta = np.array(json.dumps(meta, sort_keys=True))
    # through an open file: numpy would add ".npz" to a path without it
    return write_atomically(path, lambda f: np.savez_compressed(f, meta=meta, **arrays))


ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive; np.load would take anything else for a pickle


def load_model(path, network: Network) -> tuple[dict[str, np.ndarray], dict]:
    path = Path(path)
    if not path.exists():
        raise S2EmuError(f"no model file '{path}' (train one with `s2emu run RECIPE --out DIR`)")
    if not path.is_file():  # a FIFO would hang the reader, a device fill its memory
        raise S2EmuError(f"model {path} is not a regular file")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(ZIP_MAGIC))
        if magic != ZIP_MAGIC:
            raise ValueError("not an .npz archive")
        with np.load(path, allow_pickle=False) as z:
            weights = {}
            for k in z.files:
                if k.startswith("W/"):
                    w = z[k]
                    if w.dtype.kind not in "biuf":
                        raise ValueError(f"{k} holds {w.dtype} values, not numbers")
                    weights[k[2:]] = w.astype(np.float32)
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        if not isinstance(meta, dict):
            raise ValueError(f"its meta is a JSON {type(meta).__name__}, not an object")
    # a truncated or corrupt archive fails in zipfile, zlib or numpy's parser with any of many exceptions
    except Exception as e:  # noqa: BLE001
        detail = " ".join(str(e).split()) if not isinstance(e, KeyError) else f"missing entry {e}"
        raise S2EmuError(f"{path}: not a model file, or a damaged one ({detail or type(e).__name__})") from None
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
