"""`export_onnx`: a merged (or any) model to one ONNX file, checked by onnxruntime.

    path = gm.export_onnx(merged, example_inputs, "merged.onnx")

Weights and the model's outputs on the example must be finite. The torch.export-based exporter
(`torch.onnx.export(..., dynamo=True)`) writes a single file (`external_data=False`) whose outputs
carry the model's names (`logits`, `last_hidden_state`; `output_0`, ... for tuples) and whose
inputs have a dynamic `batch` axis, plus a dynamic `sequence` axis (axis 1) for text models
(integer token-id inputs; `decoder_sequence` for an encoder-decoder's decoder ids). onnxruntime then runs it on the example and on inputs of other
sizes, and every output must match torch within tolerance. The file is written to a temporary
name beside the target, with the umask's mode, and renamed only once it passed. What the
exporter logs on the way (skipped torchvision ops, constant-folding attempts) is not shown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import GetAttrKey, MappingKey, SequenceKey, tree_flatten_with_path

from graphmerge.errors import GraphMergeError, InputError
from graphmerge.loading import staged_outputs
from graphmerge.trace import (
    Inputs,
    dynamic_axes,
    eval_mode,
    normalize_inputs,
    sequence_axes,
    without_kv_cache,
)

__all__ = ["ExportError", "export_onnx", "onnx_output_names"]

_QUIET = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "onnxscript", "onnx_ir")


class ExportError(GraphMergeError):
    """The model could not be exported to ONNX, or onnxruntime disagrees with torch."""


# ---------------------------------------------------------------------------------------------
# what goes in and comes out


def onnx_output_names(outputs) -> list[str]:
    """Names for the tensors in `outputs`, in the exporter's order (pytree leaves).

    A dict or Hugging Face `ModelOutput` gives its keys (`logits`, `last_hidden_state`); a
    Tensor gives `output_0`, a tuple `output_0, output_1, ...`; nested parts join with `_`.
    """
    names: list[str] = []
    for path, leaf in tree_flatten_with_path(outputs)[0]:
        if not isinstance(leaf, torch.Tensor):
            continue
        parts = [_key_text(k) for k in path] or ["0"]
        if not path or isinstance(path[0], SequenceKey):
            parts[0] = f"output_{parts[0]}"
        name = re.sub(r"[^A-Za-z0-9_.]", "_", "_".join(parts))
        while name in names:
            name += "_"
        names.append(name)
    return names


def _key_text(key) -> str:
    if isinstance(key, MappingKey):
        return str(key.key)
    if isinstance(key, SequenceKey):
        return str(key.idx)
    if isinstance(key, GetAttrKey):
        return key.name
    return str(key)


def _dynamic_shapes(args: tuple, kwargs: dict, sequence: bool):
    """Axis 0 of every tensor input is `batch`; for text models axis 1 is `sequence`."""
    shapes = dynamic_axes(args, kwargs, sequence)
    if shapes is None:
        raise ExportError("a dynamic batch needs inputs either all positional or all keyword")
    return shapes


def _resize(inputs: tuple[tuple, dict], sequence: bool) -> tuple[tuple, dict]:
    """The same inputs with one more row (the first repeated) and, when `sequence`, one token
    fewer on every sequence axis of `dynamic_axes` (one more where there is only one)."""
    args, kwargs = inputs
    spec = dynamic_axes(args, kwargs, sequence) or ()
    specs = spec.values() if isinstance(spec, dict) else spec

    def resize(v, axes):
        if not axes:
            return v
        v = torch.cat([v, v[:1]], dim=0)
        if 1 in axes:
            v = v[:, :-1] if v.shape[1] > 1 else torch.cat([v, v], dim=1)
        return v

    if kwargs:
        return args, {k: resize(v, ax) for (k, v), ax in zip(kwargs.items(), specs, strict=True)}
    return tuple(resize(a, ax) for a, ax in zip(args, specs, strict=True)), kwargs


def _check_finite(model: nn.Module, reference: list[torch.Tensor], names: list[str]) -> None:
    """Refuse weights or example outputs holding NaN or inf: such a file would compute NaN."""
    name = type(model).__name__
    bad = [
        f"{k} ({int((~v.isfinite()).sum())} of {v.numel()})"
        for k, v in model.state_dict().items()
        if v.is_floating_point() and not bool(v.isfinite().all())
    ]
    if bad:
        raise InputError(
            f"{name} has weights that are not finite (NaN or inf) in {len(bad)} tensors: "
            f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. Check the checkpoint or "
            "the merge that made it; an exported file would compute NaN"
        )
    bad = [
        f"{n} ({int((~r.isfinite()).sum())} of {r.numel()} values)"
        for n, r in zip(names, reference, strict=True)
        if r.is_floating_point() and not bool(r.isfinite().all())
    ]
    if bad:
        raise InputError(
            f"{name}'s outputs on the example inputs are not finite (NaN or inf): "
            f"{', '.join(bad)}. Check the weights and the example inputs"
        )


# ---------------------------------------------------------------------------------------------
# export and check


def _unsupported(exc: BaseException) -> str:
    text = str(exc)
    for line in text.splitlines():
        if (
            "Unsupported" in line
            or "unsupported" in line
            or "not supported" in line
            or "No decompositions registered" in line
            or "OnnxExporterError" in line
        ):
            return line.strip()[:300]
    return (text.strip().splitlines() or [type(exc).__name__])[0][:300]


@contextlib.contextmanager
def _quiet():
    """Hide the exporter's log lines and warnings; they are not the user's business."""
    loggers = [logging.getLogger(n) for n in _QUIET]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export(model: nn.Module, args: tuple, kwargs: dict, names: list[str], dynamic: str):
    """`dynamic`: "sequence" (batch and, for text models, sequence), "batch" or "static"."""
    shapes = _dynamic_shapes(args, kwargs, dynamic == "sequence") if dynamic != "static" else None
    return torch.onnx.export(
        model,
        args,
        kwargs=kwargs or None,
        dynamo=True,
        external_data=False,
        verbose=False,
        output_names=names,
        dynamic_shapes=shapes,
    )


def _export_any(model: nn.Module, args: tuple, kwargs: dict, names: list[str], dynamic: bool):
    """Export with the most dynamic axes that work: (program, kind, why the first try failed)."""
    if not dynamic:
        tries = ["static"]
    elif sequence_axes(args, kwargs):
        tries = ["sequence", "batch", "static"]
    else:
        tries = ["batch", "static"]
    failures: list[BaseException] = []
    for kind in tries:
        try:
            return _export(model, args, kwargs, names, kind), kind, failures[:1]
        except Exception as exc:  # noqa: BLE001 (try the next, less dynamic export)
            failures.append(exc)
    raise ExportError(
        f"torch.onnx.export failed on {type(model).__name__}: {_unsupported(failures[-1])}"
    ) from failures[-1]


def _run_ort(path: Path, args: tuple, kwargs: dict) -> list:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    values = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(values):
        raise ExportError(
            f"the ONNX graph takes {len(names)} inputs, the model was given {len(values)} tensors"
        )
    return session.run(None, {n: v.detach().cpu().numpy() for n, v in zip(names, values)})


def _outputs(model: nn.Module, args: tuple, kwargs: dict) -> tuple[list[torch.Tensor], list[str]]:
    """The model's output tensors on these inputs (pytree order) and their ONNX names."""
    with torch.no_grad():
        out = model(*args, **kwargs)
    tensors = [t for _, t in tree_flatten_with_path(out)[0] if isinstance(t, torch.Tensor)]
    return tensors, onnx_output_names(out)


