"""Live audio: standard input (a WAV stream or raw 16-bit PCM), the default microphone, or a WAV file read as a
stream, decoded to mono float32 at the recipe's rate as the bytes arrive, and fed to the host endpoint.

What is read, and what happens to it (stated here and nowhere else):
- `-`, standard input. A stream that starts with `RIFF` is a WAV stream: its chunks are read up to `data`;
  16-bit integer PCM only (8-bit, 24/32-bit, float, A-law ... are refused with one line naming a sox command
  that converts); a `data` size of 0 or 0xFFFFFFFF (what `arecord ... -t wav` and other tools write when they
  cannot seek back) means "until the end of the stream", any other size is read as an upper bound (a stream
  that ends sooner just ends). Anything else is raw little-endian 16-bit PCM at `rate` Hz with `channels`
  interleaved channels (`--rate`, default 16000; `--channels`, default 1). Streams that begin like MP3, FLAC or
  Ogg files are refused.
- `mic`: the default input device through the optional `sounddevice` library (`pip install 's2emu[mic]'`),
  16-bit, at the recipe's rate if the device takes it, else at its own rate.
- A WAV file (`detect --source FILE.wav`): host/audio.py read_wav, any format it reads.
- Several channels are averaged to mono; a rate other than the recipe's is resampled (Resampler: windowed
  sinc, the same whatever the chunks); a partial sample frame at the very end of a stream is dropped.
- A stream with no sample at all (empty, or a header without data) is an error before the chip starts.

Reading is incremental: a source's `read()` returns the samples that have arrived (blocking until some have, or
None at the end). Standard input and the microphone are not read until the host endpoint connects: what a live
source says while the chip starts waits in the pipe (64 KiB, 2 s at 16 kHz; `arecord` drops what does not fit
and says "overrun") or is not recorded (mic), so the chip starts on fresh audio and no start-up backlog becomes
latency; a file piped in loses nothing.

The feed (s2emu/streaming.py `AudioFeed`, FeedClient here): the driver listens on a TCP port with a random
authkey (the channels' door, engines/ray_engine/door.py `Door`: strangers are dropped) and sends the samples as
they are read; the host endpoint connects on its first tick, on either engine, takes the samples each tick needs
(blocking while a live source has not said them yet: the pipe paces the chip), and sends back each window's class
scores as the readout answers, so the driver knows what the chip heard without polling the host. Messages:
driver -> host, float32 little-endian samples (an empty message: the end of the audio, zeros follow); host ->
driver, an 8-byte window index and its float32 scores.
"""

from __future__ import annotations

import io
import math
import os
import queue
import re
import struct

import numpy as np

from .audio import AudioError, read_wav

_PCM, _FLOAT, _ALAW, _MULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
_TAGS = {_PCM: "PCM", _FLOAT: "IEEE float", _ALAW: "A-law", _MULAW: "mu-law"}
CONVERT = "sox IN -b 16 -e signed-integer -t wav -"
MAX_HEADER_CHUNK = 1 << 20  # a chunk before 'data' larger than this is a malformed header, not metadata
READ_BYTES = 1 << 16  # at most this much per read of a stream (a live one returns what has arrived: less)
_MAGIC = {b"ID3": "an MP3 file", b"\xff\xfb": "an MP3 file", b"fLaC": "a FLAC file", b"OggS": "an Ogg file",
          b"RIFX": "a big-endian WAV (RIFX)", b"RF64": "an RF64 WAV"}


# ----------------------------------------------------------------------------------------------- resampling


