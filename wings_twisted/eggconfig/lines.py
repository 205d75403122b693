"""
The line-based parsers: ``file`` (plain text), ``properties`` (Java) and ``ini``.

Each editor takes the decoded text and the replacements and returns the new text plus the
problems of replacements it had to skip.  Only the lines a replacement changes are rewritten:
comments, blank lines, order, unknown lines and line endings stay as they were.

Pure code: no I/O, no Twisted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from wings_twisted.eggconfig.replacements import Replacement

__all__ = ["edit_ini", "edit_properties", "edit_text"]

_EOL = re.compile(r"\r\n|\r|\n")


def _split_lines(text: str) -> list[tuple[str, str]]:
    """
    ``(content, terminator)`` pairs; the last terminator is ``""`` when the text does not end
    with one.
    """
    lines: list[tuple[str, str]] = []
    start = 0
    for match in _EOL.finditer(text):
        lines.append((text[start : match.start()], match.group(0)))
        start = match.end()
    if start < len(text):
        lines.append((text[start:], ""))
    return lines


def _newline(lines: Sequence[tuple[str, str]]) -> str:
    """
    The file's own line terminator (its first one), ``\\n`` for a file without any.
    """
    for _, eol in lines:
        if eol:
            return eol
    return "\n"


# -- file ------------------------------------------------------------------------------------------


def edit_text(text: str, replacements: Sequence[Replacement]) -> tuple[str, list[str]]:
    """
    Replace every line that starts with a replacement's ``match`` by its value (the last matching
    replacement wins); the line keeps its terminator.  ``if_value`` is not used, as upstream.
    """
    out: list[str] = []
    for content, eol in _split_lines(text):
        line = content
        for replacement in replacements:
            if content.startswith(replacement.match):
                line = replacement.text
        out.append(line + eol)
    return "".join(out), []


# -- properties ------------------------------------------------------------------------------------

_PROPERTY_WS = " \t\f"
_PROPERTY_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape_property(raw: str) -> str:
    """
    Decode ``\\uXXXX``, ``\\t\\n\\r\\f`` and ``\\x`` -> ``x`` as ``java.util.Properties.load``.
    """
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(raw):
            break
        c = raw[i + 1]
        if c == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", raw[i + 2 : i + 6]):
            out.append(chr(int(raw[i + 2 : i + 6], 16)))
            i += 6
            continue
        out.append(_PROPERTY_ESCAPES.get(c, c))
        i += 2
    # Surrogate pairs written as two \u escapes become one character.
    return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _escape_property(text: str, *, key: bool) -> str:
    """
    Encode as ``java.util.Properties.store`` does with ``escUnicode``: backslash, the control
    escapes, a leading space (every space in a key, and ``=:#!``), and everything outside printable
    ASCII as ``\\uXXXX`` UTF-16 units (upstream also writes values ASCII-escaped).
    """
    out: list[str] = []
    for index, c in enumerate(text):
        if c == "\\":
            out.append("\\\\")
        elif c in "\t\n\r\f":
            out.append("\\" + "tnrf"["\t\n\r\f".index(c)])
        elif c == " " and (key or index == 0):
            out.append("\\ ")
        elif key and c in "=:#!":
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        else:
            units = c.encode("utf-16-be", "surrogatepass")
            for k in range(0, len(units), 2):
                out.append("\\u%04X" % int.from_bytes(units[k : k + 2], "big"))
    return "".join(out)


@dataclass
class _Property:
    """
    One logical line ``key=value`` (possibly several physical lines joined by ``\\``).
    """

    key: str
    value: str
    #: leading whitespace, the raw key and the separator, kept when the value is replaced.
    prefix: str
    eol: str
    raw: str


def _parse_properties(text: str) -> list[str | _Property]:
    lines = _split_lines(text)
    chunks: list[str | _Property] = []
    i = 0
    while i < len(lines):
        content, eol = lines[i]
        raw = content + eol
        stripped = content.lstrip(_PROPERTY_WS)
        i += 1
        if not stripped or stripped[0] in "#!":
            chunks.append(raw)
            continue
        logical = content
        # A line ending in an odd number of backslashes continues on the next one.
        while (len(logical) - len(logical.rstrip("\\"))) % 2 == 1 and i < len(lines):
            following, eol = lines[i]
            raw += following + eol
            logical = logical[:-1] + following.lstrip(_PROPERTY_WS)
            i += 1
        indent = logical[: len(logical) - len(logical.lstrip(_PROPERTY_WS))]
        body = logical[len(indent) :]
        end = 0
        while end < len(body) and body[end] not in "=:" + _PROPERTY_WS:
            end += 2 if body[end] == "\\" else 1
        end = min(end, len(body))
        start = end
        while start < len(body) and body[start] in _PROPERTY_WS:
            start += 1
        if start < len(body) and body[start] in "=:":
            start += 1
            while start < len(body) and body[start] in _PROPERTY_WS:
                start += 1
        key = _unescape_property(body[:end])
        value = _unescape_property(body[start:])
        prefix = indent + body[:start]
        if end == len(body):
            # A key alone: give it a separator rather than gluing the new value to it.
            prefix += "="
        chunks.append(_Property(key, value, prefix, eol, raw))
    return chunks


def edit_properties(text: str, replacements: Sequence[Replacement]) -> tuple[str, list[str]]:
    """
    Set ``match`` keys: every line defining the key is rewritten (the last one decides the
    current value, as Java reads it), a missing key is appended unless the replacement is
    conditional.
    """
    chunks = _parse_properties(text)
    eol = _newline(_split_lines(text))
    for replacement in replacements:
        entries = [c for c in chunks if isinstance(c, _Property) and c.key == replacement.match]
        outcome = replacement.outcome(entries[-1].value if entries else None)
        if outcome is None:
            continue
        value = outcome[0]
        for entry in entries:
            if entry.value != value:
                entry.value = value
                entry.raw = entry.prefix + _escape_property(value, key=False) + entry.eol
        if not entries:
            if chunks and not _ends_with_newline(chunks[-1]):
                chunks.append(eol)
            line = _escape_property(replacement.match, key=True) + "="
            line += _escape_property(value, key=False) + eol
            chunks.append(_Property(replacement.match, value, "", eol, line))
    return "".join(c if isinstance(c, str) else c.raw for c in chunks), []


def _ends_with_newline(chunk: str | _Property) -> bool:
    raw = chunk if isinstance(chunk, str) else chunk.raw
    return raw.endswith(("\n", "\r"))


# -- ini -------------------------------------------------------------------------------------------


@dataclass
class _IniLine:
    """
    One line of an ini file: a section header, a ``key = value`` entry, or anything else.
    """

    raw: str
    section: str
    header: bool = False
    key: str | None = None
    value: str = ""
    prefix: str = ""
    eol: str = ""
    joint: str = " = "


def _parse_ini(text: str) -> list[_IniLine]:
    lines: list[_IniLine] = []
    section = ""
    for content, eol in _split_lines(text):
        stripped = content.strip()
        line = _IniLine(content + eol, section, eol=eol)
        if stripped.startswith("[") and "]" in stripped:
            section = stripped[1 : stripped.index("]")].strip()
            line.section, line.header = section, True
        elif stripped and stripped[0] not in "#;":
            match = re.match(r"(\s*)([^=:]*?)(\s*[=:]\s*)", content)
            if match and match.group(2):
                line.key = match.group(2)
                line.prefix = match.group(0)
                line.joint = match.group(3)
                line.value = content[match.end() :].strip()
        lines.append(line)
    return lines


def _ini_path(match: str) -> tuple[str, str]:
    """
    ``section.key`` -> ``(section, key)``; no dot -> the default section.  As upstream, the first
    dot outside brackets separates the two and brackets only group (``[a.b].c``), they are dropped.
    """
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for c in match:
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == "." and depth <= 0 and not parts:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    if len(parts) == 2:
        return parts[0], parts[1]
    return "", parts[0]


def edit_ini(text: str, replacements: Sequence[Replacement]) -> tuple[str, list[str]]:
    """
    Set ``section.key`` (or a key of the default section, before the first header): existing
    lines keep their key, spacing and delimiter; a missing key goes after the section's last entry
    and a missing section is appended, unless the replacement is conditional.  The current value
    is the rest of the line after the delimiter, stripped (no inline comments, no unquoting).
    Values containing a line break are refused: they would inject lines.
    """
    lines = _parse_ini(text)
    problems: list[str] = []
    eol = _newline(_split_lines(text))
    for replacement in replacements:
        section, key = _ini_path(replacement.match)
        entries = [ln for ln in lines if ln.key == key and ln.section == section]
        outcome = replacement.outcome(entries[-1].value if entries else None)
        if outcome is None:
            continue
        value = outcome[0]
        if "\n" in value or "\r" in value:
            problems.append("%s: the value contains a line break" % (replacement.match,))
            continue
        for entry in entries:
            if entry.value != value:
                entry.value = value
                entry.raw = entry.prefix + value + entry.eol
        if entries:
            continue
        _insert_ini(lines, section, key, value, eol)
    return "".join(ln.raw for ln in lines), problems


def _insert_ini(lines: list[_IniLine], section: str, key: str, value: str, eol: str) -> None:
    members = [i for i, ln in enumerate(lines) if ln.section == section and (ln.key or ln.header)]
    keyed = [i for i in members if lines[i].key is not None]
    # A new key is spaced like the section's last one ("a=b" or "a = b").
    joint = lines[keyed[-1]].joint if keyed else " = "
    entry = _IniLine("", section, key=key, value=value, joint=joint, eol=eol)
    entry.prefix = key + joint
    entry.raw = entry.prefix + value + eol
    if members:
        at = members[-1]
        _terminate(lines[at], eol)
        lines.insert(at + 1, entry)
        return
    if section == "" and any(ln.header for ln in lines):
        # Default-section keys must come before the first header.
        lines.insert(0, entry)
        return
    if lines:
        _terminate(lines[-1], eol)
    if section == "":
        lines.append(entry)
        return
    if lines and lines[-1].raw.strip():
        lines.append(_IniLine(eol, section))
    lines.append(_IniLine("[" + section + "]" + eol, section, header=True, eol=eol))
    lines.append(entry)


def _terminate(line: _IniLine, eol: str) -> None:
    """
    Give the file's last line a terminator before something is added after it.
    """
    if not line.eol:
        line.eol = eol
        line.raw += eol
