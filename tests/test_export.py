"""gm.export_onnx: every zoo model, merged, exports; onnxruntime matches torch at two batch sizes."""

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from zoo import ZOO

import graphmerge as gm
from graphmerge.cli import main


@pytest.mark.parametrize("name", sorted(ZOO))
def test_merged_zoo_model_exports_and_matches(tmp_path, name):
    entry = ZOO[name]
    model = entry.build().eval()
    example = entry.example()
    merged = gm.merge(
        [model, gm.shuffle(model, example, seed=1)],
        None,
        method="weight_matching",
        example_inputs=example,
        progress=False,
    )
    path = gm.export_onnx(merged, example, tmp_path / f"{name}.onnx")
    assert path.exists() and path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # no temp file left


class Unexportable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.ops.graphmerge_test.opaque(self.fc(x))


@torch.library.custom_op("graphmerge_test::opaque", mutates_args=())
def _opaque(x: torch.Tensor) -> torch.Tensor:
    return x.sin()


@_opaque.register_fake
def _(x):
    return torch.empty_like(x)


def test_unexportable_op_is_named_and_nothing_is_left(tmp_path):
    with pytest.raises(gm.ExportError, match="opaque"):
        gm.export_onnx(Unexportable().eval(), torch.randn(2, 4), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_file_name(tmp_path):
    with pytest.raises(gm.InputError, match=r"\.onnx"):
        gm.export_onnx(torch.nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "m.bin")


# ---------------------------------------------------------------------------------------------
# issue 12: non-finite models refused; outputs named; a sequence axis; the umask; no noise

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny_cnn.py"


def _tiny_cnn():
    spec = importlib.util.spec_from_file_location("tiny_cnn_export", TINY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_export_refuses_nan_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    state = _tiny_cnn().build().state_dict()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    state["fc.bias"][3] = float("inf")
    save_file(state, "nan.safetensors")
    argv = ["export", f"{TINY}:build", "--weights", "nan.safetensors", "--input-shape", "2,3,16,16"]
    assert main([*argv, "--out", "m.onnx"]) == 2
    err = capsys.readouterr().err
    assert "TinyCNN has weights that are not finite (NaN or inf) in 2 tensors" in err
    assert "conv1.weight (1 of" in err and "fc.bias (1 of 10)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]


def test_cli_export_refuses_nan_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs.py").write_text(
        "import torch\n"
        "class Log(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 3)\n"
        "    def forward(self, x):\n"
        "        return {'logits': torch.log(self.fc(x) - 100.0)}\n"
        "def build():\n"
        "    return Log()\n"
    )
    assert main(["export", "logs.py:build", "--input-shape", "2,4", "--out", "m.onnx"]) == 2
    err = capsys.readouterr().err
    assert "Log's outputs on the example inputs are not finite (NaN or inf): logits (6 of 6" in err
    assert not (tmp_path / "m.onnx").exists()


class _Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        return y, {"scores": y.softmax(-1)}


def test_onnx_outputs_carry_the_model_output_names(tmp_path):
    import onnx

    def names(path):
        return [o.name for o in onnx.load(str(path)).graph.output]

    gm.export_onnx(_Pair().eval(), torch.randn(2, 4), tmp_path / "pair.onnx")
    assert names(tmp_path / "pair.onnx") == ["output_0", "output_1_scores"]
    gm.export_onnx(torch.nn.Linear(4, 2).eval(), torch.randn(2, 4), tmp_path / "lin.onnx")
    assert names(tmp_path / "lin.onnx") == ["output_0"]
    from graphmerge.export import onnx_output_names

    assert onnx_output_names({"logits": torch.zeros(1), "skip": None}) == ["logits"]


def test_text_model_gets_a_dynamic_sequence_axis(tmp_path):
    import onnx
    import onnxruntime
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    model = BertModel(cfg).eval()
    ids = torch.randint(0, 100, (2, 8))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    path = gm.export_onnx(model, example, tmp_path / "bert.onnx")
    graph = onnx.load(str(path)).graph

    def dims(values):
        return {
            v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in values
        }

    assert dims(graph.input) == {
        "input_ids": ["batch", "sequence"],
        "attention_mask": ["batch", "sequence"],
    }
    assert dims(graph.output) == {
        "last_hidden_state": ["batch", "sequence", 32],
        "pooler_output": ["batch", 32],
    }
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = torch.randint(0, 100, (3, 13))
    mask = torch.ones_like(other)
    mask[0, 9:] = 0
    got = session.run(None, {"input_ids": other.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        want = model(input_ids=other, attention_mask=mask)
    torch.testing.assert_close(
        torch.as_tensor(got[0]), want.last_hidden_state, rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(torch.as_tensor(got[1]), want.pooler_output, rtol=1e-4, atol=1e-4)


def test_onnx_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        path = gm.export_onnx(torch.nn.Linear(4, 2).eval(), torch.randn(2, 4), tmp_path / "m.onnx")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # like the safetensors, not 0600


def test_cli_export_prints_only_its_result(tmp_path):
    """A fresh process, as a user runs it: no exporter log lines, no unrelated warnings."""
    out = tmp_path / "m.onnx"
    run = subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", "export", f"{TINY}:build"]
        + ["--input-shape", "2,3,16,16", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout == f"wrote {out} (checked with onnxruntime at two input sizes)\n"
