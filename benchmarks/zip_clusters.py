"""What a merge builds, unit by unit: how many merged units join units of both models, and how many
join units of one model only.

    python -m benchmarks.zip_clusters [--quick] [--archs mlp,resnet_bn,resnet_gn,vit] [--pair 0]

Uses benchmarks/run.py's pair (its cached checkpoints when they exist, else it trains them) and
merges it with the zips (ZipIt; MuDSC zip at alpha 0, 0.5, 1) and MuDSC permute. For each merge,
over every group with more than 8 units, a merged unit is *cross-model* when its cluster holds
units of both models, *within-model* when it holds two or more units of one model only, and a
*singleton* when it holds one unit. A permutation makes only cross-model units; a zip with
within-model merges allowed (MuDSC's b=1) can make a merged model that is the two models
compressed to half width, side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import graphmerge as gm
from graphmerge_examples.tasks import evaluate

from .models import ARCHS
from .run import ROOT, pair_setup

MERGES = [  # label, method, options
    ("MuDSC permute", "mudsc", {"matcher": "permute"}),
    ("ZipIt (a=0.3, b=0.125)", "zipit", {}),
    ("activation-only zip (α=0)", "mudsc", {"alpha": 0.0}),
    ("MuDSC zip (α=0.5)", "mudsc", {}),
    ("weight-only zip (α=1)", "mudsc", {"alpha": 1.0}),
]


def cluster_counts(program, min_units: int = 8) -> dict[str, int]:
    """Merged units by kind over the program's groups with more than `min_units` units."""
    counts = {"units": 0, "cross": 0, "within": 0, "single": 0}
    for assignment in program.assignments.values():
        if len(assignment.targets) != 2 or len(assignment.targets[0]) <= min_units:
            continue
        a, b = (np.bincount(t, minlength=assignment.n_merged) for t in assignment.targets)
        counts["units"] += assignment.n_merged
        counts["cross"] += int(((a > 0) & (b > 0)).sum())
        counts["within"] += int((((a >= 2) & (b == 0)) | ((b >= 2) & (a == 0))).sum())
        counts["single"] += int(((a + b) == 1).sum())
    return counts


def run(
    archs: list[str], pair: int, quick: bool, cache: Path, dataset: str = "mnist", log=print
) -> str:
    lines = [
        "| arch | merge | joint acc. | merged units | cross-model | within-model | singletons |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch in archs:
        (a, b), data, cal, _, _ = pair_setup(arch, dataset, pair, quick, cache, log=log)
        for label, method, options in MERGES:
            merged, program = gm.merge(
                [a, b], cal, method=method, progress=False, return_program=True, **options
            )
            c = cluster_counts(program)
            joint = evaluate(merged, data)["joint"] * 100
            lines.append(
                f"| {arch} | {label} | {joint:.1f} | {c['units']} | {c['cross']} | "
                f"{c['within']} | {c['single']} |"
            )
            log(lines[-1])
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the --quick run's models")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--pair", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=ROOT / "cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = run(
        args.archs.split(","),
        args.pair,
        args.quick,
        args.cache,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(
        f"`python -m benchmarks.zip_clusters` (pair {args.pair}"
        f"{', --quick' if args.quick else ''}); groups with more than 8 units\n"
    )
    print(table)


if __name__ == "__main__":
    main()
