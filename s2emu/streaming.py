"""`s2emu stream`: keyword spotting on audio streamed in real time through the emulated chip.

The host computes features as the audio arrives (host/stream.py); a Pacer holds the engine to the audio clock;
a rich live view on stderr shows the clip, the word the chip heard with its class scores, spike rates per PE,
packets per second, the real-time factor and the lag. Returns one JSON-able dict.

Live audio (`--source -`, standard input; `--source mic`) goes through `run_feed`, which `s2emu detect`
(s2emu/detect.py) shares: the driver reads the source (host/live.py) and feeds the host endpoint, which cuts
windows (here consecutive 1 s clips) and sends back what the chip heard in each. Its length is unknown: the
chip is built for at most --clips clips (default 8 hours) and the run is ended once the audio has ended and
the last clip's answer is in (the engines run a fixed number of ticks, so run_feed ends it from the progress
callback). The last clip is zero-padded, as a WAV file's last clip is. Ctrl-C on a live source ends the audio
there (the clips heard so far finish); a second one aborts.
"""

from __future__ import annotations

import dataclasses
import signal
import struct
import threading
import time

import numpy as np

from .build import build
from .engines import run_engine
from .errors import S2EmuError
from .host.datasets import feature_spec
from .host.audio import AudioError
from .host.stream import Pacer, open_source, stream_plan

AUDIO_TICKS_PER_SECOND = 100.0  # one 10 ms frame per tick


