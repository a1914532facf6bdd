"""Train one configuration without backpropagation through time (DESIGN.md).

Every byte position is one optimizer step: the model reads byte j of each of ``batch_size``
parallel streams, predicts byte j + 1, and takes one Adam step; the layers' states are then
detached, so no gradient ever crosses a time step. Windows of ``history`` bytes start from zero
states at random offsets of the training split.

``Run`` holds the whole state of a run (model, optimizer, step, metrics, every random generator,
the data cursor) and can be saved to and restored from a checkpoint for an identical resume.
``train()`` drives a run to the end and returns the result record.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ._atomic import atomic_write_bytes
from ._fast import backward_kernels as manual_backward_available, fused_adam
from ._version import __version__
from ._malloc import keep_freed_memory
from .cells import RidgeReadout
from .config import RIDGE_ALPHA, RNNConfig, TrainSettings
from .data import Corpus, check_length, load_corpus, StreamSampler, validation_streams
from .folder import pack_id_of, result_record
from .config import SWITCH_LETTERS, SWITCHES
from .model import VOCAB, ByteModel
from .packed import PackError, PackedModel
from .tasks import Task, TaskSampler, task_of

__all__ = [
    "train",
    "Run",
    "PackRun",
    "train_pack",
    "read_pack_checkpoint",
    "pack_id_of",
    "pack_chunk",
    "UpdateRule",
    "HandWrittenRule",
    "AutogradRule",
    "TruncatedBPTTRule",
    "RidgeRule",
    "Interrupted",
    "CheckpointMismatch",
    "resolve_device",
    "check_fits",
    "MA_START",
    "MA_DECAY",
]

MA_START = 3.0  # the original study's moving average starts here ...
MA_DECAY = 0.95  # ... and follows ma = 0.95 * ma + 0.05 * loss
CHECKPOINT_FORMAT = 1
WEIGHTS_FORMAT = "gatedrnn weights 1"
# Settings that change what a run computes; a checkpoint made under other values is refused.
_RESUME_KEYS = ("steps", "batch_size", "history", "lr", "log_every", "eval_every", "seed", "val_streams")


class Interrupted(Exception):
    """Raised by :func:`train` when ``should_stop`` asked it to stop; the checkpoint is saved."""


class CheckpointMismatch(ValueError):
    """A checkpoint made with other settings, configuration or corpus than this run's."""


def resolve_device(name: str) -> torch.device:
    """The torch device of ``--device``; ValueError when this machine does not have it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but torch sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} was asked for but torch sees {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {name!r} was asked for but this machine has no usable MPS device")
    return device


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory the device has in all (the machine's RAM for the CPU), or None if unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[1])
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None


def check_fits(settings: TrainSettings, device: torch.device) -> None:
    """Refuse settings whose data alone cannot fit the device: a window of (history + 1) x
    batch_size bytes as int64, and the validation streams (ValueError naming both)."""
    need = 8 * (settings.history + 1) * (settings.batch_size + settings.val_streams)
    have = device_memory(device)
    if have is not None and need > have:
        raise ValueError(
            f"--batch-size {settings.batch_size} with --history {settings.history}: one window of data needs "
            f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB of {device}")


def _versions() -> dict[str, str]:
    return {"gatedrnn": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "process peak RSS"


def _flatten_parameters(model: torch.nn.Module) -> torch.nn.Parameter:
    """Make every parameter of ``model`` (and its gradient) a view into one flat buffer.

    Adam then updates one tensor per step instead of one per parameter, and the gradients are
    zeroed by one fill: on small models this per-tensor overhead is a large part of a step
    (benchmarks/bench_train.py, configuration a). Backward accumulates into the gradient views
    in place, so the flat gradient is always current.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for p in params)
    ref = params[0]
    flat = torch.nn.Parameter(torch.empty(total, dtype=ref.dtype, device=ref.device))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            flat[offset:offset + n].copy_(p.reshape(-1))
            p.data = flat.data[offset:offset + n].view_as(p)
            p.grad = flat.grad[offset:offset + n].view_as(p)
            offset += n
    return flat


