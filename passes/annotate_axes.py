"""annotate_axes: give every tensor axis in the traced graph a layout over spaces.

Reads: `program.traced` (the exported fx graph).
Writes: `node.meta[AXES]` (an `AxesMeta`), `node.meta[PARAM_AXES]` (which parameter axis each
axis of a tensor is, for tensors that are parameters moved around by views),
`program.store`, `program.param_axes`, `program.param_roles`, `program.sites`, `program.unruled`.

Parameters and persistent buffers get fresh free spaces; model inputs, outputs and constants get
frozen ones; each op's rule (graphmerge/rules/) relates its inputs' layouts to its outputs'.
An op without a rule freezes every space it touches and is reported with its source line.
"""

from __future__ import annotations

from collections import Counter

from torch import fx

from graphmerge.layout import UNIT, SpaceStore
from graphmerge.program import AXES, PARAM_AXES, AxesMeta, Program
from graphmerge.rule_context import (
    NoLayout,
    RuleContext,
    is_tensor,
    node_values,
    normalized_args,
    op_name,
    qualified_name,
    source_location,
)
from graphmerge.rules import frozen_reason, rule_for

__all__ = ["annotate_axes"]


def _fresh(store: SpaceStore, shape, hint: str, frozen: str | None) -> tuple:
    return tuple(store.new(int(s), f"{hint}:{i}", frozen) for i, s in enumerate(shape))


def _input_layouts(store: SpaceStore, node: fx.Node, hint: str, frozen: str | None) -> AxesMeta:
    vals = node_values(node)
    if len(vals) == 1 and not isinstance(node.meta.get("val"), (list, tuple)):
        v = vals[0]
        return AxesMeta(_fresh(store, v.shape, hint, frozen) if is_tensor(v) else None, None)
    return AxesMeta(
        None, tuple(_fresh(store, v.shape, hint, frozen) if is_tensor(v) else None for v in vals)
    )


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
    vals = node_values(node)
    outs = [meta.dims] if meta.dims is not None else list(meta.items or ())
    if len(outs) != len(vals):
        return False
    for lays, v in zip(outs, vals):
        if not is_tensor(v):
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
        for lays in [meta.dims] if meta and meta.dims else list(meta.items or ()) if meta else []:
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
    inputs = [a for a in node.args[node.args.index(attr) + 1 :]]
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
    roots = [
        n
        for n in graph.nodes
        if n.op == "output"
        or (
            n.op == "call_function"
            and (op_name(n.target).endswith("_") and not op_name(n.target).startswith("__"))
        )
    ]
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
    qual = qualified_name(node.target)
    where = source_location(node)
    if rule is None:
        program.unruled[(qual, where)] += 1
        reason = frozen_reason(qual)
        _freeze_unknown(
            program, node, f"no rule for {qual} at {where}" + (f": {reason}" if reason else "")
        )
        return
    args, names = normalized_args(node)
    cx = RuleContext(program, node, args, names, rule.structural)
    try:
        result = rule.fn(cx)
    except NoLayout:
        result = None
    except Exception as exc:  # noqa: BLE001 (a rule that cannot handle these arguments fails safe)
        program.unruled[(f"{qual} ({type(exc).__name__} in rule)", where)] += 1
        _freeze_unknown(program, node, f"rule for {qual} failed at {where}: {exc}")
        return
    if result is None:
        if not any(is_tensor(v) for v in node_values(node)):
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
