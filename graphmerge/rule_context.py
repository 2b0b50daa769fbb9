"""What a rule sees: the `RuleContext` of one fx node, and node helpers shared by the passes.

A rule (graphmerge/rules.py) receives a `RuleContext`: the node, its normalized arguments, the
layouts of its tensor arguments (stacked layouts collapsed unless the rule is structural), and
the operations it may perform on the analysis state (unify, freeze, contract, new spaces).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

import torch
from torch import fx

from graphmerge.layout import Alt, Blk, Layout, SpaceStore
from graphmerge.program import AXES, PARAM_AXES, Program, Site

__all__ = [
    "NoLayout",
    "RuleContext",
    "is_tensor",
    "module_path",
    "node_values",
    "op_name",
    "qualified_name",
    "source_location",
]

_PASSTHROUGH = {
    "permute",
    "transpose",
    "unsqueeze",
    "squeeze",
    "contiguous",
    "clone",
    "alias",
    "_to_copy",
    "to",
    "detach",
    "expand",
    "t",
    "view",
    "reshape",
    "_unsafe_view",
    "dropout",
    "lift_fresh_copy",
    "type_as",
    "flatten",
    "unflatten",
}


def source_location(node: fx.Node) -> str:
    """`file.py:41` of the user's line that created the node, or the node's name."""
    trace = node.meta.get("stack_trace") or ""
    found = re.findall(r'File "([^"]+)", line (\d+)', trace)
    if found:
        path, line = found[-1]
        return f"{path.rsplit('/', 1)[-1]}:{line}"
    return node.name


def module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return re.sub(r"^L__self___|^L\['self'\]\.", "", str(path))


def op_name(target) -> str:
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def qualified_name(target) -> str:
    """`aten.cumsum`, `transformers.grouped_mm_fallback`: the op with its namespace."""
    ns = getattr(target, "namespace", None) or "aten"
    return f"{ns}.{op_name(target)}"


def node_values(node) -> list:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    if isinstance(val, (list, tuple)):
        return list(val)
    return [val]


def is_tensor(v) -> bool:
    return isinstance(v, torch.Tensor)


@dataclass
class RuleContext:
    """What a rule sees: its node, normalized arguments, and the analysis state."""

    program: Program
    node: fx.Node
    args: list
    names: list[str]
    structural: bool

    @property
    def store(self) -> SpaceStore:
        return self.program.store

    # arguments ------------------------------------------------------------------------------
    def kwarg_or_arg(self, name: str, pos: int):
        if name in self.names:
            return self.args[self.names.index(name)]
        return self.args[pos] if pos < len(self.args) else None

    def arg_or(self, pos: int, default):
        v = self.args[pos] if pos < len(self.args) else None
        return default if v is None else v

    def is_tensor(self, i: int) -> bool:
        a = self.args[i] if i < len(self.args) else None
        return isinstance(a, fx.Node) and is_tensor(a.meta.get("val"))

    def axes_of(self, node) -> tuple:
        meta = node.meta.get(AXES)
        if meta is None or meta.dims is None:
            raise NoLayout(node.name)
        return meta.dims if self.structural else self.collapse(meta.dims)

    def axes(self, i: int) -> tuple:
        return self.axes_of(self.args[i])

    def shape_of(self, node) -> tuple:
        return tuple(node.meta["val"].shape)

    def shape(self, i: int) -> tuple:
        return self.shape_of(self.args[i])

    def out_shapes(self) -> list[tuple]:
        return [tuple(v.shape) if is_tensor(v) else () for v in node_values(self.node)]

    def out_shape(self) -> tuple:
        return self.out_shapes()[0]

    def item(self, idx: int):
        meta = self.args[0].meta.get(AXES)
        if meta is None or meta.items is None:
            raise NoLayout(self.args[0].name)
        return meta.items[idx]

    # constraints ----------------------------------------------------------------------------
    def op_name(self) -> str:
        return op_name(self.node.target)

    def where(self) -> str:
        return f"{self.node.name} at {source_location(self.node)}"

    def new(self, size: int, hint: str = "", frozen: str | None = None) -> Layout:
        return self.store.new(size, hint, frozen)

    def unify(self, a: Layout, b: Layout, why: str) -> None:
        self.store.unify(a, b, f"{why} ({self.where()})")

    def freeze(self, lay: Layout, reason: str) -> None:
        self.store.freeze(lay, reason)

    def freeze_all(self, lays, reason: str) -> None:
        for lay in lays:
            self.store.freeze(lay, reason)

    def collapse(self, lays: tuple) -> tuple:
        """Resolve stacked layouts conservatively: alternatives unify, the block axis is pinned."""
        out = []
        for lay in lays:
            if isinstance(lay, Alt):
                for other in lay.options[1:]:
                    self.store.unify(
                        lay.options[0], other, f"stacked tensor used whole ({self.where()})"
                    )
                lay = lay.options[0]
            elif isinstance(lay, Blk):
                lay = self.store.new(lay.size, "stack", frozen=f"stack index ({self.where()})")
            out.append(lay)
        return tuple(out)

    def contract(self, ia: int, da: int, ib: int, db: int) -> None:
        """Axis `da` of arg `ia` is summed against axis `db` of arg `ib`."""
        a, b = self.axes(ia), self.axes(ib)
        self.unify(a[da], b[db], f"{self.op_name()} contraction")
        self.contract_node(self.args[ia], ia, da)
        self.contract_node(self.args[ib], ib, db)

    def contract_node(self, node: fx.Node, argpos: int, dim: int) -> None:
        lays = self.axes_of(node)
        dim = dim + len(lays) if dim < 0 else dim
        prov = node.meta.get(PARAM_AXES)
        if prov is not None and prov[dim] is not None:
            self.program.param_roles.setdefault(prov[dim], set()).add("in")
            return
        self.program.sites.append(
            Site(self.node.name, argpos, dim, lays[dim], module_path(self.node), "consumer-input")
        )

    def block_dims(self) -> list[int]:
        """Output axes of this reshape that are only ever indexed by constants downstream."""
        out = []
        for d, size in enumerate(self.out_shape()):
            if size > 1 and _only_indexed(self.node, d):
                out.append(d)
        return out


class NoLayout(Exception):
    """An argument has no layout (its producer was not annotated)."""


def _follow(user: fx.Node, node: fx.Node, d: int):
    """Where axis d of `node` lands in `user`'s output, 'ok' if indexed there, None if lost."""
    name = op_name(user.target)
    args = user.args
    if name in ("select", "unbind"):
        dim = args[1] if len(args) > 1 else user.kwargs.get("dim", 0)
        rank = len(node.meta["val"].shape)
        return "ok" if (dim + rank if dim < 0 else dim) == d else None
    if name not in _PASSTHROUGH:
        return None
    in_shape = tuple(node.meta["val"].shape)
    out_shape = tuple(user.meta["val"].shape) if is_tensor(user.meta.get("val")) else None
    if out_shape is None:
        return None
    if name == "permute":
        perm = [p + len(in_shape) if p < 0 else p for p in args[1]]
        return perm.index(d)
    if name == "transpose":
        a, b = (x + len(in_shape) if x < 0 else x for x in args[1:3])
        return b if d == a else a if d == b else d
    if name in (
        "unsqueeze",
        "squeeze",
        "view",
        "reshape",
        "_unsafe_view",
        "flatten",
        "unflatten",
        "expand",
    ):
        # the axis survives if the sizes before it keep their product and it keeps its size
        before = 1
        for s in in_shape[:d]:
            before *= s
        acc = 1
        for i, s in enumerate(out_shape):
            if acc == before and s == in_shape[d]:
                return i
            acc *= s
        return None
    return d


def _only_indexed(node: fx.Node, d: int, depth: int = 0) -> bool:
    if depth > 12 or not node.users:
        return False
    for user in node.users:
        nxt = _follow(user, node, d)
        if nxt == "ok":
            continue
        if nxt is None or not _only_indexed(user, nxt, depth + 1):
            return False
    return True
