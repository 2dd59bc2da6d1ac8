"""bench/ has no tests of its own and imports redisflush's modules inside its functions (a
full `python bench/run.py` takes about 30 minutes): every name it imports from redisflush,
at any depth, must exist, so a module moved or renamed in redisflush/ fails here and not
twenty minutes into a benchmark run."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _imports() -> list[tuple[str, int, str, str | None]]:
    """(file, line, module, name or None for `import module`) of every redisflush import."""
    found: list[tuple[str, int, str, str | None]] = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    node.module.split(".")[0] == "redisflush":
                found += [(path.name, node.lineno, node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                found += [(path.name, node.lineno, a.name, None) for a in node.names
                          if a.name.split(".")[0] == "redisflush"]
    return found


def test_bench_imports_something_of_redisflush() -> None:
    assert len(_imports()) > 20  # the scan reads the files it is meant to


@pytest.mark.parametrize("where, module, name", [
    (f"{f}:{line}", module, name) for f, line, module, name in _imports()])
def test_every_name_bench_imports_from_redisflush_exists(where: str, module: str,
                                                         name: str | None) -> None:
    imported = importlib.import_module(module)
    if name is not None and not hasattr(imported, name):
        importlib.import_module(f"{module}.{name}")  # a submodule: raises if it is none
