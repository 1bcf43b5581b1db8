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

Features are cached (`cache_dir()`) under a key made of the corpus's content (a SHA-256 of an archive's bytes,
or of a folder's WAV files and lists: ~10 ms for the bundled 7.6 MB archive, ~80 ms for its 1,586 clips and 5
noise files, 52 MB, as a folder), the feature parameters, words and seed, so a changed or damaged clip is read
again. An archive is read whole before use:
one that is cut short or damaged is refused, never read as the smaller corpus before the damage.
"""

from __future__ import annotations

import csv
import hashlib
import io
import lzma
import os
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from s2emu.atomic import write_atomically
from s2emu.errors import S2EmuError
from s2emu.progress import ProgressBar

from .audio import AudioError, fit_length, parse_wav
from .augment import augmented_features
from .features import FeatureSpec, batch_features

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
NOISE_DIR = "_background_noise_"
SPLITS = ("train", "validation", "test")
_NOISE_PARTS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}


def class_names(words=COMMANDS) -> tuple[str, ...]:
    return (SILENCE, UNKNOWN, *words)


# What a damaged archive raises while it is decompressed or read (gzip.BadGzipFile and bz2 errors are OSErrors).
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error)
# No clip or noise recording comes near this; a bigger file (an archive member that expands to gigabytes of
# zeros, say) is refused before it is read into memory.
MAX_FILE_BYTES = 1 << 30


class _LastHeader(tarfile.TarInfo):
    """Keeps the last header block parsed: the one an archive's reading stopped at, when it has stopped."""
    last_block = b""

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        cls.last_block = buf
        return super().frombuf(buf, encoding, errors)


def _archive_problem(e: BaseException, kind: str = "") -> str:
    if isinstance(e, EOFError) or any(w in str(e) for w in ("unexpected end of data", "truncated")):
        return f"truncated {kind}archive (it ends in the middle of its data)"
    return f"corrupt {kind}archive ({e})"


