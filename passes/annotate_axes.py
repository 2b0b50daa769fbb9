"""annotate_axes: give every tensor axis in the traced graph a layout over spaces.

Reads: `program.traced` (the exported fx graph).
Writes: `node.meta[AXES]` (an `AxesMeta`), `node.meta[PARAM_AXES]` (which parameter axis each
axis of a tensor is, for tensors that are parameters moved around by views),
`program.store`, `program.param_axes`, `program.param_roles`, `program.sites`, `program.unruled`.

Parameters and persistent buffers get fresh free spaces; model inputs, outputs and constants get
frozen ones; each op's rule (graphmerge/rules.py) relates its inputs' layouts to its outputs'.
An op without a rule freezes every space it touches and is reported with its source line.
"""
from __future__ import annotations

import operator
import re
from collections import Counter
from dataclasses import dataclass

import torch
from torch import fx

from graphmerge.layout import UNIT, Alt, Blk, Layout, SpaceStore
from graphmerge.program import AXES, PARAM_AXES, AxesMeta, Program, Site
from graphmerge.rules import rule_for

__all__ = ["annotate_axes", "module_path", "source_location"]

_PASSTHROUGH = {"permute", "transpose", "unsqueeze", "squeeze", "contiguous", "clone", "alias",
                "_to_copy", "to", "detach", "expand", "t", "view", "reshape", "_unsafe_view",
                "dropout", "lift_fresh_copy", "type_as", "flatten", "unflatten"}


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


def _op_name(target) -> str:
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def _qualified(target) -> str:
    """`aten.cumsum`, `transformers.grouped_mm_fallback`: the op with its namespace."""
    ns = getattr(target, "namespace", None) or "aten"
    return f"{ns}.{_op_name(target)}"


def _vals(node) -> list:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    if isinstance(val, (list, tuple)):
        return list(val)
    return [val]


def _is_tensor(v) -> bool:
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
        return isinstance(a, fx.Node) and _is_tensor(a.meta.get("val"))

    def axes_of(self, node) -> tuple:
        meta = node.meta.get(AXES)
        if meta is None or meta.dims is None:
            raise _NoLayout(node.name)
        return meta.dims if self.structural else self.collapse(meta.dims)

    def axes(self, i: int) -> tuple:
        return self.axes_of(self.args[i])

    def shape_of(self, node) -> tuple:
        return tuple(node.meta["val"].shape)

    def shape(self, i: int) -> tuple:
        return self.shape_of(self.args[i])

    def out_shapes(self) -> list[tuple]:
        return [tuple(v.shape) if _is_tensor(v) else () for v in _vals(self.node)]

    def out_shape(self) -> tuple:
        return self.out_shapes()[0]

    def item(self, idx: int):
        meta = self.args[0].meta.get(AXES)
        if meta is None or meta.items is None:
            raise _NoLayout(self.args[0].name)
        return meta.items[idx]

    # constraints ----------------------------------------------------------------------------
    def op_name(self) -> str:
        return _op_name(self.node.target)

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
                    self.store.unify(lay.options[0], other, f"stacked tensor used whole "
                                                          f"({self.where()})")
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
        self.program.sites.append(Site(self.node.name, argpos, dim, lays[dim],
                                       module_path(self.node), "consumer-input"))

    def block_dims(self) -> list[int]:
        """Output axes of this reshape that are only ever indexed by constants downstream."""
        out = []
        for d, size in enumerate(self.out_shape()):
            if size > 1 and _only_indexed(self.node, d):
                out.append(d)
        return out


class _NoLayout(Exception):
    pass


def _follow(user: fx.Node, node: fx.Node, d: int):
    """Where axis d of `node` lands in `user`'s output, 'ok' if indexed there, None if lost."""
    name = _op_name(user.target)
    args = user.args
    if name in ("select", "unbind"):
        dim = args[1] if len(args) > 1 else user.kwargs.get("dim", 0)
        rank = len(node.meta["val"].shape)
        return "ok" if (dim + rank if dim < 0 else dim) == d else None
    if name not in _PASSTHROUGH:
        return None
    in_shape = tuple(node.meta["val"].shape)
    out_shape = tuple(user.meta["val"].shape) if _is_tensor(user.meta.get("val")) else None
    if out_shape is None:
        return None
    if name == "permute":
        perm = [p + len(in_shape) if p < 0 else p for p in args[1]]
        return perm.index(d)
    if name == "transpose":
        a, b = (x + len(in_shape) if x < 0 else x for x in args[1:3])
        return b if d == a else a if d == b else d
    if name in ("unsqueeze", "squeeze", "view", "reshape", "_unsafe_view", "flatten", "unflatten",
                "expand"):
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


