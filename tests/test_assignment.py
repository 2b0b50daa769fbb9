"""graphmerge.assignment: the row lookup behind every axis map."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from graphmerge.assignment import _find_rows, _find_rows_unique


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    offset=st.integers(-5, 5),
)
def test_find_rows_by_numbers_equals_the_row_wise_unique(seed, sizes, offset):
    """The mixed-radix lookup gives every row's index in the table, -1 for rows the table lacks
    (outside its range in some column, or inside it but absent), as np.unique(axis=0) does."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1)
    grid = grid.reshape(-1, len(sizes)) + offset
    table = grid[rng.choice(len(grid), size=rng.integers(1, len(grid) + 1), replace=False)]
    strays = rng.integers(offset - 3, offset + 15, size=(rng.integers(0, 20), len(sizes)))
    rows = np.concatenate([table[rng.permutation(len(table))], strays]).astype(np.int64)
    got = _find_rows(table.astype(np.int64), rows)
    np.testing.assert_array_equal(got, _find_rows_unique(table.astype(np.int64), rows))
    np.testing.assert_array_equal(table[got[: len(table)]], rows[: len(table)])