class Resampler:
    """Band-limited resampling of a stream, chunk by chunk: windowed sinc (Kaiser window, beta 8.6, 16 zero
    crossings of the lower rate on each side), one filter per phase of the rational ratio dst/src. Output n sits
    at input position n * src / dst (output 0 on input 0); the output does not depend on how the input is cut
    into chunks; flush() ends the stream with ceil(inputs * dst / src) outputs in all."""

    def __init__(self, src: int, dst: int, zeros: int = 16, beta: float = 8.6):
        if src < 1 or dst < 1:
            raise AudioError(f"sample rates must be positive, got {src} -> {dst} Hz")
        g = math.gcd(src, dst)
        self.L, self.M = dst // g, src // g
        cut = min(1.0, dst / src)  # the filter's cut-off, as a fraction of the input's Nyquist frequency
        self.h = int(math.ceil(zeros / cut))
        t = np.arange(self.L)[:, None] / self.L + (self.h - 1 - np.arange(2 * self.h))[None, :]  # x_n - tap
        w = np.i0(beta * np.sqrt(np.clip(1 - (t / self.h) ** 2, 0, 1))) / np.i0(beta)
        table = cut * np.sinc(cut * t) * w
        self.table = table / table.sum(axis=1, keepdims=True)  # unit gain at DC in every phase
        self.buf = np.zeros(self.h, np.float64)  # input from absolute index self.start: zeros before input 0
        self.start = -self.h
        self.n = 0  # next output
        self.total = 0  # inputs received

    def _emit(self, last: int) -> np.ndarray:
        """Outputs self.n .. last (inclusive)."""
        if last < self.n:
            return np.zeros(0, np.float32)
        ns = np.arange(self.n, last + 1, dtype=np.int64)
        i0, phase = np.divmod(ns * self.M, self.L)
        idx = (i0 - self.h + 1 - self.start)[:, None] + np.arange(2 * self.h)
        y = np.einsum("ij,ij->i", self.buf[idx], self.table[phase])
        self.n = last + 1
        keep = (self.n * self.M) // self.L - self.h + 1  # first input the next output needs
        if keep > self.start:
            self.buf = self.buf[keep - self.start:]
            self.start = keep
        return y.astype(np.float32)

    def push(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        self.buf = np.concatenate([self.buf, x])
        self.total += len(x)
        end = self.start + len(self.buf)  # inputs known: indices < end
        return self._emit(((end - self.h) * self.L - 1) // self.M)

    def flush(self) -> np.ndarray:
        self.buf = np.concatenate([self.buf, np.zeros(self.h + 1)])
        return self._emit(-(-self.total * self.L // self.M) - 1)


def resample_all(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """A whole signal through the stream Resampler (what a stream of it would give)."""
    if src == dst:
        return np.asarray(x, np.float32)
    r = Resampler(src, dst)
    x = np.asarray(x)
    return np.concatenate([*(r.push(x[i:i + 8192]) for i in range(0, len(x), 8192)), r.flush()])


# ----------------------------------------------------------------------------------------------- sources


class _Bytes:
    """Reads of a binary stream: whatever has arrived (at least a byte, b"" at the end), or exactly n bytes."""

    def __init__(self, f):
        self.f, self.pending = f, b""
        try:
            self.fd = f.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self.fd = None

    def some(self, n: int) -> bytes:
        if self.pending:
            out, self.pending = self.pending[:n], self.pending[n:]
            return out
        if self.fd is not None:
            return os.read(self.fd, n)
        return (getattr(self.f, "read1", None) or self.f.read)(n)

    def exact(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            b = self.some(n - got)
            if not b:
                break
            parts.append(b)
            got += len(b)
        return b"".join(parts)

    def unread(self, b: bytes) -> None:
        self.pending = b + self.pending


class _Decoder:
    """Interleaved 16-bit PCM bytes -> mono float32 at the target rate, chunk by chunk."""

    def __init__(self, rate: int, channels: int, target_rate: int):
        self.rate, self.channels = rate, channels
        self.frame = 2 * channels
        self.rest = b""
        self.resampler = Resampler(rate, target_rate) if rate != target_rate else None
        self.dropped_bytes = 0

    def push(self, b: bytes) -> np.ndarray:
        b = self.rest + b
        n = len(b) // self.frame * self.frame
        self.rest = b[n:]
        x = np.frombuffer(b[:n], "<i2").astype(np.float32) / 32768.0
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1)  # documented down-mix to mono
        return self.resampler.push(x) if self.resampler is not None else x

    def flush(self) -> np.ndarray:
        self.dropped_bytes = len(self.rest)  # a partial frame at the very end
        return self.resampler.flush() if self.resampler is not None else np.zeros(0, np.float32)


class StreamSource:
    """16-bit PCM from a byte stream: a WAV stream or raw PCM (module docstring). The header, and the first sample
    frame, are read when it is opened, so a malformed or empty stream fails before the chip starts."""

    live = True

    def __init__(self, f, *, name: str = "stdin", rate: int = 16000, channels: int = 1, target_rate: int = 16000):
        self.name = name
        self.bytes = _Bytes(f)
        self.limit = None  # bytes of audio the header declares (None: until the end)
        head = self.bytes.exact(4)
        if not head:
            raise AudioError(f"{name}: empty stream (no audio)")
        if head == b"RIFF":
            tag, channels, rate, bits = self._wav_header()
            self._check_format(tag, channels, rate, bits)
            self.format = "wav"
        else:
            for magic, what in _MAGIC.items():
                if head.startswith(magic):
                    raise AudioError(f"{name}: this is {what}, not a WAV stream or raw 16-bit PCM; convert it: "
                                     f"{CONVERT}")
            if channels < 1 or not 1000 <= rate <= 384000:
                raise AudioError(f"{name}: raw PCM needs --rate in 1000..384000 Hz and --channels >= 1, got {rate} Hz, "
                                 f"{channels} channels")
            self.bytes.unread(head)
            self.format = "raw"
        self.rate, self.channels = rate, channels
        self.decoder = _Decoder(rate, channels, target_rate)
        first = self.bytes.exact(self.decoder.frame if self.limit is None else min(self.decoder.frame, self.limit))
        if len(first) < self.decoder.frame:
            raise AudioError(f"{name}: no audio samples (the stream ended " +
                             ("after its WAV header)" if self.format == "wav" else "before one sample frame)"))
        self.bytes.unread(first)
        self.consumed = 0
        self.done = False

    def _wav_header(self) -> tuple[int, int, int, int]:
        name = self.name
        rest = self.bytes.exact(8)
        if len(rest) < 8 or rest[4:8] != b"WAVE":
            raise AudioError(f"{name}: malformed WAV header (RIFF without WAVE)")
        fmt = None
        while True:
            h = self.bytes.exact(8)
            if len(h) < 8:
                raise AudioError(f"{name}: malformed WAV header (the stream ended before its 'data' chunk)")
            cid, size = h[:4], struct.unpack("<I", h[4:])[0]
            if not re.fullmatch(rb"[ -~]{4}", cid):
                raise AudioError(f"{name}: malformed WAV header (chunk id {cid!r})")
            if cid == b"data":
                if fmt is None:
                    raise AudioError(f"{name}: malformed WAV header ('data' chunk before 'fmt ')")
                self.limit = None if size in (0, 0xFFFFFFFF) else size
                return fmt
            if size > MAX_HEADER_CHUNK or (cid == b"fmt " and not 16 <= size <= 256):
                raise AudioError(f"{name}: malformed WAV header (chunk {cid.decode()!r} of {size:,} bytes)")
            body = self.bytes.exact(size + (size & 1))  # chunks are padded to an even length
            if len(body) < size:
                raise AudioError(f"{name}: malformed WAV header (the stream ended inside chunk {cid.decode()!r})")
            if cid == b"fmt ":
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == _EXTENSIBLE and size >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID's first two bytes
                fmt = (tag, channels, rate, bits)

    def _check_format(self, tag, channels, rate, bits):
        if tag != _PCM or bits != 16:
            what = f"{bits}-bit {_TAGS.get(tag, f'format tag {tag}')}"
            raise AudioError(f"{self.name}: unsupported WAV format ({what}); s2emu reads 16-bit PCM (any number of "
                             f"channels, mixed down): convert with {CONVERT}")
        if channels < 1 or not 1000 <= rate <= 384000:
            raise AudioError(f"{self.name}: malformed WAV header ({channels} channels at {rate} Hz)")

    def start(self):
        pass

    def read(self) -> np.ndarray | None:
        """The next samples (mono float32 at the target rate), blocking until some arrive; None at the end."""
        while not self.done:
            want = READ_BYTES if self.limit is None else min(READ_BYTES, self.limit - self.consumed)
            b = self.bytes.some(want) if want > 0 else b""
            if not b:
                self.done = True
                return self.decoder.flush()
            self.consumed += len(b)
            x = self.decoder.push(b)
            if len(x):
                return x
        return None

    def stop(self):
        pass

    def describe(self) -> dict:
        return {"format": self.format, "rate": self.rate, "channels": self.channels}


class ArraySource:
    """Audio already in memory (a WAV file), handed out ten seconds at a time."""

    live = False

    def __init__(self, samples: np.ndarray, *, name: str, rate: int, channels: int | None = 1, fmt: str = "file"):
        self.x, self.name, self.pos = np.asarray(samples, np.float32), name, 0
        self.rate, self.channels, self.format = rate, channels, fmt
        self.known_samples = len(self.x)

    def start(self):
        pass

    def read(self) -> np.ndarray | None:
        if self.pos >= len(self.x):
            return None
        out = self.x[self.pos:self.pos + 160000]  # 10 s a message: the feed's thread wakes seldom
        self.pos += len(out)
        return out

    def stop(self):
        pass

    def describe(self) -> dict:
        return {"format": self.format, "rate": self.rate, "channels": self.channels}


def open_file(path, *, target_rate: int) -> ArraySource:
    """A WAV file (any format host/audio.py reads), resampled to target_rate if need be."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such file (a source is a WAV file, '-' for standard input, or 'mic')")
    a = read_wav(p)
    return ArraySource(resample_all(a.samples, a.rate, target_rate), name=str(p), rate=a.rate, channels=None)


# ----------------------------------------------------------------------------------------------- microphone

MIC_EXTRA = "pip install 's2emu[mic]'"


def _sounddevice():
    """The sounddevice module, or one line saying what is missing: the library, or the PortAudio it loads."""
    try:
        import sounddevice
    except ImportError:
        raise AudioError(f"--source mic needs the sounddevice library: {MIC_EXTRA}") from None
    except OSError as e:  # sounddevice loads PortAudio when imported
        raise AudioError(f"--source mic: sounddevice cannot load the PortAudio library ({e}); install it "
                         f"(Debian/Ubuntu: apt-get install libportaudio2)") from None
    return sounddevice


class MicSource:
    """The default input device (or `device`), through sounddevice. Recording starts when the host connects."""

    live = True

    def __init__(self, *, target_rate: int, channels: int = 1, device=None):
        sd = self.sd = _sounddevice()
        self.name = "mic"
        try:
            info = sd.query_devices(device, "input")
        except Exception as e:  # noqa: BLE001 - sounddevice raises PortAudioError or ValueError
            raise AudioError(f"--source mic: no input device (microphone) found ({str(e).strip() or type(e).__name__})"
                             ) from None
        if not info or int(info.get("max_input_channels", 0)) < 1:
            raise AudioError("--source mic: no input device (microphone) found")
        self.device, self.channels = device, max(1, min(channels, int(info["max_input_channels"])))
        self.rate = target_rate
        try:
            sd.check_input_settings(device, channels=self.channels, dtype="int16", samplerate=target_rate)
        except Exception:  # noqa: BLE001 - the device does not take the recipe's rate: record at its own
            self.rate = int(info["default_samplerate"])
        self.decoder = _Decoder(self.rate, self.channels, target_rate)
        self.queue: queue.Queue = queue.Queue()
        self.stream = None
        self.overflows = 0
        self.format = "mic"
        self.device_name = str(info.get("name", "default"))

    def _callback(self, indata, frames, time, status):
        if status and status.input_overflow:
            self.overflows += 1
        self.queue.put(bytes(indata))

    def start(self):
        try:
            self.stream = self.sd.RawInputStream(samplerate=self.rate, channels=self.channels, dtype="int16",
                                                 device=self.device, callback=self._callback)
            self.stream.start()
        except Exception as e:  # noqa: BLE001
            raise AudioError(f"--source mic: cannot record from {self.device_name} ({e})") from None

    def read(self) -> np.ndarray | None:
        while True:
            try:
                b = self.queue.get(timeout=0.2)
            except queue.Empty:
                return np.zeros(0, np.float32)  # nothing yet: the feed checks whether to stop, and asks again
            if b is None:
                return self.decoder.flush()
            x = self.decoder.push(b)
            if len(x):
                return x

    def stop(self):
        if self.stream is not None:
            try:
                self.stream.stop()
                self.stream.close()
            except Exception:  # noqa: BLE001 - closing a stream that failed
                pass
            self.stream = None
        self.queue.put(None)

    def describe(self) -> dict:
        return {"format": self.format, "rate": self.rate, "channels": self.channels, "device": self.device_name}


def open_source(source: str, *, target_rate: int, rate: int = 16000, channels: int = 1, stdin=None):
    """'-' (standard input), 'mic', or a WAV file."""
    import sys

    if source == "-":
        return StreamSource(stdin if stdin is not None else sys.stdin.buffer, name="stdin", rate=rate,
                            channels=channels, target_rate=target_rate)
    if source == "mic":
        return MicSource(target_rate=target_rate, channels=channels)
    return open_file(source, target_rate=target_rate)


# ----------------------------------------------------------------------------------------------- the feed

HELLO = struct.pack("<q", 0)


class FeedClient:
    """The host endpoint's end of the feed: connects on first use; take(n) blocks until n samples have arrived
    (zeros once the audio has ended); send_scores reports a window's class scores."""

    def __init__(self, config: dict):
        self.address, self.authkey = tuple(config["address"]), bytes(config["authkey"])
        self.conn = None
        self.buf = np.zeros(0, np.float32)
        self.eof = False
        self.received = 0

    def _connection(self):
        if self.conn is None:
            from multiprocessing.connection import Client

            from s2emu.errors import S2EmuError
            try:
                self.conn = Client(self.address, family="AF_INET", authkey=self.authkey)
                self.conn.send_bytes(HELLO)
            except (OSError, EOFError) as e:
                raise S2EmuError(f"stream host: cannot connect to the audio feed at {self.address} ({e})") from None
        return self.conn

    def take(self, n: int) -> np.ndarray:
        conn = self._connection()
        parts, have = [self.buf], len(self.buf)
        while have < n and not self.eof:
            try:
                msg = conn.recv_bytes()
            except (OSError, EOFError):
                from s2emu.errors import S2EmuError
                raise S2EmuError("stream host: the audio feed closed before the end of the audio") from None
            if not msg:
                self.eof = True
                break
            x = np.frombuffer(msg, "<f4")
            parts.append(x)
            have += len(x)
            self.received += len(x)
        buf = np.concatenate(parts) if len(parts) > 1 else parts[0]
        out, self.buf = buf[:n], buf[n:]
        if len(out) < n:
            out = np.concatenate([out, np.zeros(n - len(out), np.float32)])
        return out

    def send_scores(self, k: int, scores) -> None:
        try:
            self._connection().send_bytes(struct.pack("<q", k) + np.ascontiguousarray(scores, "<f4").tobytes())
        except (OSError, EOFError):  # the driver stopped listening (the run is ending)
            pass
