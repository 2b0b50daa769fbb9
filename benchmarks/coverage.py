"""Architecture coverage: which Hugging Face models (and classic conv nets written in
benchmarks/convnets.py) graphmerge traces, groups and shuffles.

    python -m benchmarks.coverage                          # every architecture (a few minutes)
    python -m benchmarks.coverage --only bert-cls,llama-cls
    python -m benchmarks.coverage --markdown > benchmarks/coverage_table.md
    python -m benchmarks.coverage --json coverage.json
    python -m benchmarks.coverage --readme README.md  # rewrite the README's table in place
    python -m benchmarks.coverage --list                   # the architecture names

Every architecture is built from a *tiny* config with random weights (hidden 32-64, 1-2 layers,
4 heads, vocabulary 128, 32-pixel images, short audio, 32-step series), in eval mode,
`use_cache=False` and eager attention unless the variant is about SDPA. Nothing is downloaded
(`HF_HUB_OFFLINE=1`). The architectures are listed in benchmarks/coverage_archs.py.

For each architecture, inside its own try/except (one failure never stops the run):

1. build it (plus small noise on every parameter and BatchNorm statistic, so that no tensor is
   constant and a permutation always shows) and its example inputs (a dict of keyword tensors);
2. `gm.analyze(model, inputs)`: trace, infer the permutation groups, self-check them;
3. shuffle it with every free group permuted (`gm.shuffle`, which traces and checks the model
   again) and compare the outputs of the original and the twin on *other* inputs of the same
   shape: max abs difference over every floating output, relative to that output's largest
   magnitude; "function kept" when it is <= 1e-4;
4. count the share of parameter tensors the shuffle changed.

Status: `✓` traced, function kept, no hidden group frozen by an op without a rule and none by the
self-check; `partial` traced and function kept, but some hidden groups frozen by an op without a
rule or by the self-check; `✗` not traced, or the function changed (or the run raised).

The second table aggregates the ops without rules over architectures, sorted by how many
architectures each one *blocks* (freezes at least one hidden group of).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import signal
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from torch import nn

from benchmarks.coverage_archs import (
    ARCHS,
    AUDIO,
    BATCH,
    DEC_SEQ,
    IMAGE,
    MEL_FRAMES,
    MELS,
    SEQ,
    SERIES,
    SERIES_CHANNELS,
    VOCAB,
    Arch,
)

TOL = 1e-4  # function kept when max |diff| / output scale <= TOL
PER_ARCH_TIMEOUT = 120  # seconds; a hung export is reported, the run goes on

ARCH_BY_NAME = {a.name: a for a in ARCHS}

# The smoke subset that tests/test_coverage_smoke.py runs.
SMOKE = ("bert-cls", "gpt2-cls", "llama-cls", "vit-cls", "resnet-cls")


# ------------------------------------------------------------------------- building


def config_of(arch: Arch, **overrides):
    """The transformers config of `arch` (its tiny kwargs and attention), `overrides` applied.

    The one place the benchmarks build Hugging Face configs (benchmarks.trace_depth scales
    bert-cls's up).
    """
    import transformers

    kwargs = {k: _sub_config(v) for k, v in arch.config.items()}
    if arch.attn is not None:
        kwargs["attn_implementation"] = arch.attn
    kwargs.update(overrides)
    config = getattr(transformers, arch.config_cls)(**kwargs)
    if kwargs.get("attn_implementation") is not None:
        config._attn_implementation = kwargs["attn_implementation"]
    return config


def build(arch: Arch, seed: int = 0) -> nn.Module:
    """The model, randomly initialized from its tiny config, in eval mode."""
    if arch.source == "convnets":
        from benchmarks.convnets import CONVNETS

        torch.manual_seed(seed)
        model = CONVNETS[arch.model_cls](**arch.config)
        jitter(model, seed)
        return model.eval()
    import transformers

    config = config_of(arch)
    torch.manual_seed(seed)
    model = getattr(transformers, arch.model_cls)(config)
    jitter(model, seed)
    return model.eval()


def _sub_config(value):
    """A nested config given as ("ConfigClass", {kwargs}) (a detector's backbone), built."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        import transformers

        return getattr(transformers, value[0])(**value[1])
    return value


def jitter(model: nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """Add small noise to every floating parameter and BatchNorm statistic.

    Fresh models have constant tensors (LayerNorm weights 1, biases 0) that a permutation leaves
    equal: they would hide a wrong permutation from the output check and from the count of
    changed tensors. Noise makes every unit distinct.
    """
    g = torch.Generator().manual_seed(seed + 12345)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        for name, b in model.named_buffers():
            if not b.is_floating_point() or not b.numel():
                continue
            if name.endswith("running_mean"):
                b.add_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.1)
            elif name.endswith("running_var"):
                b.mul_(1 + 0.5 * torch.rand(b.shape, generator=g, dtype=b.dtype))


def _ids(g: torch.Generator, batch: int, length: int = SEQ) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=g)


def _text_inputs(g, batch):
    return {"input_ids": _ids(g, batch), "attention_mask": torch.ones(batch, SEQ, dtype=torch.long)}


def _seq2seq_inputs(g, batch):
    return {**_text_inputs(g, batch), "decoder_input_ids": _ids(g, batch, DEC_SEQ)}


# Input kind -> inputs(generator, batch): keyword tensors of fixed shapes.
INPUTS = {
    "text": _text_inputs,
    "seq2seq": _seq2seq_inputs,
    "ids": lambda g, b: {"input_ids": _ids(g, b)},  # models without an attention mask argument
    "image": lambda g, b: {"pixel_values": torch.randn(b, 3, IMAGE, IMAGE, generator=g)},
    "image64": lambda g, b: {"pixel_values": torch.randn(b, 3, 64, 64, generator=g)},
    "tensor": lambda g, b: {"x": torch.randn(b, 3, IMAGE, IMAGE, generator=g)},  # convnets
    "audio": lambda g, b: {"input_values": torch.randn(b, AUDIO, generator=g)},
    "whisper": lambda g, b: {"input_features": torch.randn(b, MELS, MEL_FRAMES, generator=g)},
    # (batch, frames, mel bins): the Audio Spectrogram Transformer
    "spectrogram": lambda g, b: {"input_values": torch.randn(b, MEL_FRAMES, MELS, generator=g)},
    # (batch, frames, features) and decoder ids: Speech2Text
    "speech2text": lambda g, b: {
        "input_features": torch.randn(b, MEL_FRAMES, MELS, generator=g),
        "decoder_input_ids": _ids(g, b, DEC_SEQ),
    },
    # (batch, context length, channels): PatchTST / PatchTSMixer
    "series": lambda g, b: {"past_values": torch.randn(b, SERIES, SERIES_CHANNELS, generator=g)},
}


def make_inputs(arch: Arch, seed: int, batch: int = BATCH) -> dict:
    """Keyword inputs for `arch`; every seed gives inputs of the same shapes."""
    if arch.inputs not in INPUTS:
        raise ValueError(f"unknown input kind {arch.inputs!r}")
    return INPUTS[arch.inputs](torch.Generator().manual_seed(seed), batch)


# ------------------------------------------------------------------------- measuring

_UNRULED_REASON = re.compile(
    r"^(?:no rule for (aten\.[\w.]+)|rule for (aten\.[\w.]+) (?:failed|gave wrong)"
    r"|(aten\.[\w.]+) with these arguments)"
)


_LOCATION = re.compile(r"\s*\([^()]*\bat [^()]*:\d+[^()]*\)|\s+at \S+:\d+")


def short_reason(reason: str) -> str:
    """A frozen reason without node names and source lines, so that it aggregates:
    `strided slice (slice_4 at m.py:454)` -> `strided slice`."""
    text = _LOCATION.sub("", reason).strip()
    return text if len(text) <= 70 else text[:67] + "..."


def frozen_reasons(groups) -> dict[str, int]:
    """Hidden units frozen per short reason (groups of more than one unit that are not the
    model's input or output axes), most units first."""
    out: dict[str, int] = {}
    for g in groups:
        if g.frozen and g.hidden:
            key = short_reason(g.reason or "frozen")
            out[key] = out.get(key, 0) + g.units
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def unruled_op_of(reason: str | None) -> str | None:
    """The op named by a frozen reason that comes from an op without (a working) rule."""
    if not reason:
        return None
    m = _UNRULED_REASON.match(reason)
    return next((x for x in m.groups() if x), None) if m else None


@dataclass
class Result:
    name: str
    family: str
    model_cls: str
    note: str = ""
    traced: bool = False
    error: str = ""  # TraceError (or other) message, first line
    stage: str = ""  # where a non-trace error happened: "analyze" (graphmerge crashed) or ""
    groups: int = 0
    free_groups: int = 0
    hidden_groups: int = 0  # size > 1
    permutable_share: float = 0.0  # of hidden units
    param_share: float = 0.0  # of parameter elements in free groups (Analysis)
    changed_share: float = 0.0  # of parameter tensors changed by the shuffle
    changed_tensors: int = 0
    total_tensors: int = 0
    max_rel_diff: float | None = None
    function_kept: bool = False
    selfcheck_frozen: list[str] = field(default_factory=list)
    unruled_frozen: dict[str, int] = field(default_factory=dict)  # op -> hidden groups frozen
    unruled: dict[str, int] = field(default_factory=dict)  # op -> occurrences in the graph
    unruled_sites: list[str] = field(default_factory=list)  # "op at source xN"
    frozen_by: dict[str, int] = field(default_factory=dict)  # short reason -> hidden units
    trace_s: float = 0.0
    infer_s: float = 0.0
    verify_s: float = 0.0
    total_s: float = 0.0

    @property
    def status(self) -> str:
        if not self.traced or not self.function_kept:
            return "✗"
        if self.selfcheck_frozen or self.unruled_frozen:
            return "partial"
        return "✓"


def _float_leaves(out) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def max_rel_diff(ref, out) -> float:
    """Worst max |a - b| / max |a| over the floating outputs (inf on a shape change)."""
    a_list, b_list = _float_leaves(ref), _float_leaves(out)
    if len(a_list) != len(b_list):
        return float("inf")
    worst = 0.0
    for a, b in zip(a_list, b_list):
        if a.shape != b.shape:
            return float("inf")
        if not a.numel():
            continue
        scale = max(a.abs().max().item(), 1e-6)
        err = (a - b).abs().max().item() / scale
        if math.isnan(err):
            return float("inf")
        worst = max(worst, err)
    return worst


class TimeLimit(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise TimeLimit(f"timed out after {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}"[:300]


def measure(arch: Arch, *, seed: int = 0, timeout: int = PER_ARCH_TIMEOUT) -> Result:
    """Build, analyze, shuffle and compare one architecture; never raises."""
    import graphmerge as gm

    res = Result(arch.name, arch.family, arch.model_cls, arch.note)
    start = time.perf_counter()
    try:
        with time_limit(timeout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build(arch, seed)
            inputs = make_inputs(arch, seed=0)
            try:
                analysis = gm.analyze(model, inputs)
            except gm.TraceError as exc:
                res.error = _first_line(exc)
                return res
            except Exception as exc:  # noqa: BLE001 (export may have worked: graphmerge crashed)
                res.stage = "analyze"
                res.error = _first_line(exc)
                return res
            res.traced = True
            res.trace_s = analysis.trace_seconds
            res.infer_s = analysis.infer_seconds
            res.verify_s = analysis.verify_seconds
            groups = analysis.groups
            hidden = [g for g in groups if g.size > 1]
            res.groups = len(groups)
            res.hidden_groups = len(hidden)
            res.free_groups = sum(1 for g in hidden if not g.frozen)
            res.permutable_share = analysis.permutable_share
            res.param_share = (
                analysis.param_count_permuted / analysis.param_count_total
                if analysis.param_count_total
                else 0.0
            )
            res.frozen_by = frozen_reasons(groups)
            res.selfcheck_frozen = [
                g.name
                for g in hidden
                if g.frozen and g.reason and g.reason.startswith("failed self-check")
            ]
            for g in hidden:
                op = unruled_op_of(g.reason) if g.frozen else None
                if op:
                    res.unruled_frozen[op] = res.unruled_frozen.get(op, 0) + 1
            for op, where, n in analysis.unruled:
                key = op.split(" ")[0]
                res.unruled[key] = res.unruled.get(key, 0) + n
                res.unruled_sites.append(f"{op} at {where}" + (f" x{n}" if n > 1 else ""))

            twin = gm.shuffle(model, inputs, seed=seed + 1).eval()
            params = dict(model.named_parameters())
            twin_params = dict(twin.named_parameters())
            res.total_tensors = len(params)
            res.changed_tensors = sum(
                1 for n, p in params.items() if not torch.equal(p.detach(), twin_params[n].detach())
            )
            res.changed_share = res.changed_tensors / res.total_tensors if params else 0.0
            worst = 0.0
            with torch.no_grad():
                for s in (1, 2):
                    other = make_inputs(arch, seed=s)
                    worst = max(worst, max_rel_diff(model(**other), twin(**other)))
            res.max_rel_diff = worst
            res.function_kept = worst <= TOL
    except TimeLimit as exc:
        res.error = f"Timeout: {exc}"
    except Exception as exc:  # noqa: BLE001 (one architecture never stops the run)
        res.error = _first_line(exc)
        if os.environ.get("COVERAGE_TRACEBACK"):
            traceback.print_exc()
    finally:
        res.total_s = time.perf_counter() - start
    return res


# ------------------------------------------------------------------------- reporting


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_table(results: list[Result]) -> str:
    head = (
        "| architecture | model class | status | traced | groups | free | permutable units "
        "| param tensors changed | function kept (max rel diff) | self-check frozen "
        "| ops without rules | frozen hidden units: why | time s |"
    )
    lines = [
        head,
        "|" + "|".join(["---"] * 3 + ["---"] + ["---:"] * 5 + ["---:", "---", "---", "---:"]) + "|",
    ]
    for r in results:
        if r.traced:
            traced = "yes"
        elif r.stage == "analyze":
            traced = "crash in analyze: " + _cell(r.error[:150])
        else:
            traced = "no: " + _cell(r.error[:160])
        if r.max_rel_diff is None:
            kept = "—" if not r.traced else "no: " + _cell(r.error[:120])
        else:
            kept = f"{'yes' if r.function_kept else 'NO'} ({r.max_rel_diff:.1e})"
        ops = (
            ", ".join(
                f"{op} x{n}"
                + (f" (freezes {r.unruled_frozen[op]})" if op in r.unruled_frozen else "")
                for op, n in sorted(r.unruled.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            or "—"
        )
        sc = str(len(r.selfcheck_frozen)) if r.traced else "—"
        changed = (
            f"{_pct(r.changed_share)} ({r.changed_tensors}/{r.total_tensors})"
            if r.total_tensors
            else "—"
        )
        lines.append(
            f"| {r.name} | {r.model_cls} | {r.status} | {traced} "
            f"| {r.groups if r.traced else '—'} | {r.free_groups if r.traced else '—'} "
            f"| {_pct(r.permutable_share) if r.traced else '—'} | {changed} | {kept} | {sc} "
            f"| {_cell(ops)} | {_cell(why_frozen(r)) or '—'} | {r.total_s:.1f} |"
        )
    return "\n".join(lines)


def why_frozen(r: Result, top: int = 3) -> str:
    """The main reasons hidden units stay in place, with the units each freezes."""
    items = list(r.frozen_by.items())
    text = "; ".join(f"{why} ({n})" for why, n in items[:top])
    return text + (f"; {len(items) - top} more" if len(items) > top else "")


README_SHARE = 0.9  # rows below this share of permutable hidden units say why in README


def readme_table(results: list[Result]) -> str:
    """The README's table: status, share of permutable hidden units, ops without rules, and
    for rows under README_SHARE what freezes the rest."""
    lines = [
        (
            "| architecture | family | status | permutable hidden units | ops without rules "
            "| under 90%: what freezes the rest |"
        ),
        "|---|---|---|---:|---|---|",
    ]
    for r in results:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(r.unruled.items())) or "—"
        share = _pct(r.permutable_share) if r.traced else "—"
        why = why_frozen(r) if r.traced and r.permutable_share < README_SHARE else ""
        if not r.traced or not r.function_kept:
            why = _cell(r.error[:100])
        lines.append(
            f"| {r.name} ({r.model_cls}) | {r.family} | {r.status} | {share} | {_cell(ops)} "
            f"| {_cell(why) or '—'} |"
        )
    return "\n".join(lines)


README_BEGIN, README_END = "<!-- coverage table: begin -->", "<!-- coverage table: end -->"


def write_readme_table(path: str, results: list[Result], command: str) -> None:
    """Replace the text between README_BEGIN and README_END in the file at `path` with the
    command, the summary line and `readme_table`; raises ValueError when a marker is missing."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, sep, rest = text.partition(README_BEGIN)
    _, sep2, tail = rest.partition(README_END)
    if not sep or not sep2:
        raise ValueError(f"{path}: no {README_BEGIN} ... {README_END} block to rewrite")
    import transformers

    kept = [r.max_rel_diff for r in results if r.function_kept and r.max_rel_diff is not None]
    block = (
        f"`{command}` ({datetime.date.today()}, transformers {transformers.__version__}): "
        f"{summary_line(results)}; the function is kept on {len(kept)} (max relative difference "
        f"{max(kept, default=0.0):.1e}).\n\n{readme_table(results)}\n"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{README_BEGIN}\n{block}{README_END}{tail}")


def unruled_summary(results: list[Result]) -> list[dict]:
    """One row per op without a rule: the architectures it blocks and those it appears in."""
    ops: dict[str, dict] = {}
    for r in results:
        for op, n in r.unruled.items():
            row = ops.setdefault(
                op,
                {
                    "op": op,
                    "blocks": [],
                    "appears": [],
                    "occurrences": 0,
                    "hidden_groups_frozen": 0,
                },
            )
            row["appears"].append(r.name)
            row["occurrences"] += n
        for op, n in r.unruled_frozen.items():
            row = ops.setdefault(
                op,
                {
                    "op": op,
                    "blocks": [],
                    "appears": [],
                    "occurrences": 0,
                    "hidden_groups_frozen": 0,
                },
            )
            row["blocks"].append(r.name)
            row["hidden_groups_frozen"] += n
    return sorted(
        ops.values(),
        key=lambda d: (-len(d["blocks"]), -len(d["appears"]), -d["occurrences"], d["op"]),
    )


def unruled_table(results: list[Result]) -> str:
    rows = unruled_summary(results)
    if not rows:
        return "(no op without a rule in any architecture)"
    lines = [
        (
            "| op | blocks (archs) | hidden groups frozen | appears in (archs) | nodes "
            "| architectures blocked |"
        ),
        "|---|---:|---:|---:|---:|---|",
    ]
    for d in rows:
        lines.append(
            f"| {d['op']} | {len(d['blocks'])} | {d['hidden_groups_frozen']} "
            f"| {len(d['appears'])} | {d['occurrences']} "
            f"| {', '.join(d['blocks']) or '— (' + ', '.join(d['appears']) + ')'} |"
        )
    return "\n".join(lines)


def summary_line(results: list[Result]) -> str:
    n = len(results)
    ok = sum(r.status == "✓" for r in results)
    part = sum(r.status == "partial" for r in results)
    bad = sum(r.status == "✗" for r in results)
    traced = sum(r.traced for r in results)
    total = sum(r.total_s for r in results)
    return (
        f"{n} architectures: {ok} ✓, {part} partial, {bad} ✗; {traced} traced; total {total:.0f} s"
    )


def versions() -> str:
    import transformers

    return (
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"torch threads {torch.get_num_threads()}"
    )


def markdown(results: list[Result], command: str, wall: float) -> str:
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    details = []
    for r in results:
        if r.unruled_sites or r.selfcheck_frozen or r.error:
            bits = []
            if r.error:
                bits.append(f"error: `{r.error}`")
            if r.selfcheck_frozen:
                bits.append("self-check froze: " + ", ".join(f"`{g}`" for g in r.selfcheck_frozen))
            if r.unruled_sites:
                bits.append("unruled: " + "; ".join(f"`{s}`" for s in r.unruled_sites))
            details.append(f"- **{r.name}**: " + " — ".join(bits))
    parts = [
        "# graphmerge architecture coverage",
        "",
        f"Command: `{command}`  ",
        f"Date: {date}  ",
        f"Versions: {versions()}  ",
        f"Wall time: {wall:.0f} s",
        "",
        (
            "Tiny random-init configs (hidden 16-64, 1-2 layers, 4 heads, vocab 128, 32 px images), "
            "and the conv nets of benchmarks/convnets.py. "
            "*permutable units*: share of hidden units (groups of size > 1) that may be permuted "
            "(`Analysis.permutable_share`); *frozen hidden units: why*: the reasons the other hidden "
            "units stay in place, with how many each freezes; *param tensors changed*: share of "
            "parameter tensors that a "
            "shuffle changed; *function kept*: max |diff| / output scale on two other inputs of the "
            f"same shape, kept when <= {TOL:g}. Status: ✓ traced, kept, no hidden group frozen by an "
            "op without a rule or by the self-check; partial: traced and kept but some such group "
            "frozen; ✗ not traced or function changed."
        ),
        "",
        summary_line(results),
        "",
        results_table(results),
        "",
        "## Ops without rules",
        "",
        (
            "*blocks*: architectures where the op froze at least one hidden group (groups of "
            "size > 1; an op that only touches frozen axes, e.g. token ids, blocks nothing)."
        ),
        "",
        unruled_table(results),
    ]
    if details:
        parts += ["", "## Details", "", *details]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.coverage", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--only", help="comma-separated architecture names (see --list)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print a full Markdown document (header, tables, details)",
    )
    parser.add_argument("--list", action="store_true", help="print the architecture names")
    parser.add_argument(
        "--readme",
        help="rewrite the summary line and table between the coverage markers of this file",
    )
    parser.add_argument(
        "--timeout", type=int, default=PER_ARCH_TIMEOUT, help="seconds per architecture (0: none)"
    )
    args = parser.parse_args(argv)
    if args.list:
        for a in ARCHS:
            print(f"{a.name:18s} {a.family:8s} {a.model_cls}")
        return 0
    archs = ARCHS
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in ARCH_BY_NAME]
        if unknown:
            parser.error(f"unknown architectures {unknown}; see --list")
        archs = [ARCH_BY_NAME[n] for n in names]
    command = "python -m benchmarks.coverage" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else ""
    )
    results = []
    start = time.perf_counter()
    for arch in archs:
        r = measure(arch, timeout=args.timeout)
        results.append(r)
        print(
            f"[{len(results)}/{len(archs)}] {r.name:18s} {r.status:8s} {r.total_s:5.1f}s "
            f"groups={r.groups} free={r.free_groups} units={_pct(r.permutable_share)} "
            f"changed={_pct(r.changed_share)} diff={r.max_rel_diff} "
            f"unruled={r.unruled} selfcheck={len(r.selfcheck_frozen)} {r.error[:150]}",
            file=sys.stderr,
            flush=True,
        )
    wall = time.perf_counter() - start
    if args.readme:
        write_readme_table(args.readme, results, command)
    if args.markdown:
        print(markdown(results, command, wall))
    else:
        print(results_table(results))
        print()
        print(unruled_table(results))
        print()
        print(summary_line(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "command": command,
                    "versions": versions(),
                    "wall_s": wall,
                    "results": [dict(asdict(r), status=r.status) for r in results],
                    "unruled": unruled_summary(results),
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
