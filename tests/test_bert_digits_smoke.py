"""Smoke run of the BERT benchmark (`python -m benchmarks.bert_digits`) on tiny settings: a pair
of one-block BERT encoders trained for one epoch on digits as pixel tokens, merged with a few
rows; a second run loads both checkpoints from the cache and reproduces the table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import bert_digits

pytestmark = pytest.mark.filterwarnings("ignore")


def test_digits_are_cls_then_64_pixel_tokens():
    x_train, y_train, x_test, y_test = bert_digits.digits_tokens()
    assert x_train.shape == (1347, 65) and x_test.shape == (450, 65)
    assert (x_train[:, 0] == bert_digits.CLS).all() and int(x_train[:, 1:].max()) == 16
    assert sorted(set(y_train.tolist())) == list(range(10)) and len(y_test) == 450


def _rows(path: Path) -> dict[str, list[str]]:
    return {
        cells[0]: cells[1:]
        for line in path.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| model |")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }


def test_bert_digits_end_to_end(tmp_path, monkeypatch):
    keys = ("average", "mudsc_zip", "mudsc_zip_ls")
    monkeypatch.setattr(bert_digits, "MERGES", {k: bert_digits.MERGES[k] for k in keys})
    argv = ["--epochs", "1", "--dim", "16", "--layers", "1", "--cache", str(tmp_path / "cache")]
    first, second = tmp_path / "first.md", tmp_path / "second.md"
    bert_digits.main([*argv, "--out", str(first)])
    bert_digits.main([*argv, "--out", str(second)])
    rows = _rows(first)
    labels = ["model A alone", "model B alone", "ensemble (2x compute)"]
    assert list(rows) == labels + [bert_digits.MERGES[k][0] for k in keys]
    for accuracy, mean, _ in rows.values():
        assert 0 <= float(accuracy) <= 100 and accuracy == mean  # one pair: its mean is itself
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # both checkpoints cached
    again = _rows(second)  # from the cache: the same models, the same merges
    assert {k: v[0] for k, v in again.items()} == {k: v[0] for k, v in rows.items()}
    assert "training 0 s" in second.read_text()
