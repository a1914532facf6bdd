"""Workers over the queue: the worker loop, launching N workers, signals and live progress.

A worker claims a configuration, trains it with checkpoints, heartbeats from a background
thread, and completes it; it exits when nothing is left to claim (or after ``max_runs``).
SIGINT/SIGTERM make it checkpoint at the next step, release its claim and exit. The launcher
starts N workers as child processes (``python -m gatedrnn.worker``), forwards SIGINT/SIGTERM to
them and shows the sweep's progress until they are done.

Exit statuses: 0 every configuration has a result and none failed; 1 some failed;
2 bad input (one line on stderr); 3 stopped (by a signal or ``--max-runs``) with work left.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3

__all__ = ["WorkerOptions", "run_worker", "launch", "watch", "worker_argv", "format_status", "main",
           "EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_STOPPED"]


@dataclass
class WorkerOptions:
    config_file: str
    results_dir: str
    settings: Any  # TrainSettings
    lease_seconds: float = 120.0
    lock: str = "file"
    max_runs: int | None = None
    threads: int | None = None
    name: str | None = None
    stop: Any = None  # a threading.Event that asks the worker to stop (checkpoint, release, exit)


class ClaimLost(Exception):
    """Another worker took this worker's claim over (its lease expired)."""


class _Heartbeat(threading.Thread):
    """Refreshes the claim every ``interval`` seconds; notes when the claim is lost."""

    def __init__(self, queue, claim, interval: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{claim.id[:8]}")
        self.queue, self.claim, self.interval = queue, claim, interval
        self.progress: dict[str, Any] = {}
        self.lost = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        try:
            if not self.queue.heartbeat(self.claim, self.progress):
                self.lost = True
        except Exception:  # a transient file-system error: try again at the next beat
            pass

    def verify(self) -> None:
        """Before a checkpoint: a fresh heartbeat, or ClaimLost."""
        if not self.lost:
            self.beat()
        if self.lost:
            raise ClaimLost(self.claim.id)

    def update(self, run) -> None:
        self.progress = {"step": run.step, "steps": run.settings.steps, "loss": run.curve[-1] if run.curve else None,
                         "steps per second": run.step / run.train_seconds if run.train_seconds else None,
                         "resumes": run.resumes, "time": time.time()}

    def stop(self) -> None:
        self._stop_event.set()


def _say(name: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} {name}] {message}", flush=True)


def run_worker(options: WorkerOptions) -> int:
    """The worker loop. Returns an exit status (see the module's docstring)."""
    import torch

    from .config import RNNConfig
    from .data import check_length, load_corpus
    from .grid import read_configs
    from .queue import Queue
    from .trainer import CheckpointMismatch, Interrupted, train

    name = options.name or f"{os.uname().nodename}-{os.getpid()}"
    if options.threads:
        torch.set_num_threads(options.threads)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signal.Signals(signum).name

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    if options.stop is not None:  # a stop asked from another thread (the Slurm time limit)
        event = options.stop

        def watch():
            event.wait()
            stop["signal"] = stop["signal"] or "stop request"

        threading.Thread(target=watch, daemon=True, name="stop-watch").start()

    queue = Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock)
    settings = options.settings
    corpus = load_corpus(settings.data)
    check_length(corpus, settings.history)
    interval = min(5.0, options.lease_seconds / 4)
    runs = 0
    _say(name, f"started (pid {os.getpid()}, device {settings.device}, {torch.get_num_threads()} threads)")
    while stop["signal"] is None and (options.max_runs is None or runs < options.max_runs):
        configs = read_configs(options.config_file)
        claim = queue.claim(configs, name)
        if claim is None:
            _say(name, "nothing left to claim")
            break
        config = RNNConfig.from_dict(claim.config)
        ckpt = queue.checkpoint_path(claim.id)
        how = "resuming" if ckpt.exists() else "starting"
        if claim.took_over is not None:
            how += f" (took over from stale claim of {claim.took_over.get('worker')})"
        _say(name, f"{how} {config.short()} {claim.id[:12]} attempt {claim.attempt}")
        hb = _Heartbeat(queue, claim, interval)
        hb.start()
        try:
            result = train(config, settings, checkpoint=ckpt, corpus=corpus,
                           should_stop=lambda: stop["signal"] is not None or hb.lost,
                           before_checkpoint=hb.verify, on_progress=hb.update)
        except (Interrupted, ClaimLost) as e:
            hb.stop()
            if hb.lost or isinstance(e, ClaimLost):
                _say(name, f"lost the claim on {claim.id[:12]} (its lease expired and another worker took it); "
                           "no result written")
                continue
            queue.release(claim)
            _say(name, f"{stop['signal']}: checkpointed {claim.id[:12]} ({e}) and released it")
            break
        except CheckpointMismatch as e:
            hb.stop()
            queue.release(claim)
            print(f"error: {e}", file=sys.stderr, flush=True)
            return EXIT_BAD_INPUT
        except Exception:
            hb.stop()
            tb = traceback.format_exc()
            outcome = queue.fail(claim, tb)
            _say(name, f"{claim.id[:12]} raised {tb.strip().splitlines()[-1]} -> "
                       f"{'recorded as failed' if outcome == 'failed' else 'will be retried'}")
            continue
        hb.stop()
        result["attempts"] = claim.attempt
        result["worker"] = name
        if queue.complete(claim, result):
            runs += 1
            scores = ", ".join(f"{k} {result[k]:.4f}" for k in ("min loss", "val loss") if result.get(k) is not None)
            _say(name, f"finished {config.short()} {claim.id[:12]}: {result['status']}" + (f", {scores}" if scores else ""))
        else:
            _say(name, f"lost the claim on {claim.id[:12]} before completing; result discarded")
    if stop["signal"] is not None:
        return EXIT_STOPPED
    if options.max_runs is not None and runs >= options.max_runs:
        return EXIT_STOPPED
    return EXIT_OK


