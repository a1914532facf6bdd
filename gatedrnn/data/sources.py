"""What a run reads (DESIGN.md, "Layout"): the contract between a run and its data.

A *source* is the identity of what is learned (``name``, ``sha256``, ``n_train``), a seeded
sampler of training windows, the inputs and targets of each step of a window, the loss, and
the held-out evaluation with its chance levels. Next-byte prediction on a corpus
(:class:`ByteSource`) and each memory task (:class:`TaskSource`) implement it, so a run has no
branch on what it learns.

The contract, as a run uses it:

``window_length``            steps per window (``history``, or a task's sequence length)
``ma_from_first_loss``       whether the moving average starts at the first loss (a task's
                             scale is its own) rather than at the original study's 3.0
``loss(out, y)``             the mean loss of one step's outputs
``sampler(batch, seed, device)``   ``next_offsets()``, ``window(offsets)``, ``state_dict()``,
                             ``load_state_dict()``: the data cursor a checkpoint keeps
``steps(window)``            per-step tuples (inputs, targets); a target is None where a step
                             has none
``heldout(streams, device, part)``  the ``val`` (selection, the curves) or ``test`` split
                             (measured once, at the end) under the settings' split rule, or
                             ``train`` (fixed streams of the training split, measured once at
                             the end: the generalisation gap; None where there is none): an
                             object with ``evaluate(model) -> (loss, metrics)`` (stepwise from
                             zero states, the training procedure's forward) and ``probe()`` (one
                             input, for timing inference); None for ``test`` under ``tail``
``examples_read(steps, batch)``    bytes, or sequences, read so far
``bpb(loss)``, ``result_fields(run)``   what a result adds for this source
``whole_test(streams, device)`` (bytes only)   the whole test split scored once (``contiguous``)
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..spec.config import RNNConfig, TrainSettings
import numpy as np

from .corpus import VOCAB, Corpus, check_length, load_corpus, validation_streams
from .tasks import Task, TaskSampler, task_of

__all__ = ["ByteSource", "TaskSource", "StreamSampler", "WholeSplit", "source_of", "stepwise"]


def stepwise(model: Any, inputs: Sequence[Tensor], batch: int) -> Iterator[tuple[int, Tensor]]:
    """``model``'s output at each step of ``inputs`` from zero states (``model.initial_state``
    and ``model.step``: the training procedure's forward, without learning)."""
    states = model.initial_state(batch)
    for t, x in enumerate(inputs):
        out, states = model.step(x, states)
        yield t, out


class StreamSampler:
    """Windows of ``batch_size`` parallel streams over the training split.

    A window picks ``batch_size`` random offsets (from its own seeded generator) and yields
    ``history + 1`` consecutive bytes from each, as a (history + 1, batch) int64 tensor built
    by one vectorised gather. Position j of the window is read at step j and row j + 1 is
    its target.
    """

    def __init__(self, train: np.ndarray, batch_size: int, history: int, seed: int, device) -> None:
        self.batch_size = batch_size
        self.history = history
        self.device = torch.device(device)
        self.data = torch.from_numpy(np.array(train, dtype=np.uint8)).to(self.device)  # (T,) uint8, a private copy
        self.generator = torch.Generator().manual_seed(seed)
        self._arange = torch.arange(history + 1, device=self.device)

    def next_offsets(self) -> Tensor:
        high = self.data.numel() - self.history  # offset + history must be a valid index
        return torch.randint(0, high, (self.batch_size,), generator=self.generator)

    def window(self, offsets: Tensor) -> Tensor:
        idx = offsets.to(self.device)[None, :] + self._arange[:, None]  # (history+1, batch)
        return self.data[idx].long()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class _ByteHeldOut:
    """The fixed streams of one held-out split: (length + 1, streams) bytes on the device."""

    def __init__(self, split: np.ndarray, history: int, streams: int, device: torch.device) -> None:
        self.windows = torch.from_numpy(validation_streams(split, history, streams)).to(device).long()

    def evaluate(self, model: Any) -> tuple[Any, None]:
        """Nats per byte: a float, or a list of one per member for a pack's model."""
        w = self.windows
        n, steps = w.size(1), w.size(0) - 1
        total = None
        for t, out in stepwise(model, w[:-1].unbind(0), n):
            if out.dim() == 2:  # (N, 256): one model
                part = F.cross_entropy(out, w[t + 1], reduction="sum").double()
            else:  # (K, N, 256): a pack, every member on the same streams
                k = out.size(0)
                target = w[t + 1].expand(k, n).reshape(-1)
                part = F.cross_entropy(out.reshape(-1, VOCAB), target, reduction="none").view(k, n).sum(1).double()
            total = part if total is None else total + part
        mean = total / (steps * n)
        return (mean.item() if mean.dim() == 0 else mean.tolist()), None

    def probe(self) -> Tensor:
        return self.windows[0, :1]


