"""The torch.nn.GRU-style sequence modules (gatedrnn.models.rnn)."""

import pytest
import torch

from gatedrnn.models.rnn import GatedRNN
from test_layers import SW


def test_gated_rnn_equals_stepping_the_layers_by_hand():
    torch.manual_seed(0)
    rnn = GatedRNN(3, 5, num_layers=2, **SW)
    x = torch.randn(6, 4, 3)  # (L, N, H_in)
    h0 = torch.randn(2, 4, 5)
    out, h_n = rnn(x, h0)
    states = list(h0)
    for t in range(6):
        inp = x[t]
        for k, layer in enumerate(rnn.layers):
            inp, states[k] = layer(inp, states[k])
        torch.testing.assert_close(out[t], inp)
    torch.testing.assert_close(h_n, torch.stack(states))
    assert out.shape == (6, 4, 5) and h_n.shape == (2, 4, 5)


def test_gated_rnn_batch_first_unbatched_and_default_h0():
    torch.manual_seed(0)
    rnn = GatedRNN(3, 5, num_layers=2, **SW)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    rnn = rnn.double()
    out, h_n = rnn(x)
    out_zero, h_zero = rnn(x, torch.zeros(2, 4, 5, dtype=torch.float64))
    torch.testing.assert_close(out, out_zero)
    rnn.batch_first = True
    out_bf, h_bf = rnn(x.transpose(0, 1))
    torch.testing.assert_close(out_bf.transpose(0, 1), out)
    torch.testing.assert_close(h_bf, h_n)
    out_u, h_u = rnn(x[:, 1])  # unbatched (L, H_in)
    assert out_u.shape == (6, 5) and h_u.shape == (2, 5)
    torch.testing.assert_close(out_u, out[:, 1])
    with pytest.raises(ValueError, match="h0"):
        rnn(x.transpose(0, 1), torch.zeros(1, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="input_size"):
        rnn(torch.zeros(2, 6, 7, dtype=torch.float64))


def test_gated_rnn_lets_gradients_flow_through_time():
    torch.manual_seed(0)
    rnn = GatedRNN(3, 5, **SW)
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = rnn(x)
    out[-1].sum().backward()
    assert x.grad[0].abs().sum() > 0  # the last output depends on the first input
