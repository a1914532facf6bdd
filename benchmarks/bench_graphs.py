"""How much a CUDA graph saves on one solo training step (a measurement for issue 14's design,
not the trainer's code path): the gated cell's hand-written step (forward, backward, the fused
Adam call and the moving average) captured once and replayed, each step's bytes copied into
static buffers, against the same step run eagerly. Checks that both give the same parameters.

Usage: python benchmarks/bench_graphs.py [--steps 2000]   (needs a CUDA device)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatedrnn.spec.config import RNNConfig, TrainSettings  # noqa: E402
from gatedrnn.training.rules import adam_stepper  # noqa: E402
from gatedrnn.training.trainer import MA_DECAY, Run  # noqa: E402

F, T = False, True
CONFIGS = {"a": RNNConfig(F, F, F, F, T, F, T, n_layers=1, state_size=32),
           "b": RNNConfig(F, T, F, T, T, F, T, n_layers=2, state_size=256),
           "c": RNNConfig(T, T, T, T, T, T, T, n_layers=3, state_size=256)}


def make_run(config: RNNConfig, steps: int) -> Run:
    run = Run(config, TrainSettings(steps=10 * steps + 100, batch_size=256, history=1000, device="cuda",
                                    eval_every=0))
    run.train_steps(20)  # creates the optimizer's state and the first window
    return run


def eager(run: Run, steps: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    run.train_steps(run.step + steps)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def graphed(run: Run, steps: int) -> float:
    model, stepper = run.model, adam_stepper(run.optimizer)
    x = run.inputs[run.pos].clone()
    y = run.targets[run.pos].clone()
    states = [s.clone() for s in run.states]

    def step() -> None:
        loss, new = model.train_step(x, y, states)
        stepper()
        for s, n in zip(states, new):
            s.copy_(n)
        run.ma.lerp_(loss, 1 - MA_DECAY)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        for _ in range(3):
            x.copy_(run.inputs[run.pos])
            y.copy_(run.targets[run.pos])
            step()
            run._advance()
            if run.window is None:
                run._new_window()
                for s in states:
                    s.zero_()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        if run.window is None:
            run._new_window()
            for s in states:
                s.zero_()
        x.copy_(run.inputs[run.pos])
        y.copy_(run.targets[run.pos])
        graph.replay()
        run._advance()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def same_result(config: RNNConfig, steps: int) -> float:
    """Largest parameter difference between eager and graphed runs over the same steps."""
    a, b = make_run(config, steps), make_run(config, steps)
    eager(a, steps + 3)
    graphed(b, steps)  # its warm-up takes 3 steps eagerly on a side stream
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.model.parameters(), b.model.parameters()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_graphs.py needs a CUDA device")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, batch 256, history 1000, "
          f"{args.steps} timed steps, solo hand-written step")
    print(f"{'':2} {'config':<16} {'eager ms':>9} {'graph ms':>9} {'speed-up':>9} {'max |Δparam| (300 steps)':>26}")
    for key, config in CONFIGS.items():
        e = eager(make_run(config, args.steps), args.steps)
        g = graphed(make_run(config, args.steps), args.steps)
        diff = same_result(config, 300)
        print(f"{key:2} {config.short():<16} {1e3 * e:>9.3f} {1e3 * g:>9.3f} {e / g:>8.1f}x {diff:>26.3g}")


if __name__ == "__main__":
    main()
