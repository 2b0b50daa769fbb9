"""Hugging Face save_pretrained folders: loaded from disk, weights read without pickle code."""

import re

import pytest
import torch
from helpers import tiny_config
from transformers import BertForSequenceClassification

import graphmerge as gm
from graphmerge.cli import main
from graphmerge.loading import load_state_dict
from graphmerge.pretrained import load_pretrained


def _tiny_bert(seed: int):
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config("bert", max_position_embeddings=16)).eval()


@pytest.mark.parametrize("safe", [True, False])
def test_folder_round_trip(tmp_path, safe):
    model = _tiny_bert(0)
    model.save_pretrained(tmp_path / "bert", safe_serialization=safe)
    state = load_state_dict(tmp_path / "bert")
    assert torch.equal(state["classifier.weight"], model.classifier.weight)
    loaded = load_pretrained(tmp_path / "bert")
    assert type(loaded) is BertForSequenceClassification
    ids = torch.randint(0, 100, (2, 8))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_sharded_folder(tmp_path):
    model = _tiny_bert(1)
    model.save_pretrained(tmp_path / "bert", max_shard_size="50KB")
    assert list((tmp_path / "bert").glob("*.index.json"))
    state = load_state_dict(tmp_path / "bert")
    assert set(state) >= {k for k in model.state_dict() if "position_ids" not in k}


def test_folder_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(gm.CheckpointError, match="holds no weights"):
        load_state_dict(tmp_path / "empty")


def test_cli_inspect_a_folder(tmp_path, capsys):
    _tiny_bert(0).save_pretrained(tmp_path / "bert")
    factory = tmp_path / "ids.py"
    factory.write_text(
        "import torch\ndef ids():\n    return {'input_ids': torch.randint(0, 100, (2, 8))}\n"
    )
    assert (
        main(
            [
                "inspect",
                str(tmp_path / "bert"),
                "--inputs",
                f"{factory}:ids",
                "--no-graph",
                "--wide",
            ]
        )
        == 0
    )
    assert "bert.encoder.layer.0" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# decoders saved with use_cache: true (every causal LM on the hub)


def _tiny_gpt2(seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=16)
    return GPT2LMHeadModel(cfg).eval()


def _tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,
    )
    return LlamaForCausalLM(cfg).eval()


def test_decoder_folders_with_kv_cache_inspect_and_merge(tmp_path, monkeypatch, capsys):
    """Item 3: `Found DynamicCache in output` no more; the merge equals the API's on the models."""
    import json

    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    a, b = _tiny_gpt2(0), _tiny_gpt2(1)
    a.save_pretrained("gpt_a")
    b.save_pretrained("gpt_b")
    _tiny_llama(2).save_pretrained("llama")
    for folder in ("gpt_a", "llama"):
        assert json.loads((tmp_path / folder / "config.json").read_text())["use_cache"] is True
        assert main(["inspect", folder, "--input-shape", "2,8:int64:100", "--no-graph"]) == 0
        shown = capsys.readouterr().out
        assert re.search(r"permutable share of hidden units: (9\d|100)\.\d%", shown), shown
    (tmp_path / "merge.yaml").write_text(
        "models: [{factory: gpt_a}, {factory: gpt_b}]\n"
        "data: {input_shape: '4,8:int64:100', batches: 2}\nparameters: {seed: 0}\n"
    )
    assert main(["merge", "merge.yaml", "--out", "m.safetensors", "--no-progress"]) == 0
    merged = load_file("m.safetensors")
    # the same merge through the API, on models that keep use_cache=True
    from graphmerge.batches import random_batches
    from graphmerge.input_shape import parse_input_shape

    first = parse_input_shape("4,8:int64:100")
    data = [first, *random_batches(first, 1, seed=1)]
    expected = gm.merge([a, b], data, seed=0, progress=False)
    assert a.config.use_cache is True and expected.config.use_cache is True  # left as they were
    for name, value in expected.state_dict().items():
        if name in merged:
            torch.testing.assert_close(merged[name], value, msg=name)
    assert not torch.equal(
        merged["transformer.h.0.mlp.c_fc.weight"], a.transformer.h[0].mlp.c_fc.weight
    )


def test_a_cache_asked_for_is_an_error_that_says_what_to_do() -> None:
    model = _tiny_gpt2(0)
    ids = torch.randint(0, 100, (2, 8))
    groups = gm.permutation_groups(model, {"input_ids": ids})  # config.use_cache is True
    assert any(not g.frozen and g.size == 128 for g in groups)  # the MLP hidden units
    assert model.config.use_cache is True
    with pytest.raises(gm.TraceError, match=r"returns a KV cache: call it without one"):
        gm.permutation_groups(model, {"input_ids": ids, "use_cache": True})
