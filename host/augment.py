"""Training-time augmentation of keyword clips: what makes a keyword spotter hear words rather than one voice.

`augmented_features(audio, labels, spec, copies=K, names=..., seed=...)` makes K augmented copies of every
training clip and returns their features; the loader (host/speech_commands.py) adds them to the training
split and caches them with it. Each copy draws, from (seed, copy, clip) alone, which augmentations apply and
how strongly, so the result is the same bits however it is computed, and every epoch sees the same copies.
Each augmentation, in the order they are applied (each with probability PROBABILITY[name]):

- `speed`: speed perturbation, the clip resampled by a factor of 0.85-1.15 (tempo and pitch together, as
  Ko et al. 2015 for speech recognition); pitch alone is varied when the corpus is synthesized (espeak-ng's
  pitch, sox's pitch shift for the other engines).
- `reverb`: a room: a generated impulse response, exponentially decaying noise with RT60 0.1-0.8 s after a
  direct path and a few early reflections, mixed at a direct-to-reverberant ratio of 0-12 dB.
- `band`: a channel: the telephone band (300-3400 Hz), a low-pass at 1.5-3.5 kHz, a high-pass at 100-500 Hz,
  or a spectral tilt of -6 to +6 dB per octave, each a smooth gain on the spectrum.
- `noise`: background at an SNR of 0-20 dB over the word: white, pink, brown, blue or violet noise, the
  corpus's `_background_noise_` recordings (their training part), or babble (three to six other training
  clips of random words, shifted, summed).
- `shift`: the clip moved by up to +-150 ms in time (zeros where it was moved from).
- `vtlp`: vocal tract length perturbation: the mel filters read the spectrum through a frequency axis
  warped by 0.88-1.12 (Jaitly & Hinton 2013), as a speaker with a shorter or longer vocal tract.
- `mask`: SpecAugment-style masking of the features (Park et al. 2019): two bands of up to 4 of the mel
  channels (with their deltas) and two spans of up to 10 frames set to 0.

Noise colours, babble and the room are generated here, so nothing is downloaded.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from s2emu.cpus import usable_cpus
from s2emu.errors import S2EmuError

from .audio import resample
from .features import FeatureSpec, batch_features

AUGMENTATIONS = ("speed", "reverb", "band", "noise", "shift", "vtlp", "mask")
PROBABILITY = {"speed": 0.8, "reverb": 0.5, "band": 0.4, "noise": 0.8, "shift": 1.0, "vtlp": 0.8, "mask": 0.6}
SPEED = (0.85, 1.15)
RT60 = (0.1, 0.8)
DRR_DB = (0.0, 12.0)
SNR_DB = (0.0, 20.0)
SHIFT_S = 0.15
VTLP = (0.88, 1.12)
VTLP_STEP = 0.02  # warps are rounded to a grid, so the clips of one warp are featurized together
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0, "violet": -2.0}  # power ~ 1/f^x
MASK_BANDS, MASK_BAND_WIDTH, MASK_SPANS, MASK_SPAN_WIDTH = 2, 4, 2, 10


def check_names(names) -> tuple[str, ...]:
    names = tuple(names)
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise S2EmuError(f"unknown augmentation {bad[0]!r} (known: {', '.join(AUGMENTATIONS)})")
    return names


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """x centred in n samples: cropped or padded with zeros on both sides."""
    if len(x) >= n:
        lo = (len(x) - n) // 2
        return x[lo:lo + n]
    out = np.zeros(n, x.dtype)
    lo = (n - len(x)) // 2
    out[lo:lo + len(x)] = x
    return out


def _coloured(rng: np.random.Generator, n: int, exponent: float, rate: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / rate), 20.0)
    x = np.fft.irfft(spec * f ** (-exponent / 2), n)
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _room(rng: np.random.Generator, rate: int) -> np.ndarray:
    """An impulse response: the direct path, 3-6 early reflections in the first 30 ms, then a diffuse tail
    decaying by 60 dB in RT60, scaled to the drawn direct-to-reverberant ratio."""
    rt60 = rng.uniform(*RT60)
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    tail[: int(0.002 * rate)] = 0.0
    for _ in range(int(rng.integers(3, 7))):
        tail[int(rng.uniform(0.002, 0.03) * rate)] += rng.uniform(-0.6, 0.6)
    drr = 10 ** (rng.uniform(*DRR_DB) / 10)
    tail *= np.sqrt(1.0 / drr / (np.sum(tail * tail) + 1e-12))
    tail[0] = 1.0
    return tail


def _band_gain(rng: np.random.Generator, f: np.ndarray) -> np.ndarray:
    """A smooth gain over the frequencies f: one of four channels."""
    kind = int(rng.integers(4))
    f = np.maximum(f, 1.0)
    if kind == 0:  # telephone: second-order-like slopes outside 300-3400 Hz
        return 1 / np.sqrt(1 + (300 / f) ** 4) / np.sqrt(1 + (f / 3400) ** 4)
    if kind == 1:
        return 1 / np.sqrt(1 + (f / rng.uniform(1500, 3500)) ** 4)
    if kind == 2:
        return 1 / np.sqrt(1 + (rng.uniform(100, 500) / f) ** 4)
    slope = rng.uniform(-6, 6)  # dB per octave around 1 kHz
    return 10 ** (slope * np.log2(f / 1000) / 20)


def _speech_rms(x: np.ndarray) -> float:
    """RMS over the loud part of a clip (frames within 30 dB of the loudest), as an SNR's reference."""
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    e = np.mean(frames * frames, axis=1)
    loud = e >= e.max() * 1e-3 if e.max() > 0 else np.ones_like(e, bool)
    return float(np.sqrt(np.mean(e[loud]))) if e.max() > 0 else 0.0


