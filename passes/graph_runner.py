"""GraphRunner: the traced graph run with any model's weights, returning only captured values.

Used by collect_features: the graph is cut down to the capture nodes (the model's own outputs,
e.g. vocabulary-sized logits, are not computed), and a batch whose shapes differ from the traced
ones is traced again once per shape.
"""

from __future__ import annotations

import copy

import torch
from torch import fx
from torch.utils._pytree import tree_flatten

from graphmerge.errors import InputError
from graphmerge.program import Program
from graphmerge.trace import normalize_inputs, trace

__all__ = ["GraphRunner"]


class GraphRunner:
    """Runs the traced graph with any model's weights and returns the captured values only.

    The graph is cut down to what the capture nodes need (its own outputs are dropped).
    """

    def __init__(self, program: Program, capture_nodes: list[str]):
        self.program = program
        self.capture_nodes = list(dict.fromkeys(capture_nodes))
        self._by_shape: dict[tuple, tuple] = {}
        self._add(self._key(program.example_inputs), program.traced)

    @staticmethod
    def _key(inputs) -> tuple:
        args, kwargs = normalize_inputs(inputs)
        return tuple(
            (k, tuple(v.shape))
            for k, v in [*enumerate(args), *sorted(kwargs.items())]
            if isinstance(v, torch.Tensor)
        )

    def _add(self, key, traced) -> None:
        graph = copy.deepcopy(traced.graph)
        nodes = {n.name: n for n in graph.nodes}
        missing = [n for n in self.capture_nodes if n not in nodes]
        if missing:
            raise InputError(
                f"the graph traced for input shapes {key} lacks capture nodes "
                f"{missing[:3]}; use calibration batches of one shape"
            )
        out = next(n for n in graph.nodes if n.op == "output")
        out.args = (tuple(nodes[n] for n in self.capture_nodes),)
        graph.eliminate_dead_code()
        module = fx.GraphModule(traced.program.graph_module, graph)
        self._by_shape[key] = (traced, module)

    def __call__(self, state: dict, inputs) -> dict[str, torch.Tensor]:
        """Capture node name -> its value, running the graph with `state` on `inputs`."""
        key = self._key(inputs)
        if key not in self._by_shape:
            self._add(key, trace(self.program.model, inputs))
        traced, module = self._by_shape[key]
        ep = traced.program
        args, kwargs = normalize_inputs(inputs)
        example_kwargs = normalize_inputs(self.program.example_inputs)[1]
        kwargs = {k: kwargs[k] for k in example_kwargs if k in kwargs} | kwargs
        user = [v for v in tree_flatten((args, kwargs))[0] if isinstance(v, torch.Tensor)]
        flat, user_iter = [], iter(user)
        for spec in ep.graph_signature.input_specs:
            kind = spec.kind.name
            if kind in ("PARAMETER", "BUFFER"):
                flat.append(
                    state[spec.target] if spec.target in state else ep.constants[spec.target]
                )
            elif kind in ("CONSTANT_TENSOR", "CUSTOM_OBJ"):
                flat.append(ep.constants[spec.target])
            elif kind == "USER_INPUT":
                flat.append(next(user_iter))
            else:
                raise InputError(f"unsupported exported input kind {kind}")
        with torch.no_grad():
            caught = module(*flat)
        return dict(zip(self.capture_nodes, caught))
