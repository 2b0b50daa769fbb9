"""Merging real-size models (issue 11): seconds and peak memory per merge stage, against the
forward passes of the two models over the same data, for pairs of GPT-2 small, BERT-base, a
Llama-style GQA/SwiGLU decoder, ResNet-50 and ResNet-20x4 (benchmarks/scale_models.py).

    python -m benchmarks.scale --quick                         # every pair cut down: minutes
    python -m benchmarks.scale --pairs gpt2,resnet20x4 --write # the full pairs, table committed
    python -m benchmarks.scale --pairs resnet50 --methods mudsc_zip,average --threads 2

Every (pair, method, reset_bn) runs in a fresh subprocess (`--timeout`, default 1800 s; a
resident-memory cap `--max-rss`, default what the machine has available minus 1 GiB), which
builds the two models from seeds 0 and 1, times the forward floor (plain eager forward passes
of both models over the calibration batches, under torch.no_grad(), after one untimed warm-up
batch per model), then runs `gm.merge(models, batches, method=..., return_program=True,
progress=False)` while a thread samples the process's RSS (benchmarks/memory.py). Per stage
(the pass names of `program.timings`): seconds, the ratio to the floor, and the peak RSS of the
whole process (models, data and libraries included: the RSS before the merge is its own column).
`peak/weights` is the peak RSS over the two models' float32 weights; `plan GB` is the merge
plan's own estimate (`program.memory_plan`) when the library makes one, else "—".

A case that times out, runs over the memory cap, leaves the machine under `--min-free` GB
available (default 0.75: the machine may be shared), is killed (the kernel's OOM killer) or raises
gets a row saying so, with the stage it had reached (read from the merge's running pass), its
RSS then, and the error's last line; the run goes on.

`--write` saves benchmarks/results/scale.md (or benchmarks/results/quick_scale.md with `--quick`)
and the raw rows as .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.scale_table import STAGES, header, markdown, save, time_row

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GB = 2**30

# name -> (gm.merge method, options)
METHODS: dict[str, tuple[str, dict]] = {
    "mudsc_zip": ("mudsc", {"matcher": "zip"}),
    "mudsc_permute": ("mudsc", {"matcher": "permute"}),
    "zipit": ("zipit", {}),
    "activation_matching": ("activation_matching", {}),
    "weight_matching": ("weight_matching", {}),
    "average": ("average", {}),
}
DEFAULT_METHODS = ("mudsc_zip", "mudsc_permute")
DEFAULT_PAIRS = ("gpt2", "bert", "llama", "resnet50", "resnet20x4")
# attribute names a memory plan's estimate (bytes) may go by, tried in order
PLAN_FIELDS = ("estimate_bytes", "estimated_bytes", "total_bytes", "peak_bytes", "bytes")

__all__ = ["METHODS", "STAGES", "Case", "cases", "markdown", "measure", "run", "run_case", "save"]


@dataclass(frozen=True)
class Case:
    """One merge to measure: pair name, method key (METHODS), size ("full", "quick", "tiny"),
    reset_bn, and `tokens` = (batches, batch, seq) overriding the pair's calibration shape."""

    pair: str
    method: str
    size: str = "full"
    reset_bn: bool = True
    tokens: tuple[int, int, int] | None = None


def cases(
    pairs, methods, size: str = "full", tokens: tuple[int, int, int] | None = None
) -> list[Case]:
    """Every (pair, method, reset_bn setting of the pair) at `size`."""
    from benchmarks.scale_models import PAIRS

    for name in pairs:
        if name not in PAIRS:
            raise SystemExit(f"unknown pair {name!r}; pairs: {', '.join(PAIRS)}")
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; methods: {', '.join(METHODS)}")
    return [
        Case(p, m, size, bn, tokens) for p in pairs for m in methods for bn in PAIRS[p].reset_bn
    ]


# --- in the measuring process -------------------------------------------------------------------


