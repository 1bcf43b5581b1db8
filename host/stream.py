"""Streaming audio into the chip in real time: the host reads clips hop by hop and computes features as the
audio arrives; a pacer holds the chip to the audio clock.

Timing (one tick = one 10 ms frame): during the S = T + 2 ticks of sample k the host pushes clip k+1's audio,
160 samples per tick (100 ticks = 1 s), into its ClipFeaturizer; clip k+1's features are complete when its
last sample has arrived, just in time for sample k+1. Clip 0 is read before the first tick (one clip of
pre-roll). The chip therefore needs S = 102 ticks per second of audio: it keeps up if it runs at >= 102 ticks/s
(real_time_factor = ticks per second / 100 >= 1.02), and the lag (how far the chip is behind the audio clock)
stays bounded.

Sources: a corpus folder or archive (Speech Commands layout; its test split, labels known) or one WAV file
(cut into consecutive 1 s clips; labels unknown, -1), both held in memory; or a feed (host/live.py: standard
input, the microphone, or a file read as a stream), whose audio arrives while the chip runs.

With a feed the host cuts windows of `window` samples every `hop` samples (hop = window: consecutive clips, as
`s2emu stream`; hop < window: overlapping windows, as `s2emu detect`). Window 0 is read at the first tick;
during the T + 2 ticks of window k the host takes window k+1's `hop` new samples, ceil(hop / T) per tick over
its first T ticks, and computes window k+1's features when the last of them has arrived (each window
normalised on its own, exactly as an offline clip of the same audio). So the chip needs T + 2 ticks per hop of
audio: 102 ticks per second of audio for clips, 408 for a hop of 0.25 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2emu.errors import S2EmuError

from .audio import fit_length, read_wav
from .base import TEST, TRAIN, Host, Plan
from .features import ClipFeaturizer, FeatureSpec, clip_features
from .metrics import accuracy, balanced_accuracy, confusion


@dataclass(frozen=True)
class StreamSource:
    audio: np.ndarray  # float32 [distinct clips, clip_samples]
    labels: np.ndarray  # int [n_clips]; -1 = unknown
    names: list[str]
    order: np.ndarray  # int [n_clips]: clip k plays audio[order[k]] (a looped stream repeats rows, not copies)


def open_source(path, spec: FeatureSpec, *, words, clips: int | None, seed: int, split: str = "test",
                loop: bool = False) -> StreamSource:
    """The clips to stream: a WAV file cut into 1 s clips, or a corpus split in a seeded order; at most `clips`
    of them, or, with loop, exactly `clips`, starting over at the end (long runs, soak tests)."""
    from .speech_commands import ClipList, Corpus, index_splits, load_split

    p = Path(path)
    if p.suffix.lower() == ".wav" and p.is_file():
        x = read_wav(p, rate=spec.sample_rate).samples
        n = max(1, -(-len(x) // spec.clip_samples))
        audio = np.stack([fit_length(x[i * spec.clip_samples:], spec.clip_samples) for i in range(n)])
        names = [f"{p.name}@{i}s" for i in range(n)]
        labels = np.full(n, -1, np.int64)
    else:
        corpus = Corpus(p)
        cl = index_splits(corpus, tuple(words))[split]
        if not len(cl.labels):
            raise S2EmuError(f"{p}: no clips in its {split} split")
        order = np.random.default_rng([seed, 0x57]).permutation(len(cl.labels))
        sub = ClipList([cl.paths[i] for i in order], cl.labels[order], [cl.speakers[i] for i in order])
        audio, _ = load_split(corpus, sub, split, spec, seed=seed)
        names, labels = [q or "_silence_ window" for q in sub.paths], sub.labels
    order = np.arange(len(labels))
    if clips is not None:
        if clips < 1:
            raise S2EmuError(f"--clips must be >= 1, got {clips}")
        order = np.arange(clips) % len(labels) if loop else order[:clips]
        audio = audio[:order.max() + 1]
    return StreamSource(audio.astype(np.float32), np.asarray(labels)[order], [names[i] for i in order], order)


def stream_plan(n_clips: int, learn: bool) -> Plan:
    split = np.full(n_clips, TRAIN if learn else TEST, np.int8)
    return Plan(split, np.zeros(n_clips, np.int64), np.arange(n_clips, dtype=np.int64)[:, None])


class StreamHost(Host):
    """A Host whose clips are computed from audio while the chip runs (batch 1). It keeps the features of two
    clips, the one streaming and the next (computed as its audio arrives), so a long stream holds no more."""

    def __init__(self, config: dict):
        self.spec = FeatureSpec(**config["feature_spec"])
        ring = np.zeros((2, self.spec.frames, self.spec.channels), np.float32)  # clip k in slot k % 2
        labels = np.maximum(config["labels"], 0)  # unknown labels travel as class 0 (only --learn uses them)
        super().__init__({**config, "x_train": ring, "x_test": ring, "y_train": labels, "y_test": labels})
        self.ring = ring
        self.labels = np.asarray(config["labels"], np.int64)
        self.ready = -1  # last clip whose features are complete
        self.feed = None
        if config.get("feed") is not None:  # audio arriving while the chip runs (host/live.py)
            from .live import FeedClient

            f = config["feed"]
            self.feed = FeedClient(f)
            self.window, self.hop = int(f["window"]), int(f["hop"])
            if not 0 < self.hop <= self.window:
                raise S2EmuError(f"stream host: a hop of {self.hop} samples for windows of {self.window}")
            self.per_tick = -(-self.hop // self.T)
            self.recent = None  # the last window's audio
            self.fresh: list[np.ndarray] = []  # the next window's new samples so far
            return  # window 0 is read at the first tick (the feed is live: nothing waits in the constructor)
        self.audio, self.order = config["audio"], np.asarray(config["clip_audio"], np.int64)
        self.featurizer = ClipFeaturizer(self.spec)
        self.per_tick = -(-self.spec.clip_samples // self.T)  # samples of audio per tick (160)
        self._push(0, 0, self.spec.clip_samples)  # pre-roll: clip 0

    def _frames(self, split: int, clips: np.ndarray, t: int) -> np.ndarray:
        return self.ring[clips % 2, t]

    def snapshot(self) -> dict:
        raise S2EmuError("a streaming run is not checkpointed: its audio and features live in the stream")

    def _push(self, clip: int, lo: int, hi: int):
        if clip >= len(self.order) or lo >= hi:
            return
        feats = self.featurizer.push(self.audio[self.order[clip], lo:hi])
        if feats is not None:
            self.ring[clip % 2] = feats
            self.ready = clip

    def _window_features(self, k: int, audio: np.ndarray) -> None:
        self.recent = audio
        self.ring[k % 2] = clip_features(audio, self.spec, name="streamed audio")  # what an offline clip gets
        self.ready = k

    def _pull(self, k: int, s: int) -> None:
        """Window k's new samples due at local tick s of window k-1 (a feed)."""
        lo, hi = s * self.per_tick, min((s + 1) * self.per_tick, self.hop)
        if k >= self.clock.n_samples or lo >= hi:
            return
        self.fresh.append(self.feed.take(hi - lo))
        if hi == self.hop:
            self._window_features(k, np.concatenate([self.recent[self.hop:], *self.fresh]))
            self.fresh = []

    def step(self, tick, inbound):
        sample, s = self.clock.where(tick)
        if self.feed is not None and self.ready < 0 and tick == 0:
            self._window_features(0, self.feed.take(self.window))  # pre-roll: window 0
        if sample < self.clock.n_samples and s < self.T:
            if self.ready < sample:
                raise S2EmuError(f"stream host: features of clip {sample} are not ready at tick {tick}")
            if self.feed is not None:
                self._pull(sample + 1, s)
            else:
                self._push(sample + 1, s * self.per_tick, min((s + 1) * self.per_tick, self.spec.clip_samples))
        return super().step(tick, inbound)

    def _collect(self, tick, inbound):
        super()._collect(tick, inbound)
        if self.feed is not None:  # the driver hears each window's scores as the readout gives them
            k = self.clock.where(inbound.tick)[0]
            self.feed.send_scores(k, self.scores[k, 0])

    def clip_scores(self) -> np.ndarray:
        if self.feed is not None:  # the driver has them from the feed: nothing to poll
            return self.scores[:0, 0, :]
        return self.scores[:, 0, :]

    def results(self) -> dict:
        """Per clip: scores, prediction, label (-1 unknown); accuracy over the clips with known labels."""
        scores = self.scores[:, 0, :]
        missing = int(np.isnan(scores).any(axis=1).sum())
        pred = np.nan_to_num(scores, nan=-np.inf).argmax(1)
        truth = self.labels
        known = truth >= 0
        C = self.n_classes
        out = {"predictions": pred.tolist(), "labels": truth.tolist(), "scores": scores.tolist(),
               "missing_outputs": missing, "chance": 1.0 / C, "n_clips": int(len(truth)),
               "n_labelled": int(known.sum())}
        if known.any():
            out.update(accuracy=accuracy(truth[known], pred[known]),
                       balanced_accuracy=balanced_accuracy(truth[known], pred[known], C),
                       confusion=confusion(truth[known], pred[known], C).tolist())
        else:
            out.update(accuracy=None, balanced_accuracy=None, confusion=None)
        return out


