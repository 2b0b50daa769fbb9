"""Merging Hugging Face models (dict inputs, head families, GQA with rotary, GPT-2 Conv1D, ViT):
a model merged with its shuffled copy comes back, for every method."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)

import graphmerge as gm
from graphmerge.batches import random_batches

SMALL = {"num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def _bert():
    return BertForSequenceClassification(
        BertConfig(vocab_size=100, hidden_size=32, max_position_embeddings=16, **SMALL)
    )


def _llama():
    return LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=100,
            hidden_size=32,
            num_key_value_heads=2,
            max_position_embeddings=16,
            use_cache=False,
            pad_token_id=0,
            **SMALL,
        )
    )


def _gpt2():
    return GPT2ForSequenceClassification(
        GPT2Config(
            vocab_size=100,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=16,
            use_cache=False,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        )
    )


def _vit():
    return ViTForImageClassification(
        ViTConfig(hidden_size=32, image_size=16, patch_size=4, num_labels=3, **SMALL)
    )


CASES = {
    "bert": (_bert, "input_ids"),
    "llama-gqa": (_llama, "input_ids"),
    "gpt2": (_gpt2, "input_ids"),
    "vit": (_vit, "pixel_values"),
}
METHODS = [
    ("mudsc", {}),
    ("mudsc", {"matcher": "permute"}),
    ("zipit", {}),
    ("activation_matching", {}),
    ("weight_matching", {}),
]


@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_merge_with_shuffled_copy(name):
    torch.manual_seed(0)
    build, key = CASES[name]
    model = build().eval()
    example = (
        {key: torch.randn(4, 3, 16, 16)}
        if key == "pixel_values"
        else {key: torch.randint(1, 100, (4, 8))}
    )
    twin = gm.shuffle(model, example, seed=1)
    data = random_batches(example, 4, 16)
    probe = random_batches(example, 1, 4, seed=7)[0]
    reference = model(**probe).logits
    for method, options in METHODS:
        merged = gm.merge(
            [model, twin], data, method=method, iters=10, patience=2, progress=False, **options
        )
        got = merged.eval()(**probe).logits
        err = float((got - reference).abs().max() / (1 + reference.abs().max()))
        assert err < 1e-4, f"{name} {method} {options}: {err:.3g}"
