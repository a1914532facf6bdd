"""Training speed against a fixed compute yardstick (issue 2's targets).

For three reference configurations at batch 256, history 1000, prints:
  steps/s          measured training steps per second (gatedrnn.trainer.Run.train_steps)
  bound steps/s    the compute bound: one step's matrix-multiply FLOPs (forward and both
                   backward products of one Linear per weight matrix of DESIGN.md, plus the
                   readout) divided by the matmul throughput torch reaches at exactly those
                   shapes, measured in this process. A fixed yardstick: fusing shows as a gain.
  ratio            steps/s / bound steps/s (the median of the rounds' ratios), and the range of
                   the rounds' ratios
  batch share      share of step time spent building batches (window gather)
  peak MB          peak memory of the run (process RSS on CPU, max allocated on CUDA)

The host's cores are shared and its throughput drifts by tens of percent from minute to minute,
so the run alternates seven rounds of (a training chunk, the yardstick), each ratio taken under
the same conditions. Both sides use the same statistic: a chunk's step time is the median of its
five parts, a shape's matmul time the median of five timings; steps/s, bound steps/s and the
ratio are the medians over the rounds.

Usage: python benchmarks/bench_train.py [--steps 300] [--device cpu] [--only a b c] [--autograd]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatedrnn.config import RNNConfig, TrainSettings  # noqa: E402
from gatedrnn.data import load_corpus  # noqa: E402
from gatedrnn.model import ByteModel  # noqa: E402
from gatedrnn.trainer import Run, resolve_device  # noqa: E402

F, T = False, True
ROUNDS = 7
REFERENCE = {
    "a": RNNConfig(F, F, F, F, T, F, T, n_layers=1, state_size=32),
    "b": RNNConfig(F, T, F, T, T, F, T, n_layers=2, state_size=256),
    "c": RNNConfig(T, T, T, T, T, T, T, n_layers=3, state_size=256),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, min_seconds=0.1, repeats=5) -> float:
    """Median of ``repeats`` timings of ``fn`` (each at least ``min_seconds``), per call. The
    median, as for the training chunks: the same statistic on both sides of the ratio, robust to
    the moments when the shared host takes the cores away."""
    fn(); fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            if n % 5 == 0:
                _sync(device)
                elapsed = time.perf_counter() - t0
                if elapsed > min_seconds:
                    break
        times.append(elapsed / n)
    return statistics.median(times)


def compute_bound(model: ByteModel, batch: int, device: torch.device) -> tuple[float, float]:
    """(seconds, FLOPs) of one step's matmuls at one-Linear-per-W shapes, fwd + both bwd.
    Each shape's time is the median of a few short timings."""
    seconds = flops = 0.0
    for _name, n_in, n_out in model.weight_shapes():
        x = torch.randn(batch, n_in, device=device)
        w = torch.randn(n_out, n_in, device=device)
        dy = torch.randn(batch, n_out, device=device)

        def products():
            torch.mm(x, w.t())  # forward
            torch.mm(dy, w)  # grad wrt input
            torch.mm(dy.t(), x)  # grad wrt weight

        seconds += _time(products, device, min_seconds=0.02, repeats=5)
        flops += 3 * 2 * batch * n_in * n_out
    return seconds, flops


def bench(name: str, config: RNNConfig, steps: int, device: str, corpus, autograd: bool = False) -> dict:
    settings = TrainSettings(steps=10 * steps, batch_size=256, history=1000, device=device, eval_every=0)
    run = Run(config, settings, corpus, autograd=autograd)
    dev = run.device
    run.train_steps(min(50, steps // 4))  # warm-up
    rounds, parts = ROUNDS, 5
    sub = max(1, steps // (rounds * parts))
    step_times, bound_times, ratios = [], [], []
    for _ in range(rounds):  # rounds of (training chunk, yardstick): each ratio under the same conditions
        times = []
        for _ in range(parts):  # the chunk's step time: the median of its parts
            _sync(dev)
            t0 = time.perf_counter()
            run.train_steps(run.step + sub)
            _sync(dev)
            times.append((time.perf_counter() - t0) / sub)
        step_times.append(statistics.median(times))
        bound_seconds, flops = compute_bound(run.model, settings.batch_size, dev)
        bound_times.append(bound_seconds)
        ratios.append(bound_seconds / step_times[-1])
    step_seconds = statistics.median(step_times)
    window_seconds = _time(lambda: run.sampler.window(run.sampler.next_offsets()), dev)
    batch_share = window_seconds / (settings.history * step_seconds)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "name": name, "config": config.short(), "params": run.model.num_parameters(),
        "steps/s": 1 / step_seconds, "bound steps/s": 1 / statistics.median(bound_times),
        "ratio": statistics.median(ratios), "ratio range": (min(ratios), max(ratios)),
        "GFLOP/s": flops / step_seconds / 1e9,
        "batch share": batch_share, "peak MB": peak,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", nargs="+", choices=sorted(REFERENCE), default=sorted(REFERENCE))
    p.add_argument("--autograd", action="store_true",
                   help="train the gated cell through autograd instead of its hand-written backward")
    args = p.parse_args()
    corpus = load_corpus()
    dev = resolve_device(args.device)
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, "
          f"batch 256, history 1000, {args.steps} timed steps, "
          f"{'autograd' if args.autograd else 'hand-written'} backward")
    print(f"{'':2} {'config':16} {'params':>9} {'steps/s':>9} {'bound':>9} {'ratio':>6} {'range':>10} "
          f"{'GFLOP/s':>8} {'batch%':>7} {'peak MB':>8}")
    for name in args.only:
        r = bench(name, REFERENCE[name], args.steps, args.device, corpus, args.autograd)
        print(f"{r['name']:2} {r['config']:16} {r['params']:9d} {r['steps/s']:9.1f} {r['bound steps/s']:9.1f} "
              f"{r['ratio']:6.2f} {r['ratio range'][0]:5.2f}-{r['ratio range'][1]:4.2f} {r['GFLOP/s']:8.2f} {100 * r['batch share']:6.2f}% {r['peak MB']:8.0f}",
              flush=True)


if __name__ == "__main__":
    main()
