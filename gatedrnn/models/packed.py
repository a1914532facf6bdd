"""Many configurations of one group as one batched step (DESIGN.md, "Packs").

A pack is K gated configurations with the same ``n_layers`` and ``state_size`` and any mix of
the seven switches. :class:`PackedModel` holds them as one *superset* model: every parameter
of the union of the members' switches, stacked on a leading member axis (K, ...), with each
member's weights at the places its own layer has them and zeros elsewhere. A step runs one
batched matrix product per fused map of the layer (``torch.bmm`` over the member axis) and
one elementwise operation per activation for all members; where the members disagree on a
switch, a per-member mask selects what each member's own layer computes:

* a missing input, state or forget gate or output gate: ``torch.where`` picks the ungated
  value (so the member computes exactly ``cg = c``, ``n1 = n0``, ``n = n1`` or ``swish(o)``);
* a missing block of ``h = [n | s' | x]``: the block is multiplied by 0, so its columns of
  ``W_o`` meet zeros, as if absent.

A member's unused weights start at zero and get exactly zero gradients, so Adam (elementwise)
leaves them at zero, and each member trains exactly its own model: same initial weights as its
solo run (:meth:`PackedModel.load_member`), same procedure, equal to its solo run to float
rounding (tests/test_packed.py: all 96 switch combinations at 1 and 2 layers). The backward is
the hand-written one of :class:`gatedrnn.models.layers.GatedLayer`, batched: the state is detached,
so no gradient with respect to it is computed.

Why stacked weights with masks: the default grid's groups hold up to 96 distinct switch
combinations, so grouping by identical shapes leaves groups of one (chunks of one member:
2.2 times slower on the CPU than six at state 32). ``torch.func.vmap`` needs this superset too,
and would take its backward from autograd, which the hand-written one beats; not built.

On the CPU a pack runs in chunks of a few members (:func:`gatedrnn.spec.packing.pack_chunk`), each
chunk stacked over the union of its own members' switches (members are kept sorted by their
switches, so a chunk's members mostly agree and compute few gates they do not have); on a GPU
the whole pack is one chunk, the fewest launches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..spec.config import SWITCHES, RNNConfig
from .model import VOCAB
from .pack_layout import PackError, PackMembers, _Chunk, _LayerPlan, _union
from ..spec.packing import pack_group

__all__ = ["PackedModel", "pack_group", "PackError"]


def _join(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


class PackedModel(PackMembers):
    """K byte models of gated layers, one group, as one stacked superset (see the module).

    ``params`` maps each superset parameter's name to a (K, ...) tensor; all of them, and their
    gradients (``grads``), are views into the flat buffers ``flat`` and ``flat_grad``, so one
    fused Adam step updates every member. ``train_step`` writes every gradient (overwriting).
    """

    def __init__(self, configs: list[RNNConfig], device=None, dtype=torch.float32, chunk: int | None = None,
                 input_init: str = "linear") -> None:
        """``input_init``: the input map of members without their own key (pack_group keeps theirs equal)."""
        if not configs:
            raise PackError("a pack needs at least one configuration")
        groups = {pack_group(c) for c in configs}
        if None in groups or len(groups) != 1:
            raise PackError("a pack holds gated configurations without truncated BPTT, all with the same n_layers, "
                            f"state_size and input_init; got groups {sorted(map(str, groups))}")
        self.configs = list(configs)
        self.k = len(configs)
        self.n_layers, self.d = configs[0].n_layers, configs[0].state_size
        self.input_init = configs[0].input_init or input_init
        self.input_bias = self.input_init == "linear"  # LinearInput's bias (gatedrnn.models.model)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.union = _union(self.configs)  # of the whole pack
        self.chunk = k = self.k if chunk is None else max(1, min(int(chunk), self.k))
        d = self.d
        # each chunk of members is a stacked superset of its own union: its own layout
        layouts = []
        for a in range(0, self.k, k):
            b = min(a + k, self.k)
            plan = _LayerPlan(_union(self.configs[a:b]), d)
            shapes: dict[str, tuple[int, ...]] = {"emb": (VOCAB, d)}
            if self.input_bias:
                shapes["emb_b"] = (d,)
            for layer in range(self.n_layers):
                shapes.update({f"{layer}.{name}": sh for name, sh in plan.shapes.items()})
            shapes["out_w"], shapes["out_b"] = (VOCAB, d), (VOCAB,)
            layouts.append((a, b, plan, shapes))
        total = sum((b - a) * math.prod(sh) for a, b, _, shapes in layouts for sh in shapes.values())
        self.flat = torch.nn.Parameter(torch.zeros(total, device=self.device, dtype=dtype))
        self.flat.grad = torch.zeros_like(self.flat)
        self._layouts = [(a, b, shapes) for a, b, _, shapes in layouts]
        self._chunks: list[_Chunk] = []
        self._member: list[tuple[int, int]] = []  # member -> (chunk, index in the chunk)
        self._maps = []
        params, grads = self._views(self.flat.data), self._views(self.flat.grad)
        for ci, (a, b, plan, _) in enumerate(layouts):
            masks = {}
            for name in SWITCHES:  # (C, 1, 1), True where the member has the switch
                values = [getattr(c, name) for c in self.configs[a:b]]
                if any(values) and not all(values):
                    masks[name] = torch.tensor(values, device=self.device).view(b - a, 1, 1)
            self._chunks.append(_Chunk(a, b, plan, params[ci], grads[ci], masks,
                                       {n: m_.to(dtype) for n, m_ in masks.items()},
                                       (torch.arange(b - a, device=self.device) * VOCAB).view(b - a, 1)))
            for j, config in enumerate(self.configs[a:b]):
                self._member.append((ci, j))
                self._maps.append(plan.member_map(config.switches))
        self._inv = {}

    def _views(self, flat: Tensor) -> list[dict[str, Tensor]]:
        """Each chunk's parameters (or moments, or gradients) as (C, ...) views of ``flat``."""
        out, offset = [], 0
        for a, b, shapes in self._layouts:
            views = {}
            for name, sh in shapes.items():
                n = (b - a) * math.prod(sh)
                views[name] = flat[offset:offset + n].view(b - a, *sh)
                offset += n
            out.append(views)
        return out

    def _params(self) -> list[dict[str, Tensor]]:
        return [ch.params for ch in self._chunks]

    def num_parameters(self) -> int:
        return self.flat.numel()

    # ------------------------------------------------------------------ the step
    def initial_state(self, batch: int) -> list[Tensor]:
        return [self.flat.new_zeros(self.k, batch, self.d) for _ in range(self.n_layers)]

    def _embed(self, ch: "_Chunk", x: Tensor) -> tuple[Tensor, Tensor]:
        """Rows of each member's embedding: x (N,) shared or (C, N) -> (C, N, d), and the flat
        row indices (C * N,) into the chunk's (C * 256, d) stacked table."""
        c = ch.b - ch.a
        idx = (x + ch.offsets).reshape(-1)
        emb = ch.params["emb"].reshape(c * VOCAB, self.d)
        rows = F.embedding(idx, emb).view(c, -1, self.d)
        return (rows + ch.params["emb_b"].unsqueeze(1) if self.input_bias else rows), idx

    def _layer(self, ch: "_Chunk", layer: int, x: Tensor, s: Tensor, keep: dict | None) -> tuple[Tensor, Tensor]:
        """One step of layer ``layer`` for a chunk's members: x, s (C, N, d) -> (out, n) (C, N, d)."""
        p, plan, m, fm, d = ch.params, ch.plan, ch.masks, ch.fmasks, self.d
        pre_ = f"{layer}."
        c = torch.cat((x, s), dim=-1)  # (K, N, 2d)
        a = None
        if plan.u["use_input_gate"]:
            a = torch.sigmoid(torch.baddbmm(p[pre_ + "ig_b"].unsqueeze(1), c, p[pre_ + "ig_w"].transpose(1, 2)))
            cg = a * c
            if "use_input_gate" in m:
                cg = torch.where(m["use_input_gate"], cg, c)
        else:
            cg = c
        pre = torch.baddbmm(p[pre_ + "c_b"].unsqueeze(1), cg, p[pre_ + "c_w"].transpose(1, 2))  # (K, N, parts*d)
        n0 = n1 = n = torch.tanh(pre[..., :d])
        g = f = None
        j = 1
        if plan.u["use_state_gate"]:
            g = torch.sigmoid(torch.baddbmm(pre[..., j * d:(j + 1) * d], n0, p[pre_ + "sg_w"].transpose(1, 2)))
            n1 = n = torch.lerp(s, n0, g)
            if "use_state_gate" in m:
                n1 = n = torch.where(m["use_state_gate"], n1, n0)
            j += 1
        if plan.u["use_forget_gate"]:
            f = torch.sigmoid(torch.baddbmm(pre[..., j * d:(j + 1) * d], n1, p[pre_ + "fg_w"].transpose(1, 2)))
            n = f * n1
            if "use_forget_gate" in m:
                n = torch.where(m["use_forget_gate"], n, n1)
        parts = []
        for name, key, value in (("n", "use_new_state", n), ("s", "use_old_state", None), ("x", "use_residual", x)):
            if name in plan.h_blocks:
                if value is None:
                    value = cg[..., plan.i:]  # s'
                parts.append(value * fm[key] if key in fm else value)
        h = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (K, N, h_width)
        q = torch.baddbmm(p[pre_ + "h_b"].unsqueeze(1), h, p[pre_ + "h_w"].transpose(1, 2))
        o = z = None
        if plan.u["use_output_gate"]:
            o = q[..., :d]
            z = torch.sigmoid(torch.baddbmm(q[..., d:], o, p[pre_ + "og_w"].transpose(1, 2)))
            out = o * z
            if "use_output_gate" in m:
                out = torch.where(m["use_output_gate"], out, F.silu(o))
        else:
            out = F.silu(q)
        if keep is not None:
            keep.update(x=x, s=s, c=c, a=a, cg=cg, n0=n0, g=g, n1=n1, f=f, h=h, q=q, o=o, z=z)
        return out, n

    def step(self, x: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Forward only: bytes x (N,) or (K, N) -> logits (K, N, 256) and the new states."""
        logits, new = [], [[] for _ in states]
        for ch in self._chunks:
            h, _ = self._embed(ch, x if x.dim() == 1 else x[ch.a:ch.b])
            for layer, s in enumerate(states):
                h, s = self._layer(ch, layer, h, s[ch.a:ch.b], None)
                new[layer].append(s)
            logits.append(torch.baddbmm(ch.params["out_b"].unsqueeze(1), h, ch.params["out_w"].transpose(1, 2)))
        return _join(logits), [_join(parts) for parts in new]

    def _inv_n(self, n: int, like: Tensor) -> Tensor:
        key = (n, like.device, like.dtype)
        if key not in self._inv:
            self._inv[key] = torch.tensor(1.0 / n, dtype=like.dtype, device=like.device)
        return self._inv[key]

    @torch.no_grad()
    def train_step(self, x: Tensor, y: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One step of training without BPTT for every member, by hand: returns each member's
        mean cross-entropy (K,) and the new states, and writes every gradient (overwriting).
        ``x``, ``y``: bytes (N,) read by every member, or (K, N) one row per member."""
        losses, new = [], [[] for _ in states]
        for ch in self._chunks:
            rows = slice(ch.a, ch.b)
            loss, states_c = self._train_chunk(ch, x if x.dim() == 1 else x[rows], y if y.dim() == 1 else y[rows],
                                               [s[rows] for s in states])
            losses.append(loss)
            for layer, s in enumerate(states_c):
                new[layer].append(s)
        return _join(losses), [_join(parts) for parts in new]

    def _train_chunk(self, ch: "_Chunk", x: Tensor, y: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        k, d = ch.b - ch.a, self.d
        h, idx = self._embed(ch, x)
        keeps, new = [], []
        for layer, s in enumerate(states):
            keep: dict = {}
            h, s = self._layer(ch, layer, h, s, keep)
            keeps.append(keep)
            new.append(s)
        w = ch.params["out_w"]
        logits = torch.baddbmm(ch.params["out_b"].unsqueeze(1), h, w.transpose(1, 2))  # (C, N, 256)
        n = logits.size(1)
        logp = torch.log_softmax(logits, dim=-1).view(-1, VOCAB)  # (C*N, 256)
        target = y.expand(k, n).reshape(-1) if y.dim() == 1 else y.reshape(-1)
        aten = torch.ops.aten
        losses, total = aten.nll_loss_forward(logp, target, None, 0, -100)  # 0: per element
        loss = losses.view(k, n).mean(1)  # (C,)
        dnll = aten.nll_loss_backward(self._inv_n(n, logp), logp, target, None, 2, -100, total)  # 2: sum, x 1/N
        dlogits = aten._log_softmax_backward_data(dnll, logp, 1, logp.dtype).view(k, n, VOCAB)
        g = ch.grads
        torch.bmm(dlogits.transpose(1, 2), h, out=g["out_w"])
        torch.sum(dlogits, 1, out=g["out_b"])
        dx = torch.bmm(dlogits, w)
        for layer in reversed(range(self.n_layers)):
            dx = self._backward_layer(ch, layer, keeps[layer], dx)
        if self.input_bias:
            torch.sum(dx, 1, out=g["emb_b"])
        grad = g["emb"].view(k * VOCAB, d)
        if grad.is_cuda:  # the deterministic kernel, not atomics
            grad.copy_(aten.embedding_dense_backward(dx.reshape(-1, d), idx, k * VOCAB, -1, False))
        else:
            grad.zero_().index_add_(0, idx, dx.reshape(-1, d))
        return loss, new

    def _backward_layer(self, ch: "_Chunk", layer: int, keep: dict, dout: Tensor) -> Tensor:
        """The batched hand-written backward of one layer (GatedLayer.backward_step with masks):
        writes the layer's gradients, returns the gradient with respect to its input."""
        p, g, plan, m, fm, i = ch.params, ch.grads, ch.plan, ch.masks, ch.fmasks, ch.plan.i
        pre_ = f"{layer}."
        h, q = keep["h"], keep["q"]
        if plan.u["use_output_gate"]:
            o, z = keep["o"], keep["z"]
            dz = torch.ops.aten.sigmoid_backward(dout * o, z)
            if "use_output_gate" in m:
                dz = dz * fm["use_output_gate"]
            w_og = p[pre_ + "og_w"]
            torch.bmm(dz.transpose(1, 2), o, out=g[pre_ + "og_w"])
            do = torch.bmm(dz, w_og).addcmul_(dout, z)
            if "use_output_gate" in m:
                do = torch.where(m["use_output_gate"], do, torch.ops.aten.silu_backward(dout, o))
            dq = torch.cat((do, dz), dim=-1)
        else:
            dq = torch.ops.aten.silu_backward(dout, q)
        w_h = p[pre_ + "h_w"]
        torch.bmm(dq.transpose(1, 2), h, out=g[pre_ + "h_w"])
        torch.sum(dq, 1, out=g[pre_ + "h_b"])
        dh = torch.bmm(dq, w_h)  # (K, N, h_width)
        blocks = {}
        for name, key in (("n", "use_new_state"), ("s", "use_old_state"), ("x", "use_residual")):
            if name in plan.h_blocks:
                a_, b_ = plan.h_blocks[name]
                block = dh[..., a_:b_]
                blocks[name] = block * fm[key] if key in fm else block
        dn, ds_old, dx_res = blocks.get("n"), blocks.get("s"), blocks.get("x")
        cg = keep["cg"]
        if dn is None:  # no member reads the new state: its maps get zero gradients
            for name in ("c_w", "c_b", "sg_w", "fg_w"):
                if pre_ + name in g:
                    g[pre_ + name].zero_()
            dcg = None
        else:
            parts = []  # the gradients of pre = [n | g | f], gathered from the last
            for key, name, gate, read, scale in (
                    ("use_forget_gate", "fg_w", keep["f"], keep["n1"], keep["n1"]),  # n = f * n1
                    ("use_state_gate", "sg_w", keep["g"], keep["n0"], None)):  # n1 = lerp(s, n0, g)
                if not plan.u[key]:
                    continue
                # the gate's pre-activation gradient; the state gate's output moves by n0 - s
                dgate = torch.ops.aten.sigmoid_backward(dn * (scale if scale is not None else read - keep["s"]), gate)
                if key in m:
                    dgate = dgate * fm[key]
                torch.bmm(dgate.transpose(1, 2), read, out=g[pre_ + name])
                through = torch.bmm(dgate, p[pre_ + name]).addcmul_(dn, gate)
                dn = torch.where(m[key], through, dn) if key in m else through
                parts.append(dgate)
            parts.append(torch.ops.aten.tanh_backward(dn, keep["n0"]))
            dpre = parts[0] if len(parts) == 1 else torch.cat(parts[::-1], dim=-1)  # [n | g | f]
            w_c = p[pre_ + "c_w"]
            torch.bmm(dpre.transpose(1, 2), cg, out=g[pre_ + "c_w"])
            torch.sum(dpre, 1, out=g[pre_ + "c_b"])
            if plan.u["use_input_gate"]:
                dcg = torch.bmm(dpre, w_c)
            else:
                dcg = torch.bmm(dpre, w_c[..., :i]) if dx_res is None else torch.baddbmm(dx_res, dpre, w_c[..., :i])
                dx_res = None
        if ds_old is not None and plan.u["use_input_gate"]:  # s' matters only through the input gate
            if dcg is None:
                dcg = torch.cat((torch.zeros_like(keep["x"]), ds_old), dim=-1)
            else:
                dcg[..., i:] += ds_old
        if plan.u["use_input_gate"]:
            if dcg is None:
                g[pre_ + "ig_w"].zero_()
                g[pre_ + "ig_b"].zero_()
                dx = None
            else:
                a, c = keep["a"], keep["c"]
                da = torch.ops.aten.sigmoid_backward(dcg * c, a)
                if "use_input_gate" in m:
                    da = da * fm["use_input_gate"]
                torch.bmm(da.transpose(1, 2), c, out=g[pre_ + "ig_w"])
                torch.sum(da, 1, out=g[pre_ + "ig_b"])
                dx = torch.bmm(da, p[pre_ + "ig_w"][..., :i]).addcmul_(dcg[..., :i], a[..., :i])
                if "use_input_gate" in m:
                    dx = torch.where(m["use_input_gate"], dx, dcg[..., :i])
        else:
            dx = dcg
        if dx_res is not None:
            dx = dx_res if dx is None else dx.add_(dx_res)
        if dx is None:
            dx = torch.zeros_like(keep["x"])
        return dx

    def train(self, mode: bool = True) -> "PackedModel":
        """For :meth:`gatedrnn.training.trainer.Run.train_steps`: a pack has no train/eval difference."""
        return self
