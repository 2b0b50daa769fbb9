"""solve_groups: assignments as index maps, for every solver, on models with a known answer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from zoo import ZOO

from graphmerge.options import MergeOptions
from graphmerge.passes import PIPELINE
from graphmerge.program import Program, run_passes

UP_TO_SOLVE = PIPELINE[: [p.name for p in PIPELINE].index("solve_groups") + 1]


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _permuted(model: MLP, perm: np.ndarray) -> MLP:
    """The same function with hidden unit i of the copy = unit perm[i] of the model."""
    twin = copy.deepcopy(model)
    index = torch.as_tensor(perm)
    with torch.no_grad():
        twin.fc1.weight.copy_(model.fc1.weight[index])
        twin.fc1.bias.copy_(model.fc1.bias[index])
        twin.fc2.weight.copy_(model.fc2.weight[:, index])
    return twin


def _solve(models, data, **options) -> Program:
    program = Program(
        model=models[0],
        example_inputs=data[0],
        options=MergeOptions(progress=False, **options),
        models=models,
        data=data,
    )
    return run_passes(program, UP_TO_SOLVE)


@pytest.mark.parametrize(
    "options",
    [
        {"matcher": "permute"},
        {"matcher": "zip"},
        {"method": "weight_matching"},
        {"method": "activation_matching"},
    ],
    ids=str,
)
def test_a_permuted_copy_is_matched_unit_for_unit(options):
    torch.manual_seed(0)
    model = MLP().eval()
    perm = np.random.default_rng(1).permutation(16)
    data = [torch.randn(64, 6) for _ in range(2)]
    program = _solve([model, _permuted(model, perm)], data, **options)
    (a,) = program.assignments.values()
    # each merged unit holds unit j of model 0 and the copy's unit that is the same unit
    partner = {int(a.targets[0][j]): j for j in range(16)}
    matched = np.array([partner[int(t)] for t in a.targets[1]])
    np.testing.assert_array_equal(matched, perm)
    assert a.n_merged == 16 and np.all(a.counts() == 2)


def test_average_solves_nothing():
    model = MLP().eval()
    program = _solve([model, model], [torch.randn(4, 6)], method="average")
    assert program.assignments == {}


def test_nested_heads_move_whole_heads_with_their_units():
    entry = ZOO["vit_block"]
    model = entry.build().eval()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.2 * torch.randn_like(p))
    program = _solve([model, twin], [entry.example(), entry.fresh()], matcher="zip")
    families = [g for g in program.groups if g.structure.nested and g.name in program.assignments]
    assert families
    for root in families:
        heads = program.assignments[root.name]
        for child in root.structure.nested:
            if child not in program.assignments:
                continue
            units = program.assignments[child]
            per = len(units.targets[0]) // root.size
            for i in (0, 1):
                head_of_unit = units.targets[i] // per
                np.testing.assert_array_equal(
                    head_of_unit, np.repeat(heads.targets[i], per), err_msg=child
                )
