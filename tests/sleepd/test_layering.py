"""The folder layout is the architecture: each layer imports only the ones below it (docs/ARCHITECTURE.md).
Checked on the source, every import statement, including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package -> top-level packages of this repo it must never import
FORBIDDEN = {
    "sleepd": {"app", "worker", "consolidation", "cli", "bench", "load_tests"},
    "consolidation": {"app", "worker", "cli", "fastapi", "celery", "redis"},
    "app": {"worker", "consolidation", "cli"},
    "worker": {"app", "cli"},
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_each_layer_imports_only_the_layers_below_it() -> None:
    crossings = [
        f"{path.relative_to(ROOT)} imports {sorted(imported(path) & forbidden)}"
        for package, forbidden in FORBIDDEN.items()
        for path in sorted((ROOT / package).rglob("*.py"))
        if imported(path) & forbidden
    ]
    assert crossings == []
