"""Partial merges (issue 14, item 5): joint accuracy against the share of layers merged, and the
parameters it costs, for the merge benchmark's pairs (A and B trained on disjoint 5+5 splits).

    python -m benchmarks.partial_sweep [--full] [--archs resnet_bn,mlp] [--pairs N]
                                       [--refine] [--threads 1]

For each k, the pair is merged with `gm.merge(..., stop_at=...)` (MuDSC zip; with --refine
also refine="least_squares") at the last stop point (in execution order) whose merged trunk
holds exactly the first k weight layers (Conv2d / Linear): the normalisation after a layer
rather than the layer, a residual block's output rather than its last norm (`sweep_points`;
`graphmerge inspect` lists every valid stop point). A partial merge is one GraphModule: the merged trunk, then each model's own
tail, returning both models' logits; its joint accuracy is that of the sum of the two softmaxes,
as for the ensemble (nothing merged), and the full merge is a single model.

Parameters: the partial module's own, split into the trunk (`trunk_*`: one merged copy) and the
tails (`tail0_*`, `tail1_*`); a full merge has one model's count, the ensemble two.

Writes <out>/<name>.md, <name>.json and <name>.png (name "partial" by default).
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

import graphmerge as gm
from graphmerge.api import compile_program
from graphmerge.merge import stop_points
from graphmerge.passes.partial import trunk_nodes
from graphmerge_examples.tasks import ensemble_evaluate, evaluate

from .pair_cli import add_pair_arguments, run_header, save_results
from .run import pair_setup

__all__ = ["ParameterCount", "count_parameters", "main", "reset_partial_bn", "run", "sweep_points"]

ARCHS = ["resnet_bn", "mlp"]
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)
METHODS = {"MuDSC zip": {}, "MuDSC zip + least squares": {"refine": "least_squares"}}


def sweep_points(model: nn.Module, example) -> tuple[list[str], list[tuple[str, int]]]:
    """The model's weight layers (Conv2d / Linear modules, in execution order) and the stop
    points to sweep: (stop point, k) for each k from 1 to all layers but one whose trunk holds
    exactly the first k weight layers (a stop whose trunk skips an earlier layer, e.g. a
    ResNet's shortcut, is left out); of several such stops, the last in execution order (the
    normalisation after a layer rather than the layer, a block rather than its last norm)."""
    program = compile_program(model, example)
    modules = [p for p in stop_points(program) if ":" not in p]
    layers = [m for m in modules if isinstance(model.get_submodule(m), WEIGHT_LAYERS)]
    kinds = program.traced.placeholders
    chosen: dict[int, str] = {}
    for stop in modules:
        params = {
            kinds[n.name][1]
            for node in trunk_nodes(program, stop)
            for n in node.all_input_nodes
            if kinds.get(n.name, ("",))[0] == "param"
        }
        held = {name.rsplit(".", 1)[0] for name in params} & set(layers)
        k = len(held)
        if 0 < k < len(layers) and held == set(layers[:k]):
            chosen[k] = stop
    return layers, sorted(((stop, k) for k, stop in chosen.items()), key=lambda sk: sk[1])


class ParameterCount(dict):
    """{"trunk", "tail0", "tail1", "total"}: parameters of a partial merge's GraphModule."""


def count_parameters(module: nn.Module) -> ParameterCount:
    """Parameters of a partial merge by part (a full merge or one model: all in "trunk")."""
    count = ParameterCount(trunk=0, tail0=0, tail1=0, total=0)
    for name, p in module.named_parameters():
        part = re.match(r"(tail[01])_", name)
        count[part.group(1) if part else "trunk"] += p.numel()
        count["total"] += p.numel()
    return count


def merged_layers(module: nn.Module, layers: list[str]) -> int:
    """How many of the weight `layers` the partial module holds in its merged trunk."""
    names = {n for n, _ in module.named_parameters()}
    return sum(f"trunk_{layer.replace('.', '_')}_weight" in names for layer in layers)


