"""Synthesize a Speech Commands-style keyword corpus with espeak-ng, flite, festival or pico, deterministically.

    python -m s2emu.host.synth OUT_DIR [--seed 0] [--repeats 1] [--unknown-per-voice 3] [--noisy-fraction 0.4]
        [--snr-db 15 35] [--bits 10] [--engines espeak-ng,flite,festival,pico] [--voices-train V,V,..]
        [--voices-test V,..] [--force] [--archive X.tar.xz]

The defaults make the bundled corpus (data/kws_synth.tar.xz):
    python -m s2emu.host.synth /tmp/kws_synth --archive data/kws_synth.tar.xz

The corpus looks like the real one, so one loader reads both::

    OUT_DIR/yes/1a2b3c4d_nohash_0.wav     one folder per word (10 commands + 20 "unknown" words of v1)
    OUT_DIR/_background_noise_/*.wav      white, pink, brown, running water, 50 Hz hum (cut into silence clips)
    OUT_DIR/validation_list.txt           relative paths `word/file.wav`, one per line
    OUT_DIR/testing_list.txt              every clip of the held-out (test) voices
    OUT_DIR/MANIFEST.json                 seed, generator version, voices per split, counts, licence note
    OUT_DIR/manifest.csv                  a row per clip: path, split, word, engine, voice, variation drawn

Every clip is 16 kHz mono 16-bit PCM, exactly 16,000 samples. A *voice* is an espeak-ng accent plus a
variant, `"en-gb-scotland+f3"`; its 8-hex speaker id is the start of the SHA-256 of that string, so a
file name (`<id>_nohash_<k>.wav`, k = repetition of the word by that voice) names its voice as in the
real corpus. Train and test voices have DISJOINT variant sets (test speakers are unseen timbres; the
accents are shared, as every accent is needed in both splits), and `synthesize` refuses overlap.

Validation: `validation_list.txt` lists the clips of `voices_val` (default none, so the file is empty).
The bundled corpus must fit in a few MB; every training voice is worth more as training data than as a
validation set, and the held-out test voices already measure generalization to unseen speakers. A user
who wants model selection without touching the test split passes `voices_val` (voices whose variants are
not test variants; their clips are then in no other split, as the Speech Commands loader expects).

Other engines (issue 20): a voice "flite:slt", "festival:ked_diphone" or "pico:en-GB" (ENGINE_VOICES lists
each engine's train and test voices). The engine speaks the word at its default; sox changes its tempo and
pitch, drawn per clip like espeak-ng's knobs; then the same post-processing. Their output is bit-identical
for a seed for one version of the engine and of sox (recorded in the manifest under "engines"). An
espeak-ng-only corpus has the MANIFEST.json it always had, so the defaults still remake the bundled corpus
(plus manifest.csv, which it predates).

Per clip, a numpy Generator seeded by (seed, voice, word, k) draws the espeak-ng speed (120-220 wpm),
pitch (0-99) and amplitude (-a 40-110), the peak level (gain, -20 to -4 dBFS), the word's onset inside
the 1 s window (the trimmed word always fits; a word too long at a slow speed is re-spoken 25 % faster),
whether it is noisy (`noisy_fraction`), and then a noise type (the five above, a fresh segment) and an
SNR drawn uniformly from `snr_db`. Nothing depends on the order clips are made in, so the output is
bit-identical for a seed whatever `workers` is (for one espeak-ng version: it is recorded in the manifest).

The pipeline per clip: espeak-ng `--stdout` (22,050 Hz 16-bit WAV; argv list, no shell, a timeout)
-> host.audio.resample to 16 kHz -> trim leading/trailing silence (< 0.5 % of the peak, 10 ms margin,
3 ms fades) -> scale to the peak level -> place at the onset -> add noise -> round to `bits` -> 16-bit PCM.

Size, the reason for the defaults: a 1 s WAV is 32,044 bytes whatever it holds, so a folder of clips is
~32 KB a clip; as .tar.xz (`pack`) the zeros around a clean word cost almost nothing, but noise does not
compress. Measured per clip with xz preset 9, SNR 15-35 dB: clean 8.4 KB at 16 bits, 4.4 KB at 11, 3.6 KB
at 10; noisy 10.6 KB at 12 bits, 8.4 KB at 11, 6.4 KB at 10. With the defaults (10 bits, 40 % noisy) the
1,586 clips (98 voices x 10 commands + 294 unknown for training, 24 x 10 + 72 for testing) take 4.5 KB
each, the five 10 s noise files 0.46 MB: 7.63 MB in all. Rounding to 10 bits puts the rounding noise ~42 dB
or more below each clip's peak; the log-mel features of host.features (log1p of power relative to the
clip's maximum) do not see it (a linear classifier scores the same on 9-bit and 16-bit test clips). It
also rounds away the faintest mixed-in noise (quiet word, SNR near 35 dB): in the bundled corpus 5 of the
646 noisy clips come out clean and 76 keep only a sparse residue under half a step. Loaders can add more
noise at training time from _background_noise_, which is cheaper than storing noisy clips.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import json
import lzma
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from s2emu.atomic import write_atomically
from s2emu.errors import S2EmuError

from .audio import AudioError, parse_wav, read_wav, resample, write_wav

GENERATOR = "s2emu.host.synth"
VERSION = 1  # bump whenever the output for a given seed changes
RATE = 16_000
CLIP = 16_000  # samples per clip (1 s)

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
                 "seven", "sheila", "six", "three", "tree", "two", "wow", "zero")
NOISES = ("white", "pink", "brown", "running_water", "hum_50hz")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")

# espeak-ng 1.51's variants (`espeak-ng --voices=variant`) without whisper, whisperf (unvoiced), fast (a test
# variant) and "Mr serious" (a space in its name), sorted case-insensitively; every 4th one is a test variant.
# Written out rather than computed, so a newer espeak-ng with more variants does not move the split.
TRAIN_VARIANTS = (
    "adam", "Alex", "Alicia", "Andy", "anika", "anikaRobot", "announcer", "antonio", "AnxiousAndy", "belinda",
    "benjamin", "boris", "croak", "david", "Demonic", "Diogo", "ed", "edward", "f1", "f2", "f3", "f5", "Gene",
    "Gene2", "grandpa", "gustave", "Henrique", "iven", "iven2", "iven3", "Jacky", "john", "kaukovalta", "klatt2",
    "klatt3", "klatt4", "klatt6", "Lee", "linda", "m2", "m3", "m4", "m6", "m7", "m8", "Marco", "Mario", "max",
    "michel", "miguel", "Mike", "norbert", "pablo", "paul", "quincy", "RicishayMax", "RicishayMax2", "rob",
    "robert", "robosoft", "robosoft3", "robosoft4", "robosoft5", "robosoft7", "robosoft8", "sandro", "steph",
    "steph2", "steph3", "travis", "Tweaky", "UniRobot", "zac")
TEST_VARIANTS = (
    "Andrea", "Annie", "aunty", "caleb", "Denis", "edward2", "f4", "grandma", "Hugo", "iven4", "klatt", "klatt5",
    "m1", "m5", "marcelo", "Michael", "Nguyen", "pedro", "RicishayMax3", "robosoft2", "robosoft6", "shelby",
    "Storm", "victor")

# Train: one voice per variant, the accents taken in turn, then every third variant again with another accent
# (73 + 25 = 98 voices). Test: one voice per test variant (24). Every accent is in both splits.
VOICES_TRAIN = (tuple(f"{ACCENTS[i % len(ACCENTS)]}+{v}" for i, v in enumerate(TRAIN_VARIANTS))
                + tuple(f"{ACCENTS[(i + 4) % len(ACCENTS)]}+{v}" for i, v in enumerate(TRAIN_VARIANTS) if i % 3 == 0))
VOICES_TEST = tuple(f"{ACCENTS[(i + 3) % len(ACCENTS)]}+{v}" for i, v in enumerate(TEST_VARIANTS))

SPEED_WPM = (120, 220)
PITCH = (0, 99)
AMPLITUDE = (40, 110)
PEAK_DBFS = (-20.0, -4.0)
NOISE_FILE_RMS = 0.02  # -34 dBFS: quiet files compress better; the loader scales silence windows anyway
ESPEAK_TIMEOUT = 30.0
LICENCE = ("Synthesized by s2emu.host.synth: speech from the espeak-ng synthesizer (a GPL-3.0-or-later program, "
           "run as a separate process) and noise generated with numpy. No recorded speech, no third-party audio "
           "files and no data from the Google Speech Commands corpus were used. Distributed with s2emu (MIT).")


OTHER_ENGINES_LICENCE = ("Speech of other engines, also run as separate programs or libraries: flite and the "
                         "festival voices (BSD-style and X11-style free licences), SVOX pico (Apache-2.0).")
CLIP_MANIFEST = "manifest.csv"
# one row per clip; a parameter another engine does not draw is empty (espeak-ng: speed, pitch, amplitude;
# flite, festival, pico: tempo, pitch_cents)
MANIFEST_COLUMNS = ("path", "split", "word", "engine", "voice", "speaker", "k", "speed", "pitch", "amplitude",
                    "tempo", "pitch_cents", "peak_dbfs", "onset", "length", "noise", "snr_db")


class SynthError(S2EmuError):
    """The corpus cannot be synthesized (espeak-ng missing or failing, bad knobs, occupied directory)."""


# ----------------------------------------------------------------------------------------------- voices


def speaker_id(voice: str) -> str:
    """8 hex digits naming a voice, as the Speech Commands speaker hashes do."""
    return hashlib.sha256(voice.encode()).hexdigest()[:8]


def _variant(voice: str) -> str:
    """What makes a voice's timbre: espeak-ng's variant, another engine's speaker (test ones must be unseen)."""
    if split_voice(voice)[0] != "espeak-ng":
        return SPEAKERS.get(voice, voice)
    return voice.split("+", 1)[1] if "+" in voice else "(no variant)"


