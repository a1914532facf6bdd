"""Workers over the queue: the worker loop, launching N workers, signals and live progress.

A worker claims a configuration, trains it with checkpoints, heartbeats from a background
thread, and completes it; it exits when nothing is left to claim (or after ``max_runs``).
SIGINT/SIGTERM make it checkpoint at the next step, release its claim and exit. The launcher
starts N workers as child processes (``python -m gatedrnn.worker``, which reads its
:class:`WorkerOptions` as one JSON object on standard input), forwards SIGINT/SIGTERM to them
and shows the sweep's progress until they are done. Nothing here parses a command line:
that is :mod:`gatedrnn.cli`'s job.

Exit statuses: 0 every configuration has a result and none failed; 1 some failed;
2 bad input (one line on stderr); 3 stopped (by a signal or ``--max-runs``) with work left.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import RNNConfig, TrainSettings
from .data import DataError, check_length, load_corpus
from .folder import FolderError
from .grid import ConfigFileError, read_configs
from .packed import pack_group
from .queue import Queue, QueueError, by_pack, pack_label, sweep_status
from .trainer import CheckpointMismatch, Interrupted, check_fits, resolve_device, train, train_pack

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3
# a worker process's own ends, which the launcher reports and turns into EXIT_STOPPED
EXIT_FAULT, EXIT_CRASH = 4, 5
# what a worker reports as bad input (one line, exit 2) rather than as a crash
BAD_INPUT = (ConfigFileError, DataError, FolderError, CheckpointMismatch, ValueError, TypeError)

__all__ = ["WorkerOptions", "run_worker", "serve", "launch", "watch", "validate", "format_status", "exit_status",
           "environment_fault", "recorded_settings", "pack_limit", "packed_group", "share_packs", "EXIT_OK",
           "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_STOPPED", "EXIT_FAULT", "EXIT_CRASH"]


@dataclass
class WorkerOptions:
    """Everything a worker needs, as plain data (:meth:`to_dict` / :meth:`from_dict` for JSON)."""

    config_file: str
    results_dir: str
    settings: TrainSettings
    lease_seconds: float = 120.0
    lock: str = "file"
    max_runs: int | None = None
    threads: int | None = None
    name: str | None = None
    retry_delay: float = 30.0  # before a configuration that raised is tried again (doubling)
    fault_retries: int = 5  # waits after environment faults before the worker gives up
    fault_backoff: float = 10.0  # the first such wait, in seconds (doubling)
    keep_weights: bool = True  # write each finished run's final weights under the results folder
    pack: int | None = None  # members per pack (1: no packing); None: the device's default (pack_limit)
    stop: Any = None  # a threading.Event that asks the worker to stop (not data: never serialised)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "stop"}
        d["settings"] = self.settings.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorkerOptions":
        if not isinstance(d, Mapping):
            raise TypeError(f"worker options must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"stop"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown worker option {unknown[0]!r}")
        return cls(**{**d, "settings": TrainSettings.from_dict(d["settings"])})

    def resolved(self, **changes: Any) -> "WorkerOptions":
        """A copy with absolute paths, so that a worker started elsewhere (a Slurm task, another
        working directory) finds the same files."""
        st = self.settings
        if st.data is not None:
            st = st.replace(data=str(Path(st.data).resolve()))
        return dataclasses.replace(self, config_file=str(Path(self.config_file).resolve()),
                                   results_dir=str(Path(self.results_dir).resolve()), settings=st, **changes)


class ClaimLost(Exception):
    """Another worker took this worker's claim over (its lease expired)."""


class _Heartbeat(threading.Thread):
    """Refreshes the claim (or every claim of a pack, a list) every ``interval`` seconds; notes
    when a claim is lost."""

    def __init__(self, queue, claim, interval: float) -> None:
        self.claims = claim if isinstance(claim, list) else [claim]
        super().__init__(daemon=True, name=f"heartbeat-{self.claims[0].id[:8]}")
        self.queue, self.interval = queue, interval
        self.progress: dict[str, Any] = {}
        self.lost = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        try:
            if not self.queue.heartbeat(self.claims, self.progress):
                self.lost = True
        except Exception:  # a transient file-system error: try again at the next beat
            pass

    def verify(self) -> None:
        """Before a checkpoint: a fresh heartbeat, or ClaimLost."""
        if not self.lost:
            self.beat()
        if self.lost:
            raise ClaimLost(self.claims[0].id)

    def update(self, run) -> None:
        progress = {"step": run.step, "steps": run.settings.steps, "loss": run.curve[-1] if run.curve else None,
                    "steps per second": run.step / run.train_seconds if run.train_seconds else None,
                    "resumes": run.resumes, "time": time.time()}
        if hasattr(run, "curves"):  # a pack: each member's own loss
            progress.update({c.id: {**progress, "loss": curve[-1] if curve else None, "pack": run.pack_id}
                             for c, curve in zip(run.configs, run.curves)})
        self.progress = progress

    def stop(self) -> None:
        self._stop_event.set()