def reset_partial_bn(module: fx.GraphModule, data) -> bool:
    """Recompute the running statistics of every batch norm in a partial merge's graph, in
    place, on `data`: one pass with batch statistics, the running statistics the average over
    the batches (what `gm.reset_bn_stats` does to a module's BatchNorm layers). The library's
    partial merge keeps the tails' statistics as trained, though their inputs now come from the
    merged trunk. Returns False when the graph has no batch norm."""
    nodes = [n for n in module.graph.nodes if n.target is torch.ops.aten.batch_norm.default]
    if not nodes:
        return False
    originals = [n.args for n in nodes]
    try:
        with torch.no_grad():
            for k, batch in enumerate(data):
                for node, args in zip(nodes, originals):  # training, momentum 1 / (k + 1)
                    node.args = (*args[:5], True, 1.0 / (k + 1), *args[7:])
                module.recompile()
                module(batch)
    finally:
        for node, args in zip(nodes, originals):
            node.args = args
        module.recompile()
    return True


class _SummedSoftmax(nn.Module):
    """A partial merge's tuple of logits as one score per class: the sum of the softmaxes."""

    def __init__(self, partial: nn.Module):
        super().__init__()
        self.partial = partial

    def forward(self, x):
        return sum(torch.softmax(out, 1) for out in self.partial(x))


def run_pair(a, b, data, cal, methods: dict, log) -> dict:
    """Every sweep point of one pair: {"one_model": n, "points": [row, ...]}, each row with
    "stop_at", "layers", "merged", "params" (ParameterCount) and per method "scores"."""
    layers, points = sweep_points(a, cal[0][:2])
    one = sum(p.numel() for p in a.parameters())
    rows = [
        {
            "stop_at": "(nothing: ensemble)",
            "merged": 0,
            "params": {"trunk": 0, "tail0": one, "tail1": one, "total": 2 * one},
            "scores": {m: ensemble_evaluate([a, b], data) for m in methods},
        }
    ]
    for stop, _ in points:
        row = {"stop_at": stop, "scores": {}}
        for label, options in methods.items():
            part = gm.merge([a, b], cal, method="mudsc", stop_at=stop, progress=False, **options)
            row["merged"] = merged_layers(part, layers)
            row["params"] = dict(count_parameters(part))
            row["scores"][label] = evaluate(_SummedSoftmax(part), data)
            if reset_partial_bn(part, cal):
                row["scores"][f"{label}, tails' BN reset"] = evaluate(_SummedSoftmax(part), data)
        rows.append(row)
    full = {"stop_at": "(full merge)", "merged": len(layers), "scores": {}}
    for label, options in methods.items():
        merged = gm.merge([a, b], cal, method="mudsc", progress=False, **options)
        full["params"] = dict(count_parameters(merged))
        full["scores"][label] = evaluate(merged, data)
    rows.append(full)
    columns = list(dict.fromkeys(m for row in rows for m in row["scores"]))
    for row in rows:  # the ends have no tails: a reset changes nothing there
        for m in columns:
            row["scores"].setdefault(m, row["scores"][m.split(", tails'")[0]])
        log(
            f"    {row['stop_at']}: {row['merged']}/{len(layers)} layers, "
            f"{row['params']['total'] / one:.2f}x params, joint "
            + ", ".join(f"{m} {100 * s['joint']:.1f}" for m, s in row["scores"].items())
        )
    return {"one_model": one, "layers": layers, "columns": columns, "points": rows}


def run(
    archs,
    pairs: int,
    quick: bool,
    methods: dict,
    cache: Path,
    log=print,
    dataset="mnist",
    epochs=None,
) -> dict:
    """{arch: [per-pair run_pair result]}."""
    results: dict = {}
    for arch in archs:
        for pair in range(pairs):
            log(f"{arch} pair {pair}")
            (a, b), data, cal, _, _ = pair_setup(arch, dataset, pair, quick, cache, epochs, log)
            results.setdefault(arch, []).append(run_pair(a, b, data, cal, methods, log))
    return results


