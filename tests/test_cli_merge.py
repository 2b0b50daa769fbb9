"""`graphmerge merge CONFIG --out FILE`: YAML validated on load, output atomic, inputs protected."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import graphmerge as gm
from graphmerge.cli import main
from graphmerge.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "merge.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def weights(tmp_path):
    import sys

    sys.path.insert(0, str(EXAMPLES))
    import tiny_cnn

    a, b = tiny_cnn.build(), tiny_cnn.build_other()
    save_file(a.state_dict(), tmp_path / "a.safetensors")
    save_file(b.state_dict(), tmp_path / "b.safetensors")
    return a, b, tiny_cnn


def _config(tmp_path, extra: str = "", method: str = "mudsc") -> Path:
    factory = f"{EXAMPLES / 'tiny_cnn.py'}"
    return _write(
        tmp_path,
        f"""
models:
  - factory: {factory}:build
    weights: a.safetensors
  - factory: {factory}:build
    weights: b.safetensors
data:
  factory: {factory}:calibration
method: {method}
parameters: {{matcher: zip, alpha: 0.5, seed: 0}}
{extra}""",
    )


def test_merge_round_trip_matches_the_api(tmp_path, weights, capsys):
    a, b, tiny_cnn = weights
    out = tmp_path / "merged.safetensors"
    assert main(["merge", str(_config(tmp_path)), "--out", str(out), "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    state = load_file(out)
    expected = gm.merge([a, b], tiny_cnn.calibration(), method="mudsc", progress=False)
    for k, v in expected.state_dict().items():
        torch.testing.assert_close(state[k], v)
    model = tiny_cnn.build()
    model.load_state_dict(state)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]


def test_example_config_runs(tmp_path):
    out = tmp_path / "m.pt"
    assert (
        main(["merge", str(EXAMPLES / "merge_tiny_cnn.yaml"), "--out", str(out), "--no-progress"])
        == 0
    )
    state = torch.load(out, weights_only=True)
    assert "fc.weight" in state


@pytest.mark.parametrize(
    "extra,needle",
    [
        ("colour: red", "colour: unknown key"),
        ("reset_bn: maybe", "reset_bn: expected true or false"),
    ],
)
def test_bad_top_level_keys_are_named(tmp_path, weights, capsys, extra, needle):
    out = tmp_path / "merged.safetensors"
    assert main(["merge", str(_config(tmp_path, extra)), "--out", str(out)]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "body,needle",
    [
        ("models: [{factory: x.py:build}]", "models: expected a list of at least 2"),
        (
            "models: [{factory: a.py:b}, {factory: a.py:b, weight: w}]",
            "models[1].weight: unknown key",
        ),
        ("models: [{factory: a.py:b}, {factory: 3}]", "models[1].factory: expected a string"),
        (
            "models: [{factory: a.py:b}, {factory: a.py:b}]\nmethod: rebasin",
            "unknown method 'rebasin'",
        ),
        (
            "models: [{factory: a.py:b}, {factory: a.py:b}]\nparameters: {alpha: 2}",
            "parameters.alpha",
        ),
        (
            "models: [{factory: a.py:b}, {factory: a.py:b}]\nparameters: {beta: 2}",
            "parameters.beta",
        ),
        ("models: [{factory: a.py:b}, {factory: a.py:b}]\ndata: {batches: 2}", "exactly one of"),
    ],
)
def test_config_validation_names_the_key(tmp_path, body, needle):
    with pytest.raises(gm.InputError) as err:
        load_config(_write(tmp_path, body))
    assert needle in str(err.value) and "merge.yaml" in str(err.value)


def test_output_never_overwrites_an_input(tmp_path, weights, capsys):
    config = _config(tmp_path)
    before = (tmp_path / "a.safetensors").read_bytes()
    assert main(["merge", str(config), "--out", str(tmp_path / "a.safetensors")]) == 2
    assert "input files" in capsys.readouterr().err
    assert (tmp_path / "a.safetensors").read_bytes() == before


def test_missing_data_for_activation_method(tmp_path, weights, capsys):
    factory = f"{EXAMPLES / 'tiny_cnn.py'}"
    config = _write(
        tmp_path,
        f"models: [{{factory: '{factory}:build'}}, "
        f"{{factory: '{factory}:build_other'}}]\nmethod: zipit\n",
    )
    out = tmp_path / "m.safetensors"
    assert main(["merge", str(config), "--out", str(out)]) == 2
    assert "needs calibration data" in capsys.readouterr().err
    assert not out.exists()


def test_input_shape_data(tmp_path, weights):
    factory = f"{EXAMPLES / 'tiny_cnn.py'}"
    config = _write(
        tmp_path,
        f"models: [{{factory: '{factory}:build'}}, "
        f"{{factory: '{factory}:build_other'}}]\nmethod: zipit\n"
        "data: {input_shape: '8,3,16,16', batches: 3}\n",
    )
    out = tmp_path / "m.safetensors"
    assert main(["merge", str(config), "--out", str(out), "--no-progress"]) == 0
    assert out.exists()


def test_round_trip_inspect_merge_export(tmp_path, weights, capsys):
    """inspect -> merge (YAML, with --onnx) -> export: the files load and run."""
    import onnxruntime

    _, _, tiny_cnn = weights
    build = f"{EXAMPLES / 'tiny_cnn.py'}:build"
    assert (
        main(["inspect", build, "--input-shape", "2,3,16,16", "--graph", str(tmp_path / "groups")])
        == 0
    )
    shown = capsys.readouterr().out
    assert "stem:out" in shown and "stop points for a partial merge" in shown and "conv1" in shown
    merged = tmp_path / "merged.safetensors"
    onnx_path = tmp_path / "merged.onnx"
    assert (
        main(
            [
                "merge",
                str(_config(tmp_path)),
                "--out",
                str(merged),
                "--onnx",
                str(onnx_path),
                "--no-progress",
            ]
        )
        == 0
    )
    session = onnxruntime.InferenceSession(str(onnx_path))
    x = torch.randn(3, 3, 16, 16)
    model = tiny_cnn.build()
    model.load_state_dict(load_file(merged))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.as_tensor(out), model(x), rtol=1e-4, atol=1e-5)
    again = tmp_path / "again.onnx"
    assert (
        main(
            [
                "export",
                build,
                "--weights",
                str(merged),
                "--input-shape",
                "2,3,16,16",
                "--out",
                str(again),
            ]
        )
        == 0
    )
    assert again.exists()
    assert (
        main(
            [
                "export",
                build,
                "--weights",
                str(merged),
                "--input-shape",
                "2,3,16,16",
                "--out",
                str(merged),
            ]
        )
        == 2
    )  # never over an input
    assert "input files" in capsys.readouterr().err


def test_max_memory_is_the_merge_budget(tmp_path, weights, capsys):
    """A budget below what the process already holds is refused with the way out; a bad size
    is a usage error; a generous one merges as without it."""
    config = str(_config(tmp_path))
    out = tmp_path / "m.safetensors"
    assert main(["merge", config, "--out", str(out), "--no-progress", "--max-memory", "1MB"]) == 2
    assert "raise memory_budget (--max-memory)" in capsys.readouterr().err and not out.exists()
    assert main(["merge", config, "--out", str(out), "--max-memory", "lots"]) == 2
    assert "memory size 'lots'" in capsys.readouterr().err
    assert main(["merge", config, "--out", str(out), "--no-progress", "--max-memory", "64GB"]) == 0
    reference = tmp_path / "r.safetensors"
    assert main(["merge", config, "--out", str(reference), "--no-progress"]) == 0
    assert all(torch.equal(v, load_file(reference)[k]) for k, v in load_file(out).items())
