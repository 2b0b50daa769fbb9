"""Merges across processes (gloo, CPU, one thread each): 2 and 3 ranks against one process.

The statistics summed over the ranks' shards equal those of one process over all the batches
(rel. 1e-12: the ranks share the first batch's shift, so each batch's float32 products are the
same); every rank returns the same merged model, with the assignments of one process. BatchNorm
statistics are combined in float64, so they match one process's float32 running average to
float32 rounding (checked on the CNN's BatchNorms). Faults: a rank that raises makes every rank exit non-zero, nothing written;
models that differ between ranks are refused naming the ranks.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import distributed_workers as workers
import numpy as np
import pytest
import torch

import graphmerge as gm
from graphmerge.cli import main
from graphmerge.distributed import balance
from graphmerge.launch import _without_nproc, run_workers, shard
from graphmerge.passes.collect_features import collect_moments

TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _run(fn, nproc: int, *args, timeout: float = 60.0) -> list[int]:
    return run_workers(fn, nproc, args, timeout=timeout, threads=1)


def _single(family: str, options: dict):
    """The merge one process makes over all the batches."""
    return gm.merge(
        workers.models(family), workers.batches(), progress=False, return_program=True, **options
    )


@pytest.mark.parametrize(
    "family,split,options",
    [
        # 2 ranks, batch i on rank i mod 2; small statistics: all-reduced
        ("cnn", [[0, 2, 4], [1, 3]], {}),
        # 3 ranks, fewer batches on one, none on another; every group reduced to its owner
        ("vit", [[0, 1, 2], [3, 4], []], {"small_bytes": 0}),
        # weight matching's sweeps, each visit on its group's owner
        ("vit", [[0, 2, 4], [1, 3]], {"method": "weight_matching"}),
    ],
)
def test_statistics_and_merge_equal_one_process(tmp_path, family, split, options):
    codes = _run(workers.merge_shard, len(split), str(tmp_path), family, split, options)
    assert codes == [0] * len(split)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(len(split))]
    # every rank: the same merged model, bit for bit, and the same owners
    for other in ranks[1:]:
        assert other["owners"] == ranks[0]["owners"]
        for key, value in ranks[0]["merged"].items():
            assert torch.equal(other["merged"][key], value), key
    # owners spread over the ranks (largest first to the least loaded)
    assert len(set(ranks[0]["owners"].values())) == min(len(split), len(ranks[0]["owners"]))
    merged, program = _single(family, {k: v for k, v in options.items() if k != "small_bytes"})
    for name, a in program.assignments.items():
        for mine, theirs in zip(a.targets, ranks[0]["assignments"][name], strict=True):
            np.testing.assert_array_equal(mine, theirs)
    for key, value in merged.state_dict().items():
        got = ranks[0]["merged"][key]
        assert torch.allclose(got.float(), value.float(), rtol=1e-5, atol=1e-6), key
    # the base models' BatchNorm statistics after the reset on the shards: those one process
    # computes over all batches (to float32 rounding: its running average is float32)
    for model, state in zip(workers.models(family), ranks[0]["states"], strict=True):
        gm.reset_bn_stats(model, workers.batches())
        for key, value in model.state_dict().items():
            if "running" in key or "num_batches" in key:
                assert torch.allclose(state[key], value, rtol=1e-5, atol=1e-7), key
    # the moments: one process over all batches, from the same base weights
    program.states = ranks[0]["states"]
    reference, _ = collect_moments(program, blocks="all")
    owned = {name: m for r in ranks for name, m in r["moments"].items()}
    assert owned.keys() == reference.keys()
    for name, m in reference.items():
        total, outer, count = owned[name]
        assert count == m.count
        np.testing.assert_allclose(total, m.total, rtol=1e-12, atol=1e-12 * abs(m.total).max())
        np.testing.assert_allclose(outer, m.outer, rtol=1e-12, atol=1e-12 * abs(m.outer).max())


def test_mismatched_models_are_refused_naming_the_rank(tmp_path):
    codes = _run(workers.merge_mismatched, 2, str(tmp_path), 1)
    assert all(c != 0 for c in codes), codes
    for r in range(2):
        text = (tmp_path / f"rank{r}.txt").read_text()
        assert text.startswith("RankError") and "model 1 differs on rank 1 from rank 0" in text


def test_a_dead_rank_fails_the_others_within_the_timeout(tmp_path):
    start = time.monotonic()
    codes = _run(workers.merge_after_crash, 2, str(tmp_path), 1, timeout=20.0)
    assert all(c != 0 for c in codes), codes
    assert time.monotonic() - start < 45
    assert not list(tmp_path.iterdir())


def test_a_stuck_rank_fails_every_rank_after_the_timeout(tmp_path):
    """Rank 1 never reaches the merge: rank 0 gives up after the group's 5 s timeout, and the
    launcher stops rank 1 once the timeout has passed again."""
    start = time.monotonic()
    codes = _run(workers.merge_with_stuck_rank, 2, str(tmp_path), 1, timeout=5.0)
    assert all(c != 0 for c in codes), codes
    assert time.monotonic() - start < 60
    assert not list(tmp_path.iterdir())


def _cli(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "graphmerge", "merge", str(config), "--out", str(out)]
    cmd += ["--no-progress", "--timeout", "30", *extra]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)


def _config(tmp_path, build: str, other: str, data: str) -> Path:
    worker = TESTS / "distributed_workers.py"
    path = tmp_path / "merge.yaml"
    path.write_text(
        f"models:\n  - factory: {worker}:{build}\n  - factory: {worker}:{other}\n"
        f"data:\n  factory: {worker}:{data}\nmethod: mudsc\n"
    )
    return path


def test_cli_rank_raising_in_forward_fails_every_rank_and_writes_nothing(tmp_path):
    config = _config(tmp_path, "build_poisoned", "build_poisoned_other", "poisoned_calibration")
    out = tmp_path / "out" / "merged.safetensors"
    start = time.monotonic()
    done = _cli(config, out, "--nproc", "2")
    assert done.returncode != 0
    assert time.monotonic() - start < 60
    # both ranks report; their lines may interleave on the shared stderr pipe
    errors = [e for e in done.stderr.split("error: ")[1:] if "resetting" in e or "failed" in e]
    assert len(errors) == 2, done.stderr
    assert all("on rank 1 of 2" in e and "poisoned batch" in e for e in errors)
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no temp file either


def test_cli_nproc_writes_once_what_one_process_writes(tmp_path):
    from safetensors.torch import load_file

    config = _config(tmp_path, "build_poisoned", "build_poisoned_other", "calibration")
    one, two = tmp_path / "one.safetensors", tmp_path / "two" / "merged.safetensors"
    assert main(["merge", str(config), "--out", str(one), "--no-progress"]) == 0
    done = _cli(config, two, "--nproc", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote ") == 1 and "on 2 ranks" in done.stdout
    assert sorted(p.name for p in two.parent.iterdir()) == ["merged.safetensors"]
    a, b = load_file(one), load_file(two)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-5, atol=1e-6), key


def test_balance_gives_the_largest_first_to_the_least_loaded_rank():
    owners = balance({"a": 100, "b": 60, "c": 50, "d": 10}, 2)
    assert owners == {"a": 0, "b": 1, "c": 1, "d": 0}
    assert balance({"a": 5}, 3) == {"a": 0}


def test_shard_gives_batch_i_to_rank_i_mod_n():
    assert [shard(range(7), r, 3) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard([], 1, 2) == []
    assert _without_nproc(["merge", "c.yaml", "--nproc", "2", "--out", "m.pt"]) == [
        "merge",
        "c.yaml",
        "--out",
        "m.pt",
    ]
    assert _without_nproc(["merge", "--nproc=3", "c.yaml"]) == ["merge", "c.yaml"]


def test_a_group_held_elsewhere_is_in_the_store_but_not_readable_here():
    from graphmerge.similarities import SimilarityStore

    store = SimilarityStore()
    store["mine"] = np.eye(2)
    store.hold_elsewhere("theirs", 1)
    assert "theirs" in store and "mine" in store
    assert list(store) == ["mine"] and len(store) == 1
    with pytest.raises(KeyError, match="held by rank 1"):
        store["theirs"]
    store["theirs"] = np.eye(3)  # an owner's matrix replaces the mark
    assert store["theirs"].shape == (3, 3)


def test_refit_and_repair_are_refused_across_processes(monkeypatch):
    """Their per-layer statistics are not summed over ranks yet: refused before any work."""
    merge_module = importlib.import_module("graphmerge.merge")  # not gm.merge, the function
    monkeypatch.setattr(merge_module, "current_team", lambda: object())
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    data = [torch.randn(5, 4)]
    for option in ({"refine": "least_squares"}, {"repair": True}):
        with pytest.raises(gm.InputError, match="one process"):
            gm.merge([model, model], data, **option)
