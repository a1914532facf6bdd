"""One configuration's run (DESIGN.md, "Training without BPTT").

Every step is one optimizer step: the model reads step j of each of ``batch_size`` parallel
streams, predicts its target, and takes one update; the layers' states are then detached, so
no gradient crosses a time step (unless the configuration asks for truncated BPTT). Windows
start from zero states at random places of the source's training data.

:class:`Run` holds the whole state of a run (model, optimizer, step, metrics, every random
generator, the data cursor), saves it to and restores it from a checkpoint
(:class:`gatedrnn.training.checkpoints.RunState`) for an identical resume, and builds the result record.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from pathlib import Path
from typing import Any

import torch

from . import checkpoints
from ..models.cells import RidgeReadout
from .checkpoints import RunState
from ..spec.config import RIDGE_ALPHA, RNNConfig, TrainSettings
from ..data.corpus import Corpus
from .devices import peak_memory_mb, synchronize, versions
from ..store.folder import result_record
from .loop import MA_START, Loop, seeded_model
from .rules import (AutogradRule, HandWrittenRule, RidgeRule, TruncatedBPTTRule, UpdateRule, flatten_parameters,
                    make_optimizer)
from ..data.sources import source_of

__all__ = ["Run"]


class Run(Loop):
    """The complete state of one training run: next-byte prediction, or a memory task
    (``config.task``), through the one loop (:class:`gatedrnn.training.loop.Loop`)."""

    def __init__(self, config: RNNConfig, settings: TrainSettings, corpus: Corpus | None = None,
                 autograd: bool = False, source: Any = None) -> None:
        """``autograd=True`` makes the gated cell train through autograd instead of its
        hand-written backward (:meth:`ByteModel.train_step`); the two agree to float rounding.
        ``source``: what it learns (:mod:`gatedrnn.data.sources`), made from ``config``, ``settings``
        and ``corpus`` when not given."""
        self.config = config
        self.autograd = autograd
        self._set_up(settings, source if source is not None else source_of(config, settings, corpus))
        self.seed = config.seed if config.seed is not None else settings.seed
        self.model = seeded_model(config, self.seed, settings.input_init).to(self.device)
        self.ridge: RidgeReadout | None = None
        self.flat: torch.nn.Parameter | None = None
        self.optimizer: torch.optim.Adam | None = None
        self.rule = self._make_rule(self._rule_kind())
        self.sampler = self.source.sampler(settings.batch_size, 2 * self.seed + 1, self.device)
        self.heldout = self.source.heldout(settings.val_streams, self.device)
        self.offsets: torch.Tensor | None = None
        self.states = self.model.initial_state(settings.batch_size)
        self.ma = torch.tensor(MA_START, device=self.device)  # stays on the device between logs
        self.val_metrics: dict[str, float] | None = None
        self.test_metrics: dict[str, float] | None = None  # measured once, by result()
        self.curve: list[float] = []
        self.curve_start: int | None = None  # the step of the curve's first point
        self.val_curve: list[list[float]] = []  # [step, val loss]
        self.start_time = time.time()
        self.resumes = 0
        self.diverged_at: int | None = None
        self.checkpoint_problems: list[str] = []

    def _rule_kind(self) -> str:
        if self.config.cell == "esn" and self.config.readout == "ridge":
            return "ridge"
        if self.config.bptt > 1:
            return "bptt"
        return "hand-written" if self.model.manual_backward and not self.autograd else "autograd"

    def _make_rule(self, kind: str) -> UpdateRule:
        if kind == "ridge":
            self.ridge = RidgeReadout(self.model.readout.in_features, self.model.readout.out_features, RIDGE_ALPHA,
                                      self.device)
            with torch.no_grad():
                self.model.readout.weight.zero_()
                self.model.readout.bias.zero_()
            return RidgeRule(self.model, self.ridge)
        self.flat = flatten_parameters(self.model)
        self.lr = self.config.lr if self.config.lr is not None else self.settings.lr  # a swept lr overrides
        self.optimizer = make_optimizer(self.flat, self.lr, self.device)
        if kind == "bptt":
            return TruncatedBPTTRule(self.model, self.optimizer, self.flat, self.config.bptt)
        if kind == "autograd":
            return AutogradRule(self.model, self.optimizer, self.flat)
        return HandWrittenRule(self.model, self.optimizer)

    # ---------------------------------------------------------------- the loop's parts
    def _new_window(self) -> None:
        self.offsets = self.sampler.next_offsets()
        self._use_window(self.sampler.window(self.offsets))
        self.states = self.model.initial_state(self.settings.batch_size)

    def _record_point(self) -> bool:
        if self.ma_started:
            value = self.ma.item()
            if not math.isfinite(value):
                self.diverged_at = self.step
                return False
            if not self.curve:
                self.curve_start = self.step
            self.curve.append(value)
        return True

    def record_evaluation(self) -> None:
        self.val_curve.append([self.step, self.evaluate()])

    def evaluated_now(self) -> bool:
        return bool(self.val_curve) and self.val_curve[-1][0] == self.step

    @contextlib.contextmanager
    def _evaluating(self):
        """The model in eval mode, without gradients, for the block; as it was after it."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train(was_training)

    def evaluate(self) -> float:
        """The held-out loss (nats per byte, or the task's loss) stepwise from zero states; a
        memory task's metrics are kept in ``val_metrics``."""
        with self._evaluating():
            loss, metrics = self.heldout.evaluate(self.model)
        if metrics is not None:
            self.val_metrics = metrics
        return loss

    def evaluate_test(self) -> float | None:
        """The test split's loss (and a memory task's metrics, in ``test_metrics``): measured once,
        on the final weights, never used to select; None under the ``tail`` rule (no test split)."""
        split = self.source.heldout(self.settings.val_streams, self.device, "test")
        if split is None:
            return None
        with self._evaluating():
            loss, self.test_metrics = split.evaluate(self.model)
        return loss

    def evaluate_train(self) -> float | None:
        """The loss on fixed streams of the training split by the held-out procedure (the
        training side of the generalisation gap), or None where the source has none."""
        split = self.source.heldout(self.settings.val_streams, self.device, "train")
        if split is None:
            return None
        with self._evaluating():
            return split.evaluate(self.model)[0]

    def evaluate_whole_test(self) -> dict[str, Any]:
        """Under the ``contiguous`` rule, the whole test split scored once (nats and bits per
        byte, the literature's static evaluation, ``batch_size`` streams); else nothing."""
        whole = getattr(self.source, "whole_test", lambda *a: None)(self.settings.batch_size, self.device)
        if whole is None:
            return {}
        with self._evaluating():
            loss = whole.evaluate(self.model)
        return {"test loss (whole split)": loss, "test bpb (whole split)": self.source.bpb(loss),
                "test bytes scored (whole split)": whole.scored}

    def memorisation(self, val_loss: float | None) -> dict[str, Any]:
        """The validation curve's minimum and its step, and the generalisation gap (validation
        minus training-split loss at the end, both by the held-out procedure)."""
        curve = [(step, value) for step, value in self.val_curve if math.isfinite(value)]
        best = min(curve, key=lambda p: p[1]) if curve else (None, None)
        train = None if val_loss is None else self.evaluate_train()
        return {"min val loss": best[1], "min val step": best[0], "train split loss": train,
                "generalisation gap": None if train is None else val_loss - train}

    # ---------------------------------------------------------------- checkpoint
    def snapshot(self) -> RunState:
        return RunState(
            config=self.config.to_dict(with_id=True), settings=self.settings.to_dict(), dataset=self.source.name,
            dataset_sha256=self.source.sha256, model=self.model.state_dict(),
            optimizer=None if self.optimizer is None else self.optimizer.state_dict(),
            ridge=None if self.ridge is None else self.ridge.state_dict(), step=self.step, updates=self.updates,
            pos=self.pos, offsets=None if self.offsets is None or self.window is None else self.offsets.cpu(),
            states=[s.cpu() for s in self.states], ma=self.ma.cpu(), ma_started=self.ma_started,
            curve=list(self.curve), curve_start=self.curve_start, val_curve=[list(p) for p in self.val_curve],
            val_metrics=self.val_metrics, sampler=self.sampler.state_dict(),
            rng=checkpoints.rng_state(self.device), train_seconds=self.train_seconds, start_time=self.start_time,
            resumes=self.resumes, diverged_at=self.diverged_at, problems=list(self.checkpoint_problems))

    def state_dict(self) -> dict[str, Any]:
        return self.snapshot().to_dict()

    def load(self, state: RunState, where: str = "checkpoint") -> None:
        """Continue from ``state`` (CheckpointMismatch if it is another configuration's, or was
        made under other settings or data)."""
        state.check(self.config, self.settings, self.source.sha256, where)
        self.model.load_state_dict(state.model)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state.optimizer)
        if self.ridge is not None:
            self.ridge.load_state_dict(state.ridge)
        self.step, self.pos, self.updates = state.step, state.pos, state.updates
        self.offsets = state.offsets
        if self.offsets is None:
            self.window, self.inputs, self.targets = None, (), ()
        else:
            self._use_window(self.sampler.window(self.offsets))
        self.states = [s.to(self.device) for s in state.states]
        self.ma = state.ma.to(self.device)
        self.ma_started = state.ma_started
        self.curve = list(state.curve)
        self.curve_start = state.curve_start
        self.val_curve = [list(p) for p in state.val_curve]
        self.val_metrics = state.val_metrics
        self.sampler.load_state_dict(state.sampler)
        checkpoints.set_rng_state(state.rng, self.device)
        self.train_seconds = state.train_seconds
        self.start_time = state.start_time
        self.resumes = state.resumes + 1
        self.diverged_at = state.diverged_at
        self.checkpoint_problems = list(state.problems)

    def load_state_dict(self, state: dict[str, Any], where: str = "checkpoint") -> None:
        self.load(RunState.from_dict(state, where), where)

    def save(self, path: str | Path) -> None:
        checkpoints.save(path, self.state_dict())

    def restore(self, path: str | Path) -> bool:
        """Resume from ``path`` if it exists. An unreadable checkpoint is reported, set aside
        and the run starts from scratch (returns False); a checkpoint of another configuration
        or other settings raises :class:`gatedrnn.training.checkpoints.CheckpointMismatch`."""
        state = checkpoints.read_run(path, self.checkpoint_problems)
        if state is None:
            return False
        self.load(state, where=str(path))
        return True

    # ---------------------------------------------------------------- result
    def weights_record(self) -> dict[str, Any]:
        return checkpoints.weights_record(self.config, self.settings, self.source.name, self.source.sha256,
                                          self.step, self.model.state_dict())

    def save_weights(self, path: str | Path) -> None:
        """The final weights as safetensors, with what they are in the metadata."""
        checkpoints.save_weights(path, self.weights_record(), self.config.id)

    @torch.no_grad()
    def inference_ms(self, batch: int, steps: int = 40) -> float:
        """Milliseconds per step of the forward pass alone (no gradient), at ``batch`` streams."""
        was_training = self.model.training
        self.model.eval()
        states = self.model.initial_state(batch)
        first = self.heldout.probe()
        x = first.expand(batch, *first.shape[1:]).contiguous()
        for _ in range(5):  # warm-up
            _, states = self.model.step(x, states)
        synchronize(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            _, states = self.model.step(x, states)
        synchronize(self.device)
        self.model.train(was_training)
        return 1e3 * (time.perf_counter() - t0) / steps

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
        """The result record (:func:`gatedrnn.store.folder.result_record`; the one builder of a run's
        result, a pack member's too)."""
        s, source = self.settings, self.source
        diverged = self.diverged_at is not None
        val_loss = None if diverged or not self.val_curve else self.val_curve[-1][1]
        test_loss = None if diverged else self.evaluate_test()
        peak, peak_kind = peak_memory_mb(self.device)
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
            "dataset": source.name,
            "dataset sha256": source.sha256,
            # examples read (bytes, or a task's sequences) over the training split's size: above 1,
            # the training curve measures memorising too
            "epochs": None if source.n_train is None else source.examples_read(self.step, s.batch_size) / source.n_train,
            "val loss": val_loss,
            "val bpb": source.bpb(val_loss),
            "val curve": [list(p) for p in self.val_curve],
            **self.memorisation(val_loss),
            **({} if s.split == "tail" else {"test loss": test_loss, "test bpb": source.bpb(test_loss)}),
            **({} if diverged else self.evaluate_whole_test()),
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
            "versions": versions(),
            "final weights sha256": self.weights_sha256(),
            "convergence step": self.convergence_step(),
            **source.result_fields(self),
        }
        if diverged:
            fields["diverged at step"] = self.diverged_at
        else:
            fields["inference ms per step (batch 1)"] = self.inference_ms(1)
            fields["inference ms per step (training batch)"] = self.inference_ms(s.batch_size)
        if self.checkpoint_problems:
            fields["checkpoint problems"] = list(self.checkpoint_problems)
        return result_record(self.config.to_dict(with_id=True), "diverged" if diverged else "done", fields)