def _say(name: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} {name}] {message}", flush=True)


# errno values that say the machine, not the configuration, is at fault
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT, errno.ENOMEM, errno.ESTALE, errno.ENODEV,
                       errno.ENXIO}
_ENVIRONMENT_WORDS = ("out of memory", "can't allocate memory", "cuda error", "cudnn_status", "cublas_status",
                      "no cuda gpus are available", "device-side assert", "nccl error", "hip error")


def environment_fault(exc: BaseException) -> str | None:
    """A one-line cause when ``exc`` is a fault of the machine (a full, read-only or failing
    disk, memory, the device) rather than of the configuration; None otherwise."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError):
            return "out of memory (MemoryError)"
        if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
            where = f": {e.filename}" if e.filename else ""
            return f"{errno.errorcode.get(e.errno, e.errno)} ({os.strerror(e.errno)}){where}"
        if isinstance(e, RuntimeError):
            text = str(e).strip()
            if any(w in text.lower() for w in _ENVIRONMENT_WORDS):
                return f"{type(e).__name__}: {text.splitlines()[0][:200]}"
        e = e.__cause__ or e.__context__
    return None


_FAULT = object()


class EnvironmentFault(Exception):
    """A fault of the machine that persisted through the worker's retries."""


def run_worker(options: WorkerOptions) -> int:
    """The worker loop. Returns an exit status (see the module's docstring); bad input raises
    one of ``BAD_INPUT`` (see :func:`serve`).

    An exception that :func:`environment_fault` recognises keeps the checkpoint, releases the
    claim, and waits (``fault_backoff`` seconds, doubling) before the worker tries again; after
    ``fault_retries`` such waits in a row it raises :class:`EnvironmentFault`. Any other
    exception from training is the configuration's: a failed attempt (``Queue.fail``).
    """
    name = options.name or f"{os.uname().nodename}-{os.getpid()}"
    if options.threads:
        torch.set_num_threads(options.threads)
    stop = {"signal": None, "event": threading.Event()}

    def on_signal(signum, _frame):
        stop["signal"] = signal.Signals(signum).name
        stop["event"].set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    if options.stop is not None:  # a stop asked from another thread (the Slurm time limit)
        event = options.stop

        def watch():
            event.wait()
            stop["signal"] = stop["signal"] or "stop request"
            stop["event"].set()

        threading.Thread(target=watch, daemon=True, name="stop-watch").start()

    def say(message: str) -> None:
        _say(name, message)

    queue = Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock,
                  retry_delay=options.retry_delay, report=say)
    settings = options.settings
    corpus = load_corpus(settings.data)
    check_length(corpus, settings.history)
    check_fits(settings, resolve_device(settings.device))  # before anything is claimed
    queue.record_settings(recorded_settings(settings, corpus.sha256))
    interval = min(5.0, options.lease_seconds / 4)
    runs, faults = 0, 0
    say(f"started (pid {os.getpid()}, device {settings.device}, {torch.get_num_threads()} threads)")

    def back_off(cause: str) -> None:
        nonlocal faults
        faults += 1
        if faults > options.fault_retries:
            raise EnvironmentFault(f"{cause} (still after {options.fault_retries} retries)")
        wait = options.fault_backoff * 2 ** (faults - 1)
        say(f"environment fault: {cause}; nothing recorded against the configuration; retrying in {wait:g} s "
            f"({faults} of {options.fault_retries})")
        stop["event"].wait(wait)

    def queue_step(operation, claim=None):
        """A queue operation; on a fault of the machine, back off and return _FAULT."""
        try:
            return operation()
        except (OSError, QueueError) as e:
            cause = environment_fault(e)
            if cause is None:
                raise
            if claim is not None:
                _release_quietly(queue, claim)
            back_off(cause)
            return _FAULT

    device = resolve_device(settings.device)
    limit = pack_limit(options.pack, device)

    def packs_of(config: Mapping[str, Any]):
        return packed_group(config, options.pack, device)

    def train_one_pack(job) -> str:
        """Train a claimed pack; "next", or "stop" after a stop request."""
        nonlocal runs, faults
        configs = [RNNConfig.from_dict(c.config) for c in job.claims]
        folder = queue.folder
        ckpt = folder.pack_checkpoint(job.id)
        source = folder.pack_checkpoint(job.resume_from) if job.resume_from else None
        how = "resuming" if ckpt.exists() or source is not None else "starting"
        say(f"{how} a pack of {len(configs)} ({configs[0].short().split(' ', 1)[-1]}) {job.id[:12]}")
        hb = _Heartbeat(queue, job.claims, interval)
        hb.start()
        try:
            results = train_pack(configs, settings, checkpoint=ckpt, resume_from=source, corpus=corpus,
                                 should_stop=lambda: stop["signal"] is not None or hb.lost,
                                 before_checkpoint=hb.verify, on_progress=hb.update,
                                 weights=folder.weights if options.keep_weights else None)
        except (Interrupted, ClaimLost) as e:
            hb.stop()
            for claim in job.claims:
                _release_quietly(queue, claim)
            if hb.lost or isinstance(e, ClaimLost):
                say(f"lost a claim of pack {job.id[:12]} (its lease expired and another worker took it); "
                    "released the others, no result written")
                return "next"
            say(f"{stop['signal']}: checkpointed pack {job.id[:12]} ({e}) and released it")
            return "stop"
        except CheckpointMismatch:
            hb.stop()
            for claim in job.claims:
                _release_quietly(queue, claim)
            raise
        except Exception as e:
            hb.stop()
            cause = environment_fault(e)
            if cause is not None:
                for claim in job.claims:
                    _release_quietly(queue, claim)
                back_off(cause)
                return "next"
            tb = traceback.format_exc()
            for claim in job.claims:  # each member's next attempt runs alone
                queue.fail(claim, tb)
            say(f"pack {job.id[:12]} raised {tb.strip().splitlines()[-1]} -> each member will be retried alone")
            return "next"
        hb.stop()
        for claim, result in zip(job.claims, results):
            completed = queue_step(lambda: queue.complete(claim, result), claim)
            if completed is _FAULT:
                for other in job.claims:
                    _release_quietly(queue, other)
                return "next"
            if completed:
                runs += 1
        queue_step(queue.tidy_packs)
        faults = 0
        done = sum(r["status"] == "done" for r in results)
        say(f"finished pack {job.id[:12]}: {done} done, {len(results) - done} diverged")
        return "next"

    while stop["signal"] is None and (options.max_runs is None or runs < options.max_runs):
        configs = read_configs(options.config_file)
        if limit > 1:
            room = limit if options.max_runs is None else min(limit, options.max_runs - runs)
            job = queue_step(lambda: queue.claim_pack(configs, name, room, packs_of)) if room > 1 else None
            if job is _FAULT:
                continue
            if job is not None:
                if train_one_pack(job) == "stop":
                    break
                continue
        claim = queue_step(lambda: queue.claim(configs, name))
        if claim is _FAULT:
            continue
        if claim is None:
            retry = queue.next_retry(configs)
            if retry is not None and stop["signal"] is None:  # a configuration waits for its next attempt
                wait = max(0.0, retry - time.time()) + 0.01
                say(f"waiting {wait:.1f} s for a retry of a configuration that raised")
                stop["event"].wait(wait)
                continue
            say("nothing left to claim")
            break
        config = RNNConfig.from_dict(claim.config)
        ckpt = queue.folder.checkpoint(claim.id)
        from_pack = None if ckpt.exists() else queue.pack_source(claim.id)
        how = "resuming" if ckpt.exists() or from_pack is not None else "starting"
        if claim.took_over is not None:
            how += f" (took over from stale claim of {claim.took_over.get('worker')})"
        say(f"{how} {config.short()} {claim.id[:12]} attempt {claim.attempt}")
        hb = _Heartbeat(queue, claim, interval)
        hb.start()
        try:
            result = train(config, settings, checkpoint=ckpt, corpus=corpus,
                           should_stop=lambda: stop["signal"] is not None or hb.lost,
                           before_checkpoint=hb.verify, on_progress=hb.update,
                           weights=queue.folder.weights(claim.id) if options.keep_weights else None,
                           pack_checkpoint=from_pack)
        except (Interrupted, ClaimLost) as e:
            hb.stop()
            if hb.lost or isinstance(e, ClaimLost):
                say(f"lost the claim on {claim.id[:12]} (its lease expired and another worker took it); "
                    "no result written")
                continue
            queue.release(claim)
            say(f"{stop['signal']}: checkpointed {claim.id[:12]} ({e}) and released it")
            break
        except CheckpointMismatch:
            hb.stop()
            queue.release(claim)
            raise
        except Exception as e:
            hb.stop()
            cause = environment_fault(e)
            if cause is not None:  # the machine's fault: keep the checkpoint, give the claim back
                _release_quietly(queue, claim)
                back_off(cause)
                continue
            tb = traceback.format_exc()
            outcome = queue.fail(claim, tb)
            say(f"{claim.id[:12]} raised {tb.strip().splitlines()[-1]} -> "
                f"{'recorded as failed' if outcome == 'failed' else 'will be retried'}")
            continue
        hb.stop()
        completed = queue_step(lambda: queue.complete(claim, result), claim)
        if completed is _FAULT:
            continue
        faults = 0
        if completed:
            runs += 1
            scores = ", ".join(f"{k} {result[k]:.4f}" for k in ("min loss", "val loss") if result.get(k) is not None)
            say(f"finished {config.short()} {claim.id[:12]}: {result['status']}" + (f", {scores}" if scores else ""))
        else:
            say(f"lost the claim on {claim.id[:12]} before completing; result discarded")
    if stop["signal"] is not None:
        return EXIT_STOPPED
    if options.max_runs is not None and runs >= options.max_runs:
        return EXIT_STOPPED
    return EXIT_OK