class Corpus:
    """Read access to a corpus folder or tar archive: relative POSIX paths -> bytes."""

    def __init__(self, path):
        self.path = Path(path)
        if self.path.is_dir():
            self._tar = None
            self.files = sorted(str(PurePosixPath(p.relative_to(self.path))) for p in self.path.rglob("*")
                                if p.is_file())
        elif self.path.is_file():
            header = type("Header", (_LastHeader,), {})  # this archive's own record of its last header
            self._tar = self._open(header)
            try:
                members = [m for m in self._tar.getmembers() if m.isfile()]
                self._check_end(header.last_block)
            except _ARCHIVE_ERRORS as e:
                raise S2EmuError(f"{self.path}: {_archive_problem(e)}") from None
            names = [PurePosixPath(m.name) for m in members]
            # an archive of one top folder (kws_synth/yes/...) is read relative to that folder
            tops = {n.parts[0] for n in names}
            strip = len(tops) == 1 and all(len(n.parts) >= 3 for n in names if n.suffix == ".wav")
            self._members = {str(PurePosixPath(*n.parts[strip:])): m for n, m in zip(names, members)}
            self.files = sorted(self._members)
        else:
            raise S2EmuError(f"no speech corpus at '{path}' (a Speech Commands folder or .tar.gz/.tar.xz archive)")

    def _open(self, header) -> tarfile.TarFile:
        """The archive, opened as its first bytes say it is compressed (so damage is named, not reported as
        every format tarfile tried failing)."""
        try:
            with self.path.open("rb") as f:
                magic = f.read(6)
        except OSError as e:
            raise S2EmuError(f"{self.path}: cannot read ({e.strerror or e})") from None
        if not magic:
            raise S2EmuError(f"{self.path}: empty file, not a corpus folder or tar archive")
        for start, mode, kind in ((b"\x1f\x8b", "r:gz", "gzip"), (b"\xfd7zXZ\x00", "r:xz", "xz"),
                                  (b"BZh", "r:bz2", "bzip2"), (b"", "r:", "")):
            if magic.startswith(start):
                break
        try:
            return tarfile.open(self.path, mode, tarinfo=header)
        except _ARCHIVE_ERRORS as e:
            if not kind:
                raise S2EmuError(f"{self.path}: not a corpus folder or tar archive (.tar, .tar.gz, .tgz, "
                                 f".tar.xz, .tar.bz2; {e})") from None
            raise S2EmuError(f"{self.path}: {_archive_problem(e, kind + '-compressed ')}") from None

    def _check_end(self, block: bytes) -> None:
        """tarfile ends an archive without a word at the first header block it cannot read (`block`), so a
        damaged or cut archive would pass for a smaller corpus. That block, and all that follows it up to the
        end of the stream, must be the end-of-archive zero blocks; reading them through also checks a gzip or
        xz stream's checksum."""
        n, at = len(self._tar.getmembers()), self._tar.offset
        if len(block) < tarfile.BLOCKSIZE:  # the end-of-archive marker is missing: cut at or in a header
            raise S2EmuError(f"{self.path}: truncated archive (its tar stream ends at byte {at + len(block):,}, "
                             f"after {n} members, without the end-of-archive marker)")
        chunk = block
        while chunk:
            if chunk.count(0) != len(chunk):
                raise S2EmuError(f"{self.path}: corrupt archive (unreadable tar header at byte {at:,} of its tar "
                                 f"stream, after {n} members)")
            chunk = self._tar.fileobj.read(1 << 20)

    def size(self, rel: str) -> int:
        return self._members[rel].size if self._tar is not None else (self.path / rel).stat().st_size

    def read(self, rel: str) -> bytes:
        """A file's bytes. A folder's file that cannot be read, or is too big to be a clip, is an AudioError
        (skip_bad leaves it out); an archive that fails while it is read is damaged: an S2EmuError."""
        try:
            size = self.size(rel)
            if size > MAX_FILE_BYTES:
                raise AudioError(f"{rel}: {size:,} bytes, more than any clip or noise recording "
                                 f"(at most {MAX_FILE_BYTES:,})")
            if self._tar is None:
                return (self.path / rel).read_bytes()
        except OSError as e:
            raise AudioError(f"{rel}: cannot read ({e.strerror or e})") from None
        try:
            return self._tar.extractfile(self._members[rel]).read()
        except _ARCHIVE_ERRORS as e:
            raise S2EmuError(f"{self.path}: {_archive_problem(e)} while reading {rel}") from None

    def reading_order(self, rels: list) -> list[int]:
        """Indices of `rels` in the order they are cheapest to read: an archive's own order (a compressed
        stream seeks backwards by decompressing again from its start, so reading in any other order costs
        time quadratic in the archive's size: minutes for the bundled corpus), else as given."""
        if self._tar is None:
            return list(range(len(rels)))
        return sorted(range(len(rels)), key=lambda i: self._members[rels[i]].offset_data)

    def exists(self, rel: str) -> bool:
        return rel in self._members if self._tar is not None else (self.path / rel).is_file()

    def content_digest(self) -> str:
        """A hash of everything the features are made of: an archive's bytes, or the name, size and bytes of
        each of a folder's WAV files and split lists. Content, not names, sizes or times: a clip rewritten in
        place, a copy of the corpus with other samples, or a file damaged since, never reuse old features."""
        h = hashlib.sha256()  # OpenSSL's, with the CPU's SHA instructions: ~2.5x blake2b's speed here
        if self._tar is not None:
            h.update(b"archive\0")
            try:
                with self.path.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            except OSError as e:
                raise S2EmuError(f"{self.path}: cannot read ({e.strerror or e})") from None
            return h.hexdigest()
        h.update(b"folder\0")
        for rel in self.files:
            if not (rel.endswith(".wav") or rel in ("validation_list.txt", "testing_list.txt")):
                continue  # nothing else is read
            h.update(rel.encode() + b"\0")
            try:
                with (self.path / rel).open("rb") as f:
                    n = 0
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                        n += len(chunk)
                h.update(b"\0%d\0" % n)  # the lengths keep one file's end from passing for the next's start
            except OSError as e:  # what reading it will say: skipped or refused as it would be uncached
                h.update(f"\0unreadable {e.errno}\0".encode())
        return h.hexdigest()


