"""Packed against solo training (issue 13): operations per configuration-step, CPU throughput,
peak memory.

1. aten ops dispatched per configuration-step (each is a kernel launch on a GPU), counted with a
   TorchDispatchMode over ``--count-steps`` steps after a warm-up, for every configuration of the
   default grid solo and for each of its six groups packed whole (the counts do not depend on
   the batch, so they are taken at batch 2): the grid's average and the reference
   configurations (a), (b), (c) of bench_train.py. Packed counts are given for the GPU layout
   (a group is one chunk) and for the CPU's chunks (:func:`gatedrnn.spec.packing.pack_chunk`).
2. Configuration-steps per second on this machine's CPU at batch 256, history 1000: each group
   of the default grid packed (``--steps`` timed steps after a warm-up, 8 times as many at
   state 32) against ``--per-group`` of its configurations solo, spread evenly over its switch
   combinations, each timed over 4 times as many steps.
3. Peak memory: each measurement runs in a fresh process; its peak RSS less a bare process's is
   divided by the members. The 96-member pack of 3 layers x state 256 at batch 256 is also run
   in the GPU layout (one chunk), whose tensors are those a GPU would hold.

Packed counts with the members at three learning rates (``lr`` swept, issue 23) are given
for the GPU layout too.

Usage: python benchmarks/bench_pack.py [--steps 3] [--per-group 8] [--count-steps 100] [--skip-memory]
       [--skip-throughput]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import queue
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import _Count  # noqa: E402
from bench_train import REFERENCE  # noqa: E402
from gatedrnn.spec.config import TrainSettings  # noqa: E402
from gatedrnn.data.corpus import load_corpus  # noqa: E402
from gatedrnn.spec.grid import default_grid  # noqa: E402
from gatedrnn.models.packed import pack_group  # noqa: E402
from gatedrnn.spec.packing import pack_chunk  # noqa: E402
from gatedrnn.training.trainer import PackRun, Run  # noqa: E402

LRS = (3e-4, 1e-3, 3e-3)  # a swept learning rate, as init_experiments.py --lrs gives it


def groups() -> dict[tuple, list]:
    out: dict[tuple, list] = {}
    for config in default_grid():
        out.setdefault(pack_group(config), []).append(config)
    return out


def _steps(run, n: int) -> None:
    run.train_steps(run.step + n)


def count(run, warm: int, n: int) -> float:
    _steps(run, warm)
    counter = _Count()
    with counter:
        _steps(run, n)
    return counter.n / n


def op_counts(n: int, corpus) -> None:
    tiny = TrainSettings(steps=10**9, batch_size=2, history=1000, log_every=10**6, device="cpu")
    solo = {}
    for config in default_grid():
        solo[config.id] = count(Run(config, tiny, corpus), 5, n)
    print(f"\n1. aten ops per configuration-step (counted over {n} steps after 5; batch-independent)")
    print(f"{'':28} {'solo':>8} {'packed, GPU layout':>20} {'packed, CPU chunks':>20} {'GPU, 3 lrs':>12}")
    packed_gpu, packed_cpu, packed_lrs = {}, {}, {}
    for key, members in sorted(groups().items()):
        gpu = count(PackRun(members, tiny, corpus, chunk=len(members)), 5, n)
        cpu = count(PackRun(members, tiny, corpus,
                            chunk=pack_chunk("cpu", key[2], 256)), 5, n)
        # the members at three learning rates (issue 23): one Adam step with a rate per element
        rated = [dataclasses.replace(c, lr=LRS[i % len(LRS)]) for i, c in enumerate(members)]
        lrs = count(PackRun(rated, tiny, corpus, chunk=len(rated)), 5, n)
        packed_gpu[key], packed_cpu[key], packed_lrs[key] = gpu / len(members), cpu / len(members), lrs / len(members)
        mean_solo = statistics.mean(solo[c.id] for c in members)
        print(f"  group L{key[1]} d{key[2]} ({len(members):>2} configs) {mean_solo:8.1f} {gpu / len(members):20.2f} "
              f"{cpu / len(members):20.2f} {lrs / len(members):12.2f}   (a pack step: {gpu:.0f} / {cpu:.0f} / "
              f"{lrs:.0f} ops)")
    total = sum(len(m) for m in groups().values())
    grid_gpu = sum(packed_gpu[k] * len(m) for k, m in groups().items()) / total
    grid_cpu = sum(packed_cpu[k] * len(m) for k, m in groups().items()) / total
    grid_lrs = sum(packed_lrs[k] * len(m) for k, m in groups().items()) / total
    print(f"  default grid average ({total})    {statistics.mean(solo.values()):8.1f} {grid_gpu:20.2f} {grid_cpu:20.2f}"
          f" {grid_lrs:12.2f}   target: <= 4 packed")
    for name, config in REFERENCE.items():
        key = pack_group(config)
        print(f"  reference ({name}) {config.short():<17} {solo[config.id]:8.1f} {packed_gpu[key]:20.2f} "
              f"{packed_cpu[key]:20.2f}   (in its group's pack)")


def _measure(kind: str, key: tuple, steps: int, per_group: int, chunk, out) -> None:
    """In a fresh process: configuration-steps per second and the process's peak RSS."""
    corpus = load_corpus(None)
    if kind == "bare":  # imports and the corpus, nothing trained
        out.put((None, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
        return
    settings = TrainSettings(steps=10**9, batch_size=256, history=1000, log_every=10**6, device="cpu")
    members = groups()[key]
    steps = steps * max(1, 256 // key[2])  # as many configuration-steps at state 32 as at 256, x 8
    if kind == "packed":
        run = PackRun(members, settings, corpus, chunk=chunk)
        _steps(run, 2)
        t = time.perf_counter()
        _steps(run, steps)
        rate = len(members) * steps / (time.perf_counter() - t)
    else:  # evenly spread over the group's switch combinations
        picked = [members[int((i + 0.5) * len(members) / per_group)] for i in range(per_group)]
        seconds = []
        for config in picked:
            run = Run(config, settings, corpus)
            _steps(run, 3)
            t = time.perf_counter()
            _steps(run, 4 * steps)
            seconds.append((time.perf_counter() - t) / (4 * steps))
        rate = 1 / statistics.mean(seconds)
    out.put((rate, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def in_process(*args) -> tuple[float | None, float]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(*args, out))
    proc.start()
    while True:
        try:
            rate, rss_kib = out.get(timeout=5)
            break
        except queue.Empty:
            if not proc.is_alive():
                raise SystemExit(f"the measuring process died (exit {proc.exitcode})") from None
    proc.join()
    return rate, rss_kib / 1024


def throughput(steps: int, per_group: int, memory: bool) -> None:
    print(f"\n2. CPU configuration-steps per second, batch 256, history 1000, {torch.get_num_threads()} threads "
          f"(packed: {steps} steps of the whole group, x 8 at state 32; solo: {per_group} configurations of it, 4 times as many steps each)")
    _, bare = in_process("bare", (), 0, 0, None)
    print(f"{'':28} {'solo':>8} {'packed':>8} {'ratio':>6} {'chunk':>6} {'peak MB per configuration, packed':>36}")
    for key, members in sorted(groups().items()):
        chunk = pack_chunk("cpu", key[2], 256)
        solo, _ = in_process("solo", key, steps, per_group, None)
        packed, rss = in_process("packed", key, steps, per_group, chunk)
        print(f"  group L{key[1]} d{key[2]} ({len(members):>2} configs) {solo:8.1f} {packed:8.1f} {packed / solo:6.2f} "
              f"{chunk:>6} {(rss - bare) / len(members):36.1f}")
    if memory:
        key = ("gated", 3, 256)
        _, rss = in_process("packed", key, 1, 0, len(groups()[key]))
        print(f"\n3. the 96-member pack of 3 layers x state 256, batch 256, in the GPU layout (one chunk): "
              f"peak {(rss - bare) / 1024:.2f} GiB above a bare process ({bare:.0f} MB), "
              f"{(rss - bare) / 96:.0f} MB per configuration")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="timed packed steps per group (%(default)s)")
    p.add_argument("--per-group", type=int, default=8, help="solo configurations timed per group (%(default)s)")
    p.add_argument("--count-steps", type=int, default=100, help="steps over which ops are counted (%(default)s)")
    p.add_argument("--skip-memory", action="store_true", help="skip the one-chunk memory run (a minute or more)")
    p.add_argument("--skip-counts", action="store_true")
    p.add_argument("--skip-throughput", action="store_true", help="only the operation counts")
    args = p.parse_args()
    corpus = load_corpus(None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_counts:
        op_counts(args.count_steps, corpus)
    if not args.skip_throughput:
        throughput(args.steps, args.per_group, not args.skip_memory)


if __name__ == "__main__":
    main()
