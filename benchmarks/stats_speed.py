"""Activation statistics (`collect_features`) against the forward passes they ride on.

    python -m benchmarks.stats_speed               # ResNet-20x4 (2,000 images), GPT-2 small
    python -m benchmarks.stats_speed --quick       # ResNet-20x4 on 400 images, 4-layer GPT-2
    python -m benchmarks.stats_speed --cases resnet20x4 --blocks all --merge
    python -m benchmarks.stats_speed --quick --precision   # + correlation error vs float64

Pairs (two models of one architecture, random init from seeds 0 and 1, eval mode):

- resnet20x4: benchmarks/models.py's ResNet20(width=4, in_ch=3) (64/128/256 channels),
  2,000 random 3x32x32 images in batches of 100 (--quick: 400).
- gpt2: `transformers.GPT2LMHeadModel(GPT2Config(n_layer=12, use_cache=False))` (GPT-2 small,
  LM head tied), 8 batches of 8 x 128 random token ids (--quick: gpt2-4L, 4 layers, 2 batches).

Each case runs in a fresh subprocess, one thread (torch and BLAS): it traces the model (not
timed), times the forward floor (plain eager forward passes of both models over the same data
under `torch.no_grad()`), `collect_features` with the given blocks, then the floor again; the
floor column shows both floor runs and the ratio uses their mean. Times are CPU seconds of the
process (one thread, so the work done, whatever else the machine runs), wall clock beside them.
Peak RSS: VmHWM reset to the current RSS just before `collect_features` (/proc/self/clear_refs),
shown as the peak and as its rise over the RSS at the start of `collect_features`. With
--merge, the ResNet case also times the whole `gm.merge` (mudsc zip and permute, reset_bn=False)
against the same floor. With --precision, the last
column is the largest |C - C64| over the correlation entries collect_features computes, on the
first 2 batches, C64 from float64 sums of the same captured activations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

_ROOT = Path(__file__).resolve().parents[1]

CASES = ("resnet20x4", "gpt2", "gpt2-4L")
ANALYSIS = ("trace", "annotate_axes", "infer_groups", "verify_groups")  # compile_program


def peak_rss() -> int:
    """VmHWM (peak resident set size) in bytes; 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def current_rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def build_pair(case: str, quick: bool) -> tuple[list, list, str]:
    """(models, batches, description) for `case`."""
    gen = torch.Generator().manual_seed(0)
    models = []
    if case == "resnet20x4":
        from benchmarks.models import ResNet20

        for seed in (0, 1):
            torch.manual_seed(seed)
            models.append(ResNet20(width=4, in_ch=3).eval())
        n = 4 if quick else 20
        data = [torch.randn(100, 3, 32, 32, generator=gen) for _ in range(n)]
        return models, data, f"{n * 100} images 3x32x32, batches of 100"
    from transformers import GPT2Config, GPT2LMHeadModel

    layers = 12 if case == "gpt2" else 4
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(GPT2LMHeadModel(GPT2Config(n_layer=layers, use_cache=False)).eval())
    n = 2 if quick else 8
    data = [torch.randint(0, 50257, (8, 128), generator=gen) for _ in range(n)]
    return models, data, f"{n} batches of 8x128 tokens"


