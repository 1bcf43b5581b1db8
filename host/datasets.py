"""Data sets the host streams into the chip. Each data kind declares its recipe schema here.

`patterns`: a small temporal classification task generated in code (no download): each class is a set of
analog input currents, each channel switched on for a class-specific window of the sample; every sample is
its class template shifted in time by a random jitter, scaled by a random gain, plus Gaussian noise.
Solving it needs memory of *when* channels were active, so a recurrent spiking network is tested.

`mnist`: handwritten digits (SCIENCE.md seed B), the standard IDX files or the bundled 10,000-digit subset
(host/mnist.py): with encoding "analog", pixels / 255 as one frame of 784 analog inputs per sample; with
"events", an event-based version for spiking networks: the digit is scanned row by row, one row per step (28
steps), and each of its 28 columns has an ON channel that spikes where ink begins (pixel >= 128 below a
pixel < 128) and an OFF channel that spikes where it ends, as a DVS sensor swept down the digit would: 56
spike channels.

`speech_commands`: the 12-class keyword-spotting task of SCIENCE.md seed A on a corpus in Google Speech
Commands layout (host/speech_commands.py), as log-mel features (host/features.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2emu.arrays import ArrayData, data_from_file
from s2emu.errors import RecipeError, S2EmuError
from s2emu.schema import REQUIRED, _in_range, _non_negative, _one_of, _positive, check_table

from s2emu.progress import ProgressBar

from .augment import AUGMENTATIONS
from .features import FeatureSpec
from .speech_commands import COMMANDS, class_names, load_features
from .synth import ENGINES


@dataclass(frozen=True)
class Dataset:
    """Inputs [N, T, C] float32 and labels [N] for a train and a test split."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # unreadable files left out (skip_bad), each "path: reason"

    @property
    def steps(self) -> int:
        return self.x_train.shape[1]

    @property
    def channels(self) -> int:
        return self.x_train.shape[2]


PATTERNS_SCHEMA = {
    "kind": (str, "patterns", None),
    "classes": (int, 4, _in_range(2, 1000)),
    "channels": (int, 20, _positive),
    "steps": (int, 30, _in_range(1, 100000)),
    "train_per_class": (int, 32, _positive),
    "test_per_class": (int, 16, _positive),
    "active_fraction": (float, 0.3, lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
    "amplitude": (float, 1.0, _positive),
    "noise": (float, 0.3, _non_negative),
    "jitter": (int, 2, _non_negative),
    "seed": (int, None, _non_negative),  # default: the recipe seed
    "encoding": (str, "analog", _one_of("analog", "spikes")),
    "max_rate": (float, 0.5, lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),  # spikes per tick
}

def _augmentations(v):
    bad = [a for a in v if a not in AUGMENTATIONS]
    return f"must name augmentations among {', '.join(AUGMENTATIONS)} (not {bad[0]!r})" if bad else None


def _words(v):
    if not v or not all(isinstance(w, str) and w for w in v) or len(set(v)) != len(v):
        return "must be a list of distinct word folder names"
    return None


def _count_table(v):
    """An int, or a table of them per synthesizer engine."""
    ok = (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, dict) and all(isinstance(n, int) and not isinstance(n, bool) for n in v.values()))
    return None if ok else "must be an integer or a table of integers per engine ({ espeak-ng = 2, flite = 40 })"


def _voice_list(v):
    return None if all(isinstance(x, str) and x for x in v) else "must be a list of voice names"


# [data.synth]: the corpus s2emu synth makes from these (host/synth.py synthesize), generated on first use and
# cached (host/synth.generated_corpus); used when data.path is not given
SYNTH_SCHEMA = {
    "engines": (list, ["espeak-ng"], lambda v: None if v and all(e in ENGINES for e in v) and len(set(v)) == len(v)
                else f"must be a list of distinct engines among {', '.join(ENGINES)}"),
    "voices_train": (list, [], _voice_list),  # [] = the engines' built-in train voices
    "voices_test": (list, [], _voice_list),  # [] = the engines' built-in test voices
    "repeats": (object, 1, _count_table),
    "unknown_per_voice": (object, 3, _count_table),
    "noisy_fraction": (float, 0.4, _in_range(0.0, 1.0)),
    "snr_db": (list, [15.0, 35.0], lambda v: None if len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
               and v[0] <= v[1] else "must be [lo, hi] in dB"),
    "bits": (int, 10, _in_range(8, 16)),
    "seed": (int, 0, _non_negative),
}

