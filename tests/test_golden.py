"""Golden permutation groups for three zoo models, written by hand from the architectures.

Each expected group is a set of (state-dict name, axis) pairs: axis 0 of what produces a unit
(conv/linear rows, biases, norm affines, BatchNorm running statistics), axis 1 of what consumes it
(input columns). Only free groups are compared; model inputs and outputs are frozen.
"""

from __future__ import annotations

import pytest
import torch
from zoo import ZOO

import graphmerge as gm

Pairs = frozenset[tuple[str, int]]


def _free(name: str) -> list:
    entry = ZOO[name]
    return [g for g in gm.permutation_groups(entry.build(), entry.example()) if not g.frozen]


def _bn(prefix: str) -> set[tuple[str, int]]:
    """A BatchNorm's per-channel tensors: affine and running statistics (axis 0)."""
    return {(f"{prefix}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")}


def _ln(prefix: str) -> set[tuple[str, int]]:
    return {(f"{prefix}.weight", 0), (f"{prefix}.bias", 0)}


def _rows(prefix: str, bias: bool = True) -> set[tuple[str, int]]:
    """Output units of a conv/linear: weight rows (and bias)."""
    return {(f"{prefix}.weight", 0)} | ({(f"{prefix}.bias", 0)} if bias else set())


def _cols(prefix: str) -> set[tuple[str, int]]:
    """Input units of a conv/linear: weight columns."""
    return {(f"{prefix}.weight", 1)}


# ---------------------------------------------------------------------------------------------
# ResNet-20, width 8: stem -> layer1 (8) -> layer2 (16, projection) -> layer3 (32, projection)


def _resnet20_expected() -> dict[Pairs, int]:
    expected: dict[Pairs, int] = {}
    width = {1: 8, 2: 16, 3: 32}
    for s in (1, 2, 3):
        # The residual stream of stage s: whatever is added into it produces it, every block
        # reads it, and the next stage's first block reads it through conv1 and the shortcut.
        stream: set[tuple[str, int]] = set()
        if s == 1:
            stream |= _rows("conv1", bias=False) | _bn("bn1")
        else:
            stream |= _rows(f"layer{s}.0.shortcut.0", bias=False) | _bn(f"layer{s}.0.shortcut.1")
        for b in range(3):
            stream |= _rows(f"layer{s}.{b}.conv2", bias=False) | _bn(f"layer{s}.{b}.bn2")
            if s == 1 or b > 0:
                stream |= _cols(f"layer{s}.{b}.conv1")
        if s < 3:
            stream |= _cols(f"layer{s + 1}.0.conv1") | _cols(f"layer{s + 1}.0.shortcut.0")
        else:
            stream |= _cols("linear")
        expected[frozenset(stream)] = width[s]
        # Inside each block: conv1 -> bn1 -> relu -> conv2.
        for b in range(3):
            inner = (
                _rows(f"layer{s}.{b}.conv1", bias=False)
                | _bn(f"layer{s}.{b}.bn1")
                | _cols(f"layer{s}.{b}.conv2")
            )
            expected[frozenset(inner)] = width[s]
    return expected


def test_resnet20_groups() -> None:
    expected = _resnet20_expected()
    assert len(expected) == 12
    free = _free("resnet20")
    got = {frozenset(g.params()) for g in free}
    assert got == set(expected), _diff(got, set(expected))
    for g in free:
        assert g.size == expected[frozenset(g.params())], g.name


# ---------------------------------------------------------------------------------------------
# VGG: conv(16)-bn-relu-pool, conv(24)-bn-relu-pool, conv(32)-bn-relu, conv(32)-bn-relu-pool,
# flatten (32 x 2 x 2), linear(64), relu, linear(10)


