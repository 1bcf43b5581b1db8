"""s2emu's local engine against NEST 3.10 on an e-prop network of the keyword recipe's size and task length:
80 inputs -> 120 adaptive (ALIF) neurons, fully recurrent -> 12 leaky readouts, 100 steps per sample, learning
on. Simulated ticks per second of both, measured in one run, and their ratio.

    pip install nest-simulator==3.10.0       # not a dependency of s2emu; only this benchmark needs it
    python benchmarks/nest_eprop.py [--samples 32] [--batch-samples 128] [--repeats 3] [--input-rates 0.02,0.2]

Writes nest_eprop.json and nest_eprop.md. Medians over repeats, which go round every run in turn (the ratio
of each round is reported too: the spread within one run).

What is compared, and how it leans:
- s2emu: recipes/eprop_kws.toml on the local engine, one stream (batch 1) and the recipe's batch, training on
  `samples` bundled clips (batch-samples for the batched row) and testing one batch; 13 PEs, per-synapse
  eligibility traces, Adam, the router in the loop. Its time is the whole engine run (host, features in,
  readout, optimizer steps), not only the steps.
- NEST: the same sizes built from NEST's own e-prop models (eprop_iaf_adapt, eprop_readout, eprop_synapse,
  eprop_learning_signal_connection; the "2023" variant, weights updated at spikes), one thread, 1 ms
  resolution, a 10-step learning window at the end of each 100-step sample. Its time is nest.Simulate only;
  building the network is not counted. NEST's inputs are spikes (its e-prop synapses need a spiking
  presynaptic neuron), while the recipe feeds analog log-mel features through a dense 80 x 120 product each
  step; NEST's cost grows with spikes, so it runs at each input spike probability per step in --input-rates
  (a sparse and a dense one) and the ratio is reported for each.
- A batch of B streams is B networks stepped together (B chips), so s2emu's batch rows also give network
  ticks per second (ticks x B / s); NEST would need B copies for the same work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import arguments, write_results

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "eprop_kws.toml"
N_IN, N_REC, N_OUT, STEPS, WINDOW = 80, 120, 12, 100, 10


def nest_run(samples: int, input_rate: float, seed: int) -> dict:
    """Build and simulate the NEST network (in a child process: NEST prints to stdout and keeps global state)."""
    import numpy as np

    import nest

    nest.ResetKernel()
    nest.set(resolution=1.0, local_num_threads=1, rng_seed=seed + 1, print_time=False)
    rng = np.random.default_rng(seed)
    total = samples * STEPS
    gens = nest.Create("spike_generator", N_IN)
    parrots = nest.Create("parrot_neuron", N_IN)
    rec = nest.Create("eprop_iaf_adapt", N_REC, {
        "C_m": 1.0, "E_L": 0.0, "V_m": 0.0, "V_th": 0.6, "I_e": 0.0, "t_ref": 0.0,
        "tau_m": 50.0, "adapt_tau": 1500.0, "adapt_beta": 0.184,  # the recipe's 5 and 150 steps of 10 ms
        "kappa": 0.98, "kappa_reg": 0.98, "c_reg": 0.0, "f_target": 10.0,
        "surrogate_gradient_function": "piecewise_linear", "surrogate_gradient_height": 0.3,
        "surrogate_gradient_width": 1.0, "eprop_isi_trace_cutoff": 100})
    out = nest.Create("eprop_readout", N_OUT, {"C_m": 1.0, "E_L": 0.0, "V_m": 0.0, "I_e": 0.0, "tau_m": 100.0,
                                                 "eprop_isi_trace_cutoff": 100})
    target = nest.Create("step_rate_generator", N_OUT)
    window = nest.Create("step_rate_generator")
    nest.SetDefaults("eprop_synapse", {"optimizer": {"type": "adam", "batch_size": 1, "eta": 1e-3,
                                                     "optimize_each_step": False, "Wmin": -100.0, "Wmax": 100.0}})

    def dense(pre, post, n_pre, n_post, scale):
        w = rng.standard_normal((n_post, n_pre)) * scale / np.sqrt(n_pre)
        if pre == post:
            np.fill_diagonal(w, 0.0)
        t, s = np.nonzero(w)
        nest.Connect(np.array(pre.tolist())[s], np.array(post.tolist())[t], {"rule": "one_to_one"},
                     {"synapse_model": "eprop_synapse", "delay": np.ones(len(t)), "weight": w[t, s]})

    nest.Connect(gens, parrots, "one_to_one", {"synapse_model": "static_synapse", "delay": 1.0})
    dense(parrots, rec, N_IN, N_REC, 1.0)
    dense(rec, rec, N_REC, N_REC, 1.0)
    dense(rec, out, N_REC, N_OUT, 1.0)
    nest.Connect(out, rec, "all_to_all", {"synapse_model": "eprop_learning_signal_connection", "delay": 1.0,
                                          "weight": rng.standard_normal((N_REC, N_OUT)) / np.sqrt(N_OUT)})
    nest.Connect(target, out, "one_to_one", {"synapse_model": "rate_connection_delayed", "delay": 1.0,
                                             "receptor_type": 2})
    nest.Connect(window, out, "all_to_all", {"synapse_model": "rate_connection_delayed", "delay": 1.0,
                                            "receptor_type": 1})
    spikes = rng.random((total, N_IN)) < input_rate
    for i, g in enumerate(gens):
        g.spike_times = (np.nonzero(spikes[:, i])[0] + 1.0).tolist()
    starts = np.arange(samples) * STEPS + 1.0
    labels = rng.integers(0, N_OUT, samples)
    for k, g in enumerate(target):
        g.set(amplitude_times=starts.tolist(), amplitude_values=(labels == k).astype(float).tolist())
    window.set(amplitude_times=np.sort(np.r_[starts, starts + STEPS - WINDOW]).tolist(),
               amplitude_values=[0.0, 1.0] * samples)
    counter = nest.Create("spike_recorder")
    nest.Connect(rec, counter)
    t0 = time.perf_counter()
    nest.Simulate(float(total + 3))
    wall = time.perf_counter() - t0
    hidden_rate = counter.n_events / (N_REC * total)
    return {"ticks": total, "wall_seconds": wall, "ticks_per_second": total / wall,
            "input_spikes_per_step": float(spikes.sum() / total), "hidden_spike_probability": hidden_rate,
            "synapses": len(nest.GetConnections(synapse_model="eprop_synapse"))}


def nest_in_child(samples: int, input_rate: float, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nest.json")
        cmd = [sys.executable, __file__, "--nest-child", path, "--samples", str(samples),
               "--input-rates", str(input_rate), "--seed", str(seed)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"NEST run failed:\n{p.stderr[-3000:]}")
        return json.loads(Path(path).read_text())


def s2emu_run(samples: int, batch: int | None, whole: bool = False) -> dict:
    """whole: each population on one PE of a machine with room for it (16 MiB of SRAM per PE), as NEST holds
    the network: no chip split, same bits (every split gives the same state_digest)."""
    from s2emu.machine import make_machine
    from s2emu.recipe import load_recipe
    from s2emu.runner import run

    recipe = load_recipe(str(RECIPE)).with_overrides(epochs=1, batch=batch)
    if whole:
        pops = tuple(dataclasses.replace(p, max_atoms_per_core=None) for p in recipe.network.populations)
        recipe = dataclasses.replace(recipe, network=dataclasses.replace(recipe.network, populations=pops),
                                     machine=make_machine(sram_bytes=16 * 1024 * 1024))
    # learning on every tick as in NEST: a test pass of one batch only (test samples skip the traces)
    recipe = dataclasses.replace(recipe, data={**recipe.data, "max_train": samples,
                                               "max_test": recipe.schedule.batch})
    r = run(recipe, engine="local")
    b = r["streams"]
    return {"ticks": r["ticks"], "streams": b, "wall_seconds": r["wall_seconds"],
            "ticks_per_second": r["ticks_per_second"], "network_ticks_per_second": r["ticks_per_second"] * b,
            "state_digest": r["state_digest"], "pes": r["pes"]}


def main() -> None:
    ap = arguments(__doc__, repeats=3)
    ap.add_argument("--samples", type=int, default=32, help="training clips (and as many test clips for s2emu)")
    ap.add_argument("--batch-samples", type=int, default=128,
                    help="training (and test) clips of the batched s2emu row (a few batches of 32)")
    ap.add_argument("--input-rates", default="0.02,0.2", help="NEST's input spike probabilities per step")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nest-child", metavar="JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.nest_child:
        Path(args.nest_child).write_text(json.dumps(nest_run(args.samples, float(args.input_rates), args.seed)))
        return
    import nest  # noqa: F401  (fail early, before the long runs, if NEST is missing)

    cases = ([("s2emu local, batch 1", lambda: s2emu_run(args.samples, 1)),
              ("s2emu local, batch 1, one PE per population", lambda: s2emu_run(args.samples, 1, True)),
              ("s2emu local, the recipe's batch", lambda: s2emu_run(args.batch_samples, None))]
             + [(f"NEST 3.10, 1 thread, input p={p}", lambda p=p: nest_in_child(args.samples, float(p), args.seed))
                for p in args.input_rates.split(",")])
    # the repeats go round every case in turn, so each round's runs share the machine's mood of the moment
    runs: dict[str, list] = {label: [] for label, _ in cases}
    for rep in range(args.repeats):
        for label, fn in cases:
            runs[label].append(fn())
            print(f"{label} #{rep + 1}: {runs[label][-1]['ticks_per_second']:.0f} ticks/s", file=sys.stderr)
    rows = []
    for label, rs in runs.items():
        row = {"what": label, **rs[0], "repeats": args.repeats,
               "ticks_per_second": statistics.median(r["ticks_per_second"] for r in rs),
               "all_ticks_per_second": [r["ticks_per_second"] for r in rs],
               "wall_seconds": statistics.median(r["wall_seconds"] for r in rs)}
        if "network_ticks_per_second" in row:
            row["network_ticks_per_second"] = row["ticks_per_second"] * row["streams"]
        rows.append(row)
    ours = rows[0]["ticks_per_second"]
    nest_rows = [r for r in rows if r["what"].startswith("NEST")]
    # the 13-PE split over NEST round by round: the spread of the ratio within one run
    paired = {r["what"]: [a / b for a, b in zip(rows[0]["all_ticks_per_second"], r["all_ticks_per_second"])]
              for r in nest_rows}
    out = {"benchmark": "nest_eprop", "date": time.strftime("%Y-%m-%d"), "samples": args.samples,
           "network": f"{N_IN}-{N_REC}-{N_OUT} ALIF e-prop, {STEPS} steps per sample", "rows": rows,
           "local_batch1_over_nest": {r["what"]: ours / r["ticks_per_second"] for r in nest_rows},
           "local_batch1_whole_over_nest": {r["what"]: rows[1]["ticks_per_second"] / r["ticks_per_second"]
                                            for r in nest_rows},
           "local_batch_over_nest_network_ticks": {r["what"]: rows[2]["network_ticks_per_second"]
                                                   / r["ticks_per_second"] for r in nest_rows},
           "local_batch1_over_nest_by_round": paired,
           "load_average": os.getloadavg()}
    md = [f"e-prop, {out['network']}, {args.samples} training samples; median of {args.repeats} (rounds over "
          "every run in turn); "
          f"{time.strftime('%Y-%m-%d')}. Command: `python benchmarks/nest_eprop.py --repeats {args.repeats}`.", "",
          "| run | ticks | ticks/s | network ticks/s | notes |", "|---|---|---|---|---|"]
    for r in rows:
        notes = (f"{r['pes']} PEs, digest `{r['state_digest'][:12]}`" if "pes" in r else
                 f"{r['synapses']:,} e-prop synapses, {r['input_spikes_per_step']:.1f} input spikes/step, "
                 f"hidden spike probability {r['hidden_spike_probability']:.3f}")
        md.append(f"| {r['what']} | {r['ticks']:,} | {r['ticks_per_second']:,.0f} | "
                  f"{r.get('network_ticks_per_second', r['ticks_per_second']):,.0f} | {notes} |")
    md.append("")
    for k, v in out["local_batch1_over_nest"].items():
        md.append(f"s2emu local (batch 1) / {k}: {v:.2f}x on the chip's 13 PEs, "
                  f"{out['local_batch1_whole_over_nest'][k]:.2f}x with one PE per population; with the recipe's "
                  f"batch, network ticks: {out['local_batch_over_nest_network_ticks'][k]:.1f}x. The 13 PEs "
                  f"round by round: {', '.join(f'{x:.2f}x' for x in paired[k])}.")
    write_results(args.out, "nest_eprop", out, md)


if __name__ == "__main__":
    main()
