"""The program object that passes read and write, the meta keys, and the pass pipeline.

Per-node facts live in `node.meta` under the namespaced keys below, as frozen records.
Whole-program facts are typed fields of `Program`. The pipeline is one ordered list of named
passes; each pass names what it requires, and a missing prerequisite is an error naming both.
Set `GRAPHMERGE_DUMP=pass_name` (or `all`) to print the program after a pass.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from graphmerge.layout import Layout, SpaceStore
from graphmerge.records import PermutationGroup

__all__ = ["AXES", "PARAM_AXES", "AxesMeta", "GroupSpace", "Pass", "Program", "Site", "run_passes"]

AXES = "graphmerge.axes"
PARAM_AXES = "graphmerge.param_axes"


@dataclass(frozen=True)
class AxesMeta:
    """Layouts of a node's output: `dims` for one tensor, `items` for a tuple of outputs."""

    dims: tuple | None
    items: tuple | None


@dataclass(frozen=True)
class Site:
    """An activation axis summed against something: a candidate capture site."""

    node: str
    arg: int
    dim: int
    layout: Layout
    module: str
    kind: str


@dataclass(frozen=True)
class GroupSpace:
    """The space behind a public group, and the spaces its permutation is nested in."""

    space: int
    size: int
    parents: tuple[int, ...]


@dataclass
class Program:
    """Everything the passes know about one model."""

    model: nn.Module
    example_inputs: object
    traced: object = None
    store: SpaceStore | None = None
    param_axes: dict = field(default_factory=dict)
    param_roles: dict = field(default_factory=dict)
    param_order: list = field(default_factory=list)
    sites: list = field(default_factory=list)
    unruled: Counter = field(default_factory=Counter)
    live: set = field(default_factory=set)
    axis_layouts: dict = field(default_factory=dict)
    groups: list[PermutationGroup] = field(default_factory=list)
    spaces: dict[str, GroupSpace] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # stage -> (start, end) in time.perf_counter() seconds: lets a profiler (benchmarks/run.py's
    # memory sampler) attribute what it measured to the passes and merge stages
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    strict: bool = False

    def group(self, name: str) -> PermutationGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no group named {name!r}; groups: {[g.name for g in self.groups][:20]}")

    def free_groups(self) -> list[PermutationGroup]:
        return [g for g in self.groups if not g.frozen and g.size > 1]

    def dump(self) -> str:
        lines = [f"program for {type(self.model).__name__}: passes {self.done}"]
        for g in self.groups:
            lines.append(f"  {g}")
            for m in g.members:
                lines.append(f"      {m}")
        if self.unruled:
            lines.append(
                "  ops without rules: "
                + ", ".join(f"{op} at {where} x{n}" for (op, where), n in self.unruled.items())
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class Pass:
    name: str
    fn: Callable[[Program], Program]
    requires: tuple[str, ...] = ()


def run_passes(program: Program, passes: list[Pass]) -> Program:
    """Run passes in order, timing each; honours GRAPHMERGE_DUMP."""
    dump = os.environ.get("GRAPHMERGE_DUMP", "")
    for p in passes:
        missing = [r for r in p.requires if r not in program.done]
        if missing:
            raise RuntimeError(f"pass {p.name} requires {missing} to run first")
        start = time.perf_counter()
        program = p.fn(program)
        end = time.perf_counter()
        program.timings[p.name] = end - start
        program.spans[p.name] = (start, end)
        program.done.append(p.name)
        if dump in (p.name, "all"):
            print(f"== after {p.name} ==\n{program.dump()}", file=sys.stderr)
    return program
