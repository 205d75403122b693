"""
The document parsers: ``yaml``/``yml`` and ``json``, edited as a tree of dicts and lists.

A ``match`` is a dotted path (``servers.lobby.address``).  A segment ``*`` stands for every entry
of the mapping or list it reaches (``servers.*.address``; several wildcards may be used); a
decimal segment (or ``name[2]``) indexes a list; ``~1`` in a segment is a literal dot and ``~0`` a
literal tilde, as in upstream's path syntax.

Pure code: no I/O, no Twisted.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

import yaml

from wings_twisted.eggconfig.replacements import Replacement, value_text

__all__ = ["DocumentError", "edit_json", "edit_yaml"]

#: libyaml when PyYAML was built with it: several times faster, and it bounds nesting depth.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_INDEXED = re.compile(r"(.+)\[([0-9]+)\]\Z", re.DOTALL)


class DocumentError(Exception):
    """
    The file is not a document this parser can edit; nothing is written.
    """


class _PathError(Exception):
    """
    A replacement's path runs into a value that is not a mapping or a list.
    """


def _segments(match: str) -> list[str]:
    segments: list[str] = []
    for part in match.split("."):
        indexed = _INDEXED.match(part)
        names = [indexed.group(1), indexed.group(2)] if indexed else [part]
        segments.extend(name.replace("~1", ".").replace("~0", "~") for name in names)
    return segments


def _dict_key(node: dict[Any, Any], segment: str) -> Any:
    """
    The key of ``node`` a segment names: the string itself, else a non-string key (YAML allows
    ``80: x`` or ``true: x``) with the same text, else the string (a new key).
    """
    if segment in node:
        return segment
    for key in node:
        if not isinstance(key, str) and value_text(key) == segment:
            return key
    return segment


def _list_index(node: list[Any], segment: str) -> int | None:
    if segment.isascii() and segment.isdigit() and int(segment) < len(node):
        return int(segment)
    return None


def _store(node: Any, key: Any, replacement: Replacement) -> bool:
    """
    Apply the replacement to ``node[key]``, an existing entry or a missing key of a dict; say
    whether the document changed (``1`` and ``True`` are different values here).
    """
    exists = isinstance(node, list) or key in node
    current = node[key] if exists else None
    # A conditional replacement never matches a mapping or a list: their text could be huge
    # (YAML aliases share one object many times over).
    text = value_text(current) if exists and not isinstance(current, (dict, list)) else None
    outcome = replacement.outcome(text)
    if outcome is None:
        return False
    new = outcome[1]
    if exists and type(node[key]) is type(new) and node[key] == new:
        return False
    node[key] = new
    return True


def _set(node: Any, segment: str, replacement: Replacement) -> bool:
    """
    Apply the replacement to the entry ``segment`` of ``node`` (a dict or list).
    """
    if isinstance(node, dict):
        return _store(node, _dict_key(node, segment), replacement)
    index = _list_index(node, segment)
    if index is not None:
        return _store(node, index, replacement)
    if replacement.outcome(None) is not None:
        raise _PathError("no list element %r" % (segment,))
    return False


def _apply(node: Any, segments: Sequence[str], replacement: Replacement) -> bool:
    """
    Apply the replacement at ``segments`` below ``node``; say whether anything changed.
    """
    head, rest = segments[0], segments[1:]
    if head == "*":
        if isinstance(node, dict):
            keys: list[Any] = list(node)
        elif isinstance(node, list):
            keys = list(range(len(node)))
        else:
            return False
        changed = False
        for key in keys:
            if not rest:
                changed = _store(node, key, replacement) or changed
            elif isinstance(node[key], (dict, list)):
                # Wildcards reach only into containers; scalar entries are left alone.
                changed = _apply(node[key], rest, replacement) or changed
        return changed
    if not rest:
        return _set(node, head, replacement)
    created = False
    if isinstance(node, dict):
        key = _dict_key(node, head)
        child = node.get(key)
        if child is None:
            if replacement.if_value is not None:
                # A conditional replacement never creates anything.
                return False
            child = node[key] = {}
            created = True
    else:
        index = _list_index(node, head)
        if index is None:
            if replacement.if_value is not None:
                return False
            raise _PathError("no list element %r" % (head,))
        child = node[index]
    if not isinstance(child, (dict, list)):
        raise _PathError("%r is not a mapping or a list" % (head,))
    return _apply(child, rest, replacement) or created


def _edit(document: Any, replacements: Sequence[Replacement]) -> tuple[bool, list[str]]:
    if not isinstance(document, (dict, list)):
        raise DocumentError("the top level is not a mapping or a list")
    problems: list[str] = []
    changed = False
    for replacement in replacements:
        try:
            changed = _apply(document, _segments(replacement.match), replacement) or changed
        except _PathError as e:
            problems.append("%s: %s" % (replacement.match, e))
    return changed, problems


def edit_json(text: str, replacements: Sequence[Replacement]) -> tuple[str, list[str]]:
    """
    Parse, edit and, when a value changed, write a JSON document back with 4-space indentation
    (as upstream) and keys in their original order.  An empty file is an empty object.

    :raises DocumentError: not JSON (``NaN``/``Infinity`` included), or a scalar document.
    """

    def refuse(constant: str) -> Any:
        raise ValueError("%s is not JSON" % (constant,))

    try:
        document = json.loads(text, parse_constant=refuse) if text.strip() else {}
    except (ValueError, RecursionError) as e:
        raise DocumentError("invalid JSON: %s" % (e,)) from None
    changed, problems = _edit(document, replacements)
    if not changed:
        # Leave the file as written (formatting, comments) when every value is already right.
        return text, problems
    try:
        out = json.dumps(document, indent=4, ensure_ascii=False)
    except (ValueError, RecursionError) as e:
        raise DocumentError("cannot write the JSON: %s" % (e,)) from None
    return out + "\n", problems


def edit_yaml(text: str, replacements: Sequence[Replacement]) -> tuple[str, list[str]]:
    """
    Parse (YAML 1.1, safe), edit and, when a value changed, write the document back in block
    style with keys in their original order: comments and formatting are then lost, as upstream.
    An empty file is an empty mapping.

    :raises DocumentError: not YAML, several documents, or a scalar document.
    """
    try:
        document = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except (yaml.YAMLError, RecursionError) as e:
        raise DocumentError("invalid YAML: %s" % (" ".join(str(e).split()),)) from None
    if document is None:
        document = {}
    changed, problems = _edit(document, replacements)
    if not changed:
        return text, problems
    try:
        out = yaml.dump(
            document,
            Dumper=_DUMPER,
            default_flow_style=False,
            sort_keys=False,
            allow_unicode=True,
            width=1 << 30,
        )
    except (yaml.YAMLError, RecursionError) as e:
        raise DocumentError("cannot write the YAML: %s" % (e,)) from None
    return out, problems
