"""The `graphmerge` command: `inspect`, `merge`, `export` and `demo`.

Each subcommand is one entry of `SUBCOMMANDS`: a function adding its arguments and a handler
`(args) -> exit status`. Before any work, a handler checks its outputs against everything the
command reads (`graphmerge.loading.check_outputs`). Errors graphmerge raises on purpose
(`GraphMergeError`) are printed as `error: <message>` with exit status 2 and no traceback;
graphmerge's own warnings as `warning: <message>`.

Examples:
    graphmerge inspect examples/tiny_cnn.py:build --input-shape 2,3,16,16
    graphmerge merge examples/merge_tiny_cnn.yaml --out merged.safetensors --onnx merged.onnx
    graphmerge export examples/tiny_cnn.py:build --weights merged.safetensors \\
        --input-shape 2,3,16,16 --out merged.onnx
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from graphmerge.errors import GraphMergeError, InputError
from graphmerge.loading import (
    check_outputs,
    load_factory,
    load_state_dict,
    load_weights,
    parse_input_shape,
    save_state,
    staged_outputs,
)
from graphmerge.render import (
    graph_picture_path,
    groups_json,
    groups_table,
    stop_points_text,
    write_graph_picture,
)

__all__ = ["SUBCOMMANDS", "Subcommand", "build_inputs", "build_model", "build_parser", "main"]


class Subcommand(NamedTuple):
    """One CLI verb: its help line, how it adds its arguments, and its handler."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------------------------------------
# shared steps


def build_model(spec: str, weights: str | None) -> nn.Module:
    """Call the factory `spec` names, check it returns an nn.Module, load `weights` into it.

    `spec` may also be a Hugging Face `save_pretrained` folder (with config.json).
    """
    if Path(spec).is_dir():
        from graphmerge.pretrained import load_pretrained

        model = load_pretrained(spec)
        if weights is not None:
            load_weights(model, load_state_dict(weights), weights)
        return model
    factory = load_factory(spec)
    try:
        model = factory()
    except Exception as exc:
        raise InputError(f"calling {spec}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec}() returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(model, load_state_dict(weights), weights)
    return model.eval()


def build_inputs(shape_spec: str | None, inputs_spec: str | None) -> Any:
    """Example inputs from `--input-shape` or from the `--inputs` factory.

    A factory may return a Tensor, a tuple/list of Tensors (positional) or a dict of keyword
    Tensors; anything else is an `InputError`.
    """
    if shape_spec is not None:
        return parse_input_shape(shape_spec)
    assert inputs_spec is not None
    factory = load_factory(inputs_spec)
    try:
        value = factory()
    except Exception as exc:
        raise InputError(f"calling {inputs_spec}() failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in value):
        return tuple(value)
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    ):
        return value
    raise InputError(
        f"{inputs_spec}() returned a {type(value).__name__}; expected a Tensor, a tuple of "
        f"Tensors (positional inputs) or a dict of keyword Tensors"
    )


def _inputs(args: argparse.Namespace) -> list[str]:
    """What `inspect`/`export` read (model factory or folder, weights, inputs factory)."""
    return [s for s in (args.model, args.weights, args.inputs) if s]


# ---------------------------------------------------------------------------------------------
# inspect


def _add_inspect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", metavar="MODEL", help="factory: 'package.module:build' or 'path/to/file.py:build'"
    )
    parser.add_argument("--weights", metavar="PATH", help=".safetensors or .pt/.pth/.bin/.ckpt")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input-shape",
        metavar="SPEC",
        help="e.g. '1,3,32,32', or '1,16:int64:1000;1,16:int64:2' for token ids (';' separates "
        "inputs, ':int64:HIGH' gives integers in [0, HIGH))",
    )
    source.add_argument(
        "--inputs",
        metavar="FACTORY",
        help="a callable returning a Tensor, a tuple of Tensors or a dict of keyword Tensors",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--wide",
        action="store_true",
        help="show every member and stop point (default: fit the terminal's width)",
    )
    graph = parser.add_mutually_exclusive_group()
    graph.add_argument(
        "--graph",
        metavar="PATH_STEM",
        help="where to draw modules and groups (.svg with Graphviz, else .html); "
        "default: <factory name>_groups in the current directory",
    )
    graph.add_argument("--no-graph", action="store_true", help="do not draw the picture")
    parser.add_argument(
        "--strict", action="store_true", help="fail (VerifyError) when a group fails its self-check"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the self-check")


def _run_inspect(args: argparse.Namespace) -> int:
    from graphmerge.api import analyze  # the core; imported late so the CLI loads without it

    stem = None if args.no_graph else args.graph or f"{_model_name(args.model)}_groups"
    if stem is not None:  # refuse a picture over an input before any work
        check_outputs({"--graph": graph_picture_path(stem)}, _inputs(args))
    model = build_model(args.model, args.weights)
    example = build_inputs(args.input_shape, args.inputs)
    analysis = analyze(model, example, verify=not args.no_verify, strict=args.strict)

    picture = None
    if stem is not None:
        picture = write_graph_picture(analysis.groups, stem, protect=_inputs(args))

    if args.json:
        print(groups_json(analysis))
        if picture is not None:
            print(f"graph: {picture}", file=sys.stderr)
        return 0
    width = None if args.wide else shutil.get_terminal_size().columns
    print(_header(analysis))
    print()
    print(groups_table(analysis.groups, width))
    print(_params_line(analysis))
    print(analysis.describe_memory())
    print(_unruled_report(analysis.unruled))
    if getattr(analysis, "program", None) is not None:
        from graphmerge.passes.partial import stop_points

        print(stop_points_text(stop_points(analysis.program), width))
    if picture is not None:
        print(f"graph: {picture}")
    return 0


def _model_name(spec: str) -> str:
    """A short name for default file names: the factory's name, or the folder's."""
    if Path(spec).is_dir():
        return Path(spec).resolve().name
    return spec.rpartition(":")[2].split(".")[-1]


def _header(analysis: Any) -> str:
    times = [("trace", analysis.trace_seconds), ("infer", analysis.infer_seconds)]
    times.append(("verify", analysis.verify_seconds))
    spent = ", ".join(f"{k} {v:.2f}s" for k, v in times if v is not None)
    return f"model: {analysis.model_name}  ({spent})"


def _params_line(analysis: Any) -> str:
    permuted, total = analysis.param_count_permuted, analysis.param_count_total
    share = f" ({100.0 * permuted / total:.1f}%)" if total else ""
    return f"parameters in free groups: {permuted:,} of {total:,}{share}"


def _unruled_report(unruled: Sequence[tuple[str, str, int]]) -> str:
    if not unruled:
        return "ops without rules: none"
    lines = ["ops without rules (the spaces they touch are frozen):"]
    lines += [f"  {op} at {where}" + (f" (x{n})" if n != 1 else "") for op, where, n in unruled]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# merge


def _add_merge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="merge config (YAML); see examples/merge_tiny_cnn.yaml")
    parser.add_argument(
        "--out", required=True, help="merged weights: .safetensors (or .pt, a plain state dict)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail instead of freezing a group that fails the self-check",
    )
    parser.add_argument(
        "--onnx",
        help="also export the merged model to this .onnx file "
        "(checked with onnxruntime on the first calibration batch)",
    )
    parser.add_argument(
        "--max-memory",
        type=_memory_size,
        metavar="SIZE",
        help="memory budget, e.g. 8GB (default: what the machine has free); statistics are "
        "then collected in several passes and kept on disk as needed",
    )
    from graphmerge.launch import add_arguments

    add_arguments(parser)  # --nproc, --timeout


