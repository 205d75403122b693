"""
The configuration's errors, and how they quote a bad value.

:class:`ConfigError` is what loading refuses a file or plain data with;
:class:`UpdateError`, a subclass, is a refused ``POST /api/update`` body.
``str()`` of either is one line naming the file, the dotted key and the
problem, e.g. ``config.yml: api.port: expected an integer, got 'abc'``.
"""

from __future__ import annotations

from typing import Any, Mapping


class ConfigError(Exception):
    """
    The configuration is unusable.

    ``str()`` is a single line: ``<source>: <key>: <problem>``, where the
    source (usually the file path) and the dotted key are left out when not
    known.
    """

    def __init__(
        self, problem: str, *, key: str | None = None, source: str | None = None
    ) -> None:
        self.problem = problem
        self.key = key
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.source, self.key) if p]
        parts.append(self.problem)
        return " ".join(": ".join(parts).splitlines())

    def with_source(self, source: str | None) -> ConfigError:
        """
        Return a copy of this error (same class) attributed to ``source``.
        """
        return type(self)(self.problem, key=self.key, source=source)


class UpdateError(ConfigError):
    """
    A ``POST /api/update`` body was refused; the HTTP layer answers 400.
    """


def _describe(value: Any) -> str:
    """
    A short one-line rendering of a bad value for an error message.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    text = value if isinstance(value, str) else str(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return repr(text)
