"""Fidelity to the original study (STYLE 20): its model written once, plainly, from DESIGN.md.

``OriginalLayer`` and ``OriginalModel`` below are the original's structure: one ``nn.Linear`` per
W of the equations (no fused maps), the one-hot byte through ``nn.Linear(256, d)``, autograd for
every gradient. Their weights are copied *into* gatedrnn's fused layer by concatenation written
here, so that a mistake in gatedrnn's own bookkeeping (its fused layout, ``design_weights``, its
hand-written backward) cannot pass unnoticed.
"""

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from gatedrnn import RNNConfig
from gatedrnn.models.model import ByteModel
from test_layers import COMBOS


def grad(p):
    """autograd's gradient, zero where the loss does not depend on ``p`` (None)."""
    return torch.zeros_like(p) if p.grad is None else p.grad


class OriginalLayer(nn.Module):
    def __init__(self, d, sw):
        super().__init__()
        self.sw, self.d = sw, d
        lin = lambda i, o: nn.Linear(i, o).double()  # noqa: E731
        if sw["use_input_gate"]:
            self.W_ix, self.W_is = lin(2 * d, d), lin(2 * d, d)
        self.W_n = lin(2 * d, d)
        if sw["use_state_gate"]:
            self.W_g = lin(3 * d, d)
        if sw["use_forget_gate"]:
            self.W_f = lin(3 * d, d)
        width = d * ((sw["use_new_state"] + sw["use_old_state"]) + sw["use_residual"])
        self.W_o = lin(width, d)
        if sw["use_output_gate"]:
            self.W_og = lin(d + width, d)

    def forward(self, x, s):
        sw, sig = self.sw, torch.sigmoid
        c = torch.cat([x, s], -1)
        if sw["use_input_gate"]:
            xp, sp = sig(self.W_ix(c)) * x, sig(self.W_is(c)) * s
            c = torch.cat([xp, sp], -1)
        else:
            xp, sp = x, s
        n = torch.tanh(self.W_n(c))
        if sw["use_state_gate"]:
            g = sig(self.W_g(torch.cat([c, n], -1)))
            n = g * n + (1 - g) * s
        if sw["use_forget_gate"]:
            n = sig(self.W_f(torch.cat([c, n], -1))) * n
        h = [n] * sw["use_new_state"] + [sp] * sw["use_old_state"] + [x] * sw["use_residual"]
        h = torch.cat(h, -1)
        o = self.W_o(h)
        o = o * sig(self.W_og(torch.cat([o, h], -1))) if sw["use_output_gate"] else o * sig(o)
        return o, n.detach()

    def c_parts(self):
        """The maps that read c, in the order [n, g, f] (gatedrnn fuses their c-columns)."""
        return [self.W_n] + ([self.W_g] if self.sw["use_state_gate"] else []) + (
            [self.W_f] if self.sw["use_forget_gate"] else [])

    def into(self, layer):
        """Copy these weights into a gatedrnn GatedLayer (its fused maps are concatenations)."""
        d, sw = self.d, self.sw
        cw = 2 * d
        parts = self.c_parts()
        with torch.no_grad():
            if sw["use_input_gate"]:
                layer.input_gate.weight.copy_(torch.cat([self.W_ix.weight, self.W_is.weight]))
                layer.input_gate.bias.copy_(torch.cat([self.W_ix.bias, self.W_is.bias]))
            layer.c_proj.weight.copy_(torch.cat([p.weight[:, :cw] for p in parts]))
            layer.c_proj.bias.copy_(torch.cat([p.bias for p in parts]))
            if sw["use_state_gate"]:
                layer.state_gate_n.weight.copy_(self.W_g.weight[:, cw:])
            if sw["use_forget_gate"]:
                layer.forget_gate_n.weight.copy_(self.W_f.weight[:, cw:])
            w_h, b_h = [self.W_o.weight], [self.W_o.bias]
            if sw["use_output_gate"]:
                layer.output_gate_o.weight.copy_(self.W_og.weight[:, :d])
                w_h.append(self.W_og.weight[:, d:])
                b_h.append(self.W_og.bias)
            layer.h_proj.weight.copy_(torch.cat(w_h))
            layer.h_proj.bias.copy_(torch.cat(b_h))

    def grads_as(self, layer):
        """This layer's autograd gradients laid out as gatedrnn's fused parameters."""
        d, sw, cw = self.d, self.sw, 2 * self.d
        parts = self.c_parts()
        out = {"c_proj.weight": torch.cat([grad(p.weight)[:, :cw] for p in parts]),
               "c_proj.bias": torch.cat([grad(p.bias) for p in parts]),
               "h_proj.weight": torch.cat([grad(self.W_o.weight)] + ([grad(self.W_og.weight)[:, d:]]
                                                                    if sw["use_output_gate"] else [])),
               "h_proj.bias": torch.cat([grad(self.W_o.bias)] + ([grad(self.W_og.bias)] if sw["use_output_gate"] else []))}
        if sw["use_input_gate"]:
            out["input_gate.weight"] = torch.cat([grad(self.W_ix.weight), grad(self.W_is.weight)])
            out["input_gate.bias"] = torch.cat([grad(self.W_ix.bias), grad(self.W_is.bias)])
        if sw["use_state_gate"]:
            out["state_gate_n.weight"] = grad(self.W_g.weight)[:, cw:]
        if sw["use_forget_gate"]:
            out["forget_gate_n.weight"] = grad(self.W_f.weight)[:, cw:]
        if sw["use_output_gate"]:
            out["output_gate_o.weight"] = grad(self.W_og.weight)[:, :d]
        return out


