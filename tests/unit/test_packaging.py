"""
The dependency contract: ``setup.py`` bounds every runtime dependency,
``constraints.txt`` pins a set inside those bounds, and the environment the
tests run in (``make test`` installs with the constraints) is that set.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from ..support import REPO

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def setup_keyword(name: str) -> object:
    """
    The literal value of ``setup(<name>=...)`` in ``setup.py``.
    """
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == name:
                    return ast.literal_eval(keyword.value)
    raise KeyError(name)


def constraints() -> dict[str, str]:
    """
    ``{normalised name: version}`` of ``constraints.txt``.
    """
    pins = {}
    with open(os.path.join(REPO, "constraints.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = _PIN.match(line)
            if match is None:
                raise AssertionError("not an exact pin: " + line)
            pins[_normal(match.group(1))] = match.group(2)
    return pins


class DependencyTests(SynchronousTestCase):
    """
    ``setup.py`` and ``constraints.txt`` agree.
    """

    def requirements(self) -> list[str]:
        requires = setup_keyword("install_requires")
        extras = setup_keyword("extras_require")
        assert isinstance(requires, list) and isinstance(extras, dict)
        return requires + [r for group in extras.values() for r in group]

    def test_upper_bounds(self) -> None:
        """
        Every runtime dependency but the time-zone data has an upper bound.
        """
        unbounded = [r for r in self.requirements() if "<" not in r and r != "tzdata"]
        self.assertEqual(unbounded, [])

    def test_pins_satisfy_the_bounds(self) -> None:
        """
        Each dependency is pinned in ``constraints.txt`` to a version its
        ``setup.py`` specifier accepts.
        """
        try:
            from packaging.requirements import Requirement
        except ImportError:
            raise SkipTest("packaging is not installed")
        pins = constraints()
        wrong = []
        for text in self.requirements():
            requirement = Requirement(text)
            pinned = pins.get(_normal(requirement.name))
            if pinned is None or not requirement.specifier.contains(pinned, prereleases=True):
                wrong.append("{} (pinned: {})".format(text, pinned))
        self.assertEqual(wrong, [])

    def test_environment_is_the_tested_set(self) -> None:
        """
        Where ``make test`` installed the project, every pinned distribution
        that is installed has the pinned version.
        """
        try:
            importlib.metadata.version("wings-twisted")
        except importlib.metadata.PackageNotFoundError:
            if os.environ.get("CI"):
                self.fail("wings-twisted is not installed in this interpreter")
            raise SkipTest("wings-twisted is not installed here; `make test` installs it")
        drift = []
        for name, version in constraints().items():
            try:
                installed = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
            if installed != version:
                drift.append("{} {} (constraints.txt: {})".format(name, installed, version))
        self.assertEqual(drift, [])

    def test_console_script(self) -> None:
        """
        ``wings`` is a console script naming the command's ``main``.
        """
        self.assertEqual(setup_keyword("entry_points"),
                         {"console_scripts": ["wings = wings_twisted.cli.main:main"]})
