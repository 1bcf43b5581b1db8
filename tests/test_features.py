"""Log-mel features against independent references, streaming against batch, and bad audio."""

import struct

import numpy as np
import pytest
from s2emu.host.audio import (
    AudioError,
    parse_wav,
    read_wav,
    resample,
    wav_bytes,
    write_wav,
)
from s2emu.host.features import (
    ClipFeaturizer,
    FeatureSpec,
    StreamingMel,
    band_centres,
    batch_features,
    clip_features,
    mel_filterbank,
    mel_power_batch,
)

SPEC = FeatureSpec()


def tone(freq, n=16000, rate=16000, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def test_shape_matches_science():
    f = clip_features(tone(440.0))
    assert f.shape == (100, 80) and f.dtype == np.float32
    assert SPEC.frames == 100 and SPEC.channels == 80


@pytest.mark.parametrize("band", [3, 10, 20, 30, 38])
def test_pure_tone_lands_in_its_band(band):
    f0 = band_centres(SPEC)[band]
    mel = mel_power_batch(tone(f0)[None], SPEC)[0]
    assert int(np.argmax(mel[50])) == band
    # neighbours of a centre tone get far less than the band itself (triangles overlap only half-way)
    assert mel[50, band] > 2 * max(mel[50, band - 1], mel[50, band + 1])


def test_mel_power_equals_direct_dft_reference():
    """An independent path: explicit DFT matrix and a per-bin loop over triangular weights."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    ours = mel_power_batch(x[None], SPEC)[0]
    padded = np.concatenate([np.zeros(240), x.astype(np.float64), np.zeros(480)])
    n = np.arange(480)
    hann = np.sin(np.pi * n / 480) ** 2  # periodic Hann written another way
    k = np.arange(241)
    dft = np.exp(-2j * np.pi * np.outer(k, n) / 480)
    centres_hz = 700 * (10 ** (np.linspace(2595 * np.log10(1 + 20 / 700), 2595 * np.log10(1 + 4000 / 700), 42)
                               / 2595) - 1)
    for t in (0, 1, 37, 99):
        frame = padded[t * 161:t * 161 + 480] * hann
        power = np.abs(dft @ frame) ** 2
        for m in (0, 17, 39):
            lo, c, hi = centres_hz[m:m + 3]
            w = [max(0.0, min((f - lo) / (c - lo), (hi - f) / (hi - c))) for f in k * 16000 / 480]
            ref = float(np.dot(w, power))
            assert ours[t, m] == pytest.approx(ref, rel=1e-4, abs=1e-6)


def test_filterbank_covers_20_to_4000_hz():
    fb = mel_filterbank(SPEC)
    freqs = np.arange(241) * 16000 / 480
    covered = freqs[fb.sum(0) > 0]
    assert covered.min() >= 20 and covered.max() <= 4000
    assert fb.max(axis=1).min() > 0.5  # every band has a bin near its peak


def test_normalisation_as_science():
    f = clip_features(tone(1000.0) + 0.01 * np.random.default_rng(1).standard_normal(16000).astype(np.float32))
    assert np.allclose(f.std(axis=0), 1.0, atol=1e-4)  # each channel divided by its std over time
    quiet = clip_features(0.01 * tone(1000.0) + 1e-4 * np.random.default_rng(1).standard_normal(16000))
    loud = clip_features(tone(1000.0) + 0.01 * np.random.default_rng(1).standard_normal(16000))
    assert np.allclose(quiet, loud, atol=1e-3)  # S / max S: invariant to the clip's gain


def test_silent_clip_gives_zeros_not_nan():
    f = clip_features(np.zeros(16000, np.float32))
    assert np.all(f == 0)


def test_streaming_equals_batch_for_any_chunking():
    rng = np.random.default_rng(2)
    clips = (0.2 * rng.standard_normal((3, 16000))).astype(np.float32)
    batch = batch_features(clips)
    fz = ClipFeaturizer()
    for i, clip in enumerate(clips):
        pos, got = 0, None
        while got is None:
            n = int(rng.integers(1, 900))
            got = fz.push(clip[pos:pos + n])
            pos += n
        np.testing.assert_array_equal(got, batch[i])


def test_streaming_mel_emits_frames_as_soon_as_their_window_is_complete():
    sm = StreamingMel(SPEC)
    assert len(sm.push(np.zeros(239))) == 0  # first frame is centred on sample 0: needs samples 0..239
    assert len(sm.push(np.zeros(1))) == 1
    assert len(sm.push(np.zeros(161))) == 1
    assert len(sm.push(np.zeros(16000 - 401))) + 2 + len(sm.finish()) == 100


def test_short_and_long_clips_are_padded_or_cropped():
    x = tone(500.0, n=8000)
    np.testing.assert_array_equal(clip_features(x), clip_features(np.concatenate([x, np.zeros(8000)])))
    np.testing.assert_array_equal(clip_features(tone(500.0, n=20000)), clip_features(tone(500.0)))


# --- WAV reading and bad audio ---------------------------------------------------------------------

def _wav(payload: bytes, *, tag=1, channels=1, rate=16000, bits=16, declared=None):
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    size = len(payload) if declared is None else declared
    body = b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def test_pcm16_round_trip(tmp_path):
    x = tone(300.0, amp=0.7)
    write_wav(tmp_path / "a.wav", x, 16000)
    a = read_wav(tmp_path / "a.wav", rate=16000)
    assert a.rate == 16000 and np.abs(a.samples - x).max() <= 1 / 32768


def test_other_encodings_read_to_the_same_samples():
    x = np.array([0.0, 0.5, -0.5, 0.25], np.float32)
    f32 = parse_wav(_wav(x.astype("<f4").tobytes(), tag=3, bits=32)).samples
    i24 = (np.round(x * 2 ** 23).astype(np.int32))
    b24 = b"".join(int(v & 0xFFFFFF).to_bytes(3, "little") for v in i24)
    p24 = parse_wav(_wav(b24, bits=24)).samples
    u8 = parse_wav(_wav((np.round(x * 128) + 128).astype(np.uint8).tobytes(), bits=8)).samples
    np.testing.assert_array_equal(f32, x)
    np.testing.assert_array_equal(p24, x)
    np.testing.assert_array_equal(u8, x)


def test_stereo_is_averaged_to_mono():
    left, right = np.full(4, 0.5), np.full(4, -0.25)
    inter = np.stack([left, right], 1).ravel()
    a = parse_wav(_wav((inter * 32768).astype("<i2").tobytes(), channels=2))
    np.testing.assert_allclose(a.samples, 0.125)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"hello world, not audio", "not a WAV file"),
    (_wav(b"\x00\x01" * 100, declared=400), "truncated file"),
    (_wav(b"\x00\x01" * 100)[:30], "truncated"),
    (_wav(b"\x00\x01" * 100, rate=44100), "sample rate 44100 Hz"),
    (_wav(np.array([0.1, np.nan], "<f4").tobytes(), tag=3, bits=32), "NaN"),
    (_wav(b"", declared=0), "no samples"),
    (_wav(b"\x00" * 8, tag=7, bits=8), "unsupported WAV encoding"),
])
def test_bad_audio_is_refused_with_a_clear_message(data, message):
    with pytest.raises(AudioError, match=message):
        parse_wav(data, name="clip.wav", rate=16000)


def test_missing_file_and_bad_arrays():
    with pytest.raises(AudioError, match="cannot read"):
        read_wav("/nonexistent/clip.wav")
    with pytest.raises(AudioError, match="mono"):
        clip_features(np.zeros((16000, 2)))
    with pytest.raises(AudioError, match="NaN or infinite"):
        clip_features(np.array([0.0, np.inf]))
    with pytest.raises(AudioError, match="no samples"):
        clip_features(np.zeros(0))


def test_resample_preserves_a_tone():
    x = tone(440.0, n=22050, rate=22050)
    y = resample(x, 22050, 16000)
    assert len(y) == 16000
    np.testing.assert_allclose(y, tone(440.0), atol=2e-3)
    assert wav_bytes(y, 16000)[:4] == b"RIFF"


def test_centre_removes_each_channels_mean_and_is_off_by_default():
    """normalise(centre=True), the --cmn experiment of benchmarks/kws_voices.py: every channel has mean 0 over
    the clip and standard deviation 1; without it the features are SCIENCE.md's, whose bands' means are not 0."""
    from s2emu.host.features import FeatureSpec, mel_power_batch, normalise

    rng = np.random.default_rng(4)
    spec = FeatureSpec()
    power = mel_power_batch(rng.standard_normal((2, spec.clip_samples)).astype(np.float32), spec)
    plain, centred = normalise(power, spec), normalise(power, spec, centre=True)
    assert np.abs(plain[..., :spec.n_mels].mean(axis=1)).min() > 0.1  # the log-mel bands (deltas: near 0)
    assert np.abs(centred.mean(axis=1)).max() < 1e-5
    assert np.allclose(centred.std(axis=1), 1.0, atol=1e-4)