def _memory_size(text: str) -> str:
    from graphmerge.memory import parse_bytes

    try:
        parse_bytes(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _merge_outputs(args: argparse.Namespace, config: Any) -> dict[str, Path]:
    """`--out` (and `--onnx`) checked before any work: never an input, then suffixes and data."""
    outputs = {"--out": args.out, **({"--onnx": args.onnx} if args.onnx else {})}
    targets = check_outputs(outputs, config.input_files())
    if Path(args.out).suffix not in (".safetensors", ".pt", ".pth"):
        raise InputError(f"--out {args.out!r}: use a .safetensors (or .pt) file name")
    if args.onnx and Path(args.onnx).suffix != ".onnx":
        raise InputError(f"--onnx {args.onnx!r}: the file name must end in .onnx")
    if args.onnx and config.data is None:
        raise InputError("--onnx needs example inputs: give the config a data section")
    return targets


def _run_merge(args: argparse.Namespace) -> int:
    import time

    from graphmerge.config import load_config
    from graphmerge.launch import launch_merge, merge_team, shard
    from graphmerge.merge import merge

    if args.nproc > 1:
        return launch_merge(args.argv, args.nproc, args.timeout)
    team = merge_team(args.timeout)  # under torchrun: this rank's place, else None
    rank = team.rank if team else 0
    config = load_config(args.config)
    targets = _merge_outputs(args, config)
    models = [build_model(m.factory, m.weights) for m in config.models]
    data = config.data.load() if config.data else None
    data = shard(data, rank, team.size) if team and data is not None else data
    start = time.perf_counter()
    merged, program = merge(
        models,
        data,
        options=config.options,
        progress=not args.no_progress and rank == 0,
        strict=args.strict,
        return_program=True,
        **({"memory_budget": args.max_memory} if args.max_memory else {}),
    )
    seconds = time.perf_counter() - start

    def write() -> None:
        with staged_outputs(targets) as staged:  # both files appear only if both were written
            save_state(merged.state_dict(), staged["--out"])
            if "--onnx" in staged:
                from graphmerge.export import export_onnx

                export_onnx(merged, program.example_inputs, staged["--onnx"])

    if team is None:
        write()
    else:  # rank 0 writes; every rank fails if that fails
        team.agree("writing the outputs", write if rank == 0 else lambda: None)
        if rank:
            return 0
    solved = len(program.assignments)
    free = len(program.free_groups())
    print(
        f"merged {len(models)} x {type(models[0]).__name__} with {config.method}"
        f"{f' on {team.size} ranks' if team else ''} "
        f"in {seconds:.1f} s: {solved} groups solved ({free} free of {len(program.groups)}); "
        f"{_aligned_line(program)}"
    )
    stages = ("trace", "verify_groups", "collect_features", "solve_groups", "rewrite")
    print("  " + ", ".join(f"{k} {program.timings.get(k, 0.0):.2f} s" for k in stages))
    for label, path in targets.items():
        checked = " (checked with onnxruntime)" if label == "--onnx" else ""
        print(f"wrote {path}{checked}")
    return 0


def _aligned_line(program: Any) -> str:
    """How many hidden units the merge aligned (the rest were averaged in place)."""
    aligned, total = program.aligned_units()
    return f"{aligned} of {total} hidden units aligned ({aligned / max(total, 1):.0%})"


# ---------------------------------------------------------------------------------------------
# demo


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=("cnn", "mlp"), default="cnn")
    parser.add_argument(
        "--out",
        default="graphmerge-demo",
        help="folder for the group graph picture (created; default: ./graphmerge-demo)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the class split (default 0)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs per model")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads while the demo runs (default 1, fastest for its tiny models; "
        "restored after)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress messages")


