"""The refit and the repair on Hugging Face models: a model merged with its shuffled copy comes
back (the target is the model's own layer outputs, which its own weights reproduce exactly)."""

import pytest
from helpers import relative_error, shuffled_hf_pair
from test_merge_transformers import CASES

import graphmerge as gm


@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_self_merge_survives_refit_and_repair(name):
    model, twin, data, probe, reference = shuffled_hf_pair(*CASES[name])
    merged, program = gm.merge(
        [model, twin],
        data,
        refine="least_squares",
        repair=True,
        iters=10,
        patience=2,
        progress=False,
        return_program=True,
    )
    refit = [w for w, what in program.refinements.items() if "refit" in what]
    assert len(refit) >= 4, program.refinements
    assert relative_error(merged.eval()(**probe).logits, reference) < 1e-3
