"""The architecture configuration (nine keys), its id, and the training settings.

A configuration is the JSON object of DESIGN.md: seven boolean switches, ``n_layers`` and
``state_size``. Its id is the SHA-256 of its canonical JSON (sorted keys, no ``id``), so the same
configuration has the same id on every machine and in every version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "SWITCHES",
    "CONFIG_KEYS",
    "EXTRA_KEYS",
    "RNNConfig",
    "TrainSettings",
    "config_id",
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
# Keys a sweep may add when the user sweeps them; absent means "not swept".
EXTRA_KEYS = ("seed",)


def config_id(config: Mapping[str, Any]) -> str:
    """The id of a configuration: sha256 of its sorted-key JSON, without ``id``."""
    body = {k: v for k, v in config.items() if k != "id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class RNNConfig:
    """One architecture of the sweep: seven switches, depth and state size.

    ``seed`` is an optional swept key: when set it overrides the training seed and is part of
    the configuration (and so of its id); when ``None`` it is absent from the JSON form.
    """

    use_input_gate: bool
    use_forget_gate: bool
    use_output_gate: bool
    use_state_gate: bool
    use_new_state: bool
    use_old_state: bool
    use_residual: bool
    n_layers: int
    state_size: int
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in SWITCHES:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be true or false, got {value!r}")
        _check_int("n_layers", self.n_layers, 1)
        _check_int("state_size", self.state_size, 1)
        if self.seed is not None:
            _check_int("seed", self.seed, 0)
        if not (self.use_new_state or self.use_old_state):
            raise ValueError(
                "use_new_state and use_old_state are both false: the layer would have no state "
                "to read out"
            )

    @property
    def switches(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in SWITCHES}

    def to_dict(self, with_id: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in CONFIG_KEYS}
        if self.seed is not None:
            d["seed"] = self.seed
        if with_id:
            d["id"] = config_id(d)
        return d

    @property
    def id(self) -> str:
        return config_id(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RNNConfig":
        """Build from the JSON form; an unknown or missing key, a wrong type or an ``id`` that
        does not match the content is an error."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a configuration must be a JSON object, got {type(d).__name__}")
        allowed = set(CONFIG_KEYS) | set(EXTRA_KEYS) | {"id"}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"unknown configuration key {unknown[0]!r}")
        missing = [k for k in CONFIG_KEYS if k not in d]
        if missing:
            raise ValueError(f"missing configuration key {missing[0]!r}")
        config = cls(**{k: d[k] for k in CONFIG_KEYS}, seed=d.get("seed"))
        if "id" in d and d["id"] != config.id:
            raise ValueError(f"id {d['id']!r} does not match the configuration (expected {config.id})")
        return config

    def short(self) -> str:
        """A compact human label, e.g. ``IFOS-NR L2 d256``."""
        letters = "".join(
            ch if getattr(self, key) else "."
            for ch, key in zip("IFOSNOR", SWITCHES)
        )
        seed = f" s{self.seed}" if self.seed is not None else ""
        return f"{letters} L{self.n_layers} d{self.state_size}{seed}"


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


@dataclass(frozen=True)
class TrainSettings:
    """How a configuration is trained (DESIGN.md, "Training without BPTT").

    steps: optimizer steps (= bytes per stream) of the run.
    batch_size: parallel streams.  history: bytes per window before the state is reset.
    log_every: steps between points of the moving-average ``loss`` curve.
    eval_every: steps between validation measurements (0: only at the end).
    checkpoint_every: steps between checkpoints (0: only when stopped).
    data: corpus file, or ``None`` for the built-in corpus.
    device: ``auto``, ``cpu``, ``cuda`` or ``cuda:k``.  seed: model-init and data-order seed.
    val_streams: at most this many fixed validation streams (each ``history`` bytes long).
    """

    steps: int = 10_000
    batch_size: int = 256
    history: int = 1000
    lr: float = 1e-3
    log_every: int = 50
    eval_every: int = 5000
    checkpoint_every: int = 500
    data: str | None = None
    device: str = "auto"
    seed: int = 0
    val_streams: int = 256

    def __post_init__(self) -> None:
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("history", self.history, 1)
        _check_int("log_every", self.log_every, 1)
        _check_int("eval_every", self.eval_every, 0)
        _check_int("checkpoint_every", self.checkpoint_every, 0)
        _check_int("seed", self.seed, 0)
        _check_int("val_streams", self.val_streams, 1)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)):
            raise TypeError(f"lr must be a number, got {self.lr!r}")
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.data is not None and not isinstance(self.data, str):
            raise TypeError(f"data must be a file path or None, got {self.data!r}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:K, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training setting {unknown[0]!r}")
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainSettings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, **changes: Any) -> "TrainSettings":
        """A few-second CPU preset used by the tests and the README's quick sweep."""
        base = dict(steps=300, batch_size=16, history=100, log_every=50, eval_every=0,
                    checkpoint_every=100, device="cpu", val_streams=16)
        base.update(changes)
        return cls(**base)
