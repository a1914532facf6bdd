"""What one training step does to a model: the update rules, on flat parameters and a fused Adam.

Everything around a step (the data cursor, the moving average, log points, divergence, stops,
timing) is :meth:`gatedrnn.training.loop.Loop.train_steps`, written once; a rule is the small part that
varies (STYLE.md 13). ``rule.step(run, x, y)`` reads inputs ``x``, learns to predict ``y``,
updates ``run.states``, counts its optimizer updates in ``run.updates`` and returns the step's
loss (a detached tensor: a scalar, or one per member of a pack). On a memory task's step
without a target ``y`` is None: the rule only moves the state forward and returns None.
``idle`` is False while the rule holds work not yet applied (a truncated-BPTT chunk): the run
neither stops nor checkpoints then.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch

from ..models.fast import fused_adam
from ..models.cells import RidgeReadout

if TYPE_CHECKING:
    from .loop import Loop

__all__ = ["flatten_parameters", "adam_stepper", "make_optimizer", "UpdateRule", "HandWrittenRule", "AutogradRule",
           "TruncatedBPTTRule", "RidgeRule", "PackedRule"]


def flatten_parameters(model: torch.nn.Module) -> torch.nn.Parameter:
    """Make every parameter of ``model`` (and its gradient) a view into one flat buffer.

    Adam then updates one tensor per step instead of one per parameter, and the gradients are
    zeroed by one fill: on small models this per-tensor overhead is a large part of a step
    (benchmarks/bench_train.py, configuration a). Backward accumulates into the gradient views
    in place, so the flat gradient is always current.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for p in params)
    ref = params[0]
    flat = torch.nn.Parameter(torch.empty(total, dtype=ref.dtype, device=ref.device))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            flat[offset:offset + n].copy_(p.reshape(-1))
            p.data = flat.data[offset:offset + n].view_as(p)
            p.grad = flat.grad[offset:offset + n].view_as(p)
            offset += n
    return flat


