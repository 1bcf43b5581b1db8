"""A tiny corpus in Google Speech Commands layout, made of tone sequences in milliseconds (no espeak-ng)."""

from pathlib import Path

import numpy as np

from s2emu.host.audio import write_wav

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "cat")


def make_tone_corpus(root, *, train_speakers=4, test_speakers=2, seed=0) -> Path:
    """Each word is two tones (its own pair of frequencies); speakers shift pitch and timing."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    words = WORDS + UNKNOWN_WORDS
    pairs = {w: (300 + 150 * i, 2600 - 120 * i) for i, w in enumerate(words)}
    test_list = []
    t = np.arange(16000) / 16000
    for s in range(train_speakers + test_speakers):
        speaker = f"{s:08x}"
        shift = 1 + 0.04 * (s - 2)
        for w in words:
            (root / w).mkdir(parents=True, exist_ok=True)
            f1, f2 = pairs[w]
            on = rng.uniform(0.05, 0.35)
            x = np.zeros(16000)
            a, b, c = int(on * 16000), int((on + 0.25) * 16000), int((on + 0.5) * 16000)
            x[a:b] = np.sin(2 * np.pi * f1 * shift * t[a:b])
            x[b:c] = np.sin(2 * np.pi * f2 * shift * t[b:c])
            x = 0.3 * x + 0.01 * rng.standard_normal(16000)
            rel = f"{w}/{speaker}_nohash_0.wav"
            write_wav(root / rel, x, 16000)
            if s >= train_speakers:
                test_list.append(rel)
    (root / "_background_noise_").mkdir(exist_ok=True)
    write_wav(root / "_background_noise_" / "white_noise.wav", 0.1 * rng.standard_normal(16000 * 12), 16000)
    (root / "testing_list.txt").write_text("\n".join(test_list) + "\n")
    (root / "validation_list.txt").write_text("")
    return root
