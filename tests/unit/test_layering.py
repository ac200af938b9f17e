"""The package's layers: imports point down only, the pure layers stay pure, Twisted's privates stay behind one door.

The layers, from the bottom (docs/architecture.md draws them)::

    _compat, _twisted,           leaves: what differs between Pythons, the door to Twisted's privates,
    _deferreds                   Deferreds that wait for one event together
    _stats                       figures the request path keeps (histograms), read at scrape time
    fastcgi, cgi, http,          pure: the standard library only
    roadrunner
    backend, process             Twisted, below the web
    acme                         Twisted (treq, josepy): the ACME client, below server
    web                          twisted.web, over backend and cgi
    server                       configuration and wiring, over everything
    tap, cli                     entry points, imported by nothing
    bench                        the load generator, importing nothing else of fephp but the door
    testing                      public fakes, over backend and below server
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGE = REPO / "fephp"

#: Which layers each layer may import (itself always).
ALLOWED: dict[str, set[str]] = {
    "fastcgi": {"_compat"},
    "http": {"_compat"},
    "roadrunner": {"_compat"},
    "cgi": {"_compat"},
    "_compat": set(),
    "_twisted": set(),
    "_deferreds": set(),
    "_stats": set(),
    "backend": {"fastcgi", "roadrunner", "cgi", "_compat", "_twisted", "_deferreds", "_stats"},
    "process": {"_compat", "_twisted", "_deferreds"},
    "acme": {"_compat", "_twisted", "_deferreds"},
    "web": {"http", "cgi", "backend", "_compat", "_twisted", "_deferreds", "_stats"},
    "server": {"fastcgi", "http", "roadrunner", "cgi", "backend", "process", "acme", "web", "_compat", "_twisted", "_deferreds", "_stats", "fephp"},
    "bench": {"_twisted"},
    "testing": {"fastcgi", "http", "roadrunner", "cgi", "backend", "web", "_compat", "_twisted", "_deferreds", "_stats"},
    "tap": {"server"},
    "cli": {"server", "bench"},
    "fephp": set(),
}
#: Layers whose only outside imports may be the standard library, and what of it they may not use.
PURE = {
    "fastcgi": {"socket", "asyncio", "logging", "select", "selectors"},
    "http": {"socket", "asyncio", "logging", "select", "selectors"},
    "roadrunner": {"socket", "asyncio", "logging", "select", "selectors", "subprocess"},
    "cgi": {"socket", "asyncio", "logging"},
    "_stats": {"socket", "asyncio", "logging"},
}
#: Modules whose functions may import lazily: process entry points.
ENTRY_POINTS = {"fephp.tap", "fephp.cli", "fephp.server.worker"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, "fephp.web.site"
    target: str  # what it imports, absolute: "fephp.backend.errors", "twisted.web.http"
    names: tuple[str, ...]
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fephp"


def imports_of(path: Path) -> list[Import]:
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, alias.name, (), child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                names = tuple(alias.name for alias in child.names)
                if child.level and not child.module:
                    # "from . import x": x is a module of the package, or a name of its __init__.
                    for name in names:
                        candidate = f"{target}.{name}"
                        sub = PACKAGE.parent / Path(*candidate.split("."))
                        is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                        found.append(Import(module, candidate if is_module else target, (name,), child.lineno, in_function))
                else:
                    found.append(Import(module, target, names, child.lineno, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def all_imports() -> list[Import]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30, "the package was not found where the test expects it"
    return [imp for path in files for imp in imports_of(path)]


def test_imports_point_down_only() -> None:
    """Every import of fephp by fephp goes from a layer to one ALLOWED below it, and nothing imports tap or cli."""
    wrong = []
    for imp in all_imports():
        if imp.target != "fephp" and not imp.target.startswith("fephp."):
            continue
        source, target = layer_of(imp.module), layer_of(imp.target)
        if target != source and target not in ALLOWED[source]:
            wrong.append(f"{imp.module}:{imp.line} imports {imp.target} ({source} -> {target})")
    assert wrong == []


def test_pure_layers_use_the_standard_library_only() -> None:
    """fephp.fastcgi and fephp.cgi import nothing but the standard library (no Twisted, no sockets, no logging)."""
    names = getattr(sys, "stdlib_module_names", None)
    if names is None:
        pytest.skip("sys.stdlib_module_names is Python 3.10's; the check runs on CPython")
    stdlib = set(names)
    wrong = []
    for imp in all_imports():
        layer = layer_of(imp.module)
        if layer not in PURE or imp.target.startswith("fephp") or imp.target == "__future__":
            continue
        top = imp.target.split(".")[0]
        if top not in stdlib or top in PURE[layer]:
            wrong.append(f"{imp.module}:{imp.line} imports {imp.target}")
    assert wrong == []


def test_no_lazy_imports_of_fephp_outside_the_entry_points() -> None:
    """Outside the entry points, fephp modules import each other at the top, where a cycle would show, never inside a function."""
    lazy = [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for imp in all_imports()
        if imp.in_function and imp.target.startswith("fephp") and imp.module not in ENTRY_POINTS
    ]
    assert lazy == []


def test_bench_imports_nothing_else_of_fephp() -> None:
    """The load generator stands alone, it could be run against any server: of fephp it imports only the door to Twisted."""
    found = [
        f"{imp.module}:{imp.line}"
        for imp in all_imports()
        if layer_of(imp.module) == "bench"
        and imp.target.startswith("fephp")
        and layer_of(imp.target) not in ("bench", "_twisted")
    ]
    assert found == []


def _defined_private_names() -> set[str]:
    """Every ``_name`` fephp itself defines: functions, classes, attributes it assigns, slots, parameters."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_twisted.py":
            continue  # what the door assigns is Twisted's
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("_"):
                names.add(node.value)  # __slots__ entries
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {n for n in names if n.startswith("_")}


def test_twisted_privates_only_in_the_door() -> None:
    """No module but fephp/_twisted.py reads an underscore name that fephp does not define itself, or imports one from Twisted."""
    ours = _defined_private_names()
    foreign = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_twisted.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                name = node.attr
                if name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name not in ours:
                    foreign.append(f"{module_name(path)}:{node.lineno} .{name}")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("twisted"):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        foreign.append(f"{module_name(path)}:{node.lineno} {node.module}.{alias.name}")
    assert foreign == []


@pytest.mark.parametrize(
    ("layer", "target", "allowed"),
    [("web", "server", False), ("backend", "web", False), ("cgi", "backend", False), ("server", "web", True), ("tap", "server", True),
     ("server", "acme", True), ("acme", "web", False), ("web", "acme", False)],
)
def test_the_allowed_map_reads_as_the_picture(layer: str, target: str, allowed: bool) -> None:
    """A few directions spelled out: the map above says what docs/architecture.md draws."""
    assert (target in ALLOWED[layer]) is allowed
