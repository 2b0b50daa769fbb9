"""build_module: the merged model the user gets back.

Reads: `program.merged_state`, `program.models`, `program.data`, `program.options`
(`reset_bn`, `stop_at`, `combine`). Writes: `program.result`.

A full merge is a new instance of the first model's class with the merged weights, its
BatchNorm statistics recomputed on the calibration data (as MuDSC and ZipIt do); a partial merge
(`stop_at`) is the GraphModule `build_partial` makes: the merged trunk, then each model's own
tail on its original weights.
"""

from __future__ import annotations

import copy

from graphmerge.passes.partial import build_partial
from graphmerge.passes.reset_bn import reset_bn_stats
from graphmerge.program import Program

__all__ = ["build_module"]


def build_module(program: Program) -> Program:
    """Fill `program.result` (see module docstring)."""
    opts = program.options
    models = program.models or [program.model]
    merged = copy.deepcopy(models[0])
    merged.load_state_dict(program.merged_state)
    if opts.reset_bn and program.data is not None:
        reset_bn_stats(merged, program.data, program.example_inputs)
    if opts.stop_at is None:
        program.result = merged
        return program
    originals = [{k: v.detach() for k, v in m.state_dict().items()} for m in models]
    program.result = build_partial(
        program, merged.state_dict(), originals, opts.stop_at, opts.combine
    )
    return program