# ---------------------------------------------------------------------- progress
def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def format_status(status: dict[str, Any], steps: int, labels: dict[str, str]) -> list[str]:
    c = status["counts"]
    running = status["running"]
    rates = [r["progress"].get("steps per second") for r in running if r.get("progress")]
    rate = sum(x for x in rates if x)
    remaining = c["pending"] * steps + sum(
        max(0, steps - (r.get("progress") or {}).get("step", 0)) for r in running)
    eta = remaining / rate if rate else None
    lines = [f"done {c['done']} · diverged {c['diverged']} · failed {c['failed']} · running {c['running']} · "
             f"pending {c['pending']} (of {status['total']}) · ETA {_duration(eta) if remaining else '0m00s'}"]
    for r in sorted(running, key=lambda r: r.get("worker", "")):
        p = r.get("progress") or {}
        loss = p.get("loss")
        sps = p.get("steps per second")
        lines.append(f"  {r.get('worker', '?'):<24} {labels.get(r['id'], r['id'][:12]):<22} "
                     f"step {p.get('step', 0):>7}/{steps:<7} loss {loss if loss is None else f'{loss:.4f}'}  "
                     f"{'?' if not sps else f'{sps:.0f}'} steps/s")
    return lines


def _exit_status(status: dict[str, Any]) -> int:
    c = status["counts"]
    if c["pending"] or c["running"]:
        return EXIT_STOPPED
    return EXIT_FAILED if c["failed"] else EXIT_OK


# ---------------------------------------------------------------------- launcher
def watch(options: WorkerOptions, alive, refresh: float | None = None) -> dict[str, Any]:
    """Show the sweep's progress until ``alive()`` is False; returns the last status."""
    from .config import RNNConfig
    from .grid import read_configs
    from .queue import sweep_status

    tty = sys.stdout.isatty()
    refresh = refresh if refresh is not None else (2.0 if tty else 30.0)
    last_print, last_lines = 0.0, None
    while True:
        running = alive()
        configs = read_configs(options.config_file)
        labels = {c["id"]: RNNConfig.from_dict(c).short() for c in configs}
        status = sweep_status(options.results_dir, configs, options.lease_seconds)
        lines = format_status(status, options.settings.steps, labels)
        now = time.time()
        if tty:
            sys.stdout.write("\x1b[2K" + "\n\x1b[2K".join(lines) + "\n")
            if running:
                sys.stdout.write(f"\x1b[{len(lines)}A")
            sys.stdout.flush()
        elif (lines[0] != (last_lines or [""])[0] and now - last_print > 1) or now - last_print >= refresh or not running:
            print(f"[{time.strftime('%H:%M:%S')}] " + "\n".join(lines), flush=True)
            last_print = now
        last_lines = lines
        if not running:
            return status
        time.sleep(min(refresh, 1.0) if tty else 0.5)


