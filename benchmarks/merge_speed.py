"""Where merge time goes: `gm.merge` of a model with a perturbed copy, per stage, against a floor.

    python -m benchmarks.merge_speed                       # 8 models x 5 methods, memory per case
    python -m benchmarks.merge_speed --quick               # iters 20 instead of gm.merge's 100
    python -m benchmarks.merge_speed --models resnet20_w16,bert12 --methods mudsc,zipit
    python -m benchmarks.merge_speed --memory off          # timings only (no subprocesses)

Each case merges a model with a copy of itself plus 0.1 * randn on every parameter (so matching
is not trivial) on calibration batches shaped like the model's example inputs (8 batches of 32
for the zoo models, 8 x seq 32 random token ids for BERT), with `reset_bn=True` and gm.merge's
`iters`/`patience` defaults. Columns:

- trace: torch.export + axis annotation + group inference; verify: the self-check forwards;
  collect: activation statistics; solve: the matching; rewrite: building the merged weights,
  loading them, and the BatchNorm resets (of the base copies and of the merged model);
  total: wall clock of the whole `gm.merge` call.
- floor: plain forward passes of the N models over the same calibration data under
  `torch.no_grad()` (best of 3), measured directly; total / floor is the overhead over that.
- py peak: `tracemalloc` peak during a second merge (Python objects and numpy arrays; torch tensor
  storage is not seen by tracemalloc). RSS delta: peak RSS after the merge minus before, in a
  fresh subprocess per case that first warms up on a tiny model, with the peak reset to the
  current RSS just before the merge (everything: torch storages, numpy, Python). The peak is
  VmHWM from /proc/self/status, which is what `getrusage(RUSAGE_SELF).ru_maxrss` reports minus
  the floor ru_maxrss inherits across exec from the spawning process (ru_maxrss where /proc is
  missing; psutil is not installed). Memory runs are separate from the timed run, so tracing
  does not slow the timings.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from graphmerge.batches import random_batches

_ROOT = Path(__file__).resolve().parents[1]
_TESTS = str(_ROOT / "tests")
if _TESTS not in sys.path:  # the zoo lives with the tests
    sys.path.insert(0, _TESTS)

from benchmarks.trace_depth import build_model as build_bert
from benchmarks.trace_depth import machine

DEFAULT_MODELS = (
    "resnet20_w16",
    "vgg",
    "vit_block",
    "mha_encoder",
    "groupnorm_resnet",
    "swiglu_rmsnorm",
    "unet",
    "bert12",
)
# name -> (gm.merge method, extra keyword arguments)
METHODS: dict[str, tuple[str, dict]] = {
    "mudsc": ("mudsc", {}),
    "mudsc-permute": ("mudsc", {"matcher": "permute"}),
    "zipit": ("zipit", {}),
    "activation_matching": ("activation_matching", {}),
    "weight_matching": ("weight_matching", {}),
}
QUICK_ITERS = 20
BERT_VOCAB = 1000


# ---------------------------------------------------------------------------------------------
# cases


_LIMITS = []


def limit_threads(n: int) -> None:
    """torch.set_num_threads(n), and n OpenBLAS/MKL threads for numpy and scipy (threadpoolctl,
    when installed): on a busy machine BLAS threads spin-waiting for a core make the solver's
    matrix products several times slower and the timings erratic."""
    torch.set_num_threads(n)
    try:
        import threadpoolctl
    except ImportError:
        return
    import scipy.linalg  # noqa: F401  (load every BLAS before limiting: scipy has its own)

    import graphmerge  # noqa: F401

    _LIMITS.append(threadpoolctl.threadpool_limits(n))


def blas_threads() -> str:
    try:
        import threadpoolctl
    except ImportError:
        return "unknown (no threadpoolctl)"
    info = threadpoolctl.threadpool_info()
    return ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in info) or "none"


def plain_init(model: torch.nn.Module) -> torch.nn.Module:
    """PyTorch's default init, as tests/test_merge.py's `_plain_init` (the zoo randomises biases
    and BN statistics to expose bugs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return model.eval()


def calibration(example, batches: int = 8, size: int = 32, seed: int = 100) -> list:
    """Random batches shaped like `example` (as tests/test_merge.py's `calibration`)."""
    return random_batches(example, batches, size, seed)


def bert_batches(batches: int, batch: int = 8, seq: int = 32, seed: int = 100) -> list:
    out = []
    for s in range(batches):
        gen = torch.Generator().manual_seed(seed + s)
        out.append(
            {
                "input_ids": torch.randint(0, BERT_VOCAB, (batch, seq), generator=gen),
                "attention_mask": torch.ones(batch, seq, dtype=torch.long),
            }
        )
    return out


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], torch.nn.Module]
    data: Callable[[int], list]  # batches -> calibration data
    describe: str


