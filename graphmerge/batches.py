"""Random batches of model inputs shaped like an example: calibration data without a data set.

`graphmerge merge` uses them when a config gives `data: {input_shape: ...}` instead of a factory.

    >>> import torch
    >>> from graphmerge.batches import random_batches
    >>> batches = random_batches({"input_ids": torch.tensor([[3, 7, 9]])}, batches=2, size=4)
    >>> [tuple(b["input_ids"].shape) for b in batches]
    [(4, 3), (4, 3)]
    >>> bool(batches[0]["input_ids"].max() <= 9)
    True
"""

from __future__ import annotations

import torch

from graphmerge.trace import Inputs

__all__ = ["random_batches"]


def random_batches(
    example: Inputs, batches: int = 4, size: int | None = None, seed: int = 100
) -> list:
    """`batches` random inputs shaped like `example` (a Tensor, tuple or dict of Tensors).

    Floating tensors are standard normal; integer tensors (token ids) are drawn from
    [0, the example's maximum]. `size` replaces the batch axis (default: the example's). Batch
    `s` is drawn from a generator seeded with `seed + s`, so the same arguments give the same
    batches. Returns a list of values of the example's kind.
    """
    out = []
    for s in range(batches):
        gen = torch.Generator().manual_seed(seed + s)

        def make(t, gen=gen):
            shape = ((size if size is not None else t.shape[0]), *t.shape[1:]) if t.dim() else ()
            if t.is_floating_point():
                return torch.randn(shape, generator=gen)
            return torch.randint(0, int(t.max()) + 1, shape, generator=gen, dtype=t.dtype)

        if isinstance(example, torch.Tensor):
            out.append(make(example))
        elif isinstance(example, dict):
            out.append({k: make(v) for k, v in example.items()})
        else:
            out.append(tuple(make(v) for v in example))
    return out
