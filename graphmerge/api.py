"""Public API: `permutation_groups`, `analyze`, `shuffle`.

>>> import torch, graphmerge as gm
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> [g.name for g in gm.permutation_groups(net, torch.randn(3, 4)) if not g.frozen]
['0:out']
>>> twin = gm.shuffle(net, torch.randn(3, 4), seed=0)
>>> torch.allclose(twin(torch.ones(1, 4)), net(torch.ones(1, 4)), atol=1e-6)
True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from graphmerge.memory import format_bytes, resident_bytes
from graphmerge.options import MergeOptions
from graphmerge.passes import analysis_passes
from graphmerge.passes.plan_merge import estimate_memory
from graphmerge.permute import permute_state_dict, random_permutations
from graphmerge.program import Program, run_passes
from graphmerge.records import PermutationGroup, hidden_unit_share
from graphmerge.trace import Inputs

__all__ = ["Analysis", "analyze", "compile_program", "permutation_groups", "shuffle"]


def compile_program(
    model: nn.Module, example_inputs: Inputs, *, verify: bool = True, strict: bool = False
) -> Program:
    """Run the analysis passes and return the whole `Program` (for passes and tools)."""
    options = MergeOptions(strict=strict, progress=False)
    program = Program(model=model, example_inputs=example_inputs, options=options)
    return run_passes(program, analysis_passes(verify))


@dataclass(frozen=True)
class Analysis:
    """What `inspect` shows: the groups, timings, and the ops that had no rule."""

    groups: list[PermutationGroup]
    model_name: str
    trace_seconds: float
    infer_seconds: float
    verify_seconds: float
    unruled: list[tuple[str, str, int]] = field(default_factory=list)
    param_count_permuted: int = 0
    param_count_total: int = 0
    merge_memory: int = 0
    program: Program | None = field(default=None, repr=False, compare=False)

    def describe_memory(self) -> str:
        """ "merge needs about X": the estimated peak of merging two such models (MuDSC zip)."""
        return (
            f"merging two of these (MuDSC zip) needs about {format_bytes(self.merge_memory)} "
            "of memory"
        )

    @property
    def permutable_share(self) -> float:
        """Share of hidden units (groups of > 1 unit that are not the model's inputs or
        outputs) that may be permuted."""
        free, total = hidden_unit_share(self.groups)
        return free / total if total else 0.0


def analyze(
    model: nn.Module, example_inputs: Inputs, *, verify: bool = True, strict: bool = False
) -> Analysis:
    """Trace `model`, infer and verify its permutation groups, and report on them."""
    program = compile_program(model, example_inputs, verify=verify, strict=strict)
    t = program.timings
    state = model.state_dict()
    permuted = {m.param for g in program.groups if not g.frozen and g.size > 1 for m in g.members}
    return Analysis(
        groups=list(program.groups),
        model_name=type(model).__name__,
        trace_seconds=t.get("trace", 0.0),
        infer_seconds=t.get("annotate_axes", 0.0) + t.get("infer_groups", 0.0),
        verify_seconds=t.get("verify_groups", 0.0),
        unruled=[(op, where, n) for (op, where), n in sorted(program.unruled.items())],
        param_count_permuted=sum(state[p].numel() for p in permuted if p in state),
        param_count_total=sum(v.numel() for v in state.values()),
        merge_memory=_merge_memory(program, state),
        program=program,
    )


def _merge_memory(program: Program, state: dict) -> int:
    """Peak bytes of a default two-model merge in a process like this one: what it holds now
    (one model, the traced program, the runtime), a second model, and the merge's own peak
    (see `estimate_memory`)."""
    weights = sum(v.numel() * v.element_size() for v in state.values())
    extra = max(estimate_memory(program, n_models=2).values(), default=0)
    return resident_bytes() + weights + extra


def permutation_groups(
    model: nn.Module, example_inputs: Inputs, *, verify: bool = True, strict: bool = False
) -> list[PermutationGroup]:
    """The model's permutation groups, in a deterministic order (see `PermutationGroup`).

    example_inputs: a Tensor, a tuple of positional Tensors, or a dict of keyword Tensors.
    verify: self-check every group on the example (a failing group is frozen, with a warning);
    strict: raise `VerifyError` instead of freezing.
    """
    return list(compile_program(model, example_inputs, verify=verify, strict=strict).groups)


def shuffle(
    model: nn.Module, example_inputs: Inputs, seed: int = 0, *, strict: bool = False
) -> nn.Module:
    """A copy of `model` (same class) with every free group randomly permuted.

    The function is unchanged: the permutations are exactly those the groups allow. The input
    model is not modified.
    """
    program = compile_program(model, example_inputs, strict=strict)
    perms = random_permutations(program, seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    new_state = permute_state_dict(program, perms, state)
    twin = copy.deepcopy(model)
    twin.load_state_dict(new_state)
    return twin
