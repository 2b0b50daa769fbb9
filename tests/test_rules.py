"""The op table (graphmerge/rules/table.py) and the rules' argument handling.

The table: every name resolves to a torch op, a bad name or a duplicate raises at build time,
pass-through facts have one source. Rules read arguments by schema name, so keyword, positional
and default forms are one case; a misspelt argument name raises. Rules are run here on one-node
graphs (overloads that torch.export does not emit); the rule bugs found while splitting the table
have end-to-end tests in tests/test_rule_regressions.py.
"""

from __future__ import annotations

import operator
from types import SimpleNamespace

import pytest
import torch
from torch import fx

from graphmerge.layout import UNIT, SpaceStore
from graphmerge.program import AXES, AxesMeta
from graphmerge.rule_context import RuleContext, UnknownArgument, normalized_args
from graphmerge.rules import (
    RULES,
    RULES_BY_NAME,
    TABLE,
    RuleTableError,
    build_index,
    elementwise,
    flows,
    passthrough_ops,
    row,
    rule_for,
    shapes,
)

aten = torch.ops.aten


# -- the table ------------------------------------------------------------------------------------
def test_every_name_resolves_to_a_torch_op_and_finds_its_rule():
    checked = 0
    for r in TABLE:
        for name in r.names:
            ns, _, op = name.partition(".")
            if ns == "aten":
                packet = getattr(aten, op)
                assert isinstance(packet, torch._ops.OpOverloadPacket), name
                overloads = packet.overloads()
                assert overloads, name
                # a graph node's target is an overload: it finds the row's rule
                assert rule_for(getattr(packet, overloads[0])).fn is r.rule.fn, name
                assert rule_for(getattr(packet, overloads[0])).structural is r.rule.structural
            elif ns == "operator":
                assert rule_for(getattr(operator, op)).fn is r.rule.fn
            else:  # a library's namespace, looked up by name when its ops appear
                assert RULES_BY_NAME[name].fn is r.rule.fn
            checked += 1
    assert checked == len(RULES) + len(RULES_BY_NAME) > 300


def test_each_op_is_listed_once():
    names = [n for r in TABLE for n in r.names]
    assert len(names) == len(set(names))
    assert sum(n == "aten.einsum" for n in names) == 1


def test_a_misspelt_op_name_raises_naming_it():
    with pytest.raises(RuleTableError, match=r"aten\.reluu is not an ATen op"):
        build_index([row("relu reluu", elementwise.unary)])
    with pytest.raises(RuleTableError, match=r"operator\.getitme"):
        build_index([row("operator.getitme", elementwise.unary)])
    with pytest.raises(RuleTableError, match=r"aten\.1relu"):
        build_index([row("1relu", elementwise.unary)])


def test_an_op_listed_twice_raises():
    with pytest.raises(RuleTableError, match=r"aten\.einsum is listed twice"):
        build_index([row("einsum", elementwise.unary), row("mm einsum", elementwise.binary)])


def test_a_pass_through_op_must_have_a_structural_rule():
    with pytest.raises(RuleTableError, match=r"aten\.clone.*not structural"):
        build_index([row("clone", elementwise.unary, flow=flows.same_axis)])


def test_other_namespaces_are_kept_by_name():
    by_target, by_name = build_index([row("relu mylib.fused_op", elementwise.unary)])
    assert set(by_name) == {"mylib.fused_op"} and set(by_target) == {aten.relu}
    assert "self" in by_target[aten.relu].arguments


def test_pass_through_ops_come_from_the_table():
    from graphmerge import rule_context

    assert not hasattr(rule_context, "_PASSTHROUGH")
    followed = passthrough_ops()
    for name in followed:
        assert RULES[getattr(aten, name.split(".")[1])].structural, name
    # every view, copy and axis permutation the rules move stacked layouts through is followed
    assert {
        "aten.view",
        "aten.reshape",
        "aten.flatten",
        "aten.unflatten",
        "aten.permute",
        "aten.transpose",
        "aten.swapaxes",
        "aten.movedim",
        "aten.t",
        "aten.unsqueeze",
        "aten.squeeze",
        "aten.expand",
        "aten.clone",
        "aten.contiguous",
        "aten.select",
        "aten.unbind",
    } <= set(followed)
    assert "aten.stack" not in followed and "aten.cat" not in followed


# -- rules on one-node graphs ---------------------------------------------------------------------
def _run(op, *args, **kwargs):
    """Run `op`'s rule on a one-node graph. Tensor arguments (also inside lists) become
    placeholders with fresh spaces. Returns (rule output, input layouts, store)."""
    graph, store = fx.Graph(), SpaceStore()
    inputs = []

    def lift(a):
        if isinstance(a, torch.Tensor):
            node = graph.placeholder(f"x{len(inputs)}")
            node.meta["val"] = a
            dims = tuple(store.new(s, f"x{len(inputs)}:{i}") for i, s in enumerate(a.shape))
            node.meta[AXES] = AxesMeta(dims, None)
            inputs.append(dims)
            return node
        if isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
            return [lift(t) for t in a]
        return a

    fx_args = tuple(lift(a) for a in args)
    fx_kwargs = {k: lift(v) for k, v in kwargs.items()}
    node = graph.call_function(op, fx_args, fx_kwargs)
    node.meta["val"] = op(*args, **kwargs)
    rule = rule_for(op)
    program = SimpleNamespace(store=store, param_roles={}, sites=[])
    cx = RuleContext(program, node, *normalized_args(node), rule.structural)
    return rule.fn(cx), inputs, store


