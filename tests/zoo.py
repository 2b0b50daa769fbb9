"""A zoo of small hand-written architectures for the function-preservation oracle.

Every model is CPU-fast (widths 8-64, forward well under 50 ms), has a classification-style head
(its outputs are model outputs, so every hidden unit is internal), and is built deterministically:
`ZOO[name].build()` always returns the same weights. Norm affines, running statistics, biases and
learned tokens are randomised so that a wrong permutation of any of them changes the outputs.

`ZOO[name].example()` gives the example inputs for tracing; `fresh()` gives different inputs (other
seed and, where the model allows, another batch size) for checking that a shuffle kept the function.
Inputs are a Tensor, a tuple of Tensors, or a dict of keyword Tensors; `call(model, inputs)` runs a
model on any of the three.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ZOO", "ZooEntry", "call", "export"]

Inputs = Any  # torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# helpers


def call(model: nn.Module, inputs: Inputs) -> Any:
    """Run `model` on a Tensor, a tuple of positional Tensors, or a dict of keyword Tensors."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def export(model: nn.Module, inputs: Inputs) -> torch.export.ExportedProgram:
    """`torch.export.export(..., strict=False)` with inputs in any of the three forms."""
    if isinstance(inputs, dict):
        return torch.export.export(model, (), inputs, strict=False)
    if isinstance(inputs, tuple):
        return torch.export.export(model, inputs, strict=False)
    return torch.export.export(model, (inputs,), strict=False)


def _randomize(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Give norm affines, running statistics and zero-initialised biases random values."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                if getattr(module, "weight", None) is not None:
                    module.weight.copy_(1.0 + 0.3 * torch.randn(module.weight.shape, generator=gen))
                if getattr(module, "bias", None) is not None:
                    module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=gen))
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(
                    0.2 * torch.randn(module.running_mean.shape, generator=gen)
                )
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
            if isinstance(module, RMSNorm):
                module.weight.copy_(1.0 + 0.3 * torch.randn(module.weight.shape, generator=gen))
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("bias") and bool((p == 0).all()):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def _seeded(cls: Callable[..., nn.Module], seed: int = 0, **kwargs: Any) -> Callable[[], nn.Module]:
    """A `build()` that constructs `cls(**kwargs)` under a fixed seed, without touching global RNG."""

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(**kwargs)
            gen = torch.Generator().manual_seed(seed + 1)
            _randomize(model, gen)
        return model.eval()

    return build


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _images(batch: int, seed: int, channels: int = 3, size: int = 16) -> torch.Tensor:
    return _randn(batch, channels, size, size, seed=seed)


@dataclass(frozen=True)
class ZooEntry:
    """One zoo architecture: deterministic `build()`, example and fresh inputs, rule coverage."""

    name: str
    build: Callable[[], nn.Module]
    example: Callable[[], Inputs]
    fresh: Callable[[], Inputs]
    all_rules: bool = True


# ---------------------------------------------------------------------------------------------
# MLP


class MLP(nn.Module):
    def __init__(self, d_in: int = 20, widths: tuple[int, ...] = (32, 48), classes: int = 10):
        super().__init__()
        dims = (d_in, *widths)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.head(x)


# ---------------------------------------------------------------------------------------------
# VGG: conv-bn-relu with max pools, flatten of the conv map (no global pool), two linears


class VGG(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 0-3
            nn.Conv2d(16, 24, 3, padding=1),
            nn.BatchNorm2d(24),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4-7
            nn.Conv2d(24, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),  # 8-10
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 11-14
        )
        self.classifier = nn.Sequential(
            nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 32, 2, 2) for 16x16 inputs
        x = torch.flatten(x, 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------------------------
# ResNet-20 (CIFAR style): 3 stages of 3 basic blocks, projection shortcut when downsampling


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, width: int = 8, classes: int = 10, blocks: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        stages = []
        for i, stride in enumerate((1, 2, 2)):
            cout = width * 2**i
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# ---------------------------------------------------------------------------------------------
# DenseNet-style: pre-activation dense layers concatenating onto the running feature map


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], dim=1)


