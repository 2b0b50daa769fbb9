"""What the analysis costs per model, and what share of it the self-check takes.

    python -m benchmarks.analysis_speed                    # every zoo model + 12-layer BERT
    python -m benchmarks.analysis_speed --models mlp,vgg --repeats 1

For every model of the zoo (tests/zoo.py, on its example inputs) and a 12-layer
BertForSequenceClassification (hidden 128, 4 heads, FFN 512, random init from a config, batch 8 x
seq 32), `gm.analyze` is timed by phase: trace = torch.export, infer = axis annotation + group
inference, verify = the self-check (float64 forwards with every free group permuted, bisection on
failure). verify share = verify / (trace + infer). The fastest of `--repeats` runs (by wall clock)
is shown. Prints the command, date, machine and a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


_ROOT = Path(__file__).resolve().parents[1]
_TESTS = str(_ROOT / "tests")
if _TESTS not in sys.path:  # the zoo lives with the tests
    sys.path.insert(0, _TESTS)

from benchmarks.merge_speed import bert_batches, blas_threads, limit_threads
from benchmarks.trace_depth import build_model as build_bert
from benchmarks.trace_depth import machine

BERT = "bert12"


def models() -> dict:
    """name -> (build, example inputs)."""
    from zoo import ZOO

    out = {name: (e.build, e.example) for name, e in ZOO.items()}
    out[BERT] = (lambda: build_bert(12, 128, 4), lambda: bert_batches(1)[0])
    return out


def measure(name: str, repeats: int) -> dict:
    import graphmerge as gm

    build, example = models()[name]
    model, inputs = build(), example()
    params = sum(p.numel() for p in model.parameters())
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cumsum: the op without a rule warns
            analysis = gm.analyze(model, inputs)
        runs.append((time.perf_counter() - start, analysis))
    wall, analysis = min(runs, key=lambda r: r[0])
    frozen = sum(1 for g in analysis.groups if g.frozen)
    return {
        "model": name,
        "params": params,
        "trace": analysis.trace_seconds,
        "infer": analysis.infer_seconds,
        "verify": analysis.verify_seconds,
        "forwards": analysis.program.timings.get("verify_forwards", 0),
        "total": wall,
        "groups": len(analysis.groups),
        "free": len(analysis.groups) - frozen,
        "walls": [r[0] for r in runs],
    }


COLUMNS = [
    "model",
    "params",
    "groups",
    "free",
    "trace s",
    "infer s",
    "verify s",
    "verify forwards",
    "total s",
    "verify / (trace + infer)",
]


def table(rows: list[dict]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(COLUMNS) - 1)) + "|",
    ]
    for r in rows:
        params = f"{r['params'] / 1e6:.2f}M" if r["params"] >= 1e5 else f"{r['params'] / 1e3:.1f}k"
        share = r["verify"] / (r["trace"] + r["infer"])
        lines.append(
            f"| {r['model']} | {params} | {r['groups']} | {r['free']} | {r['trace']:.4f} "
            f"| {r['infer']:.4f} | {r['verify']:.4f} | {r['forwards']} | {r['total']:.4f} "
            f"| {100 * share:.0f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    known = models()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.analysis_speed", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--models",
        default=",".join(known),
        help=f"comma-separated (default: all zoo models and {BERT})",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per model; fastest shown")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and BLAS (numpy/scipy) threads (default: their own)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        limit_threads(args.threads)
    names = [m for m in args.models.split(",") if m]
    for m in names:
        if m not in known:
            parser.error(f"unknown model {m!r}; choose from {', '.join(known)}")

    import graphmerge as gm

    command = "python -m benchmarks.analysis_speed" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    print(f"command: `{command}`")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(
        f"setting: gm.analyze on each zoo model's example inputs; {BERT} = "
        f"BertForSequenceClassification 12 layers, hidden 128, 4 heads, FFN 512, batch 8 x "
        f"seq 32; best of {args.repeats}; BLAS threads: {blas_threads()}; load average "
        f"{os.getloadavg()[0]:.1f}\n",
        flush=True,
    )

    build, example = known["mlp"]
    gm.analyze(build(), example())  # warm-up: lazy imports out of the first row

    rows = []
    start = time.perf_counter()
    for name in names:
        row = measure(name, args.repeats)
        rows.append(row)
        print(
            f"  {name:18s} total {row['total']:.3f}s (trace {row['trace']:.3f}, infer "
            f"{row['infer']:.3f}, verify {row['verify']:.3f}); runs "
            f"{', '.join(f'{w:.3f}' for w in row['walls'])}",
            file=sys.stderr,
            flush=True,
        )
    print(table(rows))
    trace = sum(r["trace"] for r in rows)
    infer = sum(r["infer"] for r in rows)
    verify = sum(r["verify"] for r in rows)
    print(
        f"\nsum over models: trace {trace:.3f}s, infer {infer:.3f}s, verify {verify:.3f}s "
        f"(verify = {100 * verify / (trace + infer):.0f}% of trace + infer). benchmark wall "
        f"{time.perf_counter() - start:.0f}s; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
