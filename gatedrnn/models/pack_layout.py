"""Where each pack member's weights sit in a pack's stacked superset (DESIGN.md, "Packs"): the
union of a chunk's switches and the places of each member's maps in it (:class:`_LayerPlan`),
and the bookkeeping that moves a member's solo weights, flat buffers and Adam moments in and out
of the stack (:class:`PackMembers`, a part of :class:`gatedrnn.models.packed.PackedModel`, which
keeps the batched step). Kept apart: the layout is what packs and checkpoints agree on, the step
is arithmetic.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..spec.config import SWITCHES, RNNConfig
from .model import ByteModel

__all__ = ["PackMembers", "PackError"]


class PackError(ValueError):
    """Configurations that cannot share a pack."""


def _union(configs: list[RNNConfig]) -> dict[str, bool]:
    return {name: any(getattr(c, name) for c in configs) for name in SWITCHES}


class _LayerPlan:
    """The superset layer of a pack and where each member's weights sit in it."""

    def __init__(self, union: dict[str, bool], d: int) -> None:
        i = d  # every layer's input is d wide (the embedding, or the layer below)
        self.d, self.i = d, i
        self.u = union
        self.c_parts = ["n"] + (["g"] if union["use_state_gate"] else []) + (["f"] if union["use_forget_gate"] else [])
        # h = [n | s' | x] with the union's blocks
        self.h_blocks: dict[str, tuple[int, int]] = {}
        col = 0
        for name, key, width in (("n", "use_new_state", d), ("s", "use_old_state", d), ("x", "use_residual", i)):
            if union[key]:
                self.h_blocks[name] = (col, col + width)
                col += width
        self.h_width = col
        cw = i + d
        shapes = {}
        if union["use_input_gate"]:
            shapes["ig_w"], shapes["ig_b"] = (cw, cw), (cw,)
        shapes["c_w"], shapes["c_b"] = (len(self.c_parts) * d, cw), (len(self.c_parts) * d,)
        if union["use_state_gate"]:
            shapes["sg_w"] = (d, d)
        if union["use_forget_gate"]:
            shapes["fg_w"] = (d, d)
        rows = 2 if union["use_output_gate"] else 1
        shapes["h_w"], shapes["h_b"] = (rows * d, self.h_width), (rows * d,)
        if union["use_output_gate"]:
            shapes["og_w"] = (d, d)
        self.shapes = shapes

    def member_map(self, sw: dict[str, bool]) -> dict[str, tuple[str, Tensor | None, Tensor | None]]:
        """For a member with switches ``sw``: its GatedLayer's parameter name -> (superset name,
        rows, columns) where ``rows``/``columns`` index the superset parameter (None: all)."""
        d = self.d
        out: dict[str, tuple[str, Tensor | None, Tensor | None]] = {}
        if sw["use_input_gate"]:
            out["input_gate.weight"] = ("ig_w", None, None)
            out["input_gate.bias"] = ("ig_b", None, None)
        parts = ["n"] + (["g"] if sw["use_state_gate"] else []) + (["f"] if sw["use_forget_gate"] else [])
        rows = torch.cat([torch.arange(self.c_parts.index(p) * d, (self.c_parts.index(p) + 1) * d) for p in parts])
        out["c_proj.weight"] = ("c_w", rows, None)
        out["c_proj.bias"] = ("c_b", rows, None)
        if sw["use_state_gate"]:
            out["state_gate_n.weight"] = ("sg_w", None, None)
        if sw["use_forget_gate"]:
            out["forget_gate_n.weight"] = ("fg_w", None, None)
        cols = [torch.arange(*self.h_blocks[name]) for name, key in
                (("n", "use_new_state"), ("s", "use_old_state"), ("x", "use_residual")) if sw[key]]
        hrows = torch.arange((2 if sw["use_output_gate"] else 1) * d)
        out["h_proj.weight"] = ("h_w", hrows, torch.cat(cols))
        out["h_proj.bias"] = ("h_b", hrows, None)
        if sw["use_output_gate"]:
            out["output_gate_o.weight"] = ("og_w", None, None)
        return out


