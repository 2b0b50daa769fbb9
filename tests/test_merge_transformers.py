"""Merging Hugging Face models (dict inputs, head families, GQA with rotary, GPT-2 Conv1D, ViT):
a model merged with its shuffled copy comes back, for every method."""

import pytest
import transformers
from helpers import relative_error, shuffled_hf_pair, tiny_config

import graphmerge as gm


def _bert():
    return transformers.BertForSequenceClassification(
        tiny_config("bert", max_position_embeddings=16)
    )


def _llama():
    return transformers.LlamaForSequenceClassification(
        tiny_config("llama", max_position_embeddings=16, pad_token_id=0)
    )


def _gpt2():
    return transformers.GPT2ForSequenceClassification(
        tiny_config("gpt2", n_positions=16, eos_token_id=1)
    )


def _vit():
    return transformers.ViTForImageClassification(
        tiny_config("vit", image_size=16, patch_size=4, num_labels=3)
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
    model, twin, data, probe, reference = shuffled_hf_pair(*CASES[name])
    for method, options in METHODS:
        merged = gm.merge(
            [model, twin], data, method=method, iters=10, patience=2, progress=False, **options
        )
        got = merged.eval()(**probe).logits
        err = relative_error(reference, got)
        assert err < 1e-4, f"{name} {method} {options}: {err:.3g}"
