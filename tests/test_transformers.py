"""Hugging Face transformers models, built from tiny configs (no hub access).

The oracle is function preservation: `gm.shuffle` must change the weights and keep the outputs on
inputs other than the example. On top of that, a few structural facts the design promises:

- with a classification head the residual stream is one free group holding the token (or patch)
  embedding, every LayerNorm and the head's input axis;
- when the residual stream is the model output (`last_hidden_state`) it is frozen;
- rotary attention (Llama) lets whole heads move, never the q/k units inside a head.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from helpers import HIDDEN, IMAGE, LAYERS, VOCAB, tiny_config

import graphmerge as gm

# A group that fails its self-check (a wrong rule) fails the test instead of being frozen with
# a warning; other warnings are shown, not hidden.
pytestmark = pytest.mark.filterwarnings("error:graphmerge self-check")

SEQ = 8
BATCH = 2
ATTN = ["eager", "sdpa"]
RTOL, ATOL = 1e-4, 1e-5


# --------------------------------------------------------------------------- model zoo

# name -> (model class name, tiny_config family, input kind, output field); the configs: one
# attention implementation of ATTN, 3 labels (ViT: 5)
ZOO = {
    "bert-cls": ("BertForSequenceClassification", "bert", "text", "logits"),
    "bert": ("BertModel", "bert", "text", "last_hidden_state"),
    "gpt2": ("GPT2Model", "gpt2", "text", "last_hidden_state"),
    "gpt2-cls": ("GPT2ForSequenceClassification", "gpt2", "text", "logits"),
    "llama-lm": ("LlamaForCausalLM", "llama", "text", "logits"),
    "llama": ("LlamaModel", "llama", "text", "last_hidden_state"),
    "vit": ("ViTModel", "vit", "image", "last_hidden_state"),
    "vit-cls": ("ViTForImageClassification", "vit", "image", "logits"),
}


def build(name: str, attn: str) -> nn.Module:
    cls_name, family, _, _ = ZOO[name]
    config = tiny_config(family, num_labels=5 if family == "vit" else 3, attn_implementation=attn)
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(config)
    return model.eval()


def text_inputs(seed: int, batch: int = BATCH, seq: int = SEQ, pad: int = 0) -> dict:
    """input_ids in [3, VOCAB) (0 is GPT-2's pad id); the last `pad` positions of row 0 padded."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    if pad:
        input_ids[0, seq - pad :] = 0
        attention_mask[0, seq - pad :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def image_inputs(seed: int, batch: int = BATCH) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(batch, 3, IMAGE, IMAGE, generator=g)}


def example_inputs(name: str) -> dict:
    return text_inputs(0) if ZOO[name][2] == "text" else image_inputs(0)


def other_inputs(name: str) -> list[dict]:
    """Inputs other than the example: same shape, then another batch size / length with padding."""
    if ZOO[name][2] == "text":
        return [text_inputs(1), text_inputs(2, batch=3, seq=11, pad=4)]
    return [image_inputs(1), image_inputs(2, batch=3)]


def output_of(name: str, model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return getattr(model(**inputs), ZOO[name][3])


def changed_params(model: nn.Module, twin: nn.Module) -> list[str]:
    twin_params = dict(twin.named_parameters())
    return [
        n
        for n, p in model.named_parameters()
        if not torch.equal(p.detach(), twin_params[n].detach())
    ]


def group_with(groups, param: str, axis: int):
    found = [g for g in groups if (param, axis) in g.params()]
    assert found, f"no group holds {param}[{axis}]; groups:\n" + "\n".join(map(str, groups))
    assert len(found) == 1, f"{param}[{axis}] in several groups: {[g.name for g in found]}"
    return found[0]


def layer_norms(model: nn.Module) -> list[str]:
    return [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)]


# --------------------------------------------------------------------------- every model: the oracle


@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("name", list(ZOO))
def test_shuffle_preserves_function(name, attn):
    model = build(name, attn)
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    twin = gm.shuffle(model, example_inputs(name), seed=0)

    assert type(twin) is type(model)
    assert twin is not model
    assert changed_params(model, twin), "shuffle left every parameter in place"
    for n, p in model.state_dict().items():  # the input model is never modified
        assert torch.equal(p, before[n]), f"shuffle modified the input model: {n}"

    twin.eval()
    for inputs in other_inputs(name):
        torch.testing.assert_close(
            output_of(name, twin, inputs), output_of(name, model, inputs), rtol=RTOL, atol=ATOL
        )


@pytest.mark.parametrize("name", ["bert-cls", "gpt2-cls"])
def test_shuffle_other_seeds(name):
    model = build(name, "sdpa")
    inputs = other_inputs(name)[1]
    reference = output_of(name, model, inputs)
    twins = [gm.shuffle(model, example_inputs(name), seed=s) for s in (1, 2)]
    assert changed_params(twins[0], twins[1]), "different seeds gave the same permutation"
    for twin in twins:
        torch.testing.assert_close(
            output_of(name, twin.eval(), inputs), reference, rtol=RTOL, atol=ATOL
        )


# --------------------------------------------------------------------------- residual stream


# name -> (hidden axis of the embedding that starts the stream, the head's input axis)
HEADED = {
    "bert-cls": (("bert.embeddings.word_embeddings.weight", 1), ("bert.pooler.dense.weight", 1)),
    "gpt2-cls": (("transformer.wte.weight", 1), ("score.weight", 1)),
    "vit-cls": (("vit.embeddings.patch_embeddings.projection.weight", 0), ("classifier.weight", 1)),
}


@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("name", list(HEADED))
def test_residual_stream_is_one_free_group(name, attn):
    model = build(name, attn)
    groups = gm.permutation_groups(model, example_inputs(name))
    embedding, head_input = HEADED[name]
    residual = group_with(groups, *embedding)

    assert not residual.frozen, f"residual stream frozen: {residual.reason}"
    assert residual.size == HIDDEN
    params = residual.params()
    norms = layer_norms(model)
    assert len(norms) >= 2 * LAYERS
    missing = [n for n in norms if (n, 0) not in params]
    assert not missing, f"LayerNorms outside the residual group {residual}: {missing}"
    assert head_input in params, f"{head_input} not in residual group {residual}"


def test_bert_classifier_input_is_pooler_group():
    """BERT's classifier reads the pooler's tanh output: its own free group, not the residual."""
    model = build("bert-cls", "sdpa")
    groups = gm.permutation_groups(model, example_inputs("bert-cls"))
    pooled = group_with(groups, "classifier.weight", 1)
    assert not pooled.frozen, pooled.reason
    assert ("bert.pooler.dense.weight", 0) in pooled.params()
    assert ("bert.embeddings.word_embeddings.weight", 1) not in pooled.params()
    frozen_out = group_with(groups, "classifier.weight", 0)  # logits are the model output
    assert frozen_out.frozen


@pytest.mark.parametrize(
    "name, embedding",
    [
        ("gpt2", ("wte.weight", 1)),
        ("bert", ("embeddings.word_embeddings.weight", 1)),
        ("vit", ("embeddings.patch_embeddings.projection.weight", 0)),
        ("llama", ("embed_tokens.weight", 1)),
    ],
)
def test_residual_stream_frozen_when_it_is_the_output(name, embedding):
    model = build(name, "sdpa")
    groups = gm.permutation_groups(model, example_inputs(name))
    residual = group_with(groups, *embedding)
    assert residual.frozen, f"{residual} is the model output but not frozen"
    assert residual.reason


# --------------------------------------------------------------------------- Llama: rotary + GQA


def hidden_permutation(model: nn.Module, twin: nn.Module, embed: str) -> torch.Tensor:
    """p with twin_embed[:, j] == embed[:, p[j]] (identity when the residual stream is frozen)."""
    a = dict(model.named_parameters())[embed].detach()
    b = dict(twin.named_parameters())[embed].detach()
    dist = torch.cdist(b.T.contiguous(), a.T.contiguous())
    p = dist.argmin(dim=1)
    assert sorted(p.tolist()) == list(range(a.shape[1])), "embedding columns are not a permutation"
    torch.testing.assert_close(b, a[:, p], rtol=0, atol=0)
    return p


def head_blocks(weight: torch.Tensor, heads: int, p: torch.Tensor) -> torch.Tensor:
    """(heads, head_dim, hidden) view of a projection, its input columns put back in place."""
    w = torch.empty_like(weight)
    w[:, p] = weight
    return w.reshape(heads, weight.shape[0] // heads, weight.shape[1])


def match_heads(orig: torch.Tensor, twin: torch.Tensor, what: str) -> list[int]:
    """For each twin head, the original head it equals row for row; fails if there is none."""
    src = []
    for h in range(twin.shape[0]):
        same = [k for k in range(orig.shape[0]) if torch.equal(twin[h], orig[k])]
        assert same, (
            f"{what}: head {h} of the shuffled model equals no head of the original with rows in "
            "the same order (units moved inside a rotary head, or across heads)"
        )
        src.append(same[0])
    assert sorted(src) == list(range(orig.shape[0])), f"{what}: heads {src} are not a permutation"
    return src


@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("name", ["llama-lm", "llama"])
def test_llama_rotary_heads_move_whole(name, attn):
    model = build(name, attn)
    cfg = model.config
    prefix = "model." if name == "llama-lm" else ""
    moved = False
    for seed in range(4):
        twin = gm.shuffle(model, example_inputs(name), seed=seed).eval()
        for inputs in other_inputs(name):
            torch.testing.assert_close(
                output_of(name, twin, inputs), output_of(name, model, inputs), rtol=RTOL, atol=ATOL
            )
        p = hidden_permutation(model, twin, f"{prefix}embed_tokens.weight")
        orig, new = dict(model.named_parameters()), dict(twin.named_parameters())
        for i in range(cfg.num_hidden_layers):
            for proj, heads in (
                ("q_proj", cfg.num_attention_heads),
                ("k_proj", cfg.num_key_value_heads),
            ):
                key = f"{prefix}layers.{i}.self_attn.{proj}.weight"
                src = match_heads(
                    head_blocks(orig[key].detach(), heads, torch.arange(p.numel())),
                    head_blocks(new[key].detach(), heads, p),
                    f"seed {seed} {key}",
                )
                moved |= src != list(range(heads))
    assert moved, "no seed moved a whole attention head: heads are not permutable"


def test_llama_gqa_query_heads_follow_kv_heads():
    """A query head stays attached to its kv head: q head h reads kv head h // (4 // 2)."""
    model = build("llama", "sdpa")
    cfg = model.config
    rep = cfg.num_attention_heads // cfg.num_key_value_heads
    for seed in range(4):
        twin = gm.shuffle(model, example_inputs("llama"), seed=seed)
        orig, new = dict(model.named_parameters()), dict(twin.named_parameters())
        ident = torch.arange(HIDDEN)
        p = hidden_permutation(model, twin, "embed_tokens.weight")
        key = "layers.0.self_attn"
        q_src = match_heads(
            head_blocks(orig[f"{key}.q_proj.weight"].detach(), cfg.num_attention_heads, ident),
            head_blocks(new[f"{key}.q_proj.weight"].detach(), cfg.num_attention_heads, p),
            f"seed {seed} q_proj",
        )
        k_src = match_heads(
            head_blocks(orig[f"{key}.k_proj.weight"].detach(), cfg.num_key_value_heads, ident),
            head_blocks(new[f"{key}.k_proj.weight"].detach(), cfg.num_key_value_heads, p),
            f"seed {seed} k_proj",
        )
        for h, s in enumerate(q_src):
            assert s // rep == k_src[h // rep], f"seed {seed}: q head {h} left its kv head"


# --------------------------------------------------------------------------- analysis facts


def _signature(groups) -> list[tuple]:
    return sorted((g.name, g.size, g.frozen, g.structure.kind, g.structure.heads) for g in groups)


@pytest.mark.parametrize("name", list(ZOO))
def test_attention_kernel_does_not_change_groups(name):
    """eager (matmul, softmax) and sdpa attention are one function: same groups, same freedom."""
    eager = gm.permutation_groups(build(name, "eager"), example_inputs(name))
    sdpa = gm.permutation_groups(build(name, "sdpa"), example_inputs(name))
    assert _signature(eager) == _signature(sdpa)


@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("name", list(ZOO))
def test_no_group_fails_its_self_check(name, attn):
    """A group frozen by the runtime self-check means a missing or wrong rule."""
    groups = gm.permutation_groups(build(name, attn), example_inputs(name))
    failed = [str(g) + f": {g.reason}" for g in groups if g.verified is False]
    assert not failed, "\n".join(failed)
    free = [g for g in groups if not g.frozen]
    assert free and all(g.verified for g in free)
    mlp = [g for g in free if g.size == 2 * HIDDEN or g.size == 4 * HIDDEN]
    assert len(mlp) == LAYERS, f"expected one free FFN group per layer, got {[g.name for g in mlp]}"
