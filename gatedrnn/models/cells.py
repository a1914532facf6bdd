"""The other recurrent cells of the sweep, behind the one interface of :class:`GatedLayer`.

Every cell is a pure step ``cell(x, s) -> (output, new_state)`` with ``x`` (N, H_in), ``s``
(N, ``cell.state_width``) and ``output`` (N, H), so the model, trainer, queue and analysis need
no per-cell code. A layer's output is its hidden state. The LSTM's state is ``[h, c]`` in one
tensor (width 2H).

``esn`` (echo state network): ``s = (1 - leak) * s + leak * tanh(W_in x + W s)``, with ``W`` a
fixed random matrix of the given ``density`` whose spectral radius, computed *after* masking, is
``spectral_radius``, and ``W_in`` fixed random uniform in [-input_scaling, input_scaling]. Nothing
in it learns: only the model's readout does.

``esgp`` (echo state gated population): ``h~ = tanh(W_in x + (W * M) h)``,
``g = σ(W_g h~ + b)``, ``h = g * h~ + (1 - g) * h``, with ``W`` and the mask ``M`` fixed and
``W * M`` scaled to ``spectral_radius`` after masking. ``W_in`` and the gate learn. (The published
ESGP package scales ``W`` before masking, which leaves the true radius of ``W * M`` near 0.29 at
density 0.1 for a requested 0.9; here the radius is what was asked.)

Fixed weights and masks are buffers: they get no gradient, are not counted as parameters, and
are saved in checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import GatedLayer

__all__ = ["GRULayer", "LSTMLayer", "TanhRNNLayer", "ESNLayer", "ESGPLayer", "RidgeReadout", "make_cell",
           "spectral_radius", "scaled_reservoir"]


def spectral_radius(w: Tensor) -> float:
    """The largest eigenvalue modulus of a square matrix."""
    return float(torch.linalg.eigvals(w.detach().double().cpu()).abs().max())


RESERVOIR_DRAWS = 100


def scaled_reservoir(size: int, density: float, radius: float) -> tuple[Tensor, Tensor]:
    """(W * M scaled to ``radius``, M): a random matrix, masked to ``density``, then scaled so that
    the masked matrix's spectral radius is ``radius``. Uses torch's global generator.

    A sparse small matrix can be nilpotent (every eigenvalue 0: no cycle among its non-zero
    entries), which no scaling turns into the radius asked; such a draw is discarded and the
    next one taken, up to RESERVOIR_DRAWS draws. A first draw that has a radius is the one
    returned, so that every reservoir built before the redraw existed is built unchanged."""
    for _ in range(RESERVOIR_DRAWS):
        w = torch.rand(size, size) * 2 - 1
        mask = (torch.rand(size, size) < density).float()
        masked = w * mask
        current = spectral_radius(masked)
        if current > 0.0:
            return masked * (radius / current), mask
    raise ValueError(f"a {size}x{size} reservoir at density {density} had no non-zero eigenvalue in "
                     f"{RESERVOIR_DRAWS} draws; raise density or state_size")


class _Torch(nn.Module):
    state_width: int

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class _SingleState(_Torch):
    """A torch cell whose new hidden state is both the output and the state."""

    def __init__(self, input_size: int, hidden_size: int, cell: nn.Module) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.state_width = input_size, hidden_size, hidden_size
        self.cell = cell

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        h = self.cell(x, s)
        return h, h


class GRULayer(_SingleState):
    """torch.nn.GRUCell as a step: output = new state = h'."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, nn.GRUCell(input_size, hidden_size))


class TanhRNNLayer(_SingleState):
    """torch.nn.RNNCell (tanh) as a step."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, nn.RNNCell(input_size, hidden_size, nonlinearity="tanh"))


class LSTMLayer(_Torch):
    """torch.nn.LSTMCell as a step; the state is [h, c] (N, 2H), the output h."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.state_width = input_size, hidden_size, 2 * hidden_size
        self.cell = nn.LSTMCell(input_size, hidden_size)

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        d = self.hidden_size
        h, c = self.cell(x, (s[:, :d], s[:, d:]))
        return h, torch.cat((h, c), dim=-1)


