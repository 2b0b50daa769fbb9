"""Front end: `torch.export.export(..., strict=False)` to an ATen-level torch.fx graph.

One front end means one rule table: parameters are lifted to placeholders, each node carries its
fake-tensor value (`meta["val"]`), its module stack and its source line.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from dataclasses import dataclass, field

import torch
from torch import nn

from graphmerge.errors import InputError, TraceError

__all__ = [
    "Inputs",
    "Traced",
    "call_model",
    "check_batch",
    "dynamic_axes",
    "eval_mode",
    "normalize_inputs",
    "sequence_axes",
    "trace",
    "without_kv_cache",
]

Inputs = torch.Tensor | tuple | dict


def normalize_inputs(example_inputs: Inputs, what: str = "example_inputs") -> tuple[tuple, dict]:
    """Split inputs into (args, kwargs): a Tensor, a tuple/list of Tensors, or a dict of kwargs."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    if isinstance(example_inputs, dict):
        bad = [k for k in example_inputs if not isinstance(k, str)]
        if bad:
            raise InputError(f"{what}: dict keys must be argument names (str), got {bad[:3]}")
        return (), dict(example_inputs)
    raise InputError(
        f"{what} must be a Tensor, a tuple of Tensors or a dict of keyword Tensors, "
        f"got {type(example_inputs).__name__}"
    )


def call_model(model: nn.Module, inputs: Inputs):
    args, kwargs = normalize_inputs(inputs)
    return model(*args, **kwargs)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Put every submodule in eval mode and restore each one's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def without_kv_cache(model: nn.Module):
    """Turn off a Hugging Face decoder's KV cache (`config.use_cache`) while the block runs.

    A decoder built with `use_cache=True` (every causal LM on the hub) returns a `DynamicCache`
    that torch.export cannot hold; merging needs only the outputs. The flag of every submodule's
    config is restored afterwards, so the user's model is left as it was.
    """
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None}
    changed = [c for c in configs.values() if getattr(c, "use_cache", None) is True]
    for c in changed:
        c.use_cache = False
    try:
        yield model
    finally:
        for c in changed:
            c.use_cache = True


@dataclass
class Traced:
    """The exported program and what each placeholder stands for.

    placeholders: placeholder name -> (kind, target) with kind in
        {"param", "buffer", "constant", "input"}; target is the state-dict name for params and
        persistent buffers, the buffer/constant name otherwise, the input's name for inputs.
    aliases: state-dict name -> other state-dict names holding the same tensor (tied weights).
    """

    program: torch.export.ExportedProgram
    model_class: str
    placeholders: dict[str, tuple[str, str]]
    aliases: dict[str, list[str]] = field(default_factory=dict)

    @property
    def graph(self) -> torch.fx.Graph:
        return self.program.graph_module.graph


def _user_frame(exc: BaseException) -> str:
    """The last traceback frame outside torch/graphmerge: where the user's code failed."""
    frames = traceback.extract_tb(exc.__traceback__)
    skip = (os.sep + "torch" + os.sep, os.sep + "graphmerge" + os.sep, "<frozen", "contextlib")
    user = [f for f in frames if not any(s in f.filename for s in skip)]
    if not user:
        return ""
    f = user[-1]
    line = f" `{f.line.strip()}`" if f.line else ""
    return f" at {f.filename}:{f.lineno}{line}"


def _check_inputs(model: nn.Module, args: tuple, kwargs: dict) -> None:
    for name, value in [*enumerate(args), *kwargs.items()]:
        if (
            not isinstance(value, torch.Tensor)
            and value is not None
            and not isinstance(value, (int, float, bool))
        ):
            raise InputError(
                f"example input {name!r} for {type(model).__name__} is a {type(value).__name__}; "
                "graphmerge needs Tensors (or None / Python scalars)"
            )
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    except Exception as exc:  # the user's forward failed on these inputs
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        shapes += [
            f"{k}={tuple(v.shape)}" for k, v in kwargs.items() if isinstance(v, torch.Tensor)
        ]
        raise InputError(
            f"example inputs do not fit {type(model).__name__} (input shapes {shapes}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            f"{_user_frame(exc)}. Pass inputs the model's forward accepts."
        ) from exc


