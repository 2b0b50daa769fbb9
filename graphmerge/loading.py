"""Reading what users hand to graphmerge: model factories, checkpoints, input specs; writing safely.

Everything here fails with a `GraphMergeError` subclass whose message names the offending spec or
file and says what to do, so the CLI can print it without a traceback.

Example:
    >>> from graphmerge.loading import parse_input_shape
    >>> parse_input_shape("2,3,8,8").shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from graphmerge.errors import CheckpointError, InputError

__all__ = [
    "PICKLE_SUFFIXES",
    "SAFETENSORS_SUFFIXES",
    "load_factory",
    "load_pretrained",
    "load_state_dict",
    "load_weights",
    "parse_input_shape",
    "save_atomic",
]

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model")
_SHOW = 5  # how many keys of each kind an error message lists
_file_modules = itertools.count()


# ---------------------------------------------------------------------------------------------
# factories


def load_factory(spec: str) -> Callable:
    """Resolve `package.module:factory` or `path/to/file.py:factory` to the callable it names.

    A file is imported by path under a unique module name (registered in `sys.modules` so that
    dataclasses and pickling inside it work), with its directory on `sys.path` while it runs.
    The attribute may be dotted (`models:Net.small`). Raises `InputError` naming the spec when the
    colon is missing, the file or module does not exist, importing it fails, or the attribute is
    missing or not callable.

    Example: `load_factory("examples/tiny_cnn.py:build")()` returns a fresh model.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise InputError(
            f"bad factory spec {spec!r}: expected 'package.module:factory' or "
            f"'path/to/file.py:factory' (a colon, then the name of a callable)"
        )
    if target.endswith(".py") or os.sep in target or "/" in target:
        module = _import_file(spec, Path(target))
    else:
        module = _import_module(spec, target)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(
                f"bad factory spec {spec!r}: {target!r} has no attribute {attr!r}"
                + _suggest(module)
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(
            f"bad factory spec {spec!r}: {attr!r} is a {type(obj).__name__}, not a callable"
        )
    return obj


def _import_file(spec: str, path: Path):
    """Import the Python file at `path` under a fresh module name; errors name `spec`."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise InputError(f"bad factory spec {spec!r}: file {str(path)!r} {what}")
    name = f"_graphmerge_factory_{next(_file_modules)}_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise InputError(f"bad factory spec {spec!r}: cannot import {str(path)!r} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise InputError(
            f"bad factory spec {spec!r}: importing {str(path)!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _import_module(spec: str, target: str):
    """Import module `target`; errors name `spec`."""
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise InputError(
                f"bad factory spec {spec!r}: no module named {exc.name!r} "
                f"(for a file, give its path ending in .py)"
            ) from exc
        raise InputError(f"bad factory spec {spec!r}: importing {target!r} failed: {exc}") from exc
    except Exception as exc:
        raise InputError(
            f"bad factory spec {spec!r}: importing {target!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _suggest(module) -> str:
    """A hint listing the public callables a module does define."""
    names = sorted(
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and callable(v)
        and getattr(v, "__module__", None) == module.__name__
    )
    return f" (it defines: {', '.join(names[:10])})" if names else ""


# ---------------------------------------------------------------------------------------------
# checkpoints


def load_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from `.safetensors` or a `.pt/.pth/.bin/.ckpt` file, on the CPU.

    Pickle files are read with `torch.load(..., weights_only=True)`, so a file that would run
    code when unpickled is refused (`CheckpointError` saying how to convert it). A checkpoint
    holding `{"state_dict": ...}` or `{"model": ...}` is unwrapped. Raises `CheckpointError`
    naming the file when it is missing, unreadable, or not a mapping of names to tensors.
    """
    path = Path(path)
    if path.is_dir():
        return _load_pretrained_dir(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise CheckpointError(f"weights file {str(path)!r} {what}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        data = _load_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        data = _load_pickle(path)
    else:
        known = ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)
        raise CheckpointError(
            f"weights file {str(path)!r}: unknown extension {path.suffix!r} "
            f"(expected one of {known})"
        )
    return _as_state_dict(data, path)


_PRETRAINED_FILES = ("model.safetensors", "pytorch_model.bin")
_PRETRAINED_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _load_pretrained_dir(path: Path) -> dict[str, Tensor]:
    """Weights of a Hugging Face `save_pretrained` folder (single file or sharded), read safely."""
    import json

    for name in _PRETRAINED_FILES:
        if (path / name).is_file():
            return load_state_dict(path / name)
    for name in _PRETRAINED_INDEXES:
        index = path / name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, Tensor] = {}
            for shard in shards:
                state.update(load_state_dict(path / shard))
            return state
    raise CheckpointError(
        f"folder {str(path)!r} holds no weights: expected one of "
        f"{', '.join(_PRETRAINED_FILES + _PRETRAINED_INDEXES)}"
    )


def load_pretrained(path: str | os.PathLike):
    """A Hugging Face model from a local `save_pretrained` folder (needs transformers).

    The class is the one the folder's config.json names (`architectures`); nothing is
    downloaded (`local_files_only=True`) and pickled weights load with `weights_only=True`.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{str(path)!r} is not a save_pretrained folder (no config.json)")
    try:
        import transformers
    except ImportError as exc:
        raise CheckpointError(f"loading {str(path)!r} needs the transformers package") from exc
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if names else transformers.AutoModel
    if cls is None:
        raise CheckpointError(f"{str(path)!r}: transformers has no class {names[0]!r}")
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    load_weights(model, _load_pretrained_dir(path), str(path))
    return model.eval()


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"weights file {str(path)!r} could not be read as safetensors: {exc}"
        ) from exc


def _load_pickle(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if needs is None:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = next((ln for ln in lines if "Unsupported" in ln), lines[-1] if lines else "")
            raise CheckpointError(
                f"weights file {str(path)!r} could not be read as a torch checkpoint ({detail})"
            ) from exc
        raise CheckpointError(
            f"weights file {str(path)!r} was refused: loading it would run code "
            f"(the pickle calls {needs.group(1)}). If you trust the file, load it yourself in a "
            f"trusted environment and save only the weights with safetensors: "
            f"safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"weights file {str(path)!r} could not be read: {type(exc).__name__}: {exc}"
        ) from exc


def _as_state_dict(data: object, path: Path) -> dict[str, Tensor]:
    """Unwrap `{"state_dict": ...}` / `{"model": ...}` and check every entry is a tensor."""
    for _ in range(3):
        if not isinstance(data, Mapping):
            break
        inner = next((data[k] for k in _WRAPPER_KEYS if isinstance(data.get(k), Mapping)), None)
        if inner is None:
            break
        data = inner
    if not isinstance(data, Mapping):
        raise CheckpointError(
            f"weights file {str(path)!r} holds a {type(data).__name__}, not a state dict "
            f"(a mapping of parameter names to tensors)"
        )
    bad = [f"{k!r} ({type(v).__name__})" for k, v in data.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"weights file {str(path)!r} is not a plain state dict: {len(bad)} entries are not "
            f"tensors: {_first(bad)}"
        )
    return {str(k): v for k, v in data.items()}


def load_weights(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Load `state_dict` into `model` in place, only if every key and shape matches.

    Keys and shapes are compared with `model.state_dict()` before anything is copied; a key the
    checkpoint lacks is accepted when the model ties it to a key the checkpoint has (shared
    weights saved once). Raises `CheckpointError` naming `source` and listing the first few
    missing keys, unexpected keys and shape mismatches (`name: checkpoint (a, b) vs model (c, d)`).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    missing = _drop_tied(missing, expected, state_dict)
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        lines = [f"weights in {source!r} do not fit the model ({type(model).__name__}):"]
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                lines.append(f"  {label} ({len(items)}): {_first(items)}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(dict(state_dict), strict=False)


def _drop_tied(
    missing: list[str], expected: Mapping[str, Tensor], given: Mapping[str, Tensor]
) -> list[str]:
    """Missing keys minus those whose model tensor is the same storage as a key that is given."""
    if not missing:
        return missing

    def where(t: Tensor) -> tuple | None:
        if t.numel() == 0 or t.device.type == "meta":
            return None
        return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())

    present = {where(t) for k, t in expected.items() if k in given} - {None}
    return [k for k in missing if where(expected[k]) not in present]


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... (+{len(items) - _SHOW} more)" if len(items) > _SHOW else "")


# ---------------------------------------------------------------------------------------------
# example inputs

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


# ---------------------------------------------------------------------------------------------
# output


def save_atomic(
    write_fn: Callable[[Path], object],
    path: str | os.PathLike,
    protect: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write a file atomically: `write_fn(tmp)` fills a temp file beside `path`, then replaces it.

    The temp file keeps `path`'s suffix (writers that look at it still work) and is removed if
    `write_fn` raises. Refuses with `InputError` when `path` resolves to one of `protect` (the
    command's input files), so an output can never overwrite an input. Creates missing parent
    directories. Returns the resolved path written.
    """
    target = Path(path).resolve()
    for p in protect:
        if Path(p).resolve() == target:
            raise InputError(f"refusing to write {str(path)!r}: it is one of the input files")
    if target.is_dir():
        raise InputError(f"cannot write {str(path)!r}: it is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
