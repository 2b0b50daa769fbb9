"""The op table against PyTorch's core ATen opset and the ops `transformers` exports hold.

Every op of the core opset (ops with an overload tagged `torch.Tag.core`) and every op the survey
of the installed `transformers` found in an export (benchmarks/results/hf_survey.json) has a rule
or a documented reason to be frozen (graphmerge/rules/reasons.py); shape and view ops have rules
in every variant (`_copy`, `_as`, in place); the reasons name real ops that have no rule; and the
generated table (benchmarks/op_table.md) is up to date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import op_table
from benchmarks.hf_survey import OUT as SURVEY
from graphmerge.rules import FROZEN, RULES, frozen_reason, rule_for


def _covered(op: str) -> bool:
    ns, _, name = op.partition(".")
    packet = getattr(torch.ops.aten, name, None) if ns == "aten" else None
    return (packet is not None and rule_for(packet) is not None) or frozen_reason(op) is not None


def test_every_core_aten_op_has_a_rule_or_a_reason():
    core = op_table.core_aten_ops()
    assert len(core) >= 150 and "aten.convolution" in core and "aten.nonzero" in core
    missing = sorted(op for op in core if not _covered(op))
    assert not missing, f"core ATen ops with neither a rule nor a reason: {missing}"


def test_every_op_a_transformers_export_holds_has_a_rule_or_a_reason():
    data = json.loads(SURVEY.read_text())
    built = [mt for mt, row in data["models"].items() if row["ok"]]
    assert len(built) >= 200, f"only {len(built)} model types in the survey"
    seen = op_table.survey_ops(SURVEY)
    missing = {
        op: models[:3]
        for op, models in sorted(seen.items())
        if not (_covered(op) or op_table._rule_name(op))
    }
    assert not missing, f"ops in transformers exports with neither a rule nor a reason: {missing}"


_SHAPE_OPS = [
    "view",
    "view_as",
    "view_copy",
    "reshape",
    "reshape_as",
    "_reshape_alias",
    "_reshape_alias_copy",
    "_unsafe_view",
    "flatten",
    "unflatten",
    "ravel",
    "permute",
    "permute_copy",
    "transpose",
    "transpose_",
    "transpose_copy",
    "swapaxes",
    "swapaxes_",
    "swapdims",
    "swapdims_",
    "t",
    "t_",
    "t_copy",
    "mT",
    "mH",
    "adjoint",
    "matrix_H",
    "numpy_T",
    "movedim",
    "moveaxis",
    "unsqueeze",
    "unsqueeze_",
    "unsqueeze_copy",
    "squeeze",
    "squeeze_",
    "squeeze_copy",
    "expand",
    "expand_as",
    "expand_copy",
    "broadcast_to",
    "alias",
    "alias_copy",
    "detach",
    "detach_",
    "detach_copy",
    "select",
    "select_copy",
    "slice",
    "slice_copy",
    "narrow",
    "narrow_copy",
    "unbind",
    "unbind_copy",
    "split",
    "split_copy",
    "split_with_sizes",
    "split_with_sizes_copy",
    "chunk",
    "tensor_split",
    "hsplit",
    "vsplit",
    "dsplit",
    "diagonal",
    "diagonal_copy",
    "unfold",
    "unfold_copy",
    "view_as_real",
    "view_as_real_copy",
    "view_as_complex",
    "view_as_complex_copy",
    "cat",
    "stack",
    "repeat",
    "tile",
]


@pytest.mark.parametrize("name", _SHAPE_OPS)
def test_shape_and_view_ops_have_rules_in_every_variant(name):
    assert rule_for(getattr(torch.ops.aten, name)) is not None, name


# View-like ops of dense tensors that have no axis map, each with a reason: explicit strides,
# storage swaps, the replay of a view into its base. (Views of sparse and nested tensors,
# forward-mode autodiff and gradient ops have reasons too.)
_VIEWS_WITHOUT_AXIS_MAP = {
    "as_strided",
    "as_strided_",
    "as_strided_copy",
    "resize_",
    "resize_as",
    "resize_as_",
    "set_",
    "slice_inverse",
}
_NOT_DENSE = ("_nested_", "indices", "values", "_sparse_", "coalesce", "dual", "_fw_", "_test_")


def _view_like_ops() -> set[str]:
    """Every ATen op whose result aliases an input (a view), every `_copy` twin of one, every
    op tagged `inplace_view` (`transpose_`, `unsqueeze_`) and every `*_as` op, by name."""
    views, found = set(), set()
    names = {s.name.split("::", 1)[1] for s in torch._C._jit_get_all_schemas()}
    for name in sorted(n for n in names if n.isidentifier()):  # not dir(): it lists loaded ops
        packet = getattr(torch.ops.aten, name, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        for overload in packet.overloads():
            op = getattr(packet, overload)
            schema = op._schema
            if not schema.arguments or not isinstance(schema.arguments[0].type, torch.TensorType):
                continue  # TorchScript's list / dict / RRef ops
            if torch.Tag.inplace_view in op.tags:
                found.add(name)
            elif not schema.is_mutable and any(r.alias_info is not None for r in schema.returns):
                views.add(name)
        if name.endswith("_as"):
            found.add(name)
    copies = {f"{v}_copy" for v in views if hasattr(torch.ops.aten, f"{v}_copy")}
    return views | copies | found


def test_every_view_op_and_its_copy_as_and_in_place_variants_has_a_rule():
    ops = _view_like_ops()
    assert len(ops) >= 80 and {"view_copy", "expand_as", "transpose_", "unfold_copy"} <= ops
    without = {n for n in ops if rule_for(getattr(torch.ops.aten, n)) is None}
    assert all(frozen_reason(f"aten.{n}") for n in without), sorted(without)
    dense = {n for n in without if not any(k in n for k in _NOT_DENSE) and n != "_grad_sum_to_size"}
    assert dense == _VIEWS_WITHOUT_AXIS_MAP


def test_reasons_name_real_ops_without_rules():
    assert len(FROZEN) >= 10
    for op, reason in FROZEN.items():
        ns, _, name = op.partition(".")
        packet = getattr(torch.ops.aten, name, None)
        assert ns == "aten" and isinstance(packet, torch._ops.OpOverloadPacket), op
        assert packet not in RULES, f"{op} has a rule and a reason"
        assert len(reason) > 30, op


def test_a_frozen_op_quotes_its_reason():
    class Positions(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.head = torch.nn.Linear(4, 6), torch.nn.Linear(6, 2)

        def forward(self, x):
            h = self.fc(x)
            return self.head(h.as_strided(h.shape, (h.shape[1], 1)))

    import graphmerge as gm

    groups = gm.permutation_groups(Positions().eval(), torch.randn(3, 4))
    (g,) = [g for g in groups if ("fc.weight", 0) in g.params()]
    assert g.frozen and g.reason.startswith("no rule for aten.as_strided at ")
    assert "explicit strides" in g.reason


def test_the_written_table_is_up_to_date():
    expected = op_table.markdown(op_table.op_rows(SURVEY), SURVEY)
    assert op_table.TABLE_MD.read_text() == expected, "run `python -m benchmarks.op_table --write`"
    assert "**MISSING**" not in expected
