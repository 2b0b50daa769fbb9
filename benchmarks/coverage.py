"""Architecture coverage: which Hugging Face models graphmerge traces, groups and shuffles.

    python -m benchmarks.coverage                          # every architecture (a few minutes)
    python -m benchmarks.coverage --only bert-cls,llama-cls
    python -m benchmarks.coverage --markdown > benchmarks/coverage_table.md
    python -m benchmarks.coverage --json coverage.json
    python -m benchmarks.coverage --list                   # the architecture names

Every architecture is built from a *tiny* config with random weights (hidden 32-64, 1-2 layers,
4 heads, vocabulary 128, 32-pixel images, short audio), in eval mode, `use_cache=False` and eager
attention unless the variant is about SDPA. Nothing is downloaded (`HF_HUB_OFFLINE=1`).

For each architecture, inside its own try/except (one failure never stops the run):

1. build it (plus small noise on every parameter and BatchNorm statistic, so that no tensor is
   constant and a permutation always shows) and its example inputs (a dict of keyword tensors);
2. `gm.analyze(model, inputs)`: trace, infer the permutation groups, self-check them;
3. shuffle it with every free group permuted (`gm.shuffle`, which traces and checks the model
   again) and compare the outputs of the original and the twin on *other* inputs of the same
   shape: max abs difference over every floating output, relative to that output's largest
   magnitude; "function kept" when it is <= 1e-4;
4. count the share of parameter tensors the shuffle changed.

Status: `✓` traced, function kept, no hidden group frozen by an op without a rule and none by the
self-check; `partial` traced and function kept, but some hidden groups frozen by an op without a
rule or by the self-check; `✗` not traced, or the function changed (or the run raised).

The second table aggregates the ops without rules over architectures, sorted by how many
architectures each one *blocks* (freezes at least one hidden group of).
"""

# ruff: noqa: C408  (model configs read best as dict(key=value) keyword lists)
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import signal
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from torch import nn

VOCAB = 128
HIDDEN = 32
INTER = 64
LAYERS = 2
HEADS = 4
BATCH = 2
SEQ = 8
DEC_SEQ = 6
IMAGE = 32
AUDIO = 400  # raw samples for wav2vec2-style models
MELS = 16
MEL_FRAMES = 32  # = 2 * max_source_positions for Whisper
LABELS = 3
TOL = 1e-4  # function kept when max |diff| / output scale <= TOL
PER_ARCH_TIMEOUT = 120  # seconds; a hung export is reported, the run goes on

# ------------------------------------------------------------------------- the architectures


@dataclass(frozen=True)
class Arch:
    """One architecture: the model class, its config class and kwargs, the kind of inputs."""

    name: str
    family: str
    model_cls: str
    config_cls: str
    config: dict
    inputs: str  # text | seq2seq | image | audio | whisper
    attn: str | None = "eager"  # attn_implementation, None for models without attention choice
    note: str = ""


def _text(**kw) -> dict:
    """Common tiny-text-model kwargs (BERT-style names), updated with `kw`."""
    base = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTER,
        max_position_embeddings=64,
        num_labels=LABELS,
    )
    base.update(kw)
    return base


def _decoder(**kw) -> dict:
    """Tiny decoder kwargs (Llama-style names) with pad/bos/eos ids for sequence classification."""
    base = _text(
        pad_token_id=0, bos_token_id=1, eos_token_id=2, use_cache=False, tie_word_embeddings=False
    )
    base.update(kw)
    return base


_SEQ2SEQ = dict(
    vocab_size=VOCAB,
    d_model=HIDDEN,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=HEADS,
    decoder_attention_heads=HEADS,
    encoder_ffn_dim=INTER,
    decoder_ffn_dim=INTER,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=2,
    use_cache=False,
    num_labels=LABELS,
)

