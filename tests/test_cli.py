"""Tests for `graphmerge inspect` (graphmerge.cli) and what it draws with (graphmerge.render).

The render tests use hand-made `PermutationGroup` records; the CLI tests run the real core on
examples/tiny_cnn.py, plus a few with a stand-in `analyze` for what the tiny CNN cannot show
(ops without rules, the flags passed through).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from graphmerge import render
from graphmerge.api import Analysis
from graphmerge.cli import SUBCOMMANDS, main
from graphmerge.errors import InputError
from graphmerge.records import CaptureSite, Member, PermutationGroup, Structure
from graphmerge.render import (
    graph_html,
    graph_layers,
    group_graph,
    groups_json,
    groups_table,
    permutable_share,
    stop_points_text,
    write_graph_picture,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny_cnn.py"
BUILD, INPUTS = f"{TINY}:build", f"{TINY}:inputs"
PERCENT = re.compile(r"permutable share of hidden units: \d+(\.\d)?%")


# ---------------------------------------------------------------------------------------------
# hand-made records


def _m(spec: str) -> Member:
    """`"conv.weight[0]:out"` -> Member."""
    param, axis, role = re.fullmatch(r"(.+)\[(\d+)\]:(\w+)", spec).groups()
    return Member(param, int(axis), role)


def _groups() -> list[PermutationGroup]:
    site = CaptureSite("conv2d_1", 0, 1, "consumer-input", module="conv1")
    return [
        PermutationGroup("x:in", 3, True, "model input", members=(_m("stem.weight[1]:in"),)),
        PermutationGroup(
            "stem:out",
            16,
            False,
            None,
            members=tuple(
                _m(s)
                for s in (
                    "stem.weight[0]:out",
                    "bn0.weight[0]:out",
                    "bn0.bias[0]:out",
                    "conv1.weight[1]:in",
                    "fc.weight[1]:in",
                )
            ),
            capture=site,
            verified=True,
        ),
        PermutationGroup(
            "attn.heads",
            4,
            False,
            None,
            structure=Structure(kind="heads", nested=("attn.q:out",)),
            members=(_m("attn.q.weight[0]:out"),),
        ),
        PermutationGroup(
            "attn.q:out",
            8,
            False,
            None,
            structure=Structure(kind="within", within=("attn.heads",), heads=4),
            members=(_m("attn.q.weight[0]:out"), _m("attn.o.weight[1]:in")),
        ),
        PermutationGroup(
            "blocks.0:resid",
            6,
            False,
            None,
            members=(_m("blocks.0.fc.weight[0]:out"), _m("blocks.0.fc.weight[1]:in")),
        ),
        PermutationGroup("fc:out", 10, True, "model output", members=(_m("fc.weight[0]:out"),)),
        PermutationGroup("scale", 1, False, None, members=(_m("scale[0]:out"),)),
    ]


def _analysis(groups: list[PermutationGroup] | None = None) -> Analysis:
    return Analysis(
        groups=_groups() if groups is None else groups,
        model_name="Toy",
        trace_seconds=0.5,
        infer_seconds=0.25,
        verify_seconds=0.125,
        unruled=[("aten.cumsum", "model.py:41", 2), ("aten.sort", "model.py:50", 1)],
        param_count_permuted=900,
        param_count_total=1000,
        merge_memory=3 * 2**30,
    )


# ---------------------------------------------------------------------------------------------
# render: table and JSON


def test_table_has_a_row_per_group_and_the_summary() -> None:
    groups = _groups()
    text = groups_table(groups, width=200)
    lines = text.splitlines()
    assert lines[0].split() == ["group", "size", "structure", "members", "capture", "state"]
    for g in groups:
        assert any(line.startswith(g.name + " ") for line in lines), g.name
    stem_row = next(line for line in lines if line.startswith("stem:out"))
    assert "5: stem.weight[0]:out, bn0.weight[0]:out, bn0.bias[0]:out, +2 more" in stem_row
    assert "conv1 (conv2d_1 arg0 dim1, consumer-input)" in stem_row
    assert stem_row.endswith("verified")
    q_row = next(line for line in lines if line.startswith("attn.q:out"))
    assert "8 x4 heads" in q_row and "per 4 of attn.heads" in q_row and q_row.endswith("free")
    assert next(ln for ln in lines if ln.startswith("fc:out")).endswith("frozen: model output")
    # columns line up: every row has "size" in the same column
    col = lines[0].index("size")
    assert all(line[col - 2 : col] == "  " for line in lines[2 : 2 + len(groups)])
    # free: 16 + 4 + 8*4 + 6 = 58 units; the model's input (3) and output (10) are not hidden
    assert permutable_share(groups) == (58, 58)
    assert "permutable share of hidden units: 100.0% (58 of 58 units; 4 of 4 groups free)" in text


def test_table_fits_the_width_and_wide_shows_everything() -> None:
    groups = _groups()
    wide = groups_table(groups)  # no width: every member, nothing clipped
    stem_row = next(line for line in wide.splitlines() if line.startswith("stem:out"))
    assert "5: stem.weight[0]:out, bn0.weight[0]:out, bn0.bias[0]:out, conv1.weight[1]:in, " in (
        stem_row
    )
    assert "fc.weight[1]:in" in stem_row and "more" not in wide
    assert max(len(line) for line in wide.splitlines()) > 120
    for width in (60, 80, 100, 120):
        lines = groups_table(groups, width=width).splitlines()
        assert max(len(line) for line in lines) <= width, width
        assert lines[0].split()[:2] == ["group", "size"] and lines[0].split()[-1] == "state"
        for g in groups:  # every group keeps a row, its name whole or cut in the middle
            assert any(line.startswith(g.name[:10]) for line in lines), (width, g.name)
        stem = next(line for line in lines if line.startswith("stem:out"))
        assert re.search(r"5: (\S+, )*\+\d more", stem), (width, stem)
    narrow = groups_table(groups, width=80).splitlines()[0].split()
    assert "capture" not in narrow  # the capture column gives way first


def test_stop_points_wrap_and_count_what_is_left() -> None:
    points = [f"encoder.layer.{i // 6}.block{i % 6}" for i in range(57)]
    text = stop_points_text(points, width=80)
    lines = text.splitlines()
    assert len(lines) <= 3 and max(len(line) for line in lines) <= 80
    assert text.startswith("stop points for a partial merge (merge ... stop_at=NAME), 57:")
    listed = re.findall(r"encoder\.layer\.\d+\.block\d", text)
    assert listed == points[: len(listed)] and 0 < len(listed) < 57
    assert text.endswith(f"+{57 - len(listed)} more")
    everything = stop_points_text(points)
    assert "\n" not in everything and everything.endswith(points[-1]) and "more" not in everything
    assert stop_points_text(points[:2], width=80).endswith("encoder.layer.0.block1")


def test_table_without_groups() -> None:
    text = groups_table([])
    assert "(no groups)" in text and "n/a" in text


def test_json_has_everything() -> None:
    doc = json.loads(groups_json(_analysis()))
    assert doc["model"] == "Toy"
    assert [g["name"] for g in doc["groups"]] == [g.name for g in _groups()]
    q = next(g for g in doc["groups"] if g["name"] == "attn.q:out")
    assert q["structure"] == {
        "kind": "within",
        "within": ["attn.heads"],
        "heads": 4,
        "nested": [],
    }
    assert q["units"] == 32 and q["state"] == "free"
    assert q["members"][0] == {"param": "attn.q.weight", "axis": 0, "role": "out", "repeat": 1}
    stem = next(g for g in doc["groups"] if g["name"] == "stem:out")
    assert stem["capture"]["module"] == "conv1" and stem["verified"] is True
    assert doc["summary"]["permutable_units"] == 58 and doc["summary"]["total_units"] == 58
    assert doc["summary"]["param_count_permuted"] == 900
    assert doc["seconds"] == {"trace": 0.5, "infer": 0.25, "verify": 0.125}
    assert doc["unruled"][0] == {"op": "aten.cumsum", "source": "model.py:41", "count": 2}


# ---------------------------------------------------------------------------------------------
# render: graph and pictures


def test_group_graph_is_bipartite_modules_and_groups() -> None:
    graph = group_graph(_groups())
    assert graph.has_edge("m:stem", "g:stem:out")  # produces
    assert graph.has_edge("g:stem:out", "m:conv1")  # consumes
    assert graph.has_edge("g:x:in", "m:stem")
    assert graph.has_edge("m:scale", "g:scale")  # a top-level parameter is its own module
    for a, b in graph.edges:
        assert {a[:2], b[:2]} == {"m:", "g:"}
    assert graph.edges["m:bn0", "g:stem:out"]["members"] == ["bn0.weight[0]:out", "bn0.bias[0]:out"]
    nodes = graph.nodes
    assert nodes["g:fc:out"]["frozen"] and nodes["g:fc:out"]["fill"] == nodes["g:x:in"]["fill"]
    assert nodes["g:stem:out"]["fill"] != nodes["g:fc:out"]["fill"]
    assert (
        nodes["g:attn.q:out"]["heads"] == 4
        and "per 4 of attn.heads" in nodes["g:attn.q:out"]["label"]
    )
    assert nodes["m:attn.q"]["kind"] == "module" and nodes["m:attn.q"]["label"] == "attn.q"


def test_graph_layers_break_cycles() -> None:
    graph = group_graph(_groups())
    layers, back = graph_layers(graph)
    assert back == {("g:blocks.0:resid", "m:blocks.0.fc")}
    column = {n: i for i, layer in enumerate(layers) for n in layer}
    assert set(column) == set(graph.nodes)
    assert column["g:x:in"] < column["m:stem"] < column["g:stem:out"] < column["m:conv1"]


def _fake_dot(tmp_path: Path) -> Path:
    """An executable standing in for Graphviz: writes an SVG holding the DOT it was given."""
    script = tmp_path / "bin" / "dot"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, html\n"
        "out = sys.argv[sys.argv.index('-o') + 1]\n"
        "assert '-Tsvg' in sys.argv\n"
        "text = sys.stdin.read()\n"
        "open(out, 'w').write('<svg><!-- fake -->' + html.escape(text) + '</svg>')\n"
    )
    script.chmod(0o755)
    return script


def test_picture_with_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_dot(tmp_path)
    monkeypatch.setattr(render.shutil, "which", lambda name: str(fake) if name == "dot" else None)
    path = write_graph_picture(_groups(), tmp_path / "out" / "toy_groups")
    assert path == (tmp_path / "out" / "toy_groups.svg").resolve()
    svg = path.read_text()
    assert svg.startswith("<svg><!-- fake -->") and "stem:out" in svg
    assert "digraph groups {" in svg and "&quot;m:stem&quot; -&gt; &quot;g:stem:out&quot;" in svg
    assert sorted(p.name for p in path.parent.iterdir()) == ["toy_groups.svg"]  # no stray .dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_picture_with_real_graphviz(tmp_path: Path) -> None:
    path = write_graph_picture(_groups(), str(tmp_path / "toy"))
    assert path.suffix == ".svg"
    root = ET.parse(path).getroot()
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"stem:out", "attn.q:out", "conv1"} <= texts


def test_picture_html_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    path = write_graph_picture(_groups(), tmp_path / "toy")
    assert path == (tmp_path / "toy.html").resolve()
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]
    assert "stem:out" in page and "frozen: model output" in page
    assert 'stroke-dasharray="4 3"' in page  # the residual back edge
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    ET.fromstring(svg)  # well-formed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.html"]


def test_html_escapes_names() -> None:
    g = PermutationGroup("a<b>&c", 2, True, 'op "x" <y>', members=(_m("m.w[0]:out"),))
    page = graph_html(group_graph([g]))
    assert "a&lt;b&gt;&amp;c" in page and "a<b>" not in page


def test_picture_refuses_to_overwrite_protected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    precious = tmp_path / "x.html"
    precious.write_text("keep")
    with pytest.raises(InputError, match="refusing"):
        write_graph_picture(_groups(), tmp_path / "x", protect=[precious])
    assert precious.read_text() == "keep"


# ---------------------------------------------------------------------------------------------
# CLI plumbing with a stand-in core


@pytest.fixture
def fake_core(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replace graphmerge.api with a module whose `analyze` records its calls."""
    calls: list[dict] = []

    def analyze(model, example_inputs, *, verify=True, strict=False):
        calls.append({"model": model, "inputs": example_inputs, "verify": verify, "strict": strict})
        return _analysis()

    module = types.ModuleType("graphmerge.api")
    module.analyze = analyze
    monkeypatch.setitem(sys.modules, "graphmerge.api", module)
    return calls


