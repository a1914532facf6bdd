"""The default sweep's wall time on one device, projected from a stratified sample (solo
training, as a worker runs it today; issue 14's baseline before packing and CUDA graphs).

The default grid has six groups (n_layers 1-3 x state_size 32/256). From each group, ``--per-group``
configurations (evenly spread over the group's switch combinations) are trained for
``--steps`` timed steps at batch 256, history 1000, after a warm-up; a group's mean seconds per
step times its size times 10 000 steps is its projected time, and their sum the sweep's time in
one process. Also printed: launches per step, counted as aten ops dispatched (each is a kernel
launch on a GPU), which bound a step's time when its arithmetic is small.

Usage: python benchmarks/bench_gpu.py [--device cuda] [--per-group 4] [--steps 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatedrnn.spec.config import TrainSettings  # noqa: E402
from gatedrnn.data.corpus import load_corpus  # noqa: E402
from gatedrnn.spec.grid import default_grid  # noqa: E402
from gatedrnn.training.trainer import Run  # noqa: E402

SWEEP_STEPS = 10_000


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config, device: str, steps: int, corpus) -> tuple[float, float]:
    """(seconds per step, aten ops per step) of one configuration's solo training."""
    run = Run(config, TrainSettings(steps=10 * steps + 100, batch_size=256, history=1000, device=device,
                                    eval_every=0), corpus)
    run.train_steps(30)  # warm-up: allocations, handles, the first window
    with _Count() as count:
        run.train_steps(run.step + 10)
    ops = count.n / 10
    _sync(run.device)
    t0 = time.perf_counter()
    run.train_steps(run.step + steps)
    _sync(run.device)
    return (time.perf_counter() - t0) / steps, ops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--per-group", type=int, default=4)
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    corpus = load_corpus()
    grid = default_grid()
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}, {name}, batch 256, history 1000, {args.steps} timed steps, "
          f"{args.per_group} configurations per group; solo training (one configuration per process step)")
    print(f"{'group':<10} {'configs':>7} {'sampled':>7} {'ms/step':>8} {'range':>13} {'ops/step':>8} "
          f"{'projected':>10}")
    total = 0.0
    for layers in (1, 2, 3):
        for size in (32, 256):
            group = [c for c in grid if c.n_layers == layers and c.state_size == size]
            stride = max(1, len(group) // args.per_group)
            sample = group[::stride][: args.per_group]
            results = [measure(c, args.device, args.steps, corpus) for c in sample]
            secs = [r[0] for r in results]
            ops = statistics.mean(r[1] for r in results)
            projected = statistics.mean(secs) * len(group) * SWEEP_STEPS
            total += projected
            print(f"L{layers} d{size:<6} {len(group):>7} {len(sample):>7} {1e3 * statistics.mean(secs):>8.3f} "
                  f"{1e3 * min(secs):>6.3f}-{1e3 * max(secs):<6.3f} {ops:>8.0f} {projected / 60:>8.1f} min")
    print(f"projected default sweep (432 x {SWEEP_STEPS} steps) in one process: {total / 60:.1f} min "
          f"({total / 3600:.2f} h)")


if __name__ == "__main__":
    main()
