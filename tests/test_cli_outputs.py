"""Outputs never land on or inside what a command reads, and appear only when everything worked.

Issue 12, items 1 and 2: a Hugging Face folder given as a model was overwritten by
`merge --out folder/model.safetensors`; `merge --onnx` wrote `--out` before refusing or failing.
Every case goes through `graphmerge.cli.main` as a user would.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from graphmerge import cli
from graphmerge.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = EXAMPLES / "tiny_cnn.py"


def _tiny_bert(seed: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture
def berts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two save_pretrained folders (bert_b sharded) and a merge config naming them."""
    monkeypatch.chdir(tmp_path)
    _tiny_bert(0).save_pretrained(tmp_path / "bert_a")
    _tiny_bert(1).save_pretrained(tmp_path / "bert_b", max_shard_size="50KB")
    (tmp_path / "merge.yaml").write_text(
        "models:\n  - factory: bert_a\n  - factory: bert_b\n"
        "data: {input_shape: '2,8:int64:100', batches: 2}\nmethod: average\n"
    )
    return tmp_path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command starts loading a model (the refusal must come first)."""

    def build_model(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(cli, "build_model", build_model)


def test_merge_out_into_an_input_folder_is_refused_and_the_folder_kept(berts, capsys) -> None:
    before = _snapshot(berts / "bert_a")
    rc = main(["merge", "merge.yaml", "--out", "bert_a/model.safetensors", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "refusing to write --out 'bert_a/model.safetensors'" in err and "bert_a" in err
    assert _snapshot(berts / "bert_a") == before


def _links(root: Path) -> None:
    """Other names for files of bert_a and bert_b: a symlink, hard links, a symlinked folder."""
    shard = min((root / "bert_b").glob("model-*.safetensors"))
    (root / "sym.safetensors").symlink_to(root / "bert_a" / "model.safetensors")
    os.link(root / "bert_a" / "model.safetensors", root / "hard.safetensors")
    os.link(shard, root / "shard_hard.safetensors")
    (root / "sub").mkdir()
    (root / "alias").symlink_to(root / "bert_a", target_is_directory=True)
    (root / "config.pt").symlink_to(root / "merge.yaml")


@pytest.mark.parametrize(
    "out",
    [
        "bert_a/model.safetensors",
        "sub/../bert_a/model.safetensors",
        "bert_a/merged.safetensors",  # anything inside an input folder
        "bert_b/SHARD",  # a shard of a sharded folder
        "alias/model.safetensors",  # through a symlinked folder
        "sym.safetensors",  # a symlink to an input
        "hard.safetensors",  # a hard link to an input
        "shard_hard.safetensors",  # a hard link to a shard
        "config.pt",  # a symlink to the YAML config
    ],
)
def test_merge_out_over_any_file_an_input_reads(berts, capsys, no_work, out: str) -> None:
    _links(berts)
    shards = sorted((berts / "bert_b").glob("model-*.safetensors"))
    assert len(shards) > 1 and (berts / "bert_b" / "model.safetensors.index.json").exists()
    out = out.replace("SHARD", shards[-1].name)
    before = {p: p.read_bytes() for p in berts.rglob("*") if p.is_file()}
    assert main(["merge", "merge.yaml", "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"refusing to write --out {out!r}" in err, err
    assert "choose a path outside the inputs" in err
    assert {p: p.read_bytes() for p in berts.rglob("*") if p.is_file()} == before


def test_export_and_inspect_refuse_outputs_inside_the_model_folder(berts, capsys, no_work):
    before = _snapshot(berts / "bert_a")
    shape = ["--input-shape", "2,8:int64:100"]
    assert main(["export", "bert_a", *shape, "--out", "bert_a/model.onnx"]) == 2
    assert "refusing to write --out 'bert_a/model.onnx'" in capsys.readouterr().err
    assert main(["export", "bert_a", *shape, "--out", "alias/../bert_a/x.onnx"]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert main(["inspect", "bert_a", *shape, "--graph", "bert_a/model"]) == 2
    assert "refusing to write --graph" in capsys.readouterr().err
    assert main(["export", f"{TINY}:build", "--input-shape", "2,3,16,16", "--out", "x.txt"]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert _snapshot(berts / "bert_a") == before


# ---------------------------------------------------------------------------------------------
# merge --out X --onnx Y: validated before, written after


@pytest.fixture
def cnn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two tiny CNN checkpoints and a config that averages them (fast), with calibration data."""
    spec = importlib.util.spec_from_file_location("tiny_cnn_outputs", TINY)
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    monkeypatch.chdir(tmp_path)
    save_file(tiny.build().state_dict(), "a.safetensors")
    save_file(tiny.build_other().state_dict(), "b.safetensors")
    Path("merge.yaml").write_text(
        f"models:\n  - {{factory: '{TINY}:build', weights: a.safetensors}}\n"
        f"  - {{factory: '{TINY}:build', weights: b.safetensors}}\n"
        "data: {input_shape: '4,3,16,16', batches: 2}\nmethod: average\n"
    )
    return tmp_path


