import itertools

import pytest
import torch

from gatedrnn import GatedLayer, GatedRNN
from gatedrnn.spec.config import SWITCHES

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