def augment_clip(x: np.ndarray, rng: np.random.Generator, names, *, rate: int, noises, babble) -> np.ndarray:
    """One augmented copy of a clip (float64, same length); `noises`: background recordings to cut from,
    `babble(rng, n)`: a sum of other clips. The draws happen whether or not an augmentation is in `names`,
    so leaving one out (an ablation) leaves the others' draws as they were."""
    n = len(x)
    x = np.asarray(x, np.float64)
    peak = np.abs(x).max()
    use = {name: rng.random() < PROBABILITY[name] and name in names for name in AUGMENTATIONS}
    sub = {name: np.random.default_rng(rng.integers(2**63)) for name in AUGMENTATIONS}
    if use["speed"]:
        factor = sub["speed"].uniform(*SPEED)
        x = _fit(resample(x, round(rate * factor), rate).astype(np.float64), n)
    if use["reverb"]:
        h = _room(sub["reverb"], rate)
        m = 1 << int(np.ceil(np.log2(n + len(h))))
        x = np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(h, m), m)[:n]
    if use["band"]:
        spec = np.fft.rfft(x)
        x = np.fft.irfft(spec * _band_gain(sub["band"], np.fft.rfftfreq(n, 1 / rate)), n)
    if use["noise"]:
        r = sub["noise"]
        kind = int(r.integers(len(NOISE_COLOURS) + 2))
        if kind < len(NOISE_COLOURS):
            bg = _coloured(r, n, list(NOISE_COLOURS.values())[kind], rate)
        elif kind == len(NOISE_COLOURS) and noises:
            src = noises[int(r.integers(len(noises)))]
            start = int(r.integers(max(1, len(src) - n + 1)))
            bg = _fit(np.asarray(src[start:start + n], np.float64), n)
        else:
            bg = babble(r, n)
        bg_rms = np.sqrt(np.mean(bg * bg))
        speech = _speech_rms(x)
        if bg_rms > 0 and speech > 0:
            x = x + bg * speech / bg_rms / 10 ** (r.uniform(*SNR_DB) / 20)
    if use["shift"]:
        s = int(sub["shift"].integers(-int(SHIFT_S * rate), int(SHIFT_S * rate) + 1))
        x = np.roll(x, s)
        if s > 0:
            x[:s] = 0.0
        elif s < 0:
            x[s:] = 0.0
    top = np.abs(x).max()
    if top > 0 and peak > 0:
        x *= min(peak, 0.99) / top  # the clip's own level (the features are level-free anyway)
    return x


