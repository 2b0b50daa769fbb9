"""Attention rules: scaled dot-product attention, with grouped-query attention and masks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from graphmerge.layout import Prod
from graphmerge.rules.elementwise import broadcast

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = ["sdpa"]


def sdpa(cx: RuleContext):
    """softmax(q kᵀ) v over (..., heads, tokens, dim): q and k contract over their head dim, keys
    and values share tokens, batch and head axes broadcast (a mask broadcasts against the scores).

    With fewer key/value heads than query heads (`enable_gqa`), each key/value head serves a
    block of query heads. Variants that also return logsumexp get frozen auxiliary outputs.
    """
    q, k, v = cx.axes(0), cx.axes(1), cx.axes(2)
    qs, ks = cx.shape(0), cx.shape(1)
    if len(qs) >= 3 and len(ks) >= 3 and qs[-3] != ks[-3] and ks[-3] > 1 and qs[-3] % ks[-3] == 0:
        rep = cx.new(qs[-3] // ks[-3], "kv_rep")
        k = k[:-3] + (Prod((k[-3], rep)),) + k[-2:]
        v = v[:-3] + (Prod((v[-3], rep)),) + v[-2:]
    cx.contract(0, -1, 1, -1)
    cx.unify(k[-2], v[-2], "attention keys/values")
    batch_shape = tuple(cx.out_shape()[:-2])
    batch = broadcast(cx, [q[:-2], k[:-2], v[:-2]], batch_shape)
    mask = cx.arg("attn_mask")
    if isinstance(mask, fx.Node):
        full = batch + (q[-2], k[-2])
        broadcast(cx, [full, cx.axes_of(mask)], tuple(batch_shape) + (qs[-2], ks[-2]))
    out = batch + (q[-2], v[-1])
    if len(cx.out_shapes()) > 1:
        return [out] + [
            tuple(cx.new(s, "aux", frozen="attention auxiliary output") for s in shp)
            for shp in cx.out_shapes()[1:]
        ]
    return out
