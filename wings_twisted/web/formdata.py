"""
The ``multipart/form-data`` details of an upload (downloads-uploads.md
§6.1–§6.2, §6.5): the boundary of the request, the parameters of a part's
``Content-Disposition``, the file-name rules and the directory as the
activity log records it.  Pure functions, no Twisted.

File names (§6.2) are read from the part's raw ``Content-Disposition``:
``filename*`` (RFC 8187) wins over ``filename``; a quoted ``filename`` has its
backslash escapes removed but percent sequences are kept literally (the
multipart library would decode ``%22``; upstream does not).
"""

from __future__ import annotations

import urllib.parse

from multipart import MultipartSegment


def parse_disposition(value: str) -> dict[str, str]:
    """
    The parameters of a ``Content-Disposition`` value, names lower-cased.
    Quoted strings lose their quotes and backslash escapes; nothing else is
    decoded.
    """
    params: dict[str, str] = {}
    i, n = value.find(";"), len(value)
    if i < 0:
        return params
    while i < n:
        i += 1
        while i < n and value[i] in " \t":
            i += 1
        start = i
        while i < n and value[i] not in "=;":
            i += 1
        name = value[start:i].strip().lower()
        if i >= n or value[i] == ";":
            continue
        i += 1
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] == '"':
            i += 1
            chars = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            i += 1
            param = "".join(chars)
            while i < n and value[i] != ";":
                i += 1
        else:
            start = i
            while i < n and value[i] != ";":
                i += 1
            param = value[start:i].strip()
        if name and name not in params:
            params[name] = param
    return params


def latin1_to_text(value: str) -> str:
    """
    Header text was decoded as latin-1 (one char per byte); reinterpret the
    bytes as UTF-8, keeping undecodable bytes as surrogate escapes.
    """
    return value.encode("latin-1", "replace").decode("utf-8", "surrogateescape")


def part_file(segment: MultipartSegment) -> tuple[str | None, str | None]:
    """
    A form part's field name and raw file name (``None`` when it has none),
    from one parse of its ``Content-Disposition`` (§6.2 step 1).
    """
    disposition = segment.header("Content-Disposition")
    if disposition is None:
        return None, None
    params = parse_disposition(disposition)
    name = params.get("name")
    extended = params.get("filename*")
    if extended is not None:
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            return name, urllib.parse.unquote(encoded, encoding=charset or "utf-8",
                                              errors="surrogateescape")
        except LookupError:
            return name, urllib.parse.unquote(encoded, errors="surrogateescape")
    filename = params.get("filename")
    return name, None if filename is None else latin1_to_text(filename)


def base_name(filename: str) -> str:
    """
    §6.2 step 2: trailing ``/`` stripped, then what follows the last ``/``.
    """
    return filename.rstrip("/").rsplit("/", 1)[-1]


def valid_name(name: str) -> bool:
    """
    §6.2 step 3.
    """
    if name in ("", ".", "..") or "\x00" in name:
        return False
    return len(name.encode("utf-8", "surrogateescape")) <= 255


def clean_directory(directory: str) -> str:
    """
    The directory as recorded in the activity log: a lexical POSIX clean like
    Go's ``path.Clean`` (§6.5).
    """
    rooted = directory.startswith("/")
    parts: list[str] = []
    for part in directory.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    text = "/".join(parts)
    if rooted:
        return "/" + text
    return text or "."


def multipart_boundary(content_type: bytes | None) -> bytes | None:
    """
    The boundary of a ``multipart/form-data`` content type, else ``None``.
    """
    if not content_type:
        return None
    kind, _, rest = content_type.partition(b";")
    if kind.strip().lower() != b"multipart/form-data":
        return None
    for param in rest.split(b";"):
        key, _, value = param.strip().partition(b"=")
        if key.strip().lower() == b"boundary":
            value = value.strip()
            if len(value) >= 2 and value[:1] == value[-1:] == b'"':
                value = value[1:-1]
            return value or None
    return None