SPEECH_COMMANDS_SCHEMA = {
    "kind": (str, "speech_commands", None),
    # corpus folder or tar archive; relative paths start at the recipe's folder; "" = the [data.synth] corpus
    "path": (str, "", None),
    "synth": SYNTH_SCHEMA,
    "words": (list, list(COMMANDS), _words),  # the command words; every other word folder is _unknown_
    "sample_rate": (int, 16000, _in_range(1000, 192000)),
    "n_fft": (int, 480, _in_range(16, 65536)),
    "hop": (int, 161, _in_range(1, 65536)),
    "n_mels": (int, 40, _in_range(1, 512)),
    "fmin": (float, 20.0, _non_negative),
    "fmax": (float, 4000.0, _positive),
    "deltas": (bool, True, None),
    "test_split": (str, "test", _one_of("test", "validation", "train", "all")),  # the clips tested on
    "max_train": (int, 0, _non_negative),  # 0 = all; otherwise a seeded random subset (quick runs, tests)
    "max_test": (int, 0, _non_negative),
    "seed": (int, None, _non_negative),  # silence windows and subsets; default: the recipe seed
    "encoding": (str, "analog", _one_of("analog")),
    "skip_bad": (bool, False, None),  # skip clips that cannot be read (listed in the results) instead of failing
    # training-time augmentation (host/augment.py): this many augmented copies of every training clip join
    # the training split, made with the augmentations named (default all of them)
    "augment_copies": (int, 0, _in_range(0, 100)),
    "augment": (list, list(AUGMENTATIONS), _augmentations),
}

MNIST_SCHEMA = {
    "kind": (str, "mnist", None),
    "path": (str, "", None),  # folder of the four IDX files, or a bundle .npz; "" = the bundled subset
    "max_train": (int, 0, _non_negative),  # 0 = all; otherwise a seeded random subset (quick runs, tests)
    "max_test": (int, 0, _non_negative),
    "seed": (int, None, _non_negative),  # subsets; default: the recipe seed
    "encoding": (str, "analog", _one_of("analog", "events")),
}

ARRAYS_SCHEMA = {  # samples given as arrays (s2emu/arrays.py): the Python API's inputs, or a .npz file
    "kind": (str, "arrays", None),
    "path": (str, "", None),  # .npz with x_train, y_train, x_test, y_test; relative to the recipe's folder
    "arrays": (object, None, lambda v: None if isinstance(v, ArrayData) else "is set by the Python API only"),
    "classes": (list, [], lambda v: None if all(isinstance(c, str) for c in v) and len(set(v)) == len(v)
                else "must be a list of distinct class names"),  # [] = class0, class1 ... (the readout's size)
    "encoding": (str, "analog", _one_of("analog", "spikes")),
}

SCHEMAS = {"patterns": PATTERNS_SCHEMA, "speech_commands": SPEECH_COMMANDS_SCHEMA, "mnist": MNIST_SCHEMA,
           "arrays": ARRAYS_SCHEMA}


def feature_spec(d: dict) -> FeatureSpec:
    return FeatureSpec(sample_rate=d["sample_rate"], clip_samples=d["sample_rate"], n_fft=d["n_fft"], hop=d["hop"],
                       n_mels=d["n_mels"], fmin=d["fmin"], fmax=d["fmax"], deltas=d["deltas"])


def _shape(d: dict) -> tuple[int, int, int]:
    """(classes, channels, steps) of a data table."""
    if d["kind"] == "speech_commands":
        spec = feature_spec(d)
        return len(d["words"]) + 2, spec.channels, spec.frames
    if d["kind"] == "mnist":
        return (10, 2 * 28, 28) if d["encoding"] == "events" else (10, 28 * 28, 1)
    if d["kind"] == "arrays":
        return len(d["classes"]), d["arrays"].channels, d["arrays"].steps
    return d["classes"], d["channels"], d["steps"]


# Bounds on what a recipe may ask the host to hold, so an absurd [data] table is refused by name instead of
# numpy asking for terabytes (the bundled recipes need a few MB). Patterns: all generated inputs, float32.
MAX_PATTERN_BYTES = 4 << 30
MAX_CLIP_FRAMES = 100_000  # frames (ticks) of one clip's features, as patterns' data.steps
MAX_FRAMING = 1 << 25  # frames x n_fft of one clip: 256 MiB of float64 framed audio


