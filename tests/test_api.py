"""Public API contract: inputs never modified, same class back, clear errors on bad input."""

import pytest
import torch
from torch import nn

import graphmerge as gm


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        if h.sum() > 0:  # Python control flow on a tensor value: not traceable
            return h * 2
        return h


def test_shuffle_returns_same_class_and_leaves_input_untouched():
    torch.manual_seed(0)
    net = Small().train()
    net.bn.running_mean.normal_()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    twin = gm.shuffle(net, torch.randn(5, 4), seed=1)
    assert type(twin) is Small and twin is not net
    assert net.training and net.bn.training, "the training flag must be restored"
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    net.eval(), twin.eval()
    probe = torch.randn(9, 4)
    torch.testing.assert_close(twin(probe), net(probe), rtol=1e-4, atol=1e-5)
    assert not torch.equal(twin.bn.running_mean, net.bn.running_mean)


def test_inputs_as_tuple_and_dict():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(3, 6), nn.Linear(5, 6), nn.Linear(6, 2)

        def forward(self, x, y):
            return self.out(torch.relu(self.a(x) + self.b(y)))

    net = TwoInputs().eval()
    x, y = torch.randn(2, 3), torch.randn(2, 5)
    by_tuple = gm.permutation_groups(net, (x, y))
    by_dict = gm.permutation_groups(net, {"x": x, "y": y})
    assert [g.name for g in by_tuple] == [g.name for g in by_dict]
    free = [g for g in by_tuple if not g.frozen]
    assert len(free) == 1 and free[0].params() >= {
        ("a.weight", 0),
        ("b.weight", 0),
        ("out.weight", 1),
    }


def test_untraceable_model_names_class_and_line():
    with pytest.raises(gm.TraceError) as err:
        gm.permutation_groups(DataDependent(), torch.randn(2, 4))
    msg = str(err.value)
    assert "DataDependent" in msg and "test_api.py" in msg


def test_wrong_input_shape_is_input_error():
    with pytest.raises(gm.InputError, match=r"Small.*\(2, 7\)"):
        gm.permutation_groups(Small(), torch.randn(2, 7))


def test_wrong_input_type_is_input_error():
    with pytest.raises(gm.InputError, match="Tensor"):
        gm.permutation_groups(Small(), [[1.0, 2.0]])
    with pytest.raises(gm.InputError, match="nn.Module"):
        gm.permutation_groups("not a model", torch.randn(2, 4))
    with pytest.raises(gm.InputError, match="must be a Tensor"):
        gm.permutation_groups(Small(), 3.0)


def test_names_are_stable_and_deterministic():
    torch.manual_seed(0)
    net = Small().eval()
    a = [g.name for g in gm.permutation_groups(net, torch.randn(3, 4))]
    b = [g.name for g in gm.permutation_groups(net, torch.randn(6, 4))]
    assert a == b and a[0] == "fc1:out"