def launch(worker_argv: list[str], options: WorkerOptions, workers: int, refresh: float | None = None) -> int:
    """Start ``workers`` worker processes, show progress, forward signals, return the exit status."""
    from .grid import read_configs
    from .queue import Queue

    queue = Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    procs: list[tuple[subprocess.Popen, Path]] = []
    gpu_count = 0
    if options.settings.device == "auto":
        import torch

        gpu_count = torch.cuda.device_count()
    env = dict(os.environ)  # the workers import this very package, installed or not
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in range(workers):
        name = f"{os.uname().nodename}-{os.getpid()}-w{k}"
        log = queue.logs_dir / f"{stamp}-{name}.log"
        extra = ["--worker-name", name]
        if gpu_count > 1:
            extra += ["--device", f"cuda:{k % gpu_count}"]
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gatedrnn.worker", "--as-worker", *worker_argv, *extra],
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append((proc, log))
    print(f"started {workers} worker(s); logs in {queue.logs_dir}/{stamp}-*.log", flush=True)

    stopping = {"signal": None}

    def forward(signum, _frame):
        stopping["signal"] = signum
        for proc, _ in procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        watch(options, lambda: any(p.poll() is None for p, _ in procs), refresh)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    codes = [p.wait() for p, _ in procs]
    for (proc, log), code in zip(procs, codes):
        if code == EXIT_BAD_INPUT:
            tail = log.read_text(errors="replace").strip().splitlines()
            msg = next((ln for ln in reversed(tail) if ln.startswith("error:")), f"error: a worker exited with status 2 (see {log})")
            print(msg, file=sys.stderr)
            return EXIT_BAD_INPUT
        if code not in (EXIT_OK, EXIT_STOPPED, EXIT_FAILED):
            print(f"warning: worker pid {proc.pid} exited with status {code}; see {log}", file=sys.stderr)
    final = _exit_status(queue.status(read_configs(options.config_file)))
    if stopping["signal"] is not None:
        print("stopped: every worker checkpointed and released its run; rerun the same command to resume")
    return final


# ---------------------------------------------------------------------- command line
def add_training_arguments(p: argparse.ArgumentParser) -> None:
    from .config import TrainSettings

    d = TrainSettings()
    g = p.add_argument_group("training settings")
    g.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (= bytes per stream) per run (%(default)s)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="parallel streams (%(default)s)")
    g.add_argument("--history", type=int, default=d.history, help="bytes per window before the state resets (%(default)s)")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (%(default)s)")
    g.add_argument("--log-every", type=int, default=d.log_every, help="steps between loss-curve points (%(default)s)")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between validations, 0: only at the end (%(default)s)")
    g.add_argument("--data", default=None, help="corpus file (plain, .gz, .bz2, .xz, .zip); default: the built-in corpus")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K (%(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="training seed; a configuration's own seed key wins (%(default)s)")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints (%(default)s)")
    g.add_argument("--val-streams", type=int, default=d.val_streams, help="at most this many validation streams (%(default)s)")
    q = p.add_argument_group("queue")
    q.add_argument("--config-file", default="rnn_configs.json", help="the configuration list (%(default)s)")
    q.add_argument("--results-dir", default="results_01_all", help="results folder (%(default)s)")
    q.add_argument("--lease-seconds", type=float, default=120.0, help="a claim without heartbeat for this long is stale (%(default)s)")
    q.add_argument("--lock", choices=("file", "soft"), default=None,
                   help="queue lock: file (flock; local disks; the default) or soft (marker file; NFS, several "
                        "hosts; the default under --slurm)")
    q.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    q.add_argument("--max-runs", type=int, default=None, help="runs per worker, then exit")


def options_from_args(args: argparse.Namespace) -> WorkerOptions:
    from .config import TrainSettings

    settings = TrainSettings(
        steps=args.steps, batch_size=args.batch_size, history=args.history, lr=args.lr,
        log_every=args.log_every, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        data=None if args.data is None else str(Path(args.data).resolve()), device=args.device,
        seed=args.seed, val_streams=args.val_streams,
    )
    return WorkerOptions(config_file=args.config_file, results_dir=args.results_dir, settings=settings,
                         lease_seconds=args.lease_seconds, lock=args.lock, max_runs=args.max_runs,
                         threads=args.threads, name=getattr(args, "worker_name", None))


def validate(options: WorkerOptions) -> None:
    """Every check a worker would fail on, before anything starts; raises with one line."""
    from .data import check_length, load_corpus
    from .grid import read_configs
    from .queue import Queue
    from .trainer import resolve_device

    read_configs(options.config_file)
    Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock)
    check_length(load_corpus(options.settings.data), options.settings.history)
    resolve_device(options.settings.device)
    if options.max_runs is not None and options.max_runs < 1:
        raise ValueError(f"--max-runs must be >= 1, got {options.max_runs}")
    if options.threads is not None and options.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {options.threads}")