def _check_voices(voices, what: str) -> tuple[str, ...]:
    if isinstance(voices, str):
        voices = tuple(v for v in voices.split(",") if v)
    voices = tuple(voices)
    for v in voices:
        if not isinstance(v, str) or not v or any(c.isspace() for c in v) or v.startswith("-"):
            raise SynthError(f"{what}: {v!r} is not a voice like 'en-us+f3' (espeak-ng) or 'flite:slt'")
        engine, name = split_voice(v)
        # another engine's name goes into a festival Scheme expression or an argv: plain characters only
        if engine not in ENGINES or (engine != "espeak-ng" and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)):
            raise SynthError(f"{what}: {v!r} is not a voice: 'NAME' (espeak-ng) or 'ENGINE:NAME' with ENGINE "
                             f"one of {', '.join(ENGINES[1:])}")
    if len(set(voices)) != len(voices):
        raise SynthError(f"{what}: a voice is listed twice")
    return voices


def _rng(seed: int, *key) -> np.random.Generator:
    """A Generator from the seed and a key of strings/ints, stable across runs, platforms and Python hashes."""
    digest = hashlib.sha256("\0".join(map(str, key)).encode()).digest()
    return np.random.default_rng([seed, *struct.unpack("<4I", digest[:16])])


# ----------------------------------------------------------------------------------------------- espeak-ng


