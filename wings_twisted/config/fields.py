"""
How the schema dataclasses mark their fields, and the helpers that read the
marks (for loading, updating and writing alike).

A field's ``metadata`` may hold:

* ``key``: its spelling in the file when that is not the attribute name
  (``Search``, ``IPv6``), and ``aliases``: other spellings also read;
* ``port`` (0-65535), ``path`` (not empty, made absolute on loading) and
  ``networks`` (each item a ``networks.parse_allowed_network`` entry):
  checks applied when the value is read;
* ``panel_ignored``: a Panel update never changes it (``allowed_mounts``);
* ``internal``: not a key of the file (``Config.raw``, the token sources).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field, fields
from typing import Any, Callable, TypeVar, get_type_hints

_T = TypeVar("_T")

_PORT = {"port": True}
_PATH = {"path": True}


def _sub(factory: Callable[[], _T], **metadata: Any) -> _T:
    """
    A nested-section field whose default is built by ``factory``.
    """
    return field(default_factory=factory, metadata=metadata)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """
    The resolved type hints of the dataclass ``cls``, cached per class.
    """
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    return hints


def _schema_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in fields(cls) if not f.metadata.get("internal")]


def _yaml_key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key", f.name))


def _field_keys(f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """
    Every spelling of a field, in the order they are applied (the canonical
    one last, so it wins).
    """
    return tuple(f.metadata.get("aliases", ())) + (_yaml_key(f),)
