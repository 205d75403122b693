"""
The ``xml`` parser.

A ``match`` is a dotted element path whose first segment is the root element
(``Settings.Network.Port``); a segment ``*`` is any child element.  A value of the form
``[name='value']`` sets that attribute on the matched elements, any other value becomes their
text.  Without a wildcard, missing elements on the path are created (the first child of a given
name is followed, as upstream; only plain names are created).  A conditional replacement
(``if_value``) compares the element's text, or for an attribute value the attribute's current
value (a ``regex:`` condition then only selects: the attribute gets the literal value), and never
creates anything.  An empty file gets a root element named by the first replacement.

Parsing goes straight through expat with handlers that refuse a document type declaration (so no
entity of any kind can be defined: no expansion bombs, no external entities) and any nesting
deeper than `MAX_DEPTH`.  Comments and processing instructions are kept; the document is written
back in UTF-8 with the original formatting of untouched parts.

Pure code: no I/O, no Twisted.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any, Callable, Sequence
from xml.parsers import expat

from wings_twisted.eggconfig.replacements import Replacement
from wings_twisted.eggconfig.tree import DocumentError

__all__ = ["MAX_DEPTH", "edit_xml"]

#: Deepest element nesting accepted (configuration files are shallow; serialising is recursive).
MAX_DEPTH = 256

#: ``[name='value']``, as upstream (one line; the name must be a valid attribute name).
_ATTRIBUTE_VALUE = re.compile(r"\[([A-Za-z_]\w*)='(.*)'\]\Z", re.ASCII)
#: Element names we are willing to create (no prefixes tricks, no predicates).
_NAME = re.compile(r"[A-Za-z_][\w.\-]*\Z", re.ASCII)
_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'


class _Refused(Exception):
    """
    Raised from an expat handler to stop parsing a document we will not edit.
    """


class _Document:
    """
    A parsed document: the root element and the comments/PIs before and after it.
    """

    def __init__(self) -> None:
        self.root: ET.Element | None = None
        self.before: list[Any] = []
        self.after: list[Any] = []
        self.declared = False


def _parse(text: str) -> _Document:
    document = _Document()
    stack: list[ET.Element] = []
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.ordered_attributes = False

    def refuse(*args: Any) -> None:
        raise _Refused("document type declarations are not allowed")

    def start(tag: str, attrs: dict[str, str]) -> None:
        if len(stack) >= MAX_DEPTH:
            raise _Refused("elements nested deeper than %d" % (MAX_DEPTH,))
        element = ET.Element(tag, attrs)
        if stack:
            stack[-1].append(element)
        else:
            document.root = element
        stack.append(element)

    def end(tag: str) -> None:
        stack.pop()

    def characters(data: str) -> None:
        if not stack:
            return
        parent = stack[-1]
        if len(parent):
            parent[-1].tail = (parent[-1].tail or "") + data
        else:
            parent.text = (parent.text or "") + data

    def node(factory: Callable[..., Any]) -> Callable[..., None]:
        def handler(*args: str) -> None:
            element = factory(*args)
            if stack:
                stack[-1].append(element)
            elif document.root is None:
                document.before.append(element)
            else:
                document.after.append(element)

        return handler

    def declaration(*args: Any) -> None:
        document.declared = True

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.CommentHandler = node(ET.Comment)
    parser.ProcessingInstructionHandler = node(ET.ProcessingInstruction)
    parser.XmlDeclHandler = declaration
    try:
        parser.Parse(text, True)
    except _Refused as e:
        raise DocumentError("refused XML: %s" % (e,)) from None
    except (expat.ExpatError, RecursionError) as e:
        raise DocumentError("invalid XML: %s" % (e,)) from None
    return document


def _child(parent: ET.Element, tag: str, depth: int) -> tuple[ET.Element, bool]:
    """
    The first child named ``tag``, created (indented like its siblings) when there is none, and
    whether it was created.
    """
    for element in parent:
        if element.tag == tag:
            return element, False
    indent = "\n" + "  " * depth
    child = ET.Element(tag)
    if len(parent) == 0:
        if not (parent.text or "").strip():
            parent.text = indent + "  "
            child.tail = indent
    else:
        last = parent[-1]
        if not (last.tail or "").strip():
            child.tail = last.tail
            last.tail = parent.text if not (parent.text or "").strip() else indent + "  "
    parent.append(child)
    return child, True


def _find(element: ET.Element, segments: Sequence[str]) -> list[ET.Element]:
    found = [element]
    for segment in segments:
        found = [
            child
            for parent in found
            for child in parent
            if isinstance(child.tag, str) and (segment == "*" or child.tag == segment)
        ]
    return found


def _replace(document: _Document, replacement: Replacement) -> tuple[bool, str | None]:
    """
    Apply one replacement; return whether the document changed and a problem, if any.
    """
    segments = replacement.match.split(".")
    changed = False
    root = document.root
    if root is None:
        if not _NAME.match(segments[0]) or replacement.if_value is not None:
            return False, None
        root = document.root = ET.Element(segments[0])
        changed = True
    if segments[0] not in ("*", root.tag):
        return False, "the root element is <%s>, not <%s>" % (root.tag, segments[0])
    # As upstream, a path with a wildcard only edits what exists.
    if replacement.if_value is None and all(_NAME.match(s) for s in segments):
        element = root
        for depth, segment in enumerate(segments[1:]):
            element, created = _child(element, segment, depth)
            changed = changed or created
    attribute = _ATTRIBUTE_VALUE.match(replacement.text)
    for element in _find(root, segments[1:]):
        if attribute:
            name, value = attribute.group(1), attribute.group(2)
            current = element.get(name)
            if current != value and replacement.outcome(current) is not None:
                element.set(name, value)
                changed = True
            continue
        outcome = replacement.outcome(element.text or "")
        if outcome is not None and outcome[0] != (element.text or ""):
            element.text = outcome[0]
            changed = True
    return changed, None


def edit_xml(text: str, replacements: Sequence[Replacement]) -> tuple[str, list[str]]:
    """
    Parse, edit and serialise an XML document (see the module docstring).

    :raises DocumentError: malformed, has a DTD, or nested too deeply.
    """
    empty = not text.strip()
    document = _Document() if empty else _parse(text)
    problems: list[str] = []
    changed = False
    for replacement in replacements:
        done, problem = _replace(document, replacement)
        changed = changed or done
        if problem:
            problems.append("%s: %s" % (replacement.match, problem))
    if not changed or document.root is None:
        # Untouched documents keep their exact bytes (serialising would normalise them).
        return text, problems
    parts: list[str] = []
    if document.declared or empty:
        parts.append(_DECLARATION + "\n")
    for node in document.before:
        parts.append(ET.tostring(node, encoding="unicode") + "\n")
    try:
        parts.append(ET.tostring(document.root, encoding="unicode"))
    except RecursionError:
        raise DocumentError("elements nested too deeply to write") from None
    for node in document.after:
        parts.append("\n" + ET.tostring(node, encoding="unicode"))
    if empty or text.endswith(("\n", "\r")):
        parts.append("\n")
    return "".join(parts), problems
