"""refine_weights: the least-squares refit (refine="least_squares") and the statistics repair
(repair=True), through gm.merge."""

import numpy as np
import pytest
import torch
from torch import nn

import graphmerge as gm
from graphmerge.options import MergeOptions, OptionError
from graphmerge.passes import PIPELINE
from graphmerge.program import Program, run_passes


class LinearNet(nn.Module):
    """Linear, no activation, hidden wider than the input: every layer's target is a linear
    function of the merged model's own input, so a refit can reproduce it exactly."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.fc1(x))


class ConvNet(nn.Module):
    """1x1 conv to 8 channels, then a strided, padded 3x3 conv without bias: exactly
    representable as well (the 1x1 map has full column rank)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 8, 1)
        self.c2 = nn.Conv2d(8, 3, 3, stride=2, padding=1, bias=False)

    def forward(self, x):
        return self.c2(self.c1(x))


class ReluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 12), nn.Linear(12, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _pair(cls, seed=0):
    torch.manual_seed(seed)
    return cls(), cls()


def _gap(merged, models, x):
    with torch.no_grad():
        target = sum(m(x) for m in models) / len(models)
        return float((merged(x) - target).abs().max() / target.abs().max())


@pytest.mark.parametrize("cls,shape", [(LinearNet, (4,)), (ConvNet, (2, 9, 9))])
@pytest.mark.parametrize("matcher", ["zip", "permute"])
def test_refit_reproduces_an_exactly_representable_target(cls, shape, matcher):
    models = _pair(cls)
    data = [torch.randn(32, *shape) for _ in range(4)]
    x = torch.randn(64, *shape)  # not calibration data
    plain = gm.merge(models, data, matcher=matcher, progress=False)
    refit, program = gm.merge(
        models,
        data,
        matcher=matcher,
        refine="least_squares",
        ridge=1e-9,
        progress=False,
        return_program=True,
    )
    assert _gap(plain, models, x) > 0.05  # the rewrite alone is far from the models' average
    assert _gap(refit, models, x) < 1e-4
    assert set(program.refinements.values()) == {"refit"}
    assert len(program.refinements) == 2
    if matcher == "zip":  # the zip merged units within a model: fewer merged units per model
        (assignment,) = program.assignments.values()
        shared = [np.bincount(t, minlength=assignment.n_merged).max() for t in assignment.targets]
        assert max(shared) >= 2


def test_defaults_leave_the_merge_bit_identical():
    """With refine and repair off the pass changes nothing: the same state as a pipeline
    without it."""
    models = _pair(ReluNet)
    data = [torch.randn(16, 6) for _ in range(3)]
    merged = gm.merge(models, data, progress=False)
    passes = [p for p in PIPELINE if p.name != "refine_weights"]
    program = Program(model=models[0], example_inputs=data[0], models=models, data=data)
    program.options = MergeOptions(progress=False)
    reference = run_passes(program, passes).result
    for (k, v), (k2, v2) in zip(
        merged.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)


def test_repair_matches_the_models_unit_statistics():
    """Each merged hidden unit's mean and std on the calibration data become the average of its
    two matched units' (permute: one unit of each model)."""
    models = _pair(ReluNet, seed=3)
    data = [torch.randn(64, 6) + 0.5 for _ in range(4)]
    x = torch.cat(data)
    merged, program = gm.merge(
        models, data, matcher="permute", repair=True, progress=False, return_program=True
    )
    assert program.refinements["fc1.weight"] == "repaired"
    assert program.refinements["fc2.weight"] == "unchanged"  # its output is the model's: frozen
    targets = program.assignments["fc1:out"].targets
    with torch.no_grad():
        outs = [m.fc1(x).numpy() for m in models]
        got = merged.fc1(x).numpy()
    goal_mean, goal_std = np.zeros(12), np.zeros(12)
    for out, t in zip(outs, targets, strict=True):
        goal_mean[t] += out.mean(0) / 2
        goal_std[t] += out.std(0) / 2
    np.testing.assert_allclose(got.mean(0), goal_mean, atol=1e-4)
    np.testing.assert_allclose(got.std(0), goal_std, rtol=1e-4)
    plain = gm.merge(models, data, matcher="permute", progress=False)
    with torch.no_grad():
        assert np.abs(plain.fc1(x).numpy().std(0) - goal_std).max() > 0.05


def test_refine_works_for_every_alignment_and_needs_data():
    models = _pair(ReluNet, seed=1)
    data = [torch.randn(32, 6) for _ in range(3)]
    x = torch.randn(128, 6)
    for method in ("weight_matching", "average", "zipit"):
        plain = gm.merge(models, data, method=method, progress=False)
        refit = gm.merge(models, data, method=method, refine="least_squares", progress=False)
        assert _gap(refit, models, x) < _gap(plain, models, x)
    with pytest.raises(gm.errors.InputError, match="calibration data"):
        gm.merge(
            models,
            None,
            method="weight_matching",
            refine="least_squares",
            example_inputs=data[0],
            progress=False,
        )


def test_partial_merge_refits_the_trunk_only():
    models = _pair(ReluNet, seed=2)
    data = [torch.randn(32, 6) for _ in range(3)]
    _, program = gm.merge(
        models, data, refine="least_squares", stop_at="fc1", progress=False, return_program=True
    )
    assert program.refinements == {"fc1.weight": "refit"}


@pytest.mark.parametrize(
    "field,value",
    [("refine", "adam"), ("ridge", 0.0), ("ridge", "big"), ("repair", "yes")],
)
def test_bad_options_name_the_field(field, value):
    with pytest.raises(OptionError, match=field) as info:
        MergeOptions(**{field: value})
    assert info.value.field == field


class TiedNet(nn.Module):
    """Token embedding tied to the output projection: the refit must leave the tied weight."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, ids):
        h = self.fc2(torch.relu(self.fc1(self.emb(ids))))
        return torch.nn.functional.linear(h, self.emb.weight)


def test_tied_weights_are_left_as_rewritten():
    models = _pair(TiedNet, seed=4)
    data = [torch.randint(0, 20, (8, 5)) for _ in range(3)]
    plain = gm.merge(models, data, progress=False)
    refit, program = gm.merge(
        models, data, refine="least_squares", progress=False, return_program=True
    )
    assert "shared" in program.refinements["emb.weight"]
    assert program.refinements["fc1.weight"] == program.refinements["fc2.weight"] == "refit"
    assert torch.equal(plain.emb.weight, refit.emb.weight)
    assert not torch.equal(plain.fc1.weight, refit.fc1.weight)


def test_config_parameters_take_the_options(tmp_path):
    from graphmerge.config import load_config

    path = tmp_path / "merge.yaml"
    text = "models: [{factory: a.py:f}, {factory: a.py:f}]\nparameters: {%s}\n"
    path.write_text(text % "refine: least_squares, ridge: 0.01, repair: true")
    opts = load_config(path).options
    assert (opts.refine, opts.ridge, opts.repair) == ("least_squares", 0.01, True)
    path.write_text(text % "refine: adam")
    with pytest.raises(gm.errors.InputError, match="refine"):
        load_config(path)


class DepthwiseNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c2 = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.c2(torch.relu(self.dw(torch.relu(self.c1(x)))))


def test_grouped_convolutions_are_left_as_rewritten():
    models = _pair(DepthwiseNet, seed=5)
    data = [torch.randn(8, 2, 6, 6) for _ in range(3)]
    plain = gm.merge(models, data, progress=False)
    refit, program = gm.merge(
        models, data, refine="least_squares", progress=False, return_program=True
    )
    assert program.refinements["dw.weight"] == "a grouped convolution (groups=8)"
    assert program.refinements["c1.weight"] == program.refinements["c2.weight"] == "refit"
    assert torch.equal(plain.dw.weight, refit.dw.weight)


def test_the_memory_plan_counts_the_refit():
    """The plan has a refine_weights stage when a refit is asked for: at least the largest
    layer's input moments (d² float64: ConvNet's c2 reads 8·3·3 = 72 features)."""
    models = _pair(ConvNet)
    data = [torch.randn(8, 2, 9, 9) for _ in range(2)]
    _, plain = gm.merge(models, data, progress=False, return_program=True)
    _, refit = gm.merge(models, data, refine="least_squares", progress=False, return_program=True)
    assert "refine_weights" not in plain.memory_plan.stages
    extra = refit.memory_plan.stages["refine_weights"] - refit.memory_plan.stages["build_module"]
    assert extra >= 8 * 72 * 72