def espeak_path() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SynthError("espeak-ng is not installed (on Debian/Ubuntu: apt-get install espeak-ng)")
    return path


def espeak_version() -> str:
    r = subprocess.run([espeak_path(), "--version"], capture_output=True, timeout=ESPEAK_TIMEOUT, check=False)
    return r.stdout.decode(errors="replace").split("Data at")[0].strip()


def speak(word: str, voice: str, *, speed: int, pitch: int, amplitude: int) -> tuple[np.ndarray, int]:
    """espeak-ng's float32 samples and sample rate for one word."""
    argv = [espeak_path(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude), "--stdout",
            "--", word]
    try:
        r = subprocess.run(argv, capture_output=True, timeout=ESPEAK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise SynthError(f"espeak-ng timed out after {ESPEAK_TIMEOUT:g} s: {' '.join(argv[1:])}") from None
    except OSError as e:
        raise SynthError(f"cannot run espeak-ng ({e})") from None
    if r.returncode != 0 or not r.stdout:
        msg = r.stderr.decode(errors="replace").strip() or f"exit status {r.returncode}, no audio"
        raise SynthError(f"espeak-ng failed for {word!r} with voice {voice!r}: {msg}")
    try:
        audio = parse_wav(_fix_stream_header(r.stdout), name=f"espeak-ng {voice} {word!r}")
    except AudioError as e:
        raise SynthError(str(e)) from None
    return audio.samples, audio.rate


def _fix_stream_header(data: bytes) -> bytes:
    """espeak-ng --stdout cannot seek back, so its RIFF and data sizes are placeholders (0x7ffff000)."""
    i = data.find(b"data", 12)
    if data[:4] != b"RIFF" or i < 0:
        return data  # parse_wav names the problem
    return (b"RIFF" + struct.pack("<I", len(data) - 8) + data[8:i] + b"data"
            + struct.pack("<I", len(data) - i - 8) + data[i + 8:])


def trim(x: np.ndarray, *, rel: float = 0.005, margin: int = 160, fade: int = 48, who: str = "espeak-ng") -> np.ndarray:
    """The word without leading/trailing silence (below rel x peak), a margin kept, faded in and out."""
    a = np.abs(x)
    peak = float(a.max()) if a.size else 0.0
    if peak == 0.0:
        raise SynthError(f"{who} produced silence")
    idx = np.flatnonzero(a > rel * peak)
    y = np.array(x[max(0, idx[0] - margin):idx[-1] + 1 + margin], np.float64)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, min(fade, len(y) // 2)))
    y[:len(ramp)] *= ramp
    y[len(y) - len(ramp):] *= ramp[::-1]
    return y


# ----------------------------------------------------------------------------------------------- other engines

# A voice of another engine is "engine:name" (a bare voice is espeak-ng's), so voice strings, and with them
# speaker ids and file names, never collide across engines. Train and test voices of each engine, written out
# so that installing more voices does not move the split; voices of one speaker (flite's kal and kal16,
# festival's kal_diphone; flite's slt and festival's cmu_us_slt_arctic_hts) are on the same side.
ENGINES = ("espeak-ng", "flite", "festival", "pico")
ENGINE_VOICES = {
    "flite": {"train": ("kal", "kal16", "rms"), "test": ("awb", "slt")},
    "festival": {"train": ("kal_diphone",), "test": ("ked_diphone", "cmu_us_slt_arctic_hts")},
    "pico": {"train": ("en-US",), "test": ("en-GB",)},
}
SPEAKERS = {"flite:kal": "kal", "flite:kal16": "kal", "festival:kal_diphone": "kal", "flite:slt": "slt",
            "festival:cmu_us_slt_arctic_hts": "slt"}
FESTIVAL_PACKAGES = {"kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k",
                     "cmu_us_slt_arctic_hts": "festvox-us-slt-hts", "lp_diphone": "festvox-italp16k",
                     "pc_diphone": "festvox-itapc16k"}
# pico's voices; those of other languages read the English words by their own language's rules (accented
# speakers), as do festival's Italian voices (lp_diphone, pc_diphone)
PICO_VOICES = ("en-US", "en-GB", "de-DE", "es-ES", "fr-FR", "it-IT")
FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices",)
TEMPO = (0.8, 1.25)  # sox tempo factor (speech rate) for engines other than espeak-ng
PITCH_CENTS = (-300, 300)  # sox pitch shift
ENGINE_TIMEOUT = 60.0  # festival loads its voice for every word: slower than espeak-ng


def split_voice(voice: str) -> tuple[str, str]:
    """(engine, the engine's own voice name) of a voice string."""
    engine, sep, name = voice.partition(":")
    return (engine, name) if sep else ("espeak-ng", voice)


def default_voices(engines, split: str) -> tuple[str, ...]:
    """The built-in train or test voices of the engines, engine by engine."""
    out = []
    for engine in engines:
        if engine == "espeak-ng":
            out += VOICES_TRAIN if split == "train" else VOICES_TEST
        else:
            out += [f"{engine}:{v}" for v in ENGINE_VOICES[engine][split]]
    return tuple(out)


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SynthError(f"{name} is not installed (on Debian/Ubuntu: apt-get install {package})")
    return path


def engine_version(engine: str, names) -> str:
    """The engine's version; fails in one line naming what to install when it, or one of its voices, is missing."""
    if engine == "espeak-ng":
        return espeak_version()
    if engine not in ENGINES:
        raise SynthError(f"unknown synthesizer engine {engine!r} (known: {', '.join(ENGINES)})")
    _tool("sox", "sox")  # tempo and pitch of every engine but espeak-ng
    if engine == "flite":
        r = subprocess.run([_tool("flite", "flite"), "-lv"], capture_output=True, timeout=ENGINE_TIMEOUT, check=False)
        have = set(r.stdout.decode(errors="replace").replace("Voices available:", "").split())
        for name in names:
            if name not in have:
                raise SynthError(f"flite has no voice {name!r} (it has: {', '.join(sorted(have))})")
        r = subprocess.run([_tool("flite", "flite"), "--version"], capture_output=True, timeout=ENGINE_TIMEOUT,
                           check=False)
        lines = [ln.strip() for ln in r.stdout.decode(errors="replace").splitlines() if "version" in ln]
        return lines[0].removeprefix("version:").strip() if lines else "flite"
    if engine == "festival":
        _tool("text2wave", "festival")
        for name in names:
            if not any(any(Path(d).glob(f"*/{name}")) for d in FESTIVAL_VOICE_DIRS):
                pkg = FESTIVAL_PACKAGES.get(name, "the festvox package of that voice")
                raise SynthError(f"festival voice {name!r} is not installed (on Debian/Ubuntu: apt-get install {pkg})")
        r = subprocess.run([_tool("festival", "festival"), "--version"], capture_output=True,
                           timeout=ENGINE_TIMEOUT, check=False)
        return r.stdout.decode(errors="replace").strip().rpartition("festival: ")[2] or "festival"
    try:
        import ttspico  # noqa: F401  (SVOX pico, an optional pip package)
    except ImportError:
        raise SynthError("SVOX pico is not installed (pip install ttspico)") from None
    for name in names:
        if name not in PICO_VOICES:
            raise SynthError(f"pico has no voice {name!r} (it has: {', '.join(PICO_VOICES)})")
    return "ttspico " + _package_version("ttspico")


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _run(argv: list, what: str) -> bytes:
    try:
        r = subprocess.run(argv, capture_output=True, timeout=ENGINE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise SynthError(f"{what} timed out after {ENGINE_TIMEOUT:g} s") from None
    except OSError as e:
        raise SynthError(f"cannot run {argv[0]} ({e})") from None
    if r.returncode != 0:
        msg = r.stderr.decode(errors="replace").strip().splitlines()
        raise SynthError(f"{what} failed: {msg[-1] if msg else f'exit status {r.returncode}'}")
    return r.stdout


_PICO_LOCK = threading.Lock()  # one pico engine at a time: its C library is not known to be thread-safe


@functools.lru_cache(maxsize=256)
def _engine_audio(engine: str, name: str, word: str) -> tuple[np.ndarray, int]:
    """The engine's float32 samples and rate for a word, unvaried (cached: only sox varies the repeats)."""
    if engine == "pico":
        import ttspico
        with _PICO_LOCK:
            pcm = ttspico.TtsEngine(name).speak(word) or b""
        return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, 16_000  # pico speaks 16 kHz 16-bit
    with tempfile.TemporaryDirectory(prefix="s2emu-synth-") as tmp:
        wav = Path(tmp) / "word.wav"
        if engine == "flite":
            _run([_tool("flite", "flite"), "-voice", name, "-t", word, "-o", str(wav)], f"flite {name} {word!r}")
        else:  # festival's text2wave reads the text from a file
            (Path(tmp) / "word.txt").write_text(word + "\n")
            _run([_tool("text2wave", "festival"), "-eval", f"(voice_{name})", "-o", str(wav),
                  str(Path(tmp) / "word.txt")], f"festival {name} {word!r}")
        try:
            audio = read_wav(wav)
        except AudioError as e:
            raise SynthError(f"{engine} {name} {word!r}: {e}") from None
    return audio.samples, audio.rate


def _sox_vary(x: np.ndarray, rate: int, tempo: float, cents: int) -> tuple[np.ndarray, int]:
    """x at another tempo (speech-aware WSOLA) and pitch, by sox; -D: no dither, so the output is
    deterministic; -G: gain guarded against clipping."""
    with tempfile.TemporaryDirectory(prefix="s2emu-sox-") as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        write_wav(src, np.clip(x, -1.0, 1.0), rate)
        _run([_tool("sox", "sox"), "-D", "-G", "-V1", str(src), "-e", "floating-point", "-b", "32", str(dst),
              "tempo", "-s", f"{tempo:.4f}", "pitch", str(cents)], "sox")
        try:
            audio = read_wav(dst)
        except AudioError as e:
            raise SynthError(f"sox: {e}") from None
    return audio.samples, audio.rate


# ----------------------------------------------------------------------------------------------- noise


def _shaped(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^exponent above 20 Hz."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spec *= np.where(f < 20.0, 0.0, np.maximum(f, 20.0) ** (-exponent / 2))
    return np.fft.irfft(spec, n)


def _band(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """Gaussian noise band-limited to [lo, hi] Hz."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    return np.fft.irfft(spec * ((f >= lo) & (f <= hi)), n)


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of one noise type at unit RMS."""
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _shaped(rng, n, 1.0)
    elif kind == "brown":
        x = _shaped(rng, n, 2.0)
    elif kind == "running_water":  # 400-4000 Hz noise whose amplitude bubbles at 2-12 Hz
        env = _band(rng, n, 2.0, 12.0)
        x = _band(rng, n, 400.0, 4000.0) * (1.0 + 0.6 * env / (np.abs(env).max() + 1e-12))
    elif kind == "hum_50hz":  # mains hum: 50 Hz and harmonics falling off, random phases, a little hiss
        t = np.arange(n) / RATE
        x = sum(rng.uniform(0.5, 1.0) / h * np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 2 * np.pi))
                for h in range(1, 9))
        x = x + 0.05 * rng.standard_normal(n)
    else:
        raise SynthError(f"unknown noise type {kind!r} (known: {', '.join(NOISES)})")
    x = np.asarray(x, np.float64)
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


# ----------------------------------------------------------------------------------------------- clips


def make_clip(seed: int, voice: str, word: str, k: int, *, noisy_fraction: float, snr_db) -> tuple[np.ndarray, dict]:
    """One 1 s clip (float64 [CLIP]) and the parameters drawn for it."""
    engine, name = split_voice(voice)
    rng = _rng(seed, "clip", voice, word, k)
    if engine != "espeak-ng":
        return _make_other_clip(rng, engine, name, word, noisy_fraction=noisy_fraction, snr_db=snr_db)
    speed = int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1))
    pitch = int(rng.integers(PITCH[0], PITCH[1] + 1))
    amplitude = int(rng.integers(AMPLITUDE[0], AMPLITUDE[1] + 1))
    peak_db = float(rng.uniform(*PEAK_DBFS))
    u_onset, u_noisy = float(rng.random()), float(rng.random())
    kind = NOISES[int(rng.integers(len(NOISES)))]
    snr = float(rng.uniform(*snr_db))
    for _ in range(6):
        x, rate = speak(word, voice, speed=speed, pitch=pitch, amplitude=amplitude)
        w = trim(resample(x, rate, RATE))
        if len(w) <= CLIP:
            break
        speed = round(speed * 1.25)  # too long for 1 s at this speed: say it faster
    else:
        raise SynthError(f"{word!r} by {voice!r} does not fit in 1 s even at {speed} wpm")
    params = {"speed": speed, "pitch": pitch, "amplitude": amplitude}
    return _place(w, rng, params, peak_db=peak_db, u_onset=u_onset, noisy=u_noisy < noisy_fraction, kind=kind,
                  snr=snr)


def _make_other_clip(rng, engine: str, name: str, word: str, *, noisy_fraction: float, snr_db):
    """make_clip for flite, festival and pico: the engine's own voice, then sox's tempo and pitch shift (the
    same two knobs on every engine), then the post-processing espeak-ng's clips get."""
    tempo = float(rng.uniform(*TEMPO))
    cents = int(rng.integers(PITCH_CENTS[0], PITCH_CENTS[1] + 1))
    peak_db = float(rng.uniform(*PEAK_DBFS))
    u_onset, u_noisy = float(rng.random()), float(rng.random())
    kind = NOISES[int(rng.integers(len(NOISES)))]
    snr = float(rng.uniform(*snr_db))
    x, rate = _engine_audio(engine, name, word)
    for _ in range(6):
        w = trim(resample(*_sox_vary(x, rate, tempo, cents), RATE), who=engine)
        if len(w) <= CLIP:
            break
        tempo = round(tempo * 1.25, 4)  # too long for 1 s at this tempo: say it faster
    else:
        raise SynthError(f"{word!r} by {engine}:{name} does not fit in 1 s even at tempo {tempo:g}")
    params = {"tempo": round(tempo, 4), "pitch_cents": cents}
    return _place(w, rng, params, peak_db=peak_db, u_onset=u_onset, noisy=u_noisy < noisy_fraction, kind=kind,
                  snr=snr)


def _place(w: np.ndarray, rng, params: dict, *, peak_db: float, u_onset: float, noisy: bool, kind: str, snr: float):
    """The trimmed word at its level and onset in a 1 s clip, noise mixed in if drawn; (clip, params)."""
    w *= 10 ** (peak_db / 20) / np.abs(w).max()
    onset = int(u_onset * (CLIP - len(w) + 1))
    clip = np.zeros(CLIP)
    clip[onset:onset + len(w)] = w
    params = {**params, "peak_dbfs": round(peak_db, 2), "onset": onset, "length": len(w), "noise": None,
              "snr_db": None}
    if noisy:
        rms = np.sqrt(np.mean(w * w))
        clip += noise(kind, CLIP, rng) * rms / 10 ** (snr / 20)
        params.update(noise=kind, snr_db=round(snr, 2))
        clip *= min(1.0, 0.99 / np.abs(clip).max())  # a loud word plus strong noise is scaled, never clipped
    return clip, params


def requantize(x: np.ndarray, bits: int) -> np.ndarray:
    """Samples rounded to `bits` bits (a multiple of 2^(16-bits) in 16-bit PCM), clipped to the 16-bit range."""
    step = 2.0 ** (1 - bits)
    return np.clip(np.round(np.asarray(x, np.float64) / step) * step, -1.0, 1.0 - step)


def per_engine(value, voice: str) -> int:
    """A count given for every voice (an int) or per engine ({engine: int}, 0 for an engine not named)."""
    return value.get(split_voice(voice)[0], 0) if isinstance(value, dict) else value


def _plan(voices_train, voices_test, voices_val, repeats, unknown_per_voice, seed: int):
    """(split, voice, word, k) for every clip. Unknown words go round a seeded order of the 20 words,
    continued from voice to voice within a split, so each split covers them evenly. repeats and
    unknown_per_voice: an int, or {engine: int} (engines with few voices say each word more often)."""
    order = [UNKNOWN_WORDS[i] for i in _rng(seed, "unknown-order").permutation(len(UNKNOWN_WORDS))]
    plan = []
    for split, voices in (("train", voices_train), ("validation", voices_val), ("test", voices_test)):
        turn = 0
        for voice in voices:
            for word in COMMANDS:
                plan += [(split, voice, word, k) for k in range(per_engine(repeats, voice))]
            seen: dict[str, int] = {}
            for _ in range(per_engine(unknown_per_voice, voice)):
                word = order[turn % len(order)]
                turn += 1
                plan.append((split, voice, word, seen.get(word, 0)))
                seen[word] = seen.get(word, 0) + 1
    return plan


# ----------------------------------------------------------------------------------------------- corpus


def _check_out(out: Path, force: bool) -> None:
    """Refuse an out_dir that is a file, or not empty (without force, or with force if it is not ours)."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        raise SynthError(f"{out} is not empty; choose an empty directory or pass force=True (--force)")
    try:
        ours = json.loads((out / "MANIFEST.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise SynthError(f"{out} is not empty and has no MANIFEST.json written by {GENERATOR}; "
                         f"refusing to delete anything in it even with force: choose an empty directory")


def _clear(out: Path) -> None:
    """Remove what an earlier corpus wrote (only our names; other files are left alone)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (*COMMANDS, *UNKNOWN_WORDS, "_background_noise_"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in ("validation_list.txt", "testing_list.txt", "MANIFEST.json", CLIP_MANIFEST):
        (out / name).unlink(missing_ok=True)


def synthesize(out_dir, *, seed: int = 0, voices_train=VOICES_TRAIN, voices_test=VOICES_TEST, voices_val=(),
               repeats: int = 1, unknown_per_voice: int = 3, noisy_fraction: float = 0.4,
               snr_db: tuple[float, float] = (15.0, 35.0), bits: int = 10, noise_seconds: float = 10.0,
               workers: int = 2, force: bool = False, progress=None) -> dict:
    """Write a Speech-Commands-style corpus to out_dir and return its manifest (also in MANIFEST.json).

    seed: int >= 0; the output is bit-identical for a seed (and espeak-ng version).
    voices_train, voices_test, voices_val: espeak-ng voices "accent+variant"; the variants of the test voices
        must not be used by any train or validation voice.
    repeats: clips of each command word per voice (k = 0..repeats-1); an int, or {engine: int} (an engine
        not named: 0), so engines with few voices can say each word more often.
    unknown_per_voice: clips of "unknown" words per voice, the words taken in turn (see `_plan`); an int or
        {engine: int} as repeats.
    noisy_fraction: share of clips with background noise mixed in; the others are clean.
    snr_db: (lo, hi) range of the speech-to-noise ratio of noisy clips, in dB (speech RMS over the word).
    bits: effective resolution, 8-16: every sample is rounded to a multiple of 2^(16-bits) LSB (the files
        stay 16-bit PCM); fewer bits compress much better (see the module docstring). 16 = no rounding.
    noise_seconds: length of each _background_noise_ file (RMS -34 dBFS). host.speech_commands cuts 1 s
        silence windows from the last 10 % of each file for the test split, so it needs >= 10 s.
    workers: threads running espeak-ng (output does not depend on it).
    force: overwrite a non-empty out_dir, but only one holding an earlier corpus of this generator.
    progress: called as progress(done, total) after each clip, from the calling thread.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SynthError(f"seed must be an int >= 0, got {seed!r}")
    seed = int(seed)
    voices_train = _check_voices(voices_train, "voices_train")
    voices_test = _check_voices(voices_test, "voices_test")
    voices_val = _check_voices(voices_val, "voices_val")
    if not voices_train and not voices_test and not voices_val:
        raise SynthError("no voices")
    test_variants = {_variant(v) for v in voices_test}
    for name, vs in (("voices_train", voices_train), ("voices_val", voices_val)):
        shared = sorted(test_variants & {_variant(v) for v in vs})
        if shared:
            raise SynthError(f"{name} and voices_test share the variant(s) {', '.join(shared)}; "
                             f"test voices must be unseen timbres")
    ids = {}
    for v in (*voices_train, *voices_val, *voices_test):
        if ids.setdefault(speaker_id(v), v) != v:
            raise SynthError(f"voice {v!r} is listed in two splits (or its speaker id collides)")
    # upper bounds: a corpus plan is a list of every clip, so 10**11 repeats would fill the memory first
    counts_of = {"repeats": repeats, "unknown_per_voice": unknown_per_voice}
    for name, val, lo, hi in (("repeats", repeats, 1, 1000), ("unknown_per_voice", unknown_per_voice, 0, 1000),
                              ("workers", workers, 1, 256)):
        for key, v in (val.items() if name in counts_of and isinstance(val, dict) else [(None, val)]):
            if key is not None and key not in ENGINES:
                raise SynthError(f"{name}: unknown engine {key!r} (known: {', '.join(ENGINES)})")
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not (0 if key else lo) <= v <= hi:
                raise SynthError(f"{name}{f'[{key}]' if key else ''} must be an int in [{0 if key else lo}, "
                                 f"{hi}], got {v!r}")
    repeats, unknown_per_voice = ({k: int(v) for k, v in c.items()} if isinstance(c, dict) else int(c)
                                  for c in (repeats, unknown_per_voice))
    if not 0.0 <= noisy_fraction <= 1.0:
        raise SynthError(f"noisy_fraction must be in [0, 1], got {noisy_fraction!r}")
    lo, hi = (float(s) for s in snr_db)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise SynthError(f"snr_db must be a finite (lo, hi) with lo <= hi, got {snr_db!r}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 8 <= bits <= 16:
        raise SynthError(f"bits must be an int in [8, 16], got {bits!r}")
    if not 0.1 <= noise_seconds <= 600:
        raise SynthError(f"noise_seconds must be in [0.1, 600], got {noise_seconds!r}")
    out = Path(out_dir)
    _check_out(out, force)
    used: dict[str, list] = {}
    for v in (*voices_train, *voices_val, *voices_test):
        used.setdefault(split_voice(v)[0], []).append(split_voice(v)[1])
    # fail early and clearly when an engine, or a voice of it, is missing
    versions = {engine: engine_version(engine, names) for engine, names in sorted(used.items())}
    version = versions.get("espeak-ng")
    _clear(out)
    plan = _plan(voices_train, voices_test, voices_val, repeats, unknown_per_voice, seed)
    manifest = {"generator": GENERATOR, "version": VERSION, "complete": False}
    (out / "MANIFEST.json").write_text(json.dumps(manifest) + "\n")  # marks the folder as ours while writing

    bg = out / "_background_noise_"
    bg.mkdir()
    for kind in NOISES:
        x = NOISE_FILE_RMS * noise(kind, round(noise_seconds * RATE), _rng(seed, "background", kind))
        write_wav(bg / f"{kind}.wav", requantize(x / max(1.0, np.abs(x).max() / 0.99), bits), RATE)
    for word in sorted({w for _, _, w, _ in plan}):
        (out / word).mkdir()

    def one(item):
        _, voice, word, k = item
        clip, params = make_clip(seed, voice, word, k, noisy_fraction=noisy_fraction, snr_db=(lo, hi))
        write_wav(out / word / f"{speaker_id(voice)}_nohash_{k}.wav", requantize(clip, bits), RATE)
        return params

    pool = ThreadPoolExecutor(max_workers=int(workers))
    drawn = {}
    try:
        futures = {pool.submit(one, item): item for item in plan}
        for done, future in enumerate(as_completed(futures), 1):
            drawn[futures[future]] = future.result()  # the first failure stops the run; the rest are cancelled
            if progress is not None:
                progress(done, len(plan))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    lists = {"validation": [], "test": []}
    counts: dict[str, dict[str, int]] = {}
    for split, voice, word, k in plan:
        if split in lists:
            lists[split].append(f"{word}/{speaker_id(voice)}_nohash_{k}.wav")
        counts.setdefault(word, {"train": 0, "validation": 0, "test": 0})[split] += 1
    (out / "validation_list.txt").write_text("".join(p + "\n" for p in sorted(lists["validation"])))
    (out / "testing_list.txt").write_text("".join(p + "\n" for p in sorted(lists["test"])))
    write_clip_manifest(out / CLIP_MANIFEST, plan, drawn)

    manifest = {
        "generator": GENERATOR, "version": VERSION, "complete": True, "seed": seed, "espeak_ng": version,
        "licence": LICENCE,
        "format": "16 kHz mono 16-bit PCM WAV, 16000 samples per clip; Speech Commands v1 layout",
        "commands": list(COMMANDS), "unknown_words": list(UNKNOWN_WORDS),
        "knobs": {"repeats": repeats, "unknown_per_voice": unknown_per_voice,
                  "noisy_fraction": noisy_fraction, "snr_db": [lo, hi], "bits": int(bits),
                  "noise_seconds": noise_seconds},
        "per_clip": {"speed_wpm": list(SPEED_WPM), "pitch": list(PITCH), "amplitude": list(AMPLITUDE),
                     "peak_dbfs": list(PEAK_DBFS), "noises": list(NOISES)},
        "voices": {split: {speaker_id(v): v for v in vs}
                   for split, vs in (("train", voices_train), ("validation", voices_val), ("test", voices_test))},
        "background_noise": [f"{kind}.wav" for kind in NOISES],
        "counts": {w: counts[w] for w in sorted(counts, key=lambda w: (w not in COMMANDS, w))},
        "totals": {s: sum(c[s] for c in counts.values()) for s in ("train", "validation", "test")},
    }
    if set(versions) != {"espeak-ng"}:  # an espeak-ng-only corpus keeps the MANIFEST.json it always had
        manifest["engines"] = versions
        manifest["licence"] = LICENCE + " " + OTHER_ENGINES_LICENCE
        manifest["per_clip"].update(tempo=list(TEMPO), pitch_cents=list(PITCH_CENTS))
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def generated_corpus(params: dict, *, root: Path, progress=None) -> Path:
    """The folder of the corpus `synthesize(**params)` makes, under root, made on first use and then reused.
    Its name is a hash of the parameters, the generator's VERSION and the engines' versions, so a changed
    recipe or engine makes a new corpus. It is written in a temporary folder renamed into place at the end:
    an interrupted generation is never taken for a corpus, and two processes at once both end with one."""
    engines = sorted({split_voice(v)[0] for k in ("voices_train", "voices_test", "voices_val")
                      for v in _check_voices(params.get(k, ()), k)})
    versions = {e: engine_version(e, [split_voice(v)[1] for k in ("voices_train", "voices_test", "voices_val")
                                      for v in params.get(k, ()) if split_voice(v)[0] == e]) for e in engines}
    key = hashlib.sha256(json.dumps([params, VERSION, versions], sort_keys=True, default=list).encode())
    out = Path(root) / f"kws-{key.hexdigest()[:16]}"
    if _complete(out):
        return out
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".part-", dir=_mkdir(root)))
    try:
        synthesize(tmp, progress=progress, force=True, **params)
        if not _complete(out):  # else another process finished it first: keep theirs, which readers may use
            shutil.rmtree(out, ignore_errors=True)  # a damaged or unfinished folder in the way
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _complete(corpus: Path) -> bool:
    try:
        return json.loads((corpus / "MANIFEST.json").read_text()).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


def _mkdir(path: Path) -> Path:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SynthError(f"{path}: cannot create the corpus folder ({e.strerror or e})") from None
    return Path(path)


def write_clip_manifest(path: Path, plan, drawn: dict) -> None:
    """manifest.csv: every clip with its split, word, engine, voice and the variation drawn for it, by path."""
    rows = []
    for item in plan:
        split, voice, word, k = item
        rows.append({"path": f"{word}/{speaker_id(voice)}_nohash_{k}.wav", "split": split, "word": word,
                     "engine": split_voice(voice)[0], "voice": voice, "speaker": speaker_id(voice), "k": k,
                     **drawn[item]})
    buf = io.StringIO()
    w = csv.DictWriter(buf, MANIFEST_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in sorted(rows, key=lambda r: r["path"]):
        w.writerow({c: "" if row.get(c) is None else row[c] for c in MANIFEST_COLUMNS})
    path.write_text(buf.getvalue())


def pack(corpus_dir, archive, *, preset: int = 9) -> Path:
    """A reproducible .tar.xz of a finished corpus: one root folder named like the archive (`x.tar.xz` holds
    `x/...`), sorted members, zero times, owners and fixed modes; `tarfile.open(archive)` reads it back."""
    corpus_dir, archive = Path(corpus_dir), Path(archive)
    if not archive.name.endswith(".tar.xz") or archive.name == ".tar.xz":
        raise SynthError(f"{archive}: the archive name must end in .tar.xz")
    try:
        complete = json.loads((corpus_dir / "MANIFEST.json").read_text()).get("complete") is True
    except (OSError, ValueError, AttributeError):
        complete = False
    if not complete:
        raise SynthError(f"{corpus_dir} is not a finished corpus (no complete MANIFEST.json)")
    root = archive.name[:-len(".tar.xz")]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in ["", *sorted(p.relative_to(corpus_dir).as_posix() for p in corpus_dir.rglob("*"))]:
            path = corpus_dir / rel
            info = tar.gettarinfo(str(path), arcname=f"{root}/{rel}".rstrip("/"))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isdir():
                tar.addfile(info)
            else:
                with path.open("rb") as f:
                    tar.addfile(info, f)
    # through a temporary file of its own, replaced atomically: an interrupted pack (or two at once) never
    # leaves a cut archive under the name a recipe reads (data/kws_synth.tar.xz)
    try:
        write_atomically(archive, lambda f: f.write(lzma.compress(buf.getvalue(), preset=preset)))
    except OSError as e:
        raise SynthError(f"{archive}: cannot write ({e.strerror or e})") from None
    return archive


# ----------------------------------------------------------------------------------------------- CLI


def _counts(text: str):
    """--repeats / --unknown-per-voice: 'N' or 'ENGINE=N,ENGINE=N'."""
    if "=" not in text:
        return int(text)
    out = {}
    for part in text.split(","):
        engine, _, n = part.partition("=")
        out[engine.strip()] = int(n)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="s2emu synth", description=__doc__.split("\n")[0])
    p.add_argument("out_dir", help="corpus folder to write (must be empty unless --force)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engines", default="espeak-ng",
                   help=f"comma-separated synthesizers whose built-in voices are used: {', '.join(ENGINES)} "
                        f"(default espeak-ng: 98 train and 24 test voices)")
    p.add_argument("--voices-train", default=None,
                   help="comma-separated voices, 'en-us+f3' (espeak-ng) or 'ENGINE:NAME' such as 'flite:slt' "
                        "(default: the engines' built-in train voices; '' for none)")
    p.add_argument("--voices-test", default=None, help="comma-separated voices (default: the engines' test voices)")
    p.add_argument("--voices-val", default="", help="comma-separated voices for validation_list.txt (default none)")
    p.add_argument("--repeats", type=_counts, default=1, metavar="N|ENGINE=N,..",
                   help="clips of each command per voice: N, or per engine ('espeak-ng=2,flite=40'; an engine "
                        "not named: 0)")
    p.add_argument("--unknown-per-voice", type=_counts, default=3, metavar="N|ENGINE=N,..",
                   help="clips of unknown words per voice: N, or per engine as --repeats")
    p.add_argument("--noisy-fraction", type=float, default=0.4, help="share of clips with noise mixed in")
    p.add_argument("--snr-db", type=float, nargs=2, default=(15.0, 35.0), metavar=("LO", "HI"),
                   help="speech-to-noise ratio range of noisy clips")
    p.add_argument("--bits", type=int, default=10, help="effective bits per sample, 8-16 (fewer compress better)")
    p.add_argument("--noise-seconds", type=float, default=10.0, help="length of each background noise file")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="overwrite an earlier corpus written by this tool")
    p.add_argument("--archive", metavar="PATH.tar.xz", default=None,
                   help="also pack the corpus into a reproducible .tar.xz (xz preset 9) at this path")
    a = p.parse_args(argv)

    def report(done, total):
        if done == total or done % 100 == 0:
            print(f"{done}/{total} clips", file=sys.stderr)

    try:
        if a.archive and not a.archive.endswith(".tar.xz"):
            raise SynthError(f"--archive {a.archive}: the archive name must end in .tar.xz")
        engines = tuple(dict.fromkeys(e.strip() for e in a.engines.split(",") if e.strip()))
        for e in engines:
            if e not in ENGINES:
                raise SynthError(f"--engines: unknown engine {e!r} (known: {', '.join(ENGINES)})")
        if not engines:
            raise SynthError("--engines: no engine")
        m = synthesize(a.out_dir, seed=a.seed,
                       voices_train=default_voices(engines, "train") if a.voices_train is None else a.voices_train,
                       voices_test=default_voices(engines, "test") if a.voices_test is None else a.voices_test,
                       voices_val=a.voices_val, repeats=a.repeats, unknown_per_voice=a.unknown_per_voice,
                       noisy_fraction=a.noisy_fraction, snr_db=tuple(a.snr_db), bits=a.bits,
                       noise_seconds=a.noise_seconds, workers=a.workers, force=a.force, progress=report)
        if a.archive:
            pack(a.out_dir, a.archive)
    except S2EmuError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(m["totals"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
