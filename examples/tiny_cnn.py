"""A tiny residual CNN for docs and CLI tests: conv-bn-relu x2, a residual add, pool, linear.

graphmerge inspect examples/tiny_cnn.py:build --inputs examples/tiny_cnn.py:inputs
graphmerge inspect examples/tiny_cnn.py:build --input-shape 2,3,16,16
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TinyCNN", "build", "build_other", "calibration", "inputs"]


class TinyCNN(nn.Module):
    """stem (3 -> width) then a residual block of two conv-bn-relu, global pool, linear head."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * width)
        self.conv2 = nn.Conv2d(2 * width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        x = torch.relu(x + h)
        return self.fc(torch.flatten(self.pool(x), 1))


def build() -> nn.Module:
    """A fresh TinyCNN with seeded random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = TinyCNN()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def build_other() -> nn.Module:
    """A second TinyCNN from another seed (a different initialisation to merge with `build`)."""
    torch.manual_seed(1)
    return TinyCNN().eval()


def calibration() -> list[Tensor]:
    """Calibration batches for `graphmerge merge`: 4 batches of (16, 3, 16, 16)."""
    gen = torch.Generator().manual_seed(7)
    return [torch.randn(16, 3, 16, 16, generator=gen) for _ in range(4)]


def inputs() -> Tensor:
    """A batch of example images, (2, 3, 16, 16)."""
    return torch.randn(2, 3, 16, 16)
