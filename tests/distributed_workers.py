"""What the processes of tests/test_distributed.py run (importable: spawned workers import it).

Each worker merges tiny models on its shard of fixed calibration batches and saves what the test
compares (merged weights, assignments, the summed moments it owns) under `out/rank<r>.pt`.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import graphmerge as gm
import graphmerge.passes.moments as moments_module
from graphmerge.passes.collect_features import collect_moments


class PoisonedCNN(nn.Module):
    """conv-bn-relu, pool, linear; its eager forward raises on a batch whose first value is
    1000 (the poison), as a user's model may raise on a bad sample."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        if not torch.compiler.is_exporting() and float(x.reshape(-1)[0]) == 1000.0:
            raise ValueError("poisoned batch")
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.mean((2, 3)))


def models(family: str) -> list[nn.Module]:
    """Two models of `family`: "cnn" (TinyCNN: convs with BatchNorm, a residual add), "vit"
    (a one-block ViT: fused qkv, heads, SDPA, LayerNorm), "poisoned" (`PoisonedCNN`)."""
    if family == "cnn":
        from graphmerge_examples.tiny_cnn import build, build_other

        return [build(), build_other()]
    if family == "vit":
        from zoo import ViT

        out = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            out.append(ViT(dim=16, heads=2).eval())
        return out
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(PoisonedCNN().eval())
    return out


def batches(n: int = 5, size: int = 6) -> list[torch.Tensor]:
    """`n` fixed batches of `size` 16x16 RGB images."""
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(size, 3, 16, 16, generator=gen) for _ in range(n)]


def merge_shard(out: str, family: str, split: list[list[int]], options: dict) -> None:
    """Merge `family` on batches split[rank] with `options` (and "small_bytes": the size up to
    which sums are all-reduced); save merged weights, assignments, the base states and the
    moments (Σx, Σxxᵀ, count) of the groups this rank owns."""
    rank = dist.get_rank()
    data = batches()
    shard = [data[i] for i in split[rank]]
    options = dict(options)
    if "small_bytes" in options:  # 0: every group's sums reduced to its owner only
        moments_module.SMALL_BYTES = options.pop("small_bytes")
    merged, program = gm.merge(
        models(family), shard, progress=False, return_program=True, **options
    )
    moments, _ = collect_moments(program, blocks="all")
    torch.save(
        {
            "merged": merged.state_dict(),
            "assignments": {n: a.targets for n, a in program.assignments.items()},
            "states": program.states,
            "owners": program.owners,
            "moments": {n: (m.total, m.outer, m.count) for n, m in moments.items()},
        },
        Path(out) / f"rank{rank}.pt",
    )


def merge_poisoned(out: str, poison_rank: int) -> None:
    """Merge `PoisonedCNN`s; rank `poison_rank`'s shard holds a batch its forward refuses."""
    rank = dist.get_rank()
    shard = batches(2)
    if rank == poison_rank:
        shard[1] = shard[1].clone()
        shard[1].reshape(-1)[0] = 1000.0
    merged = gm.merge(models("poisoned"), shard, progress=False)
    torch.save(merged.state_dict(), Path(out) / f"rank{rank}.pt")


def merge_mismatched(out: str, odd_rank: int) -> None:
    """Merge with rank `odd_rank`'s second model perturbed: every rank must refuse it."""
    rank = dist.get_rank()
    ms = models("cnn")
    if rank == odd_rank:
        with torch.no_grad():
            ms[1].fc.bias.add_(1.0)
    try:
        gm.merge(ms, batches(2), progress=False)
    except gm.GraphMergeError as exc:
        (Path(out) / f"rank{rank}.txt").write_text(f"{type(exc).__name__}: {exc}")
        raise


def merge_after_crash(out: str, bad_rank: int) -> None:
    """Rank `bad_rank` fails before it reaches the merge (its process ends); the others
    merge and must fail (they wait in a collective the dead rank never joins)."""
    if dist.get_rank() == bad_rank:
        raise RuntimeError("this rank crashed before the merge")
    merged = gm.merge(models("cnn"), batches(2), progress=False)
    torch.save(merged.state_dict(), Path(out) / f"rank{dist.get_rank()}.pt")


# factories for `graphmerge merge` configs (tests/test_distributed.py writes them)
def build_poisoned() -> nn.Module:
    return models("poisoned")[0]


def build_poisoned_other() -> nn.Module:
    return models("poisoned")[1]


def poisoned_calibration() -> list[torch.Tensor]:
    """4 batches; batch 3 (rank 1's second of two ranks) is refused by `PoisonedCNN`."""
    data = batches(4)
    data[3] = data[3].clone()
    data[3].reshape(-1)[0] = 1000.0
    return data


def calibration() -> list[torch.Tensor]:
    return batches(4)


def merge_with_stuck_rank(out: str, bad_rank: int) -> None:
    """Rank `bad_rank` hangs before the merge; the others must give up after the process
    group's timeout."""
    if dist.get_rank() == bad_rank:
        time.sleep(600)
    merged = gm.merge(models("cnn"), batches(2), progress=False)
    torch.save(merged.state_dict(), Path(out) / f"rank{dist.get_rank()}.pt")
