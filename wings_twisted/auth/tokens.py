"""
The panel's signed JWTs: one validator for the signed-URL routes, the
console websocket and ``POST /api/transfers``, and the claim requirements
of each token kind.

Pure module: no Twisted imports, no clock reads.  Everything that depends on
time takes ``now`` (or a clock callable) from the caller, and the keys are
passed on every call, so a token rotation through ``/api/update`` applies to
the very next request (api.md §2.5 step 4, §2.6 "Key rotation").

Decisions (api.md §2.5, §2.6; downloads-uploads.md §2.2-§2.5;
websocket.md §4.3, §14):

* ``decode_token`` is the one validator shared by the three signed-URL routes,
  the websocket ``auth`` event and (later) ``POST /api/transfers``.  It checks,
  in order, stopping at the first failure: size and the three-segment shape,
  the unverified JOSE header (``alg`` must be exactly ``"HS256"``), the
  HMAC-SHA-256 signature (PyJWT, ``algorithms=["HS256"]``), ``exp`` by hand
  (required, a finite JSON number that is not a boolean, valid while
  ``floor(now) <= exp + leeway``), the route's required claims and their JSON
  types, the claims whose type is fixed whatever the route (``user_uuid``),
  and finally the ``scope`` rule.  PyJWT's own ``aud``/``iss``/``iat``/
  ``nbf``/``exp``/``sub``/``jti`` checks are all switched off: the panel's
  tokens carry an array ``aud`` and an ``iat`` that may lie in the future,
  which PyJWT's defaults reject.
* Every failure raises a subclass of ``InvalidToken``; no PyJWT exception ever
  escapes (the original is chained as ``__cause__`` for logs).  The HTTP
  routes only care about ``InvalidToken`` (403).  The subclasses exist for
  the websocket, which reports them differently (websocket.md §4.3):
  ``MalformedToken`` (shape, header, signature, claim types → "daemon
  error"), ``ExpiredToken`` (``exp`` missing, not a number, or past →
  ``jwt: exp claim is invalid``), ``ScopeMismatch`` (→ ``jwt: missing connect
  permission``).  ``str(exc)`` is a diagnostic for logs; the text shown to
  clients is ``InvalidToken.message``.
* The websocket validates its steps in a different order (deny lists sit
  between ``exp`` and the scope check), so ``decode_token(..., scope=None)``
  skips the scope rule entirely and ``check_scope`` is public for the caller
  to run at the right moment.
* Claim requirements per endpoint are ``TokenKind`` constants
  (``DOWNLOAD_FILE``, ``DOWNLOAD_BACKUP``, ``UPLOAD``, ``WEBSOCKET``,
  ``TRANSFER``); ``kind.decode(...)`` is shorthand for ``decode_token`` with
  the kind's scope and claims.  A required claim typed ``str`` must be a JSON
  string; ``server_uuid`` and ``unique_id`` must moreover be non-empty (an
  empty ``unique_id`` would act as one id shared by every such token).  The
  array claim ``permissions``, when required, must hold only strings.
* Token kinds are told apart by their claims even when the Panel sends no
  ``scope`` (Panel 1.11 never does).  What the Panel's ``NodeJWTService``
  callers put in each token: a file download carries ``file_path``, a backup
  download ``backup_uuid``, a websocket token ``permissions``, an upload none
  of the three (``server_uuid`` only), a transfer token ``sub`` and no
  ``server_uuid``.  So ``file_path``, ``backup_uuid`` and ``permissions`` are
  *kind markers*: each kind requires its own marker (if it has one) and
  refuses a token carrying any other kind's marker (``WrongKind``, a
  ``MalformedToken``).  An upload therefore refuses a websocket or download
  token of the same server, which a subuser who may only open the console or
  read one file could otherwise replay as a write permit.  Every real Panel
  token shape (1.11 and 1.12, with or without ``user_uuid``/``user_id``/
  ``scope``) still passes on its own route.
* ``exp`` is bounded: a token claiming to be valid for more than
  ``MAX_LIFETIME`` seconds after ``now`` (the Panel mints 10 to 15 minutes)
  is refused, so a forged-by-key-leak or mis-minted token with ``exp: 1e400``
  cannot be a permanent credential.  ``nbf`` and ``iat`` stay unchecked
  (api.md §2.6 rule 3: the Panel's clock may run ahead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import jwt

__all__ = [
    "InvalidToken",
    "MalformedToken",
    "ExpiredToken",
    "ScopeMismatch",
    "WrongKind",
    "MAX_TOKEN_LENGTH",
    "MAX_LIFETIME",
    "KIND_MARKERS",
    "decode_token",
    "check_scope",
    "check_kind",
    "TokenKind",
    "DOWNLOAD_FILE",
    "DOWNLOAD_BACKUP",
    "UPLOAD",
    "WEBSOCKET",
    "TRANSFER",
]



class InvalidToken(Exception):
    """
    A signed token was refused: answer 403 with ``message``.

    ``str(exc)`` is a diagnostic meant for logs, not for clients.
    """

    status = 403
    message = "The provided token is invalid or has expired."


class MalformedToken(InvalidToken):
    """
    Not a well-formed HS256 JWS signed with the node key, or a claim of the
    wrong JSON type (websocket: reported as ``daemon error``).
    """


class ExpiredToken(InvalidToken):
    """
    ``exp`` is missing, not a number, or in the past
    (websocket: ``jwt: exp claim is invalid``).
    """


class WrongKind(MalformedToken):
    """
    The token carries a claim that marks another kind of token (a websocket
    or download token presented for an upload, for example).
    """


class ScopeMismatch(InvalidToken):
    """
    The ``scope`` claim does not name the endpoint, or is required and absent
    (websocket: ``jwt: missing connect permission``).
    """


#: Longest token accepted (characters).  Panel tokens are well under 8 KiB
#: even with a 4096-byte ``file_path``; the cap bounds the work an
#: unauthenticated client can cause before the signature is checked.
MAX_TOKEN_LENGTH = 65536

#: Longest validity a token may claim, in seconds after ``now``.  The Panel
#: mints 10 (websocket) to 15 minutes; a day leaves room for any clock skew.
MAX_LIFETIME = 86400

#: The claim that marks each kind of Panel token (module docstring).
KIND_MARKERS: Mapping[str, str] = MappingProxyType({
    "file_path": "file-download",
    "backup_uuid": "backup-download",
    "permissions": "websocket",
})

#: Claims that must be non-empty strings whenever a route requires them.
_NON_EMPTY = frozenset({"server_uuid", "unique_id"})

#: Claims whose JSON type is fixed whatever the route; checked when present.
_TYPED_WHEN_PRESENT: Mapping[str, type] = MappingProxyType({"user_uuid": str})

#: Array claims whose elements must have this type when the claim is required.
_ELEMENT_TYPES: Mapping[str, type] = MappingProxyType({"permissions": str})

#: PyJWT options: signature only.  Every claim check is ours.
_PYJWT_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


def _has_type(value: object, types: type | tuple[type, ...]) -> bool:
    """
    ``isinstance`` with JSON semantics: a boolean is not a number.
    """
    wanted = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in wanted
    return isinstance(value, wanted)


def _is_number(value: object) -> bool:
    """
    True for a finite JSON number (int or float, never a boolean).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def _verify(token: str | bytes, key: str) -> dict[str, Any]:
    """
    Steps 1-2 of downloads-uploads.md §2.2: shape, header ``alg`` and
    signature.  Returns the (unchecked) claims.
    """
    if not key:
        raise MalformedToken("no signing key configured")
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedToken("token is not ASCII") from None
    if not isinstance(token, str) or not token:
        raise MalformedToken("missing token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedToken("token too long")
    if token.count(".") != 2:
        raise MalformedToken("token does not have three segments")
    # One decode (the base64url checks of PyJWT are per character and were
    # a fifth of a download's cost when run twice).  PyJWT refuses a header
    # alg outside ``algorithms`` before verifying; the explicit check below
    # also pins an exact "HS256" string.  PyJWT raises more than PyJWTError
    # on hostile input (e.g. deeply nested JSON); whatever goes wrong in
    # there, the token is simply invalid.
    try:
        decoded = jwt.decode_complete(token, key, algorithms=["HS256"], options=_PYJWT_OPTIONS)
    except Exception as exc:
        raise MalformedToken("header, signature or payload rejected") from exc
    header = decoded.get("header")
    alg = header.get("alg") if isinstance(header, dict) else None
    if not isinstance(alg, str) or alg != "HS256":
        raise MalformedToken("header alg is not HS256")
    claims = decoded.get("payload")
    if not isinstance(claims, dict):
        raise MalformedToken("payload is not a JSON object")
    return claims


def _check_exp(claims: Mapping[str, Any], now: float, leeway: int) -> None:
    """
    Step 3: ``exp`` is a number and ``floor(now) <= exp + leeway``.
    """
    exp = claims.get("exp")
    if exp is None:
        raise ExpiredToken("exp claim is missing")
    if not _is_number(exp):
        raise ExpiredToken("exp claim is not a number")
    if math.floor(now) > exp + leeway:
        raise ExpiredToken("token has expired")
    if exp > now + MAX_LIFETIME:
        raise ExpiredToken("exp claim lies too far in the future")


def check_kind(claims: Mapping[str, Any], scope: str) -> None:
    """
    Refuse a token that carries another kind's marker claim (module docstring).

    :param scope: the endpoint's scope name (``TokenKind.scope``).
    :raises WrongKind: a marker of another kind is present.
    """
    for marker, kind in KIND_MARKERS.items():
        if kind != scope and marker in claims:
            raise WrongKind("claim " + marker + " marks a " + kind + " token")


def _check_claims(claims: Mapping[str, Any],
                  required: Mapping[str, type | tuple[type, ...]]) -> None:
    """
    Step 5: required claims present with the right JSON type.
    """
    for name, types in required.items():
        if name not in claims:
            raise MalformedToken("missing claim " + name)
        value = claims[name]
        if not _has_type(value, types):
            raise MalformedToken("claim " + name + " has the wrong type")
        if name in _NON_EMPTY and value == "":
            raise MalformedToken("claim " + name + " is empty")
        element = _ELEMENT_TYPES.get(name)
        if element is not None and isinstance(value, list):
            if not all(_has_type(item, element) for item in value):
                raise MalformedToken("claim " + name + " has elements of the wrong type")
    for name, expected in _TYPED_WHEN_PRESENT.items():
        if name in claims and not _has_type(claims[name], expected):
            raise MalformedToken("claim " + name + " has the wrong type")


def check_scope(claims: Mapping[str, Any], scope: str, *,
                require_scope: bool = False) -> None:
    """
    Apply the ``scope`` rule (api.md §2.6 rule 6) to decoded claims.

    A token without ``scope`` passes unless ``require_scope``; a token with
    one passes only if it is a string whose space-separated list contains
    ``scope``.

    :raises ScopeMismatch: the rule refuses the token.
    """
    if "scope" not in claims:
        if require_scope:
            raise ScopeMismatch("scope claim is required")
        return
    value = claims["scope"]
    if not isinstance(value, str) or scope not in value.split():
        raise ScopeMismatch("scope does not include " + scope)


def decode_token(
    token: str | bytes,
    key: str,
    *,
    now: float,
    required: Mapping[str, type | tuple[type, ...]],
    scope: str | None,
    require_scope: bool = False,
    leeway: int = 0,
) -> dict[str, Any]:
    """
    Verify a panel-signed JWT and return its claims.

    :param token: the compact JWS, as text or as the raw query bytes.
    :param key: the current node token (HMAC key); empty is refused.
    :param now: the current time in seconds (``reactor.seconds()``).
    :param required: claim name → accepted JSON type(s) (``str``, ``list``,
        ``int``...; ``bool`` only matches if listed explicitly).
    :param scope: the endpoint's scope name, or ``None`` to skip the scope
        rule (the caller then runs ``check_scope`` itself).
    :param require_scope: ``tokens.require_scope``: a missing ``scope`` fails.
    :param leeway: extra seconds of validity after ``exp`` (default 0).
    :return: every claim of the payload, unknown ones included.
    :raises InvalidToken: (a subclass of it) on any failure.
    """
    claims = _verify(token, key)
    _check_exp(claims, now, leeway)
    _check_claims(claims, required)
    if scope is not None:
        check_scope(claims, scope, require_scope=require_scope)
    return claims


@dataclass(frozen=True)
class TokenKind:
    """
    What one endpoint requires of a signed token: its scope name and claims.
    """

    scope: str
    required: Mapping[str, type | tuple[type, ...]] = field(hash=False)

    def check_kind(self, claims: Mapping[str, Any]) -> None:
        """
        Refuse claims that mark another kind of token (`check_kind`).
        """
        check_kind(claims, self.scope)

    def decode(self, token: str | bytes, key: str, *, now: float,
               require_scope: bool = False, leeway: int = 0,
               with_scope: bool = True) -> dict[str, Any]:
        """
        ``decode_token`` with this kind's claims and, unless ``with_scope`` is
        false (the websocket checks scope later, websocket.md §4.3), its scope.
        """
        claims = decode_token(token, key, now=now, required=self.required,
                              scope=self.scope if with_scope else None,
                              require_scope=require_scope, leeway=leeway)
        check_kind(claims, self.scope)
        return claims


def _kind(scope: str, **required: type | tuple[type, ...]) -> TokenKind:
    """
    Build a ``TokenKind`` with a read-only claim table.
    """
    return TokenKind(scope, MappingProxyType(dict(required)))


#: ``GET|HEAD /download/file`` (downloads-uploads.md §1).
DOWNLOAD_FILE = _kind("file-download", server_uuid=str, file_path=str, unique_id=str)
#: ``GET|HEAD /download/backup``.
DOWNLOAD_BACKUP = _kind("backup-download", server_uuid=str, backup_uuid=str, unique_id=str)
#: ``POST /upload/file`` (``user_uuid`` is optional, typed when present).
UPLOAD = _kind("file-upload", server_uuid=str, unique_id=str)
#: The websocket ``auth`` event (websocket.md §4.2); ``unique_id`` is unused.
WEBSOCKET = _kind("websocket", server_uuid=str, permissions=list)
#: ``POST /api/transfers`` (transfers.md §4.1); the route checks ``sub`` is a UUID.
TRANSFER = _kind("transfer", sub=str)