class _Watch(threading.Thread):
    """Every `interval` s: this process's RSS; kills the process when it passes `cap` bytes, or
    when the machine has less than `min_free` bytes available (other processes share it).
    Every ~0.5 s (and before such a kill): writes {phase, stage, where, rss, peak, elapsed} to
    `status_path` (JSON), so that the parent can tell where a killed or timed-out case was."""

    def __init__(
        self, status_path: str | None, cap: int | None, min_free: int = 0, interval: float = 0.02
    ):
        super().__init__(daemon=True)
        self.status_path, self.cap, self.interval = status_path, cap, interval
        self.min_free = min_free
        self.phase, self.peak, self.t0 = "start", 0, time.perf_counter()
        self.info: dict = {}  # what is known of the case so far (params, floor, ...)
        self.main = threading.main_thread().ident
        self.stop = threading.Event()

    def run(self) -> None:
        from benchmarks.memory import rss_bytes

        last = 0.0
        while not self.stop.wait(self.interval):
            rss = rss_bytes() or 0
            self.peak = max(self.peak, rss)
            over = "memory cap" if self.cap is not None and rss > self.cap else None
            if self.min_free and (available_bytes() or self.min_free) < self.min_free:
                over = "machine low on memory"
            if over or time.perf_counter() - last > 0.5:
                self.write(rss, over)
                last = time.perf_counter()
            if over:
                os.kill(os.getpid(), signal.SIGKILL)

    def write(self, rss: int, status: str | None = None) -> None:
        if not self.status_path:
            return
        record = {
            **self.info,
            **_running_pass(self.main),
            "phase": self.phase,
            "rss": rss,
            "peak": self.peak,
            "elapsed": time.perf_counter() - self.t0,
            "status": status,
        }
        tmp = self.status_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, self.status_path)


def _library_dirs() -> tuple[str, ...]:
    """The folders of graphmerge and its passes, once imported."""
    mods = [sys.modules.get(n) for n in ("graphmerge", "graphmerge.passes")]
    return tuple(str(Path(m.__file__).parent) + os.sep for m in mods if m and m.__file__)


def _running_pass(thread_id: int | None) -> dict:
    """Where that thread is in a merge: {"stage": the pass `run_passes` is running, "where":
    the innermost frame in graphmerge or its passes ('folder/file.py:function:line'), "stage_s":
    seconds of the passes already done}; an empty dict outside a merge."""
    frame = sys._current_frames().get(thread_id)
    dirs, out = _library_dirs(), {}
    while frame is not None:
        code = frame.f_code
        if "where" not in out and code.co_filename.startswith(dirs):
            out["where"] = "/".join(Path(code.co_filename).parts[-2:])
            out["where"] += f":{code.co_name}:{frame.f_lineno}"
        if code.co_name == "run_passes" and "stage" not in out:
            local = frame.f_locals
            out["stage"] = getattr(local.get("p"), "name", None)
            program = local.get("program")
            timings, spans = getattr(program, "timings", {}), getattr(program, "spans", {})
            out["stage_s"] = {k: float(v) for k, v in dict(timings).items() if k in spans}
        frame = frame.f_back
    return out


def _call(model, batch):
    return model(**batch) if isinstance(batch, dict) else model(batch)


def forward_floor(models, batches) -> list[float]:
    """Seconds of eager forward passes of each model over `batches` (no_grad; the first batch
    run once untimed first, to warm up thread pools and kernels)."""
    import torch

    out = []
    with torch.no_grad():
        for model in models:
            _call(model, batches[0])
            start = time.perf_counter()
            for b in batches:
                _call(model, b)
            out.append(time.perf_counter() - start)
    return out


def weights_bytes(models) -> int:
    """Bytes of the models' parameters and buffers (a tied parameter counted once)."""
    total = 0
    for m in models:
        seen = {id(t): t for t in list(m.parameters()) + list(m.buffers())}
        total += sum(t.numel() * t.element_size() for t in seen.values())
    return total


def plan_estimate(program) -> int | None:
    """The merge plan's memory estimate in bytes (`program.memory_plan`), or None without one."""
    plan = getattr(program, "memory_plan", None)
    if plan is None:
        return None
    if isinstance(plan, (int, float)):
        return int(plan)
    for name in PLAN_FIELDS:
        value = plan.get(name) if isinstance(plan, dict) else getattr(plan, name, None)
        if callable(value):
            value = value()
        if isinstance(value, (int, float)):
            return int(value)
    return None


