"""The parent process of a local sweep: check the options, launch N workers, supervise them,
show the sweep's progress, report how each ended.

Each worker is a child process (``python -m gatedrnn.running.worker``) that reads its
:class:`gatedrnn.running.worker.WorkerOptions` as one JSON object on standard input; with several
GPUs, workers are spread over them. SIGINT/SIGTERM are forwarded to the workers, which
checkpoint and release their runs. The live display is :mod:`gatedrnn.store.status`'s snapshot.
No torch here for a CPU sweep (it takes seconds to import): only the workers train.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..data.corpus import sweep_data
from ..training.devices import check_fits, device_type
from ..spec.grid import ConfigFileError, read_configs
from .options import (EXIT_BAD_INPUT, EXIT_CRASH, EXIT_FAILED, EXIT_FAULT, EXIT_OK, EXIT_STOPPED, WorkerOptions,
                      recorded_settings)
from ..store.queue import Queue
from ..store.status import Liveness, format_live, labels_of, sweep_status

__all__ = ["launch", "watch", "validate", "exit_status"]


def validate(options: WorkerOptions) -> None:
    """Every check a worker would fail on, before anything is claimed; raises with one line.
    Last, the results folder records the sweep's settings (or refuses other ones)."""
    if options.max_runs is not None and options.max_runs < 1:
        raise ValueError(f"--max-runs must be >= 1, got {options.max_runs}")
    if options.pack is not None and (isinstance(options.pack, bool) or not isinstance(options.pack, int)
                                     or options.pack < 1):
        raise ValueError(f"--pack must be a whole number >= 1, got {options.pack!r}")
    if options.threads is not None and options.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {options.threads}")
    if options.fault_retries < 0 or not options.fault_backoff >= 0 or not options.retry_delay >= 0:
        raise ValueError("--fault-retries, --fault-backoff and --retry-delay must be >= 0")
    configs = read_configs(options.config_file)
    queue = Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock)
    with queue.locked():  # a lock that cannot be taken (a folder in its place, ...) is bad input
        pass
    _, sha256 = sweep_data(options.settings.data, {c.get("task", "bytes") for c in configs}, options.settings.history)
    check_fits(options.settings, device_type(options.settings.device))
    queue.record_settings(recorded_settings(options.settings, sha256))
    queue.record_config_file(options.config_file)


def exit_status(status: dict[str, Any]) -> int:
    """The launcher's exit status for a sweep's state: 3 work left, 1 something failed, else 0."""
    c = status["counts"]
    if c["pending"] or c["running"]:
        return EXIT_STOPPED
    return EXIT_FAILED if c["failed"] else EXIT_OK


def watch(options: WorkerOptions, alive: Callable[[], bool], refresh: float | None = None) -> dict[str, Any]:
    """Show the sweep's progress until ``alive()`` is False; returns the last status."""
    tty = sys.stdout.isatty()
    refresh = refresh if refresh is not None else (2.0 if tty else 30.0)
    last_print, last_lines = 0.0, None
    liveness = Liveness(options.lease_seconds)  # what this display has seen of the claims, across refreshes
    while True:
        running = alive()
        configs = read_configs(options.config_file)
        status = sweep_status(options.results_dir, configs, options.lease_seconds, liveness)
        lines = format_live(status, options.settings.steps, labels_of(configs))
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


