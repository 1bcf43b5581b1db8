"""Live audio (host/live.py): standard input through a real pipe (a WAV stream, raw PCM), streamed WAV headers,
another sample rate, bad streams, and the microphone's errors (this machine has none)."""

import io
import json
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from s2emu.host.audio import AudioError, wav_bytes, write_wav
from s2emu.host.live import Resampler, StreamSource, resample_all

ROOT = Path(__file__).resolve().parents[1]
# a writer process: a file's bytes into its stdout in small pieces, as a recorder or sox would
WRITER = ("import sys, time\nd = open(sys.argv[1], 'rb').read()\no = sys.stdout.buffer\n"
          "for i in range(0, len(d), 3000):\n    o.write(d[i:i + 3000]); o.flush(); time.sleep(0.002)\n")


@pytest.fixture(scope="module")
def speech():
    """3.5 s of speech: four command clips of the bundled corpus one after the other, the last cut in half (so
    the stream's last clip is zero-padded)."""
    clips = []
    with tarfile.open(ROOT / "data" / "kws_synth.tar.xz") as tf:
        for m in tf:
            word = m.name.split("/")[-2] if m.name.count("/") >= 2 else ""
            if m.name.endswith(".wav") and word in ("yes", "up", "left", "stop") and word not in [w for w, _ in clips]:
                data = tf.extractfile(m).read()
                clips.append((word, np.frombuffer(data[44:], "<i2").astype(np.float32) / 32768))
            if len(clips) == 4:
                break
    return np.concatenate([x for _, x in clips])[:56000]


@pytest.fixture(scope="module")
def shipped():
    from s2emu.cli import _trained_model
    from s2emu.recipe import load_recipe

    recipe = load_recipe("eprop_kws")
    return recipe, _trained_model(recipe, None)[1]


def heard(out) -> list[str]:
    return [r["heard"] for r in out["results"]]


def file_heard(shipped, path) -> list[str]:
    from s2emu.streaming import stream

    recipe, weights = shipped
    return heard(stream(recipe, str(path), weights=weights, pace=False, console=None))


def streamed_wav(x, rate, size=0xFFFFFFFF, channels=1) -> bytes:
    """A WAV stream as a tool that cannot seek writes it: RIFF and data sizes unknown."""
    pcm = np.clip(np.round(np.asarray(x) * 32768), -32768, 32767).astype("<i2")
    pcm = np.repeat(pcm, channels) if channels > 1 else pcm
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (b"RIFF" + struct.pack("<I", size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", size) + pcm.tobytes())


def through_a_pipe(tmp_path, data: bytes, *args) -> dict:
    """`python -m s2emu stream eprop_kws --source - ARGS --json`, its stdin fed by a writer process."""
    src = tmp_path / "stdin.bin"
    src.write_bytes(data)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(src)], stdout=subprocess.PIPE)
    try:
        r = subprocess.run([sys.executable, "-m", "s2emu", "stream", "eprop_kws", "--source", "-", *args,
                            "--no-pace", "--quiet", "--json"], stdin=writer.stdout, capture_output=True, timeout=600)
    finally:
        writer.stdout.close()
        writer.wait(timeout=60)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return json.loads(r.stdout)


def test_a_wav_stream_on_stdin_is_heard_as_the_file_is(speech, shipped, tmp_path):
    write_wav(tmp_path / "speech.wav", speech, 16000)
    want = file_heard(shipped, tmp_path / "speech.wav")
    assert len(want) == 4 and len(set(want)) > 1
    out = through_a_pipe(tmp_path, streamed_wav(speech, 16000))
    assert heard(out) == want
    assert out["clips"] == 4 and out["source"] == "-" and out["accuracy"] is None
    assert out["audio"] == {"format": "wav", "rate": 16000, "channels": 1, "seconds": 3.5, "padded_seconds": 0.5}
    assert out["ticks"] >= 4 * 102 and out["missing_outputs"] == 0


def test_raw_pcm_on_stdin_is_heard_as_the_file_is(speech, shipped, tmp_path):
    """Raw 16-bit PCM, two channels (mixed down), read as it arrives."""
    write_wav(tmp_path / "speech.wav", speech, 16000)
    pcm = np.clip(np.round(speech * 32768), -32768, 32767).astype("<i2")
    out = through_a_pipe(tmp_path, np.repeat(pcm, 2).tobytes(), "--channels", "2")
    assert heard(out) == file_heard(shipped, tmp_path / "speech.wav")
    assert out["audio"]["format"] == "raw" and out["audio"]["channels"] == 2


def test_a_stream_at_another_rate_is_resampled(speech, shipped, tmp_path):
    """48 kHz on stdin (data size 0, as arecord writes it): heard as that audio brought to 16 kHz."""
    from s2emu.streaming import stream

    recipe, weights = shipped
    x48 = resample_all(speech, 16000, 48000)
    x48 = np.clip(np.round(x48 * 32768), -32768, 32767) / 32768  # what the stream carries
    write_wav(tmp_path / "back.wav", resample_all(x48, 48000, 16000), 16000)
    out = stream(recipe, "-", weights=weights, pace=False, console=None,
                 stdin=io.BytesIO(streamed_wav(x48, 48000, size=0)))
    assert out["audio"]["rate"] == 48000 and out["audio"]["seconds"] == 3.5
    assert heard(out) == file_heard(shipped, tmp_path / "back.wav")


