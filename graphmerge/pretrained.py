"""Hugging Face `save_pretrained` folders: which files they hold, their weights, the model.

A folder holds config.json and either one weights file (model.safetensors or pytorch_model.bin)
or an index (`*.index.json`) naming shards. Nothing is downloaded and pickled weights load with
`weights_only=True` (through `graphmerge.loading.load_state_dict`).

Example: `load_pretrained("runs/bert_a")` gives the model config.json names, in eval mode.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from torch import Tensor

from graphmerge.errors import CheckpointError
from graphmerge.loading import load_state_dict, load_weights

__all__ = ["load_pretrained", "pretrained_files", "read_pretrained_dir"]

_PRETRAINED_FILES = ("model.safetensors", "pytorch_model.bin")
_PRETRAINED_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _shards(index: Path) -> list[Path]:
    """The shard files a `*.index.json` names (its `weight_map` values), beside the index."""
    import json

    try:
        shards = json.loads(index.read_text())["weight_map"].values()
        return [index.parent / str(s) for s in sorted(set(shards))]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"index file {str(index)!r} is not a weights index (a JSON 'weight_map' of parameter "
            f"names to shard files): {type(exc).__name__}: {exc}"
        ) from exc


def pretrained_files(path: Path) -> list[Path]:
    """Every file of a `save_pretrained` folder that loading it may read (those that exist)."""
    files = [path / "config.json", *(path / n for n in _PRETRAINED_FILES)]
    for index in (path / n for n in _PRETRAINED_INDEXES):
        if index.is_file():
            files.append(index)
            with contextlib.suppress(CheckpointError):  # reported when the folder is loaded
                files += _shards(index)
    return [f for f in files if f.exists()]


def read_pretrained_dir(path: Path) -> dict[str, Tensor]:
    """Weights of a Hugging Face `save_pretrained` folder (single file or sharded), read safely."""
    for name in _PRETRAINED_FILES:
        if (path / name).is_file():
            return load_state_dict(path / name)
    for name in _PRETRAINED_INDEXES:
        if (path / name).is_file():
            state: dict[str, Tensor] = {}
            for shard in _shards(path / name):
                state.update(load_state_dict(shard))
            return state
    raise CheckpointError(
        f"folder {str(path)!r} holds no weights: expected one of "
        f"{', '.join(_PRETRAINED_FILES + _PRETRAINED_INDEXES)}"
    )


def load_pretrained(path: str | os.PathLike):
    """A Hugging Face model from a local `save_pretrained` folder (needs transformers).

    The class is the one the folder's config.json names (`architectures`); nothing is
    downloaded (`local_files_only=True`) and pickled weights load with `weights_only=True`.
    The model is built with `use_cache=False`: a decoder returns no KV cache, so it can be traced
    and merged (merging needs only the outputs). Returns the model in eval mode.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{str(path)!r} is not a save_pretrained folder (no config.json)")
    try:
        import transformers
    except ImportError as exc:
        raise CheckpointError(f"loading {str(path)!r} needs the transformers package") from exc
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    if getattr(config, "use_cache", None):
        config.use_cache = False
    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if names else transformers.AutoModel
    if cls is None:
        raise CheckpointError(f"{str(path)!r}: transformers has no class {names[0]!r}")
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    load_weights(model, read_pretrained_dir(path), str(path))
    return model.eval()
