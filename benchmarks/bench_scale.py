"""The queue at scale (issue 41): what a claim, a completion and a heartbeat cost at 500, 5,000,
50,000 and 100,000 configurations, of which all but ``--pending`` are finished.

For each size prints:
  calls/claim, calls/complete, calls/heartbeat   system calls per operation as strace counts them
                          (the stat family, openat, read, getdents64), from three runs of one
                          process under ``strace -f -c``: the warm-up alone, then with 10 claims,
                          then with 10 claims and 10 completions (and 10 heartbeats); their
                          differences divided by 10
  first claim             a new worker's first claim (it reads the journal, or rebuilds it from
                          the folder when it is older than the folder: said so)
  claim ms                the median and 95th percentile of the claims after it, one process
  status s                ``gatedrnn status`` on the folder with a current journal and a checked
                          configuration file; with the file never checked before (each entry
                          validated, once per content); and after a change behind the journal's
                          back (its rebuild)
Then the contention table: claim latency (median, p95) with 1, 8 and 32 processes, each lock kind,
at the smallest and the largest size (each process claims and completes until nothing is left),
once every process has made its first look (a new worker's start, timed in the first table: with
32 processes starting together on 2 cores at 100,000 configurations their starts' CPU would be
what the claims wait for).

Usage: python benchmarks/bench_scale.py [--sizes 500 5000 50000 100000] [--pending 20]
       [--contention-pending 256] [--skip-contention] [--contention-sizes N ...]
       (``--sizes`` with no size: the contention table alone)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatedrnn.spec.grid import checked_path, numbered_configs  # noqa: E402
from gatedrnn.store.queue import Queue  # noqa: E402

FS_CALLS = ("stat", "lstat", "fstat", "newfstatat", "statx", "openat", "read", "getdents64")


configs_of = numbered_configs


def make_folder(root: Path, n: int, pending: int) -> list[dict]:
    """A results folder with n configurations, all but the last ``pending`` finished (plain
    writes: this is a fixture, not the queue's path)."""
    configs = configs_of(n)
    root.mkdir(parents=True)
    for c in configs[: n - pending]:
        (root / f"{c['id']}.json").write_text(json.dumps({**c, "status": "done", "loss": [2.0], "min loss": 2.0}))
    (root.parent / "configs.json").write_text(json.dumps(configs))
    return configs


_OPS = """
import json, sys, time
sys.path.insert(0, {root!r})
from gatedrnn.store.queue import Queue
configs = json.load(open({configs!r}))
q = Queue({folder!r})
c0 = q.claim(configs, "warm")            # the first claim: the journal read or rebuilt, every result checked
q.release(c0) if hasattr(q, "release") else None
claims = [q.claim(configs, "w") for _ in range({claims})]
for c in claims[:{completes}]:
    q.complete(c, {{"id": c.id, "status": "done", "loss": [2.0]}})
for c in claims[{completes}:{completes} + {beats}]:
    q.heartbeat(c, {{"step": 1}})
"""


def strace_counts(folder: Path, configs: Path, claims: int, completes: int, beats: int) -> int:
    """Filesystem system calls of one process doing the warm-up and the operations asked."""
    script = _OPS.format(root=str(ROOT), configs=str(configs), folder=str(folder), claims=claims,
                         completes=completes, beats=beats)
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(["strace", "-f", "-c", "-o", out.name, "-e", "trace=" + ",".join(FS_CALLS),
                        sys.executable, "-c", script], check=True, capture_output=True)
        text = out.read()
    total = 0
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[-1] in FS_CALLS and len(parts) >= 5:
            total += int(parts[3])
    return total


def snapshot_folder(folder: Path) -> Path:
    keep = folder.parent / (folder.name + ".base")
    if keep.exists():
        shutil.rmtree(keep)
    shutil.copytree(folder, keep)
    return keep


def restore(folder: Path, base: Path) -> None:
    shutil.rmtree(folder)
    shutil.copytree(base, folder)


def per_op(folder: Path, base: Path, configs: Path) -> dict[str, float]:
    runs = {}
    for name, args in (("warm", (0, 0, 0)), ("claims", (10, 0, 0)), ("completes", (10, 10, 0)),
                       ("beats", (10, 0, 10))):
        restore(folder, base)
        runs[name] = strace_counts(folder, configs, *args)
    return {"claim": (runs["claims"] - runs["warm"]) / 10, "complete": (runs["completes"] - runs["claims"]) / 10,
            "heartbeat": (runs["beats"] - runs["claims"]) / 10}


def latency(folder: Path, configs: list[dict]) -> tuple[float, list[float]]:
    q = Queue(folder)
    t0 = time.perf_counter()
    first = q.claim(configs, "first")
    first_s = time.perf_counter() - t0
    q.complete(first, {"id": first.id, "status": "done", "loss": [2.0]})
    times = []
    while True:
        t0 = time.perf_counter()
        c = q.claim(configs, "w")
        if c is None:
            break
        times.append(time.perf_counter() - t0)
        q.complete(c, {"id": c.id, "status": "done", "loss": [2.0]})
    return first_s, times


def status_seconds(folder: Path, configs: Path) -> tuple[float, float, float]:
    """`gatedrnn status` with a current journal and a configuration file checked before; the
    same with the file never checked (its record beside it, ``.checked``, removed); and after a
    result deleted behind the journal's back (the journal rebuilt)."""
    def run() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gatedrnn", "status", "--results-dir", str(folder), "--config-file",
                        str(configs)], capture_output=True, cwd=ROOT, check=False)
        return time.perf_counter() - t0
    checked_path(configs).unlink(missing_ok=True)
    unchecked = run()
    current = min(run() for _ in range(2))
    victim = next(p for p in sorted(folder.glob("*.json")))
    victim.unlink()
    rebuilt = run()
    return current, unchecked, rebuilt


