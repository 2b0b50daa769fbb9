"""Public records: what `permutation_groups` returns and what the rest of graphmerge passes around.

All records are frozen dataclasses so that dumps diff cleanly and nothing downstream can edit
an analysis result by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CaptureSite", "Member", "PermutationGroup", "Structure"]


@dataclass(frozen=True)
class Member:
    """One tensor axis that a group permutes.

    param: state-dict name (`layer1.0.conv1.weight`); axis: which axis of that tensor;
    role: "out" when the axis is produced (weight rows, biases, norm affine, running stats,
    cls tokens), "in" when it is contracted by the op that uses the tensor (input columns).
    repeat: how many times each unit of the group appears along this axis (a spatial factor
    from flattening a conv map, or the other factors of a structured axis); 1 for a plain axis.
    """

    param: str
    axis: int
    role: str
    repeat: int = 1

    def __str__(self) -> str:
        rep = f" x{self.repeat}" if self.repeat != 1 else ""
        return f"{self.param}[{self.axis}]:{self.role}{rep}"


@dataclass(frozen=True)
class Structure:
    """How a group's permutation is constrained beyond "any permutation of `size` units".

    within: names of the groups this group is nested in. Its units are then permuted
        independently inside each index of those groups (units within a head, channels within a
        GroupNorm group), and move with them when they are permuted (whole heads).
    heads: number of independent copies (product of the `within` groups' sizes), 1 if none.
    kind: "plain", "within" (nested in heads / norm groups), "heads" (other groups are nested
        in this one), "blocks" (appears as one block of a concatenation on some member).
    """

    kind: str = "plain"
    within: tuple[str, ...] = ()
    heads: int = 1
    nested: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "plain":
            return "-"
        if self.within:
            return f"per {self.heads} of {'x'.join(self.within)}"
        if self.nested:
            return f"{self.kind}: holds {', '.join(self.nested)}"
        return self.kind


@dataclass(frozen=True)
class CaptureSite:
    """Where activation statistics for a group are taken: `dim` of input `arg` of fx node `node`.

    kind: "consumer-input" (the input of the group's last consumer, MuDSC's default) or
    "output" (the output of an op carrying the group, when it has no consumer).
    """

    node: str
    arg: int
    dim: int
    kind: str
    module: str = ""

    def __str__(self) -> str:
        where = f"{self.module} " if self.module else ""
        return f"{where}({self.node} arg{self.arg} dim{self.dim}, {self.kind})"


@dataclass(frozen=True)
class PermutationGroup:
    """A set of tensor axes that must share one permutation of `size` units.

    name: stable readable name from the first producer (`layer1.0.conv1:out`).
    frozen: True when the group must stay in place; `reason` says why
        (`aten.cumsum at model.py:41`, `model output`, `failed self-check: ...`).
    structure: nesting (heads, norm groups) and block facts, see `Structure`.
    members: the parameter axes it permutes.
    capture: where activation statistics for it are collected.
    verified: True when the self-check permuted it and the function held; None if not checked.
    """

    name: str
    size: int
    frozen: bool
    reason: str | None
    structure: Structure = field(default_factory=Structure)
    members: tuple[Member, ...] = ()
    capture: CaptureSite | None = None
    verified: bool | None = None

    @property
    def units(self) -> int:
        """Total units counting every independent copy (size x heads)."""
        return self.size * self.structure.heads

    @property
    def hidden(self) -> bool:
        """More than one unit and not the model's own input or output axis."""
        reason = self.reason or ""
        return self.size > 1 and not reason.startswith(("model input", "model output"))

    def params(self) -> set[tuple[str, int]]:
        """The (parameter name, axis) pairs of its members."""
        return {(m.param, m.axis) for m in self.members}

    def __str__(self) -> str:
        state = f"frozen ({self.reason})" if self.frozen else "free"
        return f"{self.name} size={self.size} {state} structure={self.structure} members={len(self.members)}"


def hidden_unit_share(groups) -> tuple[int, int]:
    """(permutable units, all hidden units): groups of more than one unit that are not the
    model's input or output axes; units count every head."""
    hidden = [g for g in groups if g.hidden]
    return sum(g.units for g in hidden if not g.frozen), sum(g.units for g in hidden)
