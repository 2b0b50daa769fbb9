"""The model pairs of the scale benchmark (`benchmarks/scale.py`, issue 11): two models of one
architecture from different random-init seeds (0 and 1), eval mode, float32, and their
calibration batches (seeded random token ids or images; nothing is downloaded).

Each pair comes in three sizes: "full" (the real size the benchmark is about), "quick" (the same
architecture cut down so that every pair runs in a minute or two: the CI-sized run) and "tiny"
(seconds: the smoke test). `PAIRS[name].sizes[size]` holds the model config and the data shape.

- `gpt2`: `GPT2LMHeadModel(GPT2Config(n_layer=12))`, GPT-2 small (124M, 50,257-token vocabulary,
  LM head tied to the embedding), 8 batches of 8 x 128 token ids. `use_cache=False`: with the
  default cache the output holds a `DynamicCache`, which torch.export cannot trace.
- `bert`: `BertForSequenceClassification` (2 labels), BERT-base: 12 layers, hidden 768, 30,522
  vocabulary; 8 batches of 8 x 128 token ids.
- `llama`: `LlamaForCausalLM` with GQA (32 query heads, 4 key/value heads) and SwiGLU, hidden
  2048, intermediate 5632, 16 layers, vocabulary 2,048 (0.71B parameters per model); 4 batches
  of 4 x 128 token ids.
- `resnet50`: `ResNet50` below (bottleneck blocks 3-4-6-3, widths 64..2048, BatchNorm, 1000
  classes; 25.6M), 4 batches of 25 random 224 x 224 images.
- `resnet20x4`: `benchmarks.models.ResNet20(width=4, in_ch=3)` (widths 64/128/256, 4.36M), 20
  batches of 100 random 32 x 32 images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PAIRS", "SIZES", "Bottleneck", "PairSpec", "ResNet50", "build_pair", "calibration"]

SIZES = ("full", "quick", "tiny")
SEEDS = (0, 1)  # model A, model B
DATA_SEED = 1234


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 reduce, 3x3 (stride here), 1x1 expand x4, projection shortcut."""

    def __init__(self, cin: int, mid: int, stride: int):
        super().__init__()
        cout = 4 * mid
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.downsample(x))


class ResNet50(nn.Module):
    """ResNet-50 (torchvision's layout, written out): 7x7/2 stem and 3x3/2 max-pool, four
    stages of `blocks` bottlenecks with widths `base` * (1, 2, 4, 8) (x4 out), average pool, fc.
    base=64, blocks=(3, 4, 6, 3), classes=1000 is the real one (25.6M parameters)."""

    def __init__(self, base: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3), classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        cin, stages = base, []
        for i, n in enumerate(blocks):
            mid = base * 2**i
            stride = 2 if i else 1
            layers = [Bottleneck(cin, mid, stride)]
            layers += [Bottleneck(4 * mid, mid, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = 4 * mid
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@dataclass(frozen=True)
class Size:
    """One size of a pair: the model's keyword arguments and the calibration data's shape
    (`batches` batches of `batch` sequences of `seq` token ids below `vocab`, or of `batch` images
    of `seq` x `seq` pixels)."""

    model: dict[str, Any]
    batches: int
    batch: int
    seq: int
    vocab: int = 0  # token models: ids are drawn below this


@dataclass(frozen=True)
class PairSpec:
    """A pair: `build(**size.model)` makes one model (the caller seeds torch first); `kind` is
    "tokens" (dict batches of `input_ids`) or "images" (3-channel image tensors);
    `reset_bn` the settings of gm.merge's reset_bn the benchmark runs by default."""

    build: Callable[..., nn.Module]
    kind: str
    sizes: dict[str, Size]
    reset_bn: tuple[bool, ...] = (True,)
    note: str = field(default="", compare=False)


def _gpt2(**config) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(use_cache=False, **config))


def _bert(**config) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(num_labels=2, **config))


def _llama(**config) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(use_cache=False, pad_token_id=0, **config))


def _resnet20(**config) -> nn.Module:
    from benchmarks.models import ResNet20

    return ResNet20(in_ch=3, **config)


_SMALL_VOCAB = {"bos_token_id": 0, "eos_token_id": 0}  # GPT-2's 50256 is outside a cut vocabulary