def _run_demo(args: argparse.Namespace) -> int:
    # the demo's code is the repository's examples/ folder, installed as graphmerge_examples
    # beside the library (which does not import it); imported here, late, so that the other
    # commands work without it
    try:
        from graphmerge_examples.demo import run_demo
    except ModuleNotFoundError as exc:
        if exc.name not in ("graphmerge_examples", "graphmerge_examples.demo"):
            raise
        raise GraphMergeError(
            "`graphmerge demo` needs the graphmerge_examples package (the repository's examples/ "
            "folder), which is not installed: from a clone of graphmerge, run "
            '`pip install -c constraints.txt -e ".[dev]"`'
        ) from exc
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError as exc:
        raise GraphMergeError(
            "`graphmerge demo` trains on the digits data set that ships with scikit-learn, "
            "which is not installed: pip install scikit-learn"
        ) from exc
    if args.epochs < 1 or args.threads < 1:
        raise InputError("--epochs and --threads must be at least 1")
    report = run_demo(
        args.arch,
        args.out,
        args.seed,
        epochs=args.epochs,
        progress=not args.no_progress,
        threads=args.threads,
    )
    print(report)
    return 0


# ---------------------------------------------------------------------------------------------
# export


def _add_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model factory: package.module:factory or file.py:factory")
    parser.add_argument("--weights", help="weights: .safetensors, or a torch checkpoint")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--input-shape", help="example input shape, e.g. 1,3,32,32")
    group.add_argument("--inputs", help="factory returning example inputs (Tensor/tuple/dict)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--static", action="store_true", help="fixed batch size")


def _run_export(args: argparse.Namespace) -> int:
    from graphmerge.export import export_onnx

    target = check_outputs({"--out": args.out}, _inputs(args))["--out"]
    if Path(args.out).suffix != ".onnx":
        raise InputError(f"--out {args.out!r}: the file name must end in .onnx")
    model = build_model(args.model, args.weights)
    inputs = build_inputs(args.input_shape, args.inputs)
    path = export_onnx(model, inputs, target, dynamic_batch=not args.static)
    print(f"wrote {path} (checked with onnxruntime{'' if args.static else ' at two input sizes'})")
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "demo": Subcommand(
        "train two small models on bundled digits data, merge them, compare", _add_demo, _run_demo
    ),
    "inspect": Subcommand(
        "trace a model, infer its permutation groups, and show them", _add_inspect, _run_inspect
    ),
    "merge": Subcommand(
        "merge models as a YAML config says, write the merged weights", _add_merge, _run_merge
    ),
    "export": Subcommand(
        "export a model to ONNX, checked with onnxruntime", _add_export, _run_export
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per entry of `SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="graphmerge",
        description="Merge separately trained networks without training, by aligning units.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in SUBCOMMANDS.items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` (default `sys.argv[1:]`); returns the exit status.

    0 on success, 2 on a usage error or a `GraphMergeError` (printed as `error: <message>`).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    previous = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("default", module=r"graphmerge(\.|$)")  # always shown
            return SUBCOMMANDS[args.command].run(args)
    except GraphMergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = previous


_OWN = (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "passes")
_format_default = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """graphmerge's own warnings as one `warning: <message>` line; others as Python shows them."""
    if any(Path(filename).resolve().is_relative_to(own) for own in _OWN):
        return f"warning: {message}\n"
    return _format_default(message, category, filename, lineno, line)


if __name__ == "__main__":
    sys.exit(main())
