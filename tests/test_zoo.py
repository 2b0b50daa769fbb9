"""The function-preservation oracle over the zoo (tests/zoo.py).

For every zoo model: `gm.shuffle` permutes weights (at least one changes, two seeds differ, one seed
is reproducible), keeps the outputs on fresh inputs, returns a new instance of the same class and
leaves its input untouched. For every model whose ops all have rules, every hidden unit is
permutable: the only frozen groups are model inputs and outputs. For the model with `cumsum` over
channels, the spaces it touches are frozen with a reason naming the op, and the rest stays free.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from zoo import ZOO, GPT2Conv1D, call

import graphmerge as gm
from graphmerge.records import PermutationGroup

NAMES = sorted(ZOO)
ALL_RULES = [name for name in NAMES if ZOO[name].all_rules]

# How a frozen group's reason starts when the group is a model input or output space
# (the core says "model input x", "model input input_ids", "model output").
_IO_WORDS = ("model input", "model output")


@functools.cache
def _groups(name: str) -> tuple[PermutationGroup, ...]:
    entry = ZOO[name]
    return tuple(gm.permutation_groups(entry.build(), entry.example()))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def _is_io(reason: str | None) -> bool:
    return reason is not None and reason.lower().startswith(_IO_WORDS)


def _out_axes(model: nn.Module) -> list[tuple[str, int]]:
    """(weight name, axis) of the output units of every weight-carrying layer."""
    axes = []
    for prefix, module in model.named_modules():
        name = f"{prefix}.weight" if prefix else "weight"
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            axes.append((name, 1))
        elif isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            axes.append((name, 0))
        elif isinstance(module, (GPT2Conv1D, nn.Embedding)):
            axes.append((name, 1))
    return axes


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", NAMES)
def test_shuffle_keeps_function(name: str, seed: int) -> None:
    entry = ZOO[name]
    model = entry.build().eval()
    before = _snapshot(model)
    fresh = entry.fresh()
    with torch.no_grad():
        expected = call(model, fresh)

    twin = gm.shuffle(model, entry.example(), seed=seed)

    assert type(twin) is type(model)
    assert twin is not model
    assert not _changed(before, _snapshot(model)), "shuffle modified its input model"
    after = _snapshot(twin)
    assert after.keys() == before.keys()
    assert all(after[k].shape == before[k].shape for k in before)
    assert _changed(before, after), "shuffle changed no parameter"
    twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(call(twin, fresh), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_shuffle_seeds(name: str) -> None:
    entry = ZOO[name]
    model = entry.build().eval()
    a = _snapshot(gm.shuffle(model, entry.example(), seed=0))
    b = _snapshot(gm.shuffle(model, entry.example(), seed=1))
    again = _snapshot(gm.shuffle(model, entry.example(), seed=0))
    assert _changed(a, b), "seeds 0 and 1 gave the same weights"
    assert not _changed(a, again), "seed 0 is not reproducible"


@pytest.mark.parametrize("name", ALL_RULES)
def test_every_hidden_unit_permutable(name: str) -> None:
    groups = _groups(name)
    # A hidden unit is a parameter axis: frozen groups with no members hold none.
    blocked = [
        str(g) for g in groups if g.frozen and g.size > 1 and g.members and not _is_io(g.reason)
    ]
    assert not blocked, f"hidden units frozen in {name}: {blocked}"
    assert any(not g.frozen for g in groups)
    assert len({g.name for g in groups}) == len(groups), "group names are not unique"

    model = ZOO[name].build()
    state = model.state_dict()
    covered = set().union(*(g.params() for g in groups))
    missing = [pa for pa in _out_axes(model) if pa not in covered]
    assert not missing, f"output axes in no group: {missing}"
    for g in groups:
        for m in g.members:
            assert m.param in state, f"{g.name}: unknown member {m.param}"
            assert g.size <= state[m.param].shape[m.axis], f"{g.name}: {m} vs size {g.size}"


def test_cumsum_is_frozen_and_named() -> None:
    groups = _groups("cumsum")
    by_cumsum = [g for g in groups if g.frozen and g.reason and "cumsum" in g.reason]
    assert by_cumsum, [str(g) for g in groups]
    frozen = set().union(*(g.params() for g in by_cumsum))
    assert {("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)} <= frozen
    free = [g.params() for g in groups if not g.frozen]
    assert {("fc2.weight", 0), ("fc2.bias", 0), ("fc3.weight", 1)} in free

    # The shuffle leaves the frozen spaces in place and still permutes the free one after them.
    model = ZOO["cumsum"].build()
    twin = gm.shuffle(model, ZOO["cumsum"].example(), seed=0)
    before, after = model.state_dict(), twin.state_dict()
    assert torch.equal(after["fc1.weight"], before["fc1.weight"])
    assert not torch.equal(after["fc2.weight"], before["fc2.weight"])
    # rows of fc2 move (free group), its columns stay (frozen by cumsum)
    assert torch.equal(after["fc2.weight"].sort(0).values, before["fc2.weight"].sort(0).values)
    assert torch.equal(after["fc3.bias"], before["fc3.bias"])
