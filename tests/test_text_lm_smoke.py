"""Smoke run of the text benchmark (`python -m benchmarks.text_lm`) on tiny settings: byte-level
GPT pairs trained for a few steps on the standard library's source, merged with every row."""

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


def test_text_lm_end_to_end(tmp_path):
    out = tmp_path / "lm.md"
    argv = ["--steps", "20", "--dim", "32", "--layers", "1", "--calibration", "2"]
    text_lm.main([*argv, "--cache", str(tmp_path / "cache"), "--out", str(out)])
    rows = {
        cells[0]: cells[1:]
        for line in out.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| model |")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    labels = ["model A alone", "model B alone", "ensemble (2x compute)"]
    assert list(rows) == labels + [label for label, _, _ in text_lm.MERGES.values()]
    for loss, ppl, _ in rows.values():
        assert 0 < float(loss) < math.log(256) + 1 and float(ppl) > 1
    # the refit beats plain averaging even on barely trained models
    assert float(rows["average + least squares"][0]) < float(rows["average"][0])
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # both checkpoints cached
