"""Smoke run of the text benchmark (`python -m benchmarks.text_lm`) on tiny settings: byte-level
GPT pairs trained for a few steps on the standard library's source, merged with every row, on the
same text and on two halves of the files."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import text_lm

pytestmark = pytest.mark.filterwarnings("ignore")


def test_corpus_is_split_by_file():
    train, val = text_lm.corpus()
    assert len(train) > 1_000_000 and 0.03 < len(val) / (len(train) + len(val)) < 0.3


def test_halves_split_the_files_in_two_balanced_disjoint_halves():
    train, val = text_lm.corpus()
    halves = [text_lm.corpus(half) for half in (0, 1)]
    for whole, a, b in ((train, halves[0][0], halves[1][0]), (val, halves[0][1], halves[1][1])):
        assert len(a) + len(b) + 1 == len(whole)  # every file in one half (+1 joining "\n")
    a, b = (len(t) for t, _ in halves)
    assert abs(a - b) / (a + b) < 0.05  # balanced bytes
    files = sorted(Path(text_lm.sysconfig.get_paths()["stdlib"]).glob("*.py"))
    first, second = text_lm.halves(files)
    assert not set(first) & set(second) and len(first) + len(second) == len(files)
    assert text_lm.halves(files[::-1]) == (first, second)  # deterministic, not order-dependent


def _rows(path: Path) -> dict[str, list[str]]:
    return {
        cells[0]: cells[1:]
        for line in path.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| model |")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }


@pytest.mark.parametrize("split", ["same", "halves"])
def test_text_lm_end_to_end(tmp_path, split):
    out = tmp_path / "lm.md"
    argv = ["--steps", "20", "--dim", "32", "--layers", "1", "--calibration", "2"]
    text_lm.main([*argv, "--split", split, "--cache", str(tmp_path / "cache"), "--out", str(out)])
    rows = _rows(out)
    labels = ["model A alone", "model B alone", "ensemble (2x compute)"]
    assert list(rows) == labels + [label for label, _, _ in text_lm.MERGES.values()]
    for cells in rows.values():
        losses = [float(cells[0])] + [float(x) for x in cells[2:-1]]
        assert len(losses) == (1 if split == "same" else 3)  # whole validation (+ each half's)
        assert all(0 < x < math.log(256) + 1 for x in losses) and float(cells[1]) > 1
        assert math.isclose(float(cells[1]), math.exp(losses[0]), rel_tol=5e-3)
    # the ensemble's loss is at most the mean of its models' (log is concave), on every column
    for column in range(len(rows["ensemble (2x compute)"]) - 1):
        if column == 1:
            continue  # perplexity
        a, b, ens = (float(rows[label][column]) for label in labels)
        assert ens <= (a + b) / 2 + 1e-3
    # the refit beats plain averaging even on barely trained models
    assert float(rows["average + least squares"][0]) < float(rows["average"][0])
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # both checkpoints cached
