"""
JWTs minted exactly as the Panel's ``NodeJWTService`` does
(downloads-uploads.md §2.1, websocket.md §4.1–§4.2, transfers.md §2.2,
panel.md §9.5), plus knobs to break them on purpose.

Every token is HS256 over the node's daemon token (UTF-8 bytes), compact JSON
without escaped slashes (PHP's ``JSON_UNESCAPED_SLASHES``), with the JOSE
header ``{"typ":"JWT","alg":"HS256","jti":<jti>}`` and the claims, in the
Panel's order::

    iss        the Panel URL (app.url)
    aud        [daemon URL]   (a JSON array of one string)
    jti        md5 hex of str(user_id) + server_uuid   (transfer: sha256 hex of the uuid)
    iat        now (integer seconds)
    nbf        iat - 300
    exp        iat + 900 (websocket: + 600)
    sub        transfer only: the server uuid (also copied into the header)
    ...        per kind: file_path+server_uuid | backup_uuid+server_uuid |
               server_uuid | server_uuid+permissions
    user_uuid, user_id    every kind but transfer
    scope      only when asked for (Panel 1.12.3+)
    unique_id  16 random alphanumerics

Knobs (keyword arguments of every ``mint_*`` function): ``now`` (defaults to
the wall clock: this module serves a CLI and live tests), ``lifetime``,
``expired`` (the whole token shifted so that ``exp`` is one second in the
past), ``issued_before`` (``iat`` one second before that time, ``exp`` still
in the future: "issued before the daemon booted"), ``missing_exp``,
``missing_iat``, ``float_timestamps`` (``iat``/``nbf``/``exp`` as floats with
a fraction), ``scope`` (``True`` = the kind's scope name, or a string),
``key`` (sign with another key), ``wrong_key``, ``unique_id``,
``extra_claims`` (set or, with ``None``, remove claims), ``headers`` (same
for the JOSE header).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any, Mapping, Union
from urllib.parse import quote

from .state import DevPanelState, NodeCredentials, PanelUser

KINDS = ("download-file", "download-backup", "upload", "websocket", "transfer")
LIFETIMES = {"download-file": 900, "download-backup": 900, "upload": 900, "websocket": 600, "transfer": 900}
SCOPES = {
    "download-file": "file-download",
    "download-backup": "backup-download",
    "upload": "file-upload",
    "websocket": "websocket",
    "transfer": "transfer",
}
URL_PATHS = {"download-file": "/download/file", "download-backup": "/download/backup", "upload": "/upload/file"}

_ALPHANUMERIC = string.ascii_letters + string.digits


@dataclass(frozen=True)
class TokenUser:
    """
    The user a token is minted for: UUID and numeric Panel id.
    """

    uuid: str
    id: int


DEV_USER = TokenUser("0c9d4c8e-7b1a-4f3e-9d2c-5a6b7c8d9e01", 1)
"""Used when no user is named and the source has no users."""

Source = Union[DevPanelState, NodeCredentials, str]
UserRef = Union[TokenUser, PanelUser, str, None]


def credentials(source: Source) -> NodeCredentials:
    """
    The node credentials of a state, credentials object or bare token
    (default URLs).
    """
    if isinstance(source, DevPanelState):
        return source.node
    if isinstance(source, NodeCredentials):
        return source
    return NodeCredentials(token_id="devpanel", token=source)


def resolve_user(source: Source, server_uuid: str, user: UserRef) -> TokenUser:
    """
    Turn ``user`` (an object, a UUID or username known to the state, or
    ``None`` for the state's default user of the server) into a
    ``TokenUser``; ``ValueError`` for an unknown name.
    """
    if isinstance(user, (TokenUser, PanelUser)):
        return TokenUser(user.uuid, user.id)
    if isinstance(source, DevPanelState):
        if user is None:
            found = source.default_user(server_uuid)
        else:
            found = source.find_user(user)
            if found is None:
                raise ValueError("unknown user {!r}".format(user))
        if found is not None:
            return TokenUser(found.uuid, found.id)
    elif user is not None:
        raise ValueError("a user given by name needs a DevPanelState")
    return DEV_USER


def default_permissions(source: Source, server_uuid: str, user: TokenUser) -> list[str]:
    """
    The permission list the Panel puts in a websocket token: the user's list
    for the server (root admins get the ``admin.websocket.*`` extras), ``[]``
    without access, ``["*"]`` when the source has no users.
    """
    if isinstance(source, DevPanelState):
        found = source.find_user(user.uuid)
        if found is not None:
            return found.permissions_for(server_uuid) or []
    return ["*"]


def random_unique_id() -> str:
    """
    16 random alphanumerics, like Laravel's ``Str::random()``.
    """
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(16))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(header: Mapping[str, Any], claims: Mapping[str, Any], key: str | bytes) -> str:
    """
    A compact JWS: HMAC-SHA-256 of ``base64url(header).base64url(claims)``.
    """
    signing_input = _b64(_json(header)) + "." + _b64(_json(claims))
    raw_key = key.encode("utf-8") if isinstance(key, str) else key
    signature = hmac.new(raw_key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def _apply(target: dict[str, Any], changes: Mapping[str, Any] | None) -> None:
    for name, value in (changes or {}).items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value


def mint(
    source: Source,
    kind: str,
    server_uuid: str,
    *,
    claims: Mapping[str, Any] | None = None,
    user: UserRef = None,
    now: float | None = None,
    lifetime: int | None = None,
    expired: bool = False,
    issued_before: float | None = None,
    missing_exp: bool = False,
    missing_iat: bool = False,
    float_timestamps: bool = False,
    scope: Union[bool, str, None] = None,
    key: str | bytes | None = None,
    wrong_key: bool = False,
    unique_id: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """
    Mint a token of ``kind`` (one of ``KINDS``) for ``server_uuid``;
    ``claims`` are the kind's private claims in order.  See the module
    docstring for the knobs.
    """
    if kind not in KINDS:
        raise ValueError("unknown token kind {!r}".format(kind))
    node = credentials(source)
    life = LIFETIMES[kind] if lifetime is None else lifetime
    clock = time.time() if now is None else now
    issued: float = int(clock)
    if expired:
        issued = int(clock) - life - 1
    if issued_before is not None:
        issued = int(issued_before) - 1
    expires: float = (int(clock) if issued_before is not None else issued) + life
    if float_timestamps:
        issued, expires = issued + 0.25, expires + 0.25
    if kind == "transfer":
        jti = hashlib.sha256(server_uuid.encode("utf-8")).hexdigest()
        token_user = None
    else:
        token_user = resolve_user(source, server_uuid, user)
        jti = hashlib.md5((str(token_user.id) + server_uuid).encode("utf-8")).hexdigest()
    header: dict[str, Any] = {"typ": "JWT", "alg": "HS256", "jti": jti}
    payload: dict[str, Any] = {
        "iss": node.url,
        "aud": [node.daemon_url],
        "jti": jti,
        "iat": issued,
        "nbf": issued - 300,
        "exp": expires,
    }
    if kind == "transfer":
        payload["sub"] = server_uuid
        header["sub"] = server_uuid
    payload.update(claims or {})
    if token_user is not None:
        payload["user_uuid"] = token_user.uuid
        payload["user_id"] = token_user.id
    if scope is not None and scope is not False:
        payload["scope"] = SCOPES[kind] if scope is True else scope
    payload["unique_id"] = random_unique_id() if unique_id is None else unique_id
    if missing_exp:
        del payload["exp"]
    if missing_iat:
        del payload["iat"]
    _apply(payload, extra_claims)
    _apply(header, headers)
    signing_key: str | bytes = node.token if key is None else key
    if wrong_key:
        signing_key = (signing_key if isinstance(signing_key, str) else signing_key.decode("utf-8")) + "-wrong"
    return sign(header, payload, signing_key)


def mint_download_file(source: Source, server_uuid: str, path: str, *, user: UserRef = None, **knobs: Any) -> str:
    """
    A file download token: ``file_path``, ``server_uuid``, user claims,
    15 minutes.
    """
    claims = {"file_path": path, "server_uuid": server_uuid}
    return mint(source, "download-file", server_uuid, claims=claims, user=user, **knobs)


def mint_download_backup(
    source: Source, server_uuid: str, backup_uuid: str, *, user: UserRef = None, **knobs: Any
) -> str:
    """
    A backup download token: ``backup_uuid``, ``server_uuid``, user claims,
    15 minutes.
    """
    claims = {"backup_uuid": backup_uuid, "server_uuid": server_uuid}
    return mint(source, "download-backup", server_uuid, claims=claims, user=user, **knobs)


def mint_upload(source: Source, server_uuid: str, *, user: UserRef = None, **knobs: Any) -> str:
    """
    An upload token: ``server_uuid``, user claims, 15 minutes.
    """
    return mint(source, "upload", server_uuid, claims={"server_uuid": server_uuid}, user=user, **knobs)


def mint_websocket(
    source: Source, server_uuid: str, *, user: UserRef = None, permissions: list[str] | None = None, **knobs: Any
) -> str:
    """
    A websocket token: ``server_uuid``, ``permissions`` (default: the
    user's list for the server), user claims, 10 minutes.
    """
    token_user = resolve_user(source, server_uuid, user)
    perms = default_permissions(source, server_uuid, token_user) if permissions is None else list(permissions)
    claims = {"server_uuid": server_uuid, "permissions": perms}
    return mint(source, "websocket", server_uuid, claims=claims, user=token_user, **knobs)


def mint_transfer(source: Source, server_uuid: str, **knobs: Any) -> str:
    """
    A transfer token (signed with the destination's token, i.e. this
    node's): ``sub`` claim and header, ``jti`` = sha256 of the uuid, no user
    claims, 15 minutes.
    """
    return mint(source, "transfer", server_uuid, **knobs)


def signed_url(
    kind: str,
    source: Source,
    server_uuid: str,
    *,
    path: str | None = None,
    backup_uuid: str | None = None,
    directory: str | None = None,
    **knobs: Any,
) -> str:
    """
    The URL the Panel hands to a browser: ``<daemon url>/download/file``,
    ``/download/backup`` or ``/upload/file`` with ``?token=<jwt>``; for
    uploads ``&directory=<url-encoded>`` is appended when ``directory`` is
    given (the browser does that).
    """
    node = credentials(source)
    if kind == "download-file":
        if path is None:
            raise ValueError("download-file needs a path")
        token = mint_download_file(source, server_uuid, path, **knobs)
    elif kind == "download-backup":
        if backup_uuid is None:
            raise ValueError("download-backup needs a backup uuid")
        token = mint_download_backup(source, server_uuid, backup_uuid, **knobs)
    elif kind == "upload":
        token = mint_upload(source, server_uuid, **knobs)
    else:
        raise ValueError("no signed URL for token kind {!r}".format(kind))
    url = "{}{}?token={}".format(node.daemon_url.rstrip("/"), URL_PATHS[kind], token)
    if kind == "upload" and directory is not None:
        url += "&directory=" + quote(directory, safe="")
    return url


def websocket_url(source: Source, server_uuid: str) -> str:
    """
    The ``socket`` value the Panel returns next to a websocket token
    (``ws://`` or ``wss://`` daemon URL + ``/api/servers/<uuid>/ws``).
    """
    base = credentials(source).daemon_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return "{}/api/servers/{}/ws".format(base, server_uuid)
