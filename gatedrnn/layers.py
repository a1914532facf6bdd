"""The gated layer of DESIGN.md (one step), and torch.nn.GRU-style sequence modules over it and
over every other cell kind (``RNN(cell=...)``)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SWITCHES

__all__ = ["GatedLayer", "GatedRNN", "RNN"]


class GatedLayer(nn.Module):
    r"""One time step of one gated layer.

    With input ``x`` (N, H_in), previous state ``s`` (N, H), :math:`\sigma` the logistic sigmoid
    and ``[a, b]`` concatenation on the feature axis::

        c  = [x, s]
        input gate:   x' = σ(W_ix c) * x ;  s' = σ(W_is c) * s ;  c = [x', s']
        n  = tanh(W_n c)                                  # the new state
        state gate:   g = σ(W_g [c, n]) ;  n = g * n + (1 - g) * s
        forget gate:  f = σ(W_f [c, n]) ;  n = f * n
        h  = n | s' | [n, s']      (use_new_state / use_old_state / both)
        residual:     h = [h, x]
        o  = W_o h
        output gate:  o = o * σ(W_og [o, h])     else  o = o * σ(o)   (swish)

    ``forward(x, s) -> (o, n)``: ``x`` (N, H_in) and ``s`` (N, H); ``o`` is (N, H), the next
    layer's input, and ``n`` (N, H) is the state for the next step. The step is pure: the caller
    owns the state and decides whether to detach it.

    Maps that read the same input are stored fused, so that one step runs few, large matrix
    products: ``input_gate`` is ``[W_ix; W_is]``; ``c_proj`` holds ``W_n`` and the ``c``-columns of
    ``W_g`` and ``W_f``; ``h_proj`` holds ``W_o`` and the ``h``-columns of ``W_og``; the columns
    that read ``n`` or ``o`` are the bias-free ``state_gate_n``, ``forget_gate_n`` and
    ``output_gate_o``. The parameter count equals one Linear per W; :meth:`design_weights`
    reassembles each W of the equations.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_input_gate: bool = False,
        use_forget_gate: bool = False,
        use_output_gate: bool = False,
        use_state_gate: bool = False,
        use_new_state: bool = True,
        use_old_state: bool = False,
        use_residual: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        switches = dict(
            use_input_gate=use_input_gate, use_forget_gate=use_forget_gate,
            use_output_gate=use_output_gate, use_state_gate=use_state_gate,
            use_new_state=use_new_state, use_old_state=use_old_state, use_residual=use_residual,
        )
        for name, value in switches.items():
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        if not (use_new_state or use_old_state):
            raise ValueError("use_new_state and use_old_state cannot both be False")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.state_width = hidden_size
        for name, value in switches.items():
            setattr(self, name, value)

        kw = dict(device=device, dtype=dtype)
        d = hidden_size
        c_width = input_size + hidden_size
        h_width = d * (int(use_new_state) + int(use_old_state)) + (input_size if use_residual else 0)
        self.h_width = h_width
        # Linear maps that read the same input are fused into one matrix:
        #   c_proj:  c -> [W_n c | W_g^c c | W_f^c c]   (the c-columns of W_g and W_f, with their bias)
        #   h_proj:  h -> [W_o h | W_og^h h]            (the h-columns of W_og, with its bias)
        # and the columns of W_g, W_f, W_og that read n or o are separate bias-free maps.
        self._c_parts = ["W_n"] + (["W_g"] if use_state_gate else []) + (["W_f"] if use_forget_gate else [])
        self.input_gate = nn.Linear(c_width, c_width, **kw) if use_input_gate else None
        self.c_proj = nn.Linear(c_width, d * len(self._c_parts), **kw)
        self.state_gate_n = nn.Linear(d, d, bias=False, **kw) if use_state_gate else None
        self.forget_gate_n = nn.Linear(d, d, bias=False, **kw) if use_forget_gate else None
        self.h_proj = nn.Linear(h_width, d * (2 if use_output_gate else 1), **kw)
        self.output_gate_o = nn.Linear(d, d, bias=False, **kw) if use_output_gate else None
        self.reset_parameters()

    @property
    def switches(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in SWITCHES}

    def reset_parameters(self) -> None:
        """Each W of DESIGN.md gets nn.Linear's default init for its own fan-in, also where its
        columns are split over two fused maps."""
        d, cw = self.hidden_size, self.input_size + self.hidden_size
        fan_in = {"W_n": cw, "W_g": cw + d, "W_f": cw + d}
        with torch.no_grad():
            if self.input_gate is not None:
                self.input_gate.reset_parameters()
            for k, name in enumerate(self._c_parts):
                bound = 1 / math.sqrt(fan_in[name])
                self.c_proj.weight[k * d:(k + 1) * d].uniform_(-bound, bound)
                self.c_proj.bias[k * d:(k + 1) * d].uniform_(-bound, bound)
            for m in (self.state_gate_n, self.forget_gate_n):
                if m is not None:
                    m.weight.uniform_(-1 / math.sqrt(cw + d), 1 / math.sqrt(cw + d))
            og = self.output_gate_o is not None
            for k, fan in enumerate([self.h_width] + ([d + self.h_width] if og else [])):
                bound = 1 / math.sqrt(fan)
                self.h_proj.weight[k * d:(k + 1) * d].uniform_(-bound, bound)
                self.h_proj.bias[k * d:(k + 1) * d].uniform_(-bound, bound)
            if og:
                bound = 1 / math.sqrt(d + self.h_width)
                self.output_gate_o.weight.uniform_(-bound, bound)

    def extra_repr(self) -> str:
        on = [name[4:] for name in SWITCHES if getattr(self, name)]
        return f"{self.input_size}, {self.hidden_size}, " + ", ".join(on)

    def weight_shapes(self) -> list[tuple[str, int, int]]:
        """(name, in, out) of every weight matrix of DESIGN.md's equations, one per W."""
        shapes = []
        d, i = self.hidden_size, self.input_size
        if self.use_input_gate:
            shapes += [("W_ix", i + d, i), ("W_is", i + d, d)]
        shapes.append(("W_n", i + d, d))
        if self.use_state_gate:
            shapes.append(("W_g", i + 2 * d, d))
        if self.use_forget_gate:
            shapes.append(("W_f", i + 2 * d, d))
        shapes.append(("W_o", self.h_width, d))
        if self.use_output_gate:
            shapes.append(("W_og", d + self.h_width, d))
        return shapes

    def design_weights(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The (weight, bias) of each W of DESIGN.md, reassembled from the fused maps; the
        column order of W_g, W_f is [c, n] and of W_og is [o, h], as in the equations."""
        d, i = self.hidden_size, self.input_size
        out: dict[str, tuple[Tensor, Tensor]] = {}
        if self.input_gate is not None:
            w, b = self.input_gate.weight, self.input_gate.bias
            out["W_ix"], out["W_is"] = (w[:i], b[:i]), (w[i:], b[i:])
        extra = {"W_g": self.state_gate_n, "W_f": self.forget_gate_n}
        for k, name in enumerate(self._c_parts):
            w, b = self.c_proj.weight[k * d:(k + 1) * d], self.c_proj.bias[k * d:(k + 1) * d]
            if name in extra:
                w = torch.cat((w, extra[name].weight), dim=1)
            out[name] = (w, b)
        out["W_o"] = (self.h_proj.weight[:d], self.h_proj.bias[:d])
        if self.output_gate_o is not None:
            w = torch.cat((self.output_gate_o.weight, self.h_proj.weight[d:]), dim=1)
            out["W_og"] = (w, self.h_proj.bias[d:])
        return out

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        d = self.hidden_size
        c = torch.cat((x, s), dim=-1)  # (N, H_in + H)
        if self.input_gate is not None:
            c = torch.sigmoid(self.input_gate(c)) * c  # [x', s'] = σ([W_ix; W_is] c) * [x, s]
        pre = self.c_proj(c)  # (N, H * parts): [W_n c | W_g^c c | W_f^c c]
        n = torch.tanh(pre[..., :d])  # (N, H)
        k = 1
        if self.state_gate_n is not None:
            g = torch.sigmoid(torch.addmm(pre[..., k * d:(k + 1) * d], n, self.state_gate_n.weight.t()))
            n = torch.lerp(s, n, g)  # g * n + (1 - g) * s
            k += 1
        if self.forget_gate_n is not None:
            f = torch.sigmoid(torch.addmm(pre[..., k * d:(k + 1) * d], n, self.forget_gate_n.weight.t()))
            n = f * n
        parts = []
        if self.use_new_state:
            parts.append(n)
        if self.use_old_state:
            parts.append(c[..., self.input_size:])  # s'
        if self.use_residual:
            parts.append(x)
        h = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (N, h_width)
        q = self.h_proj(h)  # (N, H) or (N, 2H): [W_o h | W_og^h h]
        if self.output_gate_o is None:
            return F.silu(q), n  # o * σ(o)
        o = q[..., :d]
        return o * torch.sigmoid(torch.addmm(q[..., d:], o, self.output_gate_o.weight.t())), n

    step = forward


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
        from .cells import make_cell

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
