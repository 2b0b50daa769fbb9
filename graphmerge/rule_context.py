"""What a rule sees: the `RuleContext` of one fx node, and node helpers shared by the passes.

A rule (graphmerge/rules/) receives a `RuleContext`: the node, its arguments normalized against
the op's schema (`normalized_args`: keyword arguments and defaults filled in, so a rule reads
`cx.arg("dim")` whatever form the call used), the layouts of its tensor arguments (stacked
layouts collapsed unless the rule is structural), and the operations it may perform on the
analysis state (unify, freeze, contract, new spaces).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import fx

from graphmerge.layout import Alt, Blk, Layout, SpaceStore
from graphmerge.program import AXES, PARAM_AXES, Program, Site
from graphmerge.rules import INDEXED, elementwise, rule_for

__all__ = [
    "NoLayout",
    "RuleContext",
    "UnknownArgument",
    "is_tensor",
    "module_path",
    "node_values",
    "normalized_args",
    "op_name",
    "qualified_name",
    "source_location",
]


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


def normalized_args(node: fx.Node) -> tuple[list, list[str]]:
    """A call's arguments in schema order, keyword arguments and defaults filled in, with the
    schema's argument names; the plain positional arguments and no names for targets without a
    schema (`operator.getitem`)."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return list(node.args), []
    names = [a.name for a in schema.arguments]
    args = list(node.args) + [None] * max(0, len(names) - len(node.args))
    for i, a in enumerate(schema.arguments):
        if i >= len(node.args):
            if a.name in node.kwargs:
                args[i] = node.kwargs[a.name]
            elif a.has_default_value():
                args[i] = a.default_value
    return args, names


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
    # An argument is named by its schema name (or its position: the leading operands, and
    # targets without a schema). A name that no op sharing this rule has is a bug in the rule.
    @cached_property
    def _known(self) -> frozenset[str] | None:
        rule = rule_for(self.node.target)
        return rule.arguments if rule is not None else None

    def _index(self, ref: int | str) -> int | None:
        """The position of argument `ref` in `args`; None for a name this overload lacks."""
        if isinstance(ref, int):
            return ref if ref < len(self.args) else None
        if ref in self.names:
            return self.names.index(ref)
        if self._known is not None and ref not in self._known:
            raise UnknownArgument(
                f"{ref!r} is not an argument of {self.op_name()} ({self.where()})"
            )
        return None

    def arg(self, *names: str, default=None):
        """The value of the first of `names` this overload has; `default` if none or None."""
        for name in names:
            i = self._index(name)
            if i is not None and self.args[i] is not None:
                return self.args[i]
        return default

    def is_tensor(self, ref: int | str) -> bool:
        i = self._index(ref)
        a = self.args[i] if i is not None else None
        return isinstance(a, fx.Node) and is_tensor(a.meta.get("val"))

    def axes_of(self, node) -> tuple:
        meta = node.meta.get(AXES)
        if meta is None or meta.dims is None:
            raise NoLayout(node.name)
        return meta.dims if self.structural else self.collapse(meta.dims)

    def _given(self, ref: int | str):
        i = self._index(ref)
        if i is None:
            raise UnknownArgument(f"{self.op_name()} was called without {ref!r} ({self.where()})")
        return self.args[i]

    def axes(self, ref: int | str) -> tuple:
        """Layouts of the tensor argument `ref` (a position or a schema name)."""
        return self.axes_of(self._given(ref))

    def shape_of(self, node) -> tuple:
        return tuple(node.meta["val"].shape)

    def shape(self, ref: int | str) -> tuple:
        return self.shape_of(self._given(ref))

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

    def contract_node(self, node: fx.Node, argpos: int | None, dim: int) -> None:
        """Axis `dim` of `node` is summed: a parameter axis becomes a consumer ("in" role), an
        activation axis a capture site. argpos: where `node` is in this call's arguments, or
        None when it is not a direct argument (an einsum operand inside a list): the site is
        then `node`'s own output (`Site.arg` -1)."""
        lays = self.axes_of(node)
        dim = dim + len(lays) if dim < 0 else dim
        prov = node.meta.get(PARAM_AXES)
        if prov is not None and prov[dim] is not None:
            self.program.param_roles.setdefault(prov[dim], set()).add("in")
            return
        at, arg = (self.node.name, argpos) if argpos is not None else (node.name, -1)
        self.program.sites.append(
            Site(at, arg, dim, lays[dim], module_path(self.node), "consumer-input")
        )

    def consume(self, node: fx.Node, dim: int) -> None:
        """Axis `dim` of the weight tensor `node` is read as an input axis (a recurrent layer's
        columns): a parameter axis becomes a consumer ("in" role). Unlike `contract_node`, a
        computed weight is not a capture site (its rows are not samples of activations)."""
        prov = node.meta.get(PARAM_AXES)
        dim = dim + len(prov) if prov is not None and dim < 0 else dim
        if prov is not None and prov[dim] is not None:
            self.program.param_roles.setdefault(prov[dim], set()).add("in")

    def is_uniform(self, node) -> bool:
        """Whether `node` is made by a constant fill (`zeros`, `full`, ...): its values are the
        same along every axis, so it constrains no permutation."""
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return False
        rule = rule_for(node.target)
        return rule is not None and rule.fn is elementwise.uniform_new

    def block_dims(self) -> list[int]:
        """Output axes of this reshape that are only ever indexed by constants downstream."""
        out = []
        for d, size in enumerate(self.out_shape()):
            if size > 1 and _only_indexed(self.node, d):
                out.append(d)
        return out


class NoLayout(Exception):
    """An argument has no layout (its producer was not annotated)."""


class UnknownArgument(KeyError):
    """A rule read an argument name that none of the ops sharing it has: a bug in the rule."""


def _follow(user: fx.Node, node: fx.Node, d: int):
    """Where axis d of `node` lands in `user`'s output (the op table's flow for the user's op),
    INDEXED if a constant index removes it there, None if it is not followed."""
    rule = rule_for(user.target) if user.op == "call_function" else None
    if rule is None or rule.flow is None or not user.args or user.args[0] is not node:
        return None
    args, names = normalized_args(user)
    val = user.meta.get("val")
    out_shape = tuple(val.shape) if is_tensor(val) else None
    return rule.flow(dict(zip(names, args)), tuple(node.meta["val"].shape), out_shape, d)


def _only_indexed(node: fx.Node, d: int, depth: int = 0) -> bool:
    if depth > 12 or not node.users:
        return False
    for user in node.users:
        nxt = _follow(user, node, d)
        if nxt == INDEXED:
            continue
        if nxt is None or not _only_indexed(user, nxt, depth + 1):
            return False
    return True
