"""The import graph: passes depend on the core, the API on the passes, the CLI on the API, and
nothing in the library imports the benchmarks or the tests (lazy imports inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE, PASSES, API, CLI = 0, 1, 2, 3
LAYERS = {
    "graphmerge.errors": CORE,
    "graphmerge.options": CORE,
    "graphmerge.memory": CORE,
    "graphmerge.similarities": CORE,
    "graphmerge.layout": CORE,
    "graphmerge.records": CORE,
    "graphmerge.program": CORE,
    "graphmerge.units": CORE,
    "graphmerge.assignment": CORE,
    "graphmerge.trace": CORE,
    "graphmerge.permute": CORE,
    "graphmerge.distributed": CORE,
    "graphmerge.rule_context": CORE,
    "graphmerge.rules": CORE,
    "graphmerge.passes": PASSES,
    "graphmerge.api": API,
    "graphmerge.merge": API,
    "graphmerge.align": API,
    "graphmerge.export": API,
    "graphmerge.config": API,
    "graphmerge.loading": API,
    "graphmerge.pretrained": API,
    "graphmerge.input_shape": API,
    "graphmerge.render": API,
    "graphmerge.batches": API,
    "graphmerge.cli": CLI,
    "graphmerge.launch": CLI,
    "graphmerge.__main__": CLI,
    "graphmerge": CLI,  # the package's __init__ re-exports the public API
}
FORBIDDEN = ("benchmarks", "tests", "zoo", "random_arch")


def _layer(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    raise KeyError(f"{module}: add it to LAYERS in {Path(__file__).name}")


def _library_files():
    for path in sorted((ROOT / "graphmerge").rglob("*.py")):
        rel = path.relative_to(ROOT / "graphmerge").with_suffix("")
        name = ".".join(("graphmerge", *rel.parts)).removesuffix(".__init__")
        yield name, path
    for path in sorted((ROOT / "passes").rglob("*.py")):
        rel = path.relative_to(ROOT / "passes").with_suffix("")
        name = ".".join(("graphmerge.passes", *rel.parts)).removesuffix(".__init__")
        yield name, path


def _imports(path: Path, module: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = module.split(".")[: -node.level]
                out.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                out.append(node.module)
    return out


@pytest.mark.parametrize("module,path", list(_library_files()), ids=lambda v: str(v))
def test_imports_follow_the_layers(module, path):
    own = _layer(module)
    for name in _imports(path, module):
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{module} imports {name}"
        if top == "graphmerge":
            assert _layer(name) <= own, f"{module} (layer {own}) imports {name} ({_layer(name)})"


def test_no_library_file_over_500_lines():
    long = {m: n for m, p in _library_files() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