class LiveView:
    """Renders the stream's state at most 4 times a second (rich Live on stderr), from the engine's
    LiveStatus (engines/__init__.py), the same on every engine."""

    def __init__(self, console, classes, names, labels, pes, ticks_per_clip, enabled=True, scores=None):
        self.console, self.classes, self.names, self.enabled = console, classes, names, enabled
        self.labels = np.asarray(labels)
        self.scores_fn = scores  # live audio: the clips' scores so far, from the feed (the host is not polled)
        self.pes = pes  # (endpoint, neurons) of the PEs whose neurons spike
        self.ticks_per_clip = ticks_per_clip
        self.status = None
        self.live = None
        self.last = 0.0
        self.prev = None  # (ticks, LiveStatus, time) at the last render

    def attach(self, status):
        self.status = status

    def start(self):
        if self.enabled:
            from rich.live import Live
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.start()

    def stop(self):
        if self.live is not None:
            self.live.stop()

    def update(self, pacer: Pacer):
        now = time.perf_counter()
        if self.live is None or now - self.last < 0.25:
            return
        self.last = now
        self.live.update(self._render(pacer, now))

    def _render(self, pacer: Pacer, now):
        from rich.table import Table

        t = Table(title="s2emu stream", show_header=False, expand=False)
        t.add_column(style="bold")
        t.add_column()
        st = self.status() if self.status is not None else None
        ticks0, st0, t0 = self.prev or (0, None, now)
        dt = max(now - t0, 1e-9)
        lag = 1000 * pacer.lags[-1][1] if pacer.lags else 0.0
        total = "" if self.scores_fn else f" / {pacer.total:,}"
        t.add_row("ticks", f"{pacer.ticks:,}{total}   {(pacer.ticks - ticks0) / dt:,.0f} ticks/s   "
                           f"real-time factor {(pacer.ticks - ticks0) / dt / AUDIO_TICKS_PER_SECOND:.2f}   "
                           f"lag {lag:.0f} ms")
        clip = min(pacer.ticks // self.ticks_per_clip, len(self.names) - 1)
        t.add_row("clip", f"{clip + 1}" + ("" if self.scores_fn else f"/{len(self.names)}") + f": {self.names[clip]}")
        scores = self.scores_fn() if self.scores_fn is not None else None if st is None else st.scores
        if scores is not None and len(scores):
            self._scores(t, np.asarray(scores))
        if st is not None and st.mc_sent and st0 is not None and st0.mc_sent and pacer.ticks > ticks0:
            ticks = pacer.ticks - ticks0  # the ray engine's counters trail by up to a chunk: rates are close
            t.add_row("packets/s", f"{(st.routed - st0.routed) / dt:,.0f}")
            rates = [(st.mc_sent[e] - st0.mc_sent[e]) / ticks / n * AUDIO_TICKS_PER_SECOND for e, n in self.pes]
            t.add_row("spike rate per PE (Hz)", " ".join(f"{r:.0f}" for r in rates))
        self.prev = (pacer.ticks, st, now)
        return t

    def _scores(self, t, scores):
        """The last finished clip: the word heard, its class scores, and the accuracy so far."""
        done = np.flatnonzero(~np.isnan(scores).any(axis=1))
        if not len(done):
            return
        k = done[-1]
        p = np.exp(scores[k] - scores[k].max())
        p /= p.sum()
        top = np.argsort(-p)[:4]
        truth = self.labels[k]
        mark = "" if truth < 0 else ("  [green]correct[/]" if top[0] == truth else
                                     f"  [red]was {self.classes[truth]}[/]")
        t.add_row("heard", f"clip {k + 1}: [bold]{self.classes[top[0]]}[/]{mark}")
        t.add_row("scores", "  ".join(f"{self.classes[c]} {p[c]:.2f}" for c in top))
        known = self.labels[done] >= 0
        if known.any():
            pred = scores[done].argmax(1)
            acc = float((pred[known] == self.labels[done][known]).mean())
            t.add_row("accuracy so far", f"{acc:.3f} over {int(known.sum())} clips")


class AudioFeed:
    """The driver's end of the feed: serves one source's samples to the host endpoint and collects the class
    scores it sends back (host/live.py says how). `max_samples` ends the audio there (--seconds, --clips).

    Attributes read by the driver: scores (window -> float32 scores, filled by poll()), samples (sent so far),
    ended (set once the end of the audio was sent), error (what reading the source raised, or None). The scores
    are read by the driver's own thread (poll, from its progress callback), not by a thread of the feed: on a
    busy machine every thread that wakes up costs the engine's thread the interpreter lock for a while."""

    def __init__(self, source, *, bind: str = "127.0.0.1", max_samples: int | None = None):
        from .engines.ray_engine.door import Door

        self.source, self.max_samples = source, max_samples
        self.door = Door(bind, backlog=4)
        self.scores: dict[int, np.ndarray] = {}
        self.samples = 0
        self.ended = threading.Event()
        self.error: Exception | None = None
        self.stopping = False
        self.conn = None
        self.thread = threading.Thread(target=self._serve, name="s2emu-audio-feed", daemon=True)
        self.thread.start()

    def host_config(self) -> dict:
        return {"address": list(self.door.address), "authkey": self.door.authkey}

    def stop(self) -> None:
        """End the audio at the next read (Ctrl-C on a live source): the windows heard so far are finished."""
        self.stopping = True

    def _serve(self):
        try:
            conn, _ = self.door.accept()
        except Exception:  # noqa: BLE001 - the door closed: the run ended before the host connected
            self.ended.set()
            return
        self.conn = conn
        try:
            self.source.start()
            while not self.stopping:
                x = self.source.read()
                if x is None:
                    break
                if self.max_samples is not None:
                    x = x[:max(0, self.max_samples - self.samples)]
                if len(x):
                    conn.send_bytes(np.ascontiguousarray(x, "<f4").tobytes())
                    self.samples += len(x)
                if self.max_samples is not None and self.samples >= self.max_samples:
                    break
        except (OSError, EOFError):  # the host went away (the run ended or failed): nothing more to send
            pass
        except Exception as e:  # noqa: BLE001 - the source's error ends the run with its message
            self.error = e if isinstance(e, AudioError) else AudioError(f"{self.source.name}: {e}")
        finally:
            try:
                self.source.stop()
            except Exception:  # noqa: BLE001
                pass
            self.ended.set()  # samples is final
            try:
                conn.send_bytes(b"")
            except (OSError, EOFError):
                pass

    def poll(self) -> None:
        """Take the scores the host has sent so far (without waiting)."""
        conn = self.conn
        try:
            while conn is not None and conn.poll():
                msg = conn.recv_bytes()
                (k,) = struct.unpack_from("<q", msg)
                self.scores[k] = np.frombuffer(msg, "<f4", offset=8).copy()
        except (OSError, EOFError):  # the host is gone: the run has ended, or its failure is on its way
            self.conn = None

    def close(self):
        self.stopping = True
        try:
            self.door.close()
        except Exception:  # noqa: BLE001 - closing twice, or while accept() is waiting
            pass
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass


LIVE_SOURCES = ("-", "mic")
LIVE_HOURS = 8.0  # a live source without --clips / --seconds: the chip is built for at most this much audio


class AudioEnded(Exception):
    """Raised from the progress callback once live audio has ended and its last window was heard: the engines run
    a fixed number of ticks, and this ends the run early (run_feed catches it)."""


def n_windows(samples: int, window: int, hop: int) -> int:
    """Windows of `window` samples every `hop` samples that cover `samples` samples of audio (the last one padded
    with zeros; at least one)."""
    return 1 if samples <= window else 1 + -(-(samples - window) // hop)


def _feed_bind(engine: str, address: str | None) -> str:
    """Where the driver's audio feed listens: loopback, unless the ray engine joins a cluster (then the address
    this machine reaches the cluster from, where the host actor, on another node perhaps, can reach back)."""
    if engine != "ray" or not address or address in ("auto", "local"):
        return "127.0.0.1"
    import socket

    host = address.split("://")[-1].rsplit(":", 1)[0]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def check_recipe(recipe) -> None:
    if recipe.data["kind"] != "speech_commands":
        raise S2EmuError(f"stream needs a recipe with audio data (kind 'speech_commands'), not '{recipe.data['kind']}'")


def run_feed(recipe, source, *, hop: int, engine="local", address=None, transport="channels", weights=None,
             pace=True, max_samples=None, pes_per_process=1, window=1, on_window=None, make_view=None,
             console=None) -> dict:
    """Run the chip on the windows of a host/live.py source: a window of one clip every `hop` samples.

    on_window(k, scores) hears each window's class scores in order, as the chip gives them. make_view(build), if
    given, returns a view (a LiveView, or s2emu/detect.py's), started, updated through the pacer and stopped.
    `max_samples` caps the audio (and sizes the chip's run for a live source). Returns the windows' scores
    [K, classes] and what the stream's JSON reports on timing, packets and PEs."""
    check_recipe(recipe)
    spec = feature_spec(recipe.data)
    W = spec.clip_samples
    if not 0 < hop <= W:
        raise S2EmuError(f"a hop of {hop / spec.sample_rate:g} s: it must be > 0 and at most the window "
                         f"({W / spec.sample_rate:g} s)")
    known = getattr(source, "known_samples", None)
    if known is not None and max_samples is not None:
        known = min(known, max_samples)
    cap = known if known is not None else (max_samples or int(LIVE_HOURS * 3600 * spec.sample_rate))
    n_max = n_windows(cap, W, hop)
    plan = stream_plan(n_max, False)
    recipe = dataclasses.replace(recipe, record_spikes=(), record_voltage=())
    b = build(recipe, streams=1, weights=weights, load_data=False, plan=plan, window=window)
    if b.clock.frames:
        raise S2EmuError("stream needs a chip that takes a frame per tick as the audio arrives; a BPTT stack split "
                         "over PEs pauses the input while it learns (run it whole on one PE, or use s2emu run)")
    feed = AudioFeed(source, bind=_feed_bind(engine, address), max_samples=cap)
    b.host_config.update(kind="stream", labels=np.full(n_max, -1, np.int64), feature_spec=spec.to_dict(),
                         feed={**feed.host_config(), "window": W, "hop": hop})
    ticks_per_sample = b.clock.ticks_per_sample
    heard: list[np.ndarray] = []  # window k's scores, in order
    status = []
    view = make_view(b) if make_view is not None else None

    def update(p):
        if view is not None:
            view.update(p)

    pacer = Pacer(ticks_per_sample / (hop / spec.sample_rate) if pace else None, on_update=update)
    pacer.start(b.n_ticks)

    def progress(n):
        pacer.advance(n)
        feed.poll()
        while len(heard) in feed.scores and len(heard) < n_windows(feed.samples, W, hop):
            heard.append(feed.scores[len(heard)])
            if on_window is not None:
                on_window(len(heard) - 1, heard[-1])
        if feed.error is not None:
            raise feed.error
        if known is None and feed.ended.is_set() and len(heard) >= n_windows(feed.samples, W, hop):
            raise AudioEnded

    def observe(fn):
        status.append(fn)
        if view is not None:
            view.attach(fn)

    restore = _catch_interrupt(feed, console) if known is None else None
    raw = None
    if view is not None:
        view.start()
    try:
        raw = run_engine(engine, b, progress=progress, address=address, transport=transport, observer=observe,
                         pes_per_process=pes_per_process)
    except AudioEnded:
        pass
    finally:
        pacer.stop()
        if view is not None:
            view.stop()
        feed.close()
        if restore is not None:
            restore()
    if feed.error is not None:
        raise feed.error
    K = n_windows(feed.samples, W, hop)
    scores = (np.asarray(raw.host_results["scores"], np.float32)[:K] if raw is not None
              else np.stack([feed.scores[k] for k in range(K)]))
    timing = pacer.summary()
    if engine != "local":  # the ray driver hears of ticks a chunk at a time while the router runs ahead:
        timing["capacity_factor"] = None  # its sleeps overlap work, so busy time is unknown (use --no-pace)
    last = status[0]() if status else None
    per_pe = []
    for e, c in enumerate(b.pe_configs):
        n = c["hi"] - c["lo"]
        if raw is not None:
            cnt = raw.pe_counters[c["pe_id"]]
            spikes, out = cnt.get("spikes", 0), cnt.get("packets_out", 0)
        else:  # ended early: the live counters (spike packets, at batch 1 one per spike)
            spikes = last.mc_sent[e] if last is not None and last.mc_sent else 0
            out = None
        per_pe.append({"pe": c["pe_id"], "population": c["population"],
                       "spike_rate_hz": spikes / max(pacer.ticks, 1) / max(n, 1) * 100 if n else None,
                       "packets_out": out})
    routed = raw.router_counters["routed"] if raw is not None else (last.routed if last is not None else 0)
    return {"scores": scores, "samples": int(feed.samples), "windows": K, "classes": b.dataset.classes,
            "pes": b.mapping.n_pes, "window": b.window, "timing": timing,
            "required_real_time_factor": ticks_per_sample / (hop / spec.sample_rate) / AUDIO_TICKS_PER_SECOND,
            "packets_per_second": routed / max(timing["wall_seconds"], 1e-9), "per_pe": per_pe,
            "phases": raw.phases if raw is not None else {}, "lag_timeline": pacer.timeline(),
            "sample_rate": spec.sample_rate, "window_samples": W, "ended_early": raw is None}


def _catch_interrupt(feed, console):
    """Ctrl-C on a live source ends its audio (the windows heard so far finish); a second one aborts. Returns the
    function that puts the previous handler back (None where signals cannot be caught: not the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if feed.stopping:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        feed.stop()
        if console is not None:
            console.print("ending the audio here (Ctrl-C again to abort)")

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


class _Names:
    """Names of a live stream's clips, made when asked for: SOURCE@Ks."""

    def __init__(self, source: str, n: int):
        self.source, self.n = source, n

    def __len__(self):
        return self.n

    def __getitem__(self, k):
        return f"{self.source}@{k}s"


def stream_live(recipe, source, *, engine="local", address=None, transport="channels", weights=None, clips=None,
                seconds=None, learn=False, pace=True, console=None, live=True, loop=False, pes_per_process=1,
                window=1, rate=16000, channels=1, stdin=None) -> dict:
    """`s2emu stream --source -|mic`: consecutive 1 s clips of live audio, until it ends (or --clips/--seconds)."""
    from .host.live import open_source as open_live

    check_recipe(recipe)
    if learn:
        raise S2EmuError("--learn needs labelled clips (a corpus), not live audio")
    if loop:
        raise S2EmuError("--loop repeats a corpus or a WAV file; live audio cannot be looped")
    if clips is not None and clips < 1:
        raise S2EmuError(f"--clips must be >= 1, got {clips}")
    spec = feature_spec(recipe.data)
    W = spec.clip_samples
    cap = [c for c in (clips and clips * W, seconds and round(seconds * spec.sample_rate)) if c]
    src = open_live(source, target_rate=spec.sample_rate, rate=rate, channels=channels, stdin=stdin)
    classes = recipe_classes(recipe)
    name = "stdin" if source == "-" else source
    heard: list = []

    def make_view(b):
        if not (live and console is not None):
            return None
        spiking = [(e, c["hi"] - c["lo"]) for e, c in enumerate(b.pe_configs) if c["role"] == "neuron"]
        n = b.clock.n_samples
        return LiveView(console, classes, _Names(name, n), np.full(n, -1), spiking, b.clock.ticks_per_sample,
                        scores=lambda: np.asarray(heard) if heard else None)

    out = run_feed(recipe, src, hop=W, engine=engine, address=address, transport=transport, weights=weights,
                   pace=pace, max_samples=min(cap) if cap else None, pes_per_process=pes_per_process,
                   window=window, on_window=lambda k, s: heard.append(s), make_view=make_view, console=console)
    scores = out["scores"]
    pred = np.nan_to_num(scores, nan=-np.inf).argmax(1)
    timing = out["timing"]
    return {
        "recipe": recipe.name, "engine": engine, "source": source, "clips": int(len(scores)), "learn": False,
        "pes": out["pes"], "window": out["window"], "accuracy": None, "balanced_accuracy": None,
        "chance": 1.0 / len(classes), "n_labelled": 0, "missing_outputs": int(np.isnan(scores).any(axis=1).sum()),
        **timing, "required_real_time_factor": out["required_real_time_factor"],
        "packets_per_second": out["packets_per_second"], "weight_updates": 0, "per_pe": out["per_pe"],
        "results": [{"clip": f"{name}@{k}s", "label": None, "heard": classes[p]} for k, p in enumerate(pred)],
        "phases": out["phases"], "lag_timeline": out["lag_timeline"],
        "audio": {**src.describe(), "seconds": out["samples"] / spec.sample_rate,
                  "padded_seconds": (len(scores) * W - out["samples"]) / spec.sample_rate},
    }


def recipe_classes(recipe) -> tuple[str, ...]:
    from .host.speech_commands import class_names
    return class_names(tuple(recipe.data["words"]))


def stream(recipe, source, *, engine="local", address=None, transport="channels", weights=None, clips=None,
           learn=False, pace=True, console=None, live=True, loop=False, pes_per_process=1, window=1,
           seconds=None, rate=16000, channels=1, stdin=None) -> dict:
    if seconds is not None and (source not in LIVE_SOURCES or not seconds > 0):
        raise S2EmuError(f"--seconds {seconds:g}: " + ("must be > 0" if source in LIVE_SOURCES else
                                                       "applies to live audio (--source - or mic); use --clips"))
    if source in LIVE_SOURCES:
        return stream_live(recipe, source, engine=engine, address=address, transport=transport, weights=weights,
                           clips=clips, seconds=seconds, learn=learn, pace=pace, console=console, live=live,
                           loop=loop, pes_per_process=pes_per_process, window=window, rate=rate,
                           channels=channels, stdin=stdin)
    check_recipe(recipe)
    spec = feature_spec(recipe.data)
    src = open_source(source or recipe.data["path"], spec, words=recipe.data["words"], clips=clips, seed=recipe.seed,
                      loop=loop)
    plan = stream_plan(len(src.labels), learn)
    # a stream may run for hours: no spike or voltage recordings piling up in the PEs (a run records them)
    recipe = dataclasses.replace(recipe, record_spikes=(), record_voltage=())
    b = build(recipe, streams=1, weights=weights, load_data=False, plan=plan, window=window)
    if b.clock.frames:
        raise S2EmuError("stream needs a chip that takes a frame per tick as the audio arrives; a BPTT stack split "
                         "over PEs pauses the input while it learns (run it whole on one PE, or use s2emu run)")
    b.host_config.update(kind="stream", audio=src.audio, clip_audio=src.order, labels=src.labels,
                         feature_spec=spec.to_dict())
    classes = b.dataset.classes
    # the audio clock: one clip (S = T + 2 ticks) per clip duration, i.e. 102 ticks per second of audio
    clip_seconds = spec.clip_samples / spec.sample_rate
    ticks_per_sample = b.clock.ticks_per_sample
    spiking = [(e, c["hi"] - c["lo"]) for e, c in enumerate(b.pe_configs) if c["role"] == "neuron"]
    view = LiveView(console, classes, src.names, src.labels, spiking, ticks_per_sample,
                    enabled=live and console is not None)
    pacer = Pacer(ticks_per_sample / clip_seconds if pace else None, on_update=view.update)
    pacer.start(b.n_ticks)
    view.start()
    try:
        raw = run_engine(engine, b, progress=pacer.advance, address=address, transport=transport,
                         observer=view.attach if view.enabled else None, pes_per_process=pes_per_process)
    finally:
        pacer.stop()
        view.stop()
    hr = raw.host_results
    timing = pacer.summary()
    if engine != "local":  # the ray driver hears of ticks a chunk at a time while the router runs ahead:
        timing["capacity_factor"] = None  # its sleeps overlap work, so busy time is unknown (use --no-pace)
    per_pe = []
    for c in b.pe_configs:
        cnt = raw.pe_counters[c["pe_id"]]
        n = c["hi"] - c["lo"]
        per_pe.append({"pe": c["pe_id"], "population": c["population"],
                       "spike_rate_hz": cnt.get("spikes", 0) / raw.ticks / max(n, 1) * 100 if n else None,
                       "packets_out": cnt.get("packets_out", 0)})
    return {
        "recipe": recipe.name, "engine": engine, "source": str(source or recipe.data["path"]),
        "clips": len(src.labels), "learn": learn, "pes": b.mapping.n_pes, "window": b.window,
        "accuracy": hr["accuracy"], "balanced_accuracy": hr["balanced_accuracy"], "chance": hr["chance"],
        "n_labelled": hr["n_labelled"], "missing_outputs": hr["missing_outputs"],
        **timing,
        "required_real_time_factor": ticks_per_sample / clip_seconds / AUDIO_TICKS_PER_SECOND,
        "packets_per_second": raw.router_counters["routed"] / timing["wall_seconds"],
        "weight_updates": int(sum(c.get("updates", 0) for c in raw.pe_counters.values())),
        "per_pe": per_pe,
        "results": [{"clip": name, "label": (classes[y] if y >= 0 else None), "heard": classes[p]}
                    for name, y, p in zip(src.names, hr["labels"], hr["predictions"])],
        "phases": raw.phases,
        "lag_timeline": pacer.timeline(),
    }