def adam_stepper(optimizer: torch.optim.Adam) -> Callable[[], None]:
    """``optimizer.step`` for a fused Adam over one tensor, minus torch.optim's per-call work.

    ``Optimizer.step`` spends ~30 µs a call on hooks, profiling records and regrouping tensors
    by device: 5 % of a step of benchmark configuration (a). This calls the same fused kernel with
    the optimizer's own state and hyperparameters (so ``state_dict`` and checkpoints are
    unchanged); the first step, which creates the state, and any other optimizer go through
    ``optimizer.step``. tests/test_rules.py checks that both give the same bits.
    """
    group = optimizer.param_groups[0]
    if (not fused_adam() or len(optimizer.param_groups) != 1 or len(group["params"]) != 1 or not group.get("fused")
            or group["amsgrad"] or group.get("decoupled_weight_decay")):
        return optimizer.step
    param = group["params"][0]

    def step() -> None:
        state = optimizer.state.get(param)
        if not state:
            optimizer.step()
            return
        beta1, beta2 = group["betas"]
        state["step"].add_(1)
        torch._fused_adam_([param], [param.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [],
                           [state["step"]], amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=group["maximize"], grad_scale=None, found_inf=None)

    return step


def elementwise_adam_stepper(optimizer: torch.optim.Adam, lr: torch.Tensor) -> Callable[[], None]:
    """Adam over the optimizer's one (flat) parameter with a learning rate per element (``lr``,
    its shape): a pack whose members differ in ``lr``. The arithmetic of torch's Adam (the
    moments by lerp and addcmul, the bias corrections, the denominator sqrt(v) / sqrt(bc2) +
    eps), equal to a member's solo fused Adam to float rounding, in 8 operations for the whole
    pack; the state lives in ``optimizer.state`` as torch's does, so checkpoints are unchanged.
    The step count is kept on the host (no device sync per step) and reread when the state is
    replaced (a resume)."""
    group = optimizer.param_groups[0]
    param = group["params"][0]
    beta1, beta2 = group["betas"]
    eps = group["eps"]
    host = {"tensor": None, "t": 0}

    def step() -> None:
        state = optimizer.state[param]
        if not state:
            state.update(step=torch.zeros((), dtype=torch.float32, device=param.device),
                         exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
        if host["tensor"] is not state["step"]:
            host["tensor"], host["t"] = state["step"], int(state["step"].item())
        state["step"].add_(1)
        host["t"] += 1
        t = host["t"]
        m, v, g = state["exp_avg"], state["exp_avg_sq"], param.grad
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = v.sqrt().div_(math.sqrt(1 - beta2 ** t)).add_(eps)
        with torch.no_grad():
            param.addcdiv_(m * lr, denom, value=-1 / (1 - beta1 ** t))

    return step


def make_optimizer(flat: torch.nn.Parameter, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam over the flat parameter: fused where this torch has it for the device, else foreach."""
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam([flat], lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # an older torch without fused Adam here
            pass
    return torch.optim.Adam([flat], lr=lr, foreach=True)


class UpdateRule:
    """One training step's arithmetic (see the module's docstring)."""

    name = "rule"
    idle = True

    def step(self, run: "Loop", x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        raise NotImplementedError


class HandWrittenRule(UpdateRule):
    """The gated cell without BPTT: forward and backward by hand (ByteModel.train_step), one
    fused Adam step. The fastest path; equal to :class:`AutogradRule` to float rounding."""

    name = "hand-written"

    def __init__(self, model, optimizer: torch.optim.Adam, lr: torch.Tensor | None = None) -> None:
        self.model = model
        self.optimizer_step = adam_stepper(optimizer) if lr is None else elementwise_adam_stepper(optimizer, lr)

    def step(self, run, x, y):
        loss, run.states = self.model.train_step(x, y, run.states)
        self.optimizer_step()
        run.updates += 1
        return loss


class PackedRule(HandWrittenRule):
    """A pack's step: the batched hand-written forward and backward of every member
    (:meth:`gatedrnn.models.packed.PackedModel.train_step`, a loss per member), one fused Adam step
    over the stacked parameters: one update for every member, as in its solo run."""

    name = "packed"


class AutogradRule(UpdateRule):
    """Any cell without BPTT: autograd's backward with the incoming state detached, one Adam step."""

    name = "autograd"

    def __init__(self, model, optimizer: torch.optim.Adam, flat: torch.nn.Parameter) -> None:
        self.model, self.optimizer_step, self.flat_grad = model, adam_stepper(optimizer), flat.grad

    def step(self, run, x, y):
        if y is None:  # a step without a target: the state moves on, nothing learns
            with torch.no_grad():
                run.states = self.model.step(x, run.states)[1]
            return None
        logits, new_states = self.model.step(x, run.states)
        loss = run.loss(logits, y)
        self.flat_grad.zero_()
        loss.backward()
        run.states = [state.detach() for state in new_states]  # no gradient crosses time
        self.optimizer_step()
        run.updates += 1
        return loss.detach()


class TruncatedBPTTRule(UpdateRule):
    """Truncated BPTT over ``k`` steps: the mean loss of k consecutive steps is backpropagated
    through those k steps, then one Adam step, then the state is detached. A window's (or a
    task's sequence's) end and the run's last step close a chunk early; the rule is idle only
    between chunks. On a memory task the mean is over the chunk's steps with a target, and a
    chunk without one makes no update."""

    name = "bptt"

    def __init__(self, model, optimizer: torch.optim.Adam, flat: torch.nn.Parameter, k: int) -> None:
        self.model, self.optimizer, self.flat_grad, self.k = model, optimizer, flat.grad, k
        self.total: torch.Tensor | None = None
        self.pending = self.losses = 0

    @property
    def idle(self) -> bool:
        return self.pending == 0

    def step(self, run, x, y):
        logits, run.states = self.model.step(x, run.states)  # not detached: the chunk's graph
        loss = None
        if y is not None:
            loss = run.loss(logits, y)
            self.total = loss if self.total is None else self.total + loss
            self.losses += 1
        self.pending += 1
        window_end = run.pos + 1 == run.window_length
        if self.pending == self.k or window_end or run.step + 1 == run.settings.steps:
            if self.total is not None:
                self.flat_grad.zero_()
                (self.total / self.losses).backward()
                self.optimizer.step()
                run.updates += 1
            run.states = [state.detach() for state in run.states]
            self.total, self.pending, self.losses = None, 0, 0
        return None if loss is None else loss.detach()


class RidgeRule(UpdateRule):
    """The ESN's closed-form readout: accumulate the reservoir's features
    (:class:`gatedrnn.models.cells.RidgeReadout`) and re-solve the readout at every log point and at
    the end; the loss is the cross-entropy of the softmax of the current readout."""

    name = "ridge"

    def __init__(self, model, ridge: RidgeReadout) -> None:
        self.model, self.ridge = model, ridge

    @torch.no_grad()
    def step(self, run, x, y):
        features, run.states = self.model.features(x, run.states)
        loss = None
        if y is not None:
            loss = run.loss(self.model.readout(features), y)
            self.ridge.add(features, y)
        after = run.step + 1
        if after % run.settings.log_every == 0 or after == run.settings.steps:
            self.ridge.solve(self.model.readout)
            run.updates += 1
        return loss
