"""What the built-in corpus and the memorisation measures cost (issue 39).

Prints:
  load ms            a fresh process's first load of each built-in corpus (gzip, the SHA-256
                     check, the array), median and range over --repeats processes; a process
                     loads it once (functools.lru_cache)
  reads of train     how many times the default settings (10,000 steps x 256 streams) read each
                     corpus's training split
  eval / train step  a forward step of the held-out procedure (no gradient) against a training
                     step, at batch 256, for two configurations: what one evaluation of history
                     H costs in training steps (H x the ratio), and what the default
                     --eval-every adds to a run of the default length

Usage: python benchmarks/bench_corpus.py [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_PROBE = """
import time
t = time.perf_counter()
from gatedrnn.data.corpus import load_corpus
t1 = time.perf_counter()
load_corpus({name!r})
print((time.perf_counter() - t1) * 1e3)
"""


def load_ms(name: str, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", _PROBE.format(name=name)], capture_output=True, text=True,
                              cwd=ROOT, check=True)
        out.append(float(proc.stdout.strip()))
    return out


def eval_ratio(device: str) -> None:
    import torch

    from gatedrnn import RNNConfig, TrainSettings
    from gatedrnn.training.run import Run

    d = TrainSettings()
    evals = d.steps // d.eval_every - 1  # the end's evaluation is there at any interval
    for n_layers, state in ((1, 32), (2, 256)):
        config = RNNConfig(True, True, True, True, True, True, True, n_layers, state)
        s = TrainSettings(steps=400, batch_size=256, history=200, eval_every=0, device=device, val_streams=256)
        run = Run(config, s)
        run.train_steps(50)
        t = time.perf_counter()
        run.train_steps(250)
        train = (time.perf_counter() - t) / 200
        t = time.perf_counter()
        run.evaluate()  # 200 forward steps at 256 streams
        ev = (time.perf_counter() - t) / 200
        per_eval = d.history * ev / train
        print(f"  L{n_layers} d{state}: train step {train * 1e3:.2f} ms, eval step {ev * 1e3:.2f} ms (x{ev / train:.2f}): "
              f"one evaluation at history {d.history} = {per_eval:.0f} training steps; --eval-every {d.eval_every} "
              f"adds {evals} before the end = {100 * evals * per_eval / d.steps:.0f} % of a {d.steps}-step run")
    del torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    from gatedrnn.data.corpus import BUILTIN, PYDOC_TOPICS, load_corpus
    from gatedrnn.spec.config import TrainSettings

    d = TrainSettings()
    for name in (BUILTIN, PYDOC_TOPICS):
        ms = load_ms(name, a.repeats)
        corpus = load_corpus(name)
        print(f"{name}: {len(corpus)} bytes, training split {corpus.n_train}; load {statistics.median(ms):.0f} ms "
              f"(range {min(ms):.0f}-{max(ms):.0f}, {a.repeats} processes); the default settings read the training "
              f"split {d.steps * d.batch_size / corpus.n_train:.2f} times")
    print("evaluation against training (batch 256):")
    eval_ratio(a.device)


if __name__ == "__main__":
    main()
