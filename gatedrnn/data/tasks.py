"""The memory tasks: generators, targets, metrics and chance levels.

Next-byte prediction says how well a layer predicts text; these tasks say what it can remember.
They are the standard set of the recurrent-network literature (and of the ESGP package's
comparison of LSTM, GRU, ESN and ESGP), each a seeded generator of independent sequences with
fixed held-out sets (:meth:`Task.heldout_set`): under the ``windows`` and ``blocks`` split rules a validation
set and a test set from different generator seeds (mackey-glass and digits: the even- and the
odd-numbered windows or images of the held-out part); under ``tail`` (results made before the
rule) one held-out set that validates:

- ``copy`` (Arjovsky, Shah and Bengio 2016): 10 symbols drawn from 8, then ``length`` = T
  steps whose last is a delimiter (T - 1 blanks before it), then 10 blanks during which the
  model must emit the 10 symbols; T + 20 steps, a target (blank or symbol) at every step. Chance
  is the memoryless strategy (blank, then uniform over the 8 symbols): 10 ln 8 / (T + 20) nats.
- ``adding`` (Le, Jaitly and Hinton 2015): T steps of two channels, a value from U[0, 1] and a
  marker that is 1 at one position of each half; the target, at the last step only, is the sum
  of the two marked values. Chance: predicting 1, MSE 1/6.
- ``delayed`` (delayed response): a symbol of K at every step; the target at step t >= delay is
  the symbol of step t - delay. Chance: ln K nats, accuracy 1/K.
- ``mackey-glass``: the Mackey-Glass series (beta 0.2, gamma 0.1, n 10, tau 17), integrated by
  RK4 with step 0.1 and sampled at unit time, standardised by its training part; predict the
  value ``horizon`` steps ahead at every step. Test: the held-out continuation. The reference
  is persistence (predict the current value).
- ``digits``: scikit-learn's bundled 8 x 8 handwritten digits (1797 images; no download), one
  pixel per step (64 steps, values / 16), the class at the last step. Test: a fixed 360-image
  split. Chance: accuracy 10 %, cross-entropy ln 10.

A task's batch is ``(x, y)``: x (T, N) symbols or (T, N, C) real values, y (T, N) classes or
real targets; ``mask[t]`` says whether step t has a target (the same for every sequence).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..spec.config import MG_TEST_STEPS as MG_TEST, RNNConfig, task_label
from .mnist import load_mnist

__all__ = ["Task", "TaskSampler", "task_of", "task_io", "mackey_glass", "digits_split", "TEST_SEED", "TasksError"]

SMNIST_PERMUTATION_SEED = 20_161_3  # the permuted variant's fixed pixel order
TEST_SEED = 20_161_1  # the generated tasks' held-out sequences; training draws 62-bit seeds
VAL_SEED = 20_161_2  # their validation sequences under the blocks rule (TEST_SEED's validated under tail)
COPY_SYMBOLS, COPY_RECALL = 8, 10
MG_TRAIN, MG_WASHOUT = 10_000, 500
DIGITS_TEST = 360
_FORMAT = "gatedrnn tasks 1"  # changes whenever a task's data would change


class TasksError(RuntimeError):
    """A task's data cannot be made on this machine (scikit-learn missing for ``digits``)."""