ARCHS: list[Arch] = [
    # ---- text encoders
    Arch("bert-cls", "encoder", "BertForSequenceClassification", "BertConfig", _text(), "text"),
    Arch(
        "bert-cls-sdpa",
        "encoder",
        "BertForSequenceClassification",
        "BertConfig",
        _text(),
        "text",
        attn="sdpa",
        note="SDPA attention kernel",
    ),
    Arch(
        "bert-base",
        "encoder",
        "BertModel",
        "BertConfig",
        _text(),
        "text",
        note="base model: the residual stream is the output",
    ),
    Arch(
        "roberta-cls",
        "encoder",
        "RobertaForSequenceClassification",
        "RobertaConfig",
        _text(pad_token_id=1, max_position_embeddings=66),
        "text",
    ),
    Arch(
        "distilbert-cls",
        "encoder",
        "DistilBertForSequenceClassification",
        "DistilBertConfig",
        dict(
            vocab_size=VOCAB,
            dim=HIDDEN,
            n_layers=LAYERS,
            n_heads=HEADS,
            hidden_dim=INTER,
            max_position_embeddings=64,
            num_labels=LABELS,
        ),
        "text",
    ),
    Arch(
        "albert-cls",
        "encoder",
        "AlbertForSequenceClassification",
        "AlbertConfig",
        _text(embedding_size=16),
        "text",
        note="factorized embedding, shared layers",
    ),
    Arch(
        "electra-cls",
        "encoder",
        "ElectraForSequenceClassification",
        "ElectraConfig",
        _text(embedding_size=16),
        "text",
        note="embedding projection",
    ),
    Arch(
        "deberta-v2-cls",
        "encoder",
        "DebertaV2ForSequenceClassification",
        "DebertaV2Config",
        _text(
            relative_attention=True,
            position_buckets=16,
            max_relative_positions=32,
            pos_att_type=["p2c", "c2p"],
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            pooler_hidden_size=HIDDEN,
        ),
        "text",
        note="disentangled relative attention",
    ),
    Arch(
        "mpnet-cls",
        "encoder",
        "MPNetForSequenceClassification",
        "MPNetConfig",
        _text(pad_token_id=1, max_position_embeddings=66),
        "text",
        note="relative position bias",
    ),
    Arch(
        "xlm-roberta-cls",
        "encoder",
        "XLMRobertaForSequenceClassification",
        "XLMRobertaConfig",
        _text(pad_token_id=1, max_position_embeddings=66),
        "text",
    ),
    Arch(
        "modernbert-cls",
        "encoder",
        "ModernBertForSequenceClassification",
        "ModernBertConfig",
        _text(
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
            global_attn_every_n_layers=2,
            local_attention=4,
        ),
        "text",
        note="GeGLU, rotary, local/global attention",
    ),
    # ---- decoders
    Arch(
        "gpt2-cls",
        "decoder",
        "GPT2ForSequenceClassification",
        "GPT2Config",
        dict(
            vocab_size=VOCAB,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=64,
            num_labels=LABELS,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            use_cache=False,
        ),
        "text",
        note="Conv1D (addmm)",
    ),
    Arch(
        "gpt2-base",
        "decoder",
        "GPT2Model",
        "GPT2Config",
        dict(
            vocab_size=VOCAB,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=64,
            use_cache=False,
        ),
        "text",
        note="base model",
    ),
    Arch(
        "gpt-neo-cls",
        "decoder",
        "GPTNeoForSequenceClassification",
        "GPTNeoConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_layers=LAYERS,
            num_heads=HEADS,
            intermediate_size=INTER,
            attention_types=[[["global", "local"], 1]],
            window_size=4,
            max_position_embeddings=64,
            num_labels=LABELS,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            use_cache=False,
        ),
        "text",
        note="local attention layers",
    ),
    Arch(
        "gptj-cls",
        "decoder",
        "GPTJForSequenceClassification",
        "GPTJConfig",
        dict(
            vocab_size=VOCAB,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            rotary_dim=4,
            n_inner=INTER,
            n_positions=64,
            num_labels=LABELS,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            use_cache=False,
            tie_word_embeddings=False,
        ),
        "text",
        note="interleaved partial rotary, parallel attn+MLP",
    ),
    Arch(
        "gpt-neox-cls",
        "decoder",
        "GPTNeoXForSequenceClassification",
        "GPTNeoXConfig",
        _decoder(
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.25,
            }
        ),
        "text",
        note="partial rotary, parallel residual, fused qkv",
    ),
    Arch(
        "opt-cls",
        "decoder",
        "OPTForSequenceClassification",
        "OPTConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            ffn_dim=INTER,
            word_embed_proj_dim=HIDDEN,
            max_position_embeddings=64,
            num_labels=LABELS,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            use_cache=False,
        ),
        "text",
        note="learned positions with offset",
    ),
    Arch(
        "bloom-cls",
        "decoder",
        "BloomForSequenceClassification",
        "BloomConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            num_labels=LABELS,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            use_cache=False,
        ),
        "text",
        note="alibi, fused qkv per head",
    ),
    Arch(
        "falcon-cls",
        "decoder",
        "FalconForSequenceClassification",
        "FalconConfig",
        _decoder(
            parallel_attn=True,
            multi_query=True,
            new_decoder_architecture=False,
            alibi=False,
            bias=False,
        ),
        "text",
        note="parallel attn+MLP, multi-query",
    ),
    Arch(
        "llama-cls",
        "decoder",
        "LlamaForSequenceClassification",
        "LlamaConfig",
        _decoder(num_key_value_heads=2),
        "text",
        note="GQA, rotary, SwiGLU, RMSNorm",
    ),
    Arch(
        "llama-cls-sdpa",
        "decoder",
        "LlamaForSequenceClassification",
        "LlamaConfig",
        _decoder(num_key_value_heads=2),
        "text",
        attn="sdpa",
        note="SDPA with GQA",
    ),
    Arch(
        "llama-lm",
        "decoder",
        "LlamaForCausalLM",
        "LlamaConfig",
        _decoder(num_key_value_heads=2),
        "text",
        note="LM head",
    ),
    Arch(
        "mistral-cls",
        "decoder",
        "MistralForSequenceClassification",
        "MistralConfig",
        _decoder(num_key_value_heads=2, sliding_window=4),
        "text",
        note="sliding window",
    ),
    Arch(
        "qwen2-cls",
        "decoder",
        "Qwen2ForSequenceClassification",
        "Qwen2Config",
        _decoder(num_key_value_heads=2),
        "text",
        note="qkv bias",
    ),
    Arch(
        "qwen3-cls",
        "decoder",
        "Qwen3ForSequenceClassification",
        "Qwen3Config",
        _decoder(num_key_value_heads=2, head_dim=8),
        "text",
        note="q/k RMSNorm per head",
    ),
    Arch(
        "phi-cls",
        "decoder",
        "PhiForSequenceClassification",
        "PhiConfig",
        _decoder(
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
            }
        ),
        "text",
        note="partial rotary, parallel attn+MLP",
    ),
    Arch(
        "phi3-cls",
        "decoder",
        "Phi3ForSequenceClassification",
        "Phi3Config",
        _decoder(num_key_value_heads=2),
        "text",
        note="fused qkv and gate_up",
    ),
    Arch(
        "gemma-cls",
        "decoder",
        "GemmaForSequenceClassification",
        "GemmaConfig",
        _decoder(num_key_value_heads=1, head_dim=8),
        "text",
        note="multi-query, (1 + w) RMSNorm, scaled embedding",
    ),
    Arch(
        "gemma2-cls",
        "decoder",
        "Gemma2ForSequenceClassification",
        "Gemma2Config",
        _decoder(num_key_value_heads=2, head_dim=8, sliding_window=4),
        "text",
        note="logit soft-capping, sandwich norms",
    ),
    Arch(
        "stablelm-cls",
        "decoder",
        "StableLmForSequenceClassification",
        "StableLmConfig",
        _decoder(num_key_value_heads=4),
        "text",
        note="partial rotary, LayerNorm",
    ),
    Arch(
        "olmo2-cls",
        "decoder",
        "Olmo2ForSequenceClassification",
        "Olmo2Config",
        _decoder(num_key_value_heads=2),
        "text",
        note="q/k RMSNorm over all heads",
    ),
    Arch(
        "mpt-cls",
        "decoder",
        "MptForSequenceClassification",
        "MptConfig",
        dict(
            vocab_size=VOCAB,
            d_model=HIDDEN,
            n_heads=HEADS,
            n_layers=LAYERS,
            expansion_ratio=2,
            max_seq_len=64,
            num_labels=LABELS,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            use_cache=False,
        ),
        "text",
        note="alibi, no biases",
    ),
    Arch(
        "codegen-lm",
        "decoder",
        "CodeGenForCausalLM",
        "CodeGenConfig",
        dict(
            vocab_size=VOCAB,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            rotary_dim=4,
            n_inner=INTER,
            n_positions=64,
            n_ctx=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            use_cache=False,
            tie_word_embeddings=False,
        ),
        "text",
        note="fused qkv in mp_num blocks, partial rotary",
    ),
    # ---- encoder-decoders
    Arch(
        "t5-lm",
        "enc-dec",
        "T5ForConditionalGeneration",
        "T5Config",
        dict(
            vocab_size=VOCAB,
            d_model=HIDDEN,
            d_kv=8,
            d_ff=INTER,
            num_layers=1,
            num_decoder_layers=1,
            num_heads=HEADS,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            pad_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=0,
            use_cache=False,
            tie_word_embeddings=False,
        ),
        "seq2seq",
        note="relative position buckets, RMSNorm",
    ),
    Arch(
        "t5-encoder",
        "enc-dec",
        "T5EncoderModel",
        "T5Config",
        dict(
            vocab_size=VOCAB,
            d_model=HIDDEN,
            d_kv=8,
            d_ff=INTER,
            num_layers=LAYERS,
            num_heads=HEADS,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            pad_token_id=0,
            eos_token_id=2,
            use_cache=False,
        ),
        "text",
        note="base encoder",
    ),
    Arch(
        "bart-lm",
        "enc-dec",
        "BartForConditionalGeneration",
        "BartConfig",
        dict(_SEQ2SEQ),
        "seq2seq",
        note="tied LM head, final_logits_bias",
    ),
    Arch(
        "pegasus-lm",
        "enc-dec",
        "PegasusForConditionalGeneration",
        "PegasusConfig",
        dict(_SEQ2SEQ),
        "seq2seq",
        note="sinusoidal positions, pre-norm",
    ),
    Arch(
        "marian-mt",
        "enc-dec",
        "MarianMTModel",
        "MarianConfig",
        dict(_SEQ2SEQ, decoder_vocab_size=VOCAB),
        "seq2seq",
        note="sinusoidal positions",
    ),
    # ---- vision
    Arch(
        "vit-cls",
        "vision",
        "ViTForImageClassification",
        "ViTConfig",
        dict(
            image_size=IMAGE,
            patch_size=8,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTER,
            num_labels=LABELS,
        ),
        "image",
    ),
    Arch(
        "vit-cls-sdpa",
        "vision",
        "ViTForImageClassification",
        "ViTConfig",
        dict(
            image_size=IMAGE,
            patch_size=8,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTER,
            num_labels=LABELS,
        ),
        "image",
        attn="sdpa",
        note="SDPA",
    ),
    Arch(
        "deit-cls",
        "vision",
        "DeiTForImageClassification",
        "DeiTConfig",
        dict(
            image_size=IMAGE,
            patch_size=8,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTER,
            num_labels=LABELS,
        ),
        "image",
    ),
    Arch(
        "beit-cls",
        "vision",
        "BeitForImageClassification",
        "BeitConfig",
        dict(
            image_size=IMAGE,
            patch_size=8,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTER,
            num_labels=LABELS,
            use_relative_position_bias=True,
            use_mean_pooling=True,
            layer_scale_init_value=0.1,
            vocab_size=VOCAB,
        ),
        "image",
        note="relative position bias, layer scale, mean pool",
    ),
    Arch(
        "dinov2-cls",
        "vision",
        "Dinov2ForImageClassification",
        "Dinov2Config",
        dict(
            image_size=IMAGE,
            patch_size=8,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            mlp_ratio=2,
            num_labels=LABELS,
        ),
        "image",
        note="layer scale, interpolated positions, cls+mean head",
    ),
    Arch(
        "swin-cls",
        "vision",
        "SwinForImageClassification",
        "SwinConfig",
        dict(
            image_size=IMAGE,
            patch_size=2,
            embed_dim=16,
            depths=[2, 1],
            num_heads=[2, 4],
            window_size=4,
            mlp_ratio=2.0,
            num_labels=LABELS,
        ),
        "image",
        note="shifted windows (roll), patch merging",
    ),
    Arch(
        "convnext-cls",
        "vision",
        "ConvNextForImageClassification",
        "ConvNextConfig",
        dict(
            num_channels=3,
            patch_size=4,
            num_stages=2,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            num_labels=LABELS,
            image_size=IMAGE,
        ),
        "image",
        attn=None,
        note="depthwise conv, channels-last LayerNorm, layer scale",
    ),
    Arch(
        "convnextv2-cls",
        "vision",
        "ConvNextV2ForImageClassification",
        "ConvNextV2Config",
        dict(
            num_channels=3,
            patch_size=4,
            num_stages=2,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            num_labels=LABELS,
            image_size=IMAGE,
        ),
        "image",
        attn=None,
        note="global response normalization",
    ),
    Arch(
        "resnet-cls",
        "vision",
        "ResNetForImageClassification",
        "ResNetConfig",
        dict(
            num_channels=3,
            embedding_size=16,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            layer_type="bottleneck",
            num_labels=LABELS,
        ),
        "image",
        attn=None,
        note="bottleneck, BatchNorm, projection shortcut",
    ),
    Arch(
        "regnet-cls",
        "vision",
        "RegNetForImageClassification",
        "RegNetConfig",
        dict(
            num_channels=3,
            embedding_size=16,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            groups_width=8,
            layer_type="y",
            num_labels=LABELS,
        ),
        "image",
        attn=None,
        note="grouped conv, squeeze-excite",
    ),
    Arch(
        "mobilenetv2-cls",
        "vision",
        "MobileNetV2ForImageClassification",
        "MobileNetV2Config",
        dict(num_channels=3, image_size=IMAGE, depth_multiplier=0.25, num_labels=LABELS),
        "image",
        attn=None,
        note="inverted residual, depthwise, ReLU6, TF padding",
    ),
    Arch(
        "efficientnet-cls",
        "vision",
        "EfficientNetForImageClassification",
        "EfficientNetConfig",
        dict(
            num_channels=3,
            image_size=IMAGE,
            width_coefficient=0.25,
            depth_coefficient=0.25,
            hidden_dim=320,
            num_labels=LABELS,
        ),
        "image",
        attn=None,
        note="MBConv, squeeze-excite, swish",
    ),
    Arch(
        "poolformer-cls",
        "vision",
        "PoolFormerForImageClassification",
        "PoolFormerConfig",
        dict(num_channels=3, hidden_sizes=[16, 32, 32, 32], depths=[1, 1, 1, 1], num_labels=LABELS),
        "image",
        attn=None,
        note="avg-pool token mixer, GroupNorm(1), layer scale",
    ),
    Arch(
        "segformer-cls",
        "vision",
        "SegformerForImageClassification",
        "SegformerConfig",
        dict(
            num_channels=3,
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[16, 32],
            num_attention_heads=[1, 2],
            mlp_ratios=[2, 2],
            patch_sizes=[7, 3],
            strides=[4, 2],
            decoder_hidden_size=32,
            num_labels=LABELS,
        ),
        "image",
        attn=None,
        note="spatial-reduction attention, Mix-FFN depthwise conv",
    ),
    # ---- audio
    Arch(
        "wav2vec2-cls",
        "audio",
        "Wav2Vec2ForSequenceClassification",
        "Wav2Vec2Config",
        _text(
            conv_dim=(32, 32),
            conv_stride=(5, 2),
            conv_kernel=(10, 3),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            classifier_proj_size=16,
            feat_extract_norm="group",
            do_stable_layer_norm=False,
        ),
        "audio",
        note="conv feature extractor, GroupNorm, weight-norm positional conv",
    ),
    Arch(
        "hubert-cls",
        "audio",
        "HubertForSequenceClassification",
        "HubertConfig",
        _text(
            conv_dim=(32, 32),
            conv_stride=(5, 2),
            conv_kernel=(10, 3),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            classifier_proj_size=16,
            feat_extract_norm="group",
            do_stable_layer_norm=False,
        ),
        "audio",
        note="like wav2vec2",
    ),
    Arch(
        "whisper-cls",
        "audio",
        "WhisperForAudioClassification",
        "WhisperConfig",
        dict(
            vocab_size=VOCAB,
            num_mel_bins=MELS,
            encoder_layers=LAYERS,
            decoder_layers=1,
            encoder_attention_heads=HEADS,
            decoder_attention_heads=HEADS,
            encoder_ffn_dim=INTER,
            decoder_ffn_dim=INTER,
            d_model=HIDDEN,
            max_source_positions=MEL_FRAMES // 2,
            max_target_positions=16,
            classifier_proj_size=16,
            num_labels=LABELS,
            use_cache=False,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        ),
        "whisper",
        note="encoder: conv stem, sinusoidal positions",
    ),
    # ---- mixture of experts
    Arch(
        "mixtral-cls",
        "moe",
        "MixtralForSequenceClassification",
        "MixtralConfig",
        _decoder(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
        "text",
        note="top-2 of 4 experts, default grouped_mm experts",
    ),
    Arch(
        "qwen2-moe-cls",
        "moe",
        "Qwen2MoeForSequenceClassification",
        "Qwen2MoeConfig",
        _decoder(
            num_key_value_heads=2,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=64,
            decoder_sparse_step=1,
        ),
        "text",
        note="top-2 experts + gated shared expert, grouped_mm",
    ),
    Arch(
        "mixtral-cls-bmm",
        "moe",
        "MixtralForSequenceClassification",
        "MixtralConfig",
        _decoder(
            num_key_value_heads=2,
            num_local_experts=4,
            num_experts_per_tok=2,
            experts_implementation="batched_mm",
        ),
        "text",
        note="experts_implementation=batched_mm (index + bmm)",
    ),
    Arch(
        "qwen2-moe-cls-bmm",
        "moe",
        "Qwen2MoeForSequenceClassification",
        "Qwen2MoeConfig",
        _decoder(
            num_key_value_heads=2,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=64,
            decoder_sparse_step=1,
            experts_implementation="batched_mm",
        ),
        "text",
        note="experts_implementation=batched_mm",
    ),
    # ---- state space
    Arch(
        "mamba-lm",
        "ssm",
        "MambaForCausalLM",
        "MambaConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            state_size=8,
            num_hidden_layers=LAYERS,
            expand=2,
            conv_kernel=4,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            use_cache=False,
            tie_word_embeddings=False,
        ),
        "text",
        attn=None,
        note="selective scan (slow path on CPU)",
    ),
    Arch(
        "mamba2-lm",
        "ssm",
        "Mamba2ForCausalLM",
        "Mamba2Config",
        dict(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            state_size=8,
            num_hidden_layers=LAYERS,
            num_heads=8,
            head_dim=8,
            n_groups=1,
            expand=2,
            conv_kernel=4,
            chunk_size=4,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            use_cache=False,
            tie_word_embeddings=False,
        ),
        "text",
        attn=None,
        note="chunked SSD scan",
    ),
]

