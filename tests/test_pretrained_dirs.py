"""Hugging Face save_pretrained folders: loaded from disk, weights read without pickle code."""

import pytest
import torch
from helpers import tiny_config
from transformers import BertForSequenceClassification

import graphmerge as gm
from graphmerge.cli import main
from graphmerge.loading import load_pretrained, load_state_dict


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
        main(["inspect", str(tmp_path / "bert"), "--inputs", f"{factory}:ids", "--no-graph"]) == 0
    )
    assert "bert.encoder.layer.0" in capsys.readouterr().out