CLIP_MANIFEST = "manifest.csv"  # written by s2emu synth (host/synth.py): a row per clip
MANIFEST_NEEDS = ("path", "split", "word", "engine", "voice")


def clip_manifest(corpus: Corpus) -> dict[str, dict] | None:
    """{clip path: its manifest.csv row (split, word, engine, voice, variation drawn)}, or None when the corpus
    has no manifest (the Google corpus, or one synthesized before manifests existed)."""
    if not corpus.exists(CLIP_MANIFEST):
        return None
    try:
        text = corpus.read(CLIP_MANIFEST).decode("utf-8")
    except (AudioError, UnicodeDecodeError) as e:
        raise S2EmuError(f"{corpus.path}: {CLIP_MANIFEST} cannot be read as UTF-8 text ({e})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in MANIFEST_NEEDS if c not in (reader.fieldnames or ())]
    if missing:
        raise S2EmuError(f"{corpus.path}: {CLIP_MANIFEST} has no column {', '.join(missing)}")
    return {row["path"]: row for row in reader}


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
        if not corpus.exists(fname):
            listed[split] = set()
            continue
        try:
            listed[split] = set(corpus.read(fname).decode("utf-8").split())
        except UnicodeDecodeError as e:
            raise S2EmuError(f"{corpus.path}: {fname} is not a UTF-8 text list of clips ({e.reason} at byte "
                             f"{e.start})") from None
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
    return Path(os.environ.get("S2EMU_CACHE") or Path.home() / ".cache" / "s2emu")  # set but empty: the default


_CACHE_FORMAT = 2  # 2: keyed by the corpus's content (1 was keyed by its file names and sizes)
_CACHE_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, MemoryError)


def _cached(f: Path, spec: FeatureSpec, n_classes: int):
    """(x, y, skipped) of a cache entry, or None if it is missing or is not what this code writes (cut short,
    damaged, another format): then the features are computed again, as if there were no cache."""
    if not f.is_file():
        return None
    try:
        with np.load(f, allow_pickle=False) as z:
            x, y, skipped = z["x"], z["y"], z["skipped"]
    except _CACHE_READ_ERRORS:
        return None
    if x.dtype != np.float32 or x.ndim != 3 or x.shape[1:] != (spec.frames, spec.channels) \
            or y.dtype != np.int64 or y.shape != (len(x),) or skipped.dtype.kind != "U" or skipped.ndim != 1 \
            or not len(x) or y.min() < 0 or y.max() >= n_classes:
        return None  # (damaged bytes fail np.load: zip entries carry a CRC)
    return x, y, [str(m) for m in skipped]


def _save_cache(f: Path, **arrays) -> None:
    """Write a cache entry atomically, through a temporary file of its own (two processes filling the same
    entry must not write into one temporary file)."""
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(f, lambda out: np.savez(out, **arrays))
    except OSError:
        pass  # a read-only or full cache only costs time