def _normalized_args(node: fx.Node) -> tuple[list, list[str]]:
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


def _fresh(store: SpaceStore, shape, hint: str, frozen: str | None) -> tuple:
    return tuple(store.new(int(s), f"{hint}:{i}", frozen) for i, s in enumerate(shape))


def _input_layouts(store: SpaceStore, node: fx.Node, hint: str, frozen: str | None) -> AxesMeta:
    vals = _vals(node)
    if len(vals) == 1 and not isinstance(node.meta.get("val"), (list, tuple)):
        v = vals[0]
        return AxesMeta(_fresh(store, v.shape, hint, frozen) if _is_tensor(v) else None, None)
    return AxesMeta(None, tuple(_fresh(store, v.shape, hint, frozen) if _is_tensor(v) else None
                                for v in vals))


def _annotate_placeholder(program: Program, node: fx.Node) -> None:
    kind, target = program.traced.placeholders.get(node.name, ("input", node.name))
    store = program.store
    if kind in ("param", "buffer") and not any(u in program.live for u in node.users):
        # unused in the traced forward (a tied name whose uses export routes to its twin, or a
        # layer whose result is discarded): nothing to permute, merges average it
        node.meta[AXES] = AxesMeta(None, None)
        return
    if kind in ("param", "buffer"):
        meta = _input_layouts(store, node, target, None)
        if meta.dims is not None:
            node.meta[PARAM_AXES] = tuple((target, i) for i in range(len(meta.dims)))
            for i, lay in enumerate(meta.dims):
                program.param_axes[(target, i)] = lay
            program.param_order.append(target)
    elif kind == "constant":
        meta = _input_layouts(store, node, target, f"constant {target} (not in the state dict)")
    else:
        meta = _input_layouts(store, node, target, f"model input {target}")
    node.meta[AXES] = meta


def _to_meta(result, node: fx.Node) -> AxesMeta:
    if isinstance(result, list):
        return AxesMeta(None, tuple(tuple(r) if r is not None else None for r in result))
    return AxesMeta(tuple(result), None)


def _check_shapes(store: SpaceStore, meta: AxesMeta, node: fx.Node) -> bool:
    vals = _vals(node)
    outs = [meta.dims] if meta.dims is not None else list(meta.items or ())
    if len(outs) != len(vals):
        return False
    for lays, v in zip(outs, vals):
        if not _is_tensor(v):
            continue
        if lays is None or len(lays) != v.dim():
            return False
        if any(store.size(lay) != int(s) for lay, s in zip(lays, v.shape)):
            return False
    return True


def _freeze_unknown(program: Program, node: fx.Node, reason: str) -> None:
    store = program.store
    for arg in node.all_input_nodes:
        meta = arg.meta.get(AXES)
        for lays in ([meta.dims] if meta and meta.dims else list(meta.items or ()) if meta else []):
            for lay in lays or ():
                store.freeze(lay, reason)
    node.meta[AXES] = _input_layouts(store, node, node.name, reason)


def _carry_provenance(node: fx.Node, meta: AxesMeta, rule_args: list) -> None:
    """A parameter moved by views keeps naming its axes, so its consumers see the parameter."""
    if meta.dims is None or not rule_args or not isinstance(rule_args[0], fx.Node):
        return
    src = rule_args[0]
    prov = src.meta.get(PARAM_AXES)
    src_meta = src.meta.get(AXES)
    if prov is None or src_meta is None or src_meta.dims is None:
        return
    where = {lay: p for lay, p in zip(src_meta.dims, prov) if lay != UNIT}
    out = tuple(where.get(lay) for lay in meta.dims)
    if any(p is not None for p in out):
        node.meta[PARAM_AXES] = out


