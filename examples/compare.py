"""One pair of models on a 5+5 digits split, trained, merged with each method, scored.

The one implementation behind `graphmerge demo` (one pair, five methods, per-task columns) and
`python -m benchmarks.digits` (several pairs, every method, mean ± std): both call
`compare_pair` and only format its `Comparison` differently.

    >>> from graphmerge_examples.compare import compare_pair
    >>> result = compare_pair("mlp", split_seed=0, seeds=(1, 2), methods=["average"], epochs=2)
    >>> sorted(result.merged), sorted(result.ensemble)
    (['average'], ['joint', 'per_task', 'task_a', 'task_b'])
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

import graphmerge as gm
from graphmerge_examples.tasks import (
    CNNEmbed,
    MLPEmbed,
    TaskData,
    calibration_batches,
    digits_split,
    ensemble_evaluate,
    evaluate,
    train,
)

__all__ = ["ARCHS", "COMPARED", "Comparison", "compare_pair", "with_least_squares"]

# The methods the demo and the benchmarks compare: key -> (label, gm.merge method, options).
COMPARED: dict[str, tuple[str, str, dict]] = {
    "average": ("average", "average", {}),
    "weight_matching": ("Git Re-Basin (weight matching)", "weight_matching", {}),
    "activation_matching": ("activation matching", "activation_matching", {}),
    "mudsc_permute": ("MuDSC permute", "mudsc", {"matcher": "permute"}),
    "zipit": ("ZipIt", "zipit", {}),
    # MuDSC zip's single-space ablations: its greedy zip (a=0.5, b=1; "zipit" above uses ZipIt's
    # own a=0.3, b=0.125) on activations only and on weights only
    "act_zip": ("activation-only zip (MuDSC α=0)", "mudsc", {"alpha": 0.0}),
    "weight_zip": ("weight-only zip (MuDSC α=1)", "mudsc", {"alpha": 1.0}),
    "mudsc_zip": ("MuDSC zip", "mudsc", {}),
    # beyond MuDSC: weights refit by least squares after matching (PLeaS, in closed form) and
    # units repaired to the models' statistics (REPAIR), see gm.merge's refine and repair
    "mudsc_permute_ls": (
        "MuDSC permute + least squares",
        "mudsc",
        {"matcher": "permute", "refine": "least_squares"},
    ),
    "mudsc_zip_repair": ("MuDSC zip + REPAIR", "mudsc", {"repair": True}),
    "mudsc_zip_ls": ("MuDSC zip + least squares", "mudsc", {"refine": "least_squares"}),
    "mudsc_zip_ls_repair": (
        "MuDSC zip + least squares + REPAIR",
        "mudsc",
        {"refine": "least_squares", "repair": True},
    ),
}


def with_least_squares(key: str) -> tuple[str, str, dict]:
    """The method `COMPARED[key]` with the merged weights refit by least squares after matching
    (label, gm.merge method, options), e.g. for "average": ("average + least squares", ...)."""
    label, method, options = COMPARED[key]
    return f"{label} + least squares", method, {**options, "refine": "least_squares"}


# arch name -> (model class, whether it takes 8x8 images rather than 64-vectors)
ARCHS: dict[str, tuple[type[nn.Module], bool]] = {"mlp": (MLPEmbed, False), "cnn": (CNNEmbed, True)}


@dataclass(frozen=True)
class Comparison:
    """What `compare_pair` measured. Scores are `evaluate`'s dicts (joint, task_a, task_b,
    per_task, as fractions); `merged` maps a `COMPARED` key to (scores, merge seconds)."""

    data: TaskData
    models: tuple[nn.Module, nn.Module]
    calibration: list[torch.Tensor]
    train_seconds: float
    alone: tuple[dict[str, float], dict[str, float]]
    ensemble: dict[str, float]
    merged: dict[str, tuple[dict[str, float], float]]


def compare_pair(
    arch: str,
    split_seed: int,
    seeds: tuple[int, int],
    methods: Sequence[str],
    epochs: int = 20,
    progress: bool = False,
) -> Comparison:
    """Train model A on task A and model B on task B, then merge them with each method.

    arch: a key of `ARCHS`; split_seed: the seed of `digits_split` (the class and train/test
    split); seeds: the training seeds of A and B; methods: keys of `COMPARED`, merged in this
    order; progress: show training and merge progress bars on stderr. Needs scikit-learn.
    """
    cls, image = ARCHS[arch]
    data = digits_split(seed=split_seed, image=image)
    start = time.perf_counter()
    a, b = (
        train(cls(), data, task=t, seed=s, epochs=epochs, progress=_label(progress, t, cls))
        for t, s in enumerate(seeds)
    )
    trained = time.perf_counter() - start
    cal = calibration_batches(data)
    alone, ensemble = (evaluate(a, data), evaluate(b, data)), ensemble_evaluate([a, b], data)
    merged = {}
    for key in methods:
        label, method, options = COMPARED[key]
        if progress:
            print(f"merging: {label}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        model = gm.merge([a, b], cal, method=method, progress=progress, **options)
        seconds = time.perf_counter() - t
        merged[key] = (evaluate(model, data), seconds)
    return Comparison(
        data=data,
        models=(a, b),
        calibration=cal,
        train_seconds=trained,
        alone=alone,
        ensemble=ensemble,
        merged=merged,
    )


def _label(progress: bool, task: int, cls: type) -> str | None:
    return f"training model {'AB'[task]} ({cls.__name__})" if progress else None
