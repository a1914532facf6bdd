"""Update rules (gatedrnn/rules.py): the fused Adam stepper, the hand-written backward against
autograd, the public fallbacks, and the pack's rule."""

import numpy as np
import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings
from gatedrnn.data.corpus import load_corpus
from gatedrnn.training.pack_run import PackRun
from gatedrnn.training.rules import PackedRule
from gatedrnn.training.run import Run

F_, T_ = False, True
GATED = RNNConfig(T_, T_, T_, T_, T_, T_, T_, n_layers=2, state_size=16)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def test_every_rule_counts_one_update_per_step_without_bptt(corpus):
    s = TrainSettings.tiny(steps=30, batch_size=2, history=8, val_streams=2)
    pack = PackRun([GATED, RNNConfig(F_, T_, F_, T_, T_, F_, T_, n_layers=2, state_size=16)], s, corpus)
    assert isinstance(pack.rule, PackedRule)
    pack.train_steps(30)
    solo = Run(GATED, s, corpus)
    solo.train_steps(30)
    assert pack.updates == solo.updates == 30


def test_adam_stepper_gives_the_bits_of_optimizer_step():
    from gatedrnn.training.rules import adam_stepper

    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(1000))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = torch.optim.Adam([a], lr=0.01, fused=True)
    opt_b = torch.optim.Adam([b], lr=0.01, fused=True, weight_decay=0.1)
    opt_b.param_groups[0]["weight_decay"] = 0.0  # read from the group at every step
    step_b = adam_stepper(opt_b)
    assert step_b != opt_b.step  # the fast path is taken for a fused Adam over one tensor
    for _ in range(20):
        g = torch.randn(1000)
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        step_b()
    assert torch.equal(a, b)
    sa, sb = opt_a.state[a], opt_b.state[b]
    assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    # anything else is left to torch.optim
    c = torch.nn.Parameter(torch.randn(3))
    other = torch.optim.Adam([c], foreach=True)
    assert adam_stepper(other) == other.step


def test_hand_written_backward_trains_as_autograd_does(corpus):
    """Run's default (hand-written backward) and autograd=True follow the same curve."""
    s = TrainSettings.tiny(steps=300, log_every=25)
    runs = []
    for autograd in (False, True):
        run = Run(GATED, s, corpus, autograd=autograd)
        run.train_steps(300)
        runs.append(run)
    fast, slow = runs
    assert len(fast.curve) == 12
    np.testing.assert_allclose(fast.curve, slow.curve, rtol=1e-4)
    for p, q in zip(fast.model.parameters(), slow.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    assert fast.curve[-1] < fast.curve[0]


def test_without_the_private_fast_paths_training_takes_the_public_path_to_the_same_curve(corpus, monkeypatch):
    """A torch whose private ops are missing or have another signature: the hand-written backward
    and the direct fused-Adam call give way to autograd and torch.optim's own step."""
    from gatedrnn.models import fast as _fast
    from gatedrnn.training.rules import AutogradRule, HandWrittenRule

    s = TrainSettings.tiny(steps=300, log_every=25)
    fast = Run(GATED, s, corpus)
    assert isinstance(fast.rule, HandWrittenRule) and fast.rule.optimizer_step != fast.optimizer.step
    fast.train_steps(300)

    def other_signature(grad_output, output, dim):  # as a future torch might have it
        raise TypeError("_log_softmax_backward_data() missing 1 required positional argument")

    def fused_adam_missing():  # torch.optim's own fused Adam calls torch._fused_adam_ too, so the
        raise AttributeError("module 'torch' has no attribute '_fused_adam_'")  # probe is what goes

    try:
        monkeypatch.setattr(_fast, "_probe_fused_adam", fused_adam_missing)
        monkeypatch.setattr(torch.ops.aten, "_log_softmax_backward_data", other_signature)
        _fast.backward_kernels.cache_clear()
        _fast.fused_adam.cache_clear()
        with pytest.warns(RuntimeWarning, match="using the public path"):
            slow = Run(GATED, s, corpus)
        assert isinstance(slow.rule, AutogradRule) and slow.rule.optimizer_step == slow.optimizer.step
        slow.train_steps(300)
    finally:
        monkeypatch.undo()
        _fast.backward_kernels.cache_clear()
        _fast.fused_adam.cache_clear()
    np.testing.assert_allclose(fast.curve, slow.curve, rtol=1e-4)
    for p, q in zip(fast.model.parameters(), slow.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    assert _fast.backward_kernels() and _fast.fused_adam()  # this torch has them


def test_gatedrnn_public_paths_forces_the_public_path(corpus, monkeypatch):
    from gatedrnn.models import fast as _fast
    from gatedrnn.training.rules import AutogradRule

    monkeypatch.setenv("GATEDRNN_PUBLIC_PATHS", "1")
    _fast.backward_kernels.cache_clear()
    _fast.fused_adam.cache_clear()
    try:
        run = Run(GATED, TrainSettings.tiny(), corpus)
        assert isinstance(run.rule, AutogradRule) and run.rule.optimizer_step == run.optimizer.step
    finally:
        monkeypatch.undo()
        _fast.backward_kernels.cache_clear()
        _fast.fused_adam.cache_clear()