def measure(case: Case, threads: int = 1, watch: _Watch | None = None) -> dict:
    """Build the pair, time the forward floor, merge under the RSS sampler; returns the row
    (see `markdown` for the fields it shows). Runs in the calling process."""
    method, options = METHODS[case.method]  # before the imports: a bad key fails at once
    import torch

    import graphmerge as gm
    from benchmarks.memory import RSSSampler, rss_bytes
    from benchmarks.scale_models import build_pair, calibration

    watch = watch or _Watch(None, None)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        watch.phase = "build models"
        models = build_pair(case.pair, case.size)
        batches = calibration(case.pair, case.size, case.tokens)
        watch.info = _describe(case, models, batches, threads)
        watch.phase = "forward floor"
        watch.info["loadavg"] = [os.getloadavg()[0]]
        floors = forward_floor(models, batches)
        watch.info.update(floor_s=sum(floors), floor_per_model_s=floors)
        gc.collect()
        watch.phase = "merge"
        with RSSSampler(interval=0.01) as rss:
            start = time.perf_counter()
            _, program = gm.merge(
                models,
                batches,
                method=method,
                return_program=True,
                progress=False,
                reset_bn=case.reset_bn,
                **options,
            )
            total = time.perf_counter() - start
        watch.phase = "done"
        watch.info["loadavg"].append(os.getloadavg()[0])
    finally:
        torch.set_num_threads(threads_before)
    base = rss.start_rss or 0
    mem = rss.per_stage(program.spans)
    return {
        **watch.info,
        "status": "ok",
        "stage_s": {k: float(v) for k, v in program.timings.items() if k in program.spans},
        "counters": {k: v for k, v in program.timings.items() if k not in program.spans},
        "stage_rss": {k: base + v * 2**20 for k, v in mem.items() if k != "peak"},
        "total_s": total,
        "rss_before": base,
        "peak_rss": base + mem.get("peak", 0.0) * 2**20,
        "rss_after": rss_bytes(),
        "plan_bytes": plan_estimate(program),
        "groups": len(program.free_groups()),
    }


def _describe(case: Case, models, batches, threads: int) -> dict:
    first = batches[0]["input_ids"] if isinstance(batches[0], dict) else batches[0]
    shape = "x".join(str(d) for d in first.shape[1:])
    unit = f"sequences of {shape} token ids" if first.dim() == 2 else f"images {shape}"
    return {
        **dataclasses.asdict(case),
        "params": sum(p.numel() for p in models[0].parameters()),
        "weights_bytes": weights_bytes(models),
        "calibration": f"{len(batches)} batches of {first.shape[0]} {unit}",
        "threads": threads,
    }


def _child(argv: list[str]) -> None:
    """`python -m benchmarks.scale --child CASE RESULT STATUS THREADS CAP MIN_FREE`: measure one
    case, write its row to RESULT."""
    spec, result, status, threads, cap, min_free = argv
    watch = _Watch(status, int(cap) or None, int(min_free))
    watch.start()
    fields = json.loads(spec)
    tokens = fields.pop("tokens")
    case = Case(**fields, tokens=tuple(tokens) if tokens else None)
    row = measure(case, int(threads), watch)
    row["vm_hwm"] = _vm_hwm()
    Path(result).write_text(json.dumps(row))
    watch.stop.set()


def _vm_hwm() -> int | None:
    """The process's peak RSS so far (VmHWM), bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- in the parent ------------------------------------------------------------------------------


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_case(
    case: Case,
    threads: int = 1,
    timeout: float = 1800,
    max_rss: int | None = None,
    min_free: int = 0,
) -> dict:
    """Measure `case` in a fresh subprocess (stopped after `timeout` s, at `max_rss` bytes of
    RSS, or when the machine has under `min_free` bytes available); returns its row, or a row
    with status "timeout", "memory cap", "machine low on memory", "killed" (by the kernel) or
    "error", with the stage reached, the RSS then and the error's last line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        result, status, log = (os.path.join(tmp, n) for n in ("row.json", "status.json", "log"))
        spec = json.dumps(dataclasses.asdict(case))
        argv = [sys.executable, "-m", "benchmarks.scale", "--child", spec, result, status]
        argv += [str(threads), str(max_rss or 0), str(min_free)]
        start = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
            )
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = "timeout"
            finally:  # on a timeout, and when the parent itself is interrupted
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        elapsed = time.perf_counter() - start
        if code == 0 and os.path.exists(result):
            return json.loads(Path(result).read_text())
        return _failure(case, code, threads, elapsed, _read_json(status), Path(log).read_text())