def _compare(
    model: nn.Module, path: Path, args: tuple, kwargs: dict, rtol: float, atol: float, what: str
) -> float:
    ref, names = _outputs(model, args, kwargs)
    got = _run_ort(path, args, kwargs)
    if len(got) != len(ref):
        raise ExportError(f"onnxruntime returned {len(got)} outputs, torch {len(ref)} ({what})")
    worst = 0.0
    for name, r, g in zip(names, ref, got, strict=True):
        g = torch.as_tensor(g)
        if tuple(g.shape) != tuple(r.shape):
            raise ExportError(
                f"output {name!r} has shape {tuple(g.shape)} in onnxruntime, "
                f"{tuple(r.shape)} in torch ({what})"
            )
        diff = (g.to(torch.float64) - r.to(torch.float64)).abs()
        bound = atol + rtol * r.to(torch.float64).abs()
        if (diff > bound).any():
            raise ExportError(
                f"onnxruntime differs from torch on output {name!r} ({what}): max "
                f"abs difference {diff.max().item():.3g} (rtol {rtol}, atol {atol})"
            )
        worst = max(worst, diff.max().item() if diff.numel() else 0.0)
    return worst


def export_onnx(
    model: nn.Module,
    example_inputs: Inputs,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> Path:
    """Export `model` to the ONNX file `path`, verified with onnxruntime; returns the path.

    dynamic_batch: make axis 0 of every input dynamic (and axis 1 of token-id inputs and of the
    inputs sharing their length) and check other sizes too; falls back to a batch-only, then a
    static export (with a warning) when the model cannot take them. Raises InputError for
    non-finite weights or outputs, ExportError naming the unsupported op or the output that
    differs; no file is left behind.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"expected an nn.Module, got {type(model).__name__}")
    target = Path(path)
    if target.suffix != ".onnx":
        raise InputError(f"{str(path)!r}: the output file name must end in .onnx")
    args, kwargs = normalize_inputs(example_inputs)
    with eval_mode(model), without_kv_cache(model), staged_outputs({"": target}) as tmp:
        reference, names = _outputs(model, args, kwargs)
        _check_finite(model, reference, names)
        with _quiet():
            program, kind, failed = _export_any(model, args, kwargs, names, dynamic_batch)
            program.save(str(tmp[""]))
        if dynamic_batch and kind == "static":
            warnings.warn(
                f"{type(model).__name__} could not be exported with a dynamic batch axis "
                f"({_unsupported(failed[0])}); the ONNX file has a fixed batch size",
                stacklevel=2,
            )
        _compare(model, tmp[""], args, kwargs, rtol, atol, "example inputs")
        if kind != "static":
            other = _resize((args, kwargs), kind == "sequence")
            _compare(model, tmp[""], *other, rtol, atol, "other input sizes")
    return target.resolve()