def _contend(folder: str, lock: str, configs: list, out, ready, start) -> None:
    times, first = [], True
    try:
        q = Queue(folder, lock=lock)
        q.claim([], f"p{os.getpid()}")  # its first look (a worker's start: the first table's), before the clock
        ready.put(1)
        ready = None
        start.wait()
        while True:
            t0 = time.perf_counter()
            c = q.claim(configs, f"p{os.getpid()}")
            if c is None:
                break
            if not first:
                times.append(time.perf_counter() - t0)
            first = False
            q.complete(c, {"id": c.id, "status": "done", "loss": [2.0]})
    except Exception as e:  # a lock's timeout: said, and the others' figures kept
        if ready is not None:
            ready.put(0)
        out.put(("error", f"{type(e).__name__}: {e}", times))
        return
    out.put(("ok", "", times))


def contention(folder: Path, configs: list[dict], procs: int, lock: str) -> tuple[list[float], list[str]]:
    """``configs``: the folder's finished ones and a batch never seen (each run gets its own).
    Returns the claim times and what went wrong in any process (one line each)."""
    Queue(folder).claim([], "journal")  # the journal made current once, before the clock starts
    ctx = mp.get_context("fork")
    out, ready, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    ps = [ctx.Process(target=_contend, args=(str(folder), lock, configs, out, ready, start)) for _ in range(procs)]
    for p in ps:
        p.start()
    for _ in ps:
        try:
            ready.get(timeout=600)
        except Exception:  # one that died before it was ready: the others start all the same
            break
    start.set()
    times, errors = [], []
    for _ in ps:
        try:
            kind, why, got = out.get(timeout=600)
        except Exception:  # a process that died without a word (killed)
            errors.append("a process said nothing in 600 s")
            break
        times += got
        if kind == "error":
            errors.append(why)
    for p in ps:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    return times, errors


def _ms(xs: list[float]) -> str:
    if not xs:
        return "-"
    xs = sorted(xs)
    return f"{1e3 * statistics.median(xs):.1f} / {1e3 * xs[int(0.95 * (len(xs) - 1))]:.1f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="*", default=[500, 5000, 50000, 100000])
    p.add_argument("--pending", type=int, default=20)
    p.add_argument("--contention-pending", type=int, default=256)
    p.add_argument("--skip-contention", action="store_true")
    p.add_argument("--contention-sizes", type=int, nargs="*", default=None,
                   help="the sizes of the contention table (default: the smallest and the largest of --sizes)")
    a = p.parse_args()
    have_strace = shutil.which("strace") is not None
    print("| configurations | calls/claim | calls/complete | calls/heartbeat | first claim s | claim ms (median / p95) "
          "| status s (current / file unchecked / rebuilt) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for n in a.sizes:
            folder = Path(d) / f"n{n}" / "results"
            configs = make_folder(folder, n, a.pending)
            cfile = folder.parent / "configs.json"
            base = snapshot_folder(folder)
            calls = per_op(folder, base, cfile) if have_strace else {}
            restore(folder, base)
            first, times = latency(folder, configs)
            restore(folder, base)
            Queue(folder).claim([], "journal")
            st = status_seconds(folder, cfile)
            fmt = lambda k: f"{calls[k]:.0f}" if k in calls else "(no strace)"  # noqa: E731
            print(f"| {n} | {fmt('claim')} | {fmt('complete')} | {fmt('heartbeat')} | {first:.2f} | {_ms(times)} | "
                  f"{st[0]:.2f} / {st[1]:.2f} / {st[2]:.2f} |", flush=True)
            shutil.rmtree(folder.parent)
        if a.skip_contention:
            return
        print("\ncontention: claim ms (median / p95), each process claiming and completing until nothing is left")
        print("| configurations | lock | 1 process | 8 processes | 32 processes |")
        print("|---|---|---|---|---|")
        for n in a.contention_sizes or (min(a.sizes), max(a.sizes)):
            folder = Path(d) / f"c{n}" / "results"
            configs = make_folder(folder, n, 0)
            extra = configs_of(n + 6 * a.contention_pending)[n:]  # a fresh batch of pending ones per run
            for j, lock in enumerate(("file", "soft")):
                row, notes = [], []
                for i, k in enumerate((1, 8, 32)):
                    batch = extra[(3 * j + i) * a.contention_pending:(3 * j + i + 1) * a.contention_pending]
                    times, errors = contention(folder, configs + batch, k, lock)
                    row.append(_ms(times) + (f" ({len(errors)} of {k} failed)" if errors else ""))
                    notes += [f"  {lock} lock, {k} processes: {e}" for e in sorted(set(errors))]
                print(f"| {n} | {lock} | " + " | ".join(row) + " |", flush=True)
                for line in notes:
                    print(line, flush=True)
            shutil.rmtree(folder.parent)

if __name__ == "__main__":
    main()
