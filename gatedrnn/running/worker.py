"""One worker over the queue (DESIGN.md, "The results folder and the queue"; "Faults").

A worker claims a job (one configuration, or a pack of them: a solo configuration is a job of
one), trains it with checkpoints while a background heartbeat keeps its claims live, and
completes it; it exits when nothing is left to claim (or after ``max_runs``). SIGINT/SIGTERM
make it checkpoint at the next step, release its claims and exit. ``python -m gatedrnn.running.worker``
runs one worker whose :class:`WorkerOptions` arrive as one JSON object on standard input (the
launcher, :mod:`gatedrnn.running.launcher`, starts them so; Slurm tasks call :func:`serve`). Nothing
here parses a command line.

Exit statuses: 0 every configuration has a result and none failed; 1 some failed;
2 bad input (one line on stderr); 3 stopped (by a signal or ``--max-runs``) with work left;
4 a fault of the machine that persisted; 5 a crash.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..training.checkpoints import CheckpointMismatch
from ..spec.config import RNNConfig
from ..data.corpus import sweep_data
from ..training.devices import check_fits, resolve_device
from ..spec.grid import read_configs
from .halving import FINISHED, Halving
from ..training.loop import Interrupted
from .options import (BAD_INPUT, EXIT_BAD_INPUT, EXIT_CRASH, EXIT_FAULT, EXIT_OK, EXIT_STOPPED, WorkerOptions,
                      recorded_settings)
from ..spec.packing import plan_packs
from ..store.queue import Claim, Queue, QueueError
from ..store.status import heartbeat_interval
from ..training.trainer import train, train_pack

__all__ = ["Worker", "Job", "Heartbeat", "run_worker", "serve", "environment_fault", "EnvironmentFault",
           "ClaimLost", "WorkerOptions"]


class ClaimLost(Exception):
    """Another worker took this worker's claim over (its lease expired)."""


class EnvironmentFault(Exception):
    """A fault of the machine that persisted through the worker's retries."""


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


class Heartbeat:
    """A context manager: while inside, a background thread refreshes a job's claims every
    ``interval`` seconds (with the run's progress) and notes when one is lost."""

    def __init__(self, queue: Queue, claims: list[Claim], interval: float) -> None:
        self.queue, self.claims, self.interval = queue, claims, interval
        self.progress: dict[str, Any] = {}
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{claims[0].id[:8]}")

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
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

    def update(self, run: Any) -> None:
        """The run's progress (a pack's: each member's own loss), sent with the next beat."""
        progress = {"step": run.step, "steps": run.settings.steps, "loss": run.curve[-1] if run.curve else None,
                    "steps per second": run.step / run.train_seconds if run.train_seconds else None,
                    "resumes": run.resumes, "time": time.time()}
        if hasattr(run, "curves"):
            progress.update({c.id: {**progress, "loss": curve[-1] if curve else None, "pack": run.pack_id}
                             for c, curve in zip(run.configs, run.curves)})
        self.progress = progress


@dataclass
class Job:
    """What a worker trains next: one configuration (``pack`` None) or a pack's members;
    ``resume_from``: the pack whose checkpoint holds the members' saved state."""

    claims: list[Claim]
    pack: str | None = None
    resume_from: str | None = None

    @property
    def name(self) -> str:
        if self.pack is None:
            return f"{RNNConfig.from_dict(self.claims[0].config).short()} {self.claims[0].id[:12]}"
        return f"pack {self.pack[:12]}"


_FAULT = object()  # a queue operation met a fault of the machine (and backed off)


