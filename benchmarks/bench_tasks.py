"""What each cell remembers: every memory task, a fixed small budget per run, bptt 1 against bptt
covering the sequence, each metric beside its chance level.

    python benchmarks/bench_tasks.py                       # a few minutes on 2 CPU cores
    python benchmarks/bench_tasks.py --gated-from quick_results --sequences 400

Models, one layer of state 32 each: the best gated configuration of a results folder
(``--gated-from``, by mean val loss; default: the README's quick sweep if it is here, else every
switch on), GRU, LSTM, ESN (its ridge readout: nothing is trained through time, so bptt does not
apply) and ESGP. Each trains ``--sequences`` batches of ``--batch-size`` sequences of its task
(time steps = sequences x the task's length), once with the state detached after every step
(bptt 1) and once with truncated BPTT over the whole sequence (bptt T). A figure is one run of
one seed: read differences smaller than a few hundredths as noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASKS = {  # small enough for a laptop; the defaults of gatedrnn.spec.config.TASK_KEYS are larger
    "copy": {"length": 10},
    "adding": {"length": 20},
    "delayed": {"symbols": 8, "delay": 3, "length": 20},
    "mackey-glass": {"horizon": 1, "length": 20},
    "digits": {},
}


def best_gated(folder: str | None) -> dict:
    from gatedrnn.spec.config import SWITCHES
    from gatedrnn.analysis.results import load
    from gatedrnn.analysis.stats import rank_configurations
    import warnings

    if folder and Path(folder).is_dir():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranked, metric = rank_configurations(load(folder))
        ranked = ranked[ranked["cell"].fillna("gated") == "gated"] if "cell" in ranked else ranked
        ranked = ranked[ranked["task"].fillna("bytes") == "bytes"] if "task" in ranked else ranked
        if len(ranked):
            row = ranked.iloc[0]
            return {k: bool(row[k]) for k in SWITCHES}
    return {k: True for k in SWITCHES}


def one(job: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    from gatedrnn.spec.config import RNNConfig, TrainSettings
    from gatedrnn.data.tasks import task_of
    from gatedrnn.training.trainer import train

    name, model, bptt, switches, args = job
    cell = {"gated": "gated", "esn": "esn"}.get(model, model)
    extra = {"readout": "ridge"} if model == "esn" else {}
    config = RNNConfig(cell=cell, n_layers=1, state_size=32, task=name, bptt=bptt, **TASKS[name],
                       **(switches if cell == "gated" else {}), **extra)
    steps = task_of(config).steps
    settings = TrainSettings(steps=args.sequences * steps, batch_size=args.batch_size, history=100, lr=args.lr,
                             log_every=steps, eval_every=0, checkpoint_every=0, device="cpu", val_streams=256,
                             seed=args.seed)
    t0 = time.perf_counter()
    r = train(config, settings)
    return {"task": config.task_label(), "model": model if model != "gated" else "gated " + config.short().split()[0],
            "bptt": "1" if bptt == 1 else "T", "metrics": r["test metrics"], "chance": r["chance"],
            "updates": r["optimizer updates"], "seconds": time.perf_counter() - t0}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gated-from", default="quick_results", help="results folder to take the best gated configuration from")
    p.add_argument("--sequences", type=int, default=600, help="batches of sequences per run (%(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch (%(default)s)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (%(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time, one thread each (%(default)s)")
    args = p.parse_args(argv)
    switches = best_gated(args.gated_from)
    jobs = []
    for name in args.tasks:
        from gatedrnn.spec.config import RNNConfig
        from gatedrnn.data.tasks import task_of

        T = task_of(RNNConfig(cell="gru", task=name, **TASKS[name])).steps
        for model in ("gated", "gru", "lstm", "esn", "esgp"):
            for bptt in ((1,) if model == "esn" else (1, T)):
                jobs.append((name, model, bptt, switches, args))
    print(f"{len(jobs)} runs: {args.sequences} batches of {args.batch_size} sequences each, state 32, one layer, "
          f"lr {args.lr}, seed {args.seed}, {args.jobs} at a time")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, jobs))
    task = None
    for r in rows:
        if r["task"] != task:
            task = r["task"]
            levels = ", ".join(f"{k} {v:.4f}" for k, v in r["chance"].items())
            which = "persistence" if task.startswith("mackey-glass") else "chance"
            print(f"\n{task}   [{which}: {levels}]")
            print(f"  {'model':<16} {'bptt':>4}  " + "  ".join(f"{k:>15}" for k in r["metrics"]) +
                  f"  {'updates':>8}  {'seconds':>7}")
        print(f"  {r['model']:<16} {r['bptt']:>4}  " + "  ".join(f"{v:>15.4f}" for v in r["metrics"].values()) +
              f"  {r['updates']:>8}  {r['seconds']:>7.1f}")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
