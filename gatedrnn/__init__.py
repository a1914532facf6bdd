"""gatedrnn: which parts of a gated RNN layer matter when it is trained without BPTT.

Public API (DESIGN.md): the configuration and settings, the layer, the sequence module, the
byte model, one training run, and the results loader.
"""

__version__ = "0.1.0"

from .config import RNNConfig, TrainSettings, config_id
from .layers import GatedLayer, GatedRNN
from .model import ByteModel
from .trainer import train
from . import results

__all__ = [
    "__version__",
    "RNNConfig",
    "TrainSettings",
    "config_id",
    "GatedLayer",
    "GatedRNN",
    "ByteModel",
    "train",
    "results",
]