def _read_json(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _failure(case: Case, code, threads: int, elapsed: float, status: dict, log: str) -> dict:
    """The row of a case that did not finish."""
    if code == "timeout":
        kind = "timeout"
    elif status.get("status"):
        kind = status["status"]  # "memory cap", "machine low on memory"
    elif code == -signal.SIGKILL:
        kind = "killed"  # by the kernel's OOM killer, most likely
    else:
        kind = "error"
    lines = [line for line in log.splitlines() if line.strip()]
    meta = ("phase", "stage", "where", "status", "rss", "peak", "elapsed")
    known = {k: v for k, v in status.items() if k not in meta}
    return {
        **known,
        **dataclasses.asdict(case),
        "threads": threads,
        "status": kind,
        "returncode": code,
        "error": lines[-1].strip() if lines and kind == "error" else "",
        "reached": status.get("stage") or status.get("phase"),
        "where": status.get("where"),
        "rss_at_end": status.get("rss"),
        "peak_rss": status.get("peak"),
        "elapsed_s": elapsed,
    }


def run(
    todo: list[Case],
    threads: int = 1,
    timeout: float = 1800,
    max_rss: int | None = None,
    min_free: int = 0,
    isolate: bool = True,
    log=print,
) -> list[dict]:
    """Measure every case (each in its own subprocess, see `run_case`, unless isolate=False);
    returns the rows."""
    rows = []
    for case in todo:
        log(f"{case.pair} ({case.size}) {case.method} reset_bn={case.reset_bn} ...")
        if isolate:
            row = run_case(case, threads, timeout, max_rss, min_free)
        else:
            row = measure(case, threads)
        row["date"] = str(datetime.date.today())
        rows.append(row)
        log(f"  {row['status']}: {time_row(row)}")
    return rows


def main(argv=None) -> None:
    if argv is None and sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=",".join(DEFAULT_PAIRS))
    parser.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help=f"from {','.join(METHODS)}"
    )
    parser.add_argument("--quick", action="store_true", help="the cut-down pairs (minutes)")
    parser.add_argument("--size", choices=["full", "quick", "tiny"], default=None)
    parser.add_argument("--tokens", default=None, help="BATCHESxBATCHxSEQ, e.g. 8x8x128")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    parser.add_argument("--max-rss", type=float, default=None, help="GB per case")
    parser.add_argument(
        "--min-free", type=float, default=0.75, help="stop a case when the machine has less (GB)"
    )
    parser.add_argument("--write", action="store_true", help="save to benchmarks/results/")
    parser.add_argument(
        "--render", type=Path, default=None, metavar="JSON", help="rewrite JSON's .md and exit"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        print(save(saved["rows"], saved["header"], args.render.with_suffix(""), keep=False))
        return
    size = args.size or ("quick" if args.quick else "full")
    tokens = tuple(int(n) for n in args.tokens.lower().split("x")) if args.tokens else None
    todo = cases(args.pairs.split(","), args.methods.split(","), size, tokens)
    avail = available_bytes()
    cap = int(args.max_rss * GB) if args.max_rss else (avail - GB if avail else None)
    text = " ".join(sys.argv[1:] if argv is None else argv)
    free = int(args.min_free * GB)
    rows = run(todo, args.threads, args.timeout, cap, free, log=lambda m: print(m, file=sys.stderr))
    top = header(text, args.threads, (cap, free), args.timeout, rows)
    print(markdown(rows, top))
    if args.write:
        path = save(rows, top, RESULTS / ("scale" if size == "full" else f"{size}_scale"))
        print(f"wrote {path} and its .json", file=sys.stderr)


if __name__ == "__main__":
    main()
