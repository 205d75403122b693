"""
What a remote pull asks for, checked before anything connects (api.md §6.2):
the URL (``parse_url``) and the name of the file it becomes (``target_name``).

URL rules: ``http`` or ``https`` only (project), a host, a port from 1 to
65535 (80 and 443 by default); a user and password in the URL are sent as
``Authorization: Basic`` (as Go's client does) and never in the request line;
the fragment is dropped; characters a request line cannot carry are
percent-encoded, escapes already present are kept.  A host with non-ASCII
characters is converted with IDNA (UTS #46).  Failures are ``InvalidUrl``,
whose text follows upstream's ``An error occurred while parsing that URL: ``.

Name rules, first that applies: the ``filename`` (or RFC 8187 ``filename*``)
parameter of the response's ``Content-Disposition`` when ``use_header`` is set
and the header is there (a malformed header fails the pull); else
``file_name``; else the last segment of the URL's (decoded) path.  Then
(project) only what follows the last ``/`` is kept, and an empty name, ``.``,
``..`` or one with a NUL byte is ``InvalidName``.

Pure module: no Twisted.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

import idna

URL_ERROR = "An error occurred while parsing that URL: {}"
_PORTS = {"http": 80, "https": 443}
# What may stay as is in a request target (RFC 3986 unreserved, sub-delims,
# ":", "@", "/", "?" and existing "%" escapes).
_SAFE = "/%:@!$&'()*+,;=-._~?"
_HOST = re.compile(r"^[A-Za-z0-9_.-]+$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class InvalidUrl(Exception):
    """
    The URL cannot be pulled: 400 with upstream's prefix (``str()``).
    """

    def __init__(self, problem: str) -> None:
        super().__init__(URL_ERROR.format(problem))


class InvalidName(Exception):
    """
    The target file name is empty, ``.``, ``..`` or holds a NUL byte: 400.
    """

    def __init__(self, name: str) -> None:
        super().__init__("The file name {!r} cannot be used for a download.".format(name))
        self.name = name


class BadDisposition(Exception):
    """
    The response's ``Content-Disposition`` cannot be parsed.
    """


@dataclass(frozen=True)
class PullUrl:
    """
    A checked URL.

    :ivar host: the ASCII host name, or the IP address without brackets.
    :ivar uri: the URL the request is made for (no user information, no
        fragment, unsafe characters escaped), as bytes.
    :ivar path: the decoded path (where a default file name comes from).
    :ivar authorization: an ``Authorization`` header value, or ``None``.
    """

    scheme: str
    host: str
    port: int
    uri: bytes
    path: str
    authorization: bytes | None = None

    @property
    def is_literal(self) -> bool:
        """
        Whether the host is an IP address (nothing to resolve).
        """
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def parse_url(text: str) -> PullUrl:
    """
    Check and normalise a pull URL (see the module docstring).

    :raises InvalidUrl: why it cannot be used.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidUrl("the URL contains control characters")
    try:
        parts = urllib.parse.urlsplit(text.strip())
        hostname = parts.hostname or ""
    except ValueError as e:
        raise InvalidUrl(str(e)) from None
    if _BAD_ESCAPE.search(parts.path) or _BAD_ESCAPE.search(parts.query):
        raise InvalidUrl("invalid URL escape")
    scheme = parts.scheme.lower()
    if scheme not in _PORTS:
        raise InvalidUrl("unsupported scheme {!r} (only http and https may be pulled)".format(
            parts.scheme))
    try:
        explicit_port = parts.port
    except ValueError:
        raise InvalidUrl("invalid port in {!r}".format(parts.netloc)) from None
    if explicit_port == 0:
        raise InvalidUrl("invalid port in {!r}".format(parts.netloc))
    host = _ascii_host(hostname)
    literal = _is_ipv6(host)
    hostport = "[{}]".format(host) if literal else host
    if explicit_port is not None:
        hostport += ":{}".format(explicit_port)
    target = urllib.parse.quote(parts.path or "/", safe=_SAFE, errors="surrogateescape")
    if parts.query:
        target += "?" + urllib.parse.quote(parts.query, safe=_SAFE, errors="surrogateescape")
    authorization = None
    if parts.username is not None:
        credentials = "{}:{}".format(urllib.parse.unquote(parts.username),
                                     urllib.parse.unquote(parts.password or ""))
        authorization = b"Basic " + base64.b64encode(credentials.encode("utf-8"))
    uri = "{}://{}{}".format(scheme, hostport, target).encode("ascii")
    return PullUrl(scheme, host, explicit_port or _PORTS[scheme], uri,
                   urllib.parse.unquote(parts.path, errors="surrogateescape"), authorization)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _ascii_host(host: str) -> str:
    if not host:
        raise InvalidUrl("the URL has no host")
    if _is_ipv6(host.partition("%")[0]):
        if "%" in host:
            raise InvalidUrl("an IPv6 zone cannot be pulled from")
        return host
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as e:
            raise InvalidUrl("invalid host name: {}".format(e)) from None
    if not _HOST.match(host) or host.startswith(".") or ".." in host:
        raise InvalidUrl("invalid host name {!r}".format(host))
    return host


