"""Smoke run of the scale benchmark (`python -m benchmarks.scale`) on its tiny pairs: a 2-layer
GPT-2 (hidden 64, vocabulary 1,000) merged in this process, a tiny ResNet-20 in a subprocess as
the benchmark runs every case, and the rows of cases that time out, pass the memory cap, leave
the machine short of memory or raise."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import scale
from benchmarks.scale_table import STAGES, TIME_COLUMNS, markdown, save

pytestmark = pytest.mark.filterwarnings("ignore")


def _table(text: str, first: str) -> tuple[list[str], list[list[str]]]:
    """(columns, rows of cells) of the Markdown table whose header starts with `first`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    cells = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells.append([c.strip() for c in line.strip("|").split("|")])
    return cells[0], cells[2:]


def _number(cell: str) -> float:
    return float(cell.rstrip("×MkB"))


def test_tiny_gpt2_pair_in_process_has_every_stage_and_finite_numbers():
    row = scale.measure(scale.Case("gpt2", "mudsc_zip", "tiny"), threads=1)
    assert (
        row["status"] == "ok" and row["calibration"] == "2 batches of 4 sequences of 32 token ids"
    )
    assert set(STAGES) <= set(row["stage_s"]) and set(STAGES) <= set(row["stage_rss"])
    assert row["floor_s"] > 0 and len(row["floor_per_model_s"]) == 2
    assert sum(row["stage_s"].values()) <= row["total_s"] * 1.01
    assert row["peak_rss"] >= row["rss_before"] > 0
    assert row["peak_rss"] >= max(row["stage_rss"].values())
    # two float32 models with tied LM heads: 4 bytes per parameter (plus buffers, if any)
    assert row["weights_bytes"] >= 2 * 4 * row["params"] > 0
    assert row["plan_bytes"] is None or row["plan_bytes"] > 0

    text = markdown([row], "header")
    columns, rows = _table(text, "pair")
    assert columns == TIME_COLUMNS and len(rows) == 1 and len(rows[0]) == len(columns)
    cells = dict(zip(columns, rows[0], strict=True))
    assert cells["pair"] == "gpt2 (tiny)" and cells["status"] == "ok"
    for name in ["floor s", *STAGES, "total s", "total/floor", "peak RSS GB", "peak/weights"]:
        assert math.isfinite(_number(cells[name])), (name, cells[name])
    assert _number(cells["total/floor"]) == pytest.approx(row["total_s"] / row["floor_s"], 0.01)
    per_stage, stage_rows = _table(text, "pair | method | trace")
    assert per_stage[2:] == STAGES and " · " in stage_rows[0][-1]


def test_cases_run_in_subprocesses_and_failures_become_rows(tmp_path):
    ok = scale.run_case(scale.Case("resnet20x4", "mudsc_permute", "tiny", reset_bn=False))
    assert ok["status"] == "ok" and ok["threads"] == 1 and ok["reset_bn"] is False
    assert ok["calibration"] == "2 batches of 16 images 3x32x32"
    assert all(math.isfinite(ok["stage_s"][s]) for s in STAGES) and ok["total_s"] > 0

    capped = scale.run_case(scale.Case("resnet20x4", "average", "tiny"), max_rss=1)
    timed_out = scale.run_case(scale.Case("resnet20x4", "average", "tiny"), timeout=0.5)
    failed = scale.run_case(scale.Case("resnet20x4", "no_such_method", "tiny"))
    crowded = scale.run_case(scale.Case("resnet20x4", "average", "tiny"), min_free=2**50)
    assert capped["status"] == "memory cap" and capped["rss_at_end"] > 1
    assert crowded["status"] == "machine low on memory"
    assert timed_out["status"] == "timeout" and timed_out["elapsed_s"] < 30
    assert failed["status"] == "error" and failed["error"] == "KeyError: 'no_such_method'"

    rows = [ok, capped, timed_out, failed, crowded]
    text = markdown(rows)
    assert len(_table(text, "pair")[1]) == 5
    assert "resnet20x4 (tiny), bn kept, mudsc_permute" not in text.split("Did not finish:")[1]
    assert "**memory cap**" in text and "**timeout**" in text
    assert "`KeyError: 'no_such_method'`" in text

    # --write keeps the rows of an earlier run that this one did not measure again
    for r in rows:
        r["date"] = "2026-01-01"
    save(rows, "`first run` on a day", tmp_path / "scale")
    again = save([dict(ok, total_s=99.0)], "second run", tmp_path / "scale")
    written = again.read_text()
    assert written.startswith("second run") and "| 99 |" in written
    assert written.count("2026-01-01, `first run`") == 4


def test_every_pair_and_its_batchnorm_settings_become_cases():
    todo = scale.cases(["resnet50", "gpt2"], ["mudsc_zip", "average"], size="quick")
    assert [(c.pair, c.method, c.reset_bn) for c in todo] == [
        ("resnet50", "mudsc_zip", True),
        ("resnet50", "mudsc_zip", False),
        ("resnet50", "average", True),
        ("resnet50", "average", False),
        ("gpt2", "mudsc_zip", True),
        ("gpt2", "average", True),
    ]
    with pytest.raises(SystemExit, match="unknown method 'zip'"):
        scale.cases(["gpt2"], ["zip"])


def test_plan_estimate_is_read_when_the_program_has_one():
    assert scale.plan_estimate(SimpleNamespace()) is None
    assert (
        scale.plan_estimate(SimpleNamespace(memory_plan=SimpleNamespace(estimate_bytes=3 * 2**30)))
        == 3 * 2**30
    )
    assert scale.plan_estimate(SimpleNamespace(memory_plan={"total_bytes": 5})) == 5