PAIRS: dict[str, PairSpec] = {
    "gpt2": PairSpec(
        _gpt2,
        "tokens",
        {
            "full": Size({"n_layer": 12}, 8, 8, 128, 50257),
            "quick": Size(
                {"n_layer": 2, "n_embd": 256, "n_head": 4, "vocab_size": 2000, **_SMALL_VOCAB},
                4,
                8,
                64,
                2000,
            ),
            "tiny": Size(
                {
                    "n_layer": 2,
                    "n_embd": 64,
                    "n_head": 4,
                    "vocab_size": 1000,
                    "n_positions": 64,
                    **_SMALL_VOCAB,
                },
                2,
                4,
                32,
                1000,
            ),
        },
    ),
    "bert": PairSpec(
        _bert,
        "tokens",
        {
            "full": Size({}, 8, 8, 128, 30522),
            "quick": Size(
                {
                    "num_hidden_layers": 2,
                    "hidden_size": 256,
                    "num_attention_heads": 4,
                    "intermediate_size": 1024,
                    "vocab_size": 2000,
                },
                4,
                8,
                64,
                2000,
            ),
            "tiny": Size(
                {
                    "num_hidden_layers": 2,
                    "hidden_size": 64,
                    "num_attention_heads": 4,
                    "intermediate_size": 128,
                    "vocab_size": 1000,
                },
                2,
                4,
                32,
                1000,
            ),
        },
    ),
    "llama": PairSpec(
        _llama,
        "tokens",
        {
            "full": Size(
                {
                    "hidden_size": 2048,
                    "intermediate_size": 5632,
                    "num_hidden_layers": 16,
                    "num_attention_heads": 32,
                    "num_key_value_heads": 4,
                    "vocab_size": 2048,
                    "max_position_embeddings": 2048,
                },
                4,
                4,
                128,
                2048,
            ),
            "quick": Size(
                {
                    "hidden_size": 256,
                    "intermediate_size": 704,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 8,
                    "num_key_value_heads": 2,
                    "vocab_size": 1000,
                    "max_position_embeddings": 256,
                },
                4,
                4,
                64,
                1000,
            ),
            "tiny": Size(
                {
                    "hidden_size": 64,
                    "intermediate_size": 176,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 4,
                    "num_key_value_heads": 2,
                    "vocab_size": 500,
                    "max_position_embeddings": 64,
                },
                2,
                2,
                32,
                500,
            ),
        },
    ),
    "resnet50": PairSpec(
        ResNet50,
        "images",
        {
            "full": Size({}, 4, 25, 224),
            "quick": Size({"base": 16}, 4, 25, 32),
            "tiny": Size({"base": 4, "blocks": (1, 1, 1, 1), "classes": 10}, 2, 8, 32),
        },
        reset_bn=(True, False),
    ),
    "resnet20x4": PairSpec(
        _resnet20,
        "images",
        {
            "full": Size({"width": 4}, 20, 100, 32),
            "quick": Size({"width": 1}, 4, 100, 32),
            "tiny": Size({"width": 1, "blocks": 1}, 2, 16, 32),
        },
        reset_bn=(False,),
    ),
}


def build_pair(name: str, size: str = "full") -> list[nn.Module]:
    """The two models of pair `name` at `size`: seeded with 0 and 1, eval mode, float32."""
    spec = PAIRS[name]
    models = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        models.append(spec.build(**spec.sizes[size].model).float().eval())
    return models


def calibration(name: str, size: str = "full", tokens: tuple[int, int, int] | None = None) -> list:
    """Pair `name`'s calibration batches at `size` (seeded): dicts of `input_ids` for token
    models, image tensors for conv nets. `tokens` = (batches, batch, seq) overrides the shape."""
    spec = PAIRS[name]
    shape = spec.sizes[size]
    batches, batch, seq = tokens or (shape.batches, shape.batch, shape.seq)
    gen = torch.Generator().manual_seed(DATA_SEED)
    if spec.kind == "images":
        return [torch.randn(batch, 3, seq, seq, generator=gen) for _ in range(batches)]
    return [
        {"input_ids": torch.randint(0, shape.vocab, (batch, seq), generator=gen)}
        for _ in range(batches)
    ]