def _split_features(corpus: Corpus, clips: ClipList, split: str, spec: FeatureSpec, *, seed: int,
                    skip_bad: bool, augment: tuple = (0, ())) -> tuple[np.ndarray, np.ndarray, list]:
    """(features, labels, skipped "path: reason") of the clips of one split, computed; augment = (copies,
    names): that many augmented copies of every clip follow the clips themselves (host/augment.py)."""
    if not len(clips.labels):
        raise S2EmuError(f"{corpus.path}: the {split} split is empty (check validation_list.txt and "
                         f"testing_list.txt, or evaluate every clip with test_split = 'all' / --split all)")
    copies, names = augment
    bar = ProgressBar(f"{split} features" + (f" + {copies} augmented copies" if copies else ""),
                      unit="(read + featurize)", enabled=sys.stderr.isatty())
    bar.start((2 + copies) * len(clips.labels))
    bad = []
    try:
        audio, ok = load_split(corpus, clips, split, spec, seed=seed, advance=bar.advance,
                               skipped=bad if skip_bad else None)
        x = batch_features(audio[ok], spec, advance=bar.advance)
        if copies:
            noises = [n[:int(_NOISE_PARTS["train"][1] * len(n))] for n in _noise(corpus, spec.sample_rate)]
            xa, _ = augmented_features(audio[ok], clips.labels[ok], spec, copies=copies, names=names, seed=seed,
                                       noises=noises, advance=bar.advance)
            x = np.concatenate([x, xa])
    except MemoryError:  # a recipe's sample_rate, hop and n_mels make the arrays; the corpus makes N
        n = len(clips.labels)
        need = n * 4 * (spec.clip_samples + spec.frames * spec.channels)
        raise S2EmuError(f"{corpus.path}: not enough memory for the {split} split: {n:,} clips of "
                         f"{spec.clip_samples:,} samples and {spec.frames:,} frames x {spec.channels} channels "
                         f"need {need / 2**30:,.1f} GiB (data.sample_rate, data.hop, data.n_mels)") from None
    finally:
        bar.stop()
    if not ok.any():
        raise S2EmuError(f"{corpus.path}: every clip of the {split} split is unreadable (first: {bad[0]})")
    return x, np.tile(clips.labels[ok], 1 + copies), bad


def load_features(path, spec: FeatureSpec, words=COMMANDS, *, seed: int = 0, splits=("train", "test"),
                  skip_bad: bool = False, skipped: list | None = None,
                  augment: tuple = (0, ())) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (features [N, frames, channels] float32, labels [N])}, cached on disk by the corpus's content.
    Work not in the cache shows a progress bar when stderr is a terminal (the full corpus takes minutes).
    skip_bad: leave out clips that cannot be read, and append their "path: reason" to `skipped` (the cache
    keeps that list with the features, so a cached load lists the same files)."""
    corpus = Corpus(path)
    key = hashlib.sha256(repr((corpus.content_digest(), spec.to_dict(), tuple(words), seed, _CACHE_FORMAT,
                               skip_bad)).encode()).hexdigest()[:24]
    skipped = [] if skipped is None else skipped
    index = index_splits(corpus, words)
    # "all": every clip of the corpus, the three splits (each with its silence windows) that have clips
    parts = [sp for s in splits for sp in ([sp for sp in SPLITS if len(index[sp].labels)] if s == "all" else [s])]
    done = {}
    for split in dict.fromkeys(parts):
        aug = augment if split == "train" and augment[0] else (0, ())
        tag = hashlib.sha256(repr(aug).encode()).hexdigest()[:8] if aug[0] else ""
        f = cache_dir() / f"features-{key}-{split}{'-aug' + tag if tag else ''}.npz"
        got = _cached(f, spec, len(class_names(words)))
        if got is None:
            got = _split_features(corpus, index[split], split, spec, seed=seed, skip_bad=skip_bad, augment=aug)
            _save_cache(f, x=got[0], y=got[1], skipped=np.array(got[2], dtype=str))
        done[split] = got[:2]
        skipped += got[2]
    out = {}
    for s in splits:
        if s == "all":
            have = [done[sp] for sp in SPLITS if len(index[sp].labels)]
            out[s] = (np.concatenate([p[0] for p in have]), np.concatenate([p[1] for p in have]))
        else:
            out[s] = done[s]
    return out