def tables(results: dict) -> list[str]:
    """Markdown: one table per arch, one row per stop point, mean ± std over pairs."""
    lines = []
    for arch, pairs in results.items():
        n, one, columns = len(pairs[0]["layers"]), pairs[0]["one_model"], pairs[0]["columns"]
        lines += [
            (
                f"#### {arch} ({n} weight layers, {one:,} parameters per model, "
                f"{len(pairs)} pair{'s' if len(pairs) > 1 else ''})"
            ),
            "",
            "| stop_at | layers merged | parameters (shared + tails) | × one model | "
            + " | ".join(f"{m}: joint / per-task" for m in columns)
            + " |",
            "|---|---|---|---|" + "---|" * len(columns),
        ]
        for k, row in enumerate(pairs[0]["points"]):
            params = row["params"]
            cells = []
            for m in columns:
                joint = np.array([p["points"][k]["scores"][m]["joint"] for p in pairs]) * 100
                task = np.mean([p["points"][k]["scores"][m]["per_task"] for p in pairs]) * 100
                cells.append(f"{joint.mean():.1f} ± {joint.std():.1f} / {task:.1f}")
            lines.append(
                f"| {row['stop_at']} | {row['merged']}/{n} ({row['merged'] / n:.0%}) "
                f"| {params['trunk']:,} + {params['tail0']:,} + {params['tail1']:,} "
                f"| {params['total'] / one:.2f} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    return lines


def plot(results: dict, path: Path, log=print) -> Path | None:
    """Joint accuracy (mean over pairs, error bar = std) against parameters / one model."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: skipping the plot (pip install matplotlib)")
        return None
    fig, axes = plt.subplots(2, len(results), figsize=(5.4 * len(results), 7.6), squeeze=False)
    for col, (arch, pairs) in enumerate(results.items()):
        rows, one = pairs[0]["points"], pairs[0]["one_model"]
        xs = (
            [r["params"]["total"] / one for r in rows],
            [100 * r["merged"] / len(pairs[0]["layers"]) for r in rows],
        )
        for m in pairs[0]["columns"]:
            joint = np.array([[r["scores"][m]["joint"] * 100 for r in p["points"]] for p in pairs])
            for ax, x in zip((axes[0][col], axes[1][col]), xs):
                ax.errorbar(x, joint.mean(0), yerr=joint.std(0), fmt="o-", ms=4, capsize=2, label=m)
        axes[0][col].set_title(f"{arch} ({len(pairs)} pairs)", fontsize=10)
        axes[0][col].set_xlabel("parameters of the partial model (× one model)")
        axes[0][col].invert_xaxis()
        axes[1][col].set_xlabel("layers merged (% of the weight layers; 0 = ensemble)")
        for row in (0, 1):
            axes[row][col].set_ylabel("joint accuracy (%)")
        axes[1][col].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_arguments(parser, ARCHS, "partial")
    parser.add_argument("--refine", action="store_true", help='also refine="least_squares"')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = METHODS if args.refine else {"MuDSC zip": {}}
    log = lambda m: print(m, file=sys.stderr, flush=True)
    start = time.perf_counter()
    results = run(
        args.archs.split(","),
        args.pairs,
        not args.full,
        methods,
        args.cache,
        log,
        args.dataset,
        args.epochs,
    )
    seconds = time.perf_counter() - start
    _, header = run_header("partial_sweep", argv, args)
    header += f"; {seconds:.0f} s. Joint accuracy in %, mean ± std over pairs / per-task average."
    markdown = "\n".join([header, "", *tables(results)])
    payload = {"date": str(datetime.date.today()), "seconds": seconds, "results": results}
    save_results(args, markdown, payload)
    if not args.no_plots:
        path = plot(results, args.out / f"{args.name}.png", log)
        if path is not None:
            log(f"wrote {path}")
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
