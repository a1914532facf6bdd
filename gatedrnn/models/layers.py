"""The gated layer of DESIGN.md: one step of one layer, and its hand-written backward.
(The sequence modules over it, ``RNN`` and ``GatedRNN``, live in :mod:`gatedrnn.models.rnn`.)"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..spec.config import SWITCHES

__all__ = ["GatedLayer"]


class GatedLayer(nn.Module):
    r"""One time step of one gated layer.

    With input ``x`` (N, H_in), previous state ``s`` (N, H), :math:`\sigma` the logistic sigmoid
    and ``[a, b]`` concatenation on the feature axis::

        c  = [x, s]
        input gate:   x' = σ(W_ix c) * x ;  s' = σ(W_is c) * s ;  c = [x', s']
        n  = tanh(W_n c)                                  # the new state
        state gate:   g = σ(W_g [c, n]) ;  n = g * n + (1 - g) * s
        forget gate:  f = σ(W_f [c, n]) ;  n = f * n
        h  = n | s' | [n, s']      (use_new_state / use_old_state / both)
        residual:     h = [h, x]
        o  = W_o h
        output gate:  o = o * σ(W_og [o, h])     else  o = o * σ(o)   (swish)

    ``forward(x, s) -> (o, n)``: ``x`` (N, H_in) and ``s`` (N, H); ``o`` is (N, H), the next
    layer's input, and ``n`` (N, H) is the state for the next step. The step is pure: the caller
    owns the state and decides whether to detach it.

    Maps that read the same input are stored fused, so that one step runs few, large matrix
    products: ``input_gate`` is ``[W_ix; W_is]``; ``c_proj`` holds ``W_n`` and the ``c``-columns of
    ``W_g`` and ``W_f``; ``h_proj`` holds ``W_o`` and the ``h``-columns of ``W_og``; the columns
    that read ``n`` or ``o`` are the bias-free ``state_gate_n``, ``forget_gate_n`` and
    ``output_gate_o``. The parameter count equals one Linear per W; :meth:`design_weights`
    reassembles each W of the equations.

    One class, not a layout, a forward and a backward apart: the fused layout, the forward that
    keeps its activations (:meth:`forward_keep`) and the hand-written backward that reads them
    (:meth:`backward_step`) are one contract, which a split would pass between three classes.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_input_gate: bool = False,
        use_forget_gate: bool = False,
        use_output_gate: bool = False,
        use_state_gate: bool = False,
        use_new_state: bool = True,
        use_old_state: bool = False,
        use_residual: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        switches = dict(
            use_input_gate=use_input_gate, use_forget_gate=use_forget_gate,
            use_output_gate=use_output_gate, use_state_gate=use_state_gate,
            use_new_state=use_new_state, use_old_state=use_old_state, use_residual=use_residual,
        )
        for name, value in switches.items():
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        if not (use_new_state or use_old_state):
            raise ValueError("use_new_state and use_old_state cannot both be False")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.state_width = hidden_size
        for name, value in switches.items():
            setattr(self, name, value)

        kw = dict(device=device, dtype=dtype)
        d = hidden_size
        c_width = input_size + hidden_size
        h_width = d * (int(use_new_state) + int(use_old_state)) + (input_size if use_residual else 0)
        self.h_width = h_width
        # the column blocks of h = [n | s' | x] whose gradient the hand-written backward needs,
        # and the runs of adjacent ones
        blocks, col = {}, 0
        for name, on, width, needed in (("n", use_new_state, hidden_size, True),
                                        ("s", use_old_state, hidden_size, use_input_gate),
                                        ("x", use_residual, input_size, True)):
            if on:
                if needed:
                    blocks[name] = (col, col + width)
                col += width
        spans: list[tuple[int, int]] = []
        for a, b in blocks.values():
            if spans and spans[-1][1] == a:
                spans[-1] = (spans[-1][0], b)
            else:
                spans.append((a, b))
        self._h_blocks, self._dh_spans = blocks, spans
        # Linear maps that read the same input are fused into one matrix:
        #   c_proj:  c -> [W_n c | W_g^c c | W_f^c c]   (the c-columns of W_g and W_f, with their bias)
        #   h_proj:  h -> [W_o h | W_og^h h]            (the h-columns of W_og, with its bias)
        # and the columns of W_g, W_f, W_og that read n or o are separate bias-free maps.
        self._c_parts = ["W_n"] + (["W_g"] if use_state_gate else []) + (["W_f"] if use_forget_gate else [])
        self.input_gate = nn.Linear(c_width, c_width, **kw) if use_input_gate else None
        self.c_proj = nn.Linear(c_width, d * len(self._c_parts), **kw)
        self.state_gate_n = nn.Linear(d, d, bias=False, **kw) if use_state_gate else None
        self.forget_gate_n = nn.Linear(d, d, bias=False, **kw) if use_forget_gate else None
        self.h_proj = nn.Linear(h_width, d * (2 if use_output_gate else 1), **kw)
        self.output_gate_o = nn.Linear(d, d, bias=False, **kw) if use_output_gate else None
        self.reset_parameters()
        # the parameters as plain attributes: each step reads them some thirty times, and a
        # submodule's attribute costs two Module.__getattr__ calls. The Parameter objects stay
        # the same through .to(), load_state_dict() and the trainer's flat buffer.
        w = lambda m, name: None if m is None else getattr(m, name)  # noqa: E731
        object.__setattr__(self, "_w", (
            w(self.input_gate, "weight"), w(self.input_gate, "bias"), self.c_proj.weight, self.c_proj.bias,
            w(self.state_gate_n, "weight"), w(self.forget_gate_n, "weight"), self.h_proj.weight,
            self.h_proj.bias, w(self.output_gate_o, "weight")))

    @property
    def switches(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in SWITCHES}

    def reset_parameters(self) -> None:
        """Each W of DESIGN.md gets nn.Linear's default init for its own fan-in, also where its
        columns are split over two fused maps."""
        d, cw = self.hidden_size, self.input_size + self.hidden_size
        fan_in = {"W_n": cw, "W_g": cw + d, "W_f": cw + d}
        with torch.no_grad():
            if self.input_gate is not None:
                self.input_gate.reset_parameters()
            for k, name in enumerate(self._c_parts):
                bound = 1 / math.sqrt(fan_in[name])
                self.c_proj.weight[k * d:(k + 1) * d].uniform_(-bound, bound)
                self.c_proj.bias[k * d:(k + 1) * d].uniform_(-bound, bound)
            for m in (self.state_gate_n, self.forget_gate_n):
                if m is not None:
                    m.weight.uniform_(-1 / math.sqrt(cw + d), 1 / math.sqrt(cw + d))
            og = self.output_gate_o is not None
            for k, fan in enumerate([self.h_width] + ([d + self.h_width] if og else [])):
                bound = 1 / math.sqrt(fan)
                self.h_proj.weight[k * d:(k + 1) * d].uniform_(-bound, bound)
                self.h_proj.bias[k * d:(k + 1) * d].uniform_(-bound, bound)
            if og:
                bound = 1 / math.sqrt(d + self.h_width)
                self.output_gate_o.weight.uniform_(-bound, bound)

    def extra_repr(self) -> str:
        on = [name[4:] for name in SWITCHES if getattr(self, name)]
        return f"{self.input_size}, {self.hidden_size}, " + ", ".join(on)

    def weight_shapes(self) -> list[tuple[str, int, int]]:
        """(name, in, out) of every weight matrix of DESIGN.md's equations, one per W."""
        shapes = []
        d, i = self.hidden_size, self.input_size
        if self.use_input_gate:
            shapes += [("W_ix", i + d, i), ("W_is", i + d, d)]
        shapes.append(("W_n", i + d, d))
        if self.use_state_gate:
            shapes.append(("W_g", i + 2 * d, d))
        if self.use_forget_gate:
            shapes.append(("W_f", i + 2 * d, d))
        shapes.append(("W_o", self.h_width, d))
        if self.use_output_gate:
            shapes.append(("W_og", d + self.h_width, d))
        return shapes

    def design_weights(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The (weight, bias) of each W of DESIGN.md, reassembled from the fused maps; the
        column order of W_g, W_f is [c, n] and of W_og is [o, h], as in the equations."""
        d, i = self.hidden_size, self.input_size
        out: dict[str, tuple[Tensor, Tensor]] = {}
        if self.input_gate is not None:
            w, b = self.input_gate.weight, self.input_gate.bias
            out["W_ix"], out["W_is"] = (w[:i], b[:i]), (w[i:], b[i:])
        extra = {"W_g": self.state_gate_n, "W_f": self.forget_gate_n}
        for k, name in enumerate(self._c_parts):
            w, b = self.c_proj.weight[k * d:(k + 1) * d], self.c_proj.bias[k * d:(k + 1) * d]
            if name in extra:
                w = torch.cat((w, extra[name].weight), dim=1)
            out[name] = (w, b)
        out["W_o"] = (self.h_proj.weight[:d], self.h_proj.bias[:d])
        if self.output_gate_o is not None:
            w = torch.cat((self.output_gate_o.weight, self.h_proj.weight[d:]), dim=1)
            out["W_og"] = (w, self.h_proj.bias[d:])
        return out

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        return self._step(x, s, None)

    step = forward

    def _step(self, x: Tensor, s: Tensor, keep: dict | None) -> tuple[Tensor, Tensor]:
        """The step; with ``keep`` a dict, the activations that :meth:`backward_step` needs are
        stored in it."""
        d = self.hidden_size
        w_ig, b_ig, w_c, b_c, w_sg, w_fg, w_h, b_h, w_og = self._w
        c = torch.cat((x, s), dim=-1)  # (N, H_in + H)
        a = None
        if w_ig is not None:
            a = torch.sigmoid(F.linear(c, w_ig, b_ig))  # σ([W_ix; W_is] c)
            cg = a * c  # [x', s']
        else:
            cg = c
        pre = F.linear(cg, w_c, b_c)  # (N, H * parts): [W_n c | W_g^c c | W_f^c c]
        n0 = n1 = n = torch.tanh(pre[..., :d])  # (N, H)
        g = f = None
        k = 1
        if w_sg is not None:
            g = torch.sigmoid(torch.addmm(pre[..., k * d:(k + 1) * d], n0, w_sg.t()))
            n1 = n = torch.lerp(s, n0, g)  # g * n + (1 - g) * s
            k += 1
        if w_fg is not None:
            f = torch.sigmoid(torch.addmm(pre[..., k * d:(k + 1) * d], n1, w_fg.t()))
            n = f * n1
        parts = []
        if self.use_new_state:
            parts.append(n)
        if self.use_old_state:
            parts.append(cg[..., self.input_size:])  # s'
        if self.use_residual:
            parts.append(x)
        h = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (N, h_width)
        q = F.linear(h, w_h, b_h)  # (N, H) or (N, 2H): [W_o h | W_og^h h]
        o = z = None
        if w_og is None:
            out = F.silu(q)  # o * σ(o)
        else:
            o = q[..., :d]
            z = torch.sigmoid(torch.addmm(q[..., d:], o, w_og.t()))
            out = o * z
        if keep is not None:
            keep.update(x=x, s=s, c=c, a=a, cg=cg, n0=n0, g=g, n1=n1, f=f, h=h, q=q, o=o, z=z)
        return out, n

    def forward_keep(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor, dict]:
        """The step, also returning what :meth:`backward_step` needs. Call it under
        ``torch.no_grad()``, as :meth:`ByteModel.train_step` does."""
        keep: dict = {}
        out, n = self._step(x, s, keep)
        return out, n, keep

    def backward_step(self, keep: dict, dout: Tensor | None, need_dx: bool = True) -> Tensor | None:
        """The step's backward by hand, for training without BPTT.

        ``keep`` is from :meth:`forward_keep`; ``dout`` is the gradient of the loss with respect
        to the step's output (None: the loss does not depend on it). Writes every parameter's
        gradient into its ``.grad`` (overwriting, so no zeroing is needed; the tensors must
        exist) and returns the gradient with respect to the input ``x`` (None when it is zero or
        ``need_dx`` is False). Call it under ``torch.no_grad()``.

        The incoming state is a constant (it was detached), so no gradient with respect to it is
        computed: the products that autograd would spend on the state's columns of ``W_n``,
        ``W_o`` and the input gate are skipped. Dead ends (no new state in ``h``, no output
        gradient) get zero gradients, as autograd after ``zero_grad`` would give.
        """
        i = self.input_size
        w_ig, b_ig, w_c, b_c, w_sg, w_fg, w_h, b_h, w_og = self._w
        if dout is None:
            for p in self._w:
                if p is not None:
                    p.grad.zero_()
            return None
        h, q = keep["h"], keep["q"]
        if w_og is None:
            dq = torch.ops.aten.silu_backward(dout, q)
        else:
            o, z = keep["o"], keep["z"]
            dz = torch.ops.aten.sigmoid_backward(dout * o, z)
            torch.mm(dz.t(), o, out=w_og.grad)
            dq = torch.cat((torch.mm(dz, w_og).addcmul_(dout, z), dz), dim=1)  # [do | dz], do = dz W_og^o + dout z
        torch.mm(dq.t(), h, out=w_h.grad)
        torch.sum(dq, 0, out=b_h.grad)

        # h = [n | s' | x]: the gradient of s' is needed only through the input gate; one
        # product per run of needed columns
        dn = ds_old = dx_res = None
        for start, stop in self._dh_spans:
            dh = torch.mm(dq, w_h[:, start:stop])
            for name, (a, b) in self._h_blocks.items():
                if start <= a and b <= stop:
                    block = dh if (a, b) == (start, stop) else dh[:, a - start:b - start]
                    if name == "n":
                        dn = block
                    elif name == "s":
                        ds_old = block
                    else:
                        dx_res = block

        # the new state: n0 = tanh(.), n1 = lerp(s, n0, g), n = f * n1
        cg = keep["cg"]
        dcg = None  # gradient wrt cg = [x', s']: all columns with an input gate, else x' only
        if dn is None:
            for p in (w_c, b_c, w_sg, w_fg):
                if p is not None:
                    p.grad.zero_()
        else:
            parts = []  # the gradients of pre = [n | g | f], gathered from the last
            if w_fg is not None:
                n1, f = keep["n1"], keep["f"]
                df = torch.ops.aten.sigmoid_backward(dn * n1, f)
                torch.mm(df.t(), n1, out=w_fg.grad)
                dn = torch.mm(df, w_fg).addcmul_(dn, f)
                parts.append(df)
            if w_sg is not None:
                n0, g, s = keep["n0"], keep["g"], keep["s"]
                dg = torch.ops.aten.sigmoid_backward(dn * (n0 - s), g)
                torch.mm(dg.t(), n0, out=w_sg.grad)
                dn = torch.mm(dg, w_sg).addcmul_(dn, g)
                parts.append(dg)
            parts.append(torch.ops.aten.tanh_backward(dn, keep["n0"]))
            # one product each for the fused map's weight and input gradients; computing the
            # parts apart and joining them is faster here than writing them into slices
            dpre = parts[0] if len(parts) == 1 else torch.cat(parts[::-1], dim=1)
            torch.mm(dpre.t(), cg, out=w_c.grad)
            torch.sum(dpre, 0, out=b_c.grad)
            if w_ig is not None:
                dcg = torch.mm(dpre, w_c)
            elif need_dx:  # the residual's gradient joins in the same call
                dcg = torch.mm(dpre, w_c[:, :i]) if dx_res is None else torch.addmm(dx_res, dpre, w_c[:, :i])
                dx_res = None
        if ds_old is not None:
            if dcg is None:
                dcg = torch.cat((torch.zeros_like(keep["x"]), ds_old), dim=1)
            else:
                dcg[:, i:] += ds_old

        dx = None
        if w_ig is not None:
            if dcg is None:
                w_ig.grad.zero_()
                b_ig.grad.zero_()
            else:
                a, c = keep["a"], keep["c"]
                da = torch.ops.aten.sigmoid_backward(dcg * c, a)
                torch.mm(da.t(), c, out=w_ig.grad)
                torch.sum(da, 0, out=b_ig.grad)
                if need_dx:
                    dx = torch.mm(da, w_ig[:, :i]).addcmul_(dcg[:, :i], a[:, :i])
        else:
            dx = dcg
        if not need_dx:
            return None
        if dx_res is not None:
            dx = dx_res if dx is None else dx.add_(dx_res)
        return dx
