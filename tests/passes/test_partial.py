"""Partial merges: merged trunk, per-model tails, as one GraphModule."""

import pytest
import torch
from test_merge import _plain_init, calibration
from zoo import ZOO, call

import graphmerge as gm
from graphmerge.api import compile_program
from graphmerge.merge import stop_points
from graphmerge_examples.tasks import CNNEmbed, calibration_batches, digits_split, evaluate, train


def _points(name):
    entry = ZOO[name]
    return stop_points(compile_program(entry.build().eval(), entry.example()))


@pytest.mark.parametrize("name", ["resnet20", "vit_block"])
def test_every_stop_point_reproduces_both_models(name):
    entry = ZOO[name]
    model = _plain_init(entry.build())
    example = entry.example()
    twin = gm.shuffle(model, example, seed=1)
    data = calibration(example, batches=2, size=8)  # another batch size than the probe's
    probe = example + 0.5 * torch.randn_like(example)
    points = _points(name)
    assert len(points) > 5
    # every stop point of the transformer block; a spread of the ResNet's 58, stem to head
    for point in points if name == "vit_block" else points[::6] + points[-2:]:
        part = gm.merge(
            [model, twin],
            data,
            method="weight_matching",
            stop_at=point,
            reset_bn=False,
            progress=False,
        )
        out_a, out_b = part(probe)
        torch.testing.assert_close(out_a, call(model, probe), rtol=1e-4, atol=1e-5, msg=point)
        torch.testing.assert_close(out_b, call(twin, probe), rtol=1e-4, atol=1e-5, msg=point)


def test_concat_and_onnx(tmp_path):
    entry = ZOO["mlp"]
    model = _plain_init(entry.build())
    example = entry.example()
    twin = gm.shuffle(model, example, seed=2)
    part = gm.merge(
        [model, twin],
        calibration(example),
        method="mudsc",
        stop_at="layers.0",
        combine="concat",
        progress=False,
    )
    probe = entry.fresh()
    out = part(probe)
    torch.testing.assert_close(
        out, torch.cat([model(probe), twin(probe)], -1), rtol=1e-4, atol=1e-5
    )
    path = gm.export_onnx(part, example, tmp_path / "partial.onnx")
    assert path.exists()


def test_unknown_stop_point_lists_the_valid_ones():
    entry = ZOO["mlp"]
    model = entry.build().eval()
    with pytest.raises(gm.InputError, match=r"valid stop points: layers\.0, layers\.1"):
        gm.merge(
            [model, model],
            None,
            method="average",
            example_inputs=entry.example(),
            stop_at="layers.9",
        )


def test_partial_keeps_task_accuracy_at_least_the_full_merge():
    torch.set_num_threads(1)
    data = digits_split(seed=0, image=True)
    a = train(CNNEmbed(), data, task=0, seed=1, epochs=15)
    b = train(CNNEmbed(), data, task=1, seed=2, epochs=15)
    cal = calibration_batches(data)
    full = evaluate(gm.merge([a, b], cal, method="mudsc", progress=False), data)
    part = gm.merge([a, b], cal, method="mudsc", stop_at="conv1", progress=False)
    tail_a = lambda x: part(x)[0]
    tail_b = lambda x: part(x)[1]
    acc_a = evaluate(_Wrap(tail_a), data)["task_a"]
    acc_b = evaluate(_Wrap(tail_b), data)["task_b"]
    assert acc_a >= full["task_a"] - 1e-9 and acc_b >= full["task_b"] - 1e-9, (acc_a, acc_b, full)


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)
