"""ByteModel: byte embedding -> stack of recurrent layers -> 256 logits, one byte at a time."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .cells import make_cell
from .config import RNNConfig

__all__ = ["ByteModel"]

VOCAB = 256


class ByteModel(nn.Module):
    """The byte-level language model of the sweep.

    ``Embedding(256, d)`` -> ``n_layers`` layers of the configuration's cell -> ``Linear(·, 256)``.
    ``step(bytes_t, states) -> (logits, states)``: ``bytes_t`` (N,) integer bytes, ``states`` a
    list of ``n_layers`` tensors (N, state width); returns logits (N, 256) for the next byte and
    the new states. The step is pure; the trainer decides when states are detached.

    For the echo state network the embedding is fixed (it is the first reservoir's random input
    matrix, looked up instead of multiplied by a one-hot vector) and the readout sees every
    layer's state (a deep ESN): only the readout learns.
    """

    def __init__(self, config: RNNConfig, device=None, dtype=None) -> None:
        super().__init__()
        if not isinstance(config, RNNConfig):
            raise TypeError(f"ByteModel needs an RNNConfig, got {type(config).__name__}")
        self.config = config
        d = config.state_size
        kw = dict(device=device, dtype=dtype)
        self.reservoir = config.cell == "esn"
        self.embedding = nn.Embedding(VOCAB, d, **kw)
        if self.reservoir:
            with torch.no_grad():
                self.embedding.weight.uniform_(-config.input_scaling, config.input_scaling)
            self.embedding.weight.requires_grad_(False)
        options = config.switches if config.cell == "gated" else config.cell_options
        self.layers = nn.ModuleList(
            make_cell(config.cell, d, d, project_input=k > 0, **options) for k in range(config.n_layers)
        )
        if dtype is not None or device is not None:
            self.layers.to(device=device, dtype=dtype)
        self.readout = nn.Linear(d * (config.n_layers if self.reservoir else 1), VOCAB, **kw)

    def initial_state(self, batch: int) -> list[Tensor]:
        w = self.readout.weight
        return [w.new_zeros(batch, layer.state_width) for layer in self.layers]

    def features(self, bytes_t: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """What the readout sees, (N, readout width), and the new states."""
        x = self.embedding(bytes_t)  # (N, d)
        new_states, outputs = [], []
        for layer, s in zip(self.layers, states):
            x, s = layer(x, s)
            new_states.append(s)
            outputs.append(x)
        if self.reservoir and len(outputs) > 1:
            return torch.cat(outputs, dim=-1), new_states
        return x, new_states

    def step(self, bytes_t: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        features, new_states = self.features(bytes_t, states)
        return self.readout(features), new_states  # (N, 256)

    forward = step

    def weight_shapes(self) -> list[tuple[str, int, int]]:
        """(name, in, out) of every matrix multiply of one step of the gated cell, one Linear per W."""
        shapes = []
        for k, layer in enumerate(self.layers):
            if hasattr(layer, "weight_shapes"):
                shapes += [(f"layer{k}.{name}", i, o) for name, i, o in layer.weight_shapes()]
        shapes.append(("readout", self.readout.in_features, VOCAB))
        return shapes

    def num_parameters(self) -> int:
        """Trainable parameters only: fixed reservoirs and masks are buffers."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
