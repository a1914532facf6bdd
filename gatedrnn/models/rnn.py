"""Sequence modules over any cell, with torch.nn.GRU's calling convention (DESIGN.md, "The layer")."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .cells import make_cell
from ..spec.config import SWITCHES

__all__ = ["RNN", "GatedRNN"]


class RNN(nn.Module):
    r"""A stack of recurrent layers of any cell kind over whole sequences, with torch.nn.GRU's
    conventions.

    Args:
        input_size: features of the input ``x`` (H_in).
        hidden_size: features of each layer's output and hidden state (H).
        num_layers: stacked layers; layer k > 0 reads layer k-1's output.
        batch_first: input and output are (N, L, H) instead of (L, N, H).
        cell: ``gated`` (the default), ``gru``, ``lstm``, ``rnn``, ``esn`` or ``esgp``.
        **options: the seven ``use_*`` switches for ``gated``; ``density``, ``spectral_radius``
            (and for ``esn`` ``input_scaling``, ``leak``) for the reservoirs; shared by all layers.

    ``forward(input, h0=None) -> (output, h_n)``:
        input: (L, N, H_in), (N, L, H_in) if ``batch_first``, or unbatched (L, H_in).
        h0: (num_layers, N, S) or (num_layers, S) unbatched, S the cell's state width (H; 2H for
            the LSTM, whose state is [h, c]); zeros on the input's device and dtype when omitted.
        output: the last layer's output at every step, (L, N, H) / (N, L, H) / (L, H).
        h_n: every layer's state after the last step, (num_layers, N, S) / (num_layers, S).

    Gradients flow through time here, as in torch.nn.GRU; training without BPTT (detaching the
    state every step) is the trainer's business, not this module's.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = False,
        cell: str = "gated",
        device=None,
        dtype=None,
        **options,
    ) -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if cell == "gated":
            unknown = sorted(set(options) - set(SWITCHES))
            if unknown:
                raise TypeError(f"unknown switch {unknown[0]!r}; switches are {', '.join(SWITCHES)}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.cell = cell
        self.layers = nn.ModuleList(
            make_cell(cell, input_size if k == 0 else hidden_size, hidden_size, **options)
            for k in range(num_layers)
        )
        self.layers.to(device=device, dtype=dtype)
        self.state_width = self.layers[0].state_width

    def reset_parameters(self) -> None:
        for layer in self.layers:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}, cell={self.cell!r}")

    def forward(self, input: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if input.dim() not in (2, 3):
            raise ValueError(f"GatedRNN expects a 2-D (unbatched) or 3-D input, got {input.dim()}-D")
        if input.size(-1) != self.input_size:
            raise ValueError(f"input has {input.size(-1)} features, expected input_size={self.input_size}")
        unbatched = input.dim() == 2
        if unbatched:
            input = input.unsqueeze(1)  # (L, 1, H_in)
        elif self.batch_first:
            input = input.transpose(0, 1)  # (L, N, H_in)
        n = input.size(1)
        if h0 is None:
            h0 = input.new_zeros(self.num_layers, n, self.state_width)
        else:
            expected = (self.num_layers, self.state_width) if unbatched else (self.num_layers, n, self.state_width)
            if tuple(h0.shape) != expected:
                raise ValueError(f"h0 has shape {tuple(h0.shape)}, expected {expected}")
            if unbatched:
                h0 = h0.unsqueeze(1)
        states: list[Tensor] = list(h0.unbind(0))
        outputs = []
        for x_t in input.unbind(0):  # x_t: (N, H_in)
            for k, layer in enumerate(self.layers):
                x_t, states[k] = layer(x_t, states[k])
            outputs.append(x_t)
        output = torch.stack(outputs, 0)  # (L, N, H)
        h_n = torch.stack(states, 0)  # (num_layers, N, H)
        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n


class GatedRNN(RNN):
    """:class:`RNN` with the gated cell: ``GatedRNN(input_size, hidden_size, num_layers=1,
    batch_first=False, **switches)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first: bool = False,
                 device=None, dtype=None, **switches: bool) -> None:
        super().__init__(input_size, hidden_size, num_layers, batch_first, "gated", device, dtype, **switches)
