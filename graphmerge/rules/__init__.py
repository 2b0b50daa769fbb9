"""The rule table: how each ATen op maps the axis layouts of its inputs to those of its outputs.

A rule is a function `rule(cx: RuleContext) -> output layouts` (graphmerge/rule_context.py). It
may unify layouts (`cx.unify`: elementwise alignment, norms, residual adds), declare contractions
(`cx.contract`: the axis is summed against a weight, which makes the weight axis a consumer and
the activation a capture site), and freeze what it cannot follow (`cx.freeze`). Rules read
arguments by schema name (`cx.arg("dim")`), so positional and keyword forms are one case.

`table.py` is the one table of op facts: which op has which rule, which rules are structural (see
stacked layouts `Blk`/`Alt` unresolved), and which ops pass an axis through (`flow`). The rules
live by family: elementwise, contractions, attention, norms, recurrent, reductions, spatial,
shapes, reshape, indexing. An op with no entry freezes every axis it touches (see
passes/annotate_axes.py); `reasons.py` documents why the ops that deliberately have none are left
so.

    >>> import torch
    >>> from graphmerge.rules import rule_for
    >>> rule_for(torch.ops.aten.relu.default).fn.__name__
    'unary'
    >>> rule_for(torch.ops.aten.cumsum.default).structural
    False
"""

from graphmerge.rules.reasons import FROZEN, frozen_reason
from graphmerge.rules.registry import INDEXED, Flow, Row, Rule, RuleTableError, build_index, row
from graphmerge.rules.table import RULES, RULES_BY_NAME, TABLE, passthrough_ops, rule_for

__all__ = [
    "FROZEN",
    "INDEXED",
    "RULES",
    "RULES_BY_NAME",
    "TABLE",
    "Flow",
    "Row",
    "Rule",
    "RuleTableError",
    "build_index",
    "frozen_reason",
    "passthrough_ops",
    "row",
    "rule_for",
]