def disposition_filename(value: str) -> str | None:
    """
    The file name a ``Content-Disposition`` value names (``filename*`` wins
    over ``filename``), or ``None`` when it names none.  Strict, as Go's
    ``mime.ParseMediaType``: a missing type, a parameter without ``=``, an
    unterminated quote or a duplicate parameter is ``BadDisposition``.
    """
    match = _TOKEN.match(value.strip())
    if match is None:
        raise BadDisposition("no disposition type")
    rest = value.strip()[match.end():]
    params: dict[str, str] = {}
    while rest.strip():
        rest = rest.lstrip()
        if not rest.startswith(";"):
            raise BadDisposition("expected ';'")
        rest = rest[1:].lstrip()
        if not rest:
            break  # a trailing ";" is tolerated, as Go does
        name_match = _TOKEN.match(rest)
        if name_match is None or not rest[name_match.end():].startswith("="):
            raise BadDisposition("a parameter without a value")
        name = name_match.group().lower()
        rest = rest[name_match.end() + 1:]
        if rest.startswith('"'):
            param, rest = _quoted(rest)
        else:
            value_match = _TOKEN.match(rest)
            if value_match is None:
                raise BadDisposition("a parameter without a value")
            param, rest = value_match.group(), rest[value_match.end():]
        if name in params:
            raise BadDisposition("duplicate parameter {!r}".format(name))
        params[name] = param
    extended = params.get("filename*")
    if extended is not None:
        charset, quote, remainder = extended.partition("'")
        _, quote2, encoded = remainder.partition("'")
        if not quote or not quote2 or charset.lower() not in ("utf-8", "iso-8859-1"):
            raise BadDisposition("invalid filename*")
        return urllib.parse.unquote(encoded, encoding=charset, errors="surrogateescape")
    return params.get("filename")


def _quoted(text: str) -> tuple[str, str]:
    chars: list[str] = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            chars.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(chars), text[i + 1:]
        chars.append(c)
        i += 1
    raise BadDisposition("unterminated quoted string")


def target_name(url: PullUrl, file_name: str, disposition: str | None) -> str:
    """
    The base name the pull writes (see the module docstring).

    :param disposition: the response's ``Content-Disposition`` when
        ``use_header`` is set (``None`` otherwise, or when absent).
    :raises BadDisposition: the header is malformed.
    :raises InvalidName: the chosen name cannot be a file name.
    """
    name = None
    if disposition is not None:
        name = disposition_filename(disposition)
    if not name:
        name = file_name or url.path.rsplit("/", 1)[-1]
    name = name.rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "\x00" in name:
        raise InvalidName(name)
    return name
