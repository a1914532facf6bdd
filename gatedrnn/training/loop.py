"""The one training loop (DESIGN.md, "Training without BPTT"; STYLE.md 13).

:class:`Loop` holds what every run has (settings, device, source, model, update rule, the step
and the data cursor, the moving average, the time spent) and the loop over it:
:meth:`Loop.train_steps` steps to a given step, moving the window, the moving average and the
log points; :func:`drive` runs a loop to its end with evaluations, checkpoints and stops. A
solo run (:class:`gatedrnn.training.run.Run`) and a pack (:class:`gatedrnn.training.pack_run.PackRun`) are its
two subclasses; each supplies what differs:

``_new_window()``      draw the next window of every data stream and reset the states
``_record_point()``    record a log point of the moving average; False once the run diverged
``diverged_at``        the step at which the run (every member of a pack) diverged, or None
``record_evaluation()``, ``evaluated_now()``, ``save(path)``
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from .malloc import keep_freed_memory
from ..spec.config import RNNConfig, TrainSettings
from .devices import resolve_device
from ..models.model import ByteModel

__all__ = ["Loop", "drive", "Interrupted", "seeded_model", "MA_START", "MA_DECAY"]

MA_START = 3.0  # the original study's moving average starts here ...
MA_DECAY = 0.95  # ... and follows ma = 0.95 * ma + 0.05 * loss


class Interrupted(Exception):
    """Raised by :func:`drive` when ``should_stop`` asked it to stop; the checkpoint is saved."""


def seeded_model(config: RNNConfig, seed: int, input_init: str = "linear") -> ByteModel:
    """A configuration's initial model: its weights from seed ``2 * seed`` (the data order uses
    ``2 * seed + 1``), without touching the global random generator. ``input_init``: the input
    map of a configuration without its own key (:func:`gatedrnn.spec.config.input_init_of`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2 * seed)
        return ByteModel(config, input_init=input_init)


class Loop:
    """The state and the loop shared by a run and a pack (see the module's docstring)."""

    diverged_at: int | None

    def _set_up(self, settings: TrainSettings, source: Any) -> None:
        """The settings, the device and the source; the step and the data cursor at zero."""
        self.settings = settings
        self.device = resolve_device(settings.device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.source = source
        self.window_length = source.window_length
        self.loss = source.loss
        self.step = 0
        self.updates = 0  # optimizer updates (steps with a target; one per chunk with truncated BPTT)
        self.pos = 0  # position inside the current window
        self.window: Any = None
        self.inputs: tuple[torch.Tensor, ...] = ()
        self.targets: tuple[torch.Tensor | None, ...] = ()
        # a memory task's moving average starts at its first loss (its scale is the task's)
        self.ma_started = not source.ma_from_first_loss
        self.train_seconds = 0.0

    def _use_window(self, window: Any) -> None:
        """Read ``window`` as per-step tuples of inputs and targets (indexing a tuple is cheaper
        than indexing a tensor)."""
        self.window = window
        self.inputs, self.targets = self.source.steps(window)

    def train_steps(self, until: int, should_stop: Callable[[], bool] | None = None,
                    on_boundary: Callable[[Any], None] | None = None) -> None:
        """Step until ``step == until`` (or past it, to the end of a pending truncated-BPTT
        chunk), divergence, or ``should_stop()`` (polled after every step, while the rule is idle).

        ``on_boundary(run)`` is called at every log point (after the curve point is recorded).
        """
        rule, log_every = self.rule, self.settings.log_every
        self.model.train()
        t0 = time.perf_counter()
        try:
            while self.step < until or not rule.idle:
                if self.window is None:
                    self._new_window()
                loss = rule.step(self, self.inputs[self.pos], self.targets[self.pos])
                if loss is not None:
                    if self.ma_started:
                        self.ma.lerp_(loss, 1 - MA_DECAY)
                    else:
                        self.ma, self.ma_started = loss.detach().float().clone(), True
                self._advance()
                if self.step % log_every == 0:
                    t1 = self._log_point(on_boundary, t0)
                    if t1 is None:
                        return
                    t0 = t1
                if should_stop is not None and rule.idle and should_stop():
                    return
        finally:
            self.train_seconds += time.perf_counter() - t0

    def _advance(self) -> None:
        """One step done: move to the next position, and past a window's end to a new window."""
        self.step += 1
        self.pos += 1
        if self.pos == self.window_length:
            self.pos, self.window = 0, None

    def _log_point(self, on_boundary: Callable[[Any], None] | None, t0: float) -> float | None:
        """Record the curve point and report progress; returns the new t0, or None when the run
        diverged (the time a report takes is not training time)."""
        if not self._record_point():
            return None
        if on_boundary is not None:
            self.train_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            on_boundary(self)
        return t0

    # supplied by Run and PackRun
    def _new_window(self) -> None:
        raise NotImplementedError

    def _record_point(self) -> bool:
        raise NotImplementedError

    def record_evaluation(self) -> None:
        raise NotImplementedError

    def evaluated_now(self) -> bool:
        raise NotImplementedError

    def save(self, path) -> None:
        raise NotImplementedError


def drive(run: Loop, save: Callable[[], None] | None = None, should_stop: Callable[[], bool] | None = None,
          on_progress: Callable[[Any], None] | None = None, stop_at: int | None = None) -> None:
    """Train ``run`` to its end, or to ``stop_at`` (a rung of successive halving: there it is
    evaluated and ``save()``d, so that it can continue as if never stopped): evaluations every
    ``eval_every`` steps and at the end, ``save()`` every ``checkpoint_every`` steps; when
    ``should_stop()`` says so, ``save()`` and raise :class:`Interrupted`."""
    s = run.settings
    save = save or (lambda: None)
    end = s.steps if stop_at is None else min(stop_at, s.steps)

    def after(step: int, every: int) -> int:
        return (step // every + 1) * every

    next_eval = after(run.step, s.eval_every) if s.eval_every else None
    next_ckpt = after(run.step, s.checkpoint_every) if s.checkpoint_every else None
    while run.step < end and run.diverged_at is None:
        # run to the next event: evaluation, checkpoint or the end (with truncated BPTT the
        # run passes an event's step to the end of its chunk)
        until = min(x for x in (end, next_eval, next_ckpt) if x is not None)
        run.train_steps(until, should_stop, on_progress)
        if run.diverged_at is not None:
            break
        if next_eval is not None and run.step >= next_eval:
            if run.step < end:
                run.record_evaluation()
            next_eval = after(run.step, s.eval_every)
        if next_ckpt is not None and run.step >= next_ckpt:
            if run.step < end:
                save()
            next_ckpt = after(run.step, s.checkpoint_every)
        if run.step < end and should_stop is not None and should_stop():
            save()
            raise Interrupted(f"stopped at step {run.step} of {s.steps}")
    if run.diverged_at is None and not run.evaluated_now():
        run.record_evaluation()
    if run.diverged_at is None and run.step < s.steps:
        save()  # a rung: where the run continues if it is promoted