def test_the_resampler_is_band_limited_and_does_not_depend_on_chunks():
    t = np.arange(2 * 44100) / 44100
    x = np.sin(2 * np.pi * 1000 * t) + 0.5 * np.sin(2 * np.pi * 12000 * t)  # 12 kHz: above 16 kHz's Nyquist
    y = resample_all(x, 44100, 16000)
    assert len(y) == 32000
    ref = np.sin(2 * np.pi * 1000 * np.arange(32000) / 16000)
    assert np.abs(y - ref)[300:-300].max() < 2e-3  # the 1 kHz tone kept, the 12 kHz one filtered out
    r, parts, rng, i = Resampler(44100, 16000), [], np.random.default_rng(0), 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        parts.append(r.push(x[i:i + n]))
        i += n
    np.testing.assert_array_equal(np.concatenate([*parts, r.flush()]), y)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF, "true"])
def test_streamed_wav_headers(size):
    """Sizes 0 and 0xFFFFFFFF mean 'until the end'; a true size ends the audio there (a chunk may follow)."""
    x = np.round(np.sin(np.arange(5000) / 7) * 8000) / 32768
    data = streamed_wav(x, 16000, size=2 * len(x) if size == "true" else size)
    if size == "true":
        data += b"LIST" + struct.pack("<I", 4) + b"INFO"
    src = StreamSource(io.BytesIO(data), target_rate=16000)
    got = []
    while (chunk := src.read()) is not None:
        got.append(chunk)
    np.testing.assert_array_equal(np.concatenate(got), x.astype(np.float32))


def _wav_with(tag=1, bits=16, channels=1, rate=16000, data=b"\x00\x01" * 100, before_fmt=b""):
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * bits // 8, bits // 8, bits)
    return (b"RIFF" + struct.pack("<I", 0) + b"WAVE" + before_fmt + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


@pytest.mark.parametrize("data, says", [
    (b"", "empty stream"),
    (_wav_with(data=b""), "no audio samples"),
    (b"RIFF\x00\x00\x00\x00WAVX", "malformed WAV header (RIFF without WAVE)"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "ended before its 'data' chunk"),
    (_wav_with()[:12] + b"data\x10\x00\x00\x00" + b"\x00" * 16, "'data' chunk before 'fmt '"),
    (_wav_with(before_fmt=b"JUNK\xff\xff\xff\x00"), "malformed WAV header (chunk 'JUNK'"),
    (_wav_with(bits=8), "unsupported WAV format (8-bit PCM)"),
    (_wav_with(tag=3, bits=32), "unsupported WAV format (32-bit IEEE float)"),
    (_wav_with(bits=24), "unsupported WAV format (24-bit PCM)"),
    (b"ID3\x04" + b"\x00" * 100, "an MP3 file"),
    (b"\x01", "no audio samples"),
])
def test_bad_streams_fail_before_the_chip_starts(data, says):
    with pytest.raises(AudioError, match="^stdin: ") as e:
        StreamSource(io.BytesIO(data), name="stdin", target_rate=16000)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_empty_stdin_is_one_line_from_the_command_line(monkeypatch, capsys):
    from s2emu.cli import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["stream", "eprop_kws", "--source", "-", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: stdin: empty stream (no audio)"


def test_mic_without_sounddevice_names_the_extra(monkeypatch, capsys):
    from s2emu.cli import main

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # what Python does when the package is not installed
    assert main(["detect", "eprop_kws", "--source", "mic", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --source mic needs the sounddevice library: pip install 's2emu[mic]'"


def test_mic_without_portaudio_or_without_a_device(capsys):
    """Where sounddevice is installed: no PortAudio library, or (with it) no input device on this machine."""
    try:
        import sounddevice
    except ImportError:
        pytest.skip("sounddevice is not installed (pip install 's2emu[mic]'): the error above covers it")
    except OSError:
        sounddevice = None  # sounddevice without PortAudio
    if sounddevice is not None:
        try:
            sounddevice.query_devices(None, "input")
            pytest.skip("this machine has a microphone")
        except Exception:  # noqa: BLE001 - none: what the test wants
            pass
    from s2emu.cli import main

    assert main(["stream", "eprop_kws", "--source", "mic", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    want = "no input device (microphone) found" if sounddevice is not None else "cannot load the PortAudio library"
    assert err.startswith("error: --source mic") and want in err, err


def test_live_options_are_refused_where_they_mean_nothing(shipped):
    from s2emu.errors import S2EmuError
    from s2emu.streaming import stream

    recipe, weights = shipped
    for kw, says in (({"learn": True}, "--learn needs labelled clips"), ({"loop": True}, "--loop")):
        with pytest.raises(S2EmuError, match=says):
            stream(recipe, "-", weights=weights, console=None, stdin=io.BytesIO(wav_bytes(np.zeros(100), 16000)), **kw)


def test_the_pacers_lag_record_stays_bounded():
    from s2emu.host.stream import Pacer

    p = Pacer(1e12)
    p.start(10**6)
    for _ in range(3 * Pacer.MAX_LAGS):
        p.advance(1)
    p.lags[7] = (p.lags[7][0], 5.0)  # a spike of lag in the record survives further merging
    for _ in range(Pacer.MAX_LAGS):
        p.advance(1)
    assert len(p.lags) <= Pacer.MAX_LAGS + 1 and p.ticks == 4 * Pacer.MAX_LAGS
    p.stop()
    assert p.summary()["lag_ms_max"] == 5000.0 and p.timeline()[-1][0] == p.ticks
