"""What the benchmarks over benchmarks.run's trained MNIST/digits pairs share on the command line
and in their output files (benchmarks.barrier, benchmarks.partial_sweep)."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent


def add_pair_arguments(parser: argparse.ArgumentParser, archs: list[str], name: str) -> None:
    """--full, --archs, --pairs, --threads, --dataset, --epochs, --out, --name, --cache and
    --no-plots, with `archs` and `name` as the defaults of --archs and --name."""
    parser.add_argument("--full", action="store_true", help="benchmarks.run's full settings")
    parser.add_argument("--archs", default=",".join(archs))
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "digits"])
    parser.add_argument("--epochs", type=int, default=None, help="override every arch's epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--name", default=name)
    parser.add_argument("--cache", type=Path, default=ROOT / "cache")
    parser.add_argument("--no-plots", action="store_true")


def run_header(module: str, argv, args: argparse.Namespace) -> tuple[str, str]:
    """(the command as typed, the start of a results header: command, date, machine, torch,
    threads, dataset, settings and pairs) for `python -m benchmarks.<module>`."""
    words = argv if argv is not None else sys.argv[1:]
    command = f"python -m benchmarks.{module} {' '.join(words)}".strip()
    header = (
        f"`{command}` on {datetime.date.today()}, {platform.machine()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s), {args.dataset}, "
        f"{'full' if args.full else 'quick'} settings, {args.pairs} pair(s) per arch"
    )
    return command, header


def save_results(args: argparse.Namespace, markdown: str, payload: dict) -> None:
    """Write <out>/<name>.md and <out>/<name>.json."""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(markdown + "\n")
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=1))
