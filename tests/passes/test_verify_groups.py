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