# ---------------------------------------------------------------------------- data sources
@functools.lru_cache(maxsize=4)
def mackey_glass(n: int = MG_TRAIN + MG_TEST, washout: int = MG_WASHOUT, dt: float = 0.1, tau: float = 17.0,
                 beta: float = 0.2, gamma: float = 0.1, power: int = 10, x0: float = 1.2) -> np.ndarray:
    """``n`` unit-time samples of dx/dt = beta x(t - tau) / (1 + x(t - tau)^power) - gamma x(t),
    after ``washout`` time units, from x = x0 on [-tau, 0]. Classical RK4 with step ``dt``; the
    delayed value at a half step is the mean of its two grid neighbours. Plain floats, so the
    series is the same on every machine."""
    per, lag = round(1 / dt), round(tau / dt)
    total = (n + washout) * per
    x = [x0] * (lag + 1)

    def f(value: float, delayed: float) -> float:
        return beta * delayed / (1.0 + delayed ** power) - gamma * value

    for i in range(lag, lag + total):
        d0, d1 = x[i - lag], x[i - lag + 1]
        dh = 0.5 * (d0 + d1)
        xi = x[i]
        k1 = f(xi, d0)
        k2 = f(xi + 0.5 * dt * k1, dh)
        k3 = f(xi + 0.5 * dt * k2, dh)
        k4 = f(xi + dt * k3, d1)
        x.append(xi + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4))
    return np.asarray(x[lag::per][washout:washout + n], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8 x 8 digits as (train images, train labels, test images, test labels):
    images (n, 64) float32 in [0, 1], a fixed split of ``DIGITS_TEST`` test images."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TasksError("the digits task needs scikit-learn's bundled digits: pip install scikit-learn") from None
    data = load_digits()
    images = (np.asarray(data.data, dtype=np.float32) / 16.0)
    labels = np.asarray(data.target, dtype=np.int64)
    order = np.random.RandomState(0).permutation(len(labels))
    test, train = order[:DIGITS_TEST], order[DIGITS_TEST:]
    return images[train], labels[train], images[test], labels[test]


# ---------------------------------------------------------------------------- tasks
class Task:
    """One memory task of a configuration (:func:`task_of`).

    Attributes: ``name``, ``options`` (its keys), ``label``; ``steps`` per sequence;
    ``real_input`` and ``inputs`` (the symbols' count, or real channels); ``classify`` and
    ``outputs`` (classes, or 1 regression output); ``mask`` (which steps have a target);
    ``loss_name`` (``cross-entropy`` or ``mse``, the loss and the ranked ``val loss``);
    ``sha256`` (what a checkpoint must match); ``n_train`` (training examples, where finite).
    """

    def __init__(self, name: str, options: dict[str, Any], data: str | None = None) -> None:
        self.name, self.options = name, dict(options)
        self.label = task_label(name, options)
        self.n_train: int | None = None
        o = self.options
        if name == "copy":
            self.steps = o["length"] + 2 * COPY_RECALL
            self.real_input, self.inputs = False, COPY_SYMBOLS + 2  # symbols, blank, delimiter
            self.classify, self.outputs = True, COPY_SYMBOLS + 1  # symbols, blank
            self.mask = (True,) * self.steps
        elif name == "adding":
            self.steps = o["length"]
            self.real_input, self.inputs = True, 2
            self.classify, self.outputs = False, 1
            self.mask = (False,) * (self.steps - 1) + (True,)
        elif name == "delayed":
            self.steps = o["length"]
            self.real_input, self.inputs = False, o["symbols"]
            self.classify, self.outputs = True, o["symbols"]
            self.mask = tuple(t >= o["delay"] for t in range(self.steps))
        elif name == "mackey-glass":
            self.steps = o["length"]
            self.real_input, self.inputs = True, 1
            self.classify, self.outputs = False, 1
            self.mask = (True,) * self.steps
            series = mackey_glass()
            train = series[:MG_TRAIN]
            self.series = ((series - train.mean()) / train.std()).astype(np.float32)
        elif name == "digits":
            self.steps = 64
            self.real_input, self.inputs = True, 1
            self.classify, self.outputs = True, 10
            self.mask = (False,) * 63 + (True,)
            self.digits = digits_split()
            self.n_train = len(self.digits[1])
        elif name == "smnist":
            self.steps = 784
            self.real_input, self.inputs = True, 1
            self.classify, self.outputs = True, 10
            self.mask = (False,) * 783 + (True,)
            self.mnist = load_mnist(data)
            # the last tenth of the training images is held out to validate; the test images test
            self.n_train = len(self.mnist.train_labels) - max(1, len(self.mnist.train_labels) // 10)
            self.order = (np.random.default_rng(SMNIST_PERMUTATION_SEED).permutation(784) if o["permute"]
                          else np.arange(784))
        else:
            raise ValueError(f"no memory task {name!r}")
        self.loss_name = "cross-entropy" if self.classify else "mse"
        self.target_steps = [t for t, m in enumerate(self.mask) if m]
        identity = json.dumps({"format": _FORMAT, "task": name, "options": self.options}, sort_keys=True).encode()
        digest = hashlib.sha256(identity)
        if name == "mackey-glass":
            digest.update(self.series.tobytes())
        elif name == "digits":
            for part in self.digits:
                digest.update(part.tobytes())
        elif name == "smnist":
            digest.update(self.mnist.sha256.encode())
        self.sha256 = digest.hexdigest()

    # -------------------------------------------------------------- sequences
    def batch(self, seed: int, n: int) -> tuple[Tensor, Tensor]:
        """``n`` training sequences from ``seed``: (x, y) on the CPU."""
        return self._make(torch.Generator().manual_seed(int(seed)), n, train=True)

    def test_set(self, n: int) -> tuple[Tensor, Tensor]:
        """The fixed held-out sequences: ``n`` generated from ``TEST_SEED`` (copy, adding,
        delayed), up to ``n`` consecutive windows of the held-out continuation (mackey-glass),
        or the whole held-out split (digits)."""
        return self._make(torch.Generator().manual_seed(TEST_SEED), n, train=False)

    def heldout_set(self, part: str, n: int, rule: str = "windows") -> tuple[Tensor, Tensor] | None:
        """The ``val`` or ``test`` set under the split ``rule``: ``tail`` validates on
        :meth:`test_set` and has no test set (None); ``windows`` and ``blocks`` validate on sequences from
        ``VAL_SEED`` and tests on those from ``TEST_SEED`` (mackey-glass, digits: the even- and
        the odd-numbered held-out windows or images)."""
        if rule == "tail":
            return self.test_set(n) if part == "val" else None
        seed = VAL_SEED if part == "val" else TEST_SEED
        return self._make(torch.Generator().manual_seed(seed), n, train=False, parity=0 if part == "val" else 1)

    def _make(self, g: torch.Generator, n: int, train: bool, parity: int | None = None) -> tuple[Tensor, Tensor]:
        if self.name == "smnist":
            return self._smnist(g, n, train, parity)
        o, T = self.options, self.steps
        if self.name == "copy":
            symbols = torch.randint(0, COPY_SYMBOLS, (COPY_RECALL, n), generator=g)
            blank, delimiter = COPY_SYMBOLS, COPY_SYMBOLS + 1
            x = torch.full((T, n), blank, dtype=torch.long)
            x[:COPY_RECALL] = symbols
            x[COPY_RECALL + o["length"] - 1] = delimiter
            y = torch.full((T, n), blank, dtype=torch.long)
            y[T - COPY_RECALL:] = symbols
            return x, y
        if self.name == "adding":
            values = torch.rand(T, n, generator=g)
            half = T // 2
            first = torch.randint(0, half, (n,), generator=g)
            second = torch.randint(half, T, (n,), generator=g)
            markers = torch.zeros(T, n)
            cols = torch.arange(n)
            markers[first, cols] = 1.0
            markers[second, cols] = 1.0
            y = torch.zeros(T, n)
            y[T - 1] = values[first, cols] + values[second, cols]
            return torch.stack((values, markers), dim=-1), y
        if self.name == "delayed":
            x = torch.randint(0, o["symbols"], (T, n), generator=g)
            y = torch.zeros(T, n, dtype=torch.long)
            y[o["delay"]:] = x[:T - o["delay"]]
            return x, y
        if self.name == "mackey-glass":
            h = o["horizon"]
            series = torch.from_numpy(self.series)
            if train:
                starts = torch.randint(0, MG_TRAIN - h - T, (n,), generator=g)
            elif parity is None:
                count = max(1, min(n, (MG_TEST - h) // T))
                starts = MG_TRAIN + torch.arange(count) * T
            elif (MG_TEST - h) // T >= 2:  # every other window of the continuation, at most n
                starts = (MG_TRAIN + torch.arange((MG_TEST - h) // T) * T)[parity::2][:n]
            else:  # room for one window: validation at the start, test at the end (they overlap)
                starts = torch.tensor([MG_TRAIN if parity == 0 else MG_TRAIN + MG_TEST - h - T])
            idx = starts[None, :] + torch.arange(T)[:, None]  # (T, n)
            return series[idx].unsqueeze(-1), series[idx + h]
        # digits
        images, labels = (self.digits[0], self.digits[1]) if train else (self.digits[2], self.digits[3])
        pick = (torch.randint(0, len(labels), (n,), generator=g) if train else
                torch.arange(len(labels))[slice(parity or 0, None, 1 if parity is None else 2)])
        x = torch.from_numpy(images)[pick].t().unsqueeze(-1).contiguous()  # (64, n, 1)
        y = torch.zeros(T, len(pick), dtype=torch.long)
        y[T - 1] = torch.from_numpy(labels)[pick]
        return x, y

    def _smnist(self, g: torch.Generator, n: int, train: bool, parity: int | None) -> tuple[Tensor, Tensor]:
        """Training: ``n`` images drawn from the training part. Held out: the first ``n`` of the
        held-out tenth of the training images (validation; ``parity`` 0 or None) or of the test
        images (``parity`` 1). One pixel per step (/ 255) in ``order``, the class at the last."""
        m = self.mnist
        if train:
            pick = torch.randint(0, self.n_train, (n,), generator=g).numpy()
            images, labels = m.train_images[pick], m.train_labels[pick]
        elif parity == 1:
            images, labels = m.test_images[:n], m.test_labels[:n]
        else:
            images, labels = m.train_images[self.n_train:][:n], m.train_labels[self.n_train:][:n]
        x = torch.from_numpy(images[:, self.order].astype(np.float32) / 255.0).t().unsqueeze(-1).contiguous()
        y = torch.zeros(784, len(labels), dtype=torch.long)
        y[783] = torch.from_numpy(labels.astype(np.int64))
        return x, y

    # -------------------------------------------------------------- loss, metrics, chance
    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The mean loss of one step's outputs (N, outputs) against its targets (N,)."""
        if self.classify:
            return F.cross_entropy(out, y)
        return F.mse_loss(out.squeeze(-1), y)

    def metrics(self, out: Tensor, y: Tensor) -> dict[str, float]:
        """The metrics of outputs (S, N, outputs) at the S target steps against y (S, N)."""
        out = out.detach()
        if self.classify:
            logp = torch.log_softmax(out.double(), dim=-1)
            ce = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (S, N)
            right = (out.argmax(-1) == y).double()
            if self.name == "copy":
                return {"cross-entropy": float(ce.mean()), "recall accuracy": float(right[-COPY_RECALL:].mean())}
            return {"cross-entropy": float(ce.mean()), "accuracy": float(right.mean())}
        err = (out.squeeze(-1).double() - y.double()) ** 2
        result = {"mse": float(err.mean())}
        if self.name == "mackey-glass":
            result["nrmse"] = math.sqrt(result["mse"]) / float(y.double().std())
        return result

    def chance(self, n_test: int = 256, rule: str = "tail") -> dict[str, float]:
        """The chance level of every metric (the same names as :meth:`metrics`); for
        mackey-glass, persistence on the validation windows of the held-out continuation."""
        o = self.options
        if self.name == "copy":
            return {"cross-entropy": COPY_RECALL * math.log(COPY_SYMBOLS) / (o["length"] + 2 * COPY_RECALL),
                    "recall accuracy": 1 / COPY_SYMBOLS}
        if self.name == "adding":
            return {"mse": 1 / 6}
        if self.name == "delayed":
            return {"cross-entropy": math.log(o["symbols"]), "accuracy": 1 / o["symbols"]}
        if self.name in ("digits", "smnist"):
            return {"cross-entropy": math.log(10), "accuracy": 0.1}
        x, y = self.heldout_set("val", n_test, rule)
        return self.metrics(x.double(), y.double())  # persistence: the output is the input


def task_of(config: RNNConfig, data: str | None = None) -> Task | None:
    """The configuration's memory task, or None for next-byte prediction. ``data``: where
    ``smnist`` reads MNIST (the training setting ``data``); the other tasks make their own."""
    if config.task == "bytes":
        return None
    return _task(config.task, tuple(config.task_options.items()), data if config.task == "smnist" else None)


def task_io(config: RNNConfig) -> tuple[bool, int, int] | None:
    """A memory task's (real input, inputs, outputs), what a model is built with; None for
    next-byte prediction. smnist's are known without its data."""
    if config.task == "bytes":
        return None
    if config.task == "smnist":
        return True, 1, 10
    task = task_of(config)
    return task.real_input, task.inputs, task.outputs


@functools.lru_cache(maxsize=32)
def _task(name: str, options: tuple, data: str | None = None) -> Task:
    return Task(name, dict(options), data)


class TaskSampler:
    """Batches of ``batch_size`` independent training sequences of a task. Each batch is made
    from a seed drawn from the sampler's own seeded generator, so a checkpoint keeps the seed
    (as a one-element tensor, a window's "offsets") and rebuilds the batch exactly."""

    def __init__(self, task: Task, batch_size: int, seed: int, device) -> None:
        self.task, self.batch_size = task, batch_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def next_offsets(self) -> Tensor:
        return torch.randint(0, 2**62, (1,), generator=self.generator)

    def window(self, offsets: Tensor) -> tuple[Tensor, Tensor]:
        x, y = self.task.batch(int(offsets[0]), self.batch_size)
        return x.to(self.device), y.to(self.device)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
