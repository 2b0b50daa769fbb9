"""Contraction rules: linear, matmul and its batched / fused-add forms, einsum, convolution, and
the mixture-of-experts grouped matmul.

A contraction unifies the two summed axes and records them (`cx.contract`): the weight axis
becomes a consumer of its group, the activation axis a candidate capture site. The leading
operands are read by position (every overload puts them first), everything else by schema name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphmerge.layout import UNIT, Layout, Prod
from graphmerge.rules.elementwise import broadcast

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = [
    "addmm",
    "conv",
    "conv_transpose",
    "convolution",
    "einsum",
    "grouped_mm",
    "linear",
    "matmul",
]


def linear(cx: RuleContext):
    """y = x Wᵀ + b: x's last axis is summed against W's input axis; y's last axis is W's rows."""
    x, w = cx.axes(0), cx.axes(1)
    cx.contract(0, -1, 1, 1)
    if cx.is_tensor("bias"):
        cx.unify(cx.axes("bias")[0], w[0], "linear bias")
    return tuple(x[:-1]) + (w[0],)


def _matmul_core(cx: RuleContext, a: tuple, b: tuple, ia: int, ib: int, out_shape) -> tuple:
    """torch.matmul semantics for operands `ia`, `ib` (1-d operands, broadcast batch axes)."""
    a1, b1 = len(a) == 1, len(b) == 1
    a2 = (UNIT,) + a if a1 else a
    b2 = b + (UNIT,) if b1 else b
    cx.contract(ia, -1, ib, 0 if b1 else -2)
    batch_rank = max(len(a2), len(b2)) - 2
    batch_shape = tuple(out_shape[:batch_rank])
    batch = broadcast(cx, [a2[:-2], b2[:-2]], batch_shape) if batch_rank else ()
    return batch + ((a2[-2],) if not a1 else ()) + ((b2[-1],) if not b1 else ())


def matmul(cx: RuleContext):
    """matmul, mm, bmm, dot, mv, vdot: the two leading operands."""
    return _matmul_core(cx, cx.axes(0), cx.axes(1), 0, 1, cx.out_shape())


def addmm(cx: RuleContext):
    """addmm, baddbmm, addmv, addbmm: operand 0 is added to the product of operands 1 and 2."""
    prod = _matmul_core(cx, cx.axes(1), cx.axes(2), 1, 2, cx.out_shape())
    return broadcast(cx, [prod, cx.axes(0)], cx.out_shape())


def einsum(cx: RuleContext):
    """An explicit or implicit equation (`...` spelled out as broadcast letters); letters unify,
    summed ones contract."""
    eq, operands = cx.arg("equation"), cx.arg("tensors")
    if not isinstance(eq, str) or operands is None:
        return None  # the sublist form: unsupported, the caller freezes
    eq = eq.replace(" ", "")
    if "..." in eq:
        eq = _expand_ellipsis(eq, [len(cx.shape_of(t)) for t in operands])
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        return None
    if "->" not in eq:
        letters = sorted({c for t in terms for c in t})
        rhs = "".join(c for c in letters if sum(t.count(c) for t in terms) == 1)
    by_letter: dict[str, Layout] = {}
    for i, (term, node) in enumerate(zip(terms, operands)):
        lays = cx.axes_of(node)
        for j, c in enumerate(term):
            if cx.store.size(lays[j]) == 1:
                continue
            if c not in rhs:
                cx.contract_node(node, None, j)  # inside the operand list: its own output
            if c in by_letter:
                cx.unify(by_letter[c], lays[j], "einsum")
            else:
                by_letter[c] = lays[j]
    return tuple(by_letter.get(c, UNIT) for c in rhs)


def _expand_ellipsis(eq: str, ranks: list[int]) -> str:
    """The equation with each `...` spelled out in letters it does not use: the broadcast
    dimensions, right-aligned across operands (as torch.einsum reads them)."""
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in eq]
    widths = [r - len(t.replace("...", "")) if "..." in t else 0 for t, r in zip(terms, ranks)]
    letters = "".join(spare[: max(widths, default=0)])
    terms = [
        t.replace("...", letters[len(letters) - w :] if w else "") for t, w in zip(terms, widths)
    ]
    if arrow:
        return ",".join(terms) + "->" + rhs.replace("...", letters)
    single = sorted(c for c in set("".join(terms)) if "".join(terms).count(c) == 1)
    return ",".join(terms) + "->" + letters + "".join(c for c in single if c not in letters)


def _conv(cx: RuleContext, transposed: bool):
    """Convolution of input (N, C, *spatial) with weight (out, in / groups, *kernel)."""
    groups = int(cx.arg("groups", default=1))
    x, w = cx.axes(0), cx.axes(1)
    nspatial = len(cx.shape(1)) - 2
    lead = len(x) - nspatial - 1
    w_in, w_out = (0, 1) if transposed else (1, 0)
    for d in range(lead + 1, len(x)):
        cx.freeze(x[d], f"spatial axis of {cx.op_name()} ({cx.where()})")
    for d in range(2, len(w)):
        cx.freeze(w[d], "convolution kernel axis")
    if groups == 1:
        cx.contract(0, lead, 1, w_in)
        out_ch = w[w_out]
    else:
        out_ch = _grouped_channels(cx, x, w, lead, transposed, groups)
    if cx.is_tensor("bias"):
        cx.unify(cx.axes("bias")[0], out_ch, "conv bias")
    spatial = tuple(
        cx.new(s, "spatial", frozen=f"spatial axis of {cx.op_name()}")
        for s in cx.out_shape()[lead + 1 :]
    )
    return tuple(x[:lead]) + (out_ch,) + spatial


def _grouped_channels(cx: RuleContext, x, w, lead: int, transposed: bool, groups: int):
    """Channels of a grouped convolution are (group, channel in group); returns the output's."""
    w_in, w_out = (0, 1) if transposed else (1, 0)
    g = cx.new(groups, "conv_groups")
    cin_g = w[w_in] if not transposed else cx.new(cx.shape(1)[0] // groups, "conv_in")
    if transposed:
        cx.unify(w[w_in], Prod((g, cin_g)), "grouped transposed conv")
    cx.unify(x[lead], Prod((g, cin_g)), "grouped conv input")
    cx.contract_node(cx.args[0], 0, lead)
    cx.contract_node(cx.args[1], 1, w_in)
    if transposed:
        return Prod((g, w[w_out]))
    out_ch = Prod((g, cx.new(cx.out_shape()[lead] // groups, "conv_out")))
    cx.unify(w[w_out], out_ch, "grouped conv output")
    return out_ch


def conv(cx: RuleContext):
    """conv1d / conv2d / conv3d."""
    return _conv(cx, False)


def conv_transpose(cx: RuleContext):
    """conv_transpose1d / 2d / 3d: the weight is (in, out / groups, *kernel)."""
    return _conv(cx, True)


def convolution(cx: RuleContext):
    """convolution / _convolution: `transposed` says which of the two."""
    return _conv(cx, bool(cx.arg("transposed")))


def grouped_mm(cx: RuleContext):
    """x (S, K) against per-expert weights w (E, K, N), experts chosen by offsets: out (S, N).

    All experts share one permutation of N (sound, though coarser than per-expert).
    """
    if len(cx.shape(0)) != 2 or len(cx.shape(1)) != 3:
        return None
    x, w = cx.axes(0), cx.axes(1)
    cx.contract(0, -1, 1, 1)
    cx.freeze(w[0], f"expert axis selected by offsets ({cx.where()})")
    return (x[0], w[2])
