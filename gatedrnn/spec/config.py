"""The architecture configuration (nine keys, or a cell kind and its keys, or a task and its
keys), its id, and the training settings.

A configuration is the JSON object of DESIGN.md: seven boolean switches, ``n_layers`` and
``state_size``. Its id is the SHA-256 of its canonical JSON (sorted keys, no ``id``), so the same
configuration has the same id on every machine and in every version.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "SWITCHES",
    "CONFIG_KEYS",
    "EXTRA_KEYS",
    "CELLS",
    "CELL_KEYS",
    "TASKS",
    "TASK_KEYS",
    "RNNConfig",
    "TrainSettings",
    "config_id",
    "INPUT_INITS",
    "input_init_of",
]

SWITCHES = (
    "use_input_gate",
    "use_forget_gate",
    "use_output_gate",
    "use_state_gate",
    "use_new_state",
    "use_old_state",
    "use_residual",
)
CONFIG_KEYS = SWITCHES + ("n_layers", "state_size")
# one letter per meaning in compact labels: Input, Forget, Output, State gates; New state,
# Previous (old) state, Residual
SWITCH_LETTERS = "IFOSNPR"
# Keys a sweep may add when the user sweeps them; absent means "not swept" (or the default).
EXTRA_KEYS = ("seed", "cell", "bptt", "task", "lr", "input_init")
# How the byte (or symbol) input is mapped (DESIGN.md, "The layer"): ``linear`` is the original
# study's nn.Linear(256, d) on the one-hot byte (a trained weight and bias, that layer's default
# uniform initialisation); ``normal`` an N(0, 1) embedding without a bias (what gatedrnn did
# before issue 30, and what folders and checkpoints recorded before it read as).
INPUT_INITS = ("linear", "normal")
LEGACY_INPUT_INIT = "normal"
CELLS = ("gated", "gru", "lstm", "rnn", "esn", "esgp")
# Each cell's own keys with their defaults (the gated cell's are the seven switches).
CELL_KEYS: dict[str, dict[str, Any]] = {
    "gated": {},
    "gru": {},
    "lstm": {},
    "rnn": {},
    "esn": {"density": 0.1, "spectral_radius": 0.9, "input_scaling": 1.0, "leak": 1.0, "readout": "sgd"},
    "esgp": {"density": 0.1, "spectral_radius": 0.9},
}
# every cell's own keys, in the order the tables show them
ALL_CELL_KEYS = tuple(dict.fromkeys(k for keys in CELL_KEYS.values() for k in keys))
READOUTS = ("sgd", "ridge")
# What a configuration learns: ``bytes`` (next-byte prediction, the default; absent from the
# JSON form) or one of the memory tasks of gatedrnn/tasks.py, with its own keys and their
# defaults (always written for a task, so that they are part of its id):
#   copy:          length = T, the blanks between the 10 symbols and their recall
#   adding:        length = T, the steps of the sequence
#   delayed:       symbols = K, delay (steps back), length (steps of the sequence)
#   mackey-glass:  horizon (steps ahead predicted), length (steps of a training sequence)
#   digits:        none (64 steps, one pixel each)
#   smnist:        permute (0: pixels in reading order, 1: in a fixed random order); 784 steps,
#                  MNIST read from the user's copy (--data), never downloaded
TASKS = ("bytes", "copy", "adding", "delayed", "mackey-glass", "digits", "smnist")
TASK_KEYS: dict[str, dict[str, Any]] = {
    "bytes": {},
    "copy": {"length": 50},
    "adding": {"length": 50},
    "delayed": {"symbols": 8, "delay": 5, "length": 50},
    "mackey-glass": {"horizon": 1, "length": 100},
    "digits": {},
    "smnist": {"permute": 0},
}
MG_TEST_STEPS = 2500  # the held-out continuation of the Mackey-Glass series (gatedrnn/tasks.py)
_TASK_MINIMUM = {"length": 1, "symbols": 2, "delay": 1, "horizon": 1, "permute": 0}
ALL_TASK_KEYS = ("length", "symbols", "delay", "horizon", "permute")
SEED_MAX = 2**62  # the model's seed is 2 * seed and the data's 2 * seed + 1: both fit torch's 64 bits
RIDGE_ALPHA = 1e-3


def config_id(config: Mapping[str, Any]) -> str:
    """The id of a configuration: sha256 of its sorted-key JSON, without ``id``."""
    body = {k: v for k, v in config.items() if k != "id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float, low_open: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class RNNConfig:
    """One architecture of the sweep.

    The default cell, ``gated``, takes the seven switches, ``n_layers`` and ``state_size``: the
    nine-key form of DESIGN.md, whose id never changes. Other cells (``gru``, ``lstm``, ``rnn``,
    ``esn``, ``esgp``) take no switches and their own keys (``CELL_KEYS``). Optional swept
    keys: ``seed`` (overrides the training seed), ``lr`` (overrides the training learning rate:
    a swept learning rate), ``input_init`` (overrides the training setting: how the input is
    mapped, :data:`INPUT_INITS`) and ``bptt`` (1, the default: the state is detached after every step;
    k > 1: truncated BPTT over k steps, one optimizer step per k bytes). A key at its default is
    absent from the JSON form, so it does not change the id.
    """

    use_input_gate: bool | None = None
    use_forget_gate: bool | None = None
    use_output_gate: bool | None = None
    use_state_gate: bool | None = None
    use_new_state: bool | None = None
    use_old_state: bool | None = None
    use_residual: bool | None = None
    n_layers: int = 1
    state_size: int = 256
    seed: int | None = None
    lr: float | None = None
    input_init: str | None = None
    cell: str = "gated"
    bptt: int = 1
    density: float | None = None
    spectral_radius: float | None = None
    input_scaling: float | None = None
    leak: float | None = None
    readout: str | None = None
    task: str = "bytes"
    length: int | None = None
    symbols: int | None = None
    delay: int | None = None
    horizon: int | None = None
    permute: int | None = None

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for name in SWITCHES:
            value = getattr(self, name)
            if self.cell == "gated":
                if not isinstance(value, bool):
                    raise TypeError(f"{name} must be true or false, got {value!r}")
            elif value is not None:
                raise ValueError(f"{name} belongs to the gated cell only, not to cell {self.cell!r}")
        _check_int("n_layers", self.n_layers, 1)
        _check_int("state_size", self.state_size, 1)
        _check_int("bptt", self.bptt, 1)
        if self.seed is not None:
            _check_int("seed", self.seed, 0)
            if self.seed > SEED_MAX:
                raise ValueError(f"seed must be at most 2**62, got {self.seed!r}")
        if self.lr is not None:
            if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)):
                raise TypeError(f"lr must be a number, got {self.lr!r}")
            if not 0 < self.lr < float("inf"):
                raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
            object.__setattr__(self, "lr", float(self.lr))
        if self.input_init is not None:
            if self.input_init not in INPUT_INITS:
                raise ValueError(f"input_init must be one of {', '.join(INPUT_INITS)}, got {self.input_init!r}")
            if not self.has_input_map_choice:
                raise ValueError(f"input_init does not apply to {self._fixed_input_owner()}")
        self._own_keys(CELL_KEYS[self.cell], ("density", "spectral_radius", "input_scaling", "leak", "readout"),
                       f"cell {self.cell!r}")
        if self.cell in ("esn", "esgp"):
            _check_float("density", self.density, 0.0, 1.0)
            _check_float("spectral_radius", self.spectral_radius, 0.0, 100.0, low_open=False)
        if self.cell == "esn":
            _check_float("input_scaling", self.input_scaling, 0.0, 1e6, low_open=False)
            _check_float("leak", self.leak, 0.0, 1.0)
            if self.readout not in READOUTS:
                raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {self.readout!r}")
            if self.readout == "ridge" and self.bptt != 1:
                raise ValueError("bptt does not apply to the ridge readout (nothing is trained by gradient)")
        self._check_task()
        if self.cell == "gated" and not (self.use_new_state or self.use_old_state):
            raise ValueError(
                "use_new_state and use_old_state are both false: the layer would have no state "
                "to read out"
            )

    def _own_keys(self, own: dict[str, Any], names: tuple[str, ...], owner: str) -> dict[str, Any]:
        """Refuse a key of ``names`` that ``owner`` (its keys and defaults: ``own``) does not
        have; give the ones it has and that are unset their defaults. Returns ``own``."""
        for key in names:
            value = getattr(self, key)
            if key not in own:
                if value is not None:
                    raise ValueError(f"{key} is not a key of {owner}")
            elif value is None:
                object.__setattr__(self, key, own[key])
        return own

    def _check_task(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        own = self._own_keys(TASK_KEYS[self.task], ALL_TASK_KEYS, f"task {self.task!r}")
        for key in own:
            _check_int(key, getattr(self, key), _TASK_MINIMUM[key])
        if self.task == "delayed" and self.delay >= self.length:
            raise ValueError(f"delay {self.delay} must be shorter than the sequence (length {self.length}): "
                             "no step would have a target")
        if self.task == "mackey-glass" and self.length + self.horizon > MG_TEST_STEPS:
            raise ValueError(f"length {self.length} + horizon {self.horizon} must be at most {MG_TEST_STEPS}, the "
                             "held-out continuation of the Mackey-Glass series")
        if self.task == "smnist" and self.permute not in (0, 1):
            raise ValueError(f"permute must be 0 (pixels in reading order) or 1 (a fixed permutation), got "
                             f"{self.permute!r}")
        if self.task == "adding" and self.length < 2:
            raise ValueError(f"length must be >= 2 for the adding task (one marker in each half), got {self.length}")

    @property
    def has_input_map_choice(self) -> bool:
        """Whether ``input_init`` applies: a trained cell reading bytes or symbols. The ESN's input
        map is its fixed random reservoir input, and real-valued tasks always read through a
        Linear map."""
        return self.cell != "esn" and self.task in ("bytes", "copy", "delayed")

    def _fixed_input_owner(self) -> str:
        return "the esn cell (its input map is fixed)" if self.cell == "esn" else \
            f"task {self.task!r} (real-valued inputs always go through a Linear map)"

    @property
    def task_options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in TASK_KEYS[self.task]}

    @property
    def switches(self) -> dict[str, bool]:
        if self.cell != "gated":
            return {}
        return {name: getattr(self, name) for name in SWITCHES}

    @property
    def cell_options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CELL_KEYS[self.cell]}

    def to_dict(self, with_id: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.cell != "gated":
            d["cell"] = self.cell
        d.update(self.switches)
        d["n_layers"] = self.n_layers
        d["state_size"] = self.state_size
        d.update(self.cell_options)
        if self.task != "bytes":
            d["task"] = self.task
            d.update(self.task_options)
        if self.bptt != 1:
            d["bptt"] = self.bptt
        if self.lr is not None:
            d["lr"] = self.lr
        if self.input_init is not None:
            d["input_init"] = self.input_init
        if self.seed is not None:
            d["seed"] = self.seed
        if with_id:
            d["id"] = config_id(d)
        return d

    @functools.cached_property
    def id(self) -> str:
        """sha256 of the JSON form (computed once: a configuration is frozen)."""
        return config_id(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RNNConfig":
        """Build from the JSON form; an unknown or missing key, a wrong type or an ``id`` that
        does not match the content is an error."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a configuration must be a JSON object, got {type(d).__name__}")
        cell = d.get("cell", "gated")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        required = (CONFIG_KEYS if cell == "gated" else ("n_layers", "state_size"))
        task = d.get("task", "bytes")
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        allowed = set(required) | {"seed", "lr", "input_init", "cell", "bptt", "task", "id"} | set(CELL_KEYS[cell]) | set(TASK_KEYS[task])
        unknown = sorted(set(d) - allowed)
        if unknown:
            where = ("" if cell == "gated" or unknown[0] not in SWITCHES else f" for cell {cell!r}") or (
                f" for task {task!r}" if unknown[0] in ALL_TASK_KEYS else "")
            raise ValueError(f"unknown configuration key {unknown[0]!r}{where}")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"missing configuration key {missing[0]!r}")
        config = cls(**{k: d[k] for k in d if k != "id"})
        if "id" in d and d["id"] != config.id:
            raise ValueError(f"id {d['id']!r} does not match the configuration (expected {config.id})")
        return config

    def short(self) -> str:
        """A compact human label, e.g. ``IFOSN.R L2 d256`` (``SWITCH_LETTERS``, ``.`` for off) or
        ``esn(ridge) L1 d256``."""
        if self.cell == "gated":
            head = "".join(ch if getattr(self, key) else "." for ch, key in zip(SWITCH_LETTERS, SWITCHES))
        elif self.cell == "esn":
            head = f"esn({self.readout})"
        else:
            head = self.cell
        bptt = f" bptt{self.bptt}" if self.bptt != 1 else ""
        seed = f" s{self.seed}" if self.seed is not None else ""
        lr = f" lr{self.lr:g}" if self.lr is not None else ""
        init = f" in:{self.input_init}" if self.input_init is not None else ""
        task = f" {self.task}" if self.task != "bytes" else ""
        return f"{head} L{self.n_layers} d{self.state_size}{bptt}{lr}{init}{seed}{task}"

    def task_label(self) -> str:
        """The task with its keys, e.g. ``copy (length 50)``; ``bytes`` for the byte task."""
        return task_label(self.task, self.task_options)


