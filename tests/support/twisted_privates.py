"""Which of Twisted's private names a module reaches: the count issue 18 asks of fephp/_twisted.py, reproducible.

A private name is an underscore name (dunders aside) that the module reads
or writes as an attribute (``transport._tempDataLen``, the name-mangled
``channel._HTTPChannel__first_line``, a class attribute assigned), or gives
to ``getattr``/``setattr``/``hasattr`` as a string, or imports from a
``twisted`` module (``_parseServer``), or a private ``twisted`` module it
imports.  Names the module defines itself are not Twisted's and are left
out.  ``python -m tests.support.twisted_privates FILE`` prints the count and
the names.
"""

from __future__ import annotations

import ast
import sys

__all__ = ["twisted_private_names"]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def twisted_private_names(source: str) -> set[str]:
    """The private names of Twisted's that *source* (a module's text) reaches, as defined above."""
    tree = ast.parse(source)
    own = {
        node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    } | {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            found.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            found.add(node.args[1].value)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "twisted":
            module = node.module or ""
            if any(_private(part) for part in module.split(".")):
                found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if _private(alias.name))
    return found - own


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as file:
        names = sorted(twisted_private_names(file.read()))
    print(len(names))
    print("\n".join(names))
