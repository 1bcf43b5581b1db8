"""Audio in and out: WAV files read with our own RIFF parser (clear errors, more formats than `wave`),
written as 16-bit PCM, and an FFT resampler for the synthesizer.

Conversions are documented here and nowhere else, so a user knows what happens to their audio:
- integer PCM (8, 16, 24, 32 bit) and IEEE float (32, 64 bit) WAV are read, scaled to [-1, 1);
- several channels are averaged to mono (a documented down-mix, not an error);
- a sample rate other than the recipe's is an error (resample first: `s2emu` never guesses);
- clips are zero-padded or cropped to the recipe's length (as the Speech Commands reference code does);
- empty files, truncated data chunks, NaN or infinite samples are errors naming the file.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2emu.errors import S2EmuError


class AudioError(S2EmuError):
    """Audio that cannot be used as it is."""


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32 [n] mono, in [-1, 1)
    rate: int


_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(path, *, rate: int | None = None) -> Audio:
    """Read a WAV file as mono float32. With `rate`, refuse any other sample rate."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AudioError(f"{path}: cannot read ({e.strerror})") from None
    return parse_wav(data, name=str(path), rate=rate)


def parse_wav(data: bytes, *, name: str = "<bytes>", rate: int | None = None) -> Audio:
    if len(data) == 0:
        raise AudioError(f"{name}: empty file")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{name}: not a WAV file (no RIFF/WAVE header)")
    fmt = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise AudioError(f"{name}: truncated 'fmt ' chunk")
            tag, channels, sr, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
            fmt = (tag, channels, sr, bits)
        elif cid == b"data":
            if fmt is None:
                raise AudioError(f"{name}: 'data' chunk before 'fmt ' chunk")
            if len(body) < size:
                raise AudioError(f"{name}: truncated file (data chunk declares {size} bytes, "
                                 f"{len(body)} present)")
            return Audio(_decode(body, *fmt, name=name, want_rate=rate), fmt[2])
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    raise AudioError(f"{name}: no {'fmt/' if fmt is None else ''}data chunk (truncated file?)")


def _decode(body: bytes, tag: int, channels: int, sr: int, bits: int, *, name: str, want_rate) -> np.ndarray:
    if channels < 1:
        raise AudioError(f"{name}: {channels} channels")
    if want_rate is not None and sr != want_rate:
        raise AudioError(f"{name}: sample rate {sr} Hz, the recipe needs {want_rate} Hz (resample the file first)")
    width = bits // 8
    if tag == _PCM and bits in (8, 16, 24, 32):
        if bits == 8:  # 8-bit WAV is unsigned
            x = (np.frombuffer(body, np.uint8).astype(np.float32) - 128.0) / 128.0
        elif bits == 24:
            b = np.frombuffer(body[:len(body) // 3 * 3], np.uint8).reshape(-1, 3).astype(np.int32)
            x = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32) / 2.0 ** 23
        else:
            x = np.frombuffer(body[:len(body) // width * width], f"<i{width}").astype(np.float32) / 2.0 ** (bits - 1)
    elif tag == _FLOAT and bits in (32, 64):
        x = np.frombuffer(body[:len(body) // width * width], f"<f{width}").astype(np.float32)
    else:
        raise AudioError(f"{name}: unsupported WAV encoding (format tag {tag}, {bits} bits); "
                         f"use PCM 8/16/24/32-bit or float 32/64-bit")
    n = len(x) // channels
    if n == 0:
        raise AudioError(f"{name}: no samples")
    x = x[:n * channels].reshape(n, channels)
    x = x.mean(axis=1) if channels > 1 else x[:, 0]  # documented down-mix to mono
    return check_samples(x, name)


def check_samples(x, name: str = "audio") -> np.ndarray:
    """Mono float32 samples, or a clear error: never NaN, infinite, empty or multi-dimensional."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"{name}: expected mono samples (1-D), got shape {x.shape}")
    if x.size == 0:
        raise AudioError(f"{name}: no samples")
    if not np.isfinite(x).all():
        raise AudioError(f"{name}: {int((~np.isfinite(x)).sum())} NaN or infinite samples")
    return x


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad or crop to n samples (the Speech Commands convention for clips)."""
    return x[:n] if len(x) >= n else np.concatenate([x, np.zeros(n - len(x), x.dtype)])


def wav_bytes(x: np.ndarray, rate: int) -> bytes:
    """16-bit PCM mono WAV; samples are clipped to [-1, 1)."""
    pcm = np.clip(np.round(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    buf.write(b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE")
    buf.write(b"fmt " + struct.pack("<IHHIIHH", 16, _PCM, 1, rate, rate * 2, 2, 16))
    buf.write(b"data" + struct.pack("<I", len(pcm)) + pcm)
    return buf.getvalue()


def write_wav(path, x: np.ndarray, rate: int) -> None:
    Path(path).write_bytes(wav_bytes(x, rate))


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Band-limited resampling by zero-padding or truncating the spectrum (exact for periodic signals)."""
    if src == dst:
        return np.asarray(x, np.float32)
    n = len(x)
    m = round(n * dst / src)
    spec = np.fft.rfft(np.asarray(x, np.float64))
    out = np.zeros(m // 2 + 1, np.complex128)
    k = min(len(spec), len(out))
    out[:k] = spec[:k]
    return (np.fft.irfft(out, m) * (m / n)).astype(np.float32)
