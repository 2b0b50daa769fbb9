"""Seconds and peak memory of the matchers at real-model sizes (N = 2 models).

    OMP_NUM_THREADS=1 python -m benchmarks.matcher_speed                 # every case
    OMP_NUM_THREADS=1 python -m benchmarks.matcher_speed --sizes 768,3072 --matchers zip

Similarity matrices are correlation-like: the Pearson correlation over `--samples` samples of
random features where half of model 1's units are noisy copies of model 0's units (permuted; for
the grouped matchers, heads permuted and units permuted within heads) and the rest independent.
Sizes are units per model n (the matrix is 2n x 2n, float64: 1.2 GB at n = 6,144): GPT-2 small
has a 768-unit residual stream, 3,072-unit MLPs and 12 heads x 64; a ~1B Llama 2,048/5,632-6,144
and 16+ heads x 128.

Per case: seconds of the fastest of `--repeats` calls, as wall clock and as CPU time of the
process (with one thread they agree on an idle machine; CPU time is the steadier figure on a
busy one), and the peak of memory allocated during one more call above what was allocated
before it (tracemalloc: numpy reports its buffers to it), the returned Match included, in MiB
and as a multiple of the size of S. Before the first case the process writes and frees
`--warm-gb` GB once: on a virtual machine the first touch of memory the guest has never used
costs seconds per GB, which would otherwise be charged to whichever case allocates first.
Prints the command, machine and a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from benchmarks.merge_speed import blas_threads, limit_threads
from benchmarks.trace_depth import machine
from graphmerge.passes.matchers import (
    grouped_permute_match,
    grouped_zip_match,
    permute_match,
    zip_match,
)

SIZES = (768, 3072, 6144)
HEADS = ((12, 64), (16, 128))  # (groups, units per group)


def similarity(n: int, groups: int = 1, samples: int = 256, seed: int = 0) -> np.ndarray:
    """A correlation matrix (2n, 2n) of two models' features with planted (grouped) matches."""
    rng = np.random.default_rng(seed)
    og = n // groups
    heads = rng.permutation(groups)
    source = np.concatenate([heads[g] * og + rng.permutation(og) for g in range(groups)])
    x0 = rng.standard_normal((n, samples))
    x1 = rng.standard_normal((n, samples))
    copied = rng.random(n) < 0.5
    x1[copied] = x0[source[copied]] + 0.5 * rng.standard_normal((int(copied.sum()), samples))
    x = np.concatenate([x0, x1])
    x -= x.mean(axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def cases(sizes: list[int], matchers: list[str]) -> list[tuple[str, str, int, Callable]]:
    """(matcher label, shape label, groups, f(S) -> Match) for every requested case."""
    plain = {
        "permute": lambda S: permute_match(S, 2),
        "zip": lambda S: zip_match(S, 2),
        "zip a=0.3 b=0.125": lambda S: zip_match(S, 2, a=0.3, b=0.125),
    }
    grouped = {
        "grouped permute": lambda g: lambda S: grouped_permute_match(S, 2, g),
        "grouped zip": lambda g: lambda S: grouped_zip_match(S, 2, g),
    }
    out = []
    for name, fn in plain.items():
        if name.split()[0] in matchers:
            out += [(name, f"{n}", 1, fn) for n in sizes]
    for name, make in grouped.items():
        if name.split()[1] in matchers and "grouped" in matchers:
            out += [(name, f"{g} x {og}", g, make(g)) for g, og in HEADS]
    return out


def measure(fn: Callable, S: np.ndarray, repeats: int = 1) -> tuple[float, float, float]:
    """(wall and CPU seconds of the fastest of `repeats` calls, peak MiB allocated during one
    more call)."""
    wall = cpu = np.inf
    for _ in range(repeats):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(S)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn(S)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return wall, cpu, peak / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="units per model")
    parser.add_argument(
        "--matchers", default="permute,zip,grouped", help="any of permute, zip, grouped"
    )
    parser.add_argument("--samples", type=int, default=256, help="samples per feature")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per case")
    parser.add_argument("--warm-gb", type=float, default=4.0, help="memory touched first")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    np.ones(int(args.warm_gb * 2**27))  # 8-byte entries: touch, then free, warm_gb GB
    sizes = [int(s) for s in args.sizes.split(",")]
    matchers = args.matchers.split(",")
    zip_match(similarity(8), 2)  # warm-up: imports and first calls
    rows = []
    for name, shape, groups, fn in cases(sizes, matchers):
        n = int(np.prod([int(p) for p in shape.split(" x ")]))
        S = similarity(n, groups, args.samples)
        wall, cpu, peak = measure(fn, S, args.repeats)
        ratio = peak * 2**20 / S.nbytes
        rows.append(f"| {name} | {shape} | {wall:.2f} | {cpu:.2f} | {peak:.0f} | {ratio:.2f} |")
        print(rows[-1], file=sys.stderr, flush=True)
        del S
    print(f"`{' '.join(['python -m benchmarks.matcher_speed'] + sys.argv[1:])}`")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{datetime.date.today()}; {machine()}; BLAS threads: {blas_threads()}; load {load}\n")
    print(
        "| matcher | units per model | seconds | CPU seconds | peak extra MiB | peak / size of S |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
