"""The core imports nothing of the rest of fundarb and no I/O, clock,
randomness, async or table library; its error root, ``fundarb.core.errors``,
imports nothing at all."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "src" / "fundarb" / "core"
FORBIDDEN = {"ccxt", "cryptofeed", "asyncio", "time", "random", "sqlite3", "polars", "requests", "aiohttp",
             "datetime", "os", "pathlib", "socket", "logging"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_only_core_and_pure_libraries():
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 8
    for f in files:
        for mod in imported_modules(f):
            top = mod.split(".")[0]
            assert top not in FORBIDDEN, f"{f.name} imports {mod}"
            if top == "fundarb":
                assert mod.startswith("fundarb.core"), f"{f.name} imports {mod} from outside the core"


def test_the_error_root_the_core_may_use_imports_nothing():
    assert imported_modules(CORE / "errors.py") == set()
