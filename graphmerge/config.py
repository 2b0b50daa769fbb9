"""Merge configs: YAML files a user copies and edits, validated on load.

    models:
      - factory: examples/tiny_cnn.py:build       # package.module:callable or file.py:callable
        weights: runs/a.safetensors               # optional: safetensors or a torch checkpoint
      - factory: examples/tiny_cnn.py:build
        weights: runs/b.safetensors
    data:
      factory: examples/tiny_cnn.py:calibration   # returns an iterable of batches
      # or, for a smoke test: input_shape: "32,3,16,16" and batches: 4 (random inputs)
    method: mudsc                                 # mudsc | zipit | activation_matching |
                                                  # weight_matching | average
    parameters: {matcher: zip, alpha: 0.5, seed: 0}
    reset_bn: true

Relative paths are resolved against the config file's folder first, then the working folder.
Every error names the file and the bad key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from graphmerge.batches import random_batches
from graphmerge.errors import InputError
from graphmerge.loading import load_factory, parse_input_shape
from graphmerge.options import MergeOptions, OptionError

__all__ = ["PARAMETERS", "DataSpec", "MergeConfig", "ModelSpec", "load_config"]

# The `parameters:` a config may set: the MergeOptions fields other than the method, the
# BatchNorm reset (top-level keys), the CLI's own flags and the partial-merge fields (the CLI
# writes a state dict for the model's own class).
PARAMETERS: dict[str, tuple[type, ...]] = {
    name: types
    for name, types in MergeOptions.field_types().items()
    if name not in {"method", "reset_bn", "strict", "progress", "stop_at", "combine"}
}
_TOP = {"models", "data", "method", "parameters", "reset_bn"}


@dataclass(frozen=True)
class ModelSpec:
    factory: str
    weights: str | None = None


@dataclass(frozen=True)
class DataSpec:
    """The calibration data: a factory's batches, or `batches` random ones of `input_shape`."""

    factory: str | None = None
    input_shape: str | None = None
    batches: int = 4

    def load(self) -> list:
        """The batches (an `InputError` naming the factory when it fails or returns a batch)."""
        if self.factory is None:
            first = parse_input_shape(self.input_shape)
            return [first, *random_batches(first, self.batches - 1, seed=1)]
        factory = load_factory(self.factory)
        try:
            data = factory()
        except Exception as exc:
            raise InputError(
                f"calling {self.factory}() failed: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(data, (torch.Tensor, dict)) or not hasattr(data, "__iter__"):
            raise InputError(
                f"{self.factory}() must return an iterable of batches, got {type(data).__name__}"
            )
        return data


@dataclass(frozen=True)
class MergeConfig:
    """A validated merge config: the models, the calibration data and the `MergeOptions`."""

    models: tuple[ModelSpec, ...]
    data: DataSpec | None
    options: MergeOptions
    source: str = ""

    @property
    def method(self) -> str:
        return self.options.method

    def input_files(self) -> list[str]:
        """Everything the merge reads (this file, factory specs or model folders, weights files),
        as `graphmerge.loading.check_outputs` takes it: no output may be written over or into
        one of them."""
        files = [self.source] if self.source else []
        for spec in self.models:
            files += [spec.factory, *([spec.weights] if spec.weights else [])]
        if self.data and self.data.factory:
            files.append(self.data.factory)
        return files


def _resolve(value: str, base: Path) -> str:
    """A path (or the file part of `file.py:callable`) relative to the config's folder."""
    path, colon, attr = value.rpartition(":") if ".py:" in value else (value, "", "")
    if not path:
        path, colon, attr = value, "", ""
    candidate = base / path
    if not Path(path).is_absolute() and candidate.exists():
        path = str(candidate)
    return f"{path}{colon}{attr}"


def _expect(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise InputError(f"{where}: {what}")


def load_config(path: str | Path) -> MergeConfig:
    """Read and validate a merge config; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from exc
    _expect(isinstance(raw, dict), str(path), "expected a mapping at the top level")
    unknown = sorted(set(raw) - _TOP)
    _expect(
        not unknown,
        f"{path}: {unknown[0] if unknown else ''}",
        f"unknown key; allowed keys: {sorted(_TOP)}",
    )
    base = path.parent
    models = raw.get("models")
    _expect(
        isinstance(models, list) and len(models) >= 2,
        f"{path}: models",
        "expected a list of at least 2 models",
    )
    specs = []
    for i, m in enumerate(models):
        where = f"{path}: models[{i}]"
        _expect(isinstance(m, dict), where, "expected a mapping with 'factory' (and 'weights')")
        extra = sorted(set(m) - {"factory", "weights"})
        _expect(
            not extra,
            f"{where}.{extra[0] if extra else ''}",
            "unknown key; allowed: factory, weights",
        )
        _expect(
            isinstance(m.get("factory"), str),
            f"{where}.factory",
            "expected a string like 'file.py:build' or 'package.module:build'",
        )
        weights = m.get("weights")
        _expect(
            weights is None or isinstance(weights, str),
            f"{where}.weights",
            f"expected a file path, got {type(weights).__name__}",
        )
        specs.append(
            ModelSpec(_resolve(m["factory"], base), _resolve(weights, base) if weights else None)
        )
    data = raw.get("data")
    data_spec = None
    if data is not None:
        where = f"{path}: data"
        _expect(isinstance(data, dict), where, "expected a mapping with 'factory' or 'input_shape'")
        extra = sorted(set(data) - {"factory", "input_shape", "batches"})
        _expect(
            not extra,
            f"{where}.{extra[0] if extra else ''}",
            "unknown key; allowed: factory, input_shape, batches",
        )
        _expect(
            ("factory" in data) != ("input_shape" in data),
            where,
            "give exactly one of 'factory' and 'input_shape'",
        )
        batches = data.get("batches", 4)
        _expect(
            isinstance(batches, int) and batches > 0,
            f"{where}.batches",
            "expected a positive integer",
        )
        factory = data.get("factory")
        _expect(
            factory is None or isinstance(factory, str), f"{where}.factory", "expected a string"
        )
        shape = data.get("input_shape")
        _expect(
            shape is None or isinstance(shape, str),
            f"{where}.input_shape",
            "expected a string like '32,3,16,16'",
        )
        data_spec = DataSpec(_resolve(factory, base) if factory else None, shape, batches)
    params = raw.get("parameters") or {}
    _expect(isinstance(params, dict), f"{path}: parameters", "expected a mapping")
    for key, value in params.items():
        _expect(
            key in PARAMETERS,
            f"{path}: parameters.{key}",
            f"unknown parameter; allowed: {sorted(PARAMETERS)}",
        )
        _expect(
            isinstance(value, PARAMETERS[key])
            and (bool in PARAMETERS[key] or not isinstance(value, bool)),
            f"{path}: parameters.{key}",
            f"expected {PARAMETERS[key][0].__name__}, got {type(value).__name__}",
        )
    reset_bn = raw.get("reset_bn", True)
    _expect(isinstance(reset_bn, bool), f"{path}: reset_bn", "expected true or false")
    method = raw.get("method", "mudsc")
    _expect(isinstance(method, str), f"{path}: method", "expected a method name")
    try:
        options = MergeOptions(method=method, reset_bn=reset_bn, **params)
    except OptionError as exc:  # name the key the message is about
        where = exc.field if exc.field == "method" else f"parameters.{exc.field}"
        raise InputError(f"{path}: {where}: {exc}") from exc
    return MergeConfig(tuple(specs), data_spec, options, str(path))