def test_normalized_args_fill_keywords_and_defaults_in_schema_order():
    graph = fx.Graph()
    x = graph.placeholder("x")
    node = graph.call_function(aten.sum.dim_IntList, (x,), {"dim": [-1], "keepdim": True})
    args, names = normalized_args(node)
    assert names == ["self", "dim", "keepdim", "dtype"]
    assert args == [x, [-1], True, None]
    node = graph.call_function(aten.cumsum.default, (x, 1))
    assert normalized_args(node) == ([x, 1, None], ["self", "dim", "dtype"])
    assert normalized_args(graph.call_function(operator.getitem, (x, 2))) == ([x, 2], [])


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((-1, True), {}),  # positional, negative dim
        ((), {"dim": [-1], "keepdim": True}),  # keywords
        (([2],), {"keepdim": True}),  # mixed, positive dim
    ],
)
def test_reduction_reads_dim_and_keepdim_in_every_form(args, kwargs):
    out, (x,), _ = _run(aten.sum.dim_IntList, torch.randn(2, 3, 4), *args, **kwargs)
    assert out == (x[0], x[1], UNIT)


def test_reduction_overload_without_dim_reduces_everything():
    out, _, _ = _run(aten.sum.default, torch.randn(2, 3), dtype=torch.float64)
    assert out == ()
    out, _, _ = _run(aten.var.default, torch.randn(2, 3))  # was: `unbiased` read as the dim
    assert out == ()
    out, _, _ = _run(aten.norm.ScalarOpt_dtype, torch.randn(2, 3), 2, dtype=torch.float64)
    assert out == ()  # was: the dtype read as the dim


def test_kthvalue_pins_dim_not_k():
    out, (x,), store = _run(aten.kthvalue.default, torch.randn(5, 4, 3), 1, dim=-1)
    assert out == [(x[0], x[1]), (x[0], x[1])]
    assert store.frozen_reason(x[2].space) is not None
    assert store.frozen_reason(x[1].space) is None


def test_transpose_reads_dim0_or_axis0():
    t = torch.randn(2, 3, 4)
    for op in (aten.transpose.int, aten.swapaxes.default, aten.swapdims.default):
        out, (x,), _ = _run(op, t, 0, -1)
        assert out == (x[2], x[1], x[0]), op


def test_numpy_T_reverses_all_axes_and_t_swaps_the_last_two():
    out, (x,), _ = _run(aten.numpy_T.default, torch.randn(2, 3, 4))
    assert out == (x[2], x[1], x[0])
    out, (x,), _ = _run(aten.t.default, torch.randn(2, 3))
    assert out == (x[1], x[0])
    out, (x,), _ = _run(aten.mT.default, torch.randn(2, 3, 4))
    assert out == (x[0], x[2], x[1])


def test_movedim_forms_agree_with_torch():
    t = torch.randn(2, 3, 4, 5)  # distinct sizes: an output axis's size names its input axis
    for op, src, dst in [
        (aten.movedim.int, 0, -1),
        (aten.movedim.intlist, [0, 1], [3, 2]),
        (aten.movedim.int, -1, 1),
    ]:
        out, (x,), _ = _run(op, t, src, dst)
        assert out == tuple(x[t.shape.index(s)] for s in t.movedim(src, dst).shape), (src, dst)


def test_clamp_with_tensor_bounds_unifies_them_with_the_input():
    out, (x, lo), store = _run(aten.clamp.Tensor, torch.randn(3, 4), min=torch.randn(4))
    assert store.find(out[1].space) == store.find(lo[0].space) == store.find(x[1].space)
    out, (x,), _ = _run(aten.clamp.default, torch.randn(3, 4), min=0.0)
    assert out == x


def test_einsum_with_an_explicit_empty_output_is_a_full_sum():
    out, _, _ = _run(aten.einsum.default, "bf->", [torch.randn(3, 4)])
    assert out == ()
    out, (a, b), store = _run(
        aten.einsum.default, "bf,gf->bg", [torch.randn(3, 4), torch.randn(5, 4)]
    )
    assert out == (a[0], b[0])
    assert store.find(a[1].space) == store.find(b[1].space)


def test_a_misspelt_argument_name_raises():
    graph = fx.Graph()
    x = graph.placeholder("x")
    x.meta["val"] = torch.randn(2, 3)
    node = graph.call_function(aten.cumsum.default, (x,), {"dim": -1})
    program = SimpleNamespace(store=SpaceStore(), param_roles={}, sites=[])
    cx = RuleContext(program, node, *normalized_args(node), False)
    assert cx.arg("dim") == -1 and cx.arg("dtype", default="none") == "none"
    with pytest.raises(UnknownArgument, match="'dmi' is not an argument of cumsum"):
        cx.arg("dmi")
    # a name another op of the same rule has is fine: the overload just lacks it
    node = graph.call_function(aten.count_nonzero.default, (x, 1))
    cx = RuleContext(program, node, *normalized_args(node), False)
    assert cx.arg("keepdim", default=False) is False
    assert cx.arg("dim") == 1


def test_every_aten_rule_knows_its_argument_names():
    for target, rule in RULES.items():
        if isinstance(target, torch._ops.OpOverloadPacket):
            assert rule.arguments, target
    assert shapes.transpose in {r.fn for r in RULES.values()}
    assert {"dim0", "axis0"} <= RULES[aten.transpose].arguments
