"""`graphmerge demo`: two small models trained on bundled data, merged, compared.

Trains two CNNs (or MLPs) on disjoint halves of sklearn's digits classes from different seeds,
merges them with plain averaging, Git Re-Basin, ZipIt and MuDSC, prints joint and per-task
accuracy next to the two-model ensemble, and writes the permutation-group graph.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from graphmerge.tasks import (
    COMPARED,
    CNNEmbed,
    MLPEmbed,
    calibration_batches,
    digits_split,
    ensemble_evaluate,
    evaluate,
    train,
)

__all__ = ["run_demo"]

_METHODS = [
    COMPARED[k] for k in ("average", "weight_matching", "zipit", "mudsc_permute", "mudsc_zip")
]


def run_demo(
    arch: str = "cnn", out: str | Path = ".", seed: int = 0, epochs: int = 20, progress: bool = True
) -> str:
    """Run the demo and return its report (a Markdown table plus the picture's path)."""
    import graphmerge as gm
    from graphmerge.render import write_graph_picture

    image = arch == "cnn"
    cls = CNNEmbed if image else MLPEmbed
    start = time.perf_counter()
    data = digits_split(seed=seed, image=image)
    a = train(cls(), data, task=0, seed=seed + 1, epochs=epochs)
    b = train(cls(), data, task=1, seed=seed + 2, epochs=epochs)
    trained = time.perf_counter() - start
    cal = calibration_batches(data)
    rows = [
        ("model A alone", evaluate(a, data), None),
        ("model B alone", evaluate(b, data), None),
        ("ensemble of A and B (2x compute)", ensemble_evaluate([a, b], data), None),
    ]
    for label, method, options in _METHODS:
        t = time.perf_counter()
        merged = gm.merge([a, b], cal, method=method, progress=progress, **options)
        rows.append((f"merged: {label}", evaluate(merged, data), time.perf_counter() - t))
    lines = [
        (
            f"digits, classes {list(data.tasks[0])} (task A) vs {list(data.tasks[1])} (task B); "
            f"two {cls.__name__} models from different seeds, trained in {trained:.1f} s"
        ),
        "",
        "| model | joint acc. | task A | task B | merge time (s) |",
        "|---|---|---|---|---|",
    ]
    for label, r, t in rows:
        tt = f"{t:.2f}" if t is not None else ""
        lines.append(
            f"| {label} | {100 * r['joint']:.1f} | {100 * r['task_a']:.1f} | "
            f"{100 * r['task_b']:.1f} | {tt} |"
        )
    groups = gm.permutation_groups(a, cal[0][:2])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    picture = write_graph_picture(groups, str(out / f"demo_{arch}_groups"))
    free = sum(1 for g in groups if not g.frozen and g.size > 1)
    lines += ["", f"{len(groups)} permutation groups ({free} free); group graph: {picture}"]
    torch.set_grad_enabled(True)
    return "\n".join(lines)
