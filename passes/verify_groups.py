"""verify_groups: check the inferred groups on the user's own model, and freeze any that fail.

Reads: `program.groups`, `program.spaces`, `program.axis_layouts`, the model and example inputs.
Writes: `program.groups` (each free group gets `verified=True`, or is frozen with the reason
`failed self-check: ...`), `program.timings["verify_forwards"]`.

One forward with every free group permuted at once, on the first 8 samples of a batch-first example
(in float64 where the model allows and has at most 50M parameters, so that the tolerance can be
tight; larger models: float32 on two samples); on failure, bisection finds the groups responsible and freezes
exactly those, with a warning naming them, their members and the ops on their spaces.
`strict=True` raises `VerifyError` instead.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
from torch.func import functional_call
from torch.utils._pytree import tree_leaves

from graphmerge.errors import InputError, VerifyError
from graphmerge.permute import permute_state_dict, random_permutations
from graphmerge.program import Program
from graphmerge.trace import eval_mode, normalize_inputs

__all__ = ["output_error", "verify_groups"]

_SEED = 20240301
# Models with more parameters are checked in float32 (tolerance 1e-4): a float64 copy of their
# weights would cost more memory than the rest of the merge; and on the first two samples of the
# example when it is batch-first (the check's forwards cost as much as a calibration batch's).
FLOAT64_CHECK_MAX_PARAMS = 50_000_000
# Smaller models are checked in float64 on at most this many samples of a batch-first example
# (a float64 forward over a whole calibration batch of images costs several float32 ones).
CHECK_SAMPLES = 8


def _cast(value, dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


def _first_rows(value, keep: int):
    return value[:keep] if isinstance(value, torch.Tensor) else value


class _Checker:
    """Runs the model with a permuted state dict and measures the output error."""

    def __init__(self, program: Program):
        self.program = program
        self.model = program.model
        self.args, self.kwargs = normalize_inputs(program.example_inputs)
        self.state = {k: v.detach() for k, v in self.model.state_dict().items()}
        params = sum(v.numel() for v in self.state.values() if v.is_floating_point())
        # float64 for a tight tolerance, unless a float64 copy of the weights is too large
        self.dtype = torch.float64 if params <= FLOAT64_CHECK_MAX_PARAMS else torch.float32
        self.forwards = 0
        # a large model on two samples (its forwards cost as much as a calibration batch's)
        keep = 2 if params > FLOAT64_CHECK_MAX_PARAMS else CHECK_SAMPLES
        full, dtype = (self.args, self.kwargs), self.dtype
        if self._cut_to_rows(keep):
            try:  # on the first `keep` rows, if the model runs on them
                self.reference = self._reference()
            except Exception:  # noqa: BLE001 (not batch-first after all: the whole example)
                self.args, self.kwargs = full
                self.dtype = dtype
                self.reference = self._reference()
        else:
            self.reference = self._reference()
        self._check_finite()
        # Tight in float64, unless the model casts to a lower precision inside (RMSNorm's
        # `.to(torch.float32)`): then permuted sums round at that precision.
        self.tolerance = 1e-7 if self.dtype == torch.float64 and not _casts_down(program) else 1e-4

    def _reference(self) -> list:
        """The outputs with the original weights, in float64 if the model runs in it."""
        try:
            return self._run(self.state)
        except Exception:
            if self.dtype == torch.float32:
                raise
            self.dtype = torch.float32
            return self._run(self.state)

    def _check_finite(self) -> None:
        for i, out in enumerate(self.reference):
            if out.is_floating_point() and not torch.isfinite(out).all():
                raise InputError(
                    f"output {i} of {type(self.model).__name__} on the example inputs "
                    "has NaN/inf values; check the weights and the inputs"
                )

    def _cut_to_rows(self, keep: int) -> bool:
        """Cut every input to its first `keep` rows when all inputs share a leading axis longer
        than that; returns whether it did."""
        tensors = [v for v in (*self.args, *self.kwargs.values()) if isinstance(v, torch.Tensor)]
        leading = {v.shape[0] if v.dim() else 0 for v in tensors}
        if len(leading) != 1 or leading.pop() <= keep:
            return False
        self.args = tuple(_first_rows(a, keep) for a in self.args)
        self.kwargs = {k: _first_rows(v, keep) for k, v in self.kwargs.items()}
        return True

    def _run(self, state):
        state = {k: _cast(v, self.dtype) for k, v in state.items()}
        args = tuple(_cast(a, self.dtype) for a in self.args)
        kwargs = {k: _cast(v, self.dtype) for k, v in self.kwargs.items()}
        self.forwards += 1
        with torch.no_grad(), eval_mode(self.model):
            out = functional_call(self.model, state, args, kwargs, tie_weights=False, strict=False)
        return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]

    def error(self, names) -> tuple[float, int]:
        """Max relative output error with the named groups permuted (and which output)."""
        perms = random_permutations(self.program, _SEED, names, avoid_identity=True)
        if not perms:
            return 0.0, -1
        out = self._run(permute_state_dict(self.program, perms, self.state))
        return output_error(self.reference, out)


def _casts_down(program: Program) -> bool:
    """Does the traced graph cast to float32 or lower anywhere?"""
    low = {torch.float32, torch.float16, torch.bfloat16}
    for node in program.traced.graph.nodes:
        if (
            node.op == "call_function"
            and getattr(node.target, "__name__", "").split(".")[0] in ("_to_copy", "to")
            and (node.kwargs.get("dtype") in low or any(a in low for a in node.args[1:]))
        ):
            return True
    return False


def output_error(ref: list, out: list) -> tuple[float, int]:
    """Worst error over outputs, relative to each output's scale; inf on a shape change."""
    worst, where = 0.0, -1
    for i, (a, b) in enumerate(zip(ref, out)):
        if a.shape != b.shape:
            return float("inf"), i
        if not a.is_floating_point():
            err = 0.0 if torch.equal(a, b) else float("inf")
        else:
            scale = a.abs().max().item() if a.numel() else 0.0
            err = (a - b).abs().max().item() / (1.0 + scale) if a.numel() else 0.0
        if err > worst or math.isnan(err):
            worst, where = err, i
    return worst, where