def timed(fn) -> tuple[object, float, float]:
    """(fn(), CPU seconds of this process, wall seconds)."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def forward_floor(models, data) -> tuple[float, float]:
    """(CPU, wall) seconds of eager forward passes of every model over `data`."""

    def run():
        with torch.no_grad():
            for batch in data:
                for m in models:
                    m(batch)

    return timed(run)[1:]


def correlation_error(program, states: list, data: list, blocks: str) -> float:
    """Max |C - C64| over the entries `blocks` computes, C from collect_features on `data`, C64
    from float64 sums of the same captured activations (tests/passes/test_collect_features.py)."""
    import numpy as np

    sys.path[:0] = [str(_ROOT / "tests"), str(_ROOT / "tests" / "passes")]
    from test_collect_features import reference_moments

    moments = collect(program, states, data, blocks)
    worst = 0.0
    for name, ref in reference_moments(program, states, data).items():
        m = moments[name]
        got = m.correlation()
        n, size = len(m.total) // len(states), len(m.total)
        mask = np.ones((size, size), dtype=bool)
        if blocks == "cross":  # the blocks [model 0, model i] and the diagonal
            mask[n:, n:] = mask[:n, :n] = False
            mask[np.diag_indices(size)] = True
        worst = max(worst, float(np.abs(got - ref.correlation())[mask].max()))
    return worst


def collect(program, states: list, data: list, blocks: str) -> dict:
    """The moments `collect_features` accumulates (its data pass), for every free group."""
    from graphmerge.options import MergeOptions
    from graphmerge.passes.collect_features import collect_moments

    program.states, program.data = states, data
    program.options = MergeOptions(progress=False)
    moments, program.capture_plans = collect_moments(program, None, blocks)
    return moments


def run_case(case: str, blocks: str, quick: bool, merge: bool, precision: bool = False) -> dict:
    """One case in this process: floor, collect_features, floor (and gm.merge with --merge)."""
    import graphmerge as gm
    from graphmerge.api import compile_program

    torch.set_num_threads(1)
    models, data, what = build_pair(case, quick)
    params = sum(p.numel() for p in models[0].parameters())
    program = compile_program(models[0], data[0])
    states = [{k: v.detach() for k, v in m.state_dict().items()} for m in models]
    floors = [forward_floor(models, data)]
    start_rss = current_rss()
    reset_peak()
    _, cpu, wall = timed(lambda: collect(program, states, data, blocks))
    peak = peak_rss()
    floors.append(forward_floor(models, data))
    out = {"case": case, "data": what, "params": params, "blocks": blocks, "floors": floors}
    out |= {"collect": (cpu, wall), "peak": peak, "rise": max(0, peak - start_rss)}
    if precision:  # on the first 2 batches: the float64 reference holds N·units² per batch
        out["error"] = correlation_error(program, states, data[:2], blocks)
    if merge:
        for matcher in ("zip", "permute"):
            (_, prog), cpu, wall = timed(
                lambda m=matcher: gm.merge(
                    models,
                    data,
                    "mudsc",
                    matcher=m,
                    reset_bn=False,
                    progress=False,
                    return_program=True,
                )
            )
            out[f"merge_{matcher}"] = (cpu, wall)
            out[f"stages_{matcher}"] = dict(prog.timings)
    return out


def _child(args) -> None:
    sys.path.insert(0, str(_ROOT))
    from benchmarks.merge_speed import limit_threads

    limit_threads(1)
    print(json.dumps(run_case(args.child, args.blocks, args.quick, args.merge, args.precision)))


def _spawn(case: str, blocks: str, args, merge: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.stats_speed", "--child", case, "--blocks", blocks]
    cmd += ["--quick"] * args.quick + ["--merge"] * merge + ["--precision"] * args.precision
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=_ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{case} {blocks} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _seconds(pair) -> str:
    return f"{pair[0]:.1f} ({pair[1]:.1f})"


def table(rows: list[dict]) -> str:
    head = (
        "| pair | params | data | blocks | forward floor s, 2 runs: CPU (wall) "
        "| collect_features s: CPU (wall) | ratio | peak RSS GiB (rise MiB) "
        "| max abs corr error vs float64 |"
    )
    lines = [
        (
            "One thread (torch.set_num_threads(1), OMP/OpenBLAS/MKL 1 thread). Seconds are CPU "
            "time of the process (wall clock in parentheses: the machine may be shared); ratio = "
            "collect_features CPU / mean floor CPU."
        ),
        "",
        head,
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = sum(cpu for cpu, _ in r["floors"]) / len(r["floors"])
        floors = " / ".join(_seconds(f) for f in r["floors"])
        error = f"{r['error']:.1e}" if "error" in r else ""
        lines.append(
            f"| {r['case']} | {r['params'] / 1e6:.2f}M | {r['data']} | {r['blocks']} | {floors} "
            f"| {_seconds(r['collect'])} | {r['collect'][0] / floor:.2f}x "
            f"| {r['peak'] / 2**30:.2f} ({r['rise'] / 2**20:.0f}) | {error} |"
        )
        for matcher in ("zip", "permute"):
            if f"merge_{matcher}" in r:
                t, st = r[f"merge_{matcher}"], r[f"stages_{matcher}"]
                analysis = sum(v for k, v in st.items() if k in ANALYSIS)
                stages = (
                    f"wall: analysis {analysis:.1f}, collect {st.get('collect_features', 0):.1f}, "
                    f"solve {st.get('solve_groups', 0):.1f}, rewrite {st.get('rewrite', 0):.1f}"
                )
                lines.append(
                    f"| {r['case']} | | gm.merge mudsc {matcher}, reset_bn=False ({stages}) | "
                    f"| {floors} | {_seconds(t)} whole merge | {t[0] / floor:.2f}x | | |"
                )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", default=None, help=f"comma-separated, of {CASES}")
    parser.add_argument("--blocks", default="all,cross", help="comma-separated: all, cross")
    parser.add_argument("--merge", action="store_true", help="also time gm.merge (ResNet)")
    parser.add_argument(
        "--precision", action="store_true", help="max |corr - float64 corr| on 2 batches"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return
    default = ["resnet20x4", "gpt2-4L" if args.quick else "gpt2"]
    cases = args.cases.split(",") if args.cases else default
    modes = args.blocks.split(",")
    rows = []
    for case in cases:
        for i, blocks in enumerate(modes):
            merge = args.merge and case == "resnet20x4" and i == 0
            rows.append(_spawn(case, blocks, args, merge))
            print(f"done: {case} {blocks}", file=sys.stderr, flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
