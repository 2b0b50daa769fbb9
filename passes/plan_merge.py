"""plan_merge: check a merge's plan against the analysed program before any heavy work.

Reads: `program.options`, `program.groups`, the traced graph. Writes nothing yet; raises
`InputError` for a stop point the model does not have (so a typo fails in seconds, not after
the statistics and the solve).
"""

from __future__ import annotations

from graphmerge.program import Program

__all__ = ["plan_merge"]


def plan_merge(program: Program) -> Program:
    """Validate the options that depend on the model (today: `stop_at`)."""
    if program.options.stop_at is not None:
        from graphmerge.passes.partial import trunk_nodes

        trunk_nodes(program, program.options.stop_at)  # raises InputError naming valid points
    return program