class DenseNet(nn.Module):
    def __init__(self, stem: int = 16, growth: int = 8, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        c = stem
        block1 = []
        for _ in range(3):
            block1.append(DenseLayer(c, growth))
            c += growth
        self.block1 = nn.Sequential(*block1)
        self.trans_norm = nn.BatchNorm2d(c)
        self.trans_conv = nn.Conv2d(c, 24, 1, bias=False)
        c = 24
        block2 = []
        for _ in range(2):
            block2.append(DenseLayer(c, growth))
            c += growth
        self.block2 = nn.Sequential(*block2)
        self.norm = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.stem(x))
        x = F.avg_pool2d(self.trans_conv(F.relu(self.trans_norm(x))), 2)
        x = F.relu(self.norm(self.block2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ---------------------------------------------------------------------------------------------
# Squeeze-and-excitation


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduced: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c, reduced, 1)
        self.expand = nn.Conv2d(reduced, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.expand(F.relu(self.reduce(self.pool(x))))
        return x * torch.sigmoid(s)


class SENet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.se = SqueezeExcite(32, 8)
        self.conv2 = nn.Sequential(nn.Conv2d(32, 24, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.se(self.conv(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ---------------------------------------------------------------------------------------------
# Depthwise separable convs (groups=C) and a grouped conv (groups=2), with one residual


class DepthwiseNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw1 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn_dw1 = nn.BatchNorm2d(16)
        self.pw1 = nn.Conv2d(16, 16, 1, bias=False)
        self.bn_pw1 = nn.BatchNorm2d(16)
        self.expand = nn.Conv2d(16, 32, 1)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=2, bias=False)
        self.bn_grouped = nn.BatchNorm2d(32)
        self.dw2 = nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32)
        self.pw2 = nn.Conv2d(32, 24, 1)
        self.fc = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        h = F.relu(self.bn_dw1(self.dw1(x)))
        x = x + self.bn_pw1(self.pw1(h))
        x = F.relu(self.expand(x))
        x = F.relu(self.bn_grouped(self.grouped(x)))
        x = F.relu(self.pw2(F.relu(self.dw2(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ---------------------------------------------------------------------------------------------
# GroupNorm residual CNN


class GNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.gn1 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.gn2 = nn.GroupNorm(groups, cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(groups, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class GroupNormResNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(4, 16)
        self.block1 = GNBlock(16, 16, 1, 4)
        self.block2 = GNBlock(16, 32, 2, 8)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.gn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ---------------------------------------------------------------------------------------------
# nn.MultiheadAttention encoder (batch_first, post-norm), head over mean-pooled tokens


class MHAEncoder(nn.Module):
    def __init__(self, d_in: int = 12, dim: int = 32, heads: int = 4, classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(d_in, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 2 * dim)
        self.ff2 = nn.Linear(2 * dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        a, _ = self.attn(x, x, x, need_weights=False)
        x = self.norm1(x + a)
        x = self.norm2(x + self.ff2(F.relu(self.ff1(x))))
        return self.head(x.mean(dim=1))


# ---------------------------------------------------------------------------------------------
# timm-style ViT: patch conv, cls token, pos_embed, one block with fused qkv and SDPA


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlockLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(
        self, img: int = 16, patch: int = 4, dim: int = 32, heads: int = 4, classes: int = 10
    ):
        super().__init__()
        n = (img // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(0.5 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.5 * torch.randn(1, n + 1, dim))
        self.blocks = nn.Sequential(ViTBlockLayer(dim, heads))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, C)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


# ---------------------------------------------------------------------------------------------
# Manual attention: q @ k^T * scale, softmax, @ v


class ManualAttention(nn.Module):
    def __init__(self, d_in: int = 10, dim: int = 32, heads: int = 4, classes: int = 10):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(d_in, dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        B, T, C = x.shape
        d = C // self.heads
        q = self.q(x).view(B, T, self.heads, d).transpose(1, 2)
        k = self.k(x).view(B, T, self.heads, d).transpose(1, 2)
        v = self.v(x).view(B, T, self.heads, d).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
        att = att.softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = self.norm(x + self.out(y))
        return self.head(x.mean(dim=1))


# ---------------------------------------------------------------------------------------------
# SwiGLU MLP + hand-written RMSNorm, pre-norm residual


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SwiGLUNet(nn.Module):
    def __init__(self, d_in: int = 12, dim: int = 32, hidden: int = 48, classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(d_in, dim)
        self.norms = nn.ModuleList(RMSNorm(dim) for _ in range(2))
        self.mlps = nn.ModuleList(SwiGLU(dim, hidden) for _ in range(2))
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for norm, mlp in zip(self.norms, self.mlps):
            x = x + mlp(norm(x))
        return self.head(self.norm(x).mean(dim=1))


# ---------------------------------------------------------------------------------------------
# UNet: max-pool encoder, ConvTranspose2d decoder with skip concatenation, 1x1 conv head


class UNet(nn.Module):
    def __init__(self, classes: int = 2):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.bottleneck = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU())
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec1 = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottleneck(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)


# ---------------------------------------------------------------------------------------------
# Token embedding + positional Parameter + transformer-ish MLP (keyword input `input_ids`)


class TokenModel(nn.Module):
    def __init__(self, vocab: int = 50, max_len: int = 12, dim: int = 32, classes: int = 7):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(0.5 * torch.randn(1, max_len, dim))
        self.ln1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(input_ids) + self.pos[:, : input_ids.shape[1]]
        x = x + self.fc2(F.gelu(self.fc1(self.ln1(x))))
        return self.head(self.ln_f(x).mean(dim=1))


# ---------------------------------------------------------------------------------------------
# Conv1d with a grouped conv and a residual


class Conv1dNet(nn.Module):
    def __init__(self, c_in: int = 4, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, 16, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(16)
        self.conv2 = nn.Conv1d(16, 32, 3, padding=1, groups=4)
        self.bn2 = nn.BatchNorm1d(32)
        self.conv3 = nn.Conv1d(32, 32, 1)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = x + F.relu(self.conv3(x))
        return self.fc(self.pool(x).flatten(1))


# ---------------------------------------------------------------------------------------------
# Assorted activations, dropout, max and average pools


class ActivationsPools(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.act1 = nn.Hardtanh()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 24, 3, padding=1)
        self.act2 = nn.ReLU6()
        self.pool2 = nn.AvgPool2d(2)
        self.conv3 = nn.Conv2d(24, 32, 3, padding=1)
        self.act3 = nn.SiLU()
        self.drop1 = nn.Dropout(0.3)
        self.gpool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Linear(32, 24)
        self.act4 = nn.Tanh()
        self.drop2 = nn.Dropout(0.3)
        self.fc2 = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = self.drop1(self.act3(self.conv3(x)))
        x = self.gpool(x).flatten(1)
        return self.fc2(self.drop2(self.act4(self.fc1(x))))


# ---------------------------------------------------------------------------------------------
# cumsum over the channel axis: an op with no rule (its spaces must be frozen)


class CumsumMLP(nn.Module):
    def __init__(self, d_in: int = 16, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(d_in, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        h = torch.cumsum(h, dim=-1)
        h = F.relu(self.fc2(h))
        return self.fc3(h)


# ---------------------------------------------------------------------------------------------
# GPT-2 Conv1D: addmm(bias, x.view(-1, nx), weight) with weight shaped (nx, nf)


class GPT2Conv1D(nn.Module):
    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) / math.sqrt(nx))
        self.bias = nn.Parameter(0.1 * torch.randn(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class GPT2MLPNet(nn.Module):
    def __init__(self, d_in: int = 12, dim: int = 32, classes: int = 10):
        super().__init__()
        self.wte = nn.Linear(d_in, dim)
        self.ln_1 = nn.LayerNorm(dim)
        self.c_fc = GPT2Conv1D(2 * dim, dim)
        self.c_proj = GPT2Conv1D(dim, 2 * dim)
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.wte(x)
        x = x + self.c_proj(F.gelu(self.c_fc(self.ln_1(x)), approximate="tanh"))
        return self.head(self.ln_f(x).mean(dim=1))


# ---------------------------------------------------------------------------------------------
# chunk / split on channels: a GLU gate, then unequal split into two branches concatenated back


class ChunkSplitNet(nn.Module):
    def __init__(self, d_in: int = 16, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(d_in, 64)
        self.fc2 = nn.Linear(32, 48)
        self.branch_a = nn.Linear(16, 8)
        self.branch_b = nn.Linear(32, 12)
        self.head = nn.Linear(20, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        h = a * torch.sigmoid(b)  # GLU
        s, t = torch.split(self.fc2(h), [16, 32], dim=-1)
        h = torch.cat([F.relu(self.branch_a(s)), F.relu(self.branch_b(t))], dim=-1)
        return self.head(h)


# ---------------------------------------------------------------------------------------------
# stack / unbind, with two positional inputs


class StackUnbindNet(nn.Module):
    def __init__(self, d_in: int = 10, dim: int = 32, classes: int = 10):
        super().__init__()
        self.enc_a = nn.Linear(d_in, dim)
        self.enc_b = nn.Linear(d_in, dim)
        self.mix = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        s = torch.stack([F.relu(self.enc_a(xa)), F.relu(self.enc_b(xb))], dim=1)  # (B, 2, D)
        s = F.relu(self.mix(s))
        u, w = s.unbind(1)
        return self.head(self.norm(u * torch.sigmoid(w)))


# ---------------------------------------------------------------------------------------------
# registry


def _tokens(batch: int, length: int, seed: int, d: int) -> Callable[[], torch.Tensor]:
    return lambda: _randn(batch, length, d, seed=seed)


def _entry(
    name: str,
    build: Callable[[], nn.Module],
    example: Callable[[], Inputs],
    fresh: Callable[[], Inputs],
    all_rules: bool = True,
) -> ZooEntry:
    return ZooEntry(name, build, example, fresh, all_rules)


_ENTRIES = [
    _entry("mlp", _seeded(MLP), lambda: _randn(4, 20, seed=1), lambda: _randn(7, 20, seed=2)),
    _entry("vgg", _seeded(VGG), lambda: _images(2, 1), lambda: _images(3, 2)),
    _entry("resnet20", _seeded(ResNet20, width=8), lambda: _images(2, 1), lambda: _images(3, 2)),
    _entry("densenet", _seeded(DenseNet), lambda: _images(2, 1), lambda: _images(3, 2)),
    _entry("squeeze_excite", _seeded(SENet), lambda: _images(2, 1), lambda: _images(3, 2)),
    _entry("depthwise", _seeded(DepthwiseNet), lambda: _images(2, 1), lambda: _images(3, 2)),
    _entry(
        "groupnorm_resnet", _seeded(GroupNormResNet), lambda: _images(2, 1), lambda: _images(3, 2)
    ),
    _entry("mha_encoder", _seeded(MHAEncoder), _tokens(2, 6, 1, 12), _tokens(3, 6, 2, 12)),
    _entry("vit_block", _seeded(ViT), lambda: _images(2, 1), lambda: _images(3, 2)),
    _entry(
        "manual_attention", _seeded(ManualAttention), _tokens(2, 8, 1, 10), _tokens(3, 8, 2, 10)
    ),
    _entry("swiglu_rmsnorm", _seeded(SwiGLUNet), _tokens(2, 6, 1, 12), _tokens(3, 6, 2, 12)),
    _entry("unet", _seeded(UNet), lambda: _images(2, 1), lambda: _images(3, 2)),
    _entry(
        "token_embedding",
        _seeded(TokenModel),
        lambda: {
            "input_ids": torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
        },
        lambda: {
            "input_ids": torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(2))
        },
    ),
    _entry(
        "conv1d",
        _seeded(Conv1dNet),
        lambda: _randn(2, 4, 40, seed=1),
        lambda: _randn(3, 4, 40, seed=2),
    ),
    _entry(
        "activations_pools", _seeded(ActivationsPools), lambda: _images(2, 1), lambda: _images(3, 2)
    ),
    _entry(
        "cumsum",
        _seeded(CumsumMLP),
        lambda: _randn(4, 16, seed=1),
        lambda: _randn(5, 16, seed=2),
        all_rules=False,
    ),
    _entry("gpt2_conv1d", _seeded(GPT2MLPNet), _tokens(2, 6, 1, 12), _tokens(3, 6, 2, 12)),
    _entry(
        "chunk_split",
        _seeded(ChunkSplitNet),
        lambda: _randn(4, 16, seed=1),
        lambda: _randn(6, 16, seed=2),
    ),
    _entry(
        "stack_unbind",
        _seeded(StackUnbindNet),
        lambda: (_randn(4, 10, seed=1), _randn(4, 10, seed=3)),
        lambda: (_randn(5, 10, seed=2), _randn(5, 10, seed=4)),
    ),
]

ZOO: dict[str, ZooEntry] = {e.name: e for e in _ENTRIES}