def _check_sizes(d: dict) -> None:
    if d["kind"] == "patterns":
        n = d["classes"] * (d["train_per_class"] + d["test_per_class"])
        need = n * d["steps"] * d["channels"] * 4
        if need > MAX_PATTERN_BYTES:
            raise RecipeError(f"'data.train_per_class', 'data.test_per_class', 'data.steps': {d['classes']} classes x "
                              f"({d['train_per_class']:,} + {d['test_per_class']:,}) samples x {d['steps']:,} steps x "
                              f"{d['channels']:,} channels of float32 inputs is {need / 2**30:,.1f} GiB, more than "
                              f"the {MAX_PATTERN_BYTES >> 30} GiB allowed")
    if d["kind"] == "speech_commands":
        frames = 1 + d["sample_rate"] // d["hop"]
        if frames > MAX_CLIP_FRAMES:
            raise RecipeError(f"'data.hop' ({d['hop']}) cuts a clip of {d['sample_rate']:,} samples into "
                              f"{frames:,} frames (ticks per sample), more than the {MAX_CLIP_FRAMES:,} allowed")
        if frames * d["n_fft"] > MAX_FRAMING:
            raise RecipeError(f"'data.n_fft' ({d['n_fft']:,}) x {frames:,} frames per clip (data.sample_rate / "
                              f"data.hop) is {frames * d['n_fft']:,} samples to transform per clip, more than "
                              f"the {MAX_FRAMING:,} allowed")


def check_data_table(doc, network, base_dir: Path | None = None) -> dict:
    if doc is None:
        raise RecipeError("missing [data] table")
    if not isinstance(doc, dict) or "kind" not in doc:
        raise RecipeError(f"'data.kind' is required (known kinds: {', '.join(SCHEMAS)})")
    kind = doc["kind"]
    if kind not in SCHEMAS:
        raise RecipeError(f"'data.kind' must be one of {', '.join(map(repr, SCHEMAS))}, got {kind!r}")
    d = check_table(doc, SCHEMAS[kind], "data")
    if kind == "speech_commands":
        if not 0 < d["fmin"] < d["fmax"] <= d["sample_rate"] / 2:
            raise RecipeError(f"'data.fmin' and 'data.fmax' must satisfy 0 < fmin < fmax <= sample_rate/2, "
                              f"got {d['fmin']}, {d['fmax']}")
        if d["hop"] > d["n_fft"]:
            raise RecipeError(f"'data.hop' ({d['hop']}) must not exceed 'data.n_fft' ({d['n_fft']})")
    _check_sizes(d)
    if kind == "speech_commands" and not d["path"] and "synth" not in doc:
        raise RecipeError("'data.path' (a corpus folder or archive) or a [data.synth] table (a corpus to "
                          "synthesize) is required")
    if kind == "speech_commands" and doc.get("path") and d["synth"] != check_table({}, SYNTH_SCHEMA, "data.synth"):
        # (a checked recipe's table, carried with its defaults as the Python API does, is not one given)
        raise RecipeError("'data': give a corpus path or a [data.synth] table, not both")
    if kind in ("speech_commands", "mnist") and d["path"] and base_dir is not None \
            and not Path(d["path"]).is_absolute():
        d["path"] = str(Path(base_dir) / d["path"])
    if kind == "arrays":
        _check_arrays(d, network, base_dir)
    classes, channels, _ = _shape(d)
    what = {"speech_commands": "2 + len(data.words)", "mnist": "the 10 digits of data kind 'mnist'"}.get(
        kind, "data.classes")
    if channels != network.input.size:
        what_c = {"speech_commands": "data.n_mels x (2 with data.deltas)",
                  "mnist": "the 28 x 28 pixels of data kind 'mnist'"}.get(kind, "data.channels")
        raise RecipeError(f"'{what_c}' ({channels}) must equal the size of input population "
                          f"'{network.input.name}' ({network.input.size})")
    if classes != network.readout.size:
        raise RecipeError(f"'{what}' ({classes}) must equal the size of readout population "
                          f"'{network.readout.name}' ({network.readout.size})")
    wants = "spikes" if d["encoding"] in ("spikes", "events") else "analog"
    if wants != network.input.encoding:
        raise RecipeError(f"'data.encoding' ({d['encoding']!r}) needs the input population "
                          f"'{network.input.name}' to have encoding {wants!r} (it has {network.input.encoding!r})")
    return d


