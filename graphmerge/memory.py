"""Memory sizes and the plan a merge runs under (see `graphmerge.passes.plan_merge`).

>>> parse_bytes("8GB"), parse_bytes("512 MiB"), format_bytes(3 * 2**30)
(8000000000, 536870912, '3.0 GiB')
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from graphmerge.errors import InputError

__all__ = [
    "MARGIN",
    "SLICE_ELEMENTS",
    "MemoryPlan",
    "available_memory",
    "format_bytes",
    "parse_bytes",
    "resident_bytes",
    "slices",
]

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_IEC = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


# Under a tight budget 1/MARGIN of it is left unplanned: allocator slack, memory freed but not
# yet returned by the process, the interpreter's own growth.
MARGIN = 16
# Entries per slice when a large tensor is worked on a slice at a time (the rewrite, the weight
# vectors of an embedding table): its float64 temporaries stay about 32 MiB each.
SLICE_ELEMENTS = 2**22


@dataclass(frozen=True)
class MemoryPlan:
    """How much memory a merge needs, and how its statistics are split to fit the budget.

    held: bytes the process held when the plan was made (models, traced program);
    stages: extra bytes each stage needs at its peak; budget: the limit (bytes);
    waves: the groups whose statistics are collected in each pass over the data;
    similarity_bytes: how much of the groups' similarity matrices stays in memory (the rest
    waits on disk until the solve reads it); None: all of it.
    """

    held: int
    stages: dict[str, int]
    budget: int
    waves: tuple[tuple[str, ...], ...]
    similarity_bytes: int | None = None

    @property
    def estimate_bytes(self) -> int:
        """The merge's estimated peak resident memory."""
        return self.held + max(self.stages.values(), default=0)

    def describe(self) -> str:
        peak = max(self.stages, key=self.stages.get) if self.stages else "-"
        waves = f", statistics in {len(self.waves)} passes" if len(self.waves) > 1 else ""
        return (
            f"merge needs about {format_bytes(self.estimate_bytes)} (peak in {peak}; budget "
            f"{format_bytes(self.budget)}{waves})"
        )


def parse_bytes(value: float | str) -> int:
    """Bytes from an int or a string like "8GB", "512 MiB", "1.5g"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise InputError(f"a memory size must be positive, got {value}")
        return int(value)
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?\s*", str(value).lower())
    if not found:
        raise InputError(f"memory size {value!r}: expected e.g. '8GB', '512MiB' or bytes")
    number, unit = float(found.group(1)), found.group(2) or ""
    scale = _IEC[unit] if unit in _IEC else _UNITS[unit]
    if number <= 0:
        raise InputError(f"a memory size must be positive, got {value!r}")
    return int(number * scale)


def format_bytes(size: float) -> str:
    if size >= 2**29:
        return f"{size / 2**30:.1f} GiB"
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def _meminfo() -> dict[str, int]:
    try:
        with open("/proc/meminfo") as f:
            return {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ":" in ln}
    except OSError:
        return {}


def resident_bytes() -> int:
    """This process's resident memory (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def available_memory() -> int:
    """The default budget: what this process holds plus 90% of what the machine has free
    (at most 90% of its memory); 8 GiB where /proc/meminfo is missing."""
    info = _meminfo()
    if "MemAvailable" not in info:
        return 8 * 2**30
    return int(min(0.9 * info["MemTotal"], resident_bytes() + 0.9 * info["MemAvailable"]))


def slices(shape, keep, limit: int) -> list[tuple[int, int, int] | None]:
    """How to cut a tensor of `shape` into slices of about `limit` entries along its longest
    axis not in `keep`: [(axis, start, length), ...]; [None] (the whole tensor) when it has
    `limit` entries or fewer, or every axis is in `keep`.

    >>> slices((10, 4), {1}, 16), slices((10, 4), {0, 1}, 16), slices((3, 4), set(), 16)
    ([(0, 0, 4), (0, 4, 4), (0, 8, 2)], [None], [None])
    """
    numel = 1
    for size in shape:
        numel *= size
    free = [d for d in range(len(shape)) if d not in keep]
    if numel <= limit or not free:
        return [None]
    axis = max(free, key=lambda d: shape[d])
    step = max(1, limit * shape[axis] // numel)
    return [(axis, a, min(step, shape[axis] - a)) for a in range(0, shape[axis], step)]
