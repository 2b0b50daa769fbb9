"""The pass manager: one pipeline, prerequisites named, dumps after every pass, memory errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zoo import ZOO

import graphmerge as gm
from graphmerge.options import MergeOptions
from graphmerge.passes import ANALYSIS, PIPELINE
from graphmerge.program import Pass, PassOrderError, Program, run_passes


def _mlp_program(**options) -> Program:
    entry = ZOO["mlp"]
    model = entry.build().eval()
    example = entry.example()
    return Program(
        model=model,
        example_inputs=example,
        options=MergeOptions(**{"progress": False, **options}),
        models=[model, gm.shuffle(model, example, seed=1)],
        data=[example],
    )


def test_one_ordered_pipeline_whose_prerequisites_come_first():
    names = [p.name for p in PIPELINE]
    assert names[: len(ANALYSIS)] == [p.name for p in ANALYSIS]
    assert names[-4:] == ["solve_groups", "rewrite", "refine_weights", "build_module"]
    for i, p in enumerate(PIPELINE):
        assert set(p.requires) <= set(names[:i]), p.name


def test_a_missing_prerequisite_names_both_passes():
    rewrite = next(p for p in PIPELINE if p.name == "rewrite")
    with pytest.raises(PassOrderError, match="pass rewrite requires pass solve_groups"):
        run_passes(_mlp_program(), [*ANALYSIS, rewrite])


def test_merge_is_one_run_over_the_pipeline():
    program = run_passes(_mlp_program(), PIPELINE)
    assert program.done == [p.name for p in PIPELINE]
    assert set(program.timings) >= set(program.done)
    merged = program.result
    probe = ZOO["mlp"].fresh()
    assert torch.allclose(merged(probe), program.model(probe), atol=1e-5)


def test_dump_after_every_pass(monkeypatch, capsys):
    monkeypatch.setenv("GRAPHMERGE_DUMP", "all")
    run_passes(_mlp_program(), PIPELINE)
    err = capsys.readouterr().err
    for p in PIPELINE:
        assert f"== after {p.name} ==" in err
    assert "assignment: " in err  # the dump shows the solved groups after solve_groups


def test_progress_lines_say_what_is_happening(capsys):
    run_passes(_mlp_program(progress=True), PIPELINE)
    err = capsys.readouterr().err
    assert "graphmerge: tracing the model" in err
    assert "graphmerge: writing the merged weights" in err
    assert "no gain" in err  # the sweeps bar shows the patience counter, not an ETA over 100


def _allocate_numpy(program):
    np.empty((1 << 40,))  # 8 TiB: the allocation fails at once
    return program


def _allocate_torch(program):
    torch.empty(1 << 40)
    return program


def _fail(program):
    raise RuntimeError("unrelated")


def test_out_of_memory_in_a_pass_names_the_pass_the_size_and_the_way_out():
    step = Pass("solve_groups", _allocate_numpy, lower_memory="Try matcher='permute'.")
    with pytest.raises(gm.ResourceError, match=r"solve_groups ran out of memory") as info:
        run_passes(_mlp_program(), [step])
    text = str(info.value)
    assert "(1099511627776,)" in text and "8.0 TiB" in text and "matcher='permute'" in text
    with pytest.raises(gm.ResourceError, match=r"collect_features .* a tensor of 4\.0 TiB"):
        run_passes(_mlp_program(), [Pass("collect_features", _allocate_torch)])
    with pytest.raises(RuntimeError, match="unrelated"):  # other errors pass through unchanged
        run_passes(_mlp_program(), [Pass("x", _fail)])
