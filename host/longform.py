"""A long recording with known word times, for continuous keyword detection (`s2emu longform`, `s2emu detect`).

Words are spoken one at a time by the held-out test voices (host/synth.py `VOICES_TEST`, `make_clip`, with the
corpus's own random speed, pitch, amplitude and level; its per-clip noise off), each word cut out of its clip
as trimmed, separated by gaps of silence drawn uniformly from GAP seconds; COMMAND_FRACTION of the utterances
are command words (uniform over the ten), the rest "unknown" words (host/synth.py `UNKNOWN_WORDS`). Under all
of it runs background noise in segments of SEGMENT seconds, each of one kind (host/synth.py `noise`: white,
pink, brown, running water, 50 Hz hum) at an SNR drawn uniformly from SNR_DB, relative to the mean RMS of the
recording's words; segments cross-fade over 0.1 s. Everything follows from the seed (espeak-ng is deterministic:
tests/test_voices.py).

OUT.wav: 16 kHz mono 16-bit PCM. OUT.csv: start, end (seconds), word, voice per utterance, in time order.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .audio import write_wav

RATE = 16_000
COMMAND_FRACTION = 0.7
GAP = (0.75, 3.0)  # seconds of silence between words
LEAD = 0.5  # seconds before the first word
SEGMENT = (5.0, 20.0)  # seconds per noise segment
SNR_DB = (10.0, 30.0)
FADE = 0.1  # seconds of cross-fade between noise segments


def make_longform(out_wav, *, minutes: float, seed: int = 0, voices=None, progress=None) -> dict:
    """Write OUT.wav and OUT.csv (module docstring); progress(seconds) hears how far the words have come."""
    from s2emu.errors import S2EmuError

    from .synth import COMMANDS, NOISES, UNKNOWN_WORDS, VOICES_TEST, make_clip, noise

    if not minutes > 0:
        raise S2EmuError(f"--minutes {minutes:g}: must be > 0")
    voices = tuple(voices or VOICES_TEST)
    out_wav = Path(out_wav)
    out_csv = out_wav.with_suffix(".csv")
    n = int(round(minutes * 60 * RATE))
    rng = np.random.default_rng([seed, 0x10F0])
    speech = np.zeros(n)
    rows, rms = [], []
    t = int(LEAD * RATE)
    k = 0
    while True:
        command = rng.random() < COMMAND_FRACTION
        word = str(rng.choice(COMMANDS if command else UNKNOWN_WORDS))
        voice = str(rng.choice(voices))
        gap = int(rng.uniform(*GAP) * RATE)
        clip, p = make_clip(seed, voice, word, k, noisy_fraction=0.0, snr_db=(15.0, 35.0))
        w = clip[p["onset"]:p["onset"] + p["length"]]
        if t + len(w) > n:
            break
        speech[t:t + len(w)] = w
        rows.append((t / RATE, (t + len(w)) / RATE, word, voice))
        rms.append(float(np.sqrt(np.mean(w * w))))
        t += len(w) + gap
        k += 1
        if progress is not None:
            progress(min(t, n) / RATE)
    if not rows:
        raise S2EmuError(f"--minutes {minutes:g}: too short for one word")
    level = float(np.mean(rms))
    background, segments = np.zeros(n), []
    fade = int(FADE * RATE)
    start = 0
    while start < n:
        length = min(int(rng.uniform(*SEGMENT) * RATE), n - start)
        kind = str(rng.choice(NOISES))
        snr = float(rng.uniform(*SNR_DB))
        seg = noise(kind, length + fade, rng)[:min(length + fade, n - start)] * level / 10 ** (snr / 20)
        ramp = np.ones(len(seg))
        if start > 0:
            ramp[:fade] = np.linspace(0.0, 1.0, fade)
        if start + length < n:
            ramp[length:] = np.linspace(1.0, 0.0, len(seg) - length)
        background[start:start + len(seg)] += seg * ramp
        segments.append({"start": start / RATE, "end": (start + length) / RATE, "kind": kind, "snr_db": round(snr, 2)})
        start += length
    x = speech + background
    x *= min(1.0, 0.99 / max(np.abs(x).max(), 1e-12))  # never clipped
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out_wav, x, RATE)
    with out_csv.open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["start", "end", "word", "voice"])
        for a, b, word, voice in rows:
            wr.writerow([f"{a:.4f}", f"{b:.4f}", word, voice])
    n_cmd = sum(r[2] in COMMANDS for r in rows)
    return {"wav": str(out_wav), "csv": str(out_csv), "seconds": n / RATE, "seed": seed,
            "utterances": len(rows), "command_utterances": n_cmd, "unknown_utterances": len(rows) - n_cmd,
            "voices": len({r[3] for r in rows}), "noise": segments}
