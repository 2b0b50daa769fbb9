"""The refit and the repair on Hugging Face models: a model merged with its shuffled copy comes
back (the target is the model's own layer outputs, which its own weights reproduce exactly)."""

import pytest
import torch
from helpers import relative_error
from test_merge_transformers import CASES

import graphmerge as gm
from graphmerge.batches import random_batches


@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_self_merge_survives_refit_and_repair(name):
    torch.manual_seed(0)
    build, key = CASES[name]
    model = build().eval()
    example = (
        {key: torch.randn(4, 3, 16, 16)}
        if key == "pixel_values"
        else {key: torch.randint(1, 100, (4, 8))}
    )
    twin = gm.shuffle(model, example, seed=1)
    data = random_batches(example, 4, 16)
    probe = random_batches(example, 1, 4, seed=7)[0]
    reference = model(**probe).logits
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
