"""Tests for graphmerge.loading: factories, checkpoints, input specs and atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from graphmerge.errors import CheckpointError, GraphMergeError, InputError
from graphmerge.loading import (
    check_outputs,
    input_paths,
    load_factory,
    load_state_dict,
    load_weights,
    parse_input_shape,
    save_atomic,
    staged_outputs,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny_cnn.py"


class _Two(nn.Module):
    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, hidden)
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


# ---------------------------------------------------------------------------------------------
# load_factory


def test_factory_from_file_path() -> None:
    build = load_factory(f"{TINY}:build")
    model = build()
    assert isinstance(model, nn.Module)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_factory_from_relative_file_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert load_factory("examples/tiny_cnn.py:inputs")().shape == (2, 3, 16, 16)


def test_factory_file_imports_are_independent(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "net.py", tmp_path / "b" / "net.py"
    for path, value in ((a, 1), (b, 2)):
        path.parent.mkdir()
        path.write_text(f"def build():\n    return {value}\n")
    assert load_factory(f"{a}:build")() == 1
    assert load_factory(f"{b}:build")() == 2


def test_factory_file_can_import_its_neighbours_and_use_dataclasses(tmp_path: Path) -> None:
    (tmp_path / "helper_mod_for_factory.py").write_text("WIDTH = 7\n")
    (tmp_path / "net.py").write_text(
        "from dataclasses import dataclass\n"
        "import helper_mod_for_factory\n"
        "@dataclass\n"
        "class Config:\n"
        "    width: int = helper_mod_for_factory.WIDTH\n"
        "def build():\n"
        "    return Config().width\n"
    )
    assert load_factory(f"{tmp_path / 'net.py'}:build")() == 7


def test_factory_from_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "gm_test_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(
        "class Net:\n    @staticmethod\n    def small():\n        return 'small'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_factory("gm_test_pkg.models:Net.small")() == "small"
    assert load_factory("torch.nn:Linear") is nn.Linear


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("examples/tiny_cnn.py", "colon"),
        ("build", "colon"),
        (":build", "colon"),
        ("examples/tiny_cnn.py:", "colon"),
        ("no/such/file.py:build", "does not exist"),
        ("gm_no_such_module_xyz:build", "no module named 'gm_no_such_module_xyz'"),
        ("examples/tiny_cnn.py:missing", "has no attribute 'missing'"),
        ("examples/tiny_cnn.py:__all__", "not a callable"),
    ],
)
def test_factory_errors_name_the_spec(
    spec: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(InputError) as err:
        load_factory(spec)
    assert repr(spec) in str(err.value)
    assert says in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, GraphMergeError)


def test_factory_missing_attribute_lists_what_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(InputError, match=r"it defines: .*build"):
        load_factory("examples/tiny_cnn.py:biuld")


def test_factory_file_that_fails_to_import(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(InputError, match=r"importing .*broken\.py.* failed: RuntimeError: boom"):
        load_factory(f"{bad}:build")
    (tmp_path / "syntax.py").write_text("def build(:\n")
    with pytest.raises(InputError, match="SyntaxError"):
        load_factory(f"{tmp_path / 'syntax.py'}:build")


def test_factory_directory_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "pkg.py"
    folder.mkdir()
    with pytest.raises(InputError, match="is not a file"):
        load_factory(f"{folder}:build")


# ---------------------------------------------------------------------------------------------
# load_state_dict


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    sd = {k: v.contiguous() for k, v in _Two().state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    assert _same(load_state_dict(tmp_path / "w.safetensors"), sd)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_pickle_round_trip(tmp_path: Path, suffix: str) -> None:
    sd = _Two().state_dict()
    torch.save(sd, tmp_path / f"w{suffix}")
    assert _same(load_state_dict(str(tmp_path / f"w{suffix}")), sd)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_checkpoint_is_unwrapped(tmp_path: Path, wrapper: str) -> None:
    sd = _Two().state_dict()
    torch.save({wrapper: sd, "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.ckpt")
    assert _same(load_state_dict(tmp_path / "ckpt.ckpt"), sd)


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"fc.weight": torch.zeros(2), "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as err:
        load_state_dict(tmp_path / "evil.pt")
    message = str(err.value)
    assert "evil.pt" in message
    assert "refused" in message and "run code" in message
    assert "safetensors.torch.save_file(model.state_dict()" in message
    assert not marker.exists()


def test_whole_module_pickle_is_refused(tmp_path: Path) -> None:
    torch.save(_Two(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"refused.*run code"):
        load_state_dict(tmp_path / "model.pt")


def test_checkpoint_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.safetensors.*not found"):
        load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"junk\.pt.*could not be read"):
        load_state_dict(tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 32)
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        load_state_dict(tmp_path / "junk.safetensors")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"unknown extension '\.npz'"):
        load_state_dict(tmp_path / "w.npz")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_state_dict(tmp_path / "list.pt")
    torch.save({"a": torch.zeros(1), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="'step' \\(int\\)"):
        load_state_dict(tmp_path / "mixed.pt")


# ---------------------------------------------------------------------------------------------
# load_weights


def test_load_weights_loads_matching_state_dict() -> None:
    source, target = _Two(), _Two()
    load_weights(target, source.state_dict(), "w.safetensors")
    assert _same(target.state_dict(), source.state_dict())


def test_load_weights_names_missing_unexpected_and_shapes() -> None:
    model = _Two()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = _Two(hidden=5).state_dict()
    del sd["fc2.bias"]
    sd["head.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_weights(model, sd, "ckpt/w.safetensors")
    message = str(err.value)
    assert "ckpt/w.safetensors" in message
    assert "missing keys (1): fc2.bias" in message
    assert "unexpected keys (1): head.weight" in message
    assert "fc1.weight: checkpoint (5, 3) vs model (4, 3)" in message
    assert "fc2.weight: checkpoint (2, 5) vs model (2, 4)" in message
    assert _same(model.state_dict(), before)  # nothing was loaded


def test_load_weights_lists_only_the_first_few() -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)])
    with pytest.raises(CheckpointError, match=r"missing keys \(20\): 0.weight.*\(\+15 more\)"):
        load_weights(model, {}, "empty.pt")


def test_load_weights_accepts_tied_weights_saved_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight

    source, target = Tied(), Tied()
    sd = {"embed.weight": source.embed.weight.detach().clone()}
    load_weights(target, sd, "tied.safetensors")
    assert torch.equal(target.head.weight, source.embed.weight)


def test_load_weights_skips_buffers_the_model_computes_with_a_warning() -> None:
    class Embed(nn.Module):
        _keys_to_ignore_on_load_unexpected = (r"attn\.masked_bias",)

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.register_buffer("position_ids", torch.arange(4), persistent=False)

    source, target = Embed(), Embed()
    sd = {k: v.clone() for k, v in source.state_dict().items()}
    sd["position_ids"] = torch.arange(4) * 7  # an old checkpoint's copy: not loaded
    sd["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    with pytest.warns(UserWarning, match=r"skipped 2 entries that Embed computes itself"):
        load_weights(target, sd, "old.bin")
    assert torch.equal(target.fc.weight, source.fc.weight)
    assert torch.equal(target.position_ids, torch.arange(4))
    sd["fc.extra"] = torch.zeros(1)  # a real extra key is still refused, and named
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): fc\.extra$"):
        load_weights(target, sd, "old.bin")


# ---------------------------------------------------------------------------------------------
# parse_input_shape


def test_input_shape_single_float() -> None:
    x = parse_input_shape("1,3,32,32")
    assert isinstance(x, torch.Tensor)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x, parse_input_shape(" 1, 3, 32, 32 "))  # seeded
    assert x.std() > 0.5


def test_input_shape_several_with_token_ids() -> None:
    ids, mask, h = parse_input_shape("2,16:int64:1000;2,16:int64:2;2,4:float16")
    assert ids.shape == (2, 16) and ids.dtype == torch.int64
    assert 0 <= int(ids.min()) and int(ids.max()) < 1000 and ids.unique().numel() > 5
    assert set(mask.unique().tolist()) <= {0, 1}
    assert h.dtype == torch.float16 and h.shape == (2, 4)


@pytest.mark.parametrize(
    ("spec", "bad", "says"),
    [
        ("", "''", "expected"),
        ("1,3;", "'1,3;'", "expected"),
        ("1,x,3", "'1,x,3'", "integers"),
        ("1,0,3", "'1,0,3'", "positive"),
        ("1,16:int64", "'1,16:int64'", "upper bound"),
        ("1,16:int64:many", "'1,16:int64:many'", "not an integer"),
        ("1,16:float32:5", "'1,16:float32:5'", "only applies to integer"),
        ("2,2;1,16:complex", "'1,16:complex'", "unknown dtype 'complex'"),
        ("1:int64:3:4", "'1:int64:3:4'", "dims[:dtype[:high]]"),
    ],
)
def test_input_shape_errors_quote_the_text(spec: str, bad: str, says: str) -> None:
    with pytest.raises(InputError) as err:
        parse_input_shape(spec)
    assert bad in str(err.value) and says in str(err.value)


# ---------------------------------------------------------------------------------------------
# save_atomic


def test_save_atomic_writes_and_leaves_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.txt"
    written = save_atomic(lambda tmp: tmp.write_text("hello"), out)
    assert written == out.resolve() and out.read_text() == "hello"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # like open(), not mkstemp's 0600


def test_save_atomic_temp_keeps_suffix(tmp_path: Path) -> None:
    seen: list[Path] = []
    save_atomic(lambda tmp: (seen.append(tmp), tmp.write_text("x")), tmp_path / "m.onnx")
    assert seen[0].parent == tmp_path.resolve() and seen[0].name.endswith(".onnx")


def test_save_atomic_failure_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half written")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic(fail, out)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_save_atomic_refuses_to_overwrite_an_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_text("precious")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    for target in (weights, "w.safetensors", "d/../w.safetensors"):
        with pytest.raises(InputError, match=r"refusing to write .*input"):
            save_atomic(lambda tmp: tmp.write_text("oops"), target, protect=["w.safetensors"])
    assert weights.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "w.safetensors"]


# ---------------------------------------------------------------------------------------------
# check_outputs, staged_outputs


def test_input_paths_of_each_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model-1.safetensors", "model-2.safetensors", "tokenizer.json"):
        (folder / name).write_text("x")
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}'
    )
    assert input_paths("model") == [
        folder.resolve(),
        *(folder.resolve() / n for n in ("config.json", "model.safetensors.index.json")),
        *(folder.resolve() / f"model-{i}.safetensors" for i in (1, 2)),
    ]
    assert input_paths(f"{TINY}:build") == [TINY.resolve()]
    assert input_paths("graphmerge.cli:main") == [(ROOT / "graphmerge" / "cli.py").resolve()]
    assert input_paths("no_such_module_xyz:build") == []
    assert input_paths("sub/../w.pt") == [tmp_path.resolve() / "w.pt"]


def test_check_outputs_refuses_inputs_by_any_name(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_text("weights")
    weights = tmp_path / "w.safetensors"
    weights.write_text("precious")
    os.link(folder / "model.safetensors", tmp_path / "hard.safetensors")
    (tmp_path / "sym.pt").symlink_to(weights)
    inputs = [str(folder), str(weights)]
    refused = {
        "hf/model.safetensors": "inside the input folder",
        "hf/new.onnx": "inside the input folder",
        "hf/../w.safetensors": "one of the input files",
        "sym.pt": "one of the input files",
        "hard.safetensors": "one of the input files",
        "hf": "it is a folder",
    }
    for name, says in refused.items():
        with pytest.raises(InputError, match=f"--out '{tmp_path / name}'.*{says}"):
            check_outputs({"--out": tmp_path / name}, inputs)
    fine = check_outputs(
        {"--out": tmp_path / "m.safetensors", "--onnx": tmp_path / "m.onnx"}, inputs
    )
    assert fine == {"--out": tmp_path / "m.safetensors", "--onnx": tmp_path / "m.onnx"}
    (tmp_path / "m.onnx").symlink_to(tmp_path / "m.safetensors")
    with pytest.raises(InputError, match="--onnx .* and --out are the same file"):
        check_outputs({"--out": tmp_path / "m.safetensors", "--onnx": tmp_path / "m.onnx"}, [])
    assert weights.read_text() == "precious"


def test_staged_outputs_all_or_nothing(tmp_path: Path) -> None:
    targets = {"a": tmp_path / "a.bin", "b": tmp_path / "sub" / "b.onnx"}
    with pytest.raises(RuntimeError, match="second failed"), staged_outputs(targets) as tmp:
        assert tmp["b"].suffix == ".onnx" and tmp["b"].parent == targets["b"].parent
        tmp["a"].write_text("first")
        raise RuntimeError("second failed")
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []
    with staged_outputs(targets) as tmp:
        tmp["a"].write_text("first")
        tmp["b"].write_text("second")
        assert not targets["a"].exists()  # nothing appears before the block ends
    assert targets["a"].read_text() == "first" and targets["b"].read_text() == "second"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.bin", "b.onnx"]
