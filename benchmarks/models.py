"""The benchmark architectures (issue 5), each ending in the shared class-vector head
(`graphmerge_examples.tasks.ClassHead`: scaled cosine against fixed class vectors, common to both
models).

All take MNIST-shaped input (N, 1, 28, 28); the MLP also takes digits/mnist1d-shaped flat input
(set `d_in`), the CNNs take any (N, 1, H, W).

- `ReBasinMLP`: the Git Re-Basin MNIST MLP, d_in-512-512-512 -> embedding.
- `ResNet20` (norm="bn"): CIFAR-style ResNet-20 (3 stages of `blocks` basic blocks, widths
  16w/32w/64w, projection shortcuts when downsampling), BatchNorm.
- `ResNet20` (norm="gn"): the same with GroupNorm (`groups` groups): group-aware matching.
- `ViT`: patch 7 (16 tokens + cls), timm-style blocks (fused qkv, SDPA): head-aware matching.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from graphmerge_examples.tasks import ClassHead

__all__ = ["ARCHS", "ReBasinMLP", "ResNet20", "ViT", "build"]


class ReBasinMLP(nn.Module):
    def __init__(
        self,
        d_in: int = 784,
        width: int = 512,
        depth: int = 3,
        dim: int = 128,
        num_classes: int = 10,
    ):
        super().__init__()
        sizes = [d_in] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.emb = nn.Linear(width, dim)
        self.head = ClassHead(dim, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.head(self.emb(x))


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "bn" else nn.GroupNorm(groups, channels)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(norm, cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(norm, cout, groups)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout, groups)
            )

    def forward(self, x):
        out = F.relu(self.n1(self.conv1(x)))
        out = self.n2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for 28x28 (blocks=3; blocks=1 is the quick ResNet-8). Widths 16w, 32w, 64w."""

    def __init__(
        self,
        width: int = 1,
        blocks: int = 3,
        norm: str = "bn",
        groups: int = 8,
        in_ch: int = 1,
        dim: int = 128,
        num_classes: int = 10,
    ):
        super().__init__()
        if norm not in ("bn", "gn"):
            raise ValueError(f"norm must be 'bn' or 'gn', got {norm!r}")
        c = 16 * width
        self.conv1 = nn.Conv2d(in_ch, c, 3, 1, 1, bias=False)
        self.n1 = _norm(norm, c, groups)
        cin, stages = c, []
        for i, stride in enumerate((1, 2, 2)):
            cout = c * 2**i
            stages.append(
                nn.Sequential(
                    *[
                        BasicBlock(
                            cin if b == 0 else cout, cout, stride if b == 0 else 1, norm, groups
                        )
                        for b in range(blocks)
                    ]
                )
            )
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.emb = nn.Linear(cin, dim)
        self.head = ClassHead(dim, num_classes)

    def forward(self, x):
        x = F.relu(self.n1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.head(self.emb(F.adaptive_avg_pool2d(x, 1).flatten(1)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_ratio * dim), nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(
        self,
        img: int = 28,
        patch: int = 7,
        dim: int = 64,
        heads: int = 4,
        depth: int = 2,
        mlp_ratio: int = 2,
        in_ch: int = 1,
        emb_dim: int = 128,
        num_classes: int = 10,
    ):
        super().__init__()
        n = (img // patch) ** 2
        self.patch_embed = nn.Conv2d(in_ch, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.emb = nn.Linear(dim, emb_dim)
        self.head = ClassHead(emb_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self):
        """Called by graphmerge_examples.tasks.train (with the training seed), like any module's."""
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.emb(self.norm(self.blocks(x))[:, 0]))


# name -> (class, kwargs for the full run, kwargs for --quick, input kind)
ARCHS: dict[str, tuple[type[nn.Module], dict, dict]] = {
    "mlp": (ReBasinMLP, {"width": 512}, {"width": 512}),
    "resnet_bn": (
        ResNet20,
        {"norm": "bn", "width": 1, "blocks": 3},
        {"norm": "bn", "width": 1, "blocks": 1},
    ),
    "resnet_gn": (
        ResNet20,
        {"norm": "gn", "width": 1, "blocks": 3, "groups": 8},
        {"norm": "gn", "width": 1, "blocks": 1, "groups": 4},
    ),
    "vit": (ViT, {"dim": 128, "heads": 4, "depth": 4}, {"dim": 64, "heads": 4, "depth": 2}),
}


def model_kwargs(arch: str, quick: bool = False, dataset: str = "mnist") -> dict:
    """The constructor arguments `build` uses (part of the checkpoint cache's config)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHS)}")
    _, full, small = ARCHS[arch]
    kwargs = dict(small if quick else full)
    if dataset in ("digits", "mnist1d"):
        if arch != "mlp" and dataset == "mnist1d":
            raise ValueError("mnist1d is 1-D: only the mlp architecture applies")
        if arch == "mlp":
            kwargs.update(d_in=64 if dataset == "digits" else 40, width=128, dim=32)
        elif arch == "vit":
            kwargs.update(img=8, patch=2)
    return kwargs


def build(arch: str, quick: bool = False, dataset: str = "mnist", **overrides) -> nn.Module:
    """A fresh model of `arch` sized for `dataset` ("mnist": 1x28x28, "digits": 64 features or
    1x8x8, "mnist1d": 40 features)."""
    return ARCHS[arch][0](**{**model_kwargs(arch, quick, dataset), **overrides})
