"""Merge quality on sklearn digits, 5+5 class splits: every method, mean ± std over pairs.

    python -m benchmarks.digits [--pairs 3] [--arch mlp,cnn]

Each pair: a random 5+5 class split, model A trained on task A from one seed, model B on task B
from another (different initialisations), both ending in the shared class-vector head
(examples/tasks.py), merged with every method of `COMPARED` by `compare_pair`
(examples/compare.py, the code `graphmerge demo` runs on one pair). Joint accuracy is the argmax
over all ten classes on the test images of all classes; per-task is the mean of the two tasks'
accuracies restricted to their classes.
"""

from __future__ import annotations

import argparse
import datetime
import platform

import numpy as np
import torch

from graphmerge_examples.compare import COMPARED, compare_pair


def run(archs: list[str], pairs: int, epochs: int = 20) -> str:
    lines = [
        (
            f"`python -m benchmarks.digits --pairs {pairs} --arch {','.join(archs)}` on "
            f"{datetime.date.today()}, {platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads"
        ),
        "",
    ]
    for arch in archs:
        scores: dict[str, list[tuple[float, float]]] = {}
        times: dict[str, list[float]] = {}
        for pair in range(pairs):
            result = compare_pair(
                arch, pair, (10 * pair + 1, 10 * pair + 2), list(COMPARED), epochs
            )
            ens = result.ensemble
            scores.setdefault("ensemble (upper bound)", []).append((ens["joint"], ens["per_task"]))
            for key, (r, seconds) in result.merged.items():
                label = COMPARED[key][0]
                times.setdefault(label, []).append(seconds)
                scores.setdefault(label, []).append((r["joint"], r["per_task"]))
        lines += [
            f"**{arch.upper()}** ({pairs} pairs)",
            "",
            "| method | joint acc. | per-task acc. | merge time (s) |",
            "|---|---|---|---|",
        ]
        for label, vals in scores.items():
            v = np.array(vals) * 100
            t = f"{np.mean(times[label]):.2f}" if label in times else "—"
            lines.append(
                f"| {label} | {v[:, 0].mean():.1f} ± {v[:, 0].std():.1f} | "
                f"{v[:, 1].mean():.1f} ± {v[:, 1].std():.1f} | {t} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--arch", default="mlp,cnn")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    print(run(args.arch.split(","), args.pairs, args.epochs))


if __name__ == "__main__":
    main()