class ESNLayer(_Torch):
    """A leaky echo-state reservoir; nothing here learns.

    ``project_input=False`` means the input is already ``W_in x`` (the model's fixed random
    byte embedding plays ``W_in`` for the first layer, as a lookup instead of a product with a
    one-hot vector).
    """

    def __init__(self, input_size: int, hidden_size: int, density: float = 0.1, spectral_radius: float = 0.9,
                 input_scaling: float = 1.0, leak: float = 1.0, project_input: bool = True, **_: object) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.state_width = input_size, hidden_size, hidden_size
        self.leak = leak
        self.spectral_radius = spectral_radius
        w, mask = scaled_reservoir(hidden_size, density, spectral_radius)
        self.register_buffer("W", w)
        self.register_buffer("mask", mask)
        if project_input:
            self.register_buffer("W_in", (torch.rand(hidden_size, input_size) * 2 - 1) * input_scaling)
        else:
            if input_size != hidden_size:
                raise ValueError("an ESN layer without its own input projection needs input_size == hidden_size")
            self.W_in = None

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        drive = x if self.W_in is None else x @ self.W_in.t()
        new = torch.tanh(torch.addmm(drive, s, self.W.t()))
        if self.leak != 1.0:
            new = torch.lerp(s, new, self.leak)  # (1 - leak) * s + leak * new
        return new, new


class ESGPLayer(_Torch):
    """An echo state gated population: fixed masked reservoir, learned input and gate."""

    def __init__(self, input_size: int, hidden_size: int, density: float = 0.1, spectral_radius: float = 0.9,
                 **_: object) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.state_width = input_size, hidden_size, hidden_size
        w, mask = scaled_reservoir(hidden_size, density, spectral_radius)
        self.register_buffer("W", w)  # already W * M, scaled
        self.register_buffer("mask", mask)
        self.W_in = nn.Linear(input_size, hidden_size, bias=False)
        self.gate = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        candidate = torch.tanh(self.W_in(x) + h @ self.W.t())
        g = torch.sigmoid(self.gate(candidate))
        new = torch.lerp(h, candidate, g)  # g * h~ + (1 - g) * h
        return new, new


_SIMPLE = {"gru": GRULayer, "lstm": LSTMLayer, "rnn": TanhRNNLayer}


def make_cell(cell: str, input_size: int, hidden_size: int, project_input: bool = True, **options) -> nn.Module:
    """One layer of the given cell kind. ``options``: the gated switches, or the cell's keys."""
    if cell == "gated":
        return GatedLayer(input_size, hidden_size, **options)
    if cell in _SIMPLE:
        if options:
            raise TypeError(f"cell {cell!r} takes no options, got {sorted(options)}")
        return _SIMPLE[cell](input_size, hidden_size)
    if cell == "esn":
        options = {k: v for k, v in options.items() if k != "readout"}
        return ESNLayer(input_size, hidden_size, project_input=project_input, **options)
    if cell == "esgp":
        return ESGPLayer(input_size, hidden_size, **options)
    raise ValueError(f"unknown cell {cell!r}")


class RidgeReadout:
    """The ESN's closed-form readout: sufficient statistics of ``[features, 1]`` against the
    one-hot next byte, and the ridge regression solved from them into a ``nn.Linear``.

    ``add(features, targets)`` accumulates (N, D) features and (N,) byte (class) targets, or
    (N,) real targets of a regression, in float64;
    ``solve(linear)`` writes ``W, b = argmin |[F, 1] [W; b] - Y|² / n + alpha |[W; b]|²`` into
    ``linear`` (``alpha`` is ``config.RIDGE_ALPHA``). Its state is part of the run's checkpoint.
    """

    def __init__(self, width: int, classes: int, alpha: float, device=None) -> None:
        self.alpha = alpha
        self.xtx = torch.zeros(width + 1, width + 1, dtype=torch.float64, device=device)
        self.xty = torch.zeros(width + 1, classes, dtype=torch.float64, device=device)
        self.n_seen = 0

    @torch.no_grad()
    def add(self, features: Tensor, targets: Tensor) -> None:
        f1 = torch.cat((features, features.new_ones(features.size(0), 1)), dim=1).double()  # (N, D + 1)
        self.xtx += f1.t() @ f1
        if targets.is_floating_point():  # a regression target (N,)
            self.xty += f1.t() @ targets.reshape(f1.size(0), -1).double()
        else:  # a class: its one-hot row
            self.xty.index_add_(1, targets, f1.t())
        self.n_seen += f1.size(0)

    @torch.no_grad()
    def solve(self, linear: nn.Linear) -> None:
        n = max(self.n_seen, 1)
        eye = torch.eye(self.xtx.size(0), dtype=torch.float64, device=self.xtx.device)
        w = torch.linalg.solve(self.xtx / n + self.alpha * eye, self.xty / n)  # (D + 1, classes)
        linear.weight.copy_(w[:-1].t())
        linear.bias.copy_(w[-1])

    def state_dict(self) -> dict:
        return {"xtx": self.xtx.cpu(), "xty": self.xty.cpu(), "n": self.n_seen}

    def load_state_dict(self, state: dict) -> None:
        self.xtx = state["xtx"].to(self.xtx.device)
        self.xty = state["xty"].to(self.xty.device)
        self.n_seen = state["n"]
