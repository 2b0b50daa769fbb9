"""verify_groups: a wrong rule must cost coverage (frozen groups, a warning), never the function."""

import warnings

import pytest
import torch
from torch import nn

import graphmerge as gm
from graphmerge.rules import RULES, Rule
from graphmerge.rules.elementwise import unary


class CumsumNet(nn.Module):
    """cumsum over the feature axis in the middle: the units of fc1 cannot be permuted."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 16), nn.Linear(16, 12), nn.Linear(12, 3)

    def forward(self, x):
        h = torch.cumsum(self.fc1(x), dim=-1)
        return self.fc3(torch.relu(self.fc2(h)))


def _free(groups):
    return {g.name for g in groups if not g.frozen and g.size > 1}


@pytest.fixture
def wrong_cumsum_rule(monkeypatch):
    """Test-only bug: declare cumsum elementwise."""
    monkeypatch.setitem(RULES, torch.ops.aten.cumsum, Rule(unary))


def test_correct_table_freezes_cumsum_and_reports_it():
    torch.manual_seed(0)
    net, x = CumsumNet().eval(), torch.randn(4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no self-check warning on a correct table
        groups = gm.permutation_groups(net, x)
    fc1 = next(g for g in groups if g.name == "fc1:out")
    assert fc1.frozen and "cumsum" in fc1.reason
    assert _free(groups) == {"fc2:out"}
    assert all(g.verified for g in groups if not g.frozen and g.size > 1)


def test_wrong_rule_is_caught_and_frozen(wrong_cumsum_rule):
    torch.manual_seed(0)
    net, x = CumsumNet().eval(), torch.randn(4, 6)
    unverified = gm.permutation_groups(net, x, verify=False)
    assert "fc1:out" in _free(unverified), "the test-only wrong rule should make fc1 look free"
    with pytest.warns(UserWarning, match=r"fc1:out") as record:
        groups = gm.permutation_groups(net, x)
    message = str(record[0].message)
    assert "fc1.weight[0]:out" in message and "max error" in message
    fc1 = next(g for g in groups if g.name == "fc1:out")
    assert fc1.frozen and fc1.reason.startswith("failed self-check") and fc1.verified is False
    assert _free(groups) == {"fc2:out"}  # exactly the affected group was frozen
    with pytest.warns(UserWarning):
        twin = gm.shuffle(net, x, seed=3)
    probe = torch.randn(7, 6)
    torch.testing.assert_close(twin(probe), net(probe), rtol=1e-4, atol=1e-5)
    assert not torch.equal(twin.fc2.weight, net.fc2.weight)


def test_wrong_rule_strict_raises(wrong_cumsum_rule):
    net, x = CumsumNet().eval(), torch.randn(4, 6)
    with pytest.raises(gm.VerifyError, match="fc1:out"):
        gm.permutation_groups(net, x, strict=True)


@pytest.mark.parametrize("name", __import__("zoo").ZOO)
def test_correct_rules_lose_nothing_to_the_self_check(name):
    from zoo import ZOO

    entry = ZOO[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a self-check failure would warn
        groups = gm.permutation_groups(entry.build().eval(), entry.example())
    assert not [g.name for g in groups if (g.reason or "").startswith("failed self-check")]
    assert all(g.verified for g in groups if not g.frozen and g.size > 1)


def test_large_models_are_checked_in_float32_on_two_samples(monkeypatch):
    """Past FLOAT64_CHECK_MAX_PARAMS the self-check runs in float32 on the first two rows of a
    batch-first example; it finds the same groups, and still catches a wrong permutation."""
    import importlib

    from zoo import ZOO

    from graphmerge.api import compile_program

    module = importlib.import_module("graphmerge.passes.verify_groups")
    entry = ZOO["vit_block"]
    model, example = entry.build().eval(), entry.example()
    full = compile_program(model, example)
    monkeypatch.setattr(module, "FLOAT64_CHECK_MAX_PARAMS", 10)
    seen = []
    original = module._Checker._run

    def spy(self, state):
        seen.append((self.dtype, self.args[0].shape[0]))
        return original(self, state)

    monkeypatch.setattr(module._Checker, "_run", spy)
    large = compile_program(model, example)
    assert [g.name for g in large.groups if g.verified] == [
        g.name for g in full.groups if g.verified
    ]
    assert seen and all(dtype == torch.float32 and rows == 2 for dtype, rows in seen)


def test_the_two_sample_check_still_catches_a_wrong_rule(wrong_cumsum_rule, monkeypatch):
    import importlib

    module = importlib.import_module("graphmerge.passes.verify_groups")
    monkeypatch.setattr(module, "FLOAT64_CHECK_MAX_PARAMS", 10)
    torch.manual_seed(0)
    net, x = CumsumNet().eval(), torch.randn(8, 6)
    with pytest.warns(UserWarning, match=r"fc1:out"):
        groups = gm.permutation_groups(net, x)
    assert _free(groups) == {"fc2:out"}
