"""A merge across processes on torch.distributed: the few collectives the passes call.

When a default process group of more than one rank exists (`torchrun`, or
`torch.distributed.init_process_group` in the caller), `gm.merge` runs on every rank with that
rank's shard of the calibration data and a `Team` in `program.team`:

- statistics (activation moments, BatchNorm running statistics) are float64 sums and counts,
  summed across ranks (`sum_arrays`: one all-reduce for the small ones, a reduce to the owner
  rank for each large one; `sum_exact` when every rank must hold the same bits);
- each group has an owner rank (`balance`: the largest first, to the least loaded rank); owners
  solve, `on_owner` / `gather` share the results, so every rank ends with the same assignments;
- `agree` runs a step on every rank and, when any rank raised, raises `RankError` naming the
  ranks on all of them (no rank waits forever in a collective another rank never reaches);
- `check_same` refuses models or options that differ between ranks.

Without a process group (`current_team()` is None) none of this runs.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from graphmerge.errors import RankError

__all__ = ["SMALL_BYTES", "RankError", "Team", "balance", "current_team", "tensor_digest"]

T = TypeVar("T")
# Statistics at most this large are summed on every rank in one all-reduce; larger ones are
# reduced to their owner rank only (one copy instead of one per rank).
SMALL_BYTES = 1 << 20


def current_team() -> Team | None:
    """The `Team` of the default process group, or None (no group, or a group of one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Team(dist.get_rank(), dist.get_world_size())


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of names, dtypes, shapes and bytes of `tensors` (a state dict)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def balance(sizes: dict[Hashable, int], ranks: int) -> dict[Hashable, int]:
    """Key -> rank: largest first, each to the rank with the least total so far (ties: the
    lowest rank; keys of equal size in the order given)."""
    load = [0] * ranks
    out = {}
    for key in sorted(sizes, key=lambda k: -sizes[k]):
        rank = min(range(ranks), key=lambda r: (load[r], r))
        out[key] = rank
        load[rank] += max(int(sizes[key]), 1)
    return out


def _collective(method):
    """A Team method whose collective fails when a peer died or timed out: `RankError`."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except RuntimeError as exc:  # gloo/NCCL: a peer closed its connection, or the timeout
            raise RankError(
                f"rank {self.rank} of {self.size} lost the other ranks (one failed, left or "
                f"took longer than the process group's timeout; see its messages): {exc}"
            ) from exc

    return run


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


@dataclass(frozen=True)
class Team:
    """This process's place in the default process group: `rank` of `size`."""

    rank: int
    size: int

    @property
    def device(self) -> torch.device:
        """Where collective tensors live: the current GPU for NCCL, else the CPU."""
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    @_collective
    def gather(self, value: Any) -> list:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        out: list = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    @_collective
    def broadcast(self, value: Any, src: int) -> Any:
        """`value` of rank `src` (picklable), on every rank."""
        box = [value if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def agree(self, step: str, fn: Callable[[], T]) -> T:
        """fn() on this rank; if it raised on any rank, `RankError` naming them on every rank."""
        error = None
        try:
            result, status = fn(), None
        except Exception as exc:  # noqa: BLE001 (every rank must hear of it, then raise)
            result, status, error = None, f"{type(exc).__name__}: {exc}", exc
        statuses = self.gather(status)
        failed = [r for r, s in enumerate(statuses) if s is not None]
        if failed:
            why = "; ".join(f"rank {r}: {statuses[r]}" for r in failed)
            raise RankError(f"{step} failed on {_ranks(failed)} of {self.size}: {why}") from error
        return result

    def on_owner(self, owner: int, step: str, fn: Callable[[], T]) -> T:
        """fn() run on rank `owner` only; its result (or its error, as `RankError`) on every
        rank."""
        error, payload = None, None
        if self.rank == owner:
            try:
                payload = (None, fn())
            except Exception as exc:  # noqa: BLE001 (sent to every rank, then raised)
                payload, error = (f"{type(exc).__name__}: {exc}", None), exc
        status, result = self.broadcast(payload, owner)
        if status is not None:
            raise RankError(f"{step} failed on rank {owner} of {self.size}: {status}") from error
        return result

    def check_same(self, digests: dict[str, str]) -> None:
        """`RankError` naming the ranks when any entry of `digests` (what -> hash) differs
        between ranks, e.g. {"model 0": tensor_digest(state), "options": ...}."""
        every = self.gather(digests)
        problems = []
        for what in sorted({k for d in every for k in d}):
            values = [d.get(what) for d in every]
            if len(set(values)) > 1:
                ref = values[0]
                odd = [r for r, v in enumerate(values) if v != ref]
                problems.append(f"{what} differs on {_ranks(odd)} from rank 0")
        if problems:
            raise RankError(
                f"the ranks must merge the same models with the same options: "
                f"{'; '.join(problems)}. Give every rank the same config and weights files"
            )

    @_collective
    def extreme(self, value: int, largest: bool) -> int:
        """The largest (or smallest) of every rank's integer `value`."""
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if largest else dist.ReduceOp.MIN)
        return int(t.item())

    @_collective
    def sum_arrays(self, arrays: list[np.ndarray], owner: int | None = None) -> None:
        """Sum contiguous float64 `arrays` over ranks, in place: on every rank (owner None, one
        all-reduce for them all) or on `owner` only (one reduce per array; what the other ranks'
        arrays hold afterwards is undefined)."""
        if owner is None:
            flat = np.concatenate([a.ravel(order="K") for a in arrays]) if arrays else None
            if flat is None or flat.size == 0:
                return
            t = torch.from_numpy(flat).to(self.device)
            dist.all_reduce(t)
            flat = t.cpu().numpy()
            start = 0
            for a in arrays:
                a.ravel(order="K")[:] = flat[start : start + a.size]
                start += a.size
            return
        for a in arrays:
            view = a.ravel(order="K")
            assert np.shares_memory(view, a) or a.size == 0, "sum_arrays needs contiguous arrays"
            t = torch.from_numpy(view).to(self.device)
            dist.reduce(t, dst=owner)
            if self.rank == owner and t.data_ptr() != torch.from_numpy(view).data_ptr():
                view[:] = t.cpu().numpy()

    def sum_exact(self, values: np.ndarray) -> np.ndarray:
        """Σ over ranks of a float64 vector, added in rank order: the same bits on every rank."""
        every = self.gather(np.asarray(values, dtype=np.float64))
        out = np.zeros_like(every[0])
        for v in every:
            out += v
        return out
