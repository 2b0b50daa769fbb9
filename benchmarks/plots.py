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
    labels = list(next(iter(results.values()))["scores"]) if archs else []
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4.5))
    width = 0.8 / max(len(archs), 1)
    x = np.arange(len(labels))
    for i, arch in enumerate(archs):
        scores = results[arch]["scores"]
        means = [100 * np.mean([r["joint"] for r in scores.get(lab, [])] or [np.nan])
                 for lab in labels]
        stds = [100 * np.std([r["joint"] for r in scores.get(lab, [])] or [np.nan])
                for lab in labels]
        ax.bar(x + (i - (len(archs) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=arch)
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

    swept = {a: r["alpha"] for a, r in results.items() if r.get("alpha")}
    if swept:
        fig, ax = plt.subplots(figsize=(6, 4))
        for arch, sweep in swept.items():
            alphas = [float(k) for k in sweep]
            line, = ax.plot(alphas, [100 * v["joint"] for v in sweep.values()], "o-",
                            label=f"{arch} joint")
            ax.plot(alphas, [100 * v["per_task"] for v in sweep.values()], "s--",
                    color=line.get_color(), alpha=0.6, label=f"{arch} per-task")
        ax.set_xlabel("alpha (weight-space share; 0 = activations only, 1 = weights only)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{name}: MuDSC zip against alpha (pair 0)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{name}_alpha.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
