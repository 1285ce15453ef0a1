"""The house rules of the layout (README "Layout", ../shared/ARCHITECTURE.md), read from the source with ast.

* ``espi`` knows Green Button and nothing of ours (the schemas in ``xsd`` aside); ``cds`` knows CDS and nothing
  else of ours; ``bridge`` is the only package that knows both; ``sandbox`` is a custodian built on ``espi`` alone;
  ``gateway`` and ``workers`` are the two processes and never import each other (nor the sandbox); only the command
  line (``greenbridge``) may import everything, and nothing imports it.
* No import cycles between our modules, counting imports inside functions too.

Every import counts: top level, inside functions, under ``TYPE_CHECKING``, relative, ``importlib.import_module`` of a
constant and ``"package.module:attribute"`` strings (uvicorn factories, Celery task paths), so a dependency cannot
hide from the rule. The checker is tested on a synthetic tree, so this file fails if it stops seeing violations.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Which of our top-level packages each package may import (itself included).
ALLOWED: dict[str, set[str]] = {
    "xsd": {"xsd"},
    "espi": {"espi", "xsd"},
    "cds": {"cds"},
    "bridge": {"bridge", "espi", "cds", "xsd"},
    "sandbox": {"sandbox", "espi", "xsd"},
    "gateway": {"gateway", "bridge", "cds", "espi", "xsd"},
    "workers": {"workers", "bridge", "cds", "espi", "xsd"},
    "greenbridge": {"greenbridge", "gateway", "workers", "bridge", "cds", "espi", "sandbox", "xsd"},
}
PACKAGES = tuple(ALLOWED)
_TARGET = re.compile(rf"^({'|'.join(PACKAGES)})(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")


def modules(root: Path) -> dict[str, Path]:
    """Every module of our packages under ``root``: dotted name → file."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the module ``name`` at ``path`` that names one of our packages;
    ``from a import b`` yields ``a.b`` when that is a module, else ``a``."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            plain = False
            for alias in node.names:
                if f"{module}.{alias.name}" in known:
                    yield node.lineno, f"{module}.{alias.name}"
                else:
                    plain = True
            if plain:
                yield node.lineno, module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _TARGET.match(node.value) \
                and (":" in node.value or node.value.split(".")[0] != node.value):
            # "gateway.app:create_app", importlib.import_module("workers.tasks"): dotted names of our modules.
            target = node.value.partition(":")[0]
            if target in known or ":" in node.value:
                yield node.lineno, target


def _top(module: str) -> str:
    return module.split(".")[0]


def violations(root: Path) -> list[str]:
    """Imports against the direction of ALLOWED, as ``file:line: a imports b``."""
    found = modules(root)
    problems = []
    for name, path in found.items():
        allowed = ALLOWED[_top(name)]
        for line, target in imports_of(name, path, found):
            if _top(target) in ALLOWED and _top(target) not in allowed:
                problems.append(f"{path.relative_to(root)}:{line}: {name} imports {target}")
    return problems


def _resolve(target: str, known: set[str]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def cycles(root: Path) -> list[list[str]]:
    """Strongly connected groups of more than one module in the import graph (Tarjan)."""
    found = modules(root)
    known = set(found)
    graph = {name: {t for _line, target in imports_of(name, path, known)
                    if (t := _resolve(target, known)) and t != name}
             for name, path in found.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


# ------------------------------------------------------------------------------------------------ the real tree


def test_every_import_follows_the_dependency_direction():
    assert violations(REPO) == []


def test_no_import_cycles_between_our_modules():
    assert cycles(REPO) == []


def test_every_package_is_known_to_the_rules():
    """A new top-level package must be given its place in ALLOWED (and in pyproject's package list)."""
    ours = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert ours - {"tests"} == set(PACKAGES)
    pyproject = (REPO / "pyproject.toml").read_text()
    for package in PACKAGES:
        assert f'"{package}*"' in pyproject, package


# ------------------------------------------------------------------------------------- the checker itself


def _tree(root: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(("relative", "text", "expected"), [
    ("espi/feed.py", "from cds import grants\n", "espi.feed imports cds"),
    ("espi/feed.py", "import bridge.lifecycle\n", "espi.feed imports bridge.lifecycle"),
    ("cds/grants.py", "def f():\n    from bridge import lifecycle\n", "cds.grants imports bridge.lifecycle"),
    ("cds/grants.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from espi.scope import Scope\n",
     "cds.grants imports espi.scope"),
    ("cds/grants.py", "import importlib\nm = importlib.import_module('gateway.app')\n",
     "cds.grants imports gateway.app"),
    ("bridge/lifecycle.py", "from workers import jobs\n", "bridge.lifecycle imports workers.jobs"),
    ("bridge/lifecycle.py", "from sandbox.app import x\n", "bridge.lifecycle imports sandbox.app"),
    ("sandbox/app.py", "from cds.urls import Urls\n", "sandbox.app imports cds.urls"),
    ("gateway/app.py", "from workers.tasks import submit\n", "gateway.app imports workers.tasks"),
    ("gateway/app.py", "FACTORY = 'sandbox.app:create_sandbox_app'\n", "gateway.app imports sandbox.app"),
    ("workers/tasks.py", "from gateway import job_publisher\n", "workers.tasks imports gateway.job_publisher"),
    ("workers/tasks.py", "import greenbridge.cli\n", "workers.tasks imports greenbridge.cli"),
])
def test_the_checker_sees_each_kind_of_violation(tmp_path, relative, text, expected):
    files = {**ALLOWED_TREE, relative: text}
    found = violations(_tree(tmp_path, files))
    assert any(expected in problem for problem in found), found
    assert all(problem.startswith(relative) for problem in found), found


#: A small tree that follows every rule; the violation tests change one file of it.
ALLOWED_TREE = {
    "cds/urls.py": "", "espi/scope.py": "from xsd import x\n", "bridge/ingest.py": "",
    "bridge/lifecycle.py": "from espi import scope\nfrom cds import urls\nfrom . import ingest\n",
    "sandbox/app.py": "import espi.scope\n",
    "gateway/app.py": "from bridge import lifecycle\nFACTORY = 'gateway.app:create_app'\n",
    "gateway/job_publisher.py": "", "workers/jobs.py": "", "workers/tasks.py": "from bridge.lifecycle import x\n",
    "greenbridge/cli.py": "from gateway import app\nfrom workers import tasks\nfrom sandbox import app as s\n",
}


def test_the_checker_allows_what_the_direction_allows(tmp_path):
    assert violations(_tree(tmp_path, ALLOWED_TREE)) == []


def test_the_checker_finds_cycles_through_lazy_imports(tmp_path):
    root = _tree(tmp_path, {"workers/app.py": "def make():\n    import workers.tasks\n",
                            "workers/tasks.py": "from workers.upstream import x\n",
                            "workers/upstream.py": "def f():\n    from workers.app import y\n",
                            "cds/a.py": "from cds import b\n", "cds/b.py": ""})
    assert cycles(root) == [["workers.app", "workers.tasks", "workers.upstream"]]
