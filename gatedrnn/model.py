"""ByteModel: byte embedding -> stack of gated layers -> 256 logits, one byte at a time."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import RNNConfig
from .layers import GatedLayer

__all__ = ["ByteModel"]

VOCAB = 256


class ByteModel(nn.Module):
    """The byte-level language model of the sweep.

    ``step(bytes_t, states) -> (logits, states)``: ``bytes_t`` (N,) integer bytes, ``states`` a
    list of ``n_layers`` tensors (N, d); returns logits (N, 256) for the next byte and the new
    states. The step is pure; the trainer detaches the states between steps.
    """

    def __init__(self, config: RNNConfig, device=None, dtype=None) -> None:
        super().__init__()
        if not isinstance(config, RNNConfig):
            raise TypeError(f"ByteModel needs an RNNConfig, got {type(config).__name__}")
        self.config = config
        d = config.state_size
        kw = dict(device=device, dtype=dtype)
        self.embedding = nn.Embedding(VOCAB, d, **kw)
        self.layers = nn.ModuleList(
            GatedLayer(d, d, **config.switches, **kw) for _ in range(config.n_layers)
        )
        self.readout = nn.Linear(d, VOCAB, **kw)

    def initial_state(self, batch: int) -> list[Tensor]:
        w = self.readout.weight
        return [w.new_zeros(batch, self.config.state_size) for _ in self.layers]

    def step(self, bytes_t: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        x = self.embedding(bytes_t)  # (N, d)
        new_states = []
        for layer, s in zip(self.layers, states):
            x, s = layer(x, s)
            new_states.append(s)
        return self.readout(x), new_states  # (N, 256)

    forward = step

    def weight_shapes(self) -> list[tuple[str, int, int]]:
        """(name, in, out) of every matrix multiply of one step, one Linear per W."""
        shapes = []
        for k, layer in enumerate(self.layers):
            shapes += [(f"layer{k}.{name}", i, o) for name, i, o in layer.weight_shapes()]
        shapes.append(("readout", self.config.state_size, VOCAB))
        return shapes

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