def task_label(task: str, options: Mapping[str, Any]) -> str:
    """A task with its keys, e.g. ``copy (length 50)``; ``bytes`` for the byte task."""
    text = ", ".join(f"{k} {v}" for k, v in options.items())
    return f"{task} ({text})" if text else task


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


LEGACY_SPLIT = "tail"  # what settings, checkpoints and folders recorded before the split rule used
# what a record of settings that lacks a key was made with
LEGACY_SETTINGS = {"split": LEGACY_SPLIT, "input_init": LEGACY_INPUT_INIT, "halving": 0, "rungs": 3,
                   "halving_rule": "protect", "audit": 0.0}
HALVING_RULES = ("top", "protect")


def input_init_of(config: RNNConfig, settings: "TrainSettings") -> str:
    """How ``config``'s input is mapped under ``settings``: its own key, else the setting."""
    return config.input_init if config.input_init is not None else settings.input_init


@dataclass(frozen=True)
class TrainSettings:
    """How a configuration is trained (DESIGN.md, "Training without BPTT").

    steps: optimizer steps (= bytes per stream) of the run.
    batch_size: parallel streams.  history: bytes per window before the state is reset.
    log_every: steps between points of the moving-average ``loss`` curve.
    eval_every: steps between validation measurements (0: only at the end).
    checkpoint_every: steps between checkpoints (0: only when stopped).
    data: corpus file, a built-in corpus's name (``builtin:python-docs``, ``builtin:pydoc_topics``), or
    ``None`` for the built-in corpus (``builtin:python-docs``).
    device: ``auto``, ``cpu``, ``cuda`` or ``cuda:k``.  seed: model-init and data-order seed.
    val_streams: at most this many fixed validation streams (each ``history`` bytes long), and as
    many test streams.
    split: how the held-out data divides into validation and test (:data:`gatedrnn.data.corpus.SPLIT_RULES`):
    ``windows`` (the default: windows of ``history`` + 1 bytes in matched pairs, one of each pair
    to each split, so the two are samples of the same text), ``contiguous`` (validation then test,
    two contiguous halves: the literature's 90/5/5, not exchangeable), ``blocks`` (interleaved blocks of
    4096 bytes, folders made between issues 23 and 30) or ``tail`` (settings recorded before
    either: all held-out data validates, no test split). Memory tasks take their validation and
    test sets from different generator seeds under ``windows`` and ``blocks`` alike. A results
    folder's runs all use its recorded rule.
    input_init: how the input is mapped (:data:`INPUT_INITS`), for configurations without their
    own ``input_init`` key; settings recorded before issue 30 read as ``normal``.
    halving: successive halving's ETA (0: off): every configuration trains to the first of
    ``rungs`` rungs at ``steps / halving ** (rungs - 1)``, ... ``steps`` (:meth:`rung_steps`), and the
    best 1/ETA continue from their checkpoints to the next (gatedrnn/halving.py). A sweep's policy,
    not a run's computation: a run is the same to a given step with or without it.
    halving_rule: who continues past a rung: ``top`` (the best 1/ETA by the mean over seeds; the
    default) or ``protect`` (also every configuration that could be best at the rung: the rule
    of folders made before issue 40, which kept nearly all with replicates).
    audit: the share of the configurations stopped at each rung that a seeded random sample
    continues to the full budget anyway, to measure what the stopping lost (0: none; folders
    made before issue 40 have none).
    """

    steps: int = 10_000
    batch_size: int = 256
    history: int = 1000
    lr: float = 1e-3
    log_every: int = 50
    eval_every: int = 2000
    checkpoint_every: int = 500
    data: str | None = None
    device: str = "auto"
    seed: int = 0
    val_streams: int = 256
    split: str = "windows"
    input_init: str = "linear"
    halving: int = 0
    rungs: int = 3
    halving_rule: str = "top"
    audit: float = 0.2

    def __post_init__(self) -> None:
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("history", self.history, 1)
        _check_int("log_every", self.log_every, 1)
        _check_int("eval_every", self.eval_every, 0)
        _check_int("checkpoint_every", self.checkpoint_every, 0)
        _check_int("seed", self.seed, 0)
        if self.seed > SEED_MAX:
            raise ValueError(f"seed must be at most 2**62, got {self.seed!r}")
        _check_int("val_streams", self.val_streams, 1)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)):
            raise TypeError(f"lr must be a number, got {self.lr!r}")
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.data is not None and not isinstance(self.data, str):
            raise TypeError(f"data must be a file path or None, got {self.data!r}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:K, got {self.device!r}")
        if self.split not in ("windows", "contiguous", "blocks", "tail"):  # gatedrnn.data.corpus.SPLIT_RULES
            raise ValueError(f"split must be windows, contiguous, blocks or tail, got {self.split!r}")
        if self.input_init not in INPUT_INITS:
            raise ValueError(f"input_init must be one of {', '.join(INPUT_INITS)}, got {self.input_init!r}")
        _check_int("halving", self.halving, 0)
        _check_int("rungs", self.rungs, 2)
        if self.halving_rule not in HALVING_RULES:
            raise ValueError(f"halving_rule must be one of {', '.join(HALVING_RULES)}, got {self.halving_rule!r}")
        if isinstance(self.audit, bool) or not isinstance(self.audit, (int, float)) or not 0 <= self.audit <= 1:
            raise ValueError(f"audit must be a share between 0 and 1, got {self.audit!r}")
        if self.halving == 1:
            raise ValueError("halving must be 0 (off) or an ETA of at least 2, got 1")
        if self.halving and self.steps // self.halving ** (self.rungs - 1) < 1:
            raise ValueError(f"halving {self.halving} over {self.rungs} rungs needs steps of at least "
                             f"{self.halving ** (self.rungs - 1)}, got {self.steps}")

    def rung_steps(self) -> list[int]:
        """The step of each rung of successive halving, last = ``steps`` ([] when it is off)."""
        if not self.halving:
            return []
        return [self.steps // self.halving ** (self.rungs - 1 - k) for k in range(self.rungs)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training setting {unknown[0]!r}")
        # settings recorded before the split rule read as ``tail``, before issue 30 as ``normal``
        return cls(**{**LEGACY_SETTINGS, **d})

    def replace(self, **changes: Any) -> "TrainSettings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, **changes: Any) -> "TrainSettings":
        """A few-second CPU preset used by the tests and the README's quick sweep."""
        base = dict(steps=300, batch_size=16, history=100, log_every=50, eval_every=0,
                    checkpoint_every=100, device="cpu", val_streams=16)
        base.update(changes)
        return cls(**base)
