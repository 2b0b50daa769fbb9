"""Per-group similarity matrices held within a memory budget; beyond it, in temporary files.

    >>> import numpy as np
    >>> store = SimilarityStore(budget=0)      # everything goes to disk
    >>> store["layer1"] = np.eye(3)
    >>> float(store["layer1"].trace()), store.spilled
    (3.0, 1)
    >>> store.close()
    >>> kept = SimilarityStore()               # no limit: in memory ...
    >>> kept["layer1"] = np.eye(3)
    >>> kept.spill()                           # ... until the memory is needed elsewhere
    >>> kept.spilled, kept.held, float(kept["layer1"].sum())
    (1, 0, 3.0)
    >>> kept.close()

A merge whose statistics do not fit its memory budget keeps them here: each group's matrix is
written to a `.npy` file in a private temporary folder when the in-memory share is full, read
back when the solve visits the group, and the folder is removed when the store is closed or
garbage-collected. Across processes, a group whose statistics another rank holds (and solves)
is marked with `hold_elsewhere`: it is `in` the store, but reading it is an error.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["SimilarityStore"]


class SimilarityStore:
    """A mapping group name -> matrix, in memory up to `budget` bytes (None: no limit)."""

    def __init__(self, budget: int | None = None):
        self.budget = budget
        self._memory: dict[str, np.ndarray] = {}
        self._files: dict[str, Path] = {}
        self._folder: Path | None = None
        self._finalizer = None
        self._elsewhere: dict[str, int] = {}
        self.held = 0

    def __setitem__(self, name: str, matrix: np.ndarray) -> None:
        self.pop(name)
        if self.budget is None or self.held + matrix.nbytes <= self.budget:
            self._memory[name] = matrix
            self.held += matrix.nbytes
            return
        path = self._dir() / f"{len(self._files)}.npy"
        np.save(path, matrix, allow_pickle=False)
        self._files[name] = path

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._memory:
            return self._memory[name]
        if name in self._files:
            return np.load(self._files[name], allow_pickle=False)
        if name in self._elsewhere:
            raise KeyError(f"{name}: its statistics are held by rank {self._elsewhere[name]}")
        raise KeyError(name)

    def hold_elsewhere(self, name: str, rank: int) -> None:
        """Mark `name` as held by another rank (`rank`): `in` the store, not readable here."""
        self.pop(name)
        self._elsewhere[name] = int(rank)

    def pop(self, name: str) -> None:
        self._elsewhere.pop(name, None)
        if name in self._memory:
            self.held -= self._memory.pop(name).nbytes
        if name in self._files:
            self._files.pop(name).unlink(missing_ok=True)

    def __contains__(self, name: object) -> bool:
        return name in self._memory or name in self._files or name in self._elsewhere

    def __iter__(self) -> Iterator[str]:
        yield from self._memory
        yield from self._files

    def __len__(self) -> int:
        return len(self._memory) + len(self._files)

    def keys(self) -> list[str]:
        return list(self)

    def values(self) -> Iterator[np.ndarray]:
        return (self[name] for name in self)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        return ((name, self[name]) for name in self)

    def spill(self) -> None:
        """Move every matrix held in memory to disk (still readable), e.g. once the solve is
        done with them and the budget is needed for what comes next."""
        self.budget = 0
        for name in list(self._memory):
            self[name] = self._memory[name]

    @property
    def spilled(self) -> int:
        """How many matrices live on disk."""
        return len(self._files)

    def _dir(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="graphmerge-similarities-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._folder, True)
        return self._folder

    def close(self) -> None:
        """Drop every matrix and remove the temporary folder."""
        self._memory.clear()
        self._files.clear()
        self.held = 0
        if self._finalizer is not None:
            self._finalizer()