def _what_to_do(exc: BaseException) -> str:
    """The first line of torch.export's error, then what the user can change."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Cache" in first and "in output" in first:  # a KV cache the model still returns
        return (
            f"{first.split(',')[0]}. The model returns a KV cache: call it without one "
            "(use_cache=False in the inputs or config.use_cache = False), or trace a module "
            "that returns only tensors."
        )
    return (
        f"{first[:500]}. Make the forward traceable (no data-dependent Python control flow on "
        "tensor values, no unsupported Python objects), or trace a submodule that is."
    )


def sequence_axes(args: tuple, kwargs: dict) -> dict[int, str]:
    """A text model's sequence lengths, each with its axis name: axis 1 of every integer input
    of rank >= 2 (token ids, masks) is a sequence. The first length is `sequence`; another one
    (an encoder-decoder's decoder ids) is named after its input (`decoder_input_ids` ->
    `decoder_sequence`), or `sequence_<k>`. Empty for models without token ids."""
    named = [*enumerate(args), *kwargs.items()]
    out: dict[int, str] = {}
    for key, v in named:
        if not isinstance(v, torch.Tensor) or v.dim() < 2 or v.is_floating_point():
            continue
        if v.shape[1] in out:
            continue
        prefix = str(key).removesuffix("input_ids") if isinstance(key, str) else ""
        if not out:
            out[v.shape[1]] = "sequence"
        elif prefix and prefix != key:
            out[v.shape[1]] = f"{prefix}sequence"
        else:
            out[v.shape[1]] = f"sequence_{len(out)}"
    return out


def dynamic_axes(args: tuple, kwargs: dict, sequence: bool):
    """The symbolic axes of each input: `{0: "batch"}` for every tensor and, when `sequence`,
    `{1: name}` for every input whose axis 1 has one of `sequence_axes`'s lengths (the ids,
    the attention mask). Returns a tuple (positional inputs) or dict (keyword inputs) of those
    dicts (None for non-tensors), or None when the inputs mix both kinds."""
    if kwargs and args:
        return None
    lengths = sequence_axes(args, kwargs) if sequence else {}

    def axes(v) -> dict[int, str] | None:
        if not isinstance(v, torch.Tensor) or v.dim() == 0:
            return None
        out = {0: "batch"}
        if v.dim() >= 2 and v.shape[1] in lengths:
            out[1] = lengths[v.shape[1]]
        return out

    if kwargs:
        return {k: axes(v) for k, v in kwargs.items()}
    return tuple(axes(a) for a in args)


def _auto(spec):
    """`dynamic_axes`'s names as torch.export's automatic dynamic dimensions."""
    return None if spec is None else {axis: torch.export.Dim.AUTO for axis in spec}


def trace(
    model: nn.Module,
    example_inputs: Inputs,
    dynamic_batch: bool = False,
    dynamic_sequence: bool = False,
) -> Traced:
    """Export `model` in eval mode on `example_inputs`; the model is left as it was.

    dynamic_batch: let axis 0 of the inputs stay symbolic (for modules built from the graph);
    dynamic_sequence: with it, axis 1 of token-id inputs and of the inputs of their length too
    (`dynamic_axes`). A model that fixes such a size anyway keeps it (torch.export's Dim.AUTO).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"expected an nn.Module, got {type(model).__name__}")
    args, kwargs = normalize_inputs(example_inputs)
    name = type(model).__name__
    with eval_mode(model), without_kv_cache(model):
        _check_inputs(model, args, kwargs)
        try:
            dims = None
            if dynamic_batch and (spec := dynamic_axes(args, kwargs, dynamic_sequence)):
                dims = (
                    {k: _auto(v) for k, v in spec.items()}
                    if isinstance(spec, dict)
                    else tuple(_auto(v) for v in spec)
                )
            program = torch.export.export(model, args, kwargs, dynamic_shapes=dims, strict=False)
        except Exception as exc:
            raise TraceError(
                f"torch.export could not trace {name}{_user_frame(exc)}: {_what_to_do(exc)}"
            ) from exc
    sig = program.graph_signature
    non_persistent = set(getattr(sig, "non_persistent_buffers", ()))
    placeholders: dict[str, tuple[str, str]] = {}
    for node_name, target in sig.inputs_to_parameters.items():
        placeholders[node_name] = ("param", target)
    for node_name, target in sig.inputs_to_buffers.items():
        kind = "constant" if target in non_persistent else "buffer"
        placeholders[node_name] = (kind, target)
    for node_name, target in getattr(sig, "inputs_to_lifted_tensor_constants", {}).items():
        placeholders[node_name] = ("constant", target)
    for node_name, target in getattr(sig, "inputs_to_lifted_custom_objs", {}).items():
        placeholders[node_name] = ("constant", target)
    for node_name in sig.user_inputs:
        placeholders.setdefault(node_name, ("input", node_name))
    return Traced(program, name, placeholders, _aliases(model))


def _aliases(model: nn.Module) -> dict[str, list[str]]:
    """State-dict names that share storage (tied embeddings and heads)."""
    by_ptr: dict[tuple, list[str]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        if tensor.numel() == 0:
            continue
        by_ptr.setdefault((tensor.data_ptr(), tuple(tensor.shape), tensor.dtype), []).append(key)
    out: dict[str, list[str]] = {}
    for names in by_ptr.values():
        if len(names) > 1:
            for n in names:
                out[n] = [m for m in names if m != n]
    return out


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def check_batch(example: Inputs, batch: Inputs, index: int, model_name: str) -> None:
    """Raise `InputError` when calibration batch `index` is not shaped like `example`.

    Same kind (Tensor / tuple / dict), the same positional count or keyword names, and each
    tensor the same dtype and rank; sizes may differ (batch, sequence length).
    """
    where = f"calibration batch {index} for {model_name}"
    args, kwargs = normalize_inputs(batch, where)
    ref_args, ref_kwargs = normalize_inputs(example)
    if len(args) != len(ref_args) or set(kwargs) != set(ref_kwargs):
        raise InputError(
            f"{where} has {len(args)} positional inputs and keywords {sorted(kwargs)}, the "
            f"example has {len(ref_args)} and {sorted(ref_kwargs)}: give every batch the same "
            "inputs"
        )
    pairs = [*zip(range(len(args)), args, ref_args)]
    pairs += [(k, kwargs[k], ref_kwargs[k]) for k in sorted(kwargs)]
    for name, got, ref in pairs:
        if isinstance(ref, torch.Tensor) != isinstance(got, torch.Tensor) or (
            isinstance(ref, torch.Tensor) and (got.dtype != ref.dtype or got.dim() != ref.dim())
        ):
            raise InputError(
                f"{where}: input {name!r} is a {_describe(got)}, the example's is a "
                f"{_describe(ref)}; pass batches of the dtype and rank the model takes"
            )