def test_cli_report_with_stand_in(tmp_path, monkeypatch, capsys, fake_core) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    rc = main(["inspect", BUILD, "--input-shape", "2,3,16,16", "--strict", "--no-verify"])
    out = capsys.readouterr().out
    assert rc == 0
    assert fake_core[0]["verify"] is False and fake_core[0]["strict"] is True
    assert fake_core[0]["inputs"].shape == (2, 3, 16, 16)
    assert not fake_core[0]["model"].training
    assert "model: Toy  (trace 0.50s, infer 0.25s, verify 0.12s)" in out
    assert "aten.cumsum at model.py:41 (x2)" in out and "aten.sort at model.py:50\n" in out
    assert "parameters in free groups: 900 of 1,000 (90.0%)" in out
    assert "merging two of these (MuDSC zip) needs about 3.0 GiB of memory" in out
    assert f"graph: {tmp_path.resolve() / 'build_groups.html'}" in out
    assert (tmp_path / "build_groups.html").exists()


def test_cli_inputs_factory_kinds(tmp_path, monkeypatch, capsys, fake_core) -> None:
    (tmp_path / "ins.py").write_text(
        "import torch\n"
        "def pair(): return [torch.zeros(1, 2), torch.ones(1)]\n"
        "def kw(): return {'input_ids': torch.zeros(1, 4, dtype=torch.long)}\n"
        "def bad(): return {'x': 3}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", BUILD, "--inputs", "ins.py:pair", "--no-graph"]) == 0
    assert isinstance(fake_core[-1]["inputs"], tuple) and len(fake_core[-1]["inputs"]) == 2
    assert main(["inspect", BUILD, "--inputs", "ins.py:kw", "--no-graph"]) == 0
    assert set(fake_core[-1]["inputs"]) == {"input_ids"}
    capsys.readouterr()
    assert main(["inspect", BUILD, "--inputs", "ins.py:bad", "--no-graph"]) == 2
    assert "error: ins.py:bad() returned a dict; expected a Tensor" in capsys.readouterr().err
    assert not list(tmp_path.glob("*_groups.*"))  # --no-graph


