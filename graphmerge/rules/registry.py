"""How the op table is built: rows of op names, resolved to torch ops once, at import.

A `Row` names ops (`"relu relu_ gelu"`, ATen unless qualified) and the `Rule` they share: the rule
function, whether it is structural, and how an axis flows through the op (pass-through ops only).
`build_index` resolves every name to its torch op overload packet and raises `RuleTableError`
naming the op when a name does not resolve, when an op is listed twice, or when facts contradict
each other. Names in other namespaces (`transformers.grouped_mm_fallback`) are kept by name, since
the library that registers them may load after graphmerge; `operator.getitem` is the Python
function fx uses for tuple outputs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import torch

__all__ = ["INDEXED", "Flow", "Row", "Rule", "RuleTableError", "build_index", "row"]

# What a flow returns for an axis that a constant index removes there (select / unbind on it).
INDEXED = "indexed"

# flow(args by schema name, input shape, output shape or None, axis) -> output axis | INDEXED | None
Flow = Callable[[Mapping[str, object], tuple, tuple | None, int], int | str | None]


@dataclass(frozen=True)
class Rule:
    """What graphmerge knows about one op: one entry of the op table.

    fn: the rule, `fn(cx: RuleContext)` -> the output layouts (a tuple of layouts, or a list of
    them for several outputs), or None when it cannot handle these arguments (the node is frozen).
    structural: fn sees stacked layouts (`Blk`/`Alt`) unresolved; other rules see them collapsed.
    flow: for pass-through ops (views, copies, axis permutations, constant indexing), where an
    axis of the first input lands in the output, so that a reshape can tell that an axis is only
    ever indexed downstream (fused qkv). None: the axis is not followed through this op.
    arguments: the schema argument names of every op that shares fn, so that `RuleContext.arg`
    can tell a misspelt name from an argument this overload lacks (None: not checked).
    """

    fn: Callable
    structural: bool = False
    flow: Flow | None = None
    arguments: frozenset[str] | None = None


@dataclass(frozen=True)
class Row:
    """Ops that share one rule: qualified names (`aten.relu`) and their facts."""

    names: tuple[str, ...]
    rule: Rule


class RuleTableError(LookupError):
    """The op table is wrong: an op name that does not resolve, an op listed twice, a
    pass-through op whose rule is not structural. A bug in graphmerge, raised at import."""


def row(names: str, fn: Callable, *, structural: bool = False, flow: Flow | None = None) -> Row:
    """A table row: whitespace-separated op names (ATen unless qualified) sharing `fn`."""
    qualified = tuple(n if "." in n else f"aten.{n}" for n in names.split())
    return Row(qualified, Rule(fn, structural, flow))


def _resolve(name: str):
    """The torch op packet (or Python function) `name` stands for; None for other namespaces."""
    ns, _, op = name.partition(".")
    if ns == "operator":
        target = getattr(operator, op, None)
        if not callable(target):
            raise RuleTableError(f"op table: {name} is not a function of Python's operator module")
        return target
    if ns != "aten":
        return None
    packet = getattr(torch.ops.aten, op, None) if op.isidentifier() else None
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        raise RuleTableError(
            f"op table: {name} is not an ATen op in torch {torch.__version__} "
            "(misspelt, or removed from torch); fix or remove the name in graphmerge/rules/table.py"
        )
    return packet


def _schema_names(packet) -> set[str]:
    """Argument names of every overload of an op packet."""
    names: set[str] = set()
    for overload in packet.overloads():
        names.update(a.name for a in getattr(packet, overload)._schema.arguments)
    return names


def _check_facts(r: Row) -> None:
    if r.rule.flow is not None and not r.rule.structural:
        raise RuleTableError(
            f"op table: {', '.join(r.names)} pass axes through (flow) but their rule "
            f"{r.rule.fn.__name__} is not structural, so stacked layouts would be collapsed"
        )


def build_index(rows: Iterable[Row]) -> tuple[dict[object, Rule], dict[str, Rule]]:
    """Resolve the table: (rules by torch target, rules of not-yet-loaded namespaces by name).

    Raises RuleTableError naming the op for a name that does not resolve, an op listed twice,
    or contradictory facts. Each `Rule` gets the argument names of all ops sharing its fn.
    """
    rows = list(rows)
    by_target: dict[object, tuple[str, Rule]] = {}
    by_name: dict[str, Rule] = {}
    arguments: dict[Callable, set[str]] = {}
    seen: set[str] = set()
    for r in rows:
        _check_facts(r)
        for name in r.names:
            if name in seen:
                raise RuleTableError(f"op table: {name} is listed twice")
            seen.add(name)
            target = _resolve(name)
            if target is None:
                by_name[name] = r.rule
                continue
            if target in by_target:
                raise RuleTableError(f"op table: {name} and {by_target[target][0]} are one op")
            by_target[target] = (name, r.rule)
            if isinstance(target, torch._ops.OpOverloadPacket):
                arguments.setdefault(r.rule.fn, set()).update(_schema_names(target))

    def finish(rule: Rule) -> Rule:
        known = arguments.get(rule.fn)
        return replace(rule, arguments=frozenset(known)) if known is not None else rule

    rules = {target: finish(rule) for target, (_, rule) in by_target.items()}
    return rules, {name: finish(rule) for name, rule in by_name.items()}
