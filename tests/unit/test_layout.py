"""
The shape of the repository, checked so that it stays true: the package is
a tree of layers (nothing imports upward, nothing imports in a circle), the
development panel is never imported by the daemon, every package is listed
in ``setup.py``, long modules say why they are long, and unit tests use no
global reactor, no real sleeps and no child processes.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Iterator

from twisted.trial.unittest import SynchronousTestCase

from ..support import REPO

PACKAGE = os.path.join(REPO, "wings_twisted")

#: Top-level units of ``wings_twisted``, highest layer first.  A module may
#: import its own unit and anything in its layer or a lower one.
LAYERS: list[set[str]] = [
    {"cli"},
    {"tap"},
    {"service"},
    {"web", "sftp"},
    {"websocket"},
    {"backups", "transfers", "files"},
    {"node"},
    {"servers"},
    {"environment", "eggconfig", "archive", "streams"},
    {"fs", "config", "auth", "panel", "activity", "blocking", "reactor", "sysuser", "timezone",
     "logs", "__init__"},
]
#: Never imported by the daemon, and imports nothing of it.
SEPARATE = {"devpanel"}
#: A module this long must say in its docstring why it is one thing.
LONG_MODULE = 460


def modules() -> dict[str, str]:
    """
    ``{dotted name: path}`` of every module of the package.
    """
    found = {}
    for directory, subdirectories, files in os.walk(PACKAGE):
        subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                if dotted.endswith(".__init__"):
                    dotted = dotted[:-len(".__init__")]
                found[dotted] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: str, known: set[str]) -> set[str]:
    """
    The package modules ``name`` imports at run time (``TYPE_CHECKING``
    blocks aside; imports inside functions count).
    """
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found: set[str] = set()

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in child.names:
                    candidate = base + "." + alias.name
                    found.add(candidate if candidate in known else base)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            walk(child)

    with open(path, encoding="utf-8") as f:
        walk(ast.parse(f.read()))
    return {m for m in found if m in known and m != name}


def unit_of(dotted: str) -> str:
    """
    The top-level unit of a module (``wings_twisted.web.site`` → ``web``).
    """
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise KeyError(unit)


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> Iterator[list[str]]:
    """
    Every circle found by a depth-first walk (each reported once from where
    the walk closed it).
    """
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> Iterator[list[str]]:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                yield stack[stack.index(target):] + [target]
            elif target not in state:
                yield from visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            yield from visit(node)


class ImportGraphTests(SynchronousTestCase):
    """
    The package's imports against the layers of ``LAYERS``.
    """

    def test_every_unit_has_a_layer(self) -> None:
        """
        Every top-level module and package is placed in a layer (or is the
        separate development panel).
        """
        units = {unit_of(name) for name in modules()}
        placed = set().union(*LAYERS) | SEPARATE
        self.assertEqual(units - placed, set())

    def test_nothing_imports_upward(self) -> None:
        """
        No module imports a unit of a higher layer.
        """
        upward = []
        for name, targets in graph().items():
            unit = unit_of(name)
            if unit in SEPARATE:
                continue
            for target in targets:
                other = unit_of(target)
                if other != unit and other not in SEPARATE and layer_of(other) < layer_of(unit):
                    upward.append("{} -> {}".format(name, target))
        self.assertEqual(upward, [])

    def test_no_circles(self) -> None:
        """
        No module imports itself through others, and no two units import
        each other.
        """
        edges = graph()
        self.assertEqual(list(cycles(edges)), [])
        units: dict[str, set[str]] = {}
        for name, targets in edges.items():
            units.setdefault(unit_of(name), set()).update(
                unit_of(t) for t in targets if unit_of(t) != unit_of(name))
        self.assertEqual(list(cycles(units)), [])

    def test_development_panel_is_separate(self) -> None:
        """
        The daemon never imports the development panel, and the panel
        imports nothing of the daemon.
        """
        crossing = ["{} -> {}".format(name, target) for name, targets in graph().items()
                    for target in targets
                    if (unit_of(name) in SEPARATE) != (unit_of(target) in SEPARATE)]
        self.assertEqual(crossing, [])

    def test_layer_check_sees_an_upward_import(self) -> None:
        """
        The checker itself: a relative import two levels up is resolved to
        the module it names, and ``TYPE_CHECKING`` imports are left out.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("from typing import TYPE_CHECKING\n"
                    "from ..node import Node\n"
                    "if TYPE_CHECKING:\n"
                    "    from ..tap import build_service\n")
        known = {"wings_twisted.node", "wings_twisted.tap", "wings_twisted.fs.volume"}
        self.assertEqual(imports("wings_twisted.fs.volume", path, known), {"wings_twisted.node"})


class PackagingTests(SynchronousTestCase):
    """
    ``setup.py`` and module sizes.
    """

    def test_every_package_is_listed(self) -> None:
        """
        ``setup.py`` lists every package by hand (a forgotten one would be
        missing from ``pip install .``).
        """
        with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
            listed = set(re.findall(r'"(wings_twisted(?:\.[a-z_]+)*)"', f.read()))
        packages = {name for name, path in modules().items() if path.endswith("__init__.py")}
        self.assertEqual(packages - listed, set())

    def test_long_modules_say_why(self) -> None:
        """
        A module over ``LONG_MODULE`` lines says in its docstring why it is
        one cohesive thing.
        """
        unexplained = []
        for name, path in modules().items():
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if text.count("\n") > LONG_MODULE and "cohesive" not in (
                    ast.get_docstring(ast.parse(text)) or ""):
                unexplained.append(name)
        self.assertEqual(unexplained, [])


class UnitTestRulesTests(SynchronousTestCase):
    """
    ``tests/unit`` stays in memory: no global reactor, no real sleeping, no
    child processes (those tests belong in ``tests/integration``).
    """

    FORBIDDEN = [
        (re.compile(r"from twisted\.internet import [^\n]*\breactor\b"), "the global reactor"),
        (re.compile(r"twisted\.internet\.reactor\b"), "the global reactor"),
        (re.compile(r"\btime\.sleep\("), "a real sleep"),
        (re.compile(r"\bsubprocess\b"), "a child process"),
        (re.compile(r"\bspawnProcess\("), "a child process"),
    ]

    def test_unit_folder(self) -> None:
        """
        No unit test module uses any of ``FORBIDDEN``.
        """
        here = os.path.dirname(os.path.abspath(__file__))
        found = []
        for name in sorted(os.listdir(here)):
            if not name.endswith(".py") or name == os.path.basename(__file__):
                continue
            with open(os.path.join(here, name), encoding="utf-8") as f:
                text = f.read()
            for pattern, what in self.FORBIDDEN:
                if pattern.search(text):
                    found.append("{}: {}".format(name, what))
        self.assertEqual(found, [])
