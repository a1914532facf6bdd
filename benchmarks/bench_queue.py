"""Queue overhead and scheduling overhead (issue 3's figures).

1. Claim and complete latency with 1 and with 8 contending processes, for each lock kind:
   each process claims and completes configurations as fast as it can (no training), over a
   shared results folder; prints the median and 95th percentile per operation.
2. A sweep of 48 tiny configurations with ``training_01_all.py --workers 2``: wall time against
   the sum of the runs' own training times (the scheduling overhead, as a ratio).

3. ``--scale``: the queue at scale (issue 41), benchmarks/bench_scale.py: system calls per claim,
   completion and heartbeat (strace) and claim latency at 500, 5,000, 50,000 and 100,000
   configurations, ``gatedrnn status``'s time, and contention with 1, 8 and 32 processes for each
   lock kind (its own options follow ``--scale``).

Usage: python benchmarks/bench_queue.py [--skip-sweep] [--sweep-steps 300]
       python benchmarks/bench_queue.py --scale [--sizes 500 5000 50000 100000] [--skip-contention]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatedrnn.spec.grid import default_grid, merge_configs  # noqa: E402
from gatedrnn.store.queue import Queue  # noqa: E402


def _contend(folder: str, lock: str, configs: list, out, start) -> None:
    q = Queue(folder, lock=lock)
    claim_t, complete_t = [], []
    start.wait()
    while True:
        t0 = time.perf_counter()
        c = q.claim(configs, "bench")
        t1 = time.perf_counter()
        if c is None:
            break
        claim_t.append(t1 - t0)
        q.complete(c, {"id": c.id, "status": "done", "loss": []})
        complete_t.append(time.perf_counter() - t1)
    out.put((claim_t, complete_t))


def queue_overhead(workers: int, lock: str, n_configs: int = 432) -> tuple[list[float], list[float]]:
    configs = [c.to_dict(with_id=True) for c in default_grid()][:n_configs]
    with tempfile.TemporaryDirectory() as d:
        ctx = mp.get_context("fork")
        out, start = ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_contend, args=(d, lock, configs, out, start)) for _ in range(workers)]
        for p in procs:
            p.start()
        start.set()
        parts = [out.get() for _ in procs]
        for p in procs:
            p.join()
        done = len(list(Path(d).glob("*.json")))
        assert done == len(configs), f"{done} results for {len(configs)} configurations"
    return [x for c, _ in parts for x in c], [x for _, c in parts for x in c]


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {1e3 * statistics.median(xs):6.2f} ms   p95 {1e3 * xs[int(0.95 * (len(xs) - 1))]:6.2f} ms"


def sweep(steps: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        merge_configs(Path(d) / "rnn_configs.json", default_grid(state_sizes=[16], layers=[1]))
        (Path(d) / "results_01_all").mkdir()
        args = ["--workers", "2", "--steps", str(steps), "--batch-size", "16", "--history", "100",
                "--device", "cpu", "--val-streams", "16", "--eval-every", "0"]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "training_01_all.py"), *args], cwd=d, check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        recs = [json.loads(p.read_text()) for p in (Path(d) / "results_01_all").glob("*.json")]
        run_sum = sum(r["end time"] - r["start time"] for r in recs)
        train_sum = sum(r["train seconds"] for r in recs)
        print(f"sweep: {len(recs)} configurations x {steps} steps, 2 workers (1 thread each)")
        print(f"  wall time                          {wall:7.1f} s")
        print(f"  sum of run times (start..end)      {run_sum:7.1f} s   -> wall x 2 / sum = {2 * wall / run_sum:.3f}")
        print(f"  sum of pure training-step times    {train_sum:7.1f} s   -> wall x 2 / sum = {2 * wall / train_sum:.3f}")


def main() -> None:
    if "--scale" in sys.argv:
        import bench_scale

        sys.argv.remove("--scale")
        bench_scale.main()
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--sweep-steps", type=int, default=300)
    args = p.parse_args()
    for lock in ("file", "soft"):
        for workers in (1, 8):
            claim_t, complete_t = queue_overhead(workers, lock)
            print(f"lock={lock:4} workers={workers}: claim {_ms(claim_t)} | complete {_ms(complete_t)}", flush=True)
    if not args.skip_sweep:
        sweep(args.sweep_steps)


if __name__ == "__main__":
    main()
