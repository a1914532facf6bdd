"""The byte model (gatedrnn.models.model): its hand-written training step against autograd."""

import pytest
import torch

from gatedrnn import RNNConfig
from gatedrnn.models.model import ByteModel
from test_layers import COMBOS


@pytest.mark.parametrize("sw", COMBOS, ids=lambda sw: "".join(k[4] if v else "_" for k, v in sw.items()))
def test_byte_model_train_step_equals_autograd_cross_entropy(sw):
    """The whole model's hand-written step (embedding, two layers, readout, cross-entropy)
    against autograd with the incoming states detached."""
    torch.manual_seed(0)
    model = ByteModel(RNNConfig(**sw, n_layers=2, state_size=6)).double()
    assert model.manual_backward
    params = list(model.parameters())
    x, y = torch.randint(0, 256, (9,)), torch.randint(0, 256, (9,))
    states = [torch.randn(9, 6, dtype=torch.float64) for _ in range(2)]
    logits, new_states = model.step(x, states)
    loss = torch.nn.functional.cross_entropy(logits, y)
    expected = torch.autograd.grad(loss, params, allow_unused=True)
    for p in params:
        p.grad = torch.full_like(p, -3.0)
    got_loss, got_states = model.train_step(x, y, states)
    torch.testing.assert_close(got_loss, loss.detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip(got_states, new_states):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)
        assert not a.requires_grad
    for (name, p), g in zip(model.named_parameters(), expected):
        g = torch.zeros_like(p) if g is None else g
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12, msg=name)
