"""trace_model: the front end as a pass (torch.export of the first model on the example inputs).

Reads: `program.model`, `program.example_inputs`. Writes: `program.traced`.
"""

from __future__ import annotations

from graphmerge.program import Program
from graphmerge.trace import trace

__all__ = ["trace_model"]


def trace_model(program: Program) -> Program:
    """Export `program.model` on `program.example_inputs` (see `graphmerge.trace.trace`)."""
    program.traced = trace(program.model, program.example_inputs)
    return program
