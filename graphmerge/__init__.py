"""graphmerge: merge separately trained networks without training, for any traceable nn.Module.

Public API (see DESIGN.md): `permutation_groups`, `shuffle`, `analyze`; records
`PermutationGroup`, `Member`, `Structure`, `CaptureSite`; errors `GraphMergeError` and subclasses.
"""
from graphmerge.api import Analysis, analyze, permutation_groups, shuffle
from graphmerge.merge import METHODS, merge, reset_bn_stats
from graphmerge.errors import CheckpointError, GraphMergeError, InputError, TraceError, VerifyError
from graphmerge.records import CaptureSite, Member, PermutationGroup, Structure

__all__ = [
    "Analysis", "analyze", "permutation_groups", "shuffle", "merge", "METHODS", "reset_bn_stats",
    "GraphMergeError", "TraceError", "InputError", "CheckpointError", "VerifyError",
    "PermutationGroup", "Member", "Structure", "CaptureSite",
]
__version__ = "0.1.0"
