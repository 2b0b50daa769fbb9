"""`graphmerge demo`: two small models trained on bundled data, merged, compared.

Trains two CNNs (or MLPs) on disjoint halves of sklearn's digits classes from different seeds,
merges them with plain averaging, Git Re-Basin, ZipIt and MuDSC, prints joint and per-task
accuracy next to the two-model ensemble, and writes the permutation-group graph into a folder.

    from graphmerge_examples.demo import run_demo
    print(run_demo("mlp", out="demo-out", epochs=5))
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

import graphmerge as gm
from graphmerge.render import write_graph_picture
from graphmerge_examples.compare import COMPARED, Comparison, compare_pair

__all__ = ["DEFAULT_OUT", "DEMO_METHODS", "run_demo"]

DEMO_METHODS = ("average", "weight_matching", "zipit", "mudsc_permute", "mudsc_zip")
DEFAULT_OUT = "graphmerge-demo"


def run_demo(
    arch: str = "cnn",
    out: str | Path = DEFAULT_OUT,
    seed: int = 0,
    epochs: int = 20,
    progress: bool = True,
    threads: int = 1,
) -> str:
    """Run the demo; return its report (a Markdown table, then the picture's path).

    arch: "cnn" or "mlp"; out: the folder for the group graph (created); seed: the class split
    (model A trains from seed + 1, model B from seed + 2); progress: say what is happening and
    show progress bars on stderr; threads: torch threads while the demo runs (restored after:
    one is fastest for these tiny models, and several spin-wait on a busy machine).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        if progress:
            print(
                f"graphmerge demo: training two {arch.upper()}s on digits ({epochs} epochs each), "
                f"then merging them {len(DEMO_METHODS)} ways, on {threads} torch thread(s)",
                file=sys.stderr,
            )
        result = compare_pair(arch, seed, (seed + 1, seed + 2), DEMO_METHODS, epochs, progress)
        picture = _write_picture(result, arch, Path(out))
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return "\n".join(
        [
            *_table(result),
            "",
            picture,
            (
                f"{seconds:.0f} s in all on {threads} torch thread(s) (set for the demo; "
                f"{previous} before and after it)"
            ),
        ]
    )


def _table(result: Comparison) -> list[str]:
    """The header line and the Markdown table of one comparison."""
    tasks = result.data.tasks
    rows = [
        ("model A alone", result.alone[0], None),
        ("model B alone", result.alone[1], None),
        ("ensemble of A and B (2x compute)", result.ensemble, None),
    ]
    rows += [(f"merged: {COMPARED[k][0]}", *result.merged[k]) for k in DEMO_METHODS]
    lines = [
        (
            f"digits, classes {list(tasks[0])} (task A) vs {list(tasks[1])} (task B); two "
            f"{type(result.models[0]).__name__} models from different seeds, trained in "
            f"{result.train_seconds:.1f} s"
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
    return lines


def _write_picture(result: Comparison, arch: str, out: Path) -> str:
    """Draw model A's permutation groups into `out`; a line naming the groups and the file."""
    groups = gm.permutation_groups(result.models[0], result.calibration[0][:2])
    out.mkdir(parents=True, exist_ok=True)
    picture = write_graph_picture(groups, str(out / f"demo_{arch}_groups"))
    free = sum(1 for g in groups if not g.frozen and g.size > 1)
    return f"{len(groups)} permutation groups ({free} free); group graph: {picture}"
