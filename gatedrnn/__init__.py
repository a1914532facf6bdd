"""gatedrnn: which parts of a gated RNN layer matter when it is trained without BPTT.

Public API (DESIGN.md): the configuration and settings, the layer, the sequence module, the
byte model, one training run (or one pack of them), and the results loader. Names are imported on first use, so the
command-line tools that need no torch (the grid, the analysis) start quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    "RNNConfig": "config",
    "TrainSettings": "config",
    "config_id": "config",
    "GatedLayer": "layers",
    "GatedRNN": "rnn",
    "RNN": "rnn",
    "ByteModel": "model",
    "train": "trainer",
    "train_pack": "trainer",
    "PackedModel": "packed",
}
_MODULES = ("results", "config", "cells", "layers", "rnn", "model", "packed", "packing", "data", "tasks", "sources",
            "grid", "folder", "queue", "status", "checkpoints", "rules", "loop", "run", "pack_run", "devices", "trainer",
            "worker", "launcher", "slurm", "stats", "plots", "report", "analysis", "tools", "export", "cli")

__all__ = ["__version__", *_EXPORTS, "results"]

if TYPE_CHECKING:  # for type checkers and IDEs
    from . import results
    from .config import RNNConfig, TrainSettings, config_id
    from .layers import GatedLayer
    from .rnn import RNN, GatedRNN
    from .model import ByteModel
    from .packed import PackedModel
    from .trainer import train, train_pack


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'gatedrnn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
