"""partial: a partial merge as a graph rewrite (ZipIt's partial zipping, for any traced model).

Reads: the traced graph, `node.meta[AXES]`, `program.assignments`, the merged state and the
models' states.
Returns: a new `torch.fx.GraphModule` that computes the merged trunk once and then each model's
own tail, returning the tuple of the models' outputs (or their concatenation).

The trunk is the stop module (or the first producer of the stop group) and everything it depends
on. Every tensor that leaves the trunk for a tail is mapped back into that model's units (each of
its units reads the merged unit it was merged into: an `index_select` per grouped axis), so the
tails run on their own weights. A model merged with its shuffled copy is reproduced exactly.
"""

from __future__ import annotations

import functools
import operator
import re
import warnings

import numpy as np
import torch
from torch import fx, nn

from graphmerge.assignment import axis_targets
from graphmerge.errors import InputError
from graphmerge.layout import Alt, Blk
from graphmerge.program import AXES, Program
from graphmerge.trace import normalize_inputs, sequence_axes, trace

__all__ = ["build_partial", "stop_points", "trunk_nodes"]


def _module_of(node: fx.Node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [re.sub(r"^L__self___|^L\['self'\]\.", "", str(path)) for path, _ in stack.values()]


def stop_points(program: Program) -> list[str]:
    """Module names (in execution order) and group names a partial merge may stop at."""
    modules: dict[str, None] = {}
    for node in program.traced.graph.nodes:
        if node.op == "call_function":
            for path in _module_of(node):
                if path:
                    modules.setdefault(path, None)
    return list(modules) + [g.name for g in program.groups if not g.frozen]


def trunk_nodes(program: Program, stop_at: str) -> set[fx.Node]:
    """The stop module (or the stop group's first producer) and every node it depends on."""
    module = stop_at
    names = {g.name for g in program.groups}
    if stop_at in names:
        module = stop_at.split(":", 1)[0]
    seeds = [
        n
        for n in program.traced.graph.nodes
        if n.op == "call_function"
        and any(p == module or p.startswith(module + ".") for p in _module_of(n))
    ]
    if not seeds:
        valid = stop_points(program)
        raise InputError(
            f"stop_at={stop_at!r} is neither a module nor a group of "
            f"{type(program.model).__name__}; valid stop points: "
            f"{', '.join(valid[:40])}{' ...' if len(valid) > 40 else ''}"
        )
    return _closure(seeds)


def _closure(seeds) -> set[fx.Node]:
    """The seeds and every computation they depend on, with the items of tuple results."""
    trunk, stack = set(), list(seeds)
    while stack:
        node = stack.pop()
        if node in trunk or node.op != "call_function":
            continue
        trunk.add(node)
        stack.extend(node.all_input_nodes)
    for node in list(trunk):  # items of a trunk tuple are read in the trunk, then un-merged
        trunk.update(u for u in node.users if u.target is operator.getitem)
    return trunk


def _unmerge_index(program: Program, lay, model: int) -> np.ndarray | None:
    """For each position of an axis, the merged position its unit reads (None: unchanged)."""
    if isinstance(lay, Blk):
        return None
    if isinstance(lay, Alt):
        lay = lay.options[0]
    targets = axis_targets(program, program.store.normalize(lay), program.assignments, model)
    if targets is None:
        return None
    return np.where(targets >= 0, targets, 0)


class _Builder:
    def __init__(self, program: Program, traced):
        self.program = program
        self.root = nn.Module()
        self.graph = fx.Graph()
        self._attrs: dict[str, fx.Node] = {}
        ep_module = traced.program.graph_module
        for name, child in ep_module.named_children():  # bodies of higher-order ops
            self.root.add_module(name, child)

    def attr(self, name: str, value: torch.Tensor, param: bool) -> fx.Node:
        safe = re.sub(r"[^0-9a-zA-Z_]", "_", name)
        if safe not in self._attrs:
            value = value.detach().clone()
            if param and value.is_floating_point():
                self.root.register_parameter(safe, nn.Parameter(value, requires_grad=False))
            else:
                self.root.register_buffer(safe, value)
            self._attrs[safe] = self.graph.get_attr(safe)
        return self._attrs[safe]


def _correspond(static: fx.Graph, dynamic: fx.Graph) -> dict | None:
    """Dynamic-graph node -> static-graph node, by op and order of appearance (None: differ)."""

    def by_op(graph):
        out: dict = {}
        for n in graph.nodes:
            if (
                n.op == "call_function"
                and isinstance(n.target, torch._ops.OpOverload)
                and "sym_" not in str(n.target)
            ):
                out.setdefault(n.target, []).append(n)
        return out

    a, b = by_op(static), by_op(dynamic)
    if any(t not in b for t in a):
        return None
    mapping = {}
    for target, nodes in a.items():
        others = b[target]
        if len(others) != len(nodes):
            if target in (torch.ops.aten.slice.Tensor,) and len(others) > len(nodes):
                others = [o for o in others if "val" in o.meta][: len(nodes)]
            else:
                return None
        for s_node, d_node in zip(nodes, others):
            mapping[d_node] = s_node
    return mapping


def _symbolic_graph(program: Program):
    """The model traced again with a symbolic batch axis (and, for text models, a symbolic
    sequence axis), and its node correspondence; None (with a warning) when neither works."""
    sequence = bool(sequence_axes(*normalize_inputs(program.example_inputs)))
    why = ""
    for dynamic_sequence in (True, False) if sequence else (False,):
        try:
            dyn = trace(
                program.model,
                program.example_inputs,
                dynamic_batch=True,
                dynamic_sequence=dynamic_sequence,
            )
        except Exception as exc:  # noqa: BLE001 (try a less symbolic trace, then keep the static one)
            why = why or f"no symbolic-batch trace ({exc})"
            continue
        mapping = _correspond(program.traced.graph, dyn.graph)
        if mapping is not None:
            return dyn, mapping
        why = why or "the symbolic-batch graph differs from the analysed one"
    warnings.warn(
        f"partial merge: {why}; the module keeps the calibration input sizes", stacklevel=3
    )
    return None


def build_partial(
    program: Program, merged_state: dict, states: list[dict], stop_at: str, combine: str = "tuple"
) -> fx.GraphModule:
    """The partial-merge GraphModule (see the module docstring)."""
    if combine not in ("tuple", "concat"):
        raise InputError(f"combine must be 'tuple' or 'concat', got {combine!r}")
    static_trunk = trunk_nodes(program, stop_at)
    symbolic = _symbolic_graph(program)
    if symbolic is None:
        traced, to_static = program.traced, {}
        trunk = static_trunk
    else:
        traced, to_static = symbolic
        trunk = _closure(d for d, s_node in to_static.items() if s_node in static_trunk)
    ep = traced.program
    graph = traced.graph
    kinds = traced.placeholders
    b = _Builder(program, traced)
    inputs = {}
    for node in graph.nodes:
        if node.op == "placeholder" and kinds.get(node.name, ("input",))[0] == "input":
            inputs[node] = b.graph.placeholder(node.name)

    def lookup(node, env, state, prefix):
        if node in env:
            return env[node]
        kind, target = kinds.get(node.name, ("input", node.name))
        if kind in ("param", "buffer") and target in state:
            return b.attr(f"{prefix}.{target}", state[target], kind == "param")
        if kind in ("buffer", "constant"):
            value = (
                ep.constants.get(target)
                if target in ep.constants
                else program.model.get_buffer(target)
            )
            return b.attr(f"const.{target}", value, False)
        if node.op == "get_attr":
            return b.graph.get_attr(node.target)
        raise KeyError(node.name)

    def tail(env, state, i, n):
        return lookup(n, env, state, f"tail{i}")

    trunk_env: dict = dict(inputs)
    for node in graph.nodes:
        if node in trunk:
            trunk_env[node] = b.graph.node_copy(
                node, lambda n: lookup(n, trunk_env, merged_state, "trunk")
            )
    frontier = [n for n in trunk if any(u not in trunk for u in n.users)]
    outputs = []
    out_node = next(n for n in graph.nodes if n.op == "output")
    for i, state in enumerate(states):
        env: dict = dict(inputs)
        for f in sorted(frontier, key=lambda n: list(graph.nodes).index(n)):
            value = trunk_env[f]
            source = to_static.get(f, f) if f.target is not operator.getitem else f
            if f.target is operator.getitem and to_static:
                parent = to_static.get(f.args[0])
                items = (
                    parent.meta.get(AXES).items
                    if parent is not None and parent.meta.get(AXES) is not None
                    else None
                )
                dims = items[f.args[1]] if items else None
                meta = type("M", (), {"dims": dims})() if dims else None
            else:
                meta = source.meta.get(AXES)
            for d, lay in enumerate(meta.dims if meta is not None and meta.dims else ()):
                idx = _unmerge_index(program, lay, i)
                if idx is not None:
                    index = b.attr(f"unmerge{i}.{f.name}.{d}", torch.as_tensor(idx), False)
                    value = b.graph.call_function(
                        torch.ops.aten.index_select.default, (value, d, index)
                    )
            env[f] = value
        for node in graph.nodes:
            if node.op == "call_function" and node not in trunk:
                env[node] = b.graph.node_copy(node, functools.partial(tail, env, state, i))
        result = torch.fx.map_arg(out_node.args[0], functools.partial(tail, env, state, i))
        leaves = list(result) if isinstance(result, (list, tuple)) else [result]
        outputs.append(leaves[0] if len(leaves) == 1 else tuple(leaves))
    if combine == "concat":
        if any(isinstance(o, tuple) for o in outputs):
            raise InputError("combine='concat' needs models with a single output tensor")
        b.graph.output(b.graph.call_function(torch.ops.aten.cat.default, (outputs, -1)))
    else:
        b.graph.output(tuple(outputs))
    b.graph.lint()
    module = fx.GraphModule(b.root, b.graph, class_name=f"Partial{type(program.model).__name__}")
    module.eval()
    return module
