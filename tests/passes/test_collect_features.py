"""collect_features: the moments against a float64 reference, "cross" against "all", and the
assignments of whole merges against those the float64 statistics give (the code before issue 11
computed exactly those: float64 Σx and Σxxᵀ of the features cut out by the original indexing).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from helpers import trained_digits_pair
from zoo import ZOO

import graphmerge as gm
import graphmerge.passes.moments as moments_module
from graphmerge.api import compile_program
from graphmerge.batches import random_batches
from graphmerge.errors import InputError
from graphmerge.merge import reset_bn_stats
from graphmerge.options import MergeOptions
from graphmerge.passes.collect_features import GraphRunner, collect_moments
from graphmerge.passes.matchers.permute import solve_assignment
from graphmerge.passes.matchers.similarity import correlation_from_moments
from graphmerge.passes.moments import blocks_read_by
from graphmerge.passes.solve_groups import solve_groups
from graphmerge_examples.tasks import calibration_batches


@dataclass
class Reference:
    """float64 Σx, Σxxᵀ and the sample count of one group, as the pre-issue-11 code kept them."""

    total: np.ndarray
    outer: np.ndarray
    count: float

    def correlation(self) -> np.ndarray:
        return correlation_from_moments(self.total, self.outer, self.count)


def _reference_features(value: torch.Tensor, cap) -> torch.Tensor:
    """(samples, units) float64: permute the unit dims last, gather the positions, average or
    stack the repeats (the original cutting, written out independently of the fast path)."""
    value = value.to(torch.float64)
    if cap.average_dims:
        value = value.mean(dim=cap.average_dims, keepdim=True)
    rest = [d for d in range(value.dim()) if d not in cap.dims]
    x = value.permute(*rest, *cap.dims).reshape(
        -1, int(np.prod([value.shape[d] for d in cap.dims]))
    )
    x = x[:, torch.as_tensor(cap.positions.reshape(-1))]
    x = x.reshape(x.shape[0], *cap.positions.shape)
    return x.mean(1) if cap.average_repeats else x.reshape(-1, cap.positions.shape[1])


def reference_moments(program, states: list[dict], data) -> dict[str, Reference]:
    """float64 moments per captured group, from activations the graph runner captured."""
    plans = program.capture_plans
    runner = GraphRunner(program, [cap.node for cap in plans.values()])
    out = {}
    for batch in data:
        caught = [runner(state, batch) for state in states]
        for name, cap in plans.items():
            x = torch.cat([_reference_features(c[cap.node], cap) for c in caught], dim=1)
            if name not in out:
                out[name] = Reference(np.zeros(x.shape[1]), np.zeros((x.shape[1],) * 2), 0.0)
            out[name].total += x.sum(0).numpy()
            out[name].outer += (x.T @ x).numpy()
            out[name].count += x.shape[0]
    return out


def _plain(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model.eval()


def _models_and_data(name: str, n_models: int = 2, batches: int = 3, size: int = 16):
    entry = ZOO[name]
    models = [_plain(entry.build())]
    for seed in range(1, n_models):  # a different function, not a permuted copy
        twin = copy.deepcopy(models[0])
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in twin.parameters():
                p.add_(
                    0.3 * torch.randn(p.shape, generator=gen) * (p.std() if p.numel() > 1 else 1)
                )
        models.append(twin)
    example = entry.example()
    data = random_batches(example, batches, size)
    return models, data


def _states(models) -> list[dict]:
    return [{k: v.detach() for k, v in m.state_dict().items()} for m in models]


def collect_features(program, states, data, progress=False, blocks="all", names=None):
    """`collect_moments` on a program that holds `states` and `data`; the moments and capture
    plans land in `program.features` / `program.capture_plans` for the checks below."""
    program.states, program.data = states, data
    program.options = MergeOptions(progress=progress)
    program.features, program.capture_plans = collect_moments(program, names, blocks)
    return program


# conv maps read in place (resnet20: 16x16 and 8x8 maps) and copied (4x4 maps, flatten); gathers
# and averaged repeats (densenet, groupnorm_resnet); token matrices and heads (vit_block)
MODELS = ["resnet20", "densenet", "groupnorm_resnet", "vit_block", "mha_encoder"]


@pytest.mark.parametrize("chunk", [None, 50], ids=["chunk_default", "chunk50"])
@pytest.mark.parametrize("name", MODELS)
def test_moments_equal_float64_reference(name, chunk, monkeypatch):
    if chunk:  # products cut inside a part, float64 flushes inside a batch
        monkeypatch.setattr(moments_module, "CHUNK", chunk)
    models, data = _models_and_data(name)
    program = compile_program(models[0], data[0])
    states = _states(models)
    collect_features(program, states, data, progress=False)
    ref = reference_moments(program, states, data)
    assert set(program.features) == set(ref) and ref
    for group, m in program.features.items():
        r = ref[group]
        scale = np.abs(r.outer).max()
        assert m.count == r.count
        # float32 products carry ~sqrt(terms)·2^-24 relative error (a few 1e-6 here); sums of
        # x are float32 per batch, then float64
        np.testing.assert_allclose(m.total, r.total, rtol=0, atol=1e-6 * np.abs(r.total).max())
        np.testing.assert_allclose(m.outer, r.outer, rtol=0, atol=1e-5 * scale)
        np.testing.assert_allclose(m.correlation(), r.correlation(), rtol=0, atol=2e-5)


def _cross_mask(n_models: int, units: int) -> np.ndarray:
    mask = np.eye(n_models * units, dtype=bool)
    for i in range(1, n_models):
        mask[:units, i * units : (i + 1) * units] = True
        mask[i * units : (i + 1) * units, :units] = True
    return mask


@pytest.mark.parametrize("name", ["resnet20", "vit_block"])
def test_cross_blocks_equal_those_of_all(name):
    models, data = _models_and_data(name, n_models=3)
    states = _states(models)
    full = collect_features(compile_program(models[0], data[0]), states, data, progress=False)
    cross = compile_program(models[0], data[0])
    collect_features(cross, states, data, progress=False, blocks="cross")
    for group, m in cross.features.items():
        a, n = full.features[group], m.units
        assert set(m.pairs) == {(0, 1), (0, 2)}  # never a within-model block
        mask = _cross_mask(3, n)
        c_all, c_cross = a.correlation(), m.correlation()
        # the same float32 products; the variances differ in rounding (float64 Σy² for "cross")
        np.testing.assert_allclose(c_cross[mask], c_all[mask], rtol=0, atol=1e-5)
        assert not c_cross[~mask].any()  # blocks a permutation never reads are 0
        np.testing.assert_allclose(m.outer[mask], a.outer[mask], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(m.total, a.total, rtol=1e-9, atol=1e-12)


def test_names_select_groups_and_the_graph_is_cut_to_them():
    models, data = _models_and_data("resnet20")
    states = _states(models)
    program = compile_program(models[0], data[0])
    first = program.free_groups()[0].name
    collect_features(program, states, data, progress=False, names=[first])
    assert list(program.features) == [first]
    ref = reference_moments(program, states, data)[first]
    np.testing.assert_allclose(program.features[first].correlation(), ref.correlation(), atol=1e-5)
    runner = GraphRunner(program, [program.capture_plans[first].node])
    graph = next(iter(runner._by_shape.values()))[1].graph
    targets = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    assert not any("linear" in t or "addmm" in t for t in targets)  # the head is not run
    with pytest.raises(InputError, match="no free group named 'nope'"):
        collect_features(program, states, data, progress=False, names=["nope"])
    with pytest.raises(InputError, match="blocks must be one of"):
        collect_features(program, states, data, progress=False, blocks="within")


def test_float32_overflow_is_an_input_error():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        net[0].weight.mul_(1e20)  # finite activations of ~1e20: their squares overflow float32
    data = [torch.randn(16, 4, generator=torch.Generator().manual_seed(0))]
    program = compile_program(net, data[0])
    with pytest.raises(InputError, match=r"model 0 produced activations too large for float32"):
        collect_features(program, _states([net, net]), data, progress=False)
    assert blocks_read_by("permute") == "cross" and blocks_read_by("zip") == "all"


# -- whole merges: the same assignments as float64 statistics give ---------------------------


ITERS, PATIENCE = 4, 1  # Algorithm 1 sweeps: enough to move off the activation initialisation


def _assignments_with(program, states, features, matcher: str, options: dict):
    program.features = {name: m.correlation() for name, m in features.items()}
    program.states = states
    program.options = MergeOptions(
        matcher=matcher,
        iters=ITERS,
        patience=PATIENCE,
        progress=False,
        zip_a=options.get("a"),
        zip_b=options.get("b"),
    )
    solve_groups(program)
    return program.assignments


def _assert_same_assignments(a: dict, b: dict) -> None:
    assert set(a) == set(b) and a
    for name, got in a.items():
        for ua, ub in zip(got.targets, b[name].targets):
            np.testing.assert_array_equal(ua, ub, err_msg=name)


def _check_merge(models, data, matcher: str, reset_bn: bool = True):
    options = {"a": 0.5, "b": 1.0} if matcher == "zip" else {}
    _, program = gm.merge(
        models,
        data,
        "mudsc",
        matcher=matcher,
        iters=ITERS,
        patience=PATIENCE,
        progress=False,
        reset_bn=reset_bn,
        return_program=True,
    )
    bases = [copy.deepcopy(m) for m in models]
    if reset_bn:
        for b in bases:
            reset_bn_stats(b, data)
    states = _states(bases)
    ref_program = compile_program(bases[0], data[0])
    ref_program.capture_plans = program.capture_plans
    ref = reference_moments(ref_program, states, data)
    expected = _assignments_with(ref_program, states, ref, matcher, options)
    _assert_same_assignments(program.assignments, expected)
    # the permutation matcher reads only the cross blocks: "cross" statistics solve the same
    cross = compile_program(bases[0], data[0])
    collect_features(cross, states, data, progress=False, blocks=blocks_read_by(matcher))
    got = _assignments_with(cross, states, cross.features, matcher, options)
    _assert_same_assignments(got, expected)


@pytest.mark.parametrize("matcher", ["zip", "permute"])
@pytest.mark.parametrize("name", ["resnet20", "vit_block"])
def test_self_merge_assignments_unchanged(name, matcher):
    entry = ZOO[name]
    model = _plain(entry.build())
    twin = gm.shuffle(model, entry.example(), seed=1)
    data = random_batches(entry.example(), 3, 16)
    _check_merge([model, twin], data, matcher)


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def digits_pair(request):
    """The pair of tests/test_merge_digits.py: 5+5 class split, models trained from seeds 1, 2."""
    data, a, b = trained_digits_pair(request.param, split_seed=0, seeds=(1, 2), epochs=15)
    return request.param, [a, b], calibration_batches(data)


@pytest.mark.parametrize("matcher", ["zip", "permute"])
def test_digits_pair_assignments_unchanged(digits_pair, matcher):
    """The same assignments as float64 statistics, except where S has exact ties.

    The MLP's fc2 has 15 dead units in each model: their rows and columns of S are exactly 0, so
    the LAP has exact ties and any perturbation of the other entries (even 1e-7 noise on the
    float64 S: 4 of 6 seeds) changes which tied permutation it returns, after which Algorithm 1's
    sweeps go elsewhere. There the activation matching must reach the same LAP objective."""
    arch, models, data = digits_pair
    if (arch, matcher) != ("mlp", "permute"):
        _check_merge(models, data, matcher)
        return
    states = _states(models)
    fast = collect_features(compile_program(models[0], data[0]), states, data, progress=False)
    cross = compile_program(models[0], data[0])
    collect_features(cross, states, data, progress=False, blocks="cross")
    ref = reference_moments(fast, states, data)
    for name, r in ref.items():
        s_ref, n = r.correlation(), fast.features[name].units
        best = s_ref[:n, n:][np.arange(n), solve_assignment(s_ref[:n, n:])[0]].sum()
        for program in (fast, cross):
            s = program.features[name].correlation()
            cols = solve_assignment(s[:n, n:])[0]
            assert s_ref[:n, n:][np.arange(n), cols].sum() == pytest.approx(best, rel=1e-12)
