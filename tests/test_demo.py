"""`graphmerge demo`: the README's first command, on a short schedule."""

import re

from graphmerge.cli import main
from graphmerge.demo import run_demo


def test_demo_report_and_picture(tmp_path):
    report = run_demo("mlp", tmp_path, epochs=5, progress=False)
    rows = dict(re.findall(r"\| (merged: [^|]+?|ensemble[^|]*?) \| ([\d.]+) \|", report))
    assert set(rows) >= {
        "merged: average",
        "merged: ZipIt",
        "merged: MuDSC zip",
        "ensemble of A and B (2x compute)",
    }
    assert float(rows["merged: MuDSC zip"]) > float(rows["merged: average"])
    assert list(tmp_path.glob("demo_mlp_groups.*"))


def test_demo_cli(tmp_path, capsys, monkeypatch):
    from graphmerge import demo

    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: "demo report")
    assert main(["demo", "--arch", "mlp", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "demo report" in capsys.readouterr().out
