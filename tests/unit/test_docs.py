"""
The documentation stays true to the code: every configuration key is in
``docs/configuration.md``, every ``<name>.md §N`` citation in the package
names a section of ``docs/spec/<name>.md``, and relative links in the
README and ``docs/`` lead to files of the repository.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator

import yaml
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.config import Config, dump_config

from ..support import REPO

DOCS = os.path.join(REPO, "docs")
#: Keys absent from a dump of the defaults (no default value is written).
UNSET_KEYS = ["system.user.uid", "system.user.gid", "system.user.passwd", "system.machine_id",
              "system.transfers.storage_pool"]
#: Free-form maps: their own entries are not keys of the schema.
MAPS = {"docker.log_config.config"}

_CITATION = re.compile(r"\b([a-z][\w-]*\.md) §(\d+(?:\.\d+)*)")
_HEADING = re.compile(r"^#+\s+(\d+(?:\.\d+)*)\.?\s")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def keys(tree: Any, prefix: str = "") -> Iterator[str]:
    """
    The dotted keys of a configuration tree.
    """
    for name, value in tree.items():
        key = prefix + str(name)
        if isinstance(value, dict) and value and key not in MAPS:
            yield from keys(value, key + ".")
        else:
            yield key


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class DocumentationTests(SynchronousTestCase):
    """
    ``docs/`` against the code.
    """

    def test_every_key_documented(self) -> None:
        """
        Each key of the configuration appears in the reference table.
        """
        text = _read(os.path.join(DOCS, "configuration.md"))
        every = list(keys(yaml.safe_load(dump_config(Config())))) + UNSET_KEYS
        missing = [key for key in every if "`{}`".format(key) not in text]
        self.assertEqual(missing, [])

    def test_citations_resolve(self) -> None:
        """
        ``<name>.md §N`` in the package means section N of
        ``docs/spec/<name>.md``, which exists.
        """
        sections: dict[str, set[str]] = {}
        for name in os.listdir(os.path.join(DOCS, "spec")):
            found = set()
            for line in _read(os.path.join(DOCS, "spec", name)).splitlines():
                match = _HEADING.match(line)
                if match:
                    found.add(match.group(1))
            sections[name] = found
        broken = []
        count = 0
        for directory, _, files in os.walk(os.path.join(REPO, "wings_twisted")):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(directory, name)
                for match in _CITATION.finditer(_read(path)):
                    count += 1
                    if match.group(2) not in sections.get(match.group(1), set()):
                        broken.append("{}: {}".format(os.path.relpath(path, REPO), match.group(0)))
        self.assertEqual(broken, [])
        self.assertGreater(count, 100)

    def test_links_lead_to_files(self) -> None:
        """
        Relative Markdown links of the README and ``docs/`` name files that
        exist.
        """
        pages = [os.path.join(REPO, "README.md")] + [
            os.path.join(directory, name) for directory, _, files in os.walk(DOCS)
            for name in files if name.endswith(".md")]
        broken = []
        for page in pages:
            for target in _LINK.findall(_read(page)):
                if "://" in target:
                    continue
                if not os.path.exists(os.path.join(os.path.dirname(page), target)):
                    broken.append("{}: {}".format(os.path.relpath(page, REPO), target))
        self.assertEqual(broken, [])
