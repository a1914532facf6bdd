"""Training speed against a fixed compute yardstick (issue 2's targets).

For three reference configurations at batch 256, history 1000, prints:
  steps/s          measured training steps per second (gatedrnn.training.loop.Loop.train_steps, the one loop)
  bound steps/s    the compute bound: one step's matrix-multiply FLOPs (forward and both
                   backward products of one Linear per weight matrix of DESIGN.md, plus the
                   readout) divided by the matmul throughput torch reaches at exactly those
                   shapes (each shape's products timed three times in a row), measured in this
                   process. A fixed yardstick: fusing, or skipping products, shows as a gain.
  ratio            steps/s / bound steps/s, and the interquartile range of the paired samples'
                   ratios
  batch share      share of step time spent building batches (window gather)
  peak MB          peak memory of the run (process RSS on CPU, max allocated on CUDA)

The host's cores are shared and its throughput drifts by tens of percent within seconds, so the
two sides are sampled in pairs a fraction of a second apart: 40 rounds of (a few training steps,
one pass of the yardstick), and steps/s and bound steps/s are the medians of their samples.

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

from gatedrnn.spec.config import RNNConfig, TrainSettings  # noqa: E402
from gatedrnn.data.corpus import load_corpus  # noqa: E402
from gatedrnn.models.model import ByteModel  # noqa: E402
from gatedrnn.training.trainer import Run, resolve_device  # noqa: E402

F, T = False, True
REFERENCE = {
    "a": RNNConfig(F, F, F, F, T, F, T, n_layers=1, state_size=32),
    "b": RNNConfig(F, T, F, T, T, F, T, n_layers=2, state_size=256),
    "c": RNNConfig(T, T, T, T, T, T, T, n_layers=3, state_size=256),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, min_seconds=0.1, repeats=5) -> float:
    """Median of ``repeats`` timings of ``fn`` (each at least ``min_seconds``), per call."""
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


class Yardstick:
    """One step's matmuls at one-Linear-per-W shapes, forward and both backward products.

    :meth:`sample` times every shape's three products ``reps`` times in a row (after one
    untimed call) and returns the sum over shapes of the mean time: one step's worth of matmul
    time at the throughput torch reaches at those shapes, right now."""

    def __init__(self, model: ByteModel, batch: int, device: torch.device) -> None:
        self.device, self.flops, self.tensors = device, 0.0, []
        for _name, n_in, n_out in model.weight_shapes():
            self.tensors.append((torch.randn(batch, n_in, device=device), torch.randn(n_out, n_in, device=device),
                                 torch.randn(batch, n_out, device=device)))
            self.flops += 3 * 2 * batch * n_in * n_out

    def sample(self, reps: int = 3) -> float:
        total = 0.0
        for x, w, dy in self.tensors:
            for k in range(reps + 1):
                if k == 1:
                    _sync(self.device)
                    t0 = time.perf_counter()
                torch.mm(x, w.t())  # forward
                torch.mm(dy, w)  # grad wrt input
                torch.mm(dy.t(), x)  # grad wrt weight
            _sync(self.device)
            total += (time.perf_counter() - t0) / reps
        return total


def bench(name: str, config: RNNConfig, steps: int, device: str, corpus, autograd: bool = False,
          rounds: int = 40) -> dict:
    settings = TrainSettings(steps=10 * steps, batch_size=256, history=1000, device=device, eval_every=0)
    run = Run(config, settings, corpus, autograd=autograd)
    dev = run.device
    stick = Yardstick(run.model, settings.batch_size, dev)
    run.train_steps(min(50, steps // 4))  # warm-up
    stick.sample()
    chunk = max(1, steps // rounds)
    step_times, bound_times = [], []
    for _ in range(rounds):  # paired samples, a fraction of a second apart: the same conditions
        _sync(dev)
        t0 = time.perf_counter()
        run.train_steps(run.step + chunk)
        _sync(dev)
        step_times.append((time.perf_counter() - t0) / chunk)
        bound_times.append(stick.sample())
    step_seconds, bound_seconds = statistics.median(step_times), statistics.median(bound_times)
    pairs = sorted(b / s for b, s in zip(bound_times, step_times))
    window_seconds = _time(lambda: run.sampler.window(run.sampler.next_offsets()), dev)
    batch_share = window_seconds / (settings.history * step_seconds)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "name": name, "config": config.short(), "params": run.model.num_parameters(),
        "steps/s": 1 / step_seconds, "bound steps/s": 1 / bound_seconds,
        "ratio": bound_seconds / step_seconds,
        "ratio range": (pairs[len(pairs) // 4], pairs[(3 * len(pairs)) // 4]),
        "GFLOP/s": stick.flops / step_seconds / 1e9,
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
