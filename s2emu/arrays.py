"""Arrays a network carries that a recipe's TOML cannot spell: explicit initial weights of a projection, and
the samples of data kind "arrays". Both come from the Python API (s2emu.snn) in memory, or from a .npz file
beside the recipe that it names (written by `Network.to_recipe`).

File layout (one .npz may hold both): `W/<pre>-><post>` [n_pre, n_post] float32, the entries a trained model
file has (s2emu/model.py), so a model can start a recipe's projections; `x_train` [N, T, C] float32,
`y_train` [N] int64, `x_test`, `y_test`.

Both kinds of object compare by content (a sha256 of their numbers), never by the file they came from, so a
network built in Python equals the one its saved recipe loads back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .atomic import write_atomically
from .errors import RecipeError

SPLITS = ("x_train", "y_train", "x_test", "y_test")


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str} {a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class FixedWeights:
    """A projection's initial weights [n_pre, n_post], given instead of the seeded draw (network.py
    initial_weights). Stored as float32, the PEs' type: the PEs start from exactly these numbers."""

    __slots__ = ("array", "file", "digest")

    def __init__(self, array, file: str = "", what: str = "weights"):
        try:
            a = np.array(array, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise RecipeError(f"{what}: not a matrix of numbers ({e})") from None
        if a.ndim != 2:
            raise RecipeError(f"{what}: expected a [n_pre, n_post] matrix, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise RecipeError(f"{what}: holds NaN or infinite values")
        self.array, self.file, self.digest = _frozen(a), str(file), _digest(a)

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    def __eq__(self, other):
        return isinstance(other, FixedWeights) and other.digest == self.digest

    def __hash__(self):
        return hash(self.digest)

    def __repr__(self):
        return f"FixedWeights({self.shape[0]}x{self.shape[1]}, sha256 {self.digest[:12]})"


class ArrayData:
    """The samples of data kind "arrays": inputs [N, T, C] float32 and labels [N] int64 for a train and a test
    split (the train split may be empty: a plain run only tests)."""

    __slots__ = ("x_train", "y_train", "x_test", "y_test", "file", "digest")

    def __init__(self, x_train=None, y_train=None, x_test=None, y_test=None, file: str = ""):
        if x_test is None:
            raise RecipeError("data: x_test is required (the samples a run feeds the network)")
        x_te = self._inputs(x_test, "x_test")
        T, C = x_te.shape[1:]
        x_tr = self._inputs(np.zeros((0, T, C), np.float32) if x_train is None else x_train, "x_train")
        if x_tr.shape[1:] != (T, C):
            raise RecipeError(f"data: x_train has {x_tr.shape[1]} steps x {x_tr.shape[2]} channels, x_test "
                              f"{T} x {C}; they must agree")
        y_tr = self._labels(np.zeros(len(x_tr), np.int64) if y_train is None else y_train, "y_train", len(x_tr))
        y_te = self._labels(np.zeros(len(x_te), np.int64) if y_test is None else y_test, "y_test", len(x_te))
        if len(x_te) == 0:
            raise RecipeError("data: x_test has no samples")
        self.x_train, self.y_train, self.x_test, self.y_test = map(_frozen, (x_tr, y_tr, x_te, y_te))
        self.file = str(file)
        self.digest = _digest(self.x_train, self.y_train, self.x_test, self.y_test)

    @staticmethod
    def _inputs(x, what: str) -> np.ndarray:
        try:
            a = np.array(x, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise RecipeError(f"data: {what} is not an array of numbers ({e})") from None
        if a.ndim != 3:
            raise RecipeError(f"data: {what} must be [samples, steps, channels], got shape {a.shape}")
        if a.shape[1] < 1 or a.shape[2] < 1:
            raise RecipeError(f"data: {what} needs at least one step and one channel, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise RecipeError(f"data: {what} holds NaN or infinite values")
        return a

    @staticmethod
    def _labels(y, what: str, n: int) -> np.ndarray:
        a = np.asarray(y)
        if a.shape != (n,) or (n and not np.issubdtype(a.dtype, np.integer)) or (n and a.min() < 0):
            raise RecipeError(f"data: {what} must be {n} non-negative integer labels, got shape {a.shape} "
                              f"of {a.dtype}")
        return a.astype(np.int64)

    @property
    def steps(self) -> int:
        return self.x_test.shape[1]

    @property
    def channels(self) -> int:
        return self.x_test.shape[2]

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in SPLITS}

    def __eq__(self, other):
        return isinstance(other, ArrayData) and other.digest == self.digest

    def __hash__(self):
        return hash(self.digest)

    def __repr__(self):
        return (f"ArrayData({len(self.x_train)} train, {len(self.x_test)} test, {self.steps} steps x "
                f"{self.channels} channels, sha256 {self.digest[:12]})")


def resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise RecipeError(f"{what}: no file '{path}'")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise RecipeError(f"{what}: '{path}' is not a readable .npz file ({e})") from None


def weights_from_file(path: str, projection: str, base_dir: Path | None, what: str) -> FixedWeights:
    """The entry W/<projection> of a .npz file (relative paths start at the recipe's folder)."""
    p = resolve(path, base_dir)
    entries = read_npz(p, what)
    key = f"W/{projection}"
    if key not in entries:
        have = sorted(k[2:] for k in entries if k.startswith("W/"))
        raise RecipeError(f"{what}: '{p}' has no weights for projection {projection} "
                          f"(it has: {', '.join(have) or 'none'})")
    return FixedWeights(entries[key], file=str(p), what=what)


def data_from_file(path: str, base_dir: Path | None) -> ArrayData:
    p = resolve(path, base_dir)
    entries = read_npz(p, "'data.path'")
    missing = [k for k in ("x_test",) if k not in entries]
    if missing:
        raise RecipeError(f"'data.path': '{p}' has no {', '.join(missing)} (an arrays file holds x_train, "
                          f"y_train, x_test, y_test)")
    return ArrayData(*(entries.get(k) for k in SPLITS), file=str(p))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (s2emu/atomic.py: a temporary file of its own, renamed over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: np.savez_compressed(f, **arrays))
