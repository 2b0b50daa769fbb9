"""Reading what users hand to graphmerge: model factories, checkpoints, input specs; writing safely.

Everything here fails with a `GraphMergeError` subclass whose message names the offending spec or
file and says what to do, so the CLI can print it without a traceback.

Example:
    >>> from graphmerge.loading import parse_input_shape
    >>> parse_input_shape("2,3,8,8").shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import os
import pickle
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from graphmerge.errors import CheckpointError, InputError
from graphmerge.input_shape import parse_input_shape

__all__ = [
    "PICKLE_SUFFIXES",
    "SAFETENSORS_SUFFIXES",
    "check_outputs",
    "input_paths",
    "load_factory",
    "load_state_dict",
    "load_weights",
    "parse_input_shape",
    "save_atomic",
    "save_state",
    "staged_outputs",
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
        from graphmerge.pretrained import read_pretrained_dir

        return read_pretrained_dir(path)
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
    weights saved once). Keys the model computes itself are skipped with a warning, as
    transformers skips them: non-persistent buffers that older checkpoints still carry
    (`embeddings.position_ids`, `rotary_emb.inv_freq`) and the model's own
    `_keys_to_ignore_on_load_unexpected` (GPT-2's `attn.bias` masks). Raises `CheckpointError`
    naming `source` and listing the first few missing keys, unexpected keys and shape
    mismatches (`name: checkpoint (a, b) vs model (c, d)`).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    missing = _drop_tied(missing, expected, state_dict)
    skipped = _computed_keys([k for k in state_dict if k not in expected], model)
    unexpected = [k for k in state_dict if k not in expected and k not in skipped]
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
    if skipped:
        warnings.warn(
            f"weights in {source!r}: skipped {len(skipped)} "
            f"{'entry' if len(skipped) == 1 else 'entries'} that {type(model).__name__} computes "
            f"itself (buffers older checkpoints still carry; transformers skips them too): "
            f"{_first(skipped)}",
            stacklevel=2,
        )
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in skipped}, strict=False)


def _computed_keys(unexpected: list[str], model: nn.Module) -> list[str]:
    """The unexpected keys naming what the model computes itself rather than loads."""
    if not unexpected:
        return []
    buffers = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    patterns = set(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())
    for name in ("position_ids", "rotary_emb.inv_freq"):  # buffers transformers moved or renamed
        if any(b.endswith(name) for b in buffers):
            patterns.add(rf"(^|\.){re.escape(name)}$")
    regex = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
    return [k for k in unexpected if k in buffers or (regex is not None and regex.search(k))]


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
# outputs: never over what a command reads, written only once everything succeeded


def input_paths(spec: str | os.PathLike) -> list[Path]:
    """The files and folders that reading `spec` touches, resolved through symlinks and `..`.

    `spec` is anything a command reads: a weights file, a YAML config, a factory spec
    (`file.py:build` gives the file, `package.module:build` the module's source file when
    importlib can find it), or a folder (a Hugging Face `save_pretrained` folder: the folder itself,
    then its config.json, index files and every weights file or shard they name).
    """
    text = os.fspath(spec)
    path = Path(text)
    if not path.exists() and ":" in text:
        target = text.rpartition(":")[0]
        if target.endswith(".py") or os.sep in target or "/" in target:
            path = Path(target)
        else:
            return _module_file(target)
    if not path.is_dir():
        return [path.resolve()]
    from graphmerge.pretrained import pretrained_files

    return [path.resolve(), *(f.resolve() for f in pretrained_files(path))]


def _module_file(target: str) -> list[Path]:
    try:
        found = importlib.util.find_spec(target)
    except Exception:  # noqa: BLE001 (a module that cannot be found is reported on loading)
        return []
    origin = getattr(found, "origin", None)
    return [Path(origin).resolve()] if origin and os.path.isfile(origin) else []


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def check_outputs(
    outputs: Mapping[str, str | os.PathLike], inputs: Iterable[str | os.PathLike]
) -> dict[str, Path]:
    """Refuse, before any work, outputs that would land on or inside anything the command reads.

    outputs: label (the option, e.g. `"--out"`, or `""`) -> path to write. inputs: what the
    command reads, as `input_paths` takes it (files, folders, factory specs). Returns label ->
    resolved path. Raises `InputError` naming the output and the input when an output resolves
    (through symlinks and `..`) to an input file, is the same file as one (hard links: same
    device and inode), lies inside an input folder, is a folder, or is the same file as another
    output. This is the one check every command runs.
    """
    read: list[Path] = [p for spec in inputs for p in input_paths(spec)]
    ids = {i: p for p in read if p.is_file() and (i := _file_id(p)) is not None}
    done: dict[str, Path] = {}
    for label, path in outputs.items():
        target = Path(path).resolve()
        where = f"{label} {os.fspath(path)!r}" if label else repr(os.fspath(path))
        if target.is_dir():
            raise InputError(f"cannot write {where}: it is a folder; give a file name")
        clash = next((p for p in read if target == p or target.is_relative_to(p)), None)
        if clash is None and (i := _file_id(target)) in ids:
            clash = ids[i]
        if clash is not None:
            what = "inside the input folder" if clash.is_dir() else "one of the input files"
            raise InputError(
                f"refusing to write {where}: it is {what} ({str(clash)!r}); "
                "choose a path outside the inputs"
            )
        same = _file_id(target)
        for other, seen in done.items():
            if seen == target or (same is not None and same == _file_id(seen)):
                raise InputError(f"{where} and {other} are the same file; give two paths")
        done[label] = target
    return done


def save_state(state: dict, path: Path) -> None:
    """Write a state dict to `path`: safetensors for a .safetensors name, else torch.save."""
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, str(path))


@contextlib.contextmanager
def staged_outputs(targets: Mapping[str, str | os.PathLike]) -> Iterator[dict[str, Path]]:
    """Temp files beside each target, renamed onto the targets only if the block succeeds.

    Yields label -> temp path (same folder, and the target's suffix so writers that look at it
    still work); missing parent folders are created. When the block raises, every temp file is
    removed and no target is touched. Otherwise each temp file gets the mode a new file would
    (0o666 minus the umask, not mkstemp's 0600) and replaces its target, in order.
    """
    temps: dict[str, Path] = {}
    try:
        for label, path in targets.items():
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}"
            )
            os.close(fd)
            temps[label] = Path(name)
        yield dict(temps)
        mode = 0o666 & ~_umask()
        for tmp in temps.values():
            os.chmod(tmp, mode)
        for label, tmp in temps.items():
            os.replace(tmp, targets[label])
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def save_atomic(
    write_fn: Callable[[Path], object],
    path: str | os.PathLike,
    protect: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write a file atomically: `write_fn(tmp)` fills a temp file beside `path`, then replaces it.

    The temp file keeps `path`'s suffix and is removed if `write_fn` raises. Refuses with
    `InputError` (`check_outputs`) when `path` would overwrite or land inside one of `protect`
    (the command's inputs). Creates missing parent directories. Returns the resolved path.
    """
    target = check_outputs({"": path}, protect)[""]
    with staged_outputs({"": target}) as tmp:
        write_fn(tmp[""])
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
