"""Merging on real data: sklearn digits, 5+5 class split, two models trained from different seeds.

The models end in the paper's shared class-vector head (examples/tasks.py), so joint accuracy
is the argmax over all ten classes. A broken alignment lands near plain averaging; MuDSC and
ZipIt must beat it by a wide margin.
"""

import pytest
from helpers import trained_digits_pair

import graphmerge as gm
from graphmerge_examples.tasks import (
    calibration_batches,
    ensemble_evaluate,
    evaluate,
)

MARGIN = 0.10  # joint accuracy points over plain averaging


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def pair(request):
    data, a, b = trained_digits_pair(request.param, split_seed=0, seeds=(1, 2), epochs=15)
    return request.param, data, a, b


def _joint(model, data):
    return evaluate(model, data)["joint"]


def test_each_model_knows_its_own_task(pair):
    _, data, a, b = pair
    assert evaluate(a, data)["task_a"] > 0.95 and evaluate(b, data)["task_b"] > 0.95
    assert ensemble_evaluate([a, b], data)["joint"] > 0.8


@pytest.mark.parametrize("method,options", [("mudsc", {}), ("zipit", {})])
def test_alignment_beats_averaging(pair, method, options):
    name, data, a, b = pair
    cal = calibration_batches(data)
    average = _joint(gm.merge([a, b], cal, method="average", progress=False), data)
    merged = gm.merge([a, b], cal, method=method, progress=False, **options)
    joint = _joint(merged, data)
    assert joint >= average + MARGIN, f"{name} {method}: joint {joint:.3f} vs average {average:.3f}"
    per_task = evaluate(merged, data)["per_task"]
    assert per_task > 0.85, f"{name} {method}: per-task accuracy {per_task:.3f}"
