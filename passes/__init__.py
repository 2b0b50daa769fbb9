"""The compiler passes and the pipeline: one ordered list, analysis then merge.

    trace -> annotate_axes -> infer_groups -> verify_groups          (analysis: `ANALYSIS`)
      -> plan_merge -> reset_bn -> collect_features -> solve_groups -> rewrite
      -> refine_weights -> build_module

`gm.merge` is one `run_passes(program, PIPELINE)` call; `gm.permutation_groups`, `gm.analyze`
and `gm.shuffle` run the analysis prefix. Each pass is a function `pass(program) -> program` in
a file of the same name, and says which passes it requires.
"""

from __future__ import annotations

from graphmerge.passes.annotate_axes import annotate_axes
from graphmerge.passes.build_module import build_module
from graphmerge.passes.collect_features import collect_features
from graphmerge.passes.infer_groups import infer_groups
from graphmerge.passes.plan_merge import plan_merge
from graphmerge.passes.refine_weights import refine_weights
from graphmerge.passes.reset_bn import reset_bn
from graphmerge.passes.rewrite import rewrite
from graphmerge.passes.solve_groups import solve_groups
from graphmerge.passes.trace_model import trace_model
from graphmerge.passes.verify_groups import verify_groups
from graphmerge.program import Pass

__all__ = ["ANALYSIS", "PIPELINE", "analysis_passes"]

_FEWER = "Use smaller calibration batches or fewer models"

PIPELINE: list[Pass] = [
    Pass("trace", trace_model, (), "tracing the model (torch.export)"),
    Pass("annotate_axes", annotate_axes, ("trace",)),
    Pass("infer_groups", infer_groups, ("annotate_axes",), "inferring permutation groups"),
    Pass("verify_groups", verify_groups, ("infer_groups",), "self-checking the groups"),
    Pass("plan_merge", plan_merge, ("infer_groups",)),
    Pass(
        "reset_bn",
        reset_bn,
        ("infer_groups",),
        lower_memory="Merge fewer models at once, or pass reset_bn=False.",
    ),
    Pass(
        "collect_features",
        collect_features,
        ("reset_bn", "infer_groups"),
        lower_memory=f"{_FEWER}, or method='weight_matching' (no activations).",
    ),
    Pass(
        "solve_groups",
        solve_groups,
        ("reset_bn", "collect_features"),
        lower_memory=f"{_FEWER}, matcher='permute', or method='average'.",
    ),
    Pass("rewrite", rewrite, ("solve_groups",), "writing the merged weights"),
    Pass(
        "refine_weights",
        refine_weights,
        ("rewrite",),
        lower_memory=f"{_FEWER}, or refine=None and repair=False.",
    ),
    Pass("build_module", build_module, ("rewrite",), "building the merged model"),
]
ANALYSIS_NAMES = ("trace", "annotate_axes", "infer_groups", "verify_groups")
ANALYSIS: list[Pass] = [p for p in PIPELINE if p.name in ANALYSIS_NAMES]


def analysis_passes(verify: bool = True) -> list[Pass]:
    """The analysis prefix of the pipeline (without the self-check when verify=False)."""
    return [p for p in ANALYSIS if verify or p.name != "verify_groups"]