def cases() -> dict[str, Case]:
    from zoo import ZOO, ResNet20, _seeded

    out = {}
    for name, entry in ZOO.items():
        out[name] = Case(
            name,
            lambda e=entry: plain_init(e.build()),
            lambda n, e=entry: calibration(e.example(), n, 32),
            "batch 32",
        )
    out["resnet20_w16"] = Case(
        "resnet20_w16",
        lambda: plain_init(_seeded(ResNet20, width=16)()),
        lambda n: calibration(ZOO["resnet20"].example(), n, 32),
        "ResNet-20 width 16, batch 32",
    )
    out["bert12"] = Case(
        "bert12",
        lambda: build_bert(12, 128, 4),
        lambda n: bert_batches(n),
        "BertForSequenceClassification 12 layers, hidden 128, 4 heads, FFN 512; batch 8 x seq 32",
    )
    return out


def perturbed(model: torch.nn.Module, scale: float = 0.1, seed: int = 1) -> torch.nn.Module:
    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return twin


def call(model, batch):
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, tuple):
        return model(*batch)
    return model(batch)


def floor_seconds(models, data, repeats: int = 3) -> float:
    """Plain eval forwards of every model over the data, no_grad; best of `repeats`."""
    best = float("inf")
    for m in models:
        m.eval()
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            for m in models:
                for batch in data:
                    call(m, batch)
            best = min(best, time.perf_counter() - start)
    return best


def do_merge(models, data, method: str, args):
    import graphmerge as gm

    gm_method, kwargs = METHODS[method]
    kw = dict(kwargs, reset_bn=True, progress=False, return_program=True)
    if args.iters is not None:
        kw["iters"] = args.iters
    if args.patience is not None:
        kw["patience"] = args.patience
    return gm.merge(models, data, method=gm_method, **kw)


def warm_up(methods, args) -> None:
    """One tiny merge per method: lazy imports and first-call costs out of the measurements."""
    case = cases()["mlp"]
    model = case.build()
    models = [model, perturbed(model)]
    data = case.data(1)
    for method in methods:
        do_merge(models, data, method, args)


