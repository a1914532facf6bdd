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
    "RNNConfig": "spec.config",
    "TrainSettings": "spec.config",
    "config_id": "spec.config",
    "GatedLayer": "models.layers",
    "GatedRNN": "models.rnn",
    "RNN": "models.rnn",
    "ByteModel": "models.model",
    "train": "training.trainer",
    "train_pack": "training.trainer",
    "PackedModel": "models.packed",
}
# the subpackages, by responsibility and layer, bottom first (DESIGN.md, "Layout"), and the public
# results loader
_MODULES = ("spec", "store", "data", "models", "training", "analysis", "running", "cli", "results")

__all__ = ["__version__", *_EXPORTS, "results"]

if TYPE_CHECKING:  # for type checkers and IDEs
    from . import results
    from .spec.config import RNNConfig, TrainSettings, config_id
    from .models.layers import GatedLayer
    from .models.rnn import RNN, GatedRNN
    from .models.model import ByteModel
    from .models.packed import PackedModel
    from .training.trainer import train, train_pack


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
