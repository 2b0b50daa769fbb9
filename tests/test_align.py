"""gm.align: models permuted into the first model's unit order, function unchanged; the line
between A and aligned B has a lower loss barrier than the line between A and B."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import trained_digits_pair
from test_merge import _plain_init, calibration
from zoo import ZOO, call

import graphmerge as gm
from graphmerge_examples.tasks import calibration_batches

PERMUTING = [
    ("weight_matching", {}),
    ("activation_matching", {}),
    ("mudsc", {"matcher": "permute"}),
]


def _interpolate(a: torch.nn.Module, b: torch.nn.Module, lam: float) -> torch.nn.Module:
    """(1 - lam) * a + lam * b, parameter by parameter (integer buffers from a)."""
    sa, sb = a.state_dict(), b.state_dict()
    mid = {
        k: (1 - lam) * v + lam * sb[k] if v.is_floating_point() else v.clone()
        for k, v in sa.items()
    }
    out = copy.deepcopy(a)
    out.load_state_dict(mid)
    return out.eval()


@pytest.mark.parametrize("name", ["resnet20", "vit_block"])
def test_a_shuffled_copy_is_aligned_back_onto_the_model(name):
    entry = ZOO[name]
    model = _plain_init(entry.build())
    example = entry.example()
    twin = gm.shuffle(model, example, seed=1)
    moved = sum(not torch.equal(v, twin.state_dict()[k]) for k, v in model.state_dict().items())
    assert moved > 5  # the shuffle moved units (ViT: heads and units within heads)
    first, back = gm.align(
        [model, twin], calibration(example), method="mudsc", matcher="permute", progress=False
    )
    for key, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value, msg=key)
        torch.testing.assert_close(first.state_dict()[key], value, msg=key)
    probe = entry.fresh()
    torch.testing.assert_close(call(back, probe), call(model, probe), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def digits_pair(request):
    """Two digits models trained on all ten classes from different seeds (the setting where the
    straight line between two models has a loss barrier; the CNN has BatchNorm)."""
    data, a, b = trained_digits_pair(
        request.param, split_seed=0, seeds=(1, 2), epochs=15, same_task=True
    )
    return request.param, data, a.eval(), b.eval()


def _joint_loss(model: torch.nn.Module, data) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(data.x_test), data.y_test))


@pytest.mark.parametrize("method,options", PERMUTING)
def test_aligned_model_keeps_its_function_and_lowers_the_barrier(digits_pair, method, options):
    kind, data, a, b = digits_pair
    cal = calibration_batches(data)
    first, aligned = gm.align([a, b], cal, method=method, progress=False, **options)
    with torch.no_grad():
        torch.testing.assert_close(aligned(data.x_test), b(data.x_test), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(first(data.x_test), a(data.x_test))
    changed = [k for k, v in b.state_dict().items() if not torch.equal(v, aligned.state_dict()[k])]
    assert len(changed) >= 4, changed  # units were really moved
    # the midpoint of the aligned line has a lower loss than the plain average (BatchNorm
    # statistics reset on the calibration data for the CNN, as Git Re-Basin does)
    mids = []
    for other in (b, aligned):
        mid = _interpolate(a, other, 0.5)
        gm.reset_bn_stats(mid, cal)
        mids.append(_joint_loss(mid, data))
    assert mids[1] < 0.5 * mids[0], (kind, method, mids)


@pytest.mark.parametrize("method,options", PERMUTING)
def test_the_merge_is_the_midpoint_of_the_aligned_line(digits_pair, method, options):
    _, data, a, b = digits_pair
    cal = calibration_batches(data)
    # without BatchNorm resets both match on the same statistics and keep the models' own
    _, aligned = gm.align([a, b], cal, method=method, progress=False, reset_bn=False, **options)
    merged = gm.merge([a, b], cal, method=method, progress=False, reset_bn=False, **options)
    mid = _interpolate(a, aligned, 0.5)
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(mid.state_dict()[key], value, msg=key)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "mudsc"}, "matcher='permute'"),
        ({"method": "zipit"}, "method='activation_matching'"),
        ({"method": "weight_matching", "stop_at": "layers.0"}, "stop_at"),
        ({"method": "weight_matching", "refine": "least_squares"}, "refine"),
        ({"method": "weight_matching", "stopat": "x"}, r"align\(\) got unknown option 'stopat'"),
    ],
)
def test_align_refuses_what_is_not_a_permutation(kwargs, match):
    entry = ZOO["mlp"]
    model = entry.build().eval()
    with pytest.raises(gm.InputError, match=match):
        gm.align([model, model], calibration(entry.example()), progress=False, **kwargs)