class Worker:
    """The worker loop (:meth:`run`): claim a job, train it, complete it, until nothing is left.

    A fault that :func:`environment_fault` recognises keeps the checkpoint, releases the
    claims, and waits (``fault_backoff`` seconds, doubling) before the worker tries again; after
    ``fault_retries`` such waits in a row it raises :class:`EnvironmentFault`. Any other
    exception from training is the configuration's: a failed attempt (``Queue.fail``; a pack's
    members are each retried alone).
    """

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.name = options.name or f"{os.uname().nodename}-{os.getpid()}"
        self.signal: str | None = None
        self.wake = threading.Event()  # set by a stop request: cuts a wait short
        self.queue = Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock,
                           retry_delay=options.retry_delay, report=self.say)
        self.settings = options.settings
        self.device = resolve_device(self.settings.device)
        tasks = {c.get("task", "bytes") for c in read_configs(options.config_file)}
        self.corpus, sha256 = sweep_data(self.settings.data, tasks, self.settings.history)  # corpus None: smnist
        check_fits(self.settings, self.device)  # before anything is claimed
        self.queue.record_settings(recorded_settings(self.settings, sha256))
        self.interval = heartbeat_interval(options.lease_seconds)
        self.runs = self.faults = 0
        self.halving = Halving.of(self.queue.folder, self.settings) if self.settings.halving else None
        self._configs_key: tuple | None = None
        self._configs_list: list[dict[str, Any]] = []

    def say(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} {self.name}] {message}", flush=True)

    def request_stop(self, why: str) -> None:
        self.signal = self.signal or why
        self.wake.set()

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        """The exit status (see the module's docstring)."""
        self.say(f"started (pid {os.getpid()}, device {self.settings.device}, {torch.get_num_threads()} threads)")
        while self.signal is None and not self._ran_enough():
            configs = self._configs()
            job = self._next_job(configs)
            if job is _FAULT:
                continue
            if job is None:
                if self._wait_for_retry(configs) or self._wait_for_rung(configs):
                    continue
                self.say("nothing left to claim")
                break
            if self._run_job(job) == "stop":
                break
        return EXIT_STOPPED if self.signal is not None or self._ran_enough() else EXIT_OK

    def _configs(self) -> list[dict[str, Any]]:
        """The sweep's configuration list, read again only when the file changed (by its stat):
        a claim does not parse a file of 100,000 configurations each time, and a file broken
        mid-sweep is still caught (ConfigFileError) at the next claim after it changed."""
        path = self.options.config_file
        try:
            st = os.stat(path)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            key = None  # read_configs says what is wrong
        if key is None or key != self._configs_key:
            self._configs_list = read_configs(path)
            self._configs_key = key
        return self._configs_list

    def _ran_enough(self) -> bool:
        return self.options.max_runs is not None and self.runs >= self.options.max_runs

    def _next_job(self, configs: list[dict[str, Any]]) -> Any:
        """A pack where the plan packs and two or more fit, else one configuration; None when
        nothing is free now, _FAULT after a fault."""
        plan = plan_packs(self.options.pack, self.device.type, self.options.workers, configs)
        room = plan.limit if self.options.max_runs is None else min(plan.limit, self.options.max_runs - self.runs)
        rungs = None
        if self.halving is not None:
            if self._queue_step(lambda: self._advance(configs)) is _FAULT:
                return _FAULT
            rungs = self.halving.trainable
        if room > 1:
            pack = self._queue_step(lambda: self.queue.claim_pack(configs, self.name, room, plan.group, rungs))
            if pack is _FAULT or pack is not None:
                return pack if pack is _FAULT else Job(pack.claims, pack.id, pack.resume_from)
        claim = self._queue_step(lambda: self.queue.claim(configs, self.name, rungs))
        return claim if claim is _FAULT or claim is None else Job([claim])

    def _advance(self, configs: list[dict[str, Any]]) -> None:
        """Successive halving: decide the rungs that can be decided (under the queue lock)."""
        with self.queue.locked():
            for rung in self.halving.advance(configs):
                decision = self.queue.folder.read_promotion(rung)
                audited = len(decision.get("audited", []))
                self.say(f"rung {rung} decided: {len(decision['promoted'])} continue, {len(decision['stopped'])} stop "
                         f"at step {decision['steps']}" + (f" ({audited} of them audited: on to the end)" if audited
                                                           else ""))

    def _wait_for_rung(self, configs: list[dict[str, Any]]) -> bool:
        """Successive halving: with nothing to claim while some configurations are unfinished
        (others train the rest of a rung), wait for the rung to be decided; False when all are
        finished."""
        if self.halving is None or self.signal is not None:
            return False
        states = self.halving.states(c["id"] for c in configs)
        if all(state == FINISHED for state, _ in states.values()):
            return False
        self.wake.wait(self.interval)
        return True

    def _wait_for_retry(self, configs: list[dict[str, Any]]) -> bool:
        """Wait for a configuration that raised to become claimable again, or for another host's
        claims that this worker has not yet watched for a lease to show whether they are alive
        (their heartbeat changes) or dead (stale: taken over); False if nothing waits."""
        if self.signal is not None:
            return False
        if self.queue.watching:
            self.wake.wait(self.interval)
            return True
        retry = self.queue.next_retry(configs)
        if retry is None:
            return False
        wait = retry + 0.01
        self.say(f"waiting {wait:.1f} s for a retry of a configuration that raised")
        self.wake.wait(wait)
        return True

    # ------------------------------------------------------------------ one job
    def _run_job(self, job: Job) -> str:
        """Train ``job`` and complete it; "next", or "stop" after a stop request."""
        self._announce(job)
        error: Exception | None = None
        with Heartbeat(self.queue, job.claims, self.interval) as hb:
            try:
                results = self._train(job, hb)
            except Exception as e:  # handled below, once the heartbeat has stopped
                error, tb = e, traceback.format_exc()
        if error is None:
            self._complete(job, results)
            return "next"
        if isinstance(error, (Interrupted, ClaimLost)):
            self._give_back(job)
            if hb.lost or isinstance(error, ClaimLost):
                self.say(f"lost {'a claim of' if job.pack else 'the claim on'} {job.name} (its lease expired and "
                         "another worker took it); no result written")
                return "next"
            self.say(f"{self.signal}: checkpointed {job.name} ({error}) and released it")
            return "stop"
        if isinstance(error, CheckpointMismatch):
            self._give_back(job)
            raise error
        cause = environment_fault(error)
        if cause is not None:  # the machine's fault: keep the checkpoint, give the claims back
            self._give_back(job)
            self._back_off(cause)
        else:
            self._fail(job, tb)
        return "next"

    def _announce(self, job: Job) -> None:
        folder, first = self.queue.folder, job.claims[0]
        if job.pack is not None:
            resuming = folder.pack_checkpoint(job.pack).exists() or job.resume_from is not None
            label = RNNConfig.from_dict(first.config).short().split(" ", 1)[-1]
            self.say(f"{'resuming' if resuming else 'starting'} a pack of {len(job.claims)} ({label}) {job.pack[:12]}")
            return
        resuming = folder.checkpoint(first.id).exists() or self.queue.pack_source(first.id) is not None
        how = "resuming" if resuming else "starting"
        if first.took_over is not None:
            how += f" (took over from stale claim of {first.took_over.get('worker')})"
        self.say(f"{how} {job.name} attempt {first.attempt}")

    def _rung(self, job: Job) -> int | None:
        """The rung a job trains to (successive halving), or None."""
        return job.claims[0].record.get("rung") if self.halving is not None else None

    def _train(self, job: Job, hb: Heartbeat) -> list[dict[str, Any]]:
        folder = self.queue.folder
        rung = self._rung(job)
        common = dict(corpus=self.corpus, should_stop=lambda: self.signal is not None or hb.lost,
                      before_checkpoint=hb.verify, on_progress=hb.update,
                      stop_at=None if rung is None else self.halving.steps[rung - 1])
        if job.pack is not None:
            configs = [RNNConfig.from_dict(c.config) for c in job.claims]
            source = folder.pack_checkpoint(job.resume_from) if job.resume_from else None
            return train_pack(configs, self.settings, checkpoint=folder.pack_checkpoint(job.pack), resume_from=source,
                              weights=folder.weights if self.options.keep_weights else None, **common)
        claim = job.claims[0]
        ckpt = folder.checkpoint(claim.id)
        return [train(RNNConfig.from_dict(claim.config), self.settings, checkpoint=ckpt,
                      weights=folder.weights(claim.id) if self.options.keep_weights else None,
                      pack_checkpoint=None if ckpt.exists() else self.queue.pack_source(claim.id), **common)]

    def _complete(self, job: Job, results: list[dict[str, Any]]) -> None:
        rung = self._rung(job)
        for claim, result in zip(job.claims, results):
            if rung is not None:
                reached = self.halving.rung_of(result["training steps"])
                result = {**result, **self.halving.result_fields(reached, False), **self.halving.run_kind(claim.id)}
                if result["status"] == "done" and rung < self.halving.rungs:
                    done = self._queue_step(lambda: self.queue.complete_rung(claim, result, rung), job)
                    if done is _FAULT:
                        return
                    self.runs += bool(done)
                    continue
            completed = self._queue_step(lambda: self.queue.complete(claim, result) if rung is None else
                                         self.queue.complete(claim, result, rung), job)
            if completed is _FAULT:
                return
            if completed:
                self.runs += 1
            elif job.pack is None:
                self.say(f"lost the claim on {claim.id[:12]} before completing; result discarded")
                return
        if job.pack is not None:
            self._queue_step(self.queue.tidy_packs)
        self.faults = 0
        if job.pack is not None:
            done = sum(r["status"] == "done" for r in results)
            self.say(f"finished {job.name}: {done} done, {len(results) - done} diverged")
        elif rung is not None and rung < self.halving.rungs and results[0]["status"] == "done":
            self.say(f"{job.name} reached rung {rung} at step {results[0]['training steps']}")
        elif completed:
            result = results[0]
            scores = ", ".join(f"{k} {result[k]:.4f}" for k in ("min loss", "val loss") if result.get(k) is not None)
            self.say(f"finished {job.name}: {result['status']}" + (f", {scores}" if scores else ""))

    def _fail(self, job: Job, tb: str) -> None:
        """The configuration raised: a failed attempt for each claim (a pack's members are next
        tried alone)."""
        last = tb.strip().splitlines()[-1]
        outcomes = [self.queue.fail(claim, tb) for claim in job.claims]
        if job.pack is not None:
            self.say(f"{job.name} raised {last} -> each member will be retried alone")
        else:
            self.say(f"{job.claims[0].id[:12]} raised {last} -> "
                     f"{'recorded as failed' if outcomes[0] == 'failed' else 'will be retried'}")

    # ------------------------------------------------------------------ faults
    def _give_back(self, job: Job) -> None:
        """Release a job's claims; if even that fails, they go stale by themselves."""
        for claim in job.claims:
            try:
                self.queue.release(claim)
            except (OSError, QueueError):
                pass

    def _back_off(self, cause: str) -> None:
        self.faults += 1
        retries = self.options.fault_retries
        if self.faults > retries:
            raise EnvironmentFault(f"{cause} (still after {retries} retries)")
        wait = self.options.fault_backoff * 2 ** (self.faults - 1)
        self.say(f"environment fault: {cause}; nothing recorded against the configuration; retrying in {wait:g} s "
                 f"({self.faults} of {retries})")
        self.wake.wait(wait)

    def _queue_step(self, operation: Callable[[], Any], job: Job | None = None) -> Any:
        """A queue operation; on a fault of the machine, give ``job`` back, back off and
        return _FAULT."""
        try:
            return operation()
        except (OSError, QueueError) as e:
            cause = environment_fault(e)
            if cause is None:
                raise
            if job is not None:
                self._give_back(job)
            self._back_off(cause)
            return _FAULT


def run_worker(options: WorkerOptions) -> int:
    """One worker, with SIGINT/SIGTERM (in the main thread) and ``options.stop`` (an Event set
    from another thread: the Slurm time limit) asking it to stop. Returns the exit status; bad
    input raises one of ``BAD_INPUT`` (see :func:`serve`)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    stop = {"worker": None, "early": None}

    def on_signal(signum, _frame):
        name = signal.Signals(signum).name
        if stop["worker"] is not None:
            stop["worker"].request_stop(name)
        else:
            stop["early"] = stop["early"] or name

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    worker = Worker(options)
    stop["worker"] = worker
    if stop["early"] is not None:
        worker.request_stop(stop["early"])
    if options.stop is not None:
        event = options.stop
        threading.Thread(target=lambda: (event.wait(), worker.request_stop("stop request")), daemon=True,
                         name="stop-watch").start()
    return worker.run()


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
    """``python -m gatedrnn.running.worker``: one worker, its options a JSON object on standard input."""
    text = sys.stdin.read()
    try:
        options = WorkerOptions.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as e:
        print(f"error: worker options on standard input: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    return serve(options)


if __name__ == "__main__":
    sys.exit(_process_main())
