"""`export_onnx`: a merged (or any) model to one ONNX file, checked by onnxruntime.

    path = gm.export_onnx(merged, example_inputs, "merged.onnx")

The torch.export-based exporter (`torch.onnx.export(..., dynamo=True)`) writes a single file
(`external_data=False`) with a dynamic batch axis; onnxruntime then runs it on the example and on
a batch of another size, and every output must match torch within tolerance. The file is written
to a temporary name beside the target and renamed only once it passed.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from graphmerge.errors import GraphMergeError, InputError
from graphmerge.trace import Inputs, eval_mode, normalize_inputs, without_kv_cache

__all__ = ["ExportError", "export_onnx"]


class ExportError(GraphMergeError):
    """The model could not be exported to ONNX, or onnxruntime disagrees with torch."""


def _grow_batch(inputs: tuple[tuple, dict]) -> tuple[tuple, dict]:
    """The same inputs with one more row on the batch axis (the first row repeated)."""

    def grow(v):
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return torch.cat([v, v[:1]], dim=0)
        return v

    args, kwargs = inputs
    return tuple(grow(a) for a in args), {k: grow(v) for k, v in kwargs.items()}


def _dynamic_shapes(args: tuple, kwargs: dict):
    """Axis 0 of every tensor input is one shared `batch` dimension."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)

    def spec(v):
        return {0: batch} if isinstance(v, torch.Tensor) and v.dim() > 0 else None

    if kwargs and args:
        raise ExportError("a dynamic batch needs inputs either all positional or all keyword")
    if kwargs:
        return {k: spec(v) for k, v in kwargs.items()}
    return tuple(spec(a) for a in args)


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


def _export(model: nn.Module, args: tuple, kwargs: dict, dynamic: bool):
    return torch.onnx.export(
        model,
        args,
        kwargs=kwargs or None,
        dynamo=True,
        external_data=False,
        verbose=False,
        dynamic_shapes=_dynamic_shapes(args, kwargs) if dynamic else None,
    )


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


def _compare(
    model: nn.Module, path: Path, args: tuple, kwargs: dict, rtol: float, atol: float, what: str
) -> float:
    with torch.no_grad():
        ref = [t for t in tree_leaves(model(*args, **kwargs)) if isinstance(t, torch.Tensor)]
    got = _run_ort(path, args, kwargs)
    if len(got) != len(ref):
        raise ExportError(f"onnxruntime returned {len(got)} outputs, torch {len(ref)} ({what})")
    worst = 0.0
    for i, (r, g) in enumerate(zip(ref, got)):
        g = torch.as_tensor(g)
        if tuple(g.shape) != tuple(r.shape):
            raise ExportError(
                f"output {i} has shape {tuple(g.shape)} in onnxruntime, "
                f"{tuple(r.shape)} in torch ({what})"
            )
        diff = (g.to(torch.float64) - r.to(torch.float64)).abs()
        bound = atol + rtol * r.to(torch.float64).abs()
        if (diff > bound).any():
            raise ExportError(
                f"onnxruntime differs from torch on output {i} ({what}): max "
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

    dynamic_batch: make axis 0 of every input dynamic and check a second batch size too (falls
    back to a static export, with a warning, when the model cannot take a dynamic batch).
    Raises ExportError naming the unsupported op or the output that differs; no file is left.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"expected an nn.Module, got {type(model).__name__}")
    target = Path(path)
    if target.suffix != ".onnx":
        raise InputError(f"{str(path)!r}: the output file name must end in .onnx")
    args, kwargs = normalize_inputs(example_inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    name = type(model).__name__
    try:
        with eval_mode(model), without_kv_cache(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                program = _export(model, args, kwargs, dynamic_batch)
                dynamic = dynamic_batch
            except Exception as exc:
                if not dynamic_batch:
                    raise ExportError(
                        f"torch.onnx.export failed on {name}: {_unsupported(exc)}"
                    ) from exc
                try:
                    program = _export(model, args, kwargs, False)
                except Exception as exc2:
                    raise ExportError(
                        f"torch.onnx.export failed on {name}: {_unsupported(exc2)}"
                    ) from exc2
                warnings.warn(
                    f"{name} could not be exported with a dynamic batch axis "
                    f"({_unsupported(exc)}); the ONNX file has a fixed batch size",
                    stacklevel=2,
                )
                dynamic = False
            program.save(str(tmp))
            _compare(model, tmp, args, kwargs, rtol, atol, "example inputs")
            if dynamic:
                bigger = _grow_batch((args, kwargs))
                _compare(model, tmp, *bigger, rtol, atol, "a second batch size")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target.resolve()
