"""What several test files share: tiny Hugging Face configs and the error merges are checked by.

The tests folder is on sys.path (conftest.py), so test files `from helpers import ...`.
"""

from __future__ import annotations

import torch

# The sizes of every tiny config (tests that check group sizes read them from here).
VOCAB, HIDDEN, LAYERS, HEADS, IMAGE, PATCH = 100, 32, 2, 4, 32, 8

_TINY = {  # BERT-style names; GPT-2 has its own below
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "intermediate_size": 2 * HIDDEN,
}
_TEXT = {**_TINY, "vocab_size": VOCAB, "max_position_embeddings": 64}
_FAMILIES = {
    "bert": ("BertConfig", _TEXT),
    "llama": ("LlamaConfig", {**_TEXT, "num_key_value_heads": 2, "use_cache": False}),
    "gpt2": (
        "GPT2Config",
        {
            "vocab_size": VOCAB,
            "n_embd": HIDDEN,
            "n_layer": LAYERS,
            "n_head": HEADS,
            "n_positions": 64,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "use_cache": False,
        },
    ),
    "vit": ("ViTConfig", {**_TINY, "image_size": IMAGE, "patch_size": PATCH, "num_channels": 3}),
}


def tiny_config(family: str, **overrides):
    """A tiny transformers config for `family` ("bert", "llama", "gpt2" or "vit").

    Hidden size 32, 2 layers, 4 heads (Llama: 2 key/value heads, so grouped-query attention),
    vocabulary 100, 64 positions, 32-pixel images in 8-pixel patches, no KV cache; `overrides`
    replace or add config fields (e.g. `attn_implementation="sdpa"`, `num_labels=3`).
    """
    import transformers

    name, base = _FAMILIES[family]
    return getattr(transformers, name)(**{**base, **overrides})


def relative_error(reference: torch.Tensor, got: torch.Tensor) -> float:
    """max |got - reference| / (1 + max |reference|): the error merges with a twin are held to."""
    reference, got = reference.detach(), got.detach()
    return float((got - reference).abs().max() / (1 + reference.abs().max()))


def shuffled_hf_pair(build, key: str):
    """A Hugging Face model, its shuffled copy, 4 calibration batches shaped like its input
    `key` (images for "pixel_values", else token ids), a probe batch and the model's logits on
    it: (model, twin, data, probe, reference)."""
    import graphmerge as gm
    from graphmerge.batches import random_batches

    torch.manual_seed(0)
    model = build().eval()
    example = (
        {key: torch.randn(4, 3, 16, 16)}
        if key == "pixel_values"
        else {key: torch.randint(1, 100, (4, 8))}
    )
    twin = gm.shuffle(model, example, seed=1)
    data = random_batches(example, 4, 16)
    probe = random_batches(example, 1, 4, seed=7)[0]
    return model, twin, data, probe, model(**probe).logits


def trained_digits_pair(
    kind: str, split_seed: int, seeds: tuple[int, int], epochs: int, same_task: bool = False
):
    """Two digits models of `kind` ("mlp" or "cnn") trained on the two halves of a 5+5 class
    split (`split_seed`) from `seeds`, one torch thread: (data, model A, model B).

    same_task: both trained on all ten classes (the data's two tasks are then all ten)."""
    from graphmerge_examples.tasks import CNNEmbed, MLPEmbed, TaskData, digits_split, train

    torch.set_num_threads(1)
    image = kind == "cnn"
    arch = CNNEmbed if image else MLPEmbed
    data = digits_split(seed=split_seed, image=image)
    if same_task:
        every = tuple(range(10))
        data = TaskData(data.x_train, data.y_train, data.x_test, data.y_test, (every, every), 10)
    a = train(arch(), data, task=0, seed=seeds[0], epochs=epochs)
    b = train(arch(), data, task=1, seed=seeds[1], epochs=epochs)
    return data, a, b