def _bisect(check: _Checker, names: list[str]) -> dict[str, tuple[float, int]]:
    """Groups among `names` that break the function on their own (with their errors)."""
    err = check.error(set(names))
    if err[0] <= check.tolerance:
        return {}
    if len(names) == 1:
        return {names[0]: err}
    mid = len(names) // 2
    bad = _bisect(check, names[:mid])
    bad.update(_bisect(check, names[mid:]))
    if not bad:  # only the combination fails: blame all of them
        bad = {n: err for n in names}
    return bad


def _describe(program: Program, name: str) -> str:
    g = program.group(name)
    members = ", ".join(str(m) for m in g.members[:6])
    more = f" (+{len(g.members) - 6} more)" if len(g.members) > 6 else ""
    return f"{name} [{members}{more}]"


def verify_groups(program: Program) -> Program:
    """Self-check the free groups; see the module docstring."""
    free = [g.name for g in program.free_groups()]
    if not free:
        return program
    check = _Checker(program)
    bad = _bisect(check, free)
    if bad:
        # the groups that pass alone must also pass together once the bad ones are out
        rest = [n for n in free if n not in bad]
        err = check.error(set(rest)) if rest else (0.0, -1)
        if err[0] > check.tolerance:
            bad.update({n: err for n in rest})
    program.timings["verify_forwards"] = check.forwards
    if bad:
        lines = [
            f"{_describe(program, n)}: max error {e:.3g} on output {o}" for n, (e, o) in bad.items()
        ]
        msg = (
            "graphmerge self-check: permuting these groups changed the outputs of "
            f"{type(program.model).__name__}, so they are frozen (a missing or wrong rule):\n  "
            + "\n  ".join(lines)
        )
        if program.strict:
            raise VerifyError(msg)
        warnings.warn(msg, stacklevel=2)
    groups = []
    for g in program.groups:
        if g.name in bad:
            e, o = bad[g.name]
            g = dataclasses.replace(
                g,
                frozen=True,
                verified=False,
                reason=f"failed self-check: max error {e:.3g} on output {o}",
            )
        elif g.name in free:
            g = dataclasses.replace(g, verified=True)
        groups.append(g)
    program.groups = groups
    return program
