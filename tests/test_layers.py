import itertools

import pytest
import torch

from gatedrnn import GatedLayer, GatedRNN
from gatedrnn.config import SWITCHES

GATES = ("use_input_gate", "use_forget_gate", "use_output_gate", "use_state_gate")
STATE_CHOICES = [(True, False), (False, True), (True, True)]
COMBOS = [
    dict(zip(GATES, gates), use_new_state=new, use_old_state=old, use_residual=res)
    for gates in itertools.product((False, True), repeat=4)
    for new, old in STATE_CHOICES
    for res in (False, True)
]


def reference_step(x, s, W, sw):
    """DESIGN.md's equations written out literally, one (weight, bias) per W."""
    sig = torch.sigmoid

    def lin(name, v):
        w, b = W[name]
        return v @ w.t() + b

    c = torch.cat([x, s], -1)
    if sw["use_input_gate"]:
        xp = sig(lin("W_ix", c)) * x
        sp = sig(lin("W_is", c)) * s
        c = torch.cat([xp, sp], -1)
    else:
        xp, sp = x, s
    n = torch.tanh(lin("W_n", c))
    if sw["use_state_gate"]:
        g = sig(lin("W_g", torch.cat([c, n], -1)))
        n = g * n + (1 - g) * s
    if sw["use_forget_gate"]:
        f = sig(lin("W_f", torch.cat([c, n], -1)))
        n = f * n
    if sw["use_new_state"] and sw["use_old_state"]:
        h = torch.cat([n, sp], -1)
    elif sw["use_new_state"]:
        h = n
    else:
        h = sp
    if sw["use_residual"]:
        h = torch.cat([h, x], -1)
    o = lin("W_o", h)
    if sw["use_output_gate"]:
        o = o * sig(lin("W_og", torch.cat([o, h], -1)))
    else:
        o = o * sig(o)
    return o, n


def test_there_are_96_distinct_combinations():
    assert len({tuple(sorted(c.items())) for c in COMBOS}) == 96


@pytest.mark.parametrize("sw", COMBOS, ids=lambda sw: "".join(k[4] if v else "_" for k, v in sw.items()))
def test_layer_matches_the_equations(sw):
    torch.manual_seed(0)
    d_in, d = 7, 5
    layer = GatedLayer(d_in, d, **sw).double()
    # the case really is the variant it names: exactly the W's its switches call for
    W = layer.design_weights()
    expected = {"W_n", "W_o"}
    expected |= {"W_ix", "W_is"} if sw["use_input_gate"] else set()
    expected |= {"W_g"} if sw["use_state_gate"] else set()
    expected |= {"W_f"} if sw["use_forget_gate"] else set()
    expected |= {"W_og"} if sw["use_output_gate"] else set()
    assert set(W) == expected
    shapes = {name: (i, o) for name, i, o in layer.weight_shapes()}
    for name, (w, b) in W.items():
        assert tuple(w.shape) == (shapes[name][1], shapes[name][0]) and tuple(b.shape) == (shapes[name][1],)
    assert sum(p.numel() for p in layer.parameters()) == sum((i + 1) * o for i, o in shapes.values())

    x = torch.randn(4, d_in, dtype=torch.float64)
    s = torch.randn(4, d, dtype=torch.float64)
    o, n = layer(x, s)
    o_ref, n_ref = reference_step(x, s, W, sw)
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(n, n_ref, rtol=1e-12, atol=1e-12)


def test_each_switch_changes_the_output():
    torch.manual_seed(1)
    x, s = torch.randn(3, 6), torch.randn(3, 6)
    base = dict(use_new_state=True)
    torch.manual_seed(2)
    o0, _ = GatedLayer(6, 6, **base)(x, s)
    for name in SWITCHES:
        if name == "use_new_state":
            continue
        torch.manual_seed(2)
        o1, _ = GatedLayer(6, 6, **{**base, name: True})(x, s)
        assert not torch.allclose(o0, o1), name


def test_layer_refuses_bad_arguments():
    with pytest.raises(ValueError, match="both"):
        GatedLayer(4, 4, use_new_state=False, use_old_state=False)
    with pytest.raises(ValueError, match="hidden_size"):
        GatedLayer(4, 0)
    with pytest.raises(TypeError, match="use_residual"):
        GatedLayer(4, 4, use_residual=1)
    with pytest.raises(TypeError, match="use_nothing"):
        GatedRNN(4, 4, use_nothing=True)


SW = dict(use_input_gate=True, use_forget_gate=True, use_state_gate=True, use_output_gate=True,
          use_new_state=True, use_old_state=True, use_residual=True)


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


def test_repr_names_the_switches():
    assert "forget_gate" in repr(GatedLayer(4, 4, use_forget_gate=True, use_new_state=True))


@pytest.mark.parametrize("sw", COMBOS, ids=lambda sw: "".join(k[4] if v else "_" for k, v in sw.items()))
def test_hand_written_backward_equals_autograd_of_the_equations(sw):
    """backward_step against autograd through reference_step, with the state a constant."""
    torch.manual_seed(0)
    d_in, d = 7, 5
    layer = GatedLayer(d_in, d, **sw).double()
    params = list(layer.parameters())
    x = torch.randn(4, d_in, dtype=torch.float64, requires_grad=True)
    s = torch.randn(4, d, dtype=torch.float64)
    dout = torch.randn(4, d, dtype=torch.float64)
    o_ref, _ = reference_step(x, s, layer.design_weights(), sw)
    expected = torch.autograd.grad((o_ref * dout).sum(), params + [x], allow_unused=True)
    expected = [torch.zeros_like(t) if g is None else g for t, g in zip(params + [x], expected)]

    for p in params:
        p.grad = torch.full_like(p, 7.0)  # stale values: every gradient must be overwritten
    with torch.no_grad():
        o, n, keep = layer.forward_keep(x, s)
        dx = layer.backward_step(keep, dout)
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
    for (name, p), g in zip(layer.named_parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12, msg=name)
    dx = torch.zeros_like(x) if dx is None else dx
    torch.testing.assert_close(dx, expected[-1], rtol=1e-10, atol=1e-12)
    # no gradient is wanted for the input: none is returned, the parameters' are the same
    with torch.no_grad():
        assert layer.backward_step(keep, dout, need_dx=False) is None
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)
    # no gradient reaches the output: every parameter's gradient is zero
    with torch.no_grad():
        assert layer.backward_step(keep, None) is None
    assert all(torch.count_nonzero(p.grad) == 0 for p in params)


@pytest.mark.parametrize("sw", COMBOS, ids=lambda sw: "".join(k[4] if v else "_" for k, v in sw.items()))
def test_byte_model_train_step_equals_autograd_cross_entropy(sw):
    """The whole model's hand-written step (embedding, two layers, readout, cross-entropy)
    against autograd with the incoming states detached."""
    from gatedrnn import RNNConfig
    from gatedrnn.model import ByteModel

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
