"""The scale benchmark's tables (benchmarks/scale.py): one row per (pair, method, reset_bn)
with seconds per merge stage, the forward floor, totals and memory; per stage the ratio to the
floor and the peak RSS; the cases that did not finish; and `save`, which writes them to
benchmarks/results/ keeping the rows of earlier runs that were not measured again."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

__all__ = ["STAGES", "TIME_COLUMNS", "header", "label", "markdown", "save", "time_row"]

GB = 2**30
STAGES = [
    "trace",
    "annotate_axes",
    "infer_groups",
    "verify_groups",
    "plan_merge",
    "reset_bn",
    "collect_features",
    "solve_groups",
    "rewrite",
    "build_module",
]


def _gb(n) -> str:
    return "—" if n is None else f"{n / GB:.2f}"


def _params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def _sec(s) -> str:
    return "—" if s is None else f"{s:.2f}" if s < 10 else f"{s:.0f}"


def _ratio(a, b) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


def label(row: dict) -> str:
    """The pair's name, its size unless full, and for conv nets whether BatchNorm is reset."""
    from benchmarks.scale_models import PAIRS

    size = "" if row["size"] == "full" else f" ({row['size']})"
    if PAIRS[row["pair"]].kind != "images":
        return row["pair"] + size
    return f"{row['pair']}{size}, bn {'reset' if row['reset_bn'] else 'kept'}"


def time_row(row: dict) -> str:
    stages = row.get("stage_s", {})
    floor, total = row.get("floor_s"), row.get("total_s")
    peak, weights = row.get("peak_rss"), row.get("weights_bytes")
    cells = [
        label(row),
        row["method"],
        row["status"],
        _params(row.get("params")),
        _gb(weights),
        _sec(floor),
        *[_sec(stages.get(s)) for s in STAGES],
        _sec(total),
        _ratio(total, floor),
        _gb(row.get("rss_before")),
        _gb(peak),
        _ratio(peak, weights),
        _gb(row.get("plan_bytes")),
    ]
    return "| " + " | ".join(cells) + " |"


def _stage_row(row: dict) -> str:
    stages, rss, floor = row.get("stage_s", {}), row.get("stage_rss", {}), row.get("floor_s")
    cells = [
        f"{_ratio(stages.get(s), floor)} · {_gb(rss.get(s))}" if s in stages else "—"
        for s in STAGES
    ]
    return f"| {label(row)} | {row['method']} | " + " | ".join(cells) + " |"


def _failure_line(row: dict) -> str:
    where = f" ({row['where']})" if row.get("where") else ""
    text = (
        f"- {label(row)}, {row['method']}: **{row['status']}** after "
        f"{row['elapsed_s']:.0f} s in {row.get('reached') or '?'}{where}, "
        f"RSS {_gb(row.get('rss_at_end'))} GB (peak {_gb(row.get('peak_rss'))} GB)"
    )
    return text + (f": `{row['error']}`" if row.get("error") else "")


TIME_COLUMNS = (
    ["pair", "method", "status", "params", "weights GB", "floor s"]
    + STAGES
    + ["total s", "total/floor", "RSS before GB", "peak RSS GB", "peak/weights", "plan GB"]
)


def markdown(rows: list[dict], header: str = "") -> str:
    """The Markdown tables: seconds per stage (and totals, memory), then per stage the ratio
    to the floor and the peak RSS, then the cases that did not finish."""
    lines = [header, ""] if header else []
    lines += ["| " + " | ".join(TIME_COLUMNS) + " |", "|" + "---|" * len(TIME_COLUMNS)]
    lines += [time_row(r) for r in rows]
    lines += ["", "Per stage: time / floor · peak RSS GB of the process during the stage", ""]
    lines += ["| pair | method | " + " | ".join(STAGES) + " |", "|" + "---|" * (len(STAGES) + 2)]
    lines += [_stage_row(r) for r in rows if r["status"] == "ok"]
    failed = [_failure_line(r) for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "Did not finish:", ""] + failed
    calib = sorted({f"{r['pair']}: {r['calibration']}" for r in rows if r.get("calibration")})
    if calib:
        lines += ["", "Calibration data: " + "; ".join(calib) + "."]
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, memory, OS, Python, torch and transformers versions."""
    import torch
    import transformers

    cpu, mem = platform.processor() or platform.machine(), "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
        with open("/proc/meminfo") as f:
            mem = f"{int(next(ln for ln in f if ln.startswith('MemTotal')).split()[1]) / 2**20:.0f}"
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem} GB; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )


def header(argv: str, threads: int, memory: tuple, timeout: float, rows=()) -> str:
    """The table's header line: command, date, machine, threads, limits (timeout; memory =
    (RSS cap, least memory left available on the machine) in bytes), the load average."""
    loads = [x for r in rows for x in r.get("loadavg", ())]
    load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "?"
    return (
        f"`python -m benchmarks.scale {argv}`".replace(" `", "`")
        + f" on {datetime.date.today()}: {machine()}; {threads} thread(s) per merge "
        f"(torch.set_num_threads and OMP_NUM_THREADS); per case a timeout of {timeout:.0f} s, an "
        f"RSS cap of {_gb(memory[0])} GB and a stop when the machine has under "
        f"{_gb(memory[1])} GB available; 1-minute load average {load} around the measurements "
        "(more than the thread count means other work competed for the cores). The floor is "
        "the eager forward passes of both models over the calibration data, timed in the same "
        "process right before the merge."
    )


def _key(row: dict) -> tuple:
    return (row["pair"], row["method"], row["size"], row["reset_bn"], str(row.get("tokens")))


def save(rows: list[dict], top: str, stem: Path, keep: bool = True) -> Path:
    """Write `stem`.json (raw rows) and `stem`.md (the tables). With `keep`, rows of an earlier
    run in `stem`.json that this run did not measure again are kept, and listed with their date
    and header under the tables. Returns the .md path."""
    old = {}
    if keep and stem.with_suffix(".json").exists():
        old = json.loads(stem.with_suffix(".json").read_text())
    fresh = {_key(r) for r in rows}
    kept = [r for r in old.get("rows", []) if _key(r) not in fresh]
    for r in kept:
        r.setdefault("header", old.get("header", ""))
    earlier = [r for r in kept + rows if r.get("header", top) != top]
    table = markdown(kept + rows, top)
    if earlier:
        table += "\n\nRows measured in earlier runs:\n\n" + "\n".join(
            f"- {label(r)}, {r['method']}: {r.get('date', '?')}, {r['header'].split(' on ')[0]}"
            for r in earlier
        )
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(table + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"header": top, "rows": kept + rows}, indent=1))
    return stem.with_suffix(".md")
