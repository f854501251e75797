"""The layout of `server/` and `model/`, read with `ast`: no import circle (every import counts:
function-level, under TYPE_CHECKING), `model/` never imports `server/`, only `model/vllm_*.py`
import vLLM, and no module grows past 400 lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "model")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def imported_names(tree: ast.AST) -> Iterator[str]:
    """Every module an import statement names, anywhere in the file; `from a import b` names
    `a.b` when that is a module, else `a`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of server/ and model/ it imports (a parent package's own __init__
    runs first anyway: not an edge)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {target for target in imported_names(tree) if target in known}
        graph[name] = {t for t in targets if t != name and not name.startswith(f"{t}.")}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph[node]):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done and (circle := visit(target)) is not None:
                return circle
        on_path.discard(path.pop())
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (circle := visit(start)) is not None:
            return circle
    return None


def test_no_module_of_server_or_model_is_part_of_an_import_circle() -> None:
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " → ".join(circle or [])


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_circle(graph) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


def test_model_never_imports_server() -> None:
    for name, path in modules().items():
        if name.startswith("model"):
            tree = ast.parse(path.read_text())
            wrong = sorted(t for t in imported_names(tree) if t.split(".")[0] == "server")
            assert not wrong, f"{name} imports {wrong}"


def test_only_the_vllm_modules_import_vllm() -> None:
    for name, path in modules().items():
        imports_vllm = any(
            t.split(".")[0] == "vllm" for t in imported_names(ast.parse(path.read_text()))
        )
        assert not imports_vllm or name.startswith("model.vllm_"), f"{name} imports vLLM"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_passes_400_lines(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
