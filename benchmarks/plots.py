"""PNG plots for benchmarks/run.py: joint accuracy per method (bars, error bars = std over pairs)
and accuracy against MuDSC's alpha. Optional: without matplotlib, prints a message and skips."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_results(results: dict, out: Path, name: str, log=print) -> list[Path]:
    """results: {arch: run_arch(...) dict}. Returns the written paths ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: skipping the plots (pip install matplotlib)")
        return []
    out = Path(out)
    written = []
    archs = list(results)
    # rows merged at each arch's alpha* carry the value in their label: one bar group for them
    from .run import _row_key

    grouped = {arch: {} for arch in archs}
    for arch in archs:
        for label, rows in results[arch]["scores"].items():
            grouped[arch].setdefault(_row_key(label), rows)
    labels = list(dict.fromkeys(k for arch in archs for k in grouped[arch]))
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.95 * len(labels))), 5))
    width = 0.8 / max(len(archs), 1)
    x = np.arange(len(labels))
    for i, arch in enumerate(archs):
        scores = grouped[arch]
        means = [
            100 * np.mean([r["joint"] for r in scores.get(lab, [])] or [np.nan]) for lab in labels
        ]
        stds = [
            100 * np.std([r["joint"] for r in scores.get(lab, [])] or [np.nan]) for lab in labels
        ]
        ax.bar(
            x + (i - (len(archs) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=arch
        )
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("joint accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{name}: joint accuracy (mean ± std over pairs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"{name}_joint.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

    swept = {a: r for a, r in results.items() if r.get("alpha")}
    if swept:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
        for ax, matcher in zip(axes, ("permute", "zip")):
            for arch, r in swept.items():
                sweep = r["alpha"].get(matcher)
                if not sweep:
                    continue
                alphas = [float(k) for k in sweep]
                (line,) = ax.plot(
                    alphas,
                    [100 * v["test"]["joint"] for v in sweep.values()],
                    "o-",
                    label=f"{arch}: test",
                )
                ax.plot(
                    alphas,
                    [100 * v["select"]["joint"] for v in sweep.values()],
                    ":",
                    color=line.get_color(),
                    alpha=0.7,
                    label=f"{arch}: training images",
                )
                star = r.get("alpha_star", {}).get(matcher)
                if star is not None:
                    ax.axvline(star, color=line.get_color(), alpha=0.3, lw=4)
            ax.set_title(f"MuDSC {matcher}")
            ax.set_xlabel("alpha (0 = activations only, 1 = weights only)")
        axes[0].set_ylabel("joint accuracy (%)")
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle(
            f"{name}: joint accuracy against alpha (pair 0; bar = alpha* picked on "
            "training images)",
            fontsize=10,
        )
        fig.tight_layout()
        path = out / f"{name}_alpha.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
