"""ByteModel: input map -> stack of recurrent layers -> head, one step at a time.

For next-byte prediction the input map is the byte embedding and the head 256 logits; for a
memory task (gatedrnn/tasks.py) the input map embeds its symbols or, for real-valued inputs,
is a linear map, and the head has its classes or one regression output."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fast import backward_kernels
from .cells import make_cell
from ..data.corpus import VOCAB
from ..spec.config import INPUT_INITS, RNNConfig
from .layers import GatedLayer
from ..data.tasks import task_io

__all__ = ["ByteModel", "LinearInput", "VOCAB"]


class LinearInput(nn.Embedding):
    """``nn.Linear(num_embeddings, d)`` applied to a one-hot input, as a table lookup plus a bias.

    ``forward(x) = weight[x] + bias`` is ``Linear(num_embeddings, d)(one_hot(x))`` with
    ``weight`` its weight transposed, (num_embeddings, d): the original study's input map. Both
    start as ``nn.Linear`` starts them, uniform in ``±1/sqrt(num_embeddings)`` (its
    Kaiming-uniform weight with ``a = sqrt(5)`` and its bias have that one bound), and both train.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None) -> None:
        super().__init__(num_embeddings, embedding_dim, device=device, dtype=dtype)
        self.bias = nn.Parameter(torch.empty(embedding_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not hasattr(self, "bias"):  # nn.Embedding.__init__ calls this before the bias exists
            return
        bound = 1 / math.sqrt(self.num_embeddings)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(x, self.weight) + self.bias  # (N, d)


class ByteModel(nn.Module):
    """The byte-level language model of the sweep.

    The input map -> ``n_layers`` layers of the configuration's cell -> ``Linear(·, 256)``. The input
    map is ``input_init``'s (the configuration's own key, else the argument): ``linear``, the
    original study's ``Linear(256, d)`` on the one-hot byte (:class:`LinearInput`, the default);
    ``normal``, ``Embedding(256, d)`` with its N(0, 1) initialisation and no bias.
    ``step(bytes_t, states) -> (logits, states)``: ``bytes_t`` (N,) integer bytes, ``states`` a
    list of ``n_layers`` tensors (N, state width); returns logits (N, 256) for the next byte and
    the new states. The step is pure; the trainer decides when states are detached.

    For the echo state network the embedding is fixed (it is the first reservoir's random input
    matrix, looked up instead of multiplied by a one-hot vector) and the readout sees every
    layer's state (a deep ESN): only the readout learns.

    A configuration with a memory task (``config.task``) gets the task's input map and head:
    ``Embedding(symbols, d)`` or, for real-valued inputs (N, channels), ``input_map =
    Linear(channels, d)`` (fixed and random for the ESN, like its embedding); the head
    ``readout`` has the task's classes, or one output for regression.
    """

    def __init__(self, config: RNNConfig, device=None, dtype=None, input_init: str = "linear") -> None:
        super().__init__()
        if not isinstance(config, RNNConfig):
            raise TypeError(f"ByteModel needs an RNNConfig, got {type(config).__name__}")
        if input_init not in INPUT_INITS:
            raise ValueError(f"input_init must be one of {', '.join(INPUT_INITS)}, got {input_init!r}")
        self.config = config
        self.input_init = config.input_init or input_init
        d = config.state_size
        kw = dict(device=device, dtype=dtype)
        self.reservoir = config.cell == "esn"
        self.task = task_io(config)  # a memory task's input and output shapes (no data needed)
        real = self.task is not None and self.task[0]
        n_in, n_out = (VOCAB, VOCAB) if self.task is None else self.task[1:]
        if real:
            self.embedding = None
            self.input_map = nn.Linear(n_in, d, **kw)
        elif self.input_init == "linear" and config.has_input_map_choice:
            self.embedding = LinearInput(n_in, d, **kw)
        else:
            self.embedding = nn.Embedding(n_in, d, **kw)
        if self.reservoir:
            fixed = self.input_map if real else self.embedding
            with torch.no_grad():
                fixed.weight.uniform_(-config.input_scaling, config.input_scaling)
                if real:
                    fixed.bias.zero_()
            for p in fixed.parameters():
                p.requires_grad_(False)
        options = config.switches if config.cell == "gated" else config.cell_options
        self.layers = nn.ModuleList(
            make_cell(config.cell, d, d, project_input=k > 0, **options) for k in range(config.n_layers)
        )
        if dtype is not None or device is not None:
            self.layers.to(device=device, dtype=dtype)
        self.readout = nn.Linear(d * (config.n_layers if self.reservoir else 1), n_out, **kw)

    def initial_state(self, batch: int) -> list[Tensor]:
        w = self.readout.weight
        return [w.new_zeros(batch, layer.state_width) for layer in self.layers]

    def features(self, bytes_t: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """What the readout sees, (N, readout width), and the new states."""
        x = self.embedding(bytes_t) if self.embedding is not None else self.input_map(bytes_t)  # (N, d)
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

    @property
    def manual_backward(self) -> bool:
        """Whether :meth:`train_step` can compute this model's gradients by hand: the gated cell,
        on a torch whose private backward kernels are there (:mod:`gatedrnn.models.fast`)."""
        return (self.task is None and not self.reservoir
                and all(isinstance(layer, GatedLayer) for layer in self.layers) and backward_kernels())

    @torch.no_grad()
    def train_step(self, bytes_t: Tensor, targets: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One step of training without BPTT, forward and backward by hand (no autograd graph).

        Returns the mean cross-entropy of predicting ``targets`` (N,) and the new states, and
        writes the gradient of that loss, with the incoming ``states`` held constant, into every
        parameter's ``.grad`` (which must exist; it is overwritten, not accumulated). Equal to
        ``F.cross_entropy(self.step(bytes_t, states)[0], targets).backward()`` on zeroed gradients
        with detached states (tests/test_layers.py), in fewer operations and without the
        products for the state's gradient, which the detached state does not need.
        Only for models of gated layers (:attr:`manual_backward`).
        """
        x = F.embedding(bytes_t, self.embedding.weight)  # (N, d)
        bias = getattr(self.embedding, "bias", None)
        if bias is not None:
            x = x + bias
        keeps, new_states = [], []
        for layer, s in zip(self.layers, states):
            x, s, keep = layer.forward_keep(x, s)
            keeps.append(keep)
            new_states.append(s)
        w = self.readout.weight
        logp = torch.log_softmax(torch.addmm(self.readout.bias, x, w.t()), dim=1)  # (N, 256)
        # the mean cross-entropy and its gradient (softmax - one-hot) / N, by the kernels that
        # autograd runs for F.cross_entropy
        aten = torch.ops.aten
        loss, total = aten.nll_loss_forward(logp, targets, None, 1, -100)  # 1: mean
        dnll = aten.nll_loss_backward(self._one(logp), logp, targets, None, 1, -100, total)
        dlogits = aten._log_softmax_backward_data(dnll, logp, 1, logp.dtype)
        torch.mm(dlogits.t(), x, out=w.grad)
        torch.sum(dlogits, 0, out=self.readout.bias.grad)
        dx = torch.mm(dlogits, w)
        for layer, keep in zip(reversed(self.layers), reversed(keeps)):
            dx = layer.backward_step(keep, dx)
        grad = self.embedding.weight.grad
        if bias is not None:
            if dx is None:
                bias.grad.zero_()
            else:
                torch.sum(dx, 0, out=bias.grad)
        if dx is None:
            grad.zero_()
        elif grad.is_cuda:  # the deterministic kernel autograd uses, not atomics
            grad.copy_(aten.embedding_dense_backward(dx, bytes_t, VOCAB, -1, False))
        else:  # sequential on the CPU: deterministic, and cheaper than the above
            grad.zero_().index_add_(0, bytes_t, dx)
        return loss, new_states

    def _one(self, like: Tensor) -> Tensor:
        """A cached scalar 1 on ``like``'s device and dtype (the loss's own gradient)."""
        one = getattr(self, "_one_cache", None)
        if one is None or one.device != like.device or one.dtype != like.dtype:
            one = self._one_cache = torch.ones((), dtype=like.dtype, device=like.device)
        return one

    def weight_shapes(self) -> list[tuple[str, int, int]]:
        """(name, in, out) of every matrix multiply of one step of the gated cell, one Linear per W."""
        shapes = []
        for k, layer in enumerate(self.layers):
            if hasattr(layer, "weight_shapes"):
                shapes += [(f"layer{k}.{name}", i, o) for name, i, o in layer.weight_shapes()]
        shapes.append(("readout", self.readout.in_features, self.readout.out_features))
        return shapes

    def num_parameters(self) -> int:
        """Trainable parameters only: fixed reservoirs and masks are buffers."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