ARCH_BY_NAME = {a.name: a for a in ARCHS}

# The smoke subset that tests/test_coverage_smoke.py runs.
SMOKE = ("bert-cls", "gpt2-cls", "llama-cls", "vit-cls", "resnet-cls")


# ------------------------------------------------------------------------- building


def config_of(arch: Arch, **overrides):
    """The transformers config of `arch` (its tiny kwargs and attention), `overrides` applied.

    The one place the benchmarks build Hugging Face configs (benchmarks.trace_depth scales
    bert-cls's up).
    """
    import transformers

    kwargs = dict(arch.config)
    if arch.attn is not None:
        kwargs["attn_implementation"] = arch.attn
    kwargs.update(overrides)
    config = getattr(transformers, arch.config_cls)(**kwargs)
    if kwargs.get("attn_implementation") is not None:
        config._attn_implementation = kwargs["attn_implementation"]
    return config


def build(arch: Arch, seed: int = 0) -> nn.Module:
    """The model, randomly initialized from its tiny config, in eval mode."""
    import transformers

    config = config_of(arch)
    torch.manual_seed(seed)
    model = getattr(transformers, arch.model_cls)(config)
    jitter(model, seed)
    return model.eval()


def jitter(model: nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """Add small noise to every floating parameter and BatchNorm statistic.

    Fresh models have constant tensors (LayerNorm weights 1, biases 0) that a permutation leaves
    equal: they would hide a wrong permutation from the output check and from the count of
    changed tensors. Noise makes every unit distinct.
    """
    g = torch.Generator().manual_seed(seed + 12345)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        for name, b in model.named_buffers():
            if not b.is_floating_point() or not b.numel():
                continue
            if name.endswith("running_mean"):
                b.add_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.1)
            elif name.endswith("running_var"):
                b.mul_(1 + 0.5 * torch.rand(b.shape, generator=g, dtype=b.dtype))


