"""What a user is told when a merge cannot do its job: mostly-averaged merges, bad data."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

import graphmerge as gm
from graphmerge.cli import main
from graphmerge.loading import load_factory

_GRU_FILE = """
import torch
from torch import nn


class GRUNet(nn.Module):  # every hidden unit runs through a running sum over the features
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.gru = nn.GRU(16, 32, batch_first=True)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        h, _ = self.gru(torch.relu(self.embed(x)).cumsum(-1))
        return self.head(h[:, -1].cumsum(-1))


def build():
    return GRUNet().eval()


def calibration():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(4, 5, 6, generator=gen) for _ in range(2)]
"""


def _gru_module(tmp_path):
    path = tmp_path / "gru_net.py"
    path.write_text(_GRU_FILE)
    namespace = {name: load_factory(f"{path}:{name}") for name in ("build", "calibration")}
    return path, namespace


def test_a_merge_that_aligns_almost_nothing_warns_with_the_share_and_the_op(tmp_path):
    _, ns = _gru_module(tmp_path)
    torch.manual_seed(0)
    a, b = ns["build"](), ns["build"]()
    with pytest.warns(UserWarning, match=r"only 0 of \d+ hidden units \(0%\).*cumsum"):
        gm.merge([a, b], ns["calibration"](), progress=False)


def test_the_cli_prints_the_aligned_share(tmp_path, capsys):
    path, ns = _gru_module(tmp_path)
    torch.manual_seed(0)
    from safetensors.torch import save_file

    for name in ("a", "b"):
        save_file(ns["build"]().state_dict(), tmp_path / f"{name}.safetensors")
    config = tmp_path / "merge.yaml"
    config.write_text(
        textwrap.dedent(f"""
        models:
          - {{factory: "{path}:build", weights: a.safetensors}}
          - {{factory: "{path}:build", weights: b.safetensors}}
        data: {{factory: "{path}:calibration"}}
        """)
    )
    with pytest.warns(UserWarning, match="could be aligned"):
        status = main(
            ["merge", str(config), "--out", str(tmp_path / "m.safetensors"), "--no-progress"]
        )
    assert status == 0
    assert "0 of 48 hidden units aligned (0%)" in capsys.readouterr().out


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize(
    "bad, needle",
    [
        (
            torch.randn(4, 3, 8, 8, dtype=torch.float64),
            r"batch 2.*float64.*example's is a torch\.float32",
        ),
        (torch.randn(4, 3, 8), r"batch 2.*shape \(4, 3, 8\)"),
        ((torch.randn(4, 3, 8, 8), torch.randn(4)), r"batch 2 .* 2 positional inputs"),
    ],
)
def test_calibration_batches_that_do_not_fit_a_batchnorm_model_are_refused_first(bad, needle):
    """The BatchNorm reset used to run first and fail with a raw traceback."""
    a, b = BNNet().eval(), BNNet().eval()
    data = [torch.randn(4, 3, 8, 8), bad]
    with pytest.raises(gm.InputError, match=needle):
        gm.merge([a, b], data, progress=False)


def test_a_loader_batch_that_does_not_fit_is_named_when_it_streams():
    a, b = BNNet().eval(), BNNet().eval()

    class Loader:  # re-iterable, not a list: checked batch by batch as it streams
        def __iter__(self):
            yield torch.randn(4, 3, 8, 8)
            yield torch.randn(4, 3, 8, 8).double()

    with pytest.raises(gm.InputError, match=r"calibration batch 2 for BNNet.*float64"):
        gm.merge([a, b], Loader(), progress=False)
    with pytest.raises(gm.InputError, match=r"calibration batch 2 for BNNet.*float64"):
        gm.reset_bn_stats(BNNet(), Loader())