class OriginalModel(nn.Module):
    """The original's RNN.py: the one-hot byte through nn.Linear(256, d), the layers, nn.Linear(d, 256)."""

    def __init__(self, d, n_layers, sw):
        super().__init__()
        self.input = nn.Linear(256, d).double()
        self.layers = nn.ModuleList(OriginalLayer(d, sw) for _ in range(n_layers))
        self.output = nn.Linear(d, 256).double()

    def forward(self, byte, states):
        x = self.input(F.one_hot(byte, 256).double())
        new = []
        for layer, s in zip(self.layers, states):
            x, s = layer(x, s)
            new.append(s)
        return self.output(x), new


@pytest.mark.parametrize("sw", COMBOS, ids=lambda sw: "".join(k[4] if v else "_" for k, v in sw.items()))
def test_the_byte_model_is_the_original_model_forward_and_gradients(sw):
    """Three detached steps of both models on the same bytes: logits, states, the loss and every
    parameter's gradient of gatedrnn's hand-written step agree with the original's autograd."""
    torch.manual_seed(0)
    d, n_layers, batch = 6, 2, 5
    original = OriginalModel(d, n_layers, sw)
    ours = ByteModel(RNNConfig(**sw, n_layers=n_layers, state_size=d)).double()
    assert ours.manual_backward and ours.input_init == "linear"
    with torch.no_grad():
        ours.embedding.weight.copy_(original.input.weight.t())
        ours.embedding.bias.copy_(original.input.bias)
        ours.readout.weight.copy_(original.output.weight)
        ours.readout.bias.copy_(original.output.bias)
    for mine, theirs in zip(ours.layers, original.layers):
        theirs.into(mine)
    text = torch.randint(0, 256, (4, batch))
    s_orig = [torch.zeros(batch, d, dtype=torch.float64) for _ in range(n_layers)]
    s_ours = [t.clone() for t in s_orig]
    for t in range(3):
        original.zero_grad()
        logits, s_orig = original(text[t], s_orig)
        loss = F.cross_entropy(logits, text[t + 1])
        loss.backward()
        ours_logits, _ = ours.step(text[t], s_ours)
        torch.testing.assert_close(ours_logits, logits, rtol=1e-10, atol=1e-12)
        for p in ours.parameters():
            p.grad = torch.full_like(p, 5.0)  # stale: the step must overwrite every gradient
        got, s_ours = ours.train_step(text[t], text[t + 1], s_ours)
        torch.testing.assert_close(got, loss.detach(), rtol=1e-12, atol=1e-12)
        for a, b in zip(s_ours, s_orig):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours.embedding.weight.grad, grad(original.input.weight).t(), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(ours.embedding.bias.grad, grad(original.input.bias), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(ours.readout.weight.grad, grad(original.output.weight), rtol=1e-9, atol=1e-12)
        for k, (mine, theirs) in enumerate(zip(ours.layers, original.layers)):
            expected = theirs.grads_as(mine)
            assert set(expected) == {n for n, _ in mine.named_parameters()}  # every parameter compared
            for name, p in mine.named_parameters():
                torch.testing.assert_close(p.grad, expected[name], rtol=1e-9, atol=1e-12, msg=f"layer {k} {name}")


def test_the_input_map_starts_as_nn_linear_256_does():
    """A two-sample test of the initial values: gatedrnn's input weight and bias against
    nn.Linear(256, d)'s, drawn many times; and ``normal`` is the N(0, 1) table of before."""
    torch.manual_seed(1)
    d = 64
    ours = [ByteModel(RNNConfig(False, False, False, False, True, False, True, n_layers=1, state_size=d))
            for _ in range(4)]
    theirs = [nn.Linear(256, d) for _ in range(4)]
    w_ours = torch.cat([m.embedding.weight.detach().reshape(-1) for m in ours]).numpy()
    w_theirs = torch.cat([m.weight.detach().reshape(-1) for m in theirs]).numpy()
    b_ours = torch.cat([m.embedding.bias.detach() for m in ours]).numpy()
    b_theirs = torch.cat([m.bias.detach() for m in theirs]).numpy()
    assert stats.ks_2samp(w_ours, w_theirs).pvalue > 0.01
    assert stats.ks_2samp(b_ours, b_theirs).pvalue > 0.01
    # the test has the power to see the old N(0, 1) map, and the old map is still what normal gives
    old = ByteModel(RNNConfig(False, False, False, False, True, False, True, n_layers=1, state_size=d),
                    input_init="normal")
    w_old = old.embedding.weight.detach().reshape(-1).numpy()
    assert stats.ks_2samp(w_old, w_theirs).pvalue < 1e-6
    assert stats.kstest(w_old, "norm").pvalue > 0.01
    assert not hasattr(old.embedding, "bias") or old.embedding.bias is None