def _peak_rss_bytes() -> tuple[int, str]:
    """This process's peak RSS: VmHWM of /proc/self/status on Linux, else ru_maxrss.

    Not ru_maxrss on Linux: getrusage(RUSAGE_SELF).ru_maxrss is max(VmHWM, the RSS of the
    process image replaced by exec), so a child spawned by a big parent (this benchmark, after a
    BERT merge) reports the parent's RSS as its floor, and the reset below cannot lower it.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM"
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss if sys.platform == "darwin" else rss * 1024), "ru_maxrss"


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux: `echo 5 > clear_refs`).
    False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_in_process(models, data, method: str, args) -> dict:
    tracemalloc.start()
    try:
        do_merge(models, data, method, args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"py_peak": peak}


def child(spec: str, args) -> int:
    """`--child model:method`: one case in a fresh process; prints a JSON line of memory."""
    name, method = spec.split(":", 1)
    warm_up([method], args)
    case = cases()[name]
    model = case.build()
    models = [model, perturbed(model)]
    data = case.data(args.batches)
    gc.collect()
    reset = _reset_peak_rss()  # else the import's transient peak hides a small merge's
    before, _ = _peak_rss_bytes()
    do_merge(models, data, method, args)
    after, source = _peak_rss_bytes()
    out = {"rss_delta": after - before, "rss_peak": after, "rss_reset": reset, "rss_source": source}
    out.update(memory_in_process(models, data, method, args))
    print("MEMORY " + json.dumps(out), flush=True)
    return 0


def memory_subprocess(name: str, method: str, args) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.merge_speed",
        "--child",
        f"{name}:{method}",
        "--batches",
        str(args.batches),
    ]
    if args.iters is not None:
        cmd += ["--iters", str(args.iters)]
    if args.patience is not None:
        cmd += ["--patience", str(args.patience)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, cwd=_ROOT, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY ") :])
    print(
        f"  memory subprocess for {name}/{method} failed (rc {proc.returncode}):\n"
        f"{proc.stderr[-2000:]}",
        file=sys.stderr,
    )
    return {}


def measure(name: str, methods, args) -> list[dict]:
    case = cases()[name]
    model = case.build()
    models = [model, perturbed(model)]
    data = case.data(args.batches)
    params = sum(p.numel() for p in model.parameters())
    floor = floor_seconds(models, data)
    rows = []
    for method in methods:
        start = time.perf_counter()
        _, program = do_merge(models, data, method, args)
        total = time.perf_counter() - start
        t = program.timings
        row: dict[str, Any] = {
            "model": name,
            "params": params,
            "method": method,
            "trace": t.get("trace", 0.0) + t.get("annotate_axes", 0.0) + t.get("infer_groups", 0.0),
            "verify": t.get("verify_groups", 0.0),
            "collect": t.get("collect_features", 0.0),
            "solve": t.get("solve_groups", 0.0),
            "rewrite": t.get("rewrite", 0.0) + t.get("build_module", 0.0) + t.get("reset_bn", 0.0),
            "total": total,
            "floor": floor,
            "groups": len(program.free_groups()),
        }
        if args.memory == "subprocess":
            row.update(memory_subprocess(name, method, args))
        elif args.memory == "inprocess":
            row.update(memory_in_process(models, data, method, args))
        rows.append(row)
        print(
            f"  {name:18s} {method:20s} total {total:7.3f}s (trace {row['trace']:.3f}, verify "
            f"{row['verify']:.3f}, collect {row['collect']:.3f}, solve {row['solve']:.3f}, "
            f"rewrite {row['rewrite']:.3f}); floor {floor:.3f}s",
            file=sys.stderr,
            flush=True,
        )
    return rows


COLUMNS = [
    "model",
    "params",
    "free groups",
    "method",
    "trace s",
    "verify s",
    "collect s",
    "solve s",
    "rewrite s",
    "total s",
    "floor s",
    "total / floor",
    "py peak MiB",
    "RSS delta MiB",
]


def _mib(row: dict, key: str) -> str:
    if key not in row:
        return "-"
    mark = "*" if key == "rss_delta" and not row.get("rss_reset", True) else ""
    return f"{row[key] / 2**20:.1f}{mark}"


def table(rows: list[dict]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join([":---"] * 1 + ["---:"] * 2 + [":---"] + ["---:"] * 10) + "|",
    ]
    for r in rows:
        params = f"{r['params'] / 1e6:.2f}M" if r["params"] >= 1e5 else f"{r['params'] / 1e3:.1f}k"
        lines.append(
            f"| {r['model']} | {params} | {r['groups']} | {r['method']} | {r['trace']:.3f} "
            f"| {r['verify']:.3f} | {r['collect']:.3f} | {r['solve']:.3f} | {r['rewrite']:.3f} "
            f"| {r['total']:.3f} | {r['floor']:.3g} | {r['total'] / r['floor']:.1f} "
            f"| {_mib(r, 'py_peak')} | {_mib(r, 'rss_delta')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.merge_speed", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated: zoo names, resnet20_w16, bert12",
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}"
    )
    parser.add_argument("--quick", action="store_true", help=f"iters {QUICK_ITERS}")
    parser.add_argument("--iters", type=int, default=None, help="gm.merge iters (default: its own)")
    parser.add_argument(
        "--patience", type=int, default=None, help="gm.merge patience (default: its own)"
    )
    parser.add_argument("--batches", type=int, default=8, help="calibration batches")
    parser.add_argument(
        "--memory",
        choices=("subprocess", "inprocess", "off"),
        default="subprocess",
        help="subprocess: tracemalloc + peak-RSS delta in a fresh process per "
        "case; inprocess: tracemalloc only; off: timings only",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and BLAS (numpy/scipy) threads (default: their own)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        limit_threads(args.threads)
    if args.quick and args.iters is None:
        args.iters = QUICK_ITERS
    if args.child:
        return child(args.child, args)

    known = cases()
    models = [m for m in args.models.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]
    for m in models:
        if m not in known:
            parser.error(f"unknown model {m!r}; choose from {', '.join(sorted(known))}")
    for m in methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")

    import graphmerge as gm  # noqa: F401  (import time out of the first case)

    given = argv if argv is not None else sys.argv[1:]
    command = "python -m benchmarks.merge_speed" + (" " + " ".join(given) if given else "")
    print(f"command: `{command}`")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    iters = args.iters if args.iters is not None else "gm.merge default (100)"
    patience = args.patience if args.patience is not None else "gm.merge default (5)"
    print(
        f"setting: 2 models (model + copy with 0.1 * randn on every parameter), "
        f"{args.batches} calibration batches, reset_bn=True, iters {iters}, "
        f"patience {patience}; BLAS threads: {blas_threads()}; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    for m in models:
        print(f"- {m}: {known[m].describe}")
    if args.memory == "subprocess":
        print(
            "memory: py peak = tracemalloc peak (Python objects + numpy arrays, not torch "
            "storages) in a second merge; RSS delta = peak RSS after the merge - peak RSS "
            "just before it, in a fresh subprocess per case (after a warm-up merge of a tiny "
            "MLP), with the peak reset to the current RSS just before the merge (Linux "
            "/proc/self/clear_refs = 5). Peak RSS is VmHWM from /proc/self/status, i.e. "
            "getrusage(RUSAGE_SELF).ru_maxrss without the floor that ru_maxrss inherits "
            "across exec from the spawning (big) parent; ru_maxrss where /proc is missing. "
            "It counts all memory (torch, numpy, Python); * marks a case where the reset "
            "failed. psutil is not used (not installed)."
        )
    elif args.memory == "inprocess":
        print(
            "memory: py peak = tracemalloc peak in a second merge in this process "
            "(Python objects + numpy arrays, not torch storages); RSS not measured"
        )
    print(flush=True)

    warm_up(methods, args)
    rows = []
    start = time.perf_counter()
    for name in models:
        rows.extend(measure(name, methods, args))
    print(table(rows))
    print(
        f"\nstages: trace = export + annotate_axes + infer_groups; rewrite includes the "
        f"BatchNorm resets. benchmark wall {time.perf_counter() - start:.0f}s; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