def make_inputs(arch: Arch, seed: int, batch: int = BATCH) -> dict:
    """Keyword inputs for `arch`; every seed gives inputs of the same shapes."""
    g = torch.Generator().manual_seed(seed)
    if arch.inputs in ("text", "seq2seq"):
        ids = torch.randint(3, VOCAB, (batch, SEQ), generator=g)
        out = {"input_ids": ids, "attention_mask": torch.ones(batch, SEQ, dtype=torch.long)}
        if arch.inputs == "seq2seq":
            out["decoder_input_ids"] = torch.randint(3, VOCAB, (batch, DEC_SEQ), generator=g)
        return out
    if arch.inputs == "image":
        return {"pixel_values": torch.randn(batch, 3, IMAGE, IMAGE, generator=g)}
    if arch.inputs == "audio":
        return {"input_values": torch.randn(batch, AUDIO, generator=g)}
    if arch.inputs == "whisper":
        return {"input_features": torch.randn(batch, MELS, MEL_FRAMES, generator=g)}
    raise ValueError(f"unknown input kind {arch.inputs!r}")


# ------------------------------------------------------------------------- measuring

_UNRULED_REASON = re.compile(
    r"^(?:no rule for (aten\.[\w.]+)|rule for (aten\.[\w.]+) (?:failed|gave wrong)"
    r"|(aten\.[\w.]+) with these arguments)"
)


