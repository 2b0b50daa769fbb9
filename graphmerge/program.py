"""The program object that passes read and write, the meta keys, and the pass manager.

Per-node facts live in `node.meta` under the namespaced keys below, as frozen records.
Whole-program facts are typed fields of `Program`. The pipeline (graphmerge.passes.PIPELINE) is
one ordered list of named passes; each pass names the passes it requires, and a missing
prerequisite is an error naming both. Set `GRAPHMERGE_DUMP=pass_name` (or `all`) to print the
program after a pass.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from graphmerge.errors import GraphMergeError, ResourceError
from graphmerge.layout import Layout, SpaceStore
from graphmerge.memory import MemoryPlan
from graphmerge.options import MergeOptions
from graphmerge.records import PermutationGroup

if TYPE_CHECKING:  # records made by passes; the core never imports passes at run time
    from graphmerge.assignment import Assignment
    from graphmerge.distributed import Team
    from graphmerge.trace import Inputs, Traced

__all__ = [
    "AXES",
    "PARAM_AXES",
    "AxesMeta",
    "GroupSpace",
    "Pass",
    "PassOrderError",
    "Program",
    "Site",
    "run_passes",
]

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
    """Everything the passes know about one merge (or one analysis).

    Inputs: `model` (traced and analysed: the first of `models`), `example_inputs`, `options`,
    and for a merge `models` (never modified) and `data` (calibration batches).
    Analysis (trace .. verify_groups): `traced`, the axis facts, `groups` and their `spaces`.
    Merge (plan_merge .. build_module): `memory_plan` (the estimate, the budget, the waves of
    groups the statistics are collected in), `states` (each base model's weights, after a
    BatchNorm reset on copies), `features` (activation moments per group), `capture_plans`,
    `assignments` (per group), `merged_state`, `refinements` (per layer weight: what the
    least-squares refit and the statistics repair did, or why they left it) and `result` (the
    merged module, or the partial merge's GraphModule).
    Across processes (graphmerge.distributed): `team` (this rank's place; None in one process),
    `data` is this rank's shard, and `owners` maps each free group to the rank that holds its
    summed statistics and solves it (families of a heads group share one).
    """

    model: nn.Module
    example_inputs: Inputs
    options: MergeOptions = field(default_factory=MergeOptions)
    models: list[nn.Module] = field(default_factory=list)
    data: Iterable | None = None
    team: Team | None = None
    owners: dict[str, int] = field(default_factory=dict)
    traced: Traced | None = None
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
    memory_plan: MemoryPlan | None = None
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)  # name -> collect_features.Moments
    capture_plans: dict[str, Any] = field(default_factory=dict)  # name -> Capture
    assignments: dict[str, Assignment] = field(default_factory=dict)
    merged_state: dict[str, torch.Tensor] = field(default_factory=dict)
    refinements: dict[str, str] = field(default_factory=dict)  # weight -> what refine_weights did
    result: Any = None
    # caches derived from the fields above (axis layout -> position index)
    axis_index: dict = field(default_factory=dict, repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    # stage -> (start, end) in time.perf_counter() seconds: lets a profiler (benchmarks/run.py's
    # memory sampler) attribute what it measured to the passes
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)

    @property
    def strict(self) -> bool:
        return self.options.strict

    @property
    def space_names(self) -> dict[int, str]:
        """Space id -> name of the group it stands for."""
        cached = self.__dict__.get("_space_names")
        if cached is None or cached[0] is not self.spaces or cached[1] != len(self.spaces):
            names = {gs.space: name for name, gs in self.spaces.items()}
            self.__dict__["_space_names"] = cached = (self.spaces, len(self.spaces), names)
        return cached[2]

    def group(self, name: str) -> PermutationGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no group named {name!r}; groups: {[g.name for g in self.groups][:20]}")

    def free_groups(self) -> list[PermutationGroup]:
        return [g for g in self.groups if not g.frozen and g.size > 1]

    def aligned_units(self) -> tuple[int, int]:
        """(hidden units in solved groups, all hidden units): units count every head."""
        hidden = [g for g in self.groups if g.hidden]
        aligned = sum(g.units for g in hidden if g.name in self.assignments)
        return aligned, sum(g.units for g in hidden)

    def dump(self) -> str:
        lines = [f"program for {type(self.model).__name__}: passes {self.done}"]
        for g in self.groups:
            lines.append(f"  {g}")
            for m in g.members:
                lines.append(f"      {m}")
            if g.name in self.assignments:
                a = self.assignments[g.name]
                lines.append(f"      assignment: {a.n_merged} merged units, score {a.score:.4f}")
        if self.unruled:
            lines.append(
                "  ops without rules: "
                + ", ".join(f"{op} at {where} x{n}" for (op, where), n in self.unruled.items())
            )
        return "\n".join(lines)


class PassOrderError(RuntimeError):
    """A pass ran before a pass it requires (a bug in the caller's pass list)."""


@dataclass(frozen=True)
class Pass:
    """A named step of the pipeline.

    fn: `fn(program) -> program`; requires: names of passes that must have run before;
    describe: what a progress line says while it runs; lower_memory: what the user can do when
    it runs out of memory.
    """

    name: str
    fn: Callable[[Program], Program]
    requires: tuple[str, ...] = ()
    describe: str = ""
    lower_memory: str = ""


def run_passes(program: Program, passes: list[Pass]) -> Program:
    """Run passes in order, timing each; honours GRAPHMERGE_DUMP.

    Raises `PassOrderError` when a pass's prerequisite has not run, and `ResourceError` (naming
    the pass, the size asked for and what lowers it) when a pass runs out of memory.
    """
    dump = os.environ.get("GRAPHMERGE_DUMP", "")
    for p in passes:
        missing = [r for r in p.requires if r not in program.done]
        if missing:
            raise PassOrderError(
                f"pass {p.name} requires pass {missing[0]} to run first "
                f"(passes run so far: {program.done or 'none'})"
            )
        if program.options.progress and p.describe:
            print(f"graphmerge: {p.describe}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            program = p.fn(program)
        except GraphMergeError:
            raise
        except (MemoryError, RuntimeError) as exc:
            asked = _allocation_failure(exc)
            if asked is None:
                raise
            raise ResourceError(
                f"{p.name} ran out of memory on {type(program.model).__name__}: {asked}. "
                f"{p.lower_memory or 'Free memory or use a machine with more.'}"
            ) from exc
        end = time.perf_counter()
        program.timings[p.name] = end - start
        program.spans[p.name] = (start, end)
        program.done.append(p.name)
        if dump in (p.name, "all"):
            print(f"== after {p.name} ==\n{program.dump()}", file=sys.stderr)
    return program


def _allocation_failure(exc: BaseException) -> str | None:
    """What a failed allocation asked for (numpy or torch), or None for any other error."""
    text = str(exc)
    if isinstance(exc, MemoryError):
        shape = getattr(exc, "shape", None)
        dtype = getattr(exc, "dtype", None)
        if shape is not None and dtype is not None:
            size = int(dtype.itemsize) * int(_prod(shape))
            return f"an array of shape {tuple(shape)} ({dtype}, {_human(size)})"
        return text or "an allocation failed"
    found = re.search(r"can't allocate memory: you tried to allocate (\d+) bytes", text)
    if found:
        return f"a tensor of {_human(int(found.group(1)))}"
    return None


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"