def _check_arrays(d: dict, network, base_dir) -> None:
    """Data kind "arrays": read the file (kept in d["arrays"]), name the classes, check the labels."""
    if d["arrays"] is None:
        if not d["path"]:
            raise RecipeError("'data.path' must name a .npz file of arrays (x_train, y_train, x_test, y_test)")
        d["arrays"] = data_from_file(d["path"], base_dir)
    elif d["path"]:
        raise RecipeError("'data': give the arrays or a path to them, not both")
    if d["path"] and base_dir is not None and not Path(d["path"]).is_absolute():
        d["path"] = str(Path(base_dir) / d["path"])
    d["classes"] = d["classes"] or [f"class{k}" for k in range(network.readout.size)]
    a = d["arrays"]
    for split in ("y_train", "y_test"):
        y = getattr(a, split)
        if len(y) and y.max() >= len(d["classes"]):
            raise RecipeError(f"'data': {split} has label {int(y.max())}, but there are {len(d['classes'])} "
                              f"classes")


def _arrays_dataset(d: dict) -> Dataset:
    """The samples of data kind "arrays"; a path other than the one they were read from (--data) is read anew."""
    a = d["arrays"]
    if a is None or (d["path"] and d["path"] != a.file):
        a = data_from_file(d["path"], None)
    return Dataset(a.x_train, a.y_train, a.x_test, a.y_test, tuple(d["classes"]))


def make_patterns(d: dict, seed: int) -> Dataset:
    try:
        return _make_patterns(d, seed)
    except MemoryError:  # within the recipe's bounds, yet more than this machine has free
        n = d["classes"] * (d["train_per_class"] + d["test_per_class"])
        raise S2EmuError(f"not enough memory to generate the patterns data set: {n:,} samples "
                         f"(data.classes x (data.train_per_class + data.test_per_class)) of {d['steps']:,} steps "
                         f"x {d['channels']:,} channels, {n * d['steps'] * d['channels'] * 4 / 2**30:,.1f} GiB"
                         ) from None


def _make_patterns(d: dict, seed: int) -> Dataset:
    rng = np.random.default_rng([d["seed"] if d["seed"] is not None else seed, 0x5A11])
    C, T, K = d["channels"], d["steps"], d["classes"]
    width = max(1, int(round(d["active_fraction"] * T)))
    starts = rng.integers(0, T - width + 1, size=(K, C))
    on = rng.random((K, C)) < 0.5  # each class drives about half of the channels
    templates = np.zeros((K, T, C), np.float32)
    for k in range(K):
        for c in np.flatnonzero(on[k]):
            templates[k, starts[k, c]:starts[k, c] + width, c] = d["amplitude"]

    def draw(n_per_class):
        y = np.repeat(np.arange(K), n_per_class)
        x = np.empty((len(y), T, C), np.float32)
        for i, k in enumerate(y):
            shift = int(rng.integers(-d["jitter"], d["jitter"] + 1)) if d["jitter"] else 0
            gain = 1.0 + 0.1 * rng.standard_normal()
            x[i] = np.roll(templates[k], shift, axis=0) * gain + d["noise"] * rng.standard_normal((T, C))
        order = rng.permutation(len(y))
        return x[order], y[order]

    x_tr, y_tr = draw(d["train_per_class"])
    x_te, y_te = draw(d["test_per_class"])
    if d["encoding"] == "spikes":  # Bernoulli spikes, probability max_rate * current / amplitude per tick
        def spikes(x):
            p = np.clip(x / d["amplitude"], 0.0, 1.0) * d["max_rate"]
            return (rng.random(x.shape) < p).astype(np.float32)
        x_tr, x_te = spikes(x_tr), spikes(x_te)
    return Dataset(x_tr, y_tr, x_te, y_te, tuple(f"class{k}" for k in range(K)))


def _subset(x, y, n, rng):
    if not n or n >= len(y):
        return x, y
    keep = np.sort(rng.choice(len(y), n, replace=False))
    return x[keep], y[keep]


