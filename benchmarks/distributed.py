"""Statistics across processes (issue 13): merge time by stage with 1 and 2 gloo processes.

    OMP_NUM_THREADS=1 python -m benchmarks.distributed                  # quick pairs, 1 and 2
    python -m benchmarks.distributed --pairs gpt2 --size full --nproc 1,2,4 --write

For each pair of benchmarks/scale_models.py (GPT-2 and ResNet-20x4 by default, at the "quick"
size: the full ones take a quarter of an hour per merge on this 2-core machine), the merge runs
on N worker processes (graphmerge.launch.run_workers: gloo, one torch thread each), rank r
reading calibration batches r, r+N, ... Rank 0 reports each stage's seconds (program.timings; a
stage ends on every rank together, at its last collective), the wall time of `gm.merge`, and a
hash of the assignments, which must be the same for every N. `--repeat` runs the process counts
interleaved (1, 2, 1, 2, ...): the machine may be shared. `statistics s` is reset_bn +
collect_features: the stages that read the calibration data, the ones that scale with it;
`CPU s per rank` is the CPU time each rank spent in them (process time: what the work split
gives, whatever else the machine runs; waiting in a collective costs none).

`--write` saves benchmarks/results/distributed.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("trace", "verify_groups", "reset_bn", "collect_features", "solve_groups", "rewrite")

__all__ = ["main", "measure"]


def _digest(assignments) -> str:
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(assignments):
        for t in assignments[name].targets:
            h.update(name.encode() + t.tobytes())
    return h.hexdigest()


def _time_cpu(cpu: dict) -> None:
    """Record each statistics pass's CPU seconds of this process in `cpu` (wraps the entries
    of the pipeline list `gm.merge` runs)."""
    import dataclasses

    from graphmerge.passes import PIPELINE

    def timed(fn, name):
        def run(program):
            start = time.process_time()
            try:
                return fn(program)
            finally:
                cpu[name] = time.process_time() - start

        return run

    for i, p in enumerate(PIPELINE):
        if p.name in ("reset_bn", "collect_features"):
            PIPELINE[i] = dataclasses.replace(p, fn=timed(p.fn, p.name))


def _worker(pair: str, size: str, method: str, batches: int, out: str) -> None:
    import torch.distributed as dist

    import graphmerge as gm
    from benchmarks.scale_models import PAIRS, build_pair, calibration
    from graphmerge.launch import shard

    rank, nproc = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    models = build_pair(pair, size)
    spec = PAIRS[pair].sizes[size]
    data = calibration(pair, size, (batches, spec.batch, spec.seq))
    mine = shard(data, rank, nproc)
    cpu: dict[str, float] = {}
    _time_cpu(cpu)
    start = time.perf_counter()
    _, program = gm.merge(models, mine, method=method, progress=False, return_program=True)
    total = time.perf_counter() - start
    Path(out).with_suffix(f".cpu{rank}").write_text(json.dumps(sum(cpu.values())))
    if rank == 0:
        row = {
            "pair": pair,
            "size": size,
            "method": method,
            "nproc": nproc,
            "batches": len(data),
            "calibration": f"{len(data)} batches of {spec.batch} x {spec.seq}",
            "stage_s": {k: program.timings.get(k, 0.0) for k in STAGES},
            "total_s": total,
            "assignments": _digest(program.assignments),
            "loadavg": os.getloadavg()[0],
        }
        Path(out).write_text(json.dumps(row))


def measure(pair: str, size: str, method: str, nproc: int, batches: int) -> dict:
    """One merge on `nproc` processes (one thread each); rank 0's row."""
    from graphmerge.launch import run_workers

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "row.json")
        codes = run_workers(_worker, nproc, (pair, size, method, batches, out), threads=1)
        if any(codes):
            return {"pair": pair, "nproc": nproc, "status": f"failed: exit codes {codes}"}
        cpu = [json.loads(Path(out).with_suffix(f".cpu{r}").read_text()) for r in range(nproc)]
        return {**json.loads(Path(out).read_text()), "status": "ok", "statistics_cpu_s": cpu}


def markdown(rows: list[dict], command: str) -> str:
    """The results table; a row's speed-up is its statistics time against the 1-process row
    before it (process counts run interleaved, so both saw about the same machine load)."""
    lines = [
        (
            f"`{command}` on {datetime.date.today()}, {platform.platform()}, {os.cpu_count()} "
            "cores, one torch thread per process, gloo. Wall-clock seconds on a machine shared "
            "with other jobs (the 1-minute load average when each merge ended is its own column)."
        ),
        "",
        "| pair | calibration | method | processes | statistics s | speed-up | CPU s per rank | "
        + " | ".join(STAGES)
        + " | merge s | assignments | load |",
        "|---|---|---|---:|---:|---:|---|" + "---:|" * len(STAGES) + "---:|---|---:|",
    ]
    base: dict[tuple, float] = {}
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['pair']} | | | {r['nproc']} | {r['status']} |")
            continue
        stats = r["stage_s"]["reset_bn"] + r["stage_s"]["collect_features"]
        key = (r["pair"], r["method"], r["calibration"])
        if r["nproc"] == 1:
            base[key] = stats
        speed = f"{base[key] / stats:.2f}×" if key in base and stats else "—"
        stages = " | ".join(f"{r['stage_s'][s]:.2f}" for s in STAGES)
        lines.append(
            f"| {r['pair']} ({r['size']}) | {r['calibration']} | {r['method']} | {r['nproc']} | "
            f"{stats:.2f} | {speed} | {' / '.join(f'{c:.2f}' for c in r['statistics_cpu_s'])} | "
            f"{stages} | {r['total_s']:.2f} | `{r['assignments']}` | "
            f"{r['loadavg']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="gpt2,resnet20x4")
    parser.add_argument("--size", default="quick", choices=["full", "quick", "tiny"])
    parser.add_argument("--method", default="mudsc")
    parser.add_argument("--nproc", default="1,2", help="process counts, e.g. 1,2")
    parser.add_argument("--batches", type=int, default=8, help="calibration batches (all ranks)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each process count")
    parser.add_argument("--write", action="store_true", help="save benchmarks/results/")
    args = parser.parse_args(argv)
    rows = []
    for pair in args.pairs.split(","):
        for _ in range(args.repeat):
            for n in (int(v) for v in args.nproc.split(",")):
                rows.append(measure(pair, args.size, args.method, n, args.batches))
                print(json.dumps(rows[-1]), flush=True)
    command = "python -m benchmarks.distributed " + " ".join(sys.argv[1:] if argv is None else argv)
    table = markdown(rows, command.strip())
    print(table)
    if args.write:
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / "distributed"
        stem.with_suffix(".md").write_text(table)
        stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
