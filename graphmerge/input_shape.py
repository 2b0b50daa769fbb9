"""Example inputs from a shape spec: `"2,3,32,32"`, or token ids `"1,16:int64:1000"`.

Used by `--input-shape` on the command line and by `input_shape:` in merge configs.

Example:
    >>> parse_input_shape("2,3,8,8").shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

import torch
from torch import Tensor

from graphmerge.errors import InputError

__all__ = ["parse_input_shape"]

_FLOAT_DTYPES = {
    "float": torch.float32,
    "float32": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
}
_INT_DTYPES = {
    "int": torch.int64,
    "long": torch.int64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "uint8": torch.uint8,
}


def parse_input_shape(spec: str) -> Tensor | tuple[Tensor, ...]:
    """Build example inputs from a shape spec: random normal floats, seeded 0.

    Grammar: inputs separated by `;`, each `dims[:dtype[:high]]` with comma-separated dims.
    A float dtype (default float32) gives `randn`; an integer dtype gives ids in `[0, high)`,
    e.g. token ids `"1,16:int64:1000"`. One input gives a Tensor, several a tuple.
    Raises `InputError` quoting the bad text.

    Example: `parse_input_shape("1,16:int64:1000;1,16:int64:2")` gives (input_ids, mask).
    """
    parts = [p.strip() for p in spec.split(";")]
    if not spec.strip() or any(not p for p in parts):
        raise InputError(
            f"bad input shape {spec!r}: expected e.g. '1,3,32,32' or '1,16:int64:1000'"
        )
    gen = torch.Generator().manual_seed(0)
    tensors = tuple(_one_input(p, spec, gen) for p in parts)
    return tensors[0] if len(tensors) == 1 else tensors


def _one_input(text: str, spec: str, gen: torch.Generator) -> Tensor:
    fields = [f.strip() for f in text.split(":")]
    where = f"bad input shape {text!r}" + (f" in {spec!r}" if text != spec.strip() else "")
    if len(fields) > 3:
        raise InputError(f"{where}: expected 'dims[:dtype[:high]]'")
    try:
        dims = [int(d) for d in fields[0].split(",")]
    except ValueError:
        raise InputError(
            f"{where}: dims must be comma-separated integers, like 1,3,32,32"
        ) from None
    if any(d <= 0 for d in dims):
        raise InputError(f"{where}: every dim must be a positive integer")
    dtype_name = fields[1].lower() if len(fields) > 1 else "float32"
    if dtype_name in _FLOAT_DTYPES:
        if len(fields) > 2:
            raise InputError(f"{where}: a bound ({fields[2]!r}) only applies to integer dtypes")
        return torch.randn(dims, generator=gen).to(_FLOAT_DTYPES[dtype_name])
    if dtype_name in _INT_DTYPES:
        if len(fields) < 3:
            raise InputError(
                f"{where}: an integer dtype needs an exclusive upper bound, e.g. "
                f"'{fields[0]}:{dtype_name}:1000' for token ids below 1000"
            )
        try:
            high = int(fields[2])
        except ValueError:
            raise InputError(f"{where}: the bound {fields[2]!r} is not an integer") from None
        if high <= 0:
            raise InputError(f"{where}: the bound must be positive")
        return torch.randint(0, high, dims, generator=gen, dtype=_INT_DTYPES[dtype_name])
    known = ", ".join(list(_FLOAT_DTYPES) + list(_INT_DTYPES))
    raise InputError(f"{where}: unknown dtype {fields[1]!r} (known: {known})")
