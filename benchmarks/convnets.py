"""Classic convolutional architectures, written here at toy width (torchvision does not work with
the CPU torch of this project): the conv-net rows of the coverage table (benchmarks/coverage.py).

Each follows its paper's block structure, shrunk (widths 8-48, one or two blocks per stage, 32-pixel
inputs): ResNet (basic blocks, projection shortcuts), ResNeXt (grouped bottlenecks), DenseNet
(dense blocks and transitions), MobileNetV2 (inverted residuals, depthwise, ReLU6), MobileNetV3
(hard-swish, squeeze-excite with hard-sigmoid), EfficientNet (MBConv with SiLU and SE), ConvNeXt
(depthwise 7x7, channels-last LayerNorm, layer scale), RegNet (X and Y: group-width bottlenecks,
Y with SE), Inception (parallel 1x1 / 3x3 / double 3x3 / pool branches, concatenated),
SqueezeNet (fire modules), ShuffleNetV2 (channel split and channel shuffle), VGG with BatchNorm,
and U-Net (encoder, decoder with transposed convolutions and skip concatenations).

    >>> import torch
    >>> model = CONVNETS["resnet18"]().eval()
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CLASSES", "CONVNETS"]

CLASSES = 10


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)]
    layers.append(nn.BatchNorm2d(cout))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _Classifier(nn.Module):
    """stem -> stages -> global average pool -> linear head."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], width: int):
        super().__init__()
        self.stem, self.stages = stem, nn.Sequential(*stages)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


