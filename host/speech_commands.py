"""Google Speech Commands (v1 and v2 layout) as the 12-class keyword-spotting task of SCIENCE.md seed A.

A corpus is a folder, or a tar archive of one (.tar, .tar.gz, .tgz, .tar.xz: the form Google distributes):
one folder per word of 1 s 16 kHz WAV clips, `_background_noise_/` with long noise recordings, and
`validation_list.txt` / `testing_list.txt` naming the clips of those splits (`word/file.wav`); all other
clips are training clips. Classes, in the order of the TensorFlow reference code: `_silence_`, `_unknown_`,
then the 10 command words. Every non-command word is `_unknown_` (all of them, as the authors did, so the
test split is unbalanced: report balanced accuracy too).

`_silence_` clips are cut from the background noise: each noise file is divided in time into a train part
(the first 80%), a validation part (next 10%) and a test part (last 10%), so no noise sample is in two
splits; each split gets as many silence clips as its average command word has, each a random 1 s window of
a random noise file at a random volume in [0, 1] (seeded).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from s2emu.errors import S2EmuError
from s2emu.progress import ProgressBar

from .audio import AudioError, fit_length, parse_wav
from .features import FeatureSpec, batch_features

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
NOISE_DIR = "_background_noise_"
SPLITS = ("train", "validation", "test")
_NOISE_PARTS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}


def class_names(words=COMMANDS) -> tuple[str, ...]:
    return (SILENCE, UNKNOWN, *words)


class Corpus:
    """Read access to a corpus folder or tar archive: relative POSIX paths -> bytes."""

    def __init__(self, path):
        self.path = Path(path)
        if self.path.is_dir():
            self._tar = None
            self.files = sorted(str(PurePosixPath(p.relative_to(self.path))) for p in self.path.rglob("*")
                                if p.is_file())
        elif self.path.is_file():
            try:
                self._tar = tarfile.open(self.path, "r:*")
            except (tarfile.TarError, OSError) as e:
                raise S2EmuError(f"{self.path}: not a corpus folder or tar archive ({e})") from None
            names = [PurePosixPath(m.name) for m in self._tar.getmembers() if m.isfile()]
            # an archive of one top folder (kws_synth/yes/...) is read relative to that folder
            tops = {n.parts[0] for n in names}
            strip = len(tops) == 1 and all(len(n.parts) >= 3 for n in names if n.suffix == ".wav")
            self._members = {str(PurePosixPath(*n.parts[strip:])): m for n, m in
                             zip(names, (m for m in self._tar.getmembers() if m.isfile()))}
            self.files = sorted(self._members)
        else:
            raise S2EmuError(f"no speech corpus at '{path}' (a Speech Commands folder or .tar.gz/.tar.xz archive)")

    def read(self, rel: str) -> bytes:
        if self._tar is None:
            return (self.path / rel).read_bytes()
        return self._tar.extractfile(self._members[rel]).read()

    def reading_order(self, rels: list) -> list[int]:
        """Indices of `rels` in the order they are cheapest to read: an archive's own order (a compressed
        stream seeks backwards by decompressing again from its start, so reading in any other order costs
        time quadratic in the archive's size: minutes for the bundled corpus), else as given."""
        if self._tar is None:
            return list(range(len(rels)))
        return sorted(range(len(rels)), key=lambda i: self._members[rels[i]].offset_data)

    def exists(self, rel: str) -> bool:
        return rel in self._members if self._tar is not None else (self.path / rel).is_file()

    def fingerprint(self) -> str:
        """Changes when the corpus changes (file list and sizes, or the archive's bytes)."""
        h = hashlib.sha256()
        if self._tar is None:
            for f in self.files:
                h.update(f.encode() + str((self.path / f).stat().st_size).encode())
        else:
            st = self.path.stat()
            h.update(f"{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class ClipList:
    """The clips of one split: relative paths (None for silence), labels, and silence windows."""
    paths: list
    labels: np.ndarray
    speakers: list


def index_splits(corpus: Corpus, words=COMMANDS) -> dict[str, ClipList]:
    names = class_names(words)
    listed = {}
    for split, fname in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        listed[split] = set(corpus.read(fname).decode().split()) if corpus.exists(fname) else set()
    wavs = [f for f in corpus.files if f.endswith(".wav") and len(PurePosixPath(f).parts) == 2
            and not f.startswith(NOISE_DIR + "/")]
    if not wavs:
        raise S2EmuError(f"{corpus.path}: no clips (expected <word>/<clip>.wav folders, Speech Commands layout)")
    out = {}
    for split in SPLITS:
        paths, labels, speakers = [], [], []
        for f in wavs:
            in_split = (f in listed["validation"] and split == "validation") or \
                       (f in listed["test"] and split == "test") or \
                       (split == "train" and f not in listed["validation"] and f not in listed["test"])
            if not in_split:
                continue
            word = PurePosixPath(f).parts[0]
            paths.append(f)
            labels.append(names.index(word) if word in words else 1)
            speakers.append(PurePosixPath(f).name.split("_nohash_")[0])
        labels = np.array(labels, np.int64)
        counts = [(labels == k).sum() for k in range(2, len(names))]
        n_sil = int(round(np.mean(counts))) if len(labels) else 0
        out[split] = ClipList(paths + [None] * n_sil, np.concatenate([labels, np.zeros(n_sil, np.int64)]),
                              speakers + [SILENCE] * n_sil)
    return out


def _noise(corpus: Corpus, rate: int) -> list[np.ndarray]:
    files = [f for f in corpus.files if f.startswith(NOISE_DIR + "/") and f.endswith(".wav")]
    got = {k: parse_wav(corpus.read(files[k]), name=files[k], rate=rate).samples for k in corpus.reading_order(files)}
    return [got[k] for k in range(len(files))]


def load_split(corpus: Corpus, clips: ClipList, split: str, spec: FeatureSpec, *, seed: int,
               advance=None, skipped: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """([N, clip_samples] float32 audio of a split's clips, silence windows cut from the noise; bool [N]: read).
    A clip that cannot be read raises AudioError naming it, or, given a `skipped` list, is listed there and
    left out (its row stays silent and unread). advance(1) after each clip, if given."""
    n = spec.clip_samples
    audio = np.zeros((len(clips.paths), n), np.float32)
    ok = np.ones(len(clips.paths), bool)
    noise = None
    rng = np.random.default_rng([seed, 0x5113, SPLITS.index(split)])
    real = [i for i, p in enumerate(clips.paths) if p is not None]
    for i in (real[k] for k in corpus.reading_order([clips.paths[i] for i in real])):
        if advance is not None:
            advance(1)
        p = clips.paths[i]
        try:
            audio[i] = fit_length(parse_wav(corpus.read(p), name=p, rate=spec.sample_rate).samples, n)
        except AudioError as e:
            if skipped is None:
                raise
            skipped.append(str(e))
            ok[i] = False
    for i, p in enumerate(clips.paths):  # silence windows in clip order: the same draws however clips are read
        if p is not None:
            continue
        if advance is not None:
            advance(1)
        if noise is None:
            noise = _noise(corpus, spec.sample_rate)
            if not noise:
                raise S2EmuError(f"{corpus.path}: no {NOISE_DIR}/*.wav to cut silence clips from")
        src = noise[int(rng.integers(len(noise)))]
        lo, hi = (int(f * len(src)) for f in _NOISE_PARTS[split])
        if hi - lo < n:
            raise AudioError(f"{NOISE_DIR}: a noise file is too short for 1 s {split} windows "
                             f"({(hi - lo) / spec.sample_rate:.2f} s in its {split} part)")
        start = lo + int(rng.integers(hi - lo - n + 1))
        audio[i] = src[start:start + n] * rng.random()
    return audio, ok


def cache_dir() -> Path:
    return Path(os.environ.get("S2EMU_CACHE", Path.home() / ".cache" / "s2emu"))


def load_features(path, spec: FeatureSpec, words=COMMANDS, *, seed: int = 0, splits=("train", "test"),
                  skip_bad: bool = False, skipped: list | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (features [N, frames, channels] float32, labels [N])}, cached on disk by corpus fingerprint.
    Work not in the cache shows a progress bar when stderr is a terminal (the full corpus takes minutes).
    skip_bad: leave out clips that cannot be read, and append their "path: reason" to `skipped`."""
    corpus = Corpus(path)
    key = hashlib.sha256(repr((corpus.fingerprint(), spec.to_dict(), tuple(words), seed, 1, skip_bad)).encode()
                         ).hexdigest()[:20]
    skipped = [] if skipped is None else skipped
    index = index_splits(corpus, words)
    out = {}
    if "all" in splits:  # every clip of the corpus: the three splits, each with its silence windows
        parts = [load_features(path, spec, words, seed=seed, splits=(sp,), skip_bad=skip_bad, skipped=skipped)[sp]
                 for sp in SPLITS if len(index[sp].labels)]
        out["all"] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    for split in splits:
        if split == "all":
            continue
        f = cache_dir() / f"features-{key}-{split}.npz"
        if f.is_file():
            with np.load(f) as z:
                out[split] = (z["x"], z["y"])
                skipped += [str(m) for m in z["skipped"]] if "skipped" in z.files else []
            continue
        clips = index[split]
        if not len(clips.labels):
            raise S2EmuError(f"{corpus.path}: the {split} split is empty (check validation_list.txt and "
                             f"testing_list.txt, or evaluate every clip with test_split = 'all' / --split all)")
        bar = ProgressBar(f"{split} features", unit="(read + featurize)", enabled=sys.stderr.isatty())
        bar.start(2 * len(clips.labels))
        bad = []
        try:
            audio, ok = load_split(corpus, clips, split, spec, seed=seed, advance=bar.advance,
                                   skipped=bad if skip_bad else None)
            x = batch_features(audio[ok], spec, advance=bar.advance)
        finally:
            bar.stop()
        if not ok.any():
            raise S2EmuError(f"{corpus.path}: every clip of the {split} split is unreadable (first: {bad[0]})")
        out[split] = (x, clips.labels[ok])
        skipped += bad
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(".tmp.npz")
            np.savez(tmp, x=x, y=clips.labels[ok], skipped=np.array(bad, dtype=str))
            os.replace(tmp, f)
        except OSError:
            pass  # a read-only cache only costs time
    return out
