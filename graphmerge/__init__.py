"""graphmerge: merge separately trained networks without training, for any traceable nn.Module.

Public API (README.md describes each): `permutation_groups`, `shuffle`, `analyze`, `merge`,
`align`, `reset_bn_stats`, `export_onnx`; records `PermutationGroup`, `Member`, `Structure`,
`CaptureSite`; errors `GraphMergeError` and subclasses (`RankError` across processes), `ExportError`.
"""

from graphmerge.align import align
from graphmerge.api import Analysis, analyze, permutation_groups, shuffle
from graphmerge.errors import (
    CheckpointError,
    GraphMergeError,
    InputError,
    RankError,
    ResourceError,
    TraceError,
    VerifyError,
)
from graphmerge.export import ExportError, export_onnx
from graphmerge.merge import METHODS, merge, reset_bn_stats
from graphmerge.options import MergeOptions
from graphmerge.records import CaptureSite, Member, PermutationGroup, Structure

__all__ = [
    "METHODS",
    "Analysis",
    "CaptureSite",
    "CheckpointError",
    "ExportError",
    "GraphMergeError",
    "InputError",
    "Member",
    "MergeOptions",
    "PermutationGroup",
    "RankError",
    "ResourceError",
    "Structure",
    "TraceError",
    "VerifyError",
    "align",
    "analyze",
    "export_onnx",
    "merge",
    "permutation_groups",
    "reset_bn_stats",
    "shuffle",
]
__version__ = "0.1.0"
