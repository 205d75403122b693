"""
One egg replacement (``{match, if_value?, replace_with}``) decoded from the Panel's JSON, with its
``{{config.…}}`` placeholders resolved and the decision rule every parser shares.

Pure code: no I/O, no Twisted.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Union

from wings_twisted.config import Config

__all__ = ["Replacement", "parse_replacement", "resolve_placeholders", "value_text"]

#: A scalar that can be stored in a YAML or JSON document by a replacement.
Typed = Union[str, int, float, bool]

#: ``{{config.a.b}}`` (one optional space inside the braces), as upstream.
_PLACEHOLDER = re.compile(r"\{\{\s?config\.([\w.-]+)\s?\}\}", re.ASCII)

#: The placeholder paths the daemon answers, mapped to YAML key paths of our configuration.  Only
#: the network interface, as upstream: replacement values can carry user input (``{{env.X}}`` is
#: resolved by the Panel first), so a wider map would let a user copy the node token into a file.
_TEMPLATABLE: Mapping[str, tuple[str, ...]] = {
    "docker.interface": ("docker", "network", "interface"),
    "docker.network.interface": ("docker", "network", "interface"),
}

#: A decimal integer as Go's ``strconv.Atoi`` accepts it.
_INTEGER = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)
_INT64 = 2**63

#: ``$1``, ``${1}``, ``$name``, ``${name}`` and ``$$`` in a Go regexp replacement template.
_TEMPLATE_REF = re.compile(r"\$(?:(\$)|\{(\w+)\}|(\w+))", re.ASCII)

_REGEX_PREFIX = "regex:"


def _snake(segment: str) -> str:
    """
    ``dockerInterface``/``docker-interface`` -> ``docker_interface`` (upstream snake-cases keys).
    """
    segment = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", segment.replace("-", "_"))
    return segment.lower()


def _config_value(config: Config, path: tuple[str, ...]) -> Any:
    """
    Follow YAML key names (``metadata["key"]`` or the attribute name) through the dataclasses.
    """
    node: Any = config
    for key in path:
        if not dataclasses.is_dataclass(node):
            raise KeyError(key)
        for f in dataclasses.fields(node):
            if f.metadata.get("key", f.name) == key:
                node = getattr(node, f.name)
                break
        else:
            raise KeyError(key)
    return node


def value_text(value: Any) -> str:
    """
    The text form of a scalar as Go's JSON encoding would print it (``true``, ``25565``, ``1.5``).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, (str, int, float)):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return str(value)


def resolve_placeholders(text: str, config: Config) -> str:
    """
    Replace every ``{{config.x.y}}`` that names a templatable value; others stay as written.
    """

    def one(match: re.Match[str]) -> str:
        path = ".".join(_snake(part) for part in match.group(1).split("."))
        keys = _TEMPLATABLE.get(path)
        if keys is None:
            return match.group(0)
        try:
            return value_text(_config_value(config, keys))
        except KeyError:
            return match.group(0)

    return _PLACEHOLDER.sub(one, text)


def _expand_template(template: str, match: re.Match[str]) -> str:
    """
    Expand a Go ``Regexp.Expand`` template: unknown or unmatched groups are empty, ``$1x`` is the
    group named ``1x``, a ``$`` that starts no reference stays literal.
    """

    def one(ref: re.Match[str]) -> str:
        if ref.group(1):
            return "$"
        name = ref.group(2) or ref.group(3)
        try:
            group = match.group(int(name) if name.isdigit() else name)
        except IndexError:
            return ""
        return group or ""

    return _TEMPLATE_REF.sub(one, template)


@dataclass(frozen=True)
class Replacement:
    """
    One decoded replacement.

    :ivar match: the key path, or for the ``file`` parser the line prefix.
    :ivar if_value: the required current value (``None``: unconditional).
    :ivar pattern: set when ``if_value`` is ``regex:<pattern>``.
    :ivar text: the replacement as text, placeholders resolved.
    :ivar typed: the replacement for YAML/JSON documents: booleans stay booleans, numbers stay
        numbers, a string that is a decimal integer in int64 range becomes an integer.
    """

    match: str
    if_value: str | None
    pattern: re.Pattern[str] | None
    text: str
    typed: Typed

    def outcome(self, current: str | None) -> tuple[str, Typed] | None:
        """
        What to store given the current value's text (``None``: the key is missing), or ``None``
        to leave it alone.

        Unconditional replacements always apply (creating the key); ``if_value`` needs an equal
        current value; a ``regex:`` one needs a current value the pattern finds, which then has
        every match replaced (Go template syntax, ``$1``) and is stored as a string.
        """
        if self.pattern is not None:
            if current is None or self.pattern.search(current) is None:
                return None
            replaced = self.pattern.sub(lambda m: _expand_template(self.text, m), current)
            return replaced, replaced
        if self.if_value is not None and current != self.if_value:
            return None
        return self.text, self.typed


def _scalar_text(value: Any) -> str | None:
    """
    A JSON scalar as text, ``None`` for anything else (objects, arrays, ``null``).
    """
    if isinstance(value, (str, bool, int, float)):
        return value_text(value)
    return None


def parse_replacement(raw: Any, config: Config) -> Replacement:
    """
    Decode one element of a ``replace`` array.

    ``match`` and ``if_value`` may be strings, numbers or booleans (their text is used);
    ``replace_with`` (or the legacy ``value``) a string, number or boolean.

    :raises ValueError: with a message saying what is wrong.
    """
    if not isinstance(raw, Mapping):
        raise ValueError("not an object")
    match = _scalar_text(raw.get("match"))
    if not match:
        raise ValueError("'match' must be a non-empty string")
    if_value: str | None = None
    if raw.get("if_value") is not None:
        if_value = _scalar_text(raw["if_value"])
        if if_value is None:
            raise ValueError("'if_value' must be a string")
    pattern = None
    if if_value is not None and if_value.startswith(_REGEX_PREFIX):
        try:
            pattern = re.compile(if_value[len(_REGEX_PREFIX) :])
        except re.error as e:
            raise ValueError("'if_value' is not a valid regular expression: %s" % (e,)) from None
    value = raw["replace_with"] if "replace_with" in raw else raw.get("value")
    typed: Typed
    if isinstance(value, str):
        text = resolve_placeholders(value, config)
        typed = text
        # (A length check first: int() refuses strings of thousands of digits.)
        if len(text) <= 24 and _INTEGER.match(text) and -_INT64 <= int(text) < _INT64:
            typed = int(text)
    elif isinstance(value, (bool, int, float)):
        text, typed = value_text(value), value
    else:
        raise ValueError("'replace_with' must be a string, number or boolean")
    return Replacement(match, if_value or None, pattern, text, typed)