def annotate_axes(program: Program) -> Program:
    """Run the rule table over the graph; see the module docstring for what it writes."""
    program.store = SpaceStore()
    program.param_axes, program.param_roles, program.sites = {}, {}, []
    program.param_order, program.unruled = [], Counter()
    program.live = _live_nodes(program.traced.graph)
    store = program.store
    for node in program.traced.graph.nodes:
        if node.op == "placeholder":
            _annotate_placeholder(program, node)
        elif node.op == "output":
            for arg in node.all_input_nodes:
                meta = arg.meta.get(AXES)
                lays = [meta.dims] if meta and meta.dims else list(meta.items or ()) if meta else []
                for dims in lays:
                    for lay in dims or ():
                        store.freeze(lay, "model output")
        elif node.op == "call_function":
            _annotate_call(program, node)
        else:
            _freeze_unknown(program, node, f"unsupported fx node {node.op} {node.name}")
    return program


_HOPS = ("wrap_with_set_grad_enabled", "wrap_with_autocast")


def _inline_subgraph(program: Program, node: fx.Node) -> bool:
    """Higher-order ops that only change grad/autocast mode: annotate their body in place."""
    if getattr(node.target, "__name__", "") not in _HOPS:
        return False
    attr = next((a for a in node.args if isinstance(a, fx.Node) and a.op == "get_attr"), None)
    if attr is None:
        return False
    body = getattr(program.traced.program.graph_module, attr.target, None)
    if not isinstance(body, fx.GraphModule):
        return False
    inputs = [a for a in node.args[node.args.index(attr) + 1:]]
    outs = None
    for sub in body.graph.nodes:
        if sub.op == "placeholder":
            src = inputs.pop(0)
            if isinstance(src, fx.Node):
                for key in (AXES, PARAM_AXES):
                    if key in src.meta:
                        sub.meta[key] = src.meta[key]
        elif sub.op == "call_function":
            _annotate_call(program, sub)
        elif sub.op == "output":
            outs = sub.args[0]
    if outs is None:
        return False
    outs = outs if isinstance(outs, (list, tuple)) else (outs,)
    items = []
    for o in outs:
        meta = o.meta.get(AXES) if isinstance(o, fx.Node) else None
        items.append(meta.dims if meta is not None else None)
    node.meta[AXES] = AxesMeta(None, tuple(items))
    return True


def _live_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes the outputs depend on, plus side effects (in-place ops, asserts) and their inputs."""
    roots = [n for n in graph.nodes if n.op == "output" or (
        n.op == "call_function" and (_op_name(n.target).endswith("_")
                                     and not _op_name(n.target).startswith("__")))]
    live, stack = set(), list(roots)
    while stack:
        node = stack.pop()
        if node in live:
            continue
        live.add(node)
        stack.extend(node.all_input_nodes)
    return live


def _is_dead(program: Program, node: fx.Node) -> bool:
    """A node whose value no output depends on (a select used only for its shape, an unused
    auxiliary head): its rule would only add constraints that mean nothing."""
    return node.graph is program.traced.graph and node not in program.live


def _annotate_call(program: Program, node: fx.Node) -> None:
    if _is_dead(program, node):
        node.meta[AXES] = _input_layouts(program.store, node, node.name, None)
        return
    if _inline_subgraph(program, node):
        return
    rule = rule_for(node.target)
    qual = _qualified(node.target)
    where = source_location(node)
    if rule is None:
        program.unruled[(qual, where)] += 1
        _freeze_unknown(program, node, f"no rule for {qual} at {where}")
        return
    args, names = _normalized_args(node)
    cx = RuleContext(program, node, args, names, rule.structural)
    try:
        result = rule.fn(cx)
    except _NoLayout:
        result = None
    except Exception as exc:  # a rule that cannot handle these arguments fails safe
        program.unruled[(f"{qual} ({type(exc).__name__} in rule)", where)] += 1
        _freeze_unknown(program, node, f"rule for {qual} failed at {where}: {exc}")
        return
    if result is None:
        if not any(_is_tensor(v) for v in _vals(node)):
            node.meta[AXES] = AxesMeta(None, None)
            return
        program.unruled[(qual, where)] += 1
        _freeze_unknown(program, node, f"{qual} with these arguments at {where}")
        return
    meta = _to_meta(result, node)
    if not _check_shapes(program.store, meta, node):
        program.unruled[(f"{qual} (shape mismatch in rule)", where)] += 1
        _freeze_unknown(program, node, f"rule for {qual} gave wrong shapes at {where}")
        return
    node.meta[AXES] = meta
    if rule.structural:
        _carry_provenance(node, meta, args)