def test_failed_onnx_export_leaves_neither_file_nor_temp_files(cnn, capsys, monkeypatch):
    import graphmerge.export
    from graphmerge.export import ExportError

    calls = []

    def failing_export(model, inputs, path, **kwargs):
        calls.append(Path(path))
        Path(path).write_bytes(b"half an onnx file")
        raise ExportError("onnxruntime differs from torch on output 0 (stand-in)")

    monkeypatch.setattr(graphmerge.export, "export_onnx", failing_export)
    rc = main(
        ["merge", "merge.yaml", "--out", "m.safetensors", "--onnx", "m.onnx", "--no-progress"]
    )
    assert rc == 2 and "stand-in" in capsys.readouterr().err
    assert calls, "the export ran"
    assert sorted(p.name for p in cnn.iterdir()) == ["a.safetensors", "b.safetensors", "merge.yaml"]


def test_merge_with_onnx_writes_both_with_the_umask_mode(cnn, capsys) -> None:
    rc = main(
        ["merge", "merge.yaml", "--out", "m.safetensors", "--onnx", "m.onnx", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert f"wrote {cnn.resolve() / 'm.onnx'} (checked with onnxruntime)" in out
    a, b = load_file("a.safetensors"), load_file("b.safetensors")
    merged = load_file("m.safetensors")
    torch.testing.assert_close(merged["stem.weight"], (a["stem.weight"] + b["stem.weight"]) / 2)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("m.safetensors", "m.onnx"):
        assert (cnn / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert not [p for p in cnn.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "onnx,needle",
    [
        ("link.onnx", "refusing to write --onnx 'link.onnx': it is one of the input files"),
        ("same.onnx", "--onnx 'same.onnx' and --out are the same file"),
        ("m.txt", "--onnx 'm.txt': the file name must end in .onnx"),
    ],
)
def test_bad_onnx_output_is_refused_before_merging(cnn, capsys, monkeypatch, onnx, needle):
    merged = []
    monkeypatch.setattr(
        importlib.import_module("graphmerge.merge"), "merge", lambda *a, **k: merged.append(a)
    )
    Path("link.onnx").symlink_to(cnn / "a.safetensors")
    Path("same.onnx").symlink_to(cnn / "m.safetensors")  # m.safetensors does not exist yet
    before = Path("a.safetensors").read_bytes()
    assert main(["merge", "merge.yaml", "--out", "m.safetensors", "--onnx", onnx]) == 2
    assert needle in capsys.readouterr().err
    assert merged == [] and not Path("m.safetensors").exists()
    assert Path("a.safetensors").read_bytes() == before


def test_onnx_without_data_is_refused_before_merging(cnn, capsys, monkeypatch) -> None:
    merged = []
    monkeypatch.setattr(
        importlib.import_module("graphmerge.merge"), "merge", lambda *a, **k: merged.append(a)
    )
    text = (
        Path("merge.yaml").read_text().replace("data: {input_shape: '4,3,16,16', batches: 2}\n", "")
    )
    Path("merge.yaml").write_text(text)
    assert main(["merge", "merge.yaml", "--out", "m.safetensors", "--onnx", "m.onnx"]) == 2
    assert "--onnx needs example inputs" in capsys.readouterr().err
    assert merged == [] and not Path("m.safetensors").exists()