def adam_stepper(optimizer: torch.optim.Adam) -> Callable[[], None]:
    """``optimizer.step`` for a fused Adam over one tensor, minus torch.optim's per-call work.

    ``Optimizer.step`` spends ~30 µs a call on hooks, profiling records and regrouping tensors
    by device: 5 % of a step of benchmark configuration (a). This calls the same fused kernel with
    the optimizer's own state and hyperparameters (so ``state_dict`` and checkpoints are
    unchanged); the first step, which creates the state, and any other optimizer go through
    ``optimizer.step``. tests/test_trainer.py checks that both give the same bits.
    """
    group = optimizer.param_groups[0]
    if (not fused_adam() or len(optimizer.param_groups) != 1 or len(group["params"]) != 1 or not group.get("fused")
            or group["amsgrad"] or group.get("decoupled_weight_decay")):
        return optimizer.step
    param = group["params"][0]

    def step() -> None:
        state = optimizer.state.get(param)
        if not state:
            optimizer.step()
            return
        beta1, beta2 = group["betas"]
        state["step"].add_(1)
        torch._fused_adam_([param], [param.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [],
                           [state["step"]], amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=group["maximize"], grad_scale=None, found_inf=None)

    return step



def _make_optimizer(flat: torch.nn.Parameter, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam over the flat parameter: fused where this torch has it for the device, else foreach."""
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam([flat], lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # an older torch without fused Adam here
            pass
    return torch.optim.Adam([flat], lr=lr, foreach=True)


class UpdateRule:
    """What one training step does to the model. Everything around it (the data cursor, the
    moving average, log points, divergence, stops, timing) is :meth:`Run.train_steps`, once.

    ``step(run, x, y)`` reads bytes ``x`` (N,), learns to predict ``y`` (N,), updates
    ``run.states`` and returns the step's loss (a detached scalar tensor). On a memory task's
    step without a target ``y`` is None: the rule only steps the state forward and returns None.
    A rule counts its optimizer updates in ``run.updates``. ``idle`` is False while
    the rule holds work that is not yet applied (a truncated-BPTT chunk): the run neither stops
    nor checkpoints then.
    """

    name = "rule"
    idle = True

    def step(self, run: "Run", x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class HandWrittenRule(UpdateRule):
    """The gated cell without BPTT: forward and backward by hand (ByteModel.train_step), one
    fused Adam step. The fastest path; equal to :class:`AutogradRule` to float rounding."""

    name = "hand-written"

    def __init__(self, model: ByteModel, optimizer: torch.optim.Adam) -> None:
        self.model, self.optimizer_step = model, adam_stepper(optimizer)

    def step(self, run, x, y):
        loss, run.states = self.model.train_step(x, y, run.states)
        self.optimizer_step()
        run.updates += 1
        return loss


class AutogradRule(UpdateRule):
    """Any cell without BPTT: autograd's backward with the incoming state detached, one Adam step."""

    name = "autograd"

    def __init__(self, model: ByteModel, optimizer: torch.optim.Adam, flat: torch.nn.Parameter) -> None:
        self.model, self.optimizer_step, self.flat_grad = model, adam_stepper(optimizer), flat.grad

    def step(self, run, x, y):
        if y is None:  # a step without a target: the state moves on, nothing learns
            with torch.no_grad():
                run.states = self.model.step(x, run.states)[1]
            return None
        logits, new_states = self.model.step(x, run.states)
        loss = run.loss(logits, y)
        self.flat_grad.zero_()
        loss.backward()
        run.states = [state.detach() for state in new_states]  # no gradient crosses time
        self.optimizer_step()
        run.updates += 1
        return loss.detach()


class TruncatedBPTTRule(UpdateRule):
    """Truncated BPTT over ``k`` steps: the mean loss of k consecutive steps is backpropagated
    through those k steps, then one Adam step, then the state is detached. A window's (or a
    task's sequence's) end and the run's last step close a chunk early; the rule is idle only
    between chunks. On a memory task the mean is over the chunk's steps with a target, and a
    chunk without one makes no update."""

    name = "bptt"

    def __init__(self, model: ByteModel, optimizer: torch.optim.Adam, flat: torch.nn.Parameter, k: int) -> None:
        self.model, self.optimizer, self.flat_grad, self.k = model, optimizer, flat.grad, k
        self.total: torch.Tensor | None = None
        self.pending = self.losses = 0

    @property
    def idle(self) -> bool:
        return self.pending == 0

    def step(self, run, x, y):
        logits, run.states = self.model.step(x, run.states)  # not detached: the chunk's graph
        loss = None
        if y is not None:
            loss = run.loss(logits, y)
            self.total = loss if self.total is None else self.total + loss
            self.losses += 1
        self.pending += 1
        window_end = run.pos + 1 == run.window_length
        if self.pending == self.k or window_end or run.step + 1 == run.settings.steps:
            if self.total is not None:
                self.flat_grad.zero_()
                (self.total / self.losses).backward()
                self.optimizer.step()
                run.updates += 1
            run.states = [state.detach() for state in run.states]
            self.total, self.pending, self.losses = None, 0, 0
        return None if loss is None else loss.detach()


class RidgeRule(UpdateRule):
    """The ESN's closed-form readout: accumulate the reservoir's features
    (:class:`gatedrnn.cells.RidgeReadout`) and re-solve the readout at every log point and at
    the end; the loss is the cross-entropy of the softmax of the current readout."""

    name = "ridge"

    def __init__(self, model: ByteModel, ridge: RidgeReadout) -> None:
        self.model, self.ridge = model, ridge

    @torch.no_grad()
    def step(self, run, x, y):
        features, run.states = self.model.features(x, run.states)
        loss = None
        if y is not None:
            loss = run.loss(self.model.readout(features), y)
            self.ridge.add(features, y)
        after = run.step + 1
        if after % run.settings.log_every == 0 or after == run.settings.steps:
            self.ridge.solve(self.model.readout)
            run.updates += 1
        return loss


def _check_compatible(state: dict[str, Any], config: RNNConfig, settings: TrainSettings, corpus: Corpus,
                      where: str) -> None:
    """CheckpointMismatch unless ``state`` is a checkpoint of ``config`` under these settings and corpus."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointMismatch(f"{where}: checkpoint format {got!r}, expected {CHECKPOINT_FORMAT}")
    if state["config"].get("id") != config.id:
        raise CheckpointMismatch(f"{where}: checkpoint is for configuration {state['config'].get('id')}, not {config.id}")
    saved = state["settings"]
    mine = settings.to_dict()
    for key in _RESUME_KEYS:
        if saved.get(key) != mine[key]:
            raise CheckpointMismatch(
                f"{where}: the checkpoint was made with {key}={saved.get(key)!r} but this run has "
                f"{key}={mine[key]!r}; rerun with the original value, or delete the checkpoint to start over"
            )
    if state["dataset sha256"] != corpus.sha256:
        raise CheckpointMismatch(
            f"{where}: the checkpoint was trained on another corpus (sha256 {state['dataset sha256'][:12]}…, "
            f"this run's is {corpus.sha256[:12]}…)"
        )


class _TaskData(NamedTuple):
    """What a run on a memory task records as its dataset (a corpus's name and sha256)."""

    name: str
    sha256: str
    n_train: int | None


class Run:
    """The complete state of one training run: next-byte prediction, or a memory task
    (``config.task``; :mod:`gatedrnn.tasks`) through the same loop, its sequences as windows."""

    def __init__(self, config: RNNConfig, settings: TrainSettings, corpus: Corpus | None = None,
                 autograd: bool = False) -> None:
        """``autograd=True`` makes the gated cell train through autograd instead of its
        hand-written backward (:meth:`ByteModel.train_step`); the two agree to float rounding."""
        self.config = config
        self.autograd = autograd
        self.task = task_of(config)
        self._set_up(settings, corpus)
        self.seed = config.seed if config.seed is not None else settings.seed
        # one seed for the model's initial weights, one for the order of the data
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2 * self.seed)
            self.model = ByteModel(config)
        self.model.to(self.device)
        self.ridge: RidgeReadout | None = None
        self.flat: torch.nn.Parameter | None = None
        self.optimizer: torch.optim.Adam | None = None
        self.rule = self._make_rule(self._rule_kind())
        if self.task is None:
            self.sampler = StreamSampler(self.corpus.train, settings.batch_size, settings.history,
                                         seed=2 * self.seed + 1, device=self.device)
            self.val_windows = torch.from_numpy(
                validation_streams(self.corpus.val, settings.history, settings.val_streams)
            ).to(self.device).long()  # (length + 1, streams)
        else:
            self.sampler = TaskSampler(self.task, settings.batch_size, seed=2 * self.seed + 1, device=self.device)
            self.test_x, self.test_y = (t.to(self.device) for t in self.task.test_set(settings.val_streams))
            self.chance = self.task.chance(settings.val_streams)

        self.step = 0
        self.updates = 0  # optimizer updates (steps with a target; one per chunk with truncated BPTT)
        self.pos = 0  # position inside the current window
        self.offsets: torch.Tensor | None = None
        self.window: Any = None
        self.inputs: tuple[torch.Tensor, ...] = ()
        self.targets: tuple[torch.Tensor | None, ...] = ()
        self.states = self.model.initial_state(settings.batch_size)
        self.ma = torch.tensor(MA_START, device=self.device)  # stays on the device between logs
        # a memory task's moving average starts at its first loss (its scale is the task's)
        self.ma_started = self.task is None
        self.val_metrics: dict[str, float] | None = None
        self.curve: list[float] = []
        self.curve_start: int | None = None  # the step of the curve's first point
        self.val_curve: list[list[float]] = []  # [step, val loss]
        self.train_seconds = 0.0
        self.start_time = time.time()
        self.resumes = 0
        self.diverged_at: int | None = None
        self.checkpoint_problems: list[str] = []

    def _set_up(self, settings: TrainSettings, corpus: Corpus | None) -> None:
        """The settings, the device and the corpus (loaded unless given), checked; a memory
        task's identity in place of the corpus."""
        self.settings = settings
        self.device = resolve_device(settings.device)
        if self.device.type == "cpu":
            keep_freed_memory()
        task: Task | None = getattr(self, "task", None)
        if task is not None:
            self.corpus = _TaskData(task.label, task.sha256, task.n_train)
            self.window_length = task.steps
            self.loss = task.loss
            return
        self.corpus = corpus if corpus is not None else load_corpus(settings.data)
        check_length(self.corpus, settings.history)
        self.window_length = settings.history
        self.loss = F.cross_entropy

    def _rule_kind(self) -> str:
        if self.config.cell == "esn" and self.config.readout == "ridge":
            return "ridge"
        if self.config.bptt > 1:
            return "bptt"
        return "hand-written" if self.model.manual_backward and not self.autograd else "autograd"

    def _make_rule(self, kind: str) -> UpdateRule:
        if kind == "ridge":
            self.ridge = RidgeReadout(self.model.readout.in_features, self.model.readout.out_features, RIDGE_ALPHA, self.device)
            with torch.no_grad():
                self.model.readout.weight.zero_()
                self.model.readout.bias.zero_()
            return RidgeRule(self.model, self.ridge)
        self.flat = _flatten_parameters(self.model)
        self.optimizer = _make_optimizer(self.flat, self.settings.lr, self.device)
        if kind == "bptt":
            return TruncatedBPTTRule(self.model, self.optimizer, self.flat, self.config.bptt)
        if kind == "autograd":
            return AutogradRule(self.model, self.optimizer, self.flat)
        return HandWrittenRule(self.model, self.optimizer)

    # ---------------------------------------------------------------- training
    def _new_window(self) -> None:
        self.offsets = self.sampler.next_offsets()
        self._use_window(self.sampler.window(self.offsets))
        self.states = self.model.initial_state(self.settings.batch_size)

    def _use_window(self, window: Any) -> None:
        """Read ``window``: bytes (length + 1, ...) whose next row is each row's target, or a
        memory task's (x, y) with None for the steps without a target. Per-step tuples: indexing
        one is cheaper than indexing a tensor."""
        self.window = window
        if self.task is None:
            self.inputs = window.unbind(0)
            self.targets = self.inputs[1:]
        else:
            x, y = window
            self.inputs = x.unbind(0)
            self.targets = tuple(y[t] if m else None for t, m in enumerate(self.task.mask))

    def train_steps(self, until: int, should_stop: Callable[[], bool] | None = None,
                    on_boundary: Callable[["Run"], None] | None = None) -> None:
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

    def _log_point(self, on_boundary, t0: float) -> float | None:
        """Record the curve point; returns the new t0, or None when the run diverged."""
        if self.ma_started:
            value = self.ma.item()
            if not math.isfinite(value):
                self.diverged_at = self.step
                return None
            if not self.curve:
                self.curve_start = self.step
            self.curve.append(value)
        if on_boundary is not None:
            self.train_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            on_boundary(self)
        return t0

    def record_evaluation(self) -> None:
        self.val_curve.append([self.step, self.evaluate()])

    def evaluated_now(self) -> bool:
        return bool(self.val_curve) and self.val_curve[-1][0] == self.step

    @torch.no_grad()
    def evaluate(self) -> float:
        """Validation loss (nats per byte) on the fixed held-out streams, stepwise from zero
        states; for a memory task, its loss on the held-out test set (its metrics are kept in
        ``val_metrics``)."""
        was_training = self.model.training
        self.model.eval()
        if self.task is not None:
            self.val_metrics = self.task.evaluate(self.model, self.test_x, self.test_y)
            self.model.train(was_training)
            return self.val_metrics[self.task.loss_name]
        windows = self.val_windows
        states = self.model.initial_state(windows.size(1))
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for j in range(windows.size(0) - 1):
            logits, states = self.model.step(windows[j], states)
            total += F.cross_entropy(logits, windows[j + 1], reduction="sum").double()
        self.model.train(was_training)
        return (total / ((windows.size(0) - 1) * windows.size(1))).item()

    # ---------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(with_id=True),
            "settings": self.settings.to_dict(),
            "dataset sha256": self.corpus.sha256,
            "dataset": self.corpus.name,
            "model": self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "ridge": None if self.ridge is None else self.ridge.state_dict(),
            "step": self.step,
            "updates": self.updates,
            "pos": self.pos,
            "offsets": None if self.offsets is None or self.window is None else self.offsets.cpu(),
            "states": [s.cpu() for s in self.states],
            "ma": self.ma.cpu(),
            "ma started": self.ma_started,
            "curve": list(self.curve),
            "curve start": self.curve_start,
            "val curve": [list(p) for p in self.val_curve],
            "val metrics": self.val_metrics,
            "sampler": self.sampler.state_dict(),
            "rng": rng,
            "train seconds": self.train_seconds,
            "start time": self.start_time,
            "resumes": self.resumes,
            "diverged at": self.diverged_at,
            "checkpoint problems": list(self.checkpoint_problems),
        }

    def check_compatible(self, state: dict[str, Any], where: str) -> None:
        _check_compatible(state, self.config, self.settings, self.corpus, where)

    def load_state_dict(self, state: dict[str, Any], where: str = "checkpoint") -> None:
        self.check_compatible(state, where)
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.ridge is not None:
            self.ridge.load_state_dict(state["ridge"])
        self.step, self.pos = state["step"], state["pos"]
        # checkpoints from before the updates were counted: bptt 1 makes one per step
        self.updates = state.get("updates", self.step)
        self.offsets = state["offsets"]
        if self.offsets is None:
            self.window, self.inputs, self.targets = None, (), ()
        else:
            self._use_window(self.sampler.window(self.offsets))
        self.states = [s.to(self.device) for s in state["states"]]
        self.ma = state["ma"].to(self.device)
        self.ma_started = state.get("ma started", True)
        self.curve = list(state["curve"])
        self.curve_start = state.get("curve start")
        self.val_curve = [list(p) for p in state["val curve"]]
        self.val_metrics = state.get("val metrics")
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.train_seconds = state["train seconds"]
        self.start_time = state["start time"]
        self.resumes = state["resumes"] + 1
        self.diverged_at = state["diverged at"]
        self.checkpoint_problems = list(state["checkpoint problems"])

    def save(self, path: str | Path) -> None:
        # serialised in memory first: torch.save on a full disk raises an opaque RuntimeError,
        # a plain write an OSError that names the cause (ENOSPC), which the worker recognises
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        atomic_write_bytes(path, buffer.getbuffer())

    def restore(self, path: str | Path) -> bool:
        """Resume from ``path`` if it exists. An unreadable checkpoint is reported, set aside
        as ``<name>.corrupt`` and the run starts from scratch (returns False); a checkpoint of
        another configuration or other settings raises :class:`CheckpointMismatch`."""
        state = _read_checkpoint(path, "checkpoint", lambda st: "format" in st, self.checkpoint_problems)
        if state is None:
            return False
        self.load_state_dict(state, where=str(path))
        return True

    # ---------------------------------------------------------------- result
    def weights_record(self) -> dict[str, Any]:
        """The final weights as a plain dict of tensors and strings: safe to load with
        ``torch.load(weights_only=True)`` (no pickled code)."""
        return {"format": WEIGHTS_FORMAT, "config": self.config.to_dict(with_id=True),
                "settings": self.settings.to_dict(), "dataset": self.corpus.name,
                "dataset sha256": self.corpus.sha256, "step": self.step,
                "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}

    def save_weights(self, path: str | Path) -> None:
        buffer = io.BytesIO()
        torch.save(self.weights_record(), buffer)
        atomic_write_bytes(path, buffer.getbuffer())

    @torch.no_grad()
    def inference_ms(self, batch: int, steps: int = 40) -> float:
        """Milliseconds per step of the forward pass alone (no gradient), at ``batch`` streams."""
        was_training = self.model.training
        self.model.eval()
        states = self.model.initial_state(batch)
        first = self.val_windows[0, :1] if self.task is None else self.test_x[0, :1]
        x = first.expand(batch, *first.shape[1:]).contiguous()
        for _ in range(5):  # warm-up
            _, states = self.model.step(x, states)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            _, states = self.model.step(x, states)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.model.train(was_training)
        return 1e3 * (time.perf_counter() - t0) / steps

    def examples_read(self) -> float:
        """Bytes read, or for a memory task, sequences read (in whole or in part)."""
        streams = self.step * self.settings.batch_size
        return streams if self.task is None else streams / self.window_length

    def convergence_step(self, within: float = 0.01) -> int | None:
        """The first logged step at which the moving-average loss comes within ``within`` nats
        of its minimum."""
        if not self.curve:
            return None
        best = min(self.curve)
        first = next(i for i, v in enumerate(self.curve) if v <= best + within)
        every = self.settings.log_every
        return (self.curve_start if self.curve_start is not None else every) + first * every

    def weights_sha256(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def result(self) -> dict[str, Any]:
        s = self.settings
        diverged = self.diverged_at is not None
        val_loss = None if diverged or not self.val_curve else self.val_curve[-1][1]
        peak, peak_kind = _peak_memory_mb(self.device)
        fields: dict[str, Any] = {
            "start time": self.start_time,
            "end time": time.time(),
            "loss": list(self.curve),
            "min loss": min(self.curve) if self.curve else None,
            "training steps": self.step,
            "time steps": self.step,
            "optimizer updates": self.updates,
            "batch size": s.batch_size,
            "history size": self.window_length,
            "dataset": self.corpus.name,
            "dataset sha256": self.corpus.sha256,
            # examples read (bytes, or a task's sequences) over the training split's size: above 1,
            # the training curve measures memorising too
            "epochs": None if self.corpus.n_train is None else self.examples_read() / self.corpus.n_train,
            "val loss": val_loss,
            "val bpb": None if val_loss is None or self.task is not None else val_loss / math.log(2),
            "val curve": [list(p) for p in self.val_curve],
            "log every": s.log_every,
            "steps per second": self.step / self.train_seconds if self.train_seconds > 0 else None,
            "train seconds": self.train_seconds,
            "parameters": self.model.num_parameters(),
            "peak memory MB": peak,
            "peak memory kind": peak_kind,
            "device": str(self.device),
            "seed": self.seed,
            "resumes": self.resumes,
            "settings": s.to_dict(),
            "versions": _versions(),
            "final weights sha256": self.weights_sha256(),
            "convergence step": self.convergence_step(),
        }
        if self.task is not None:
            fields["task label"] = self.task.label
            fields["loss kind"] = self.task.loss_name
            fields["curve start"] = self.curve_start
            fields["test metrics"] = None if diverged else self.val_metrics
            fields["chance"] = self.chance
        if not diverged:
            fields["inference ms per step (batch 1)"] = self.inference_ms(1)
            fields["inference ms per step (training batch)"] = self.inference_ms(s.batch_size)
        if diverged:
            fields["diverged at step"] = self.diverged_at
        if self.checkpoint_problems:
            fields["checkpoint problems"] = list(self.checkpoint_problems)
        return result_record(self.config.to_dict(with_id=True), "diverged" if diverged else "done", fields)


def _drive(run: Run, save: Callable[[], None], should_stop: Callable[[], bool] | None,
           on_progress: Callable[[Run], None] | None) -> None:
    """Train ``run`` (a :class:`Run` or a :class:`PackRun`) to its end: evaluations every
    ``eval_every`` steps and at the end, ``save()`` every ``checkpoint_every`` steps; when
    ``should_stop()`` says so, ``save()`` and raise :class:`Interrupted`."""
    s = run.settings
    stopped = False

    def after(step: int, every: int) -> int:
        return (step // every + 1) * every

    next_eval = after(run.step, s.eval_every) if s.eval_every else None
    next_ckpt = after(run.step, s.checkpoint_every) if s.checkpoint_every else None
    while run.step < s.steps and run.diverged_at is None:
        # run to the next event: evaluation, checkpoint or the end (with truncated BPTT the
        # run passes an event's step to the end of its chunk)
        until = min(x for x in (s.steps, next_eval, next_ckpt) if x is not None)
        run.train_steps(until, should_stop, on_progress)
        if run.diverged_at is not None:
            break
        if next_eval is not None and run.step >= next_eval:
            if run.step < s.steps:
                run.record_evaluation()
            next_eval = after(run.step, s.eval_every)
        if next_ckpt is not None and run.step >= next_ckpt:
            if run.step < s.steps:
                save()
            next_ckpt = after(run.step, s.checkpoint_every)
        if run.step < s.steps and should_stop is not None and should_stop():
            stopped = True
            break
    if stopped:
        save()
        raise Interrupted(f"stopped at step {run.step} of {s.steps}")
    if run.diverged_at is None and not run.evaluated_now():
        run.record_evaluation()


def _saver(run, checkpoint: str | Path | None, before_checkpoint: Callable[[], None] | None) -> Callable[[], None]:
    def save() -> None:
        if checkpoint is not None:
            if before_checkpoint is not None:
                before_checkpoint()
            run.save(checkpoint)
    return save


def train(
    config: RNNConfig,
    settings: TrainSettings,
    *,
    checkpoint: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    before_checkpoint: Callable[[], None] | None = None,
    on_progress: Callable[[Run], None] | None = None,
    corpus: Corpus | None = None,
    weights: str | Path | None = None,
    pack_checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``config`` under ``settings`` and return the result record.

    checkpoint: file to resume from (if it exists) and to save to every
        ``settings.checkpoint_every`` steps and when stopped.
    should_stop: polled after every step; when it returns True the run is checkpointed and
        :class:`Interrupted` is raised.
    before_checkpoint: called before each checkpoint write; it may raise to abort the run
        (the worker uses it to check that it still owns its claim).
    on_progress: called with the run at every log point.
    weights: file to write the final weights to (atomically; :meth:`Run.weights_record`), or None.
    pack_checkpoint: a pack's checkpoint holding this configuration, to resume from when
        ``checkpoint`` does not exist (a pack member finished alone).
    """
    if not isinstance(config, RNNConfig):
        raise TypeError(f"config must be an RNNConfig, got {type(config).__name__}")
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings must be a TrainSettings, got {type(settings).__name__}")
    run = Run(config, settings, corpus)
    restored = checkpoint is not None and run.restore(checkpoint)
    if not restored and pack_checkpoint is not None:
        state = read_pack_checkpoint(pack_checkpoint, run.checkpoint_problems)
        if state is not None and config.id in state["members"]:
            run.load_state_dict(state["members"][config.id], where=str(pack_checkpoint))
    _drive(run, _saver(run, checkpoint, before_checkpoint), should_stop, on_progress)
    result = run.result()
    if weights is not None:
        run.save_weights(weights)
        result["weights file"] = Path(weights).name
    return result


# ---------------------------------------------------------------------------- packs
PACK_FORMAT = "gatedrnn pack 1"


def read_pack_checkpoint(path: str | Path, problems: list[str] | None = None) -> dict[str, Any] | None:
    """A pack's checkpoint (``{"format", "pack", "members": {id: a solo checkpoint}}``), or None
    when it is missing; an unreadable one is reported (warning, and into ``problems``), set
    aside as ``<name>.corrupt`` and read as missing."""
    return _read_checkpoint(path, "pack checkpoint",
                            lambda st: st.get("format") == PACK_FORMAT and isinstance(st.get("members"), dict),
                            problems)


def _read_checkpoint(path: str | Path, what: str, valid: Callable[[dict], bool],
                     problems: list[str] | None) -> dict[str, Any] | None:
    """The dict in ``path`` (None when missing). One that cannot be read, or that ``valid``
    refuses, is reported (a warning, and into ``problems``), set aside as ``<name>.corrupt``
    and read as missing: the run restarts from scratch."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not valid(state):
            raise ValueError(f"not a gatedrnn {what}")
    except Exception as e:  # truncated, garbage, wrong pickle: all mean "cannot resume"
        detail = (str(e).strip().splitlines() or ["empty or truncated file"])[0][:200]
        problem = f"{path}: unreadable {what} ({e.__class__.__name__}: {detail}); restarting from scratch"
        warnings.warn(problem, RuntimeWarning, stacklevel=3)
        if problems is not None:
            problems.append(problem)
        try:
            path.replace(path.with_name(path.name + ".corrupt"))
        except OSError:
            pass
        return None
    return state


class PackedRule(UpdateRule):
    """A pack's step: the batched hand-written forward and backward of every member
    (:meth:`PackedModel.train_step`), one fused Adam step over the stacked parameters."""

    name = "packed"

    def __init__(self, model: PackedModel, optimizer: torch.optim.Adam) -> None:
        self.model, self.optimizer_step = model, adam_stepper(optimizer)

    def step(self, run, x, y):
        loss, run.states = self.model.train_step(x, y, run.states)  # (K,)
        self.optimizer_step()
        return loss


class PackRun(Run):
    """The complete state of a pack: K configurations of one group (:func:`gatedrnn.packed.pack_group`)
    trained as one batched step, each exactly its own model. It runs through :meth:`Run.train_steps`
    (the one loop) with :class:`PackedRule`; the moving average, the curves and divergence are
    per member. Its checkpoint holds one solo checkpoint per member (so a member can also be
    finished alone), and each member's result is its solo :class:`Run`'s, with the pack recorded.
    """

    def __init__(self, configs: list[RNNConfig], settings: TrainSettings, corpus: Corpus | None = None,
                 pack_id: str | None = None, chunk: int | None = None) -> None:
        """``chunk``: members per batched computation (:class:`PackedModel`); None: the
        device's default (:func:`pack_chunk`). The members are kept in the order of their
        switches, so that a chunk's members mostly agree and need fewer masks."""
        if not manual_backward_available():
            raise PackError("packed training needs this torch's private backward kernels (see gatedrnn/_fast.py)")
        ids = [c.id for c in configs]
        if len(set(ids)) != len(ids):
            raise PackError("a pack lists a configuration twice")
        self.configs = sorted(configs, key=lambda c: tuple(not getattr(c, name) for name in SWITCHES))
        self.k = len(configs)
        self.pack_id = pack_id or pack_id_of(ids)
        self.task = None  # packs are next-byte prediction only (pack_group)
        self._set_up(settings, corpus)
        self.seeds = [c.seed if c.seed is not None else settings.seed for c in self.configs]
        self.chunk = chunk if chunk is not None else pack_chunk(self.device, self.configs[0].state_size,
                                                                 settings.batch_size)
        self.model = PackedModel(self.configs, device=self.device, chunk=self.chunk)
        for k, (config, seed) in enumerate(zip(self.configs, self.seeds)):
            with torch.random.fork_rng(devices=[]):  # each member's solo initial weights
                torch.manual_seed(2 * seed)
                self.model.load_member(k, ByteModel(config).state_dict())
        self.flat = self.model.flat
        self.optimizer = _make_optimizer(self.flat, settings.lr, self.device)
        self.ridge = None
        self.rule = PackedRule(self.model, self.optimizer)
        # one data stream per distinct seed; members of one seed read the same bytes
        data_seeds = sorted(set(self.seeds))
        self.member_stream = [data_seeds.index(seed) for seed in self.seeds]
        self.samplers = [StreamSampler(self.corpus.train, settings.batch_size, settings.history, seed=2 * seed + 1,
                                       device=self.device) for seed in data_seeds]
        self._member_stream = torch.tensor(self.member_stream, device=self.device)
        self.val_windows = torch.from_numpy(
            validation_streams(self.corpus.val, settings.history, settings.val_streams)
        ).to(self.device).long()
        self.step = self.updates = 0
        self.pos = 0
        self.offsets: list[torch.Tensor] | None = None
        self.window = None
        self.inputs = self.targets = ()
        self.states = self.model.initial_state(settings.batch_size)
        self.ma = torch.full((self.k,), MA_START, device=self.device)
        self.ma_started = True
        self.curve_start: int | None = None
        self.curves: list[list[float]] = [[] for _ in configs]
        self.val_curves: list[list[list[float]]] = [[] for _ in configs]
        self.last_eval: int | None = None
        self.train_seconds = 0.0  # the pack's, since its first step (as a solo run's)
        self.base_seconds = [0.0] * self.k  # each member's at the last load, and the pack's then
        self._seconds_at_load = 0.0
        self.start_times = [time.time()] * self.k
        self.member_resumes = [0] * self.k
        self.member_diverged: list[int | None] = [None] * self.k
        self.member_problems: list[list[str]] = [[] for _ in configs]
        self.checkpoint_problems: list[str] = []

    @property
    def diverged_at(self) -> int | None:
        """The step at which the last member diverged, once every member has; else None."""
        if all(d is not None for d in self.member_diverged):
            return max(self.member_diverged)
        return None

    @property
    def curve(self) -> list[float]:  # what progress reports show: the first live member's curve
        live = [c for c, d in zip(self.curves, self.member_diverged) if d is None]
        return live[0] if live else self.curves[0]

    @property
    def resumes(self) -> int:
        return max(self.member_resumes)

    # ---------------------------------------------------------------- training
    def _new_window(self) -> None:
        self.offsets = [sampler.next_offsets() for sampler in self.samplers]
        windows = [sampler.window(o) for sampler, o in zip(self.samplers, self.offsets)]
        self._set_window(windows)
        self.states = self.model.initial_state(self.settings.batch_size)

    def _set_window(self, windows: list[torch.Tensor]) -> None:
        if len(windows) == 1:  # (history + 1, N): every member reads the same bytes
            self._use_window(windows[0])
        else:  # (history + 1, K, N)
            self._use_window(torch.stack(windows, dim=1).index_select(1, self._member_stream))

    def _log_point(self, on_boundary, t0: float) -> float | None:
        values = self.ma.tolist()
        for k, value in enumerate(values):
            if self.member_diverged[k] is not None:
                continue
            if math.isfinite(value):
                if self.curve_start is None:
                    self.curve_start = self.step
                self.curves[k].append(value)
            else:
                self.member_diverged[k] = self.step
        if self.diverged_at is not None:
            return None
        if on_boundary is not None:
            self.train_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            on_boundary(self)
        return t0

    @torch.no_grad()
    def evaluate(self) -> list[float]:
        """Each member's validation loss (nats per byte), all members in one batched pass."""
        windows = self.val_windows
        states = self.model.initial_state(windows.size(1))
        total = torch.zeros(self.k, dtype=torch.float64, device=self.device)
        n = windows.size(1)
        for j in range(windows.size(0) - 1):
            logits, states = self.model.step(windows[j], states)  # (K, V, 256)
            target = windows[j + 1].expand(self.k, n).reshape(-1)
            losses = F.cross_entropy(logits.view(-1, VOCAB), target, reduction="none").view(self.k, n)
            total += losses.sum(1).double()
        return (total / ((windows.size(0) - 1) * n)).tolist()

    def record_evaluation(self) -> None:
        for k, value in enumerate(self.evaluate()):
            if self.member_diverged[k] is None:
                self.val_curves[k].append([self.step, value])
        self.last_eval = self.step

    def evaluated_now(self) -> bool:
        return self.last_eval == self.step

    # ---------------------------------------------------------------- checkpoint
    def member_checkpoint(self, k: int) -> dict[str, Any]:
        """Member ``k``'s state as a solo checkpoint (:meth:`Run.state_dict`'s format)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        group = {key: value for key, value in self.optimizer.param_groups[0].items() if key != "params"}
        opt_state = self.optimizer.state.get(self.flat)
        state = {}
        if opt_state:
            state[0] = {"step": opt_state["step"].detach().cpu().clone(),
                        "exp_avg": self.model.member_flat(k, opt_state["exp_avg"]),
                        "exp_avg_sq": self.model.member_flat(k, opt_state["exp_avg_sq"])}
        u = self.member_stream[k]
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.configs[k].to_dict(with_id=True),
            "settings": self.settings.to_dict(),
            "dataset sha256": self.corpus.sha256,
            "dataset": self.corpus.name,
            "model": self.model.member_state(k),
            "optimizer": {"state": state, "param_groups": [{**group, "params": [0]}]},
            "ridge": None,
            "step": self.step,
            "updates": self.updates,
            "pos": self.pos,
            "offsets": None if self.offsets is None or self.window is None else self.offsets[u].cpu(),
            "states": [s[k].cpu() for s in self.states],
            "ma": self.ma[k].cpu().clone(),
            "ma started": True,
            "curve": list(self.curves[k]),
            "curve start": self.curve_start,
            "val curve": [list(p) for p in self.val_curves[k]],
            "sampler": self.samplers[u].state_dict(),
            "rng": rng,
            "train seconds": self.base_seconds[k] + self.train_seconds - self._seconds_at_load,
            "start time": self.start_times[k],
            "resumes": self.member_resumes[k],
            "diverged at": self.member_diverged[k],
            "checkpoint problems": self.member_problems[k] + self.checkpoint_problems,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"format": PACK_FORMAT, "pack": self.pack_id, "step": self.step,
                "members": {c.id: self.member_checkpoint(k) for k, c in enumerate(self.configs)}}

    def load_members(self, members: dict[str, dict[str, Any]], where: str) -> None:
        """Continue from solo checkpoints of every member (from this pack's checkpoint or an
        earlier pack's): they must be at one step, and members of one data seed at one data
        position; CheckpointMismatch otherwise."""
        missing = [c.id[:12] for c in self.configs if c.id not in members]
        if missing:
            raise CheckpointMismatch(f"{where}: no state for pack member(s) {', '.join(missing)}")
        states = [members[c.id] for c in self.configs]
        for state, config in zip(states, self.configs):
            _check_compatible(state, config, self.settings, self.corpus, where)
        if len({(st["step"], st["pos"]) for st in states}) != 1:
            raise CheckpointMismatch(f"{where}: the pack's members are at different steps")
        for u, sampler in enumerate(self.samplers):
            mine = [st for st, v in zip(states, self.member_stream) if v == u]
            gens = {bytes(st["sampler"]["generator"].numpy()) for st in mine}
            offs = {None if st["offsets"] is None else bytes(st["offsets"].numpy()) for st in mine}
            if len(gens) != 1 or len(offs) != 1:
                raise CheckpointMismatch(f"{where}: members with one data seed are at different data positions")
            sampler.load_state_dict(mine[0]["sampler"])
        first = states[0]
        opt = [st["optimizer"]["state"].get(0) for st in states]
        if any(o is not None for o in opt):
            if any(o is None for o in opt) or len({float(o["step"]) for o in opt}) != 1:
                raise CheckpointMismatch(f"{where}: the members' optimizer states are at different steps")
            self.optimizer.state[self.flat] = {
                "step": opt[0]["step"].to(device=self.device, dtype=torch.float32).clone(),
                "exp_avg": torch.zeros_like(self.flat), "exp_avg_sq": torch.zeros_like(self.flat)}
        with torch.no_grad():
            self.flat.zero_()
            for k, st in enumerate(states):
                self.model.load_member(k, st["model"])
                if opt[k] is not None:
                    for key in ("exp_avg", "exp_avg_sq"):
                        self.model.load_member_flat(k, self.optimizer.state[self.flat][key], opt[k][key])
        self.step, self.pos = first["step"], first["pos"]
        self.updates = first.get("updates", self.step)
        self.curve_start = first.get("curve start")
        if first["offsets"] is None:
            self.offsets, self.window, self.inputs, self.targets = None, None, (), ()
        else:
            self.offsets = [next(st["offsets"] for st, v in zip(states, self.member_stream) if v == u)
                            for u in range(len(self.samplers))]
            self._set_window([sampler.window(o) for sampler, o in zip(self.samplers, self.offsets)])
        self.states = [torch.stack([st["states"][layer] for st in states]).to(self.device)
                       for layer in range(self.model.n_layers)]
        self.ma = torch.stack([st["ma"] for st in states]).to(self.device)
        self.curves = [list(st["curve"]) for st in states]
        self.val_curves = [[list(p) for p in st["val curve"]] for st in states]
        self.last_eval = None
        torch.set_rng_state(first["rng"]["torch"])
        if "cuda" in first["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(first["rng"]["cuda"], self.device)
        self.base_seconds = [st["train seconds"] for st in states]
        self.train_seconds = self._seconds_at_load = max(self.base_seconds)
        self.start_times = [st["start time"] for st in states]
        self.member_resumes = [st["resumes"] + 1 for st in states]
        self.member_diverged = [st["diverged at"] for st in states]
        self.member_problems = [list(st["checkpoint problems"]) for st in states]

    def restore(self, path: str | Path) -> bool:
        """Resume from the pack checkpoint ``path`` if it exists (an unreadable one is set aside
        and the pack starts from scratch: False)."""
        state = read_pack_checkpoint(path, self.checkpoint_problems)
        if state is None:
            return False
        self.load_members(state["members"], str(path))
        return True

    # ---------------------------------------------------------------- results
    def member_run(self, k: int) -> Run:
        """Member ``k`` as a solo :class:`Run` in its current state (for its result and weights)."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            run = Run(self.configs[k], self.settings, self.corpus)
            run.load_state_dict(self.member_checkpoint(k), where=f"pack {self.pack_id[:12]}")
        run.resumes = self.member_resumes[k]
        return run

    def results(self, weights: Callable[[str], str | Path] | None = None) -> dict[str, dict[str, Any]]:
        """Each member's result record, with its pack, by configuration id; ``weights(id)``
        names each member's weights file (written atomically), or None for none."""
        out = {}
        union = "".join(letter for letter, name in zip(SWITCH_LETTERS, SWITCHES) if self.model.union[name])
        for k, config in enumerate(self.configs):
            run = self.member_run(k)
            result = run.result()
            result["pack"] = {"id": self.pack_id, "size": self.k, "index": k, "union": union,
                              "peak memory MB per member": result["peak memory MB"] / self.k}
            if weights is not None:
                path = weights(config.id)
                run.save_weights(path)
                result["weights file"] = Path(path).name
            out[config.id] = result
        return out


def pack_chunk(device: torch.device, state_size: int, batch_size: int) -> int | None:
    """Members per batched computation of a pack: all of them on a GPU (fewest launches); on
    the CPU a few, each chunk with the layout of its own members' switches, which wastes less
    arithmetic on gates its members do not have (benchmarks/bench_pack.py: 6 members at state
    32 and 2 at state 256, batch 256, were the fastest of 1 to 16 on a 2-core machine)."""
    if device.type != "cpu":
        return None
    return max(2, min(8, 49152 // (state_size * batch_size)))


def train_pack(
    configs: list[RNNConfig],
    settings: TrainSettings,
    *,
    checkpoint: str | Path | None = None,
    resume_from: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    before_checkpoint: Callable[[], None] | None = None,
    on_progress: Callable[[Run], None] | None = None,
    corpus: Corpus | None = None,
    weights: Callable[[str], str | Path] | None = None,
) -> list[dict[str, Any]]:
    """Train ``configs`` as one pack (:class:`PackRun`) and return their result records, in order.

    checkpoint: the pack's checkpoint file: resumed from if it exists, saved to every
        ``checkpoint_every`` steps and when stopped. resume_from: another pack's checkpoint
        holding every member (an earlier pack of which these are the members left), used when
        ``checkpoint`` does not exist. The other arguments are :func:`train`'s;
        ``weights(id)`` names each member's weights file.
    """
    for config in configs:
        if not isinstance(config, RNNConfig):
            raise TypeError(f"configs must be RNNConfigs, got {type(config).__name__}")
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings must be a TrainSettings, got {type(settings).__name__}")
    run = PackRun(configs, settings, corpus)
    if not (checkpoint is not None and run.restore(checkpoint)) and resume_from is not None:
        state = read_pack_checkpoint(resume_from, run.checkpoint_problems)
        if state is not None:
            run.load_members(state["members"], str(resume_from))
    _drive(run, _saver(run, checkpoint, before_checkpoint), should_stop, on_progress)
    results = run.results(weights)
    return [results[c.id] for c in configs]