# members per pack when --pack is not given: a whole group (the default grid's groups hold 48
# or 96 configurations) where packing is faster: on CUDA always (a step's cost is its launches),
# on the CPU for states up to 64 wide (benchmarks/bench_pack.py: packs of state 32 ran 1.2-1.7x
# faster than solo runs, those of state 256 at 0.6-0.8x of their speed); never on other devices, where
# it was never measured
_DEFAULT_PACK = 96
_CPU_PACK_MAX_STATE = 64


def pack_limit(option: int | None, device: torch.device) -> int:
    """Members per pack: ``option`` (``--pack``) when given, else the device's default."""
    if option is not None:
        return option
    return _DEFAULT_PACK if device.type in ("cuda", "cpu") else 1


def packed_group(config: Mapping[str, Any], option: int | None, device: torch.device):
    """The pack group of a configuration (:func:`gatedrnn.packed.pack_group`), or None when it
    is trained alone: never packable, or ``--pack`` not given and packing its group is slower
    on this device."""
    try:
        c = RNNConfig.from_dict(config)
    except (TypeError, ValueError):
        return None
    key = pack_group(c)
    if key is not None and option is None and device.type == "cpu" and c.state_size > _CPU_PACK_MAX_STATE:
        return None
    return key


def share_packs(options: WorkerOptions, workers: int) -> WorkerOptions:
    """With ``--pack`` not given and several workers, the default pack size shrinks so that the
    largest group is shared by all workers (each takes a pack of ceil(group / workers))
    rather than trained by one while the others wait."""
    if options.pack is not None or workers <= 1:
        return options
    device = resolve_device(options.settings.device)
    default = pack_limit(None, device)
    sizes = Counter(packed_group(c, None, device) for c in read_configs(options.config_file))
    sizes.pop(None, None)
    if default <= 1 or not sizes:
        return options
    return dataclasses.replace(options, pack=max(2, min(default, -(-max(sizes.values()) // workers))))


def _release_quietly(queue: Queue, claim) -> None:
    """Give a claim back after a fault; if even that fails, the claim goes stale by itself."""
    try:
        queue.release(claim)
    except (OSError, QueueError):
        pass


def recorded_settings(settings: TrainSettings, dataset_sha256: str) -> dict[str, Any]:
    """The settings a results folder records on first use (``Queue.record_settings``)."""
    d = settings.to_dict()
    d["dataset sha256"] = dataset_sha256
    return d


def serve(options: WorkerOptions) -> int:
    """:func:`run_worker`, with its ends made one line each on stderr: bad input (exit 2), an
    environment fault that persisted (``EXIT_FAULT``), an unexpected crash (``EXIT_CRASH``,
    after the traceback)."""
    try:
        return run_worker(options)
    except EnvironmentFault as e:
        print(f"fault: {e}", file=sys.stderr, flush=True)
        return EXIT_FAULT
    except BAD_INPUT as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except Exception as e:
        cause = environment_fault(e)
        traceback.print_exc()
        if cause is not None:
            print(f"fault: {cause}", file=sys.stderr, flush=True)
            return EXIT_FAULT
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        print(f"crash: {last}", file=sys.stderr, flush=True)
        return EXIT_CRASH


def _process_main() -> int:
    """``python -m gatedrnn.worker``: one worker, its options a JSON object on standard input."""
    text = sys.stdin.read()
    try:
        options = WorkerOptions.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as e:
        print(f"error: worker options on standard input: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    return serve(options)


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
    for members in by_pack(sorted(running, key=lambda r: r.get("worker", ""))):
        r = members[0]
        p = r.get("progress") or {}
        losses = [(m.get("progress") or {}).get("loss") for m in members]
        losses = [x for x in losses if isinstance(x, (int, float))]
        loss = min(losses) if losses else None
        sps = p.get("steps per second")
        lines.append(f"  {r.get('worker', '?'):<24} {pack_label(members, labels):<22} "
                     f"step {p.get('step', 0):>7}/{steps:<7} {'best ' if len(members) > 1 else ''}loss "
                     f"{loss if loss is None else f'{loss:.4f}'}  "
                     f"{'?' if not sps else f'{sps:.0f}'} steps/s")
    return lines


def exit_status(status: dict[str, Any]) -> int:
    """The launcher's exit status for a sweep's state: 3 work left, 1 something failed, else 0."""
    c = status["counts"]
    if c["pending"] or c["running"]:
        return EXIT_STOPPED
    return EXIT_FAILED if c["failed"] else EXIT_OK


# ---------------------------------------------------------------------- launcher
def watch(options: WorkerOptions, alive, refresh: float | None = None) -> dict[str, Any]:
    """Show the sweep's progress until ``alive()`` is False; returns the last status."""
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


def launch(options: WorkerOptions, workers: int, refresh: float | None = None) -> int:
    """Start ``workers`` worker processes, show progress, forward signals, return the exit status."""
    queue = Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock)
    options = share_packs(options, workers)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    procs: list[tuple[subprocess.Popen, Path]] = []
    gpu_count = torch.cuda.device_count() if options.settings.device == "auto" else 0
    env = dict(os.environ)  # the workers import this very package, installed or not
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in range(workers):
        name = f"{os.uname().nodename}-{os.getpid()}-w{k}"
        mine = options.resolved(name=name, stop=None)
        if gpu_count > 1:
            mine = dataclasses.replace(mine, settings=mine.settings.replace(device=f"cuda:{k % gpu_count}"))
        log = queue.folder.log(stamp, name)
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gatedrnn.worker"], stdin=subprocess.PIPE,
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        proc.stdin.write(json.dumps(mine.to_dict()).encode())
        proc.stdin.close()
        procs.append((proc, log))
    print(f"started {workers} worker(s); logs in {queue.folder.logs}/{stamp}-*.log", flush=True)

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
        elif code < 0 and stopping["forwarded"] and -code in (signal.SIGTERM, signal.SIGINT):
            continue  # the stop this launcher forwarded arrived as the worker was exiting anyway
        elif code < 0:
            reason = f"killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else f"signal {-code}"
        else:
            reason = f"exit status {code}"
        print(f"worker pid {proc.pid} died: {reason}; last lines of {log}:", file=sys.stderr)
        for ln in tail[-8:]:
            print(f"    {ln}", file=sys.stderr)
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


def _log_tail(log: Path, lines: int = 40) -> list[str]:
    try:
        return log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return []


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
    read_configs(options.config_file)
    queue = Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock)
    with queue.locked():  # a lock that cannot be taken (a folder in its place, ...) is bad input
        pass
    corpus = load_corpus(options.settings.data)
    check_length(corpus, options.settings.history)
    check_fits(options.settings, resolve_device(options.settings.device))
    queue.record_settings(recorded_settings(options.settings, corpus.sha256))
    queue.record_config_file(options.config_file)


if __name__ == "__main__":
    sys.exit(_process_main())