def _start(options: WorkerOptions, workers: int, queue: Queue) -> list[tuple[subprocess.Popen, Path]]:
    """Start the worker processes (spread over the GPUs when there are several), each with its log."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    gpu_count = 0
    if options.settings.device == "auto":  # spread the workers over every GPU there is
        import torch

        gpu_count = torch.cuda.device_count()
    env = dict(os.environ)  # the workers import this very package, installed or not
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs = []
    for k in range(workers):
        name = f"{os.uname().nodename}-{os.getpid()}-w{k}"
        mine = options.resolved(name=name, stop=None, workers=workers)
        if gpu_count > 1:
            mine = dataclasses.replace(mine, settings=mine.settings.replace(device=f"cuda:{k % gpu_count}"))
        log = queue.folder.log(stamp, name)
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gatedrnn.running.worker"], stdin=subprocess.PIPE,
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        proc.stdin.write(json.dumps(mine.to_dict()).encode())
        proc.stdin.close()
        procs.append((proc, log))
    print(f"started {workers} worker(s); logs in {queue.folder.logs}/{stamp}-*.log", flush=True)
    return procs


def launch(options: WorkerOptions, workers: int, refresh: float | None = None) -> int:
    """Start ``workers`` worker processes, show progress, forward signals, return the exit status."""
    queue = Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock)
    procs = _start(options, workers, queue)
    stopping = {"signal": None, "forwarded": False}

    def forward(signum, _frame):
        stopping["signal"] = signum
        stopping["forwarded"] = True
        for proc, _ in procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    problem, problem_code = None, EXIT_OK
    try:
        watch(options, lambda: any(p.poll() is None for p, _ in procs), refresh)
    except ConfigFileError as e:  # the configuration file broke mid-sweep: stop cleanly
        problem = f"error: {e}; stopping the workers (each checkpoints and releases its run)"
        problem_code = EXIT_BAD_INPUT
    except Exception as e:  # the launcher must never leave its workers unsupervised
        problem = f"error: the launcher failed ({type(e).__name__}: {e}); stopping the workers"
        problem_code = EXIT_STOPPED
    finally:
        if problem is not None:
            print(problem, file=sys.stderr, flush=True)
            forward(signal.SIGTERM, None)
            stopping["signal"] = None  # not a user's stop: no "rerun to resume" line
        for s, h in old.items():
            signal.signal(s, h)
    codes = [p.wait() for p, _ in procs]
    bad_input = _report_exits(procs, codes, stopping["forwarded"])
    if problem is not None:
        return problem_code
    if bad_input:
        print(bad_input, file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        final = exit_status(queue.status(read_configs(options.config_file)))
    except ConfigFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if stopping["signal"] is not None:
        print("stopped: every worker checkpointed and released its run; rerun the same command to resume")
    return final


def _report_exits(procs: list[tuple[subprocess.Popen, Path]], codes: list[int], forwarded: bool) -> str | None:
    """One line on stderr for each worker that ended on a fault or a crash; returns the first
    bad-input line, if a worker exited with one."""
    bad_input = None
    for (proc, log), code in zip(procs, codes):
        if code in (EXIT_OK, EXIT_STOPPED, EXIT_FAILED):
            continue
        tail = _log_tail(log)
        if code == EXIT_BAD_INPUT:
            bad_input = bad_input or next((ln for ln in reversed(tail) if ln.startswith("error:")),
                                          f"error: a worker exited with status 2 (see {log})")
            continue
        if code == EXIT_FAULT:
            line = next((ln for ln in reversed(tail) if ln.startswith("fault:")), "fault: (no reason logged)")
            print(f"worker pid {proc.pid} stopped on a fault of the machine, not of a configuration: "
                  f"{line[len('fault: '):]}  (log: {log})", file=sys.stderr)
            continue
        if code == EXIT_CRASH:
            line = next((ln for ln in reversed(tail) if ln.startswith("crash:")), "crash: (no reason logged)")
            reason = line[len("crash: "):]
        elif code < 0 and forwarded and -code in (signal.SIGTERM, signal.SIGINT):
            continue  # the stop this launcher forwarded arrived as the worker was exiting anyway
        elif code < 0:
            reason = f"killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else f"signal {-code}"
        else:
            reason = f"exit status {code}"
        print(f"worker pid {proc.pid} died: {reason}; last lines of {log}:", file=sys.stderr)
        for ln in tail[-8:]:
            print(f"    {ln}", file=sys.stderr)
    return bad_input


def _log_tail(log: Path, lines: int = 40) -> list[str]:
    try:
        return log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return []