# -- ResNet / ResNeXt ---------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, stride=stride)
        self.conv2 = _conv_bn(cout, cout, act=None)
        self.shortcut = (
            _conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
        )

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv2(self.conv1(x)) + skip)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt / RegNet, SE for RegNetY), 1x1 expand."""

    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1, groups: int = 1, se=False):
        super().__init__()
        self.reduce = _conv_bn(cin, mid, 1)
        self.conv = _conv_bn(mid, mid, stride=stride, groups=groups)
        self.se = SqueezeExcite(mid, max(mid // 4, 2)) if se else nn.Identity()
        self.expand = _conv_bn(mid, cout, 1, act=None)
        self.shortcut = (
            _conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
        )

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.expand(self.se(self.conv(self.reduce(x)))) + skip)


def resnet18() -> nn.Module:
    widths = (8, 16, 24, 32)
    stages = []
    cin = widths[0]
    for i, w in enumerate(widths):
        stages += [BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w)]
        cin = w
    return _Classifier(_conv_bn(3, widths[0]), stages, widths[-1])


def resnext() -> nn.Module:
    widths, stages, cin = (16, 32, 48), [], 16
    for i, w in enumerate(widths):
        stages.append(Bottleneck(cin, w, mid=w, stride=1 if i == 0 else 2, groups=4))
        cin = w
    return _Classifier(_conv_bn(3, 16), stages, widths[-1])


def regnet(se: bool) -> nn.Module:
    """RegNetX (se=False) / RegNetY (se=True): bottleneck ratio 1, group width 8."""
    widths, stages, cin = (16, 24, 40), [], 16
    for w in widths:
        stages += [Bottleneck(cin, w, mid=w, stride=2, groups=w // 8, se=se), Bottleneck(w, w, w)]
        cin = w
    return _Classifier(_conv_bn(3, 16, stride=2), stages, widths[-1])


# -- DenseNet -----------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        h = self.conv1(F.relu(self.norm1(x)))
        return torch.cat([x, self.conv2(F.relu(self.norm2(h)))], dim=1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1), nn.AvgPool2d(2))


class DenseNet(nn.Module):
    def __init__(self, growth: int = 6, layers: tuple[int, ...] = (3, 3)):
        super().__init__()
        blocks, c = [], 12
        for i, n in enumerate(layers):
            for _ in range(n):
                blocks.append(DenseLayer(c, growth))
                c += growth
            if i < len(layers) - 1:
                blocks.append(Transition(c, c // 2))
                c //= 2
        self.stem = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.blocks, self.norm = nn.Sequential(*blocks), nn.BatchNorm2d(c)
        self.head = nn.Linear(c, CLASSES)

    def forward(self, x):
        h = F.relu(self.norm(self.blocks(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


# -- MobileNet / EfficientNet -------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int, gate=nn.Sigmoid, act=nn.ReLU):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


class InvertedResidual(nn.Module):
    """MobileNetV2's block, with MobileNetV3's / EfficientNet's activation and SE as options."""

    def __init__(self, cin, cout, expand, stride=1, act=nn.ReLU6, se: Callable | None = None):
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid, 1, act=act) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, 3, stride, groups=mid, act=act)
        self.se = se(mid) if se is not None else nn.Identity()
        self.project = _conv_bn(mid, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.project(self.se(self.depthwise(self.expand(x))))
        return x + h if self.residual else h


def _mobile(blocks, act, se, stem_act, last: int) -> nn.Module:
    layers, cin = [], 8
    for cout, expand, stride in blocks:
        layers.append(InvertedResidual(cin, cout, expand, stride, act, se))
        cin = cout
    layers.append(_conv_bn(cin, last, 1, act=stem_act))
    return _Classifier(_conv_bn(3, 8, stride=2, act=stem_act), layers, last)


_MBV2 = [(8, 1, 1), (12, 4, 2), (12, 4, 1), (16, 4, 2), (16, 4, 1), (24, 4, 1)]


def mobilenet_v2() -> nn.Module:
    return _mobile(_MBV2, nn.ReLU6, None, nn.ReLU6, 48)


def mobilenet_v3() -> nn.Module:
    def se(c):
        return SqueezeExcite(c, max(c // 4, 4), gate=nn.Hardsigmoid)

    return _mobile(_MBV2, nn.Hardswish, se, nn.Hardswish, 48)


def efficientnet() -> nn.Module:
    def se(c):
        return SqueezeExcite(c, max(c // 4, 2), act=nn.SiLU)

    return _mobile(_MBV2, nn.SiLU, se, nn.SiLU, 48)


# -- ConvNeXt -----------------------------------------------------------------------------------
class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pwconv1, self.pwconv2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        h = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.permute(0, 3, 1, 2)


class ChannelsFirstNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def convnext() -> nn.Module:
    widths, stages, cin = (8, 16, 32), [], 8
    for i, w in enumerate(widths):
        if i:
            stages.append(nn.Sequential(ChannelsFirstNorm(cin), nn.Conv2d(cin, w, 2, 2)))
        stages.append(ConvNeXtBlock(w))
        cin = w
    stem = nn.Sequential(nn.Conv2d(3, 8, 4, 4), ChannelsFirstNorm(8))
    return _Classifier(stem, stages, widths[-1])


# -- Inception / SqueezeNet / ShuffleNetV2 ------------------------------------------------------
class InceptionBlock(nn.Module):
    """GoogLeNet/Inception-v3 style: 1x1 | 1x1->3x3 | 1x1->3x3->3x3 | pool->1x1, concatenated."""

    def __init__(self, cin: int, b: int):
        super().__init__()
        self.b1 = _conv_bn(cin, b, 1)
        self.b3 = nn.Sequential(_conv_bn(cin, b, 1), _conv_bn(b, b))
        self.b5 = nn.Sequential(_conv_bn(cin, b // 2, 1), _conv_bn(b // 2, b), _conv_bn(b, b))
        self.pool = _conv_bn(cin, b // 2, 1)

    def forward(self, x):
        pooled = self.pool(F.max_pool2d(x, 3, 1, 1))
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), pooled], dim=1)


def inception() -> nn.Module:
    stages = [InceptionBlock(16, 8), nn.MaxPool2d(2), InceptionBlock(28, 12)]
    return _Classifier(_conv_bn(3, 16), stages, 42)


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.e1, self.e3 = nn.Conv2d(squeeze, expand, 1), nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], dim=1)


class SqueezeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.fires = nn.Sequential(Fire(16, 4, 8), Fire(16, 4, 8), nn.MaxPool2d(2), Fire(16, 6, 12))
        self.classifier = nn.Conv2d(24, CLASSES, 1)  # SqueezeNet's conv head, then global pool

    def forward(self, x):
        h = self.fires(F.max_pool2d(F.relu(self.stem(x)), 2))
        return F.adaptive_avg_pool2d(F.relu(self.classifier(F.dropout(h, 0.5, self.training))), 1)[
            :, :, 0, 0
        ]


def _channel_shuffle(x, groups: int = 2):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleBlock(nn.Module):
    """ShuffleNetV2 unit: half the channels pass, half go 1x1 -> dw 3x3 -> 1x1; then shuffle."""

    def __init__(self, c: int):
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(
            _conv_bn(half, half, 1),
            _conv_bn(half, half, groups=half, act=None),
            _conv_bn(half, half, 1),
        )

    def forward(self, x):
        keep, work = x.chunk(2, dim=1)
        return _channel_shuffle(torch.cat([keep, self.branch(work)], dim=1))


def shufflenet_v2() -> nn.Module:
    stages = [ShuffleBlock(16), nn.MaxPool2d(2), _conv_bn(16, 24, 1), ShuffleBlock(24)]
    return _Classifier(_conv_bn(3, 16, stride=2), stages, 24)


# -- VGG / U-Net --------------------------------------------------------------------------------
def vgg_bn() -> nn.Module:
    layers, cin = [], 3
    for w in (8, "M", 16, "M", 24, 24, "M", 32):
        if w == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(_conv_bn(cin, w))
            cin = w
    return _Classifier(nn.Identity(), layers, cin)


class UNet(nn.Module):
    """Two-level U-Net with a per-pixel head (segmentation logits at full resolution)."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.enc1 = nn.Sequential(_conv_bn(3, c), _conv_bn(c, c))
        self.enc2 = nn.Sequential(_conv_bn(c, 2 * c), _conv_bn(2 * c, 2 * c))
        self.bottom = nn.Sequential(_conv_bn(2 * c, 4 * c), _conv_bn(4 * c, 4 * c))
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = nn.Sequential(_conv_bn(4 * c, 2 * c), _conv_bn(2 * c, 2 * c))
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec1 = nn.Sequential(_conv_bn(2 * c, c), _conv_bn(c, c))
        self.head = nn.Conv2d(c, 3, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        return self.head(self.dec1(torch.cat([self.up1(d2), e1], dim=1)))


CONVNETS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": resnet18,
    "resnext": resnext,
    "densenet": DenseNet,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3,
    "efficientnet": efficientnet,
    "convnext": convnext,
    "regnet_x": lambda: regnet(se=False),
    "regnet_y": lambda: regnet(se=True),
    "inception": inception,
    "squeezenet": SqueezeNet,
    "shufflenet_v2": shufflenet_v2,
    "vgg_bn": vgg_bn,
    "unet": UNet,
}