class _Chunk(NamedTuple):
    a: int
    b: int
    plan: _LayerPlan
    params: dict[str, Tensor]
    grads: dict[str, Tensor]
    masks: dict[str, Tensor]
    fmasks: dict[str, Tensor]
    offsets: Tensor


class PackMembers:
    """Member bookkeeping for :class:`gatedrnn.models.packed.PackedModel` (which supplies
    ``configs``, ``n_layers``, ``input_bias``, ``input_init``, ``_member``, ``_maps``,
    ``_views`` and ``_params``)."""

    # ------------------------------------------------------------------ members
    def _solo_names(self, k: int) -> list[tuple[str, str, Tensor | None, Tensor | None]]:
        """(solo parameter name, superset name, rows, columns) for member ``k``, in the order of
        its solo ByteModel's parameters."""
        out = [("embedding.weight", "emb", None, None)]
        if self.input_bias:
            out.append(("embedding.bias", "emb_b", None, None))
        for layer in range(self.n_layers):
            for name, (sup, rows, cols) in self._maps[k].items():
                out.append((f"layers.{layer}.{name}", f"{layer}.{sup}", rows, cols))
        out += [("readout.weight", "out_w", None, None), ("readout.bias", "out_b", None, None)]
        return out

    def solo_order(self, k: int) -> list[str]:
        """Member ``k``'s parameter names in its solo model's order (its flat buffer's order)."""
        model = ByteModel(self.configs[k], device="meta", input_init=self.input_init)
        return [name for name, p in model.named_parameters() if p.requires_grad]

    def _get(self, table: list[dict[str, Tensor]], k: int, sup: str, rows, cols) -> Tensor:
        ci, j = self._member[k]
        t = table[ci][sup][j]
        if rows is not None:
            t = t.index_select(0, rows.to(t.device))
        if cols is not None:
            t = t.index_select(1, cols.to(t.device))
        return t

    def _put(self, table: list[dict[str, Tensor]], k: int, sup: str, rows, cols, value: Tensor) -> None:
        ci, j = self._member[k]
        t = table[ci][sup][j]
        value = value.to(device=t.device, dtype=t.dtype)
        if rows is None and cols is None:
            t.copy_(value)
        elif cols is None:
            t.index_copy_(0, rows.to(t.device), value)
        else:
            r = torch.arange(t.size(0)) if rows is None else rows
            t[r.to(t.device)[:, None], cols.to(t.device)[None, :]] = value

    @torch.no_grad()
    def load_member(self, k: int, state: dict[str, Tensor]) -> None:
        """Put a solo ByteModel state dict into member ``k`` (its unused places stay zero)."""
        for solo, sup, rows, cols in self._solo_names(k):
            self._put(self._params(), k, sup, rows, cols, state[solo])

    @torch.no_grad()
    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member ``k``'s weights as its solo ByteModel's state dict (CPU tensors)."""
        params = self._params()
        return {solo: self._get(params, k, sup, rows, cols).detach().cpu().clone()
                for solo, sup, rows, cols in self._solo_names(k)}

    def member_flat(self, k: int, stacked_flat: Tensor) -> Tensor:
        """Member ``k``'s slice of a tensor laid out like ``flat`` (an Adam moment), in its solo
        flat buffer's layout."""
        table = self._views(stacked_flat)
        by_name = {solo: (sup, rows, cols) for solo, sup, rows, cols in self._solo_names(k)}
        return torch.cat([self._get(table, k, *by_name[n]).reshape(-1).cpu() for n in self.solo_order(k)])

    def load_member_flat(self, k: int, stacked_flat: Tensor, solo_flat: Tensor) -> None:
        """The inverse of :meth:`member_flat`: write a solo-layout flat tensor into member ``k``."""
        table = self._views(stacked_flat)
        by_name = {solo: (sup, rows, cols) for solo, sup, rows, cols in self._solo_names(k)}
        shapes = dict(ByteModel(self.configs[k], device="meta", input_init=self.input_init).named_parameters())
        offset = 0
        for name in self.solo_order(k):
            shape = shapes[name].shape
            n = math.prod(shape)
            self._put(table, k, *by_name[name], solo_flat[offset:offset + n].view(shape))
            offset += n
        if offset != solo_flat.numel():
            raise PackError(f"a flat buffer of {solo_flat.numel()} values for member {k}, expected {offset}")

