"""`s2emu stream`: keyword spotting on audio streamed in real time through the emulated chip.

The host computes features as the audio arrives (host/stream.py); a Pacer holds the engine to the audio clock;
a rich live view on stderr shows the clip, the word the chip heard with its class scores, spike rates per PE,
packets per second, the real-time factor and the lag. Returns one JSON-able dict.
"""

from __future__ import annotations

import dataclasses

import time

import numpy as np

from .build import build
from .engines import run_engine
from .errors import S2EmuError
from .host.datasets import feature_spec
from .host.stream import Pacer, open_source, stream_plan

AUDIO_TICKS_PER_SECOND = 100.0  # one 10 ms frame per tick


class LiveView:
    """Renders the stream's state at most 4 times a second (rich Live on stderr), from the engine's
    LiveStatus (engines/__init__.py), the same on every engine."""

    def __init__(self, console, classes, names, labels, pes, ticks_per_clip, enabled=True):
        self.console, self.classes, self.names, self.enabled = console, classes, names, enabled
        self.labels = np.asarray(labels)
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
        t.add_row("ticks", f"{pacer.ticks:,} / {pacer.total:,}   {(pacer.ticks - ticks0) / dt:,.0f} ticks/s   "
                           f"real-time factor {(pacer.ticks - ticks0) / dt / AUDIO_TICKS_PER_SECOND:.2f}   "
                           f"lag {lag:.0f} ms")
        clip = min(pacer.ticks // self.ticks_per_clip, len(self.names) - 1)
        t.add_row("clip", f"{clip + 1}/{len(self.names)}: {self.names[clip]}")
        if st is not None and st.scores is not None:
            self._scores(t, np.asarray(st.scores))
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


def stream(recipe, source, *, engine="local", address=None, transport="channels", weights=None, clips=None,
           learn=False, pace=True, console=None, live=True, loop=False, pes_per_process=1, window=1) -> dict:
    if recipe.data["kind"] != "speech_commands":
        raise S2EmuError(f"stream needs a recipe with audio data (kind 'speech_commands'), not '{recipe.data['kind']}'")
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