class WholeSplit:
    """A whole held-out split scored once, the literature's way (static evaluation): cut into
    ``streams`` contiguous streams (the first ``len % streams`` one byte longer), the state carried
    through each stream from its first byte, every byte but each stream's first scored once."""

    def __init__(self, split: np.ndarray, streams: int, device: torch.device) -> None:
        split = np.asarray(split).reshape(-1)
        streams = max(1, min(streams, len(split) // 2))
        base, extra = divmod(len(split), streams)
        lengths = np.full(streams, base) + (np.arange(streams) < extra)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        pos = np.arange(base + (extra > 0))
        idx = np.minimum(starts[None, :] + pos[:, None], len(split) - 1)  # (length, streams)
        self.bytes = torch.from_numpy(split[idx].astype(np.int64)).to(device)
        self.mask = torch.from_numpy(pos[:, None] < lengths[None, :]).to(device)  # the padding of shorter streams
        self.scored = int(self.mask[1:].sum())

    def evaluate(self, model: Any) -> float:
        """Nats per scored byte."""
        total = torch.zeros((), dtype=torch.float64, device=self.bytes.device)
        for t, out in stepwise(model, self.bytes[:-1].unbind(0), self.bytes.size(1)):
            nll = F.cross_entropy(out, self.bytes[t + 1], reduction="none")
            total += nll[self.mask[t + 1]].double().sum()
        return float(total) / self.scored


class ByteSource:
    """Next-byte prediction on a corpus (:mod:`gatedrnn.data.corpus`)."""

    ma_from_first_loss = False

    def __init__(self, corpus: Corpus, history: int, split: str = "windows") -> None:
        check_length(corpus, history)
        self.corpus, self.history, self.split = corpus, history, split
        self.name, self.sha256, self.n_train = corpus.name, corpus.sha256, corpus.n_train
        self.window_length = history

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out, y)

    def sampler(self, batch_size: int, seed: int, device: torch.device) -> StreamSampler:
        return StreamSampler(self.corpus.train, batch_size, self.history, seed=seed, device=device)

    def steps(self, window: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        inputs = window.unbind(0)  # (history + 1) rows: row j + 1 is row j's target
        return inputs, inputs[1:]

    def heldout(self, streams: int, device: torch.device, part: str = "val") -> _ByteHeldOut | None:
        """``val``, ``test``, or ``train``: as many fixed streams of the training split, spread evenly
        over it, measured by the same procedure (the training side of the generalisation gap)."""
        data = self.corpus.train if part == "train" else self.corpus.heldout(part, self.split, self.history)
        return None if data is None else _ByteHeldOut(data, self.history, streams, device)

    def whole_test(self, streams: int, device: torch.device) -> WholeSplit | None:
        """The whole test split for the literature's score (``contiguous`` only: a windows split
        is a sample of windows, scored by ``heldout``)."""
        return WholeSplit(self.corpus.heldout("test", "contiguous"), streams, device) if self.split == "contiguous" else None

    def examples_read(self, steps: int, batch: int) -> float:
        return steps * batch

    def bpb(self, loss: float | None) -> float | None:
        return None if loss is None else loss / math.log(2)

    def result_fields(self, run: Any) -> dict[str, Any]:
        return {}


class _TaskHeldOut:
    """A task's fixed held-out sequences and its metrics on them."""

    def __init__(self, task: Task, data: tuple[Tensor, Tensor], device: torch.device) -> None:
        self.task = task
        self.x, self.y = (t.to(device) for t in data)

    def evaluate(self, model: Any) -> tuple[float, dict[str, float]]:
        task = self.task
        outs = [out for t, out in stepwise(model, self.x.unbind(0), self.x.size(1)) if task.mask[t]]
        metrics = task.metrics(torch.stack(outs), self.y[task.target_steps])
        return metrics[task.loss_name], metrics

    def probe(self) -> Tensor:
        return self.x[0, :1]


class TaskSource:
    """A memory task (:mod:`gatedrnn.data.tasks`): each window is a batch of its sequences."""

    ma_from_first_loss = True

    def __init__(self, task: Task, streams: int, split: str = "windows") -> None:
        self.task, self.split = task, split
        self.name, self.sha256, self.n_train = task.label, task.sha256, task.n_train
        self.window_length = task.steps
        self.chance = task.chance(streams, split)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return self.task.loss(out, y)

    def sampler(self, batch_size: int, seed: int, device: torch.device) -> TaskSampler:
        return TaskSampler(self.task, batch_size, seed=seed, device=device)

    def steps(self, window: tuple[Tensor, Tensor]):
        x, y = window
        return x.unbind(0), tuple(y[t] if m else None for t, m in enumerate(self.task.mask))

    def heldout(self, streams: int, device: torch.device, part: str = "val") -> _TaskHeldOut | None:
        """``val`` or ``test``; None for ``train`` (a task's sequences are drawn anew: no gap to
        measure) and for ``test`` under ``tail``."""
        if part == "train":
            return None
        data = self.task.heldout_set(part, streams, self.split)
        return None if data is None else _TaskHeldOut(self.task, data, device)

    def examples_read(self, steps: int, batch: int) -> float:
        return steps * batch / self.window_length

    def bpb(self, loss: float | None) -> None:
        return None

    def result_fields(self, run: Any) -> dict[str, Any]:
        diverged = run.diverged_at is not None
        fields = {"task label": self.task.label, "loss kind": self.task.loss_name, "curve start": run.curve_start,
                  "chance": self.chance}
        if self.split == "tail":  # before the split rule, the validating set's metrics were named so
            return {**fields, "test metrics": None if diverged else run.val_metrics}
        return {**fields, "val metrics": None if diverged else run.val_metrics,
                "test metrics": None if diverged else run.test_metrics}


def source_of(config: RNNConfig, settings: TrainSettings, corpus: Corpus | None = None) -> ByteSource | TaskSource:
    """What ``config`` learns under ``settings``: its memory task, or the corpus (loaded from
    ``settings.data`` unless given)."""
    task = task_of(config, settings.data)
    if task is not None:
        return TaskSource(task, settings.val_streams, settings.split)
    return ByteSource(corpus if corpus is not None else load_corpus(settings.data), settings.history, settings.split)
