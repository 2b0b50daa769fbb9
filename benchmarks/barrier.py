"""Loss barriers (issue 14, item 4): loss and accuracy along the straight line between two
trained models, `(1 - lam) * A + lam * B`, with B as trained (unaligned) and with B permuted into
A's unit order by each permutation method (`gm.align`).

    python -m benchmarks.barrier [--full] [--archs mlp,resnet_bn,vit] [--setups same,split]
                                 [--pairs N] [--points 11] [--threads 1]

Pairs come from `benchmarks.run.pair_setup` (its models, data, calibration batches and
checkpoint cache; quick settings unless --full), in two setups:
- "same": both models trained on all ten MNIST classes from different seeds (Git Re-Basin's
  setting, where the unaligned line has a loss barrier);
- "split": the merge benchmark's pairs, A and B trained on disjoint 5+5 class splits; the loss
  is over all ten classes, which each endpoint only half knows.
Only permutation methods give a line between two models of the same shape: a zip merges units
within a model, so it has no aligned B to interpolate towards.

At every lam, a model with BatchNorm has its running statistics recomputed on the calibration
batches (`gm.reset_bn_stats`, one pass in train mode: REPAIR's and Git Re-Basin's reset), at the
endpoints too, so all points are treated alike. Loss is the cross-entropy over all ten classes on
the test images; the barrier is max over lam of loss(lam) - ((1 - lam) loss(0) + lam loss(1)).

Writes <out>/<name>.md, <name>.json and <name>_<setup>.png (name "barrier" by default).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import graphmerge as gm
from graphmerge_examples.tasks import TaskData

from .pair_cli import add_pair_arguments, run_header, save_results
from .run import pair_setup

__all__ = ["CURVES", "barrier_height", "interpolate", "line", "main", "run"]

# curve label -> gm.align (method, options); None: B as trained
CURVES: dict[str, tuple[str, dict] | None] = {
    "unaligned": None,
    "Git Re-Basin (weight matching)": ("weight_matching", {}),
    "activation matching": ("activation_matching", {}),
    "MuDSC permute": ("mudsc", {"matcher": "permute"}),
}
SETUPS = {
    "same": "both models trained on all ten classes (different seeds)",
    "split": "A and B trained on disjoint 5+5 class splits (the merge benchmark's pairs)",
}
ARCHS = ["mlp", "resnet_bn", "vit"]


def interpolate(a: nn.Module, b: nn.Module, lam: float) -> nn.Module:
    """A copy of `a` with every floating tensor (1 - lam) * a + lam * b (integer buffers: a's)."""
    sa, sb = a.state_dict(), b.state_dict()
    state = {
        k: torch.lerp(v, sb[k], lam) if v.is_floating_point() else v.clone() for k, v in sa.items()
    }
    out = copy.deepcopy(a)
    out.load_state_dict(state)
    return out.eval()


@torch.no_grad()
def score(model: nn.Module, data: TaskData, batch: int = 500) -> dict[str, float]:
    """Test loss (cross-entropy over all classes), joint and per-task accuracy."""
    model.eval()
    logits = torch.cat([model(x) for x in data.x_test.split(batch)])
    y = data.y_test
    out = {
        "loss": float(F.cross_entropy(logits, y)),
        "joint": float((logits.argmax(1) == y).float().mean()),
    }
    tasks = []
    for classes in data.tasks:
        mask = torch.isin(y, torch.tensor(classes))
        pred = torch.tensor(classes)[logits[mask][:, list(classes)].argmax(1)]
        tasks.append(float((pred == y[mask]).float().mean()))
    out["per_task"] = float(np.mean(tasks))
    return out


def line(a: nn.Module, b: nn.Module, data: TaskData, cal: list, lambdas) -> list[dict]:
    """`score` at each lam of the line from a to b, BatchNorm statistics reset on `cal`."""
    points = []
    for lam in lambdas:
        model = interpolate(a, b, float(lam))
        gm.reset_bn_stats(model, cal)  # False (and nothing done) without BatchNorm
        points.append(score(model, data))
    return points


def barrier_height(losses, lambdas) -> float:
    """max over lam of loss(lam) minus the straight line between the endpoint losses."""
    losses, lam = np.asarray(losses, dtype=float), np.asarray(lambdas, dtype=float)
    return float(np.max(losses - ((1 - lam) * losses[0] + lam * losses[-1])))


def _midpoint_gap(losses) -> float:
    """loss at the middle point minus the mean of the endpoint losses (negative: a valley)."""
    return float(losses[len(losses) // 2] - (losses[0] + losses[-1]) / 2)


def run_pair(a, b, data, cal, lambdas, log) -> dict:
    """Every curve of one pair: {label: {"points": [...], "barrier": h, "align_s": s}}."""
    out = {}
    for label, spec in CURVES.items():
        start = time.perf_counter()
        other = b
        if spec is not None:
            method, options = spec
            other = gm.align([a, b], cal, method=method, progress=False, **options)[1]
        seconds = time.perf_counter() - start
        points = line(a, other, data, cal, lambdas)
        height = barrier_height([p["loss"] for p in points], lambdas)
        out[label] = {"points": points, "barrier": height, "align_s": seconds}
        mid = points[len(points) // 2]
        log(f"    {label}: barrier {height:.3f}, joint at lam=0.5 {100 * mid['joint']:.1f}")
    return out


def run(
    archs, setups, pairs, quick, points, cache, log=print, dataset="mnist", epochs=None
) -> dict:
    """{setup: {arch: [per-pair run_pair result]}} and the lambdas, as one JSON-able dict."""
    lambdas = np.linspace(0.0, 1.0, points).round(4).tolist()
    results: dict = {"dataset": dataset, "lambdas": lambdas, "setups": {}}
    for setup in setups:
        for arch in archs:
            for pair in range(pairs):
                log(f"[{setup}] {arch} pair {pair}")
                (a, b), data, cal, _, _ = pair_setup(
                    arch, dataset, pair, quick, cache, epochs, log, same_task=setup == "same"
                )
                result = run_pair(a, b, data, cal, lambdas, log)
                results["setups"].setdefault(setup, {}).setdefault(arch, []).append(result)
    return results


def _pm(values, scale: float = 1.0, digits: int = 3) -> str:
    v = np.asarray(values, dtype=float) * scale
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def tables(results: dict) -> list[str]:
    """Markdown: per setup, one row per (arch, curve), mean ± std over pairs."""
    lines = []
    mid = len(results["lambdas"]) // 2
    for setup, by_arch in results["setups"].items():
        lines += [
            f"#### {setup}: {SETUPS[setup]}",
            "",
            (
                "| arch | B aligned by | barrier (loss) | loss(0.5) − mean of ends | loss at λ=0.5 "
                "| joint acc. at λ=0.5 | per-task acc. at λ=0.5 | joint acc. A (λ=0) / B (λ=1) "
                "| align (s) |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for arch, pairs in by_arch.items():
            for label in CURVES:
                rows = [p[label] for p in pairs]
                ends = [
                    [r["points"][0]["joint"] for r in rows],
                    [r["points"][-1]["joint"] for r in rows],
                ]
                gap = [_midpoint_gap([p["loss"] for p in r["points"]]) for r in rows]
                lines.append(
                    f"| {arch} | {label} | {_pm([r['barrier'] for r in rows])} | {_pm(gap)} "
                    f"| {_pm([r['points'][mid]['loss'] for r in rows])} "
                    f"| {_pm([r['points'][mid]['joint'] for r in rows], 100, 1)} "
                    f"| {_pm([r['points'][mid]['per_task'] for r in rows], 100, 1)} "
                    f"| {np.mean(ends[0]) * 100:.1f} / {np.mean(ends[1]) * 100:.1f} "
                    f"| {np.mean([r['align_s'] for r in rows]):.2f} |"
                )
        lines.append("")
    return lines


def plot(results: dict, out: Path, name: str, log=print) -> list[Path]:
    """One PNG per setup: loss (top) and joint accuracy (bottom) against lam, one column per
    arch, one line per curve (mean over pairs; band: min to max)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: skipping the plots (pip install matplotlib)")
        return []
    lam = np.asarray(results["lambdas"])
    written = []
    for setup, by_arch in results["setups"].items():
        fig, axes = plt.subplots(2, len(by_arch), figsize=(4.2 * len(by_arch), 6.4), squeeze=False)
        for col, (arch, pairs) in enumerate(by_arch.items()):
            for label in CURVES:
                for row, key, scale in ((0, "loss", 1.0), (1, "joint", 100.0)):
                    values = np.array([[p[key] * scale for p in r[label]["points"]] for r in pairs])
                    ax = axes[row][col]
                    (drawn,) = ax.plot(lam, values.mean(0), "o-", ms=3, label=label)
                    if len(values) > 1:
                        ax.fill_between(
                            lam, values.min(0), values.max(0), color=drawn.get_color(), alpha=0.15
                        )
            axes[0][col].set_title(f"{arch} ({len(pairs)} pair{'s' if len(pairs) > 1 else ''})")
            axes[1][col].set_xlabel("λ  (0 = model A, 1 = model B)")
        axes[0][0].set_ylabel("test loss (10 classes)")
        axes[1][0].set_ylabel("joint accuracy (%)")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"{results['dataset']}, {setup}: {SETUPS[setup].split(' (')[0]}", fontsize=10)
        fig.tight_layout()
        path = Path(out) / f"{name}_{setup}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_arguments(parser, ARCHS, "barrier")
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--points", type=int, default=11, help="lambdas in [0, 1]")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    start = time.perf_counter()
    results = run(
        args.archs.split(","),
        args.setups.split(","),
        args.pairs,
        not args.full,
        args.points,
        args.cache,
        log,
        args.dataset,
        args.epochs,
    )
    seconds = time.perf_counter() - start
    command, header = run_header("barrier", argv, args)
    header += f", {args.points} points; {seconds:.0f} s. Mean ± std over pairs."
    markdown = "\n".join([header, "", *tables(results)])
    results.update(date=str(datetime.date.today()), seconds=seconds, command=command)
    save_results(args, markdown, results)
    if not args.no_plots:
        for path in plot(results, args.out, args.name, log):
            log(f"wrote {path}")
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
