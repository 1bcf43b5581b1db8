"""Log-mel features of SCIENCE.md seed A, computed frame by frame as audio arrives.

Per 1 s clip at 16 kHz: centred frames of n_fft = 480 samples (30 ms, periodic Hann window, zero padding of
n_fft/2 at both ends of the clip) every hop = 161 samples (~10 ms), so 1 + 16000 // 161 = 100 frames;
power spectrum; 40 triangular mel filters (HTK mel scale, unit peak) from 20 to 4000 Hz; then, over the clip,
`log1p(S / max S)`, first-order deltas, and each of the 80 channels divided by its standard deviation over time.

Which steps need the whole clip: framing and the mel power spectrum are causal (`StreamingMel` emits frame t
as soon as its window is complete); the last frames need the end padding, and max S and the per-channel
standard deviation are clip statistics as in the paper. A streamed clip is therefore normalised when its last
sample has arrived (`ClipFeaturizer`), and its 100 frames are then fed one per tick: one clip of latency,
real-time throughput. Offline and streamed features are the same numbers (tests/test_features.py).

Choices where the paper is silent (recorded in the recipe schema too): the delta is the backward difference
f(t) - f(t-1) with 0 at t = 0, the mel scale is HTK's, and a silent clip (max S = 0) gives all-zero features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .audio import AudioError, check_samples, fit_length


@dataclass(frozen=True)
class FeatureSpec:
    sample_rate: int = 16000
    clip_samples: int = 16000
    n_fft: int = 480
    hop: int = 161
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 4000.0
    deltas: bool = True

    @property
    def frames(self) -> int:
        return 1 + self.clip_samples // self.hop

    @property
    def channels(self) -> int:
        return self.n_mels * (2 if self.deltas else 1)

    def to_dict(self) -> dict:
        return asdict(self)


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


VTLP_BOUNDARY_HZ = 4800.0  # where the warp of vtlp_warp stops being a plain scaling (Jaitly & Hinton 2013)


def vtlp_warp(freqs: np.ndarray, alpha: float, nyquist: float) -> np.ndarray:
    """Vocal tract length perturbation: frequencies scaled by alpha below a boundary, then a straight line
    to the Nyquist frequency, which stays put (piecewise linear, as Jaitly & Hinton 2013)."""
    f = np.asarray(freqs, np.float64)
    knee = VTLP_BOUNDARY_HZ * min(alpha, 1.0) / alpha
    tail = nyquist - (nyquist - VTLP_BOUNDARY_HZ * min(alpha, 1.0)) / (nyquist - knee) * (nyquist - f)
    return np.where(f <= knee, f * alpha, tail)


def mel_filterbank(spec: FeatureSpec, vtlp: float = 1.0) -> np.ndarray:
    """[n_mels, n_fft//2 + 1] triangular filters, evenly spaced on the mel scale, peak 1 at the centre.
    vtlp != 1: the filters see the spectrum with its frequency axis warped (a longer or shorter vocal tract)."""
    edges = mel_to_hz(np.linspace(hz_to_mel(spec.fmin), hz_to_mel(spec.fmax), spec.n_mels + 2))
    freqs = np.arange(spec.n_fft // 2 + 1) * spec.sample_rate / spec.n_fft
    if vtlp != 1.0:
        freqs = vtlp_warp(freqs, vtlp, spec.sample_rate / 2)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def band_centres(spec: FeatureSpec) -> np.ndarray:
    return mel_to_hz(np.linspace(hz_to_mel(spec.fmin), hz_to_mel(spec.fmax), spec.n_mels + 2))[1:-1]


class _MelPower:
    """Window, FFT and filterbank of whole frames: shared by the streaming and the batch paths."""

    def __init__(self, spec: FeatureSpec, vtlp: float = 1.0):
        self.spec = spec
        n = np.arange(spec.n_fft)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / spec.n_fft)).astype(np.float64)  # periodic Hann
        self.fbank = mel_filterbank(spec, vtlp).astype(np.float64)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """frames [..., n_fft] -> mel power [..., n_mels] float32."""
        power = np.abs(np.fft.rfft(frames * self.window, axis=-1)) ** 2
        return (power @ self.fbank.T).astype(np.float32)


class StreamingMel:
    """Mel power frames of one clip, emitted as soon as each frame's window is complete.

    push(samples) takes any number of new samples and returns the frames they completed; finish() pads the
    end of the clip with zeros and returns the remaining frames, spec.frames in total.
    """

    def __init__(self, spec: FeatureSpec, mel: _MelPower | None = None):
        self.spec = spec
        self.mel = mel or _MelPower(spec)
        self.buffer = np.zeros(spec.n_fft // 2, np.float64)  # centred frames: n_fft/2 zeros before the clip
        self.emitted = 0

    def push(self, samples) -> np.ndarray:
        s = self.spec
        self.buffer = np.concatenate([self.buffer, np.asarray(samples, np.float64)])
        ready = 0 if len(self.buffer) < s.n_fft else 1 + (len(self.buffer) - s.n_fft) // s.hop
        ready = min(ready, s.frames - self.emitted)
        if ready <= 0:
            return np.zeros((0, s.n_mels), np.float32)
        idx = np.arange(ready)[:, None] * s.hop + np.arange(s.n_fft)
        out = self.mel(self.buffer[idx])
        self.buffer = self.buffer[ready * s.hop:]
        self.emitted += ready
        return out

    def finish(self) -> np.ndarray:
        s = self.spec
        need = (s.frames - self.emitted - 1) * s.hop + s.n_fft - len(self.buffer)
        return self.push(np.zeros(max(need, 0)))


def mel_power_batch(clips: np.ndarray, spec: FeatureSpec, mel: _MelPower | None = None) -> np.ndarray:
    """[N, clip_samples] -> [N, frames, n_mels]: the same frames StreamingMel emits, all at once."""
    mel = mel or _MelPower(spec)
    pad = spec.n_fft // 2
    tail = (spec.frames - 1) * spec.hop + spec.n_fft - (clips.shape[1] + pad)
    x = np.pad(np.asarray(clips, np.float64), ((0, 0), (pad, max(tail, 0))))
    idx = np.arange(spec.frames)[:, None] * spec.hop + np.arange(spec.n_fft)
    return mel(x[:, idx])


def normalise(mel_power: np.ndarray, spec: FeatureSpec, *, centre: bool = False) -> np.ndarray:
    """[..., frames, n_mels] mel power of whole clips -> [..., frames, channels] network inputs. centre: remove
    each channel's mean over the clip too (cepstral mean normalization; SCIENCE.md's features keep it, and so
    does every recipe: benchmarks/kws_voices.py --cmn measures what it would change)."""
    s = np.asarray(mel_power, np.float64)
    peak = s.max(axis=(-2, -1), keepdims=True)
    f = np.log1p(np.divide(s, peak, out=np.zeros_like(s), where=peak > 0))
    if spec.deltas:
        d = np.diff(f, axis=-2, prepend=f[..., :1, :])  # backward difference, 0 at the first frame
        f = np.concatenate([f, d], axis=-1)
    if centre:
        f = f - f.mean(axis=-2, keepdims=True)
    sd = f.std(axis=-2, keepdims=True)
    f = np.divide(f, sd, out=np.zeros_like(f), where=sd > 1e-12)
    return f.astype(np.float32)


def clip_features(samples, spec: FeatureSpec = FeatureSpec(), *, name: str = "audio") -> np.ndarray:
    """One clip of audio (any length: padded or cropped) -> [frames, channels] float32."""
    x = fit_length(check_samples(samples, name), spec.clip_samples)
    return normalise(mel_power_batch(x[None], spec)[0], spec)


def batch_features(clips: np.ndarray, spec: FeatureSpec = FeatureSpec(), *, chunk: int = 256,
                   advance=None, vtlp: float = 1.0) -> np.ndarray:
    """[N, clip_samples] float32 -> [N, frames, channels], in chunks to bound memory (at most `chunk` clips,
    fewer where a clip's frames are many or long); advance(clips) after each chunk, if given."""
    if clips.ndim != 2 or clips.shape[1] != spec.clip_samples:
        raise AudioError(f"expected clips of shape [N, {spec.clip_samples}], got {clips.shape}")
    # framing holds ~4 float64 copies of frames x n_fft per clip (frames, windowed, spectrum, power): keep a
    # chunk near 1 GiB, so a small hop or a long n_fft does not ask for terabytes (the default: 256 clips)
    chunk = max(1, min(chunk, (1 << 30) // (4 * 8 * spec.frames * spec.n_fft)))
    mel = _MelPower(spec, vtlp)
    out = np.empty((len(clips), spec.frames, spec.channels), np.float32)
    for lo in range(0, len(clips), chunk):
        out[lo:lo + chunk] = normalise(mel_power_batch(clips[lo:lo + chunk], spec, mel), spec)
        if advance is not None:
            advance(len(out[lo:lo + chunk]))
    return out


class ClipFeaturizer:
    """Streaming front end of the host: audio in chunks of any size, one clip's features out when it ends."""

    def __init__(self, spec: FeatureSpec = FeatureSpec()):
        self.spec = spec
        self.mel = _MelPower(spec)
        self._reset()

    def _reset(self):
        self.stream = StreamingMel(self.spec, self.mel)
        self.frames: list[np.ndarray] = []
        self.received = 0

    def push(self, samples) -> np.ndarray | None:
        """Feed samples of the current clip; returns its [frames, channels] features once it is complete."""
        samples = check_samples(samples, "streamed audio") if len(samples) else np.zeros(0, np.float32)
        take = samples[:self.spec.clip_samples - self.received]
        self.frames.append(self.stream.push(take))
        self.received += len(take)
        if self.received < self.spec.clip_samples:
            return None
        self.frames.append(self.stream.finish())
        feats = normalise(np.concatenate(self.frames), self.spec)
        self._reset()
        return feats