def test_cli_json_goes_to_stdout_alone(tmp_path, monkeypatch, capsys, fake_core) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    assert main(["inspect", BUILD, "--input-shape", "1,3,8,8", "--json", "--graph", "pic"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"] == "Toy"
    assert "graph:" in captured.err and (tmp_path / "pic.html").exists()


def test_cli_factory_must_return_a_module(tmp_path, monkeypatch, capsys, fake_core) -> None:
    (tmp_path / "f.py").write_text("def build(): return 3\ndef boom(): raise KeyError('k')\n")
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "f.py:build", "--input-shape", "1"]) == 2
    assert "error: f.py:build() returned a int, not a torch.nn.Module" in capsys.readouterr().err
    assert main(["inspect", "f.py:boom", "--input-shape", "1"]) == 2
    assert "error: calling f.py:boom() failed: KeyError" in capsys.readouterr().err
    assert not fake_core


def test_cli_usage_and_placeholders(capsys) -> None:
    assert set(SUBCOMMANDS) >= {"inspect", "merge", "export"}
    assert main([]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()
    assert main(["inspect", BUILD]) == 2  # needs --input-shape or --inputs
    assert "--input-shape" in capsys.readouterr().err
    assert main(["inspect", BUILD, "--input-shape", "1", "--inputs", INPUTS]) == 2
    capsys.readouterr()
    assert main(["export", BUILD, "--input-shape", "2,3,16,16"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err
    assert main(["merge", "missing.yaml", "--out", "m.safetensors"]) == 2
    assert "config file 'missing.yaml' not found" in capsys.readouterr().err


def test_cli_errors_without_traceback(tmp_path, monkeypatch, capsys, fake_core) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "examples/tiny_cnn.py", "--input-shape", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad factory spec 'examples/tiny_cnn.py'")
    assert "Traceback" not in err
    assert main(["inspect", BUILD, "--input-shape", "2,3,x"]) == 2
    assert "error: bad input shape '2,3,x'" in capsys.readouterr().err
    assert main(["inspect", BUILD, "--input-shape", "1", "--weights", "nope.pt"]) == 2
    assert "error: weights file 'nope.pt' not found" in capsys.readouterr().err
    assert not fake_core


# ---------------------------------------------------------------------------------------------
# CLI on the real core


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _table_and_json(capsys, args: list[str]) -> tuple[str, dict]:
    assert main(["inspect", *args, "--no-graph", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert main(["inspect", *args, "--no-graph"]) == 0
    return capsys.readouterr().out, doc


@pytest.mark.parametrize("source", [["--input-shape", "2,3,16,16"], ["--inputs", INPUTS]])
def test_inspect_tiny_cnn(in_tmp, capsys, source: list[str]) -> None:
    table, doc = _table_and_json(capsys, [BUILD, *source])
    assert doc["groups"], "the tiny CNN has permutation groups"
    assert all({"name", "size", "frozen", "members", "units"} <= set(g) for g in doc["groups"])
    for g in doc["groups"]:
        assert g["name"][:60] in table
    assert PERCENT.search(table)
    assert 0 < doc["summary"]["permutable_share"] <= 1
    assert {"trace", "infer", "verify"} <= set(doc["seconds"])
    free = [g for g in doc["groups"] if not g["frozen"] and g["size"] > 1]
    assert free, "hidden channels of the tiny CNN are permutable"
    params = {m["param"] for g in free for m in g["members"]}
    assert {"stem.weight", "conv1.weight", "conv2.weight"} <= params
    assert sorted(p.name for p in in_tmp.iterdir()) == []  # --no-graph wrote nothing


def test_inspect_default_picture_dot_and_html(in_tmp, monkeypatch, capsys) -> None:
    fake = _fake_dot(in_tmp)
    monkeypatch.setattr(render.shutil, "which", lambda name: str(fake))
    assert main(["inspect", BUILD, "--input-shape", "2,3,16,16", "--no-verify"]) == 0
    assert f"graph: {in_tmp.resolve() / 'build_groups.svg'}" in capsys.readouterr().out
    assert "stem" in (in_tmp / "build_groups.svg").read_text()
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    assert main(["inspect", BUILD, "--inputs", INPUTS, "--graph", "pics/tiny"]) == 0
    assert f"graph: {in_tmp.resolve() / 'pics' / 'tiny.html'}" in capsys.readouterr().out
    assert "<svg" in (in_tmp / "pics" / "tiny.html").read_text()


def test_inspect_with_weights(in_tmp, capsys) -> None:
    sys.path.insert(0, str(TINY.parent))
    try:
        import tiny_cnn
    finally:
        sys.path.remove(str(TINY.parent))
    good = {k: v.contiguous() for k, v in tiny_cnn.build().state_dict().items()}
    save_file(good, "good.safetensors")
    torch.save({"state_dict": good}, "good.ckpt")
    save_file(tiny_cnn.TinyCNN(width=8).state_dict(), "narrow.safetensors")
    for weights in ("good.safetensors", "good.ckpt"):
        assert main(["inspect", BUILD, "--inputs", INPUTS, "--weights", weights, "--no-graph"]) == 0
    capsys.readouterr()
    rc = main(["inspect", BUILD, "--inputs", INPUTS, "--weights", "narrow.safetensors"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: weights in 'narrow.safetensors' do not fit")
    assert "stem.weight: checkpoint (8, 3, 3, 3) vs model (16, 3, 3, 3)" in err


def test_inspect_wrong_input_shape(in_tmp, capsys) -> None:
    rc = main(["inspect", BUILD, "--input-shape", "2,5,16,16", "--no-graph"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip()) > len("error: ")


def test_inspect_fits_the_terminal_and_wide_shows_all(in_tmp, monkeypatch, capsys) -> None:
    """Issue 12: a 2-layer BERT's table was ~320 columns, its stop points ~1,100 characters."""
    (in_tmp / "bert.py").write_text(
        "import torch\n"
        "from transformers import BertConfig, BertForSequenceClassification\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32,\n"
        "        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,\n"
        "        max_position_embeddings=16))\n"
    )
    args = ["inspect", "bert.py:build", "--input-shape", "2,8:int64:100", "--no-graph"]
    monkeypatch.setenv("COLUMNS", "100")
    assert main([*args, "--no-verify"]) == 0
    fitted = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in fitted) <= 100
    assert any(re.match(r"bert\.encoder\.layer\.0\..*  \d+: .*\+\d+ more", ln) for ln in fitted)
    stops = [ln for ln in fitted if ln.startswith("stop points")]
    assert stops and "more" in fitted[-1]
    assert main([*args, "--no-verify", "--wide"]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in wide) > 200
    row = next(ln for ln in wide if ln.startswith("bert.encoder.layer.0.intermediate.dense:out "))
    assert "bert.encoder.layer.0.intermediate.dense.bias[0]:out" in row and "more" not in row
    stop_line = next(ln for ln in wide if ln.startswith("stop points"))
    count = int(re.search(r"stop_at=NAME\), (\d+):", stop_line)[1])
    assert "more" not in stop_line and len(stop_line.split(": ", 1)[1].split(", ")) == count > 30


def test_cli_warnings_are_one_line_and_still_recordable(in_tmp, capsys) -> None:
    """graphmerge's own warnings print as `warning: ...`; callers can still catch them."""
    (in_tmp / "old.py").write_text(
        "import torch\n"
        "class Old(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(3, 4)\n"
        "        self.register_buffer('position_ids', torch.arange(3), persistent=False)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x + self.position_ids)\n"
        "def build():\n"
        "    return Old()\n"
    )
    state = {
        "fc.weight": torch.ones(4, 3),
        "fc.bias": torch.zeros(4),
        "position_ids": torch.ones(3),
    }
    save_file(state, "old.safetensors")
    args = ["inspect", "old.py:build", "--weights", "old.safetensors", "--input-shape", "2,3"]
    args += ["--no-graph", "--no-verify"]
    run = subprocess.run(  # as a user runs it (pytest records warnings instead of printing them)
        [sys.executable, "-m", "graphmerge.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=in_tmp,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith("warning: weights in 'old.safetensors': skipped 1 entry that Old")
    assert "position_ids" in run.stderr and "UserWarning" not in run.stderr
    assert len(run.stderr.splitlines()) == 1
    with pytest.warns(UserWarning, match="skipped 1 entry"):
        assert main(args) == 0
