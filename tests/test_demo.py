"""`graphmerge demo`, the README's first command, through the CLI on a short schedule."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import torch

from graphmerge.cli import main
from graphmerge_examples import demo

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import digits


def _rows(report: str) -> dict[str, float]:
    """Joint accuracy per row label of the demo's table."""
    return {
        k: float(v) for k, v in re.findall(r"^\| ([^|]+?) \| ([\d.]+) \|", report, re.MULTILINE)
    }


def test_demo_writes_into_out_only_and_restores_threads(tmp_path, monkeypatch, capsys):
    cwd, out = tmp_path / "cwd", tmp_path / "demo out"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    seen = []

    def compare_pair(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    real = demo.compare_pair
    monkeypatch.setattr(demo, "compare_pair", compare_pair)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["demo", "--arch", "mlp", "--epochs", "5", "--out", str(out)]) == 0
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert seen == [1] and after == 2  # one thread while it ran, the caller's two after
    captured = capsys.readouterr()
    assert "training two MLPs" in captured.err and "training model A" in captured.err
    assert "merging: MuDSC zip" in captured.err
    rows = _rows(captured.out)
    assert set(rows) == {
        "model A alone",
        "model B alone",
        "ensemble of A and B (2x compute)",
        *(f"merged: {demo.COMPARED[k][0]}" for k in demo.DEMO_METHODS),
    }
    assert rows["merged: MuDSC zip"] > rows["merged: average"] + 10
    assert rows["ensemble of A and B (2x compute)"] > rows["model A alone"] + 20
    assert list(cwd.iterdir()) == []  # nothing in the current folder
    pictures = list(out.glob("demo_mlp_groups.*"))
    assert len(pictures) == 1 and f"group graph: {pictures[0]}" in captured.out
    assert "on 1 torch thread(s) (set for the demo; 2 before and after it)" in captured.out


def test_demo_default_out_is_a_named_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--arch", "mlp", "--epochs", "1", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --no-progress: quiet
    assert [p.name for p in tmp_path.iterdir()] == ["graphmerge-demo"]
    (picture,) = (tmp_path / "graphmerge-demo").iterdir()
    assert picture.name.startswith("demo_mlp_groups.")
    assert f"group graph: {picture.resolve()}" in captured.out


def test_demo_and_digits_benchmark_give_the_same_numbers(tmp_path, capsys):
    # the demo with seed 0 is the benchmark's pair 0: one implementation, the same accuracies
    assert main(["demo", "--arch", "mlp", "--epochs", "2", "--out", str(tmp_path)]) == 0
    rows = _rows(capsys.readouterr().out)
    table = digits.run(["mlp"], pairs=1, epochs=2)
    bench = dict(re.findall(r"^\| ([^|]+?) \| ([\d.]+) ± 0\.0 \|", table, re.MULTILINE))
    for key in demo.DEMO_METHODS:
        label = demo.COMPARED[key][0]
        assert float(bench[label]) == rows[f"merged: {label}"], label
    assert float(bench["ensemble (upper bound)"]) == rows["ensemble of A and B (2x compute)"]


def test_demo_names_what_is_missing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["demo", "--out", str(out)]) == 2
    assert "pip install scikit-learn" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "graphmerge_examples.demo", None)
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "graphmerge_examples" in err and 'pip install -c constraints.txt -e ".[dev]"' in err
    assert not out.exists()


def test_the_library_loads_no_demo_or_benchmark_code():
    # every module of graphmerge and graphmerge.passes, imported in a fresh interpreter
    code = (
        "import importlib, pkgutil, sys\n"
        "import graphmerge, graphmerge.passes, graphmerge.passes.matchers as m\n"
        "for pkg in (graphmerge, graphmerge.passes, m):\n"
        "    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    loaded = set(ast.literal_eval(done.stdout))
    assert "graphmerge" in loaded and "torch" in loaded
    assert not loaded & {"graphmerge_examples", "benchmarks", "sklearn", "tests", "transformers"}