def _vgg_expected() -> dict[Pairs, int]:
    return {
        frozenset(_rows("features.0") | _bn("features.1") | _cols("features.4")): 16,
        frozenset(_rows("features.4") | _bn("features.5") | _cols("features.8")): 24,
        frozenset(_rows("features.8") | _bn("features.9") | _cols("features.11")): 32,
        frozenset(_rows("features.11") | _bn("features.12") | _cols("classifier.0")): 32,
        frozenset(_rows("classifier.0") | _cols("classifier.2")): 64,
    }


def test_vgg_groups() -> None:
    expected = _vgg_expected()
    free = _free("vgg")
    got = {frozenset(g.params()) for g in free}
    assert got == set(expected), _diff(got, set(expected))
    for g in free:
        assert g.size == expected[frozenset(g.params())], g.name
    # The flatten of a (32, 2, 2) map: each channel is 4 consecutive columns of classifier.0.
    (last,) = [g for g in free if ("classifier.0.weight", 1) in g.params()]
    (member,) = [m for m in last.members if (m.param, m.axis) == ("classifier.0.weight", 1)]
    assert member.repeat == 4


# ---------------------------------------------------------------------------------------------
# ViT block: patch conv (32), cls token, pos_embed, one pre-norm block (4 heads of 8, fused qkv,
# SDPA, MLP 64 with GELU), final norm, head on the cls token


_A = "blocks.0.attn"


def _vit_stream() -> set[tuple[str, int]]:
    return (
        _rows("patch_embed")
        | {("cls_token", 2), ("pos_embed", 2)}
        | _ln("blocks.0.norm1")
        | _cols(f"{_A}.qkv")
        | _rows(f"{_A}.proj")
        | _ln("blocks.0.norm2")
        | _cols("blocks.0.mlp.fc1")
        | _rows("blocks.0.mlp.fc2")
        | _ln("norm")
        | _cols("head")
    )


def _vit_mlp() -> set[tuple[str, int]]:
    return _rows("blocks.0.mlp.fc1") | _cols("blocks.0.mlp.fc2")


def _vit_attention() -> set[tuple[str, int]]:
    # heads, q/k head_dim (nested in heads), v head_dim (nested in heads): qkv rows and bias
    # carry all three (q, k, v blocks of the fused output); proj columns carry heads and v.
    return _rows(f"{_A}.qkv") | _cols(f"{_A}.proj")


def test_vit_block_groups() -> None:
    free = _free("vit_block")
    union = set().union(*(g.params() for g in free))
    expected = _vit_stream() | _vit_mlp() | _vit_attention()
    assert union == expected, (sorted(union - expected), sorted(expected - union))

    stream = [g for g in free if g.params() == _vit_stream()]
    assert len(stream) == 1, [str(g) for g in free]
    assert stream[0].size == 32
    assert not any(("cls_token", 2) in g.params() for g in free if g is not stream[0])

    mlp = [g for g in free if g.params() == _vit_mlp()]
    assert len(mlp) == 1 and mlp[0].size == 64

    nested = [g for g in free if g.structure.within]
    assert nested, [str(g) for g in free]
    for g in nested:
        assert g.params() <= _vit_attention(), g.name
        assert g.size * g.structure.heads == 32, str(g)
    # v's head_dim reaches proj's columns; q/k's head_dim does not (it is contracted by q @ k^T).
    assert any((f"{_A}.proj.weight", 1) in g.params() for g in nested)
    assert any((f"{_A}.proj.weight", 1) not in g.params() for g in nested)


@pytest.mark.parametrize("name", ["resnet20", "vgg", "vit_block"])
def test_golden_shuffle_keeps_function(name: str) -> None:
    entry = ZOO[name]
    model = entry.build()
    twin = gm.shuffle(model, entry.example(), seed=3).eval()
    x = entry.fresh()
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=1e-4, atol=1e-5)


def _diff(got: set[Pairs], expected: set[Pairs]) -> str:
    extra = [sorted(s) for s in got - expected]
    missing = [sorted(s) for s in expected - got]
    return f"\nunexpected groups: {extra}\nmissing groups: {missing}"
