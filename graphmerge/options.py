"""Merge options: one frozen, validated record shared by `gm.merge`, the YAML config and the CLI.

    >>> from graphmerge.options import MergeOptions
    >>> MergeOptions(method="zipit").resolved_alpha, MergeOptions(method="zipit").zip_params
    (0.0, (0.3, 0.125))

Every field is checked once, when the record is made; a bad value is an `InputError` naming the
field (the config loader adds the file and key).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from graphmerge.errors import InputError
from graphmerge.memory import parse_bytes

__all__ = [
    "MATCHER_NAMES",
    "METHODS",
    "REFINE_NAMES",
    "MergeOptions",
    "MethodSpec",
    "OptionError",
]


class OptionError(InputError):
    """A merge option has a bad value; `field` names the option."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _fail(field: str, message: str):
    raise OptionError(field, message)


@dataclass(frozen=True)
class MethodSpec:
    """How a method configures the solver."""

    solver: str  # "mudsc" | "weight_matching" | "average"
    alpha: float | None = None  # None: the caller's alpha
    matcher: str | None = None  # None: the caller's matcher
    needs_data: bool = True
    zip_a: float = 0.5  # ZipIt's linkage factor (MuDSC's setting by default)
    zip_b: float = 1.0  # within-model merge budget factor


METHODS: dict[str, MethodSpec] = {
    "mudsc": MethodSpec("mudsc"),
    # ZipIt with its own defaults (matching_functions.py: a=0.3, b=0.125); MuDSC's activation-only
    # ablation with MuDSC's a=0.5, b=1 is method="mudsc", alpha=0.
    "zipit": MethodSpec("mudsc", alpha=0.0, matcher="zip", zip_a=0.3, zip_b=0.125),
    "activation_matching": MethodSpec("mudsc", alpha=0.0, matcher="permute"),
    "weight_matching": MethodSpec("weight_matching", needs_data=False),
    "average": MethodSpec("average", needs_data=False),
}
MATCHER_NAMES = ("zip", "permute")
COMBINE_NAMES = ("tuple", "concat")
REFINE_NAMES = ("least_squares",)


@dataclass(frozen=True)
class MergeOptions:
    """Everything that configures one merge (see `gm.merge` for the meaning of each field).

    `resolved_*` properties apply the method's own settings (e.g. "zipit" is an activation-only
    zip with a=0.3, b=0.125) on top of the fields.
    """

    method: str = "mudsc"
    matcher: str = "zip"
    alpha: float = 0.5
    seed: int = 0
    iters: int = 100
    patience: int = 5
    reset_bn: bool = True
    zip_a: float | None = None
    zip_b: float | None = None
    strict: bool = False
    progress: bool = True
    stop_at: str | None = None
    combine: str = "tuple"
    memory_budget: int | str | None = None
    refine: str | None = None
    ridge: float = 1e-3
    repair: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            _fail("method", f"unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        if self.matcher not in MATCHER_NAMES:
            _fail("matcher", f"unknown matcher {self.matcher!r}; choose one of {MATCHER_NAMES}")
        if self.combine not in COMBINE_NAMES:
            _fail("combine", f"combine must be 'tuple' or 'concat', got {self.combine!r}")
        for name in ("seed", "iters", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                _fail(name, f"{name} must be an integer, got {value!r}")
        if self.iters < 0:
            _fail("iters", f"iters must be >= 0, got {self.iters}")
        if self.patience < 1:
            _fail("patience", f"patience must be >= 1, got {self.patience}")
        for name in ("alpha", "zip_a", "zip_b"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, (int, float)) or isinstance(value, bool)
            ):
                _fail(name, f"{name} must be a number, got {value!r}")
        if not 0.0 <= self.alpha <= 1.0:
            _fail("alpha", f"alpha must be in [0, 1], got {self.alpha}")
        if self.zip_b is not None and self.zip_b < 0:
            _fail("zip_b", f"zip_b must be >= 0, got {self.zip_b}")
        if self.refine is not None and self.refine not in REFINE_NAMES:
            _fail("refine", f"unknown refine {self.refine!r}; choose None or one of {REFINE_NAMES}")
        if not isinstance(self.ridge, (int, float)) or isinstance(self.ridge, bool):
            _fail("ridge", f"ridge must be a number, got {self.ridge!r}")
        if not 0.0 < self.ridge < float("inf"):
            _fail(
                "ridge",
                f"ridge must be > 0 (relative to the mean input variance), got {self.ridge}",
            )
        if not isinstance(self.repair, bool):
            _fail("repair", f"repair must be True or False, got {self.repair!r}")
        if self.memory_budget is not None:
            try:
                parse_bytes(self.memory_budget)
            except InputError as exc:
                _fail("memory_budget", f"memory_budget: {exc}")

    @classmethod
    def field_types(cls) -> dict[str, tuple[type, ...]]:
        """Option name -> accepted Python types (for config validation)."""
        numbers = (int, float)
        types = {
            "method": (str,),
            "matcher": (str,),
            "alpha": numbers,
            "seed": (int,),
            "iters": (int,),
            "patience": (int,),
            "reset_bn": (bool,),
            "zip_a": numbers,
            "zip_b": numbers,
            "strict": (bool,),
            "progress": (bool,),
            "stop_at": (str,),
            "combine": (str,),
            "memory_budget": (int, str),
            "refine": (str,),
            "ridge": numbers,
            "repair": (bool,),
        }
        assert set(types) == {f.name for f in dataclasses.fields(cls)}
        return types

    @property
    def budget_bytes(self) -> int | None:
        """`memory_budget` in bytes (None: fit what the machine has free)."""
        return None if self.memory_budget is None else parse_bytes(self.memory_budget)

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    @property
    def solver(self) -> str:
        """ "mudsc", "weight_matching" or "average"."""
        return self.spec.solver

    @property
    def resolved_alpha(self) -> float:
        return self.spec.alpha if self.spec.alpha is not None else self.alpha

    @property
    def resolved_matcher(self) -> str:
        return self.spec.matcher or self.matcher

    @property
    def zip_params(self) -> tuple[float, float]:
        """(a, b) of the zip matcher: the fields, else the method's own defaults."""
        a = self.spec.zip_a if self.zip_a is None else self.zip_a
        b = self.spec.zip_b if self.zip_b is None else self.zip_b
        return a, b

    @property
    def matcher_options(self) -> dict[str, float]:
        """Keyword options for the matcher (the zip's a and b; none for permute)."""
        if self.resolved_matcher != "zip":
            return {}
        a, b = self.zip_params
        return {"a": a, "b": b}

    @property
    def uses_activations(self) -> bool:
        """True when the solver reads activation statistics."""
        return self.solver == "mudsc" and self.resolved_alpha < 1.0

    @property
    def refines(self) -> bool:
        """True when merged weights are refit or repaired after the rewrite (needs data)."""
        return self.refine is not None or self.repair

    @property
    def needs_data(self) -> bool:
        """True when calibration data is required (activations, a refit or a repair)."""
        return (self.spec.needs_data and self.uses_activations) or self.refines
