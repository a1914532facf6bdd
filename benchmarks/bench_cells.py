"""Cells compared at an equal wall-clock budget per run (issue 5's figures).

Each variant is calibrated (steps/s over a short run), then trained from scratch for as many
steps as the budget allows (a fixed number, so the run itself is reproducible), and its held-out
bits per byte measured. Beside them: the corpus's byte n-gram cross-entropies on the same split.

Usage: python benchmarks/bench_cells.py [--budget 60] [--state-size 128] [--jobs 2]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GATED_BEST = dict(use_input_gate=False, use_forget_gate=False, use_output_gate=True, use_state_gate=True,
                  use_new_state=True, use_old_state=True, use_residual=True)
VARIANTS = [  # (label, config keys); bptt 32 wherever a recurrent weight learns
    *[(f"gated ..OSNOR bptt {k}", dict(GATED_BEST, bptt=k)) for k in (1, 32)],
    *[(f"{c} bptt {k}", dict(cell=c, bptt=k)) for c in ("gru", "lstm", "rnn", "esgp") for k in (1, 32)],
    ("esn sgd readout", dict(cell="esn", readout="sgd")),
    ("esn ridge readout", dict(cell="esn", readout="ridge")),
]


def _one(args):
    label, keys, budget, size, layers, batch, history = args
    import torch

    torch.set_num_threads(1)
    from gatedrnn import RNNConfig, TrainSettings
    from gatedrnn.training.trainer import Run, train

    config = RNNConfig(n_layers=layers, state_size=size, **keys)
    settings = TrainSettings(steps=10**9, batch_size=batch, history=history, device="cpu", eval_every=0)
    run = Run(config, settings)
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < min(5.0, budget / 10):
        n += 100
        run.train_steps(n)
    sps = n / (time.perf_counter() - t0)
    steps = max(50, int(budget * sps) // 50 * 50)
    t0 = time.perf_counter()
    r = train(config, settings.replace(steps=steps))
    return label, steps, time.perf_counter() - t0, r["val bpb"], r["parameters"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=60.0, help="seconds of training per run")
    p.add_argument("--state-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--history", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    args = p.parse_args()
    from gatedrnn.data.corpus import load_corpus, ngram_cross_entropies

    corpus = load_corpus()
    h = ngram_cross_entropies(corpus)
    print(f"built-in corpus, {len(corpus)} bytes; budget {args.budget:.0f} s per run, state {args.state_size}, "
          f"{args.layers} layer(s), batch {args.batch_size}, history {args.history}, 1 thread per run", flush=True)
    jobs = [(label, keys, args.budget, args.state_size, args.layers, args.batch_size, args.history)
            for label, keys in VARIANTS]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        rows = pool.map(_one, jobs)
    print(f"{'variant':24} {'steps':>8} {'seconds':>8} {'params':>8} {'val bits/byte':>14}")
    for label, steps, secs, bpb, params in sorted(rows, key=lambda r: r[3]):
        print(f"{label:24} {steps:8d} {secs:8.1f} {params:8d} {bpb:14.3f}")
    for k in (2, 3):
        print(f"{'order-%d byte n-gram' % k:24} {'':8} {'':8} {'':8} {h[k] / math.log(2):14.3f}")


if __name__ == "__main__":
    main()
