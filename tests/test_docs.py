"""The repository's own docs point only at what a clone has (issue 12: README and docstrings named
MUDSC_SPEC.md and DESIGN.md, which are not in the repository)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import graphmerge.cli

ROOT = Path(__file__).resolve().parents[1]
MENTION = re.compile(r"(?<![\w/.-])([\w./-]+\.md)\b")  # README.md, benchmarks/README.md, ...
LINK = re.compile(r"\]\(([^)#\s]+)\)")  # markdown links: [text](path)

# Files another branch of issue 12 edits; they still name MUDSC_SPEC.md there. Remove each entry
# once that branch is merged.
PENDING: set[str] = set()


def _tracked() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [
        f for f in out.splitlines() if f.endswith((".md", ".py")) and f.split("/")[0] != "tests"
    ]


def test_docs_name_only_files_the_repository_has() -> None:
    missing = []
    for name in _tracked():
        if name in PENDING:
            continue
        path = ROOT / name
        text = path.read_text(encoding="utf-8")
        targets = set(MENTION.findall(text))
        if name.endswith(".md"):
            targets |= {t for t in LINK.findall(text) if "://" not in t}
        for target in sorted(targets):
            if not ((path.parent / target).exists() or (ROOT / target).exists()):
                missing.append(f"{name}: {target}")
    assert missing == []


def test_cli_docstring_is_current() -> None:
    doc = graphmerge.cli.__doc__
    assert "to come" not in doc
    for name in graphmerge.cli.SUBCOMMANDS:
        assert f"`{name}`" in doc, name