def corpus_path(d: dict, *, progress: bool = True) -> str:
    """The corpus of a speech_commands data table: its path, or the [data.synth] corpus, synthesized into the
    cache on first use (minutes, with a progress bar) and reused after."""
    if d["path"]:
        return d["path"]
    from .speech_commands import cache_dir
    from .synth import default_voices, generated_corpus
    p = d["synth"]
    engines = tuple(p["engines"])
    params = {"seed": p["seed"], "voices_train": tuple(p["voices_train"]) or default_voices(engines, "train"),
              "voices_test": tuple(p["voices_test"]) or default_voices(engines, "test"), "repeats": p["repeats"],
              "unknown_per_voice": p["unknown_per_voice"], "noisy_fraction": p["noisy_fraction"],
              "snr_db": tuple(float(x) for x in p["snr_db"]), "bits": p["bits"]}
    bar = ProgressBar("synthesizing the corpus (once; cached)", unit="clips", enabled=progress)

    def advance(done, total):
        if bar.bar is None:
            bar.start(total)
        bar.advance(1)

    try:
        return str(generated_corpus(params, root=cache_dir() / "corpora", progress=advance))
    finally:
        bar.stop()


def load_speech_commands(d: dict, seed: int, *, need_train: bool = True) -> Dataset:
    seed = d["seed"] if d["seed"] is not None else seed
    spec = feature_spec(d)
    splits = (("train",) if need_train else ()) + (d["test_split"],)
    skipped = []
    feats = load_features(corpus_path(d), spec, tuple(d["words"]), seed=seed, splits=tuple(dict.fromkeys(splits)),
                          skip_bad=d["skip_bad"], skipped=skipped,
                          augment=(d["augment_copies"], tuple(d["augment"])))
    rng = np.random.default_rng([seed, 0x5C])
    empty = (np.zeros((0, spec.frames, spec.channels), np.float32), np.zeros(0, np.int64))
    x_tr, y_tr = _subset(*feats["train"], d["max_train"], rng) if need_train else empty
    x_te, y_te = _subset(*feats[d["test_split"]], d["max_test"], rng)
    return Dataset(x_tr, y_tr, x_te, y_te, class_names(tuple(d["words"])), tuple(skipped))


def load_mnist_dataset(d: dict, seed: int) -> Dataset:
    from .mnist import load_mnist

    x_tr, y_tr, x_te, y_te = load_mnist(d["path"] or None, flat=True)
    rng = np.random.default_rng([d["seed"] if d["seed"] is not None else seed, 0x3D])
    x_tr, y_tr = _subset(x_tr, y_tr, d["max_train"], rng)
    x_te, y_te = _subset(x_te, y_te, d["max_test"], rng)
    if d["encoding"] == "events":
        frames = [row_scan_events(x.reshape(-1, 28, 28)) for x in (x_tr, x_te)]
    else:
        frames = [(x.astype(np.float32) / np.float32(255))[:, None, :] for x in (x_tr, x_te)]  # one frame each
    return Dataset(frames[0], y_tr.astype(np.int64), frames[1], y_te.astype(np.int64),
                   tuple(str(k) for k in range(10)))


def row_scan_events(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 0/1 [N, 28 steps, 56]: ON events (channels 0-27) where a column's ink
    begins at this row, OFF events (28-55) where it ends (the row above is the previous step; row -1 is blank)."""
    ink = images >= 128
    before = np.concatenate([np.zeros_like(ink[:, :1]), ink[:, :-1]], axis=1)
    return np.concatenate([ink & ~before, before & ~ink], axis=2).astype(np.float32)


def placeholder_dataset(d: dict) -> Dataset:
    """One all-zero sample per split, of the data's shape: what mapping and memory planning need, without
    reading or generating the data."""
    if d["kind"] == "arrays":
        return _arrays_dataset(d)
    classes, channels, steps = _shape(d)
    x, y = np.zeros((1, steps, channels), np.float32), np.zeros(1, np.int64)
    names = (class_names(tuple(d["words"])) if d["kind"] == "speech_commands" else
             tuple(str(k) for k in range(10)) if d["kind"] == "mnist" else tuple(f"class{k}" for k in range(classes)))
    return Dataset(x, y, x, y, names)


def load_dataset(d: dict, seed: int, *, need_train: bool = True) -> Dataset:
    """need_train=False: only the test data (evaluation); generated data sets make both anyway."""
    if d["kind"] == "speech_commands":
        return load_speech_commands(d, seed, need_train=need_train)
    if d["kind"] == "mnist":
        return load_mnist_dataset(d, seed)
    if d["kind"] == "arrays":
        return _arrays_dataset(d)
    return make_patterns(d, seed)
