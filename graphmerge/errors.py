"""Exceptions graphmerge raises on purpose.

Every error a user can cause (a model that cannot be traced, bad example inputs, a checkpoint
that does not fit) is a `GraphMergeError`, so the CLI can print its message without a traceback
and exit with status 2. Anything else is a bug in graphmerge.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "GraphMergeError",
    "InputError",
    "RankError",
    "ResourceError",
    "TraceError",
    "VerifyError",
]


class GraphMergeError(Exception):
    """Base of all errors that graphmerge raises for problems with the user's model or files."""


class TraceError(GraphMergeError):
    """The model could not be traced with torch.export; the message names the failing line."""


class InputError(GraphMergeError, ValueError):
    """Bad user input: example inputs, a factory spec, an input-shape spec, an output path."""


class CheckpointError(GraphMergeError):
    """A weights file could not be read, was refused as unsafe, or does not fit the model."""


class VerifyError(GraphMergeError):
    """A self-check failed: shuffling or merging did not preserve the model's function."""


class ResourceError(GraphMergeError, MemoryError):
    """A stage ran out of memory; the message names the stage, the size and what lowers it."""


class RankError(GraphMergeError):
    """Across processes: a step failed on some ranks, or the ranks disagree (different models or
    options); the message names the ranks."""