def unruled_op_of(reason: str | None) -> str | None:
    """The op named by a frozen reason that comes from an op without (a working) rule."""
    if not reason:
        return None
    m = _UNRULED_REASON.match(reason)
    return next((x for x in m.groups() if x), None) if m else None


@dataclass
class Result:
    name: str
    family: str
    model_cls: str
    note: str = ""
    traced: bool = False
    error: str = ""  # TraceError (or other) message, first line
    stage: str = ""  # where a non-trace error happened: "analyze" (graphmerge crashed) or ""
    groups: int = 0
    free_groups: int = 0
    hidden_groups: int = 0  # size > 1
    permutable_share: float = 0.0  # of hidden units
    param_share: float = 0.0  # of parameter elements in free groups (Analysis)
    changed_share: float = 0.0  # of parameter tensors changed by the shuffle
    changed_tensors: int = 0
    total_tensors: int = 0
    max_rel_diff: float | None = None
    function_kept: bool = False
    selfcheck_frozen: list[str] = field(default_factory=list)
    unruled_frozen: dict[str, int] = field(default_factory=dict)  # op -> hidden groups frozen
    unruled: dict[str, int] = field(default_factory=dict)  # op -> occurrences in the graph
    unruled_sites: list[str] = field(default_factory=list)  # "op at source xN"
    trace_s: float = 0.0
    infer_s: float = 0.0
    verify_s: float = 0.0
    total_s: float = 0.0

    @property
    def status(self) -> str:
        if not self.traced or not self.function_kept:
            return "✗"
        if self.selfcheck_frozen or self.unruled_frozen:
            return "partial"
        return "✓"