class Pacer:
    """Holds the emulation to the audio clock: tick t may not finish before t / ticks_per_second after start.

    Call advance(n) after n more ticks are done. Records the lag (seconds the chip is behind the clock),
    the time slept, and keeps the per-interval tick rate for the live view. The lag record stays bounded on a
    long run: past MAX_LAGS reports, neighbouring pairs are merged (the later tick, the larger lag), so the
    worst lag and the timeline's shape survive and memory does not grow with the hours streamed.
    """

    MAX_LAGS = 20_000

    def __init__(self, ticks_per_second: float | None, on_update=None):
        self.rate = ticks_per_second
        self.on_update = on_update
        self.t0 = None
        self.last = None
        self.ticks = 0
        self.slept = 0.0
        self.final_lag = 0.0
        self.lags: list[tuple[int, float]] = []

    def start(self, total: int):
        self.total = total
        self.t0 = None  # the audio clock starts with the first ticks, not while actors start

    def advance(self, n: int = 1):
        now = time.perf_counter()
        if self.t0 is None:
            # engines report ticks after they ran (the ray engine in chunks): the first report starts the
            # clock as if its n ticks had run exactly at the audio rate (or took no time, unpaced)
            self.t0 = now - (n / self.rate if self.rate else 0.0)
        self.ticks += n
        self.last = now
        if self.rate:
            due = self.t0 + self.ticks / self.rate
            lag = now - due
            self.final_lag = max(lag, 0.0)
            self.lags.append((self.ticks, self.final_lag))
            if len(self.lags) > self.MAX_LAGS:
                self.lags = [(b[0], max(a[1], b[1])) for a, b in zip(self.lags[0::2], self.lags[1::2])] + \
                    self.lags[len(self.lags) // 2 * 2:]
            if lag < 0:
                time.sleep(-lag)
                self.slept -= lag
        if self.on_update is not None:
            self.on_update(self)

    def stop(self):
        # the run's ticks ended at the last report (later time is collecting results and stopping actors)
        self.wall = self.last - self.t0 if self.t0 is not None else 0.0

    def timeline(self, points: int = 1000) -> list[list[float]]:
        """[ticks, lag in ms] at up to `points` evenly spaced reports (the lag over time)."""
        if not self.lags:
            return []
        idx = np.unique(np.linspace(0, len(self.lags) - 1, min(points, len(self.lags))).astype(int))
        return [[self.lags[i][0], 1000 * self.lags[i][1]] for i in idx]

    def summary(self) -> dict:
        wall = max(getattr(self, "wall", 0.0), 1e-9)
        lags = np.array([lg for _, lg in self.lags]) if self.lags else np.zeros(1)
        half = len(lags) // 2
        busy = max(wall - self.slept, 1e-9)
        return {"ticks": self.ticks, "wall_seconds": wall, "ticks_per_second": self.ticks / wall,
                "real_time_factor": self.ticks / wall / 100.0,
                "capacity_factor": self.ticks / busy / 100.0,  # what the chip could do unpaced
                "lag_ms_max": 1000 * float(lags.max()), "lag_ms_final": 1000 * self.final_lag,
                "lag_ms_first_half_max": 1000 * float(lags[:max(half, 1)].max()),
                "lag_ms_second_half_max": 1000 * float(lags[half:].max()) if half else 1000 * float(lags.max()),
                "paced": bool(self.rate)}