def worker_argv(options: WorkerOptions) -> list[str]:
    """The command-line arguments that make a worker process with these options (absolute
    paths, so that a worker started elsewhere, a Slurm task say, finds the same files)."""
    st = options.settings
    argv = ["--steps", st.steps, "--batch-size", st.batch_size, "--history", st.history, "--lr", repr(st.lr),
            "--log-every", st.log_every, "--eval-every", st.eval_every, "--checkpoint-every", st.checkpoint_every,
            "--device", st.device, "--seed", st.seed, "--val-streams", st.val_streams,
            "--config-file", Path(options.config_file).resolve(), "--results-dir", Path(options.results_dir).resolve(),
            "--lease-seconds", options.lease_seconds, "--lock", options.lock]
    if st.data is not None:
        argv += ["--data", st.data]
    if options.threads is not None:
        argv += ["--threads", options.threads]
    if options.max_runs is not None:
        argv += ["--max-runs", options.max_runs]
    return [str(a) for a in argv]


def add_slurm_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Slurm (pip install 'gatedrnn[slurm]')")
    g.add_argument("--slurm", action="store_true", help="submit the workers as one Slurm job array and return")
    g.add_argument("--wait", action="store_true", help="with --slurm: stay and show progress until the array ends")
    g.add_argument("--partition", default=None, help="Slurm partition")
    g.add_argument("--gpus-per-worker", type=int, default=0, help="GPUs per array task (%(default)s)")
    g.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs per array task; also its torch threads (%(default)s)")
    g.add_argument("--mem-per-worker", type=float, default=None, metavar="GB", help="memory per array task, in GB")
    g.add_argument("--time-minutes", type=int, default=60, help="time limit of each task; it is requeued past it (%(default)s)")
    g.add_argument("--signal-delay-seconds", type=int, default=90,
                   help="Slurm signals a task this long before its time limit, to checkpoint and requeue (%(default)s)")
    g.add_argument("--slurm-extra", nargs="+", default=[], metavar="KEY=VALUE", help="further sbatch options, e.g. account=abc")


def main(argv: Sequence[str] | None = None, prog: str | None = None, stop_event: Any = None) -> int:
    """``training_01_all.py``: launch N workers (default), submit them to Slurm (``--slurm``),
    or be one worker (``--as-worker``, as the launcher and the Slurm tasks start it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog=prog, description="Train the sweep's configurations with N workers "
                                "over a file-lock queue; kill and rerun at any time.")
    p.add_argument("--workers", type=int, default=1, help="worker processes to start (%(default)s)")
    add_training_arguments(p)
    add_slurm_arguments(p)
    p.add_argument("--worker-name", default=None, help=argparse.SUPPRESS)
    p.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from .data import DataError
    from .grid import ConfigFileError
    from .queue import QueueError

    if args.lock is None:
        args.lock = "soft" if args.slurm else "file"
    try:
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        options = options_from_args(args)
        options.stop = stop_event
        if not args.as_worker:
            validate(options)
        extra = None
        if args.slurm:
            from .slurm import parse_extra

            extra = parse_extra(args.slurm_extra)
            if args.cpus_per_worker < 1 or args.time_minutes < 1:
                raise ValueError("--cpus-per-worker and --time-minutes must be >= 1")
    except (ValueError, TypeError, ConfigFileError, DataError, QueueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.as_worker:
        try:
            return run_worker(options)
        except (ConfigFileError, DataError, QueueError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return EXIT_BAD_INPUT
    if args.slurm:
        return _submit_to_slurm(args, options, extra)
    if options.threads is None:
        options.threads = max(1, (os.cpu_count() or 1) // args.workers)
    return launch(worker_argv(options), options, args.workers)


def _submit_to_slurm(args: argparse.Namespace, options: WorkerOptions, extra: dict[str, str]) -> int:
    from .slurm import ArrayWatch, submit

    if options.threads is None:
        options.threads = args.cpus_per_worker
    try:
        jobs = submit(worker_argv(options), options.results_dir, args.workers, partition=args.partition,
                      gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                      mem_per_worker_gb=args.mem_per_worker, time_minutes=args.time_minutes,
                      signal_delay_seconds=args.signal_delay_seconds, extra=extra)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # sbatch refused: say what it said, on one line
        print(f"error: Slurm submission failed: {' '.join(str(e).split())[:500]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    array = jobs[0].job_id.split("_")[0]
    print(f"submitted Slurm job array {array} with {len(jobs)} worker(s); logs in "
          f"{Path(options.results_dir).resolve() / '.queue' / 'slurm'}", flush=True)
    if not args.wait:
        print(f"follow it with: squeue -j {array}   or rerun with --wait", flush=True)
        return EXIT_OK
    status = watch(options, ArrayWatch(jobs))
    return _exit_status(status)


if __name__ == "__main__":
    # ``python -m gatedrnn.worker`` is one worker process (the launcher passes --as-worker)
    sys.exit(main())
