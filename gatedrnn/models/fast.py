"""Which of torch's private fast paths this torch really has.

The hand-written backward (:meth:`gatedrnn.models.model.ByteModel.train_step`,
:meth:`gatedrnn.models.layers.GatedLayer.backward_step`) calls aten kernels directly, and the trainer's
Adam calls ``torch._fused_adam_``. Neither is public API: a torch release may drop one or change
its signature. Once per process each is called on small tensors, exactly as the fast path calls
it, and compared with the public computation (autograd, ``torch.optim.Adam.step``). Where one
is missing, raises, or disagrees, the public path is used instead: slower, same curve to float
rounding (tests/test_trainer.py forces this). ``GATEDRNN_PUBLIC_PATHS=1`` forces it too.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["backward_kernels", "fused_adam"]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-6))


def _forced_off() -> bool:
    return os.environ.get("GATEDRNN_PUBLIC_PATHS", "") not in ("", "0")


def _probe_backward_kernels() -> None:
    aten = torch.ops.aten
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 7, generator=g, dtype=torch.float64)
    d = torch.randn(5, 7, generator=g, dtype=torch.float64)
    zr = z.clone().requires_grad_(True)
    # the elementwise backward kernels of the gated layer
    for kernel, fn, arg in ((aten.sigmoid_backward, torch.sigmoid, "out"), (aten.tanh_backward, torch.tanh, "out"),
                            (aten.silu_backward, F.silu, "in")):
        out = fn(zr)
        (expected,) = torch.autograd.grad(out, zr, d)
        got = kernel(d, out.detach() if arg == "out" else z)
        if not _close(got, expected):
            raise RuntimeError(f"{kernel} disagrees with autograd")
    # the cross-entropy's forward and backward as the byte model runs them
    targets = torch.randint(0, 7, (5,), generator=g)
    logp = torch.log_softmax(zr, dim=1)
    loss_ref = F.nll_loss(logp, targets)
    (grad_ref,) = torch.autograd.grad(loss_ref, zr)
    lp = logp.detach()
    loss, total = aten.nll_loss_forward(lp, targets, None, 1, -100)
    dnll = aten.nll_loss_backward(torch.ones((), dtype=lp.dtype), lp, targets, None, 1, -100, total)
    dlogits = aten._log_softmax_backward_data(dnll, lp, 1, lp.dtype)
    if not (_close(loss, loss_ref.detach()) and _close(dlogits, grad_ref)):
        raise RuntimeError("the cross-entropy kernels disagree with autograd")
    emb = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    dx = torch.randn(5, 3, generator=g, dtype=torch.float64)
    (ref,) = torch.autograd.grad(F.embedding(targets, emb), emb, dx)
    if not _close(aten.embedding_dense_backward(dx, targets, 7, -1, False), ref):
        raise RuntimeError("embedding_dense_backward disagrees with autograd")


def _probe_fused_adam() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.nn.Parameter(torch.randn(11, generator=g))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = torch.optim.Adam([a], lr=0.01, fused=True)
    opt_b = torch.optim.Adam([b], lr=0.01, fused=True)
    for _ in range(3):
        grad = torch.randn(11, generator=g)
        a.grad, b.grad = grad.clone(), grad.clone()
        opt_a.step()
        if not opt_b.state:
            opt_b.step()
            continue
        group, state = opt_b.param_groups[0], opt_b.state[b]
        beta1, beta2 = group["betas"]
        state["step"].add_(1)
        torch._fused_adam_([b], [b.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [], [state["step"]],
                           amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                           grad_scale=None, found_inf=None)
    if not torch.equal(a.detach(), b.detach()):
        raise RuntimeError("torch._fused_adam_ disagrees with torch.optim.Adam.step")


def _check(name: str, probe) -> bool:
    if _forced_off():
        return False
    try:
        probe()
    except Exception as e:  # missing op, other signature, other result: all mean "use the public path"
        warnings.warn(f"gatedrnn: torch {torch.__version__} lacks the private {name} fast path "
                      f"({e.__class__.__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                      "using the public path (slower, same results)", RuntimeWarning, stacklevel=3)
        return False
    return True


@lru_cache(maxsize=None)
def backward_kernels() -> bool:
    """Whether the aten kernels of the hand-written backward are there and agree with autograd."""
    return _check("aten backward kernels", _probe_backward_kernels)


@lru_cache(maxsize=None)
def fused_adam() -> bool:
    """Whether ``torch._fused_adam_`` is there with the signature the trainer calls it with."""
    return _check("torch._fused_adam_", _probe_fused_adam)