def mask_features(f: np.ndarray, rng: np.random.Generator, n_mels: int) -> np.ndarray:
    """SpecAugment: bands of mel channels (and their deltas) and spans of frames set to 0, in place."""
    frames, channels = f.shape
    for _ in range(MASK_BANDS):
        w = int(rng.integers(0, MASK_BAND_WIDTH + 1))
        lo = int(rng.integers(0, n_mels - w + 1))
        for c0 in range(0, channels, n_mels):
            f[:, c0 + lo:c0 + lo + w] = 0.0
    for _ in range(MASK_SPANS):
        w = int(rng.integers(0, MASK_SPAN_WIDTH + 1))
        lo = int(rng.integers(0, frames - w + 1))
        f[lo:lo + w] = 0.0
    return f


def _in_threads(fn, items):
    """fn over items (a generator) on a thread per CPU this process may use (at most 4), results in order:
    for work whose numpy calls release the GIL for a good part of it (augmentation's FFTs: 1.3x on 2 cores;
    whole-batch features gain nothing, being bound by memory traffic). Each item's result must depend on
    that item alone, so that the numbers do not depend on the threads."""
    items = list(items)
    workers = min(4, usable_cpus(), len(items))
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="s2emu-augment") as pool:
        yield from pool.map(fn, items)


def augmented_features(audio: np.ndarray, labels: np.ndarray, spec: FeatureSpec, *, copies: int, names,
                       seed: int, noises=(), advance=None) -> tuple[np.ndarray, np.ndarray]:
    """Features [copies * N, frames, channels] of `copies` augmented copies of the clips `audio` [N, samples]
    (copy-major), and their labels. Silence clips (all labels) are augmented too: a room and a channel change
    noise as well. advance(k) after k clips are made, if given."""
    names = check_names(names)
    n_clips, n = audio.shape
    rate = spec.sample_rate
    words = np.flatnonzero(labels != 0)  # babble: other clips that hold a word (label 0 is _silence_)

    def babble(r, length):
        out = np.zeros(length)
        for i in r.choice(words, size=min(len(words), int(r.integers(3, 7))), replace=False) if len(words) else []:
            out += np.roll(np.asarray(audio[i], np.float64), int(r.integers(length)))
        return out if out.any() else r.standard_normal(length)

    out = np.empty((copies * n_clips, spec.frames, spec.channels), np.float32)
    for c in range(copies):
        made = np.empty((n_clips, n), np.float32)
        warp = np.ones(n_clips)
        masks = [None] * n_clips

        def augment(lo, step=64):  # clips lo .. lo + step, each from its own seeded draws
            for i in range(lo, min(lo + step, n_clips)):
                rng = np.random.default_rng([seed, 0xA6, c, i])
                made[i] = augment_clip(audio[i], rng, names, rate=rate, noises=noises, babble=babble)
                r = np.random.default_rng([seed, 0xA7, c, i])
                if "vtlp" in names and r.random() < PROBABILITY["vtlp"]:
                    warp[i] = 1.0 + round(r.uniform(*VTLP) / VTLP_STEP - 1 / VTLP_STEP) * VTLP_STEP
                if "mask" in names and r.random() < PROBABILITY["mask"]:
                    masks[i] = np.random.default_rng([seed, 0xA8, c, i])
            return min(lo + step, n_clips) - lo
        for done in _in_threads(augment, range(0, n_clips, 64)):
            if advance is not None:
                advance(done)
        block = out[c * n_clips:(c + 1) * n_clips]
        for w in np.unique(warp):
            rows = np.flatnonzero(warp == w)
            block[rows] = batch_features(made[rows], spec, vtlp=float(w))
        for i, r in enumerate(masks):
            if r is not None:
                mask_features(block[i], r, spec.n_mels)
    return out, np.tile(labels, copies)
