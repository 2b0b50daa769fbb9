"""The "beyond MuDSC" overview of a benchmark run: the least-squares refit and the repair against
MuDSC zip, per architecture and on average over the architectures (issue 14's target: the best
new configuration at least 5 points of joint accuracy above MuDSC zip on average, and no
architecture below MuDSC zip by more than MuDSC zip's std there).

    python -m benchmarks.run --summarize benchmarks/results/quick_mnist.json   # prints it too
"""

from __future__ import annotations

import numpy as np

from graphmerge_examples.compare import COMPARED

__all__ = ["BASE", "NEW", "refine_summary"]

BASE = COMPARED["mudsc_zip"][0]
NEW = [
    COMPARED[k][0]
    for k in ("mudsc_permute_ls", "mudsc_zip_repair", "mudsc_zip_ls", "mudsc_zip_ls_repair")
]


def _joint(results: dict, arch: str, label: str) -> np.ndarray | None:
    per_pair = results[arch]["scores"].get(label)
    return None if not per_pair else np.array([p["joint"] for p in per_pair]) * 100


def refine_summary(results: dict) -> list[str]:
    """Markdown lines (empty when the run has no new rows or no MuDSC zip row): per row, the
    joint accuracy per architecture (mean over pairs), its mean over the architectures, the
    difference to MuDSC zip's mean, and whether every architecture is within MuDSC zip's std."""
    archs = list(results)
    base = {a: _joint(results, a, BASE) for a in archs}
    rows = [r for r in NEW if all(_joint(results, a, r) is not None for a in archs)]
    if not rows or any(v is None for v in base.values()):
        return []
    base_mean = float(np.mean([base[a].mean() for a in archs]))
    lines = [
        "| joint accuracy (%) | "
        + " | ".join(archs)
        + " | mean | mean − MuDSC zip | no arch below MuDSC zip − its std |",
        "|---|" + "---|" * (len(archs) + 3),
        f"| {BASE} | "
        + " | ".join(f"{base[a].mean():.1f} ± {base[a].std():.1f}" for a in archs)
        + f" | {base_mean:.1f} | — | — |",
    ]
    for label in rows:
        joint = {a: _joint(results, a, label) for a in archs}
        mean = float(np.mean([joint[a].mean() for a in archs]))
        worst = min(joint[a].mean() - (base[a].mean() - base[a].std()) for a in archs)
        lines.append(
            f"| {label} | "
            + " | ".join(f"{joint[a].mean():.1f} ± {joint[a].std():.1f}" for a in archs)
            + f" | {mean:.1f} | {mean - base_mean:+.1f} | {'✓' if worst >= 0 else '✗'} |"
        )
    return lines