def _float_leaves(out) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def max_rel_diff(ref, out) -> float:
    """Worst max |a - b| / max |a| over the floating outputs (inf on a shape change)."""
    a_list, b_list = _float_leaves(ref), _float_leaves(out)
    if len(a_list) != len(b_list):
        return float("inf")
    worst = 0.0
    for a, b in zip(a_list, b_list):
        if a.shape != b.shape:
            return float("inf")
        if not a.numel():
            continue
        scale = max(a.abs().max().item(), 1e-6)
        err = (a - b).abs().max().item() / scale
        if math.isnan(err):
            return float("inf")
        worst = max(worst, err)
    return worst


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise _Timeout(f"timed out after {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}"[:300]


def measure(arch: Arch, *, seed: int = 0, timeout: int = PER_ARCH_TIMEOUT) -> Result:
    """Build, analyze, shuffle and compare one architecture; never raises."""
    import graphmerge as gm

    res = Result(arch.name, arch.family, arch.model_cls, arch.note)
    start = time.perf_counter()
    try:
        with _time_limit(timeout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build(arch, seed)
            inputs = make_inputs(arch, seed=0)
            try:
                analysis = gm.analyze(model, inputs)
            except gm.TraceError as exc:
                res.error = _first_line(exc)
                return res
            except Exception as exc:  # noqa: BLE001 (export may have worked: graphmerge crashed)
                res.stage = "analyze"
                res.error = _first_line(exc)
                return res
            res.traced = True
            res.trace_s = analysis.trace_seconds
            res.infer_s = analysis.infer_seconds
            res.verify_s = analysis.verify_seconds
            groups = analysis.groups
            hidden = [g for g in groups if g.size > 1]
            res.groups = len(groups)
            res.hidden_groups = len(hidden)
            res.free_groups = sum(1 for g in hidden if not g.frozen)
            res.permutable_share = analysis.permutable_share
            res.param_share = (
                analysis.param_count_permuted / analysis.param_count_total
                if analysis.param_count_total
                else 0.0
            )
            res.selfcheck_frozen = [
                g.name
                for g in hidden
                if g.frozen and g.reason and g.reason.startswith("failed self-check")
            ]
            for g in hidden:
                op = unruled_op_of(g.reason) if g.frozen else None
                if op:
                    res.unruled_frozen[op] = res.unruled_frozen.get(op, 0) + 1
            for op, where, n in analysis.unruled:
                key = op.split(" ")[0]
                res.unruled[key] = res.unruled.get(key, 0) + n
                res.unruled_sites.append(f"{op} at {where}" + (f" x{n}" if n > 1 else ""))

            twin = gm.shuffle(model, inputs, seed=seed + 1).eval()
            params = dict(model.named_parameters())
            twin_params = dict(twin.named_parameters())
            res.total_tensors = len(params)
            res.changed_tensors = sum(
                1 for n, p in params.items() if not torch.equal(p.detach(), twin_params[n].detach())
            )
            res.changed_share = res.changed_tensors / res.total_tensors if params else 0.0
            worst = 0.0
            with torch.no_grad():
                for s in (1, 2):
                    other = make_inputs(arch, seed=s)
                    worst = max(worst, max_rel_diff(model(**other), twin(**other)))
            res.max_rel_diff = worst
            res.function_kept = worst <= TOL
    except _Timeout as exc:
        res.error = f"Timeout: {exc}"
    except Exception as exc:  # noqa: BLE001 (one architecture never stops the run)
        res.error = _first_line(exc)
        if os.environ.get("COVERAGE_TRACEBACK"):
            traceback.print_exc()
    finally:
        res.total_s = time.perf_counter() - start
    return res


# ------------------------------------------------------------------------- reporting


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_table(results: list[Result]) -> str:
    head = (
        "| architecture | model class | status | traced | groups | free | permutable units "
        "| param tensors changed | function kept (max rel diff) | self-check frozen "
        "| ops without rules | time s |"
    )
    lines = [
        head,
        "|" + "|".join(["---"] * 3 + ["---"] + ["---:"] * 5 + ["---:", "---", "---:"]) + "|",
    ]
    for r in results:
        if r.traced:
            traced = "yes"
        elif r.stage == "analyze":
            traced = "crash in analyze: " + _cell(r.error[:150])
        else:
            traced = "no: " + _cell(r.error[:160])
        if r.max_rel_diff is None:
            kept = "—" if not r.traced else "no: " + _cell(r.error[:120])
        else:
            kept = f"{'yes' if r.function_kept else 'NO'} ({r.max_rel_diff:.1e})"
        ops = (
            ", ".join(
                f"{op} x{n}"
                + (f" (freezes {r.unruled_frozen[op]})" if op in r.unruled_frozen else "")
                for op, n in sorted(r.unruled.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            or "—"
        )
        sc = str(len(r.selfcheck_frozen)) if r.traced else "—"
        changed = (
            f"{_pct(r.changed_share)} ({r.changed_tensors}/{r.total_tensors})"
            if r.total_tensors
            else "—"
        )
        lines.append(
            f"| {r.name} | {r.model_cls} | {r.status} | {traced} "
            f"| {r.groups if r.traced else '—'} | {r.free_groups if r.traced else '—'} "
            f"| {_pct(r.permutable_share) if r.traced else '—'} | {changed} | {kept} | {sc} "
            f"| {_cell(ops)} | {r.total_s:.1f} |"
        )
    return "\n".join(lines)


def unruled_summary(results: list[Result]) -> list[dict]:
    """One row per op without a rule: the architectures it blocks and those it appears in."""
    ops: dict[str, dict] = {}
    for r in results:
        for op, n in r.unruled.items():
            row = ops.setdefault(
                op,
                {
                    "op": op,
                    "blocks": [],
                    "appears": [],
                    "occurrences": 0,
                    "hidden_groups_frozen": 0,
                },
            )
            row["appears"].append(r.name)
            row["occurrences"] += n
        for op, n in r.unruled_frozen.items():
            row = ops.setdefault(
                op,
                {
                    "op": op,
                    "blocks": [],
                    "appears": [],
                    "occurrences": 0,
                    "hidden_groups_frozen": 0,
                },
            )
            row["blocks"].append(r.name)
            row["hidden_groups_frozen"] += n
    return sorted(
        ops.values(),
        key=lambda d: (-len(d["blocks"]), -len(d["appears"]), -d["occurrences"], d["op"]),
    )


def unruled_table(results: list[Result]) -> str:
    rows = unruled_summary(results)
    if not rows:
        return "(no op without a rule in any architecture)"
    lines = [
        (
            "| op | blocks (archs) | hidden groups frozen | appears in (archs) | nodes "
            "| architectures blocked |"
        ),
        "|---|---:|---:|---:|---:|---|",
    ]
    for d in rows:
        lines.append(
            f"| {d['op']} | {len(d['blocks'])} | {d['hidden_groups_frozen']} "
            f"| {len(d['appears'])} | {d['occurrences']} "
            f"| {', '.join(d['blocks']) or '— (' + ', '.join(d['appears']) + ')'} |"
        )
    return "\n".join(lines)


def summary_line(results: list[Result]) -> str:
    n = len(results)
    ok = sum(r.status == "✓" for r in results)
    part = sum(r.status == "partial" for r in results)
    bad = sum(r.status == "✗" for r in results)
    traced = sum(r.traced for r in results)
    total = sum(r.total_s for r in results)
    return (
        f"{n} architectures: {ok} ✓, {part} partial, {bad} ✗; {traced} traced; total {total:.0f} s"
    )


def versions() -> str:
    import transformers

    return (
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"torch threads {torch.get_num_threads()}"
    )


def markdown(results: list[Result], command: str, wall: float) -> str:
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    details = []
    for r in results:
        if r.unruled_sites or r.selfcheck_frozen or r.error:
            bits = []
            if r.error:
                bits.append(f"error: `{r.error}`")
            if r.selfcheck_frozen:
                bits.append("self-check froze: " + ", ".join(f"`{g}`" for g in r.selfcheck_frozen))
            if r.unruled_sites:
                bits.append("unruled: " + "; ".join(f"`{s}`" for s in r.unruled_sites))
            details.append(f"- **{r.name}**: " + " — ".join(bits))
    parts = [
        "# graphmerge architecture coverage",
        "",
        f"Command: `{command}`  ",
        f"Date: {date}  ",
        f"Versions: {versions()}  ",
        f"Wall time: {wall:.0f} s",
        "",
        (
            "Tiny random-init configs (hidden 16-64, 1-2 layers, 4 heads, vocab 128, 32 px images). "
            "*permutable units*: share of hidden units (groups of size > 1) that may be permuted "
            "(`Analysis.permutable_share`); *param tensors changed*: share of parameter tensors that a "
            "shuffle changed; *function kept*: max |diff| / output scale on two other inputs of the "
            f"same shape, kept when <= {TOL:g}. Status: ✓ traced, kept, no hidden group frozen by an "
            "op without a rule or by the self-check; partial: traced and kept but some such group "
            "frozen; ✗ not traced or function changed."
        ),
        "",
        summary_line(results),
        "",
        results_table(results),
        "",
        "## Ops without rules",
        "",
        (
            "*blocks*: architectures where the op froze at least one hidden group (groups of "
            "size > 1; an op that only touches frozen axes, e.g. token ids, blocks nothing)."
        ),
        "",
        unruled_table(results),
    ]
    if details:
        parts += ["", "## Details", "", *details]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.coverage", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--only", help="comma-separated architecture names (see --list)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print a full Markdown document (header, tables, details)",
    )
    parser.add_argument("--list", action="store_true", help="print the architecture names")
    parser.add_argument(
        "--timeout", type=int, default=PER_ARCH_TIMEOUT, help="seconds per architecture (0: none)"
    )
    args = parser.parse_args(argv)
    if args.list:
        for a in ARCHS:
            print(f"{a.name:18s} {a.family:8s} {a.model_cls}")
        return 0
    archs = ARCHS
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in ARCH_BY_NAME]
        if unknown:
            parser.error(f"unknown architectures {unknown}; see --list")
        archs = [ARCH_BY_NAME[n] for n in names]
    command = "python -m benchmarks.coverage" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else ""
    )
    results = []
    start = time.perf_counter()
    for arch in archs:
        r = measure(arch, timeout=args.timeout)
        results.append(r)
        print(
            f"[{len(results)}/{len(archs)}] {r.name:18s} {r.status:8s} {r.total_s:5.1f}s "
            f"groups={r.groups} free={r.free_groups} units={_pct(r.permutable_share)} "
            f"changed={_pct(r.changed_share)} diff={r.max_rel_diff} "
            f"unruled={r.unruled} selfcheck={len(r.selfcheck_frozen)} {r.error[:150]}",
            file=sys.stderr,
            flush=True,
        )
    wall = time.perf_counter() - start
    if args.markdown:
        print(markdown(results, command, wall))
    else:
        print(results_table(results))
        print()
        print(unruled_table(results))
        print()
        print(summary_line(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "command": command,
                    "versions": versions(),
                    "wall_s": wall,
                    "results": [dict(asdict(r), status=r.status) for r in results],
                    "unruled": unruled_summary(results),
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
