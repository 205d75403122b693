"""
Tests for ``wings_twisted.auth``: the bearer check (api.md §2.5), the signed
token validator (api.md §2.6, downloads-uploads.md §2.2, websocket.md §4.3)
and the single-use store (downloads-uploads.md §2.3).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from typing import Any

import jwt
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.auth.tokens import KIND_MARKERS, MAX_LIFETIME
from wings_twisted.auth import (
    DOWNLOAD_BACKUP,
    DOWNLOAD_FILE,
    MAX_TOKEN_LENGTH,
    TRANSFER,
    UPLOAD,
    WEBSOCKET,
    ExpiredToken,
    InvalidToken,
    MalformedToken,
    WrongKind,
    check_kind,
    MissingBearer,
    ScopeMismatch,
    TokenKind,
    TokenStore,
    WrongBearer,
    check_bearer,
    check_scope,
    decode_token,
)

KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2"
NOW = 1_710_687_510.4
SERVER = "0c5b1d6e-3f0a-4b8e-9d2c-7a6f5e4d3c2b"

#: Pass as a claim value to ``panel_claims`` to leave that claim out.
_DROP = object()


def _b64(data: bytes) -> str:
    """
    Unpadded base64url, as in a compact JWS.
    """
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: Any) -> bytes:
    """
    Compact JSON, as the panel's encoder writes it.
    """
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def craft(header: Any, payload: Any, key: str | None = KEY, *,
          digest: Any = hashlib.sha256, raw_payload: bytes | None = None,
          raw_header: bytes | None = None) -> str:
    """
    Build a compact JWS by hand, so headers PyJWT refuses to emit can be
    tested; ``key=None`` leaves the signature empty.
    """
    signing_input = (_b64(raw_header if raw_header is not None else _json(header)) + "."
                     + _b64(raw_payload if raw_payload is not None else _json(payload)))
    if key is None:
        signature = ""
    else:
        signature = _b64(hmac.new(key.encode(), signing_input.encode(), digest).digest())
    return signing_input + "." + signature


def panel_claims(**extra: Any) -> dict[str, Any]:
    """
    The claims the panel puts in a file-download token minted at ``NOW``,
    with an ``iat`` 2 s ahead of the node's clock.
    """
    iat = int(NOW) + 2
    claims: dict[str, Any] = {
        "iss": "https://panel.example.com",
        "aud": ["https://node.example.com:8080"],
        "jti": hashlib.md5(("12" + SERVER).encode()).hexdigest(),
        "iat": iat,
        "nbf": iat - 300,
        "exp": iat + 900,
        "file_path": "/world/level.dat",
        "server_uuid": SERVER,
        "user_uuid": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
        "user_id": 12,
        "unique_id": "Ab3dEf6hIj9kLm2n",
    }
    claims.update(extra)
    return {name: value for name, value in claims.items() if value is not _DROP}


def panel_token(claims: dict[str, Any] | None = None, key: str = KEY,
                algorithm: str = "HS256") -> str:
    """
    Sign ``claims`` with PyJWT the way the panel does (``jti`` copied into
    the JOSE header).
    """
    claims = panel_claims() if claims is None else claims
    return jwt.encode(claims, key, algorithm=algorithm,
                      headers={"jti": claims.get("jti", "x")})


def decode(token: str | bytes, key: str = KEY, *, now: float = NOW,
           kind: TokenKind = DOWNLOAD_FILE, require_scope: bool = False,
           leeway: int = 0) -> dict[str, Any]:
    """
    ``decode_token`` with ``kind``'s claims and scope and the test defaults.
    """
    return decode_token(token, key, now=now, required=kind.required, scope=kind.scope,
                        require_scope=require_scope, leeway=leeway)


class CheckBearerTests(SynchronousTestCase):
    """
    The case table of api.md §2.5.
    """

    token = "secret-node-token"

    def test_absent_or_empty(self) -> None:
        """
        No header, or an empty one, is 401.
        """
        self.assertRaises(MissingBearer, check_bearer, None, self.token)
        self.assertRaises(MissingBearer, check_bearer, b"", self.token)

    def test_bearer_without_space(self) -> None:
        """
        ``Bearer`` alone is 401.
        """
        self.assertRaises(MissingBearer, check_bearer, b"Bearer", self.token)

    def test_wrong_scheme(self) -> None:
        """
        A lower-case ``bearer`` or another scheme is 401, even with the right token.
        """
        self.assertRaises(MissingBearer, check_bearer, b"bearer " + self.token.encode(),
                          self.token)
        self.assertRaises(MissingBearer, check_bearer, b"BEARER " + self.token.encode(),
                          self.token)
        self.assertRaises(MissingBearer, check_bearer, b"Basic dXNlcjpwYXNz", self.token)

    def test_wrong_token(self) -> None:
        """
        ``Bearer <wrong>`` is 403.
        """
        self.assertRaises(WrongBearer, check_bearer, b"Bearer wrong", self.token)

    def test_trailing_space(self) -> None:
        """
        ``Bearer `` (nothing after the space) is 401, as the HTTP parser leaves
        ``Bearer``; the same holds for a value that was not stripped.
        """
        self.assertRaises(MissingBearer, check_bearer, b"Bearer ", self.token)
        self.assertRaises(MissingBearer, check_bearer, b"Bearer \t ", self.token)

    def test_two_spaces(self) -> None:
        """
        ``Bearer  <token>`` is 403: the second part starts with a space.
        """
        self.assertRaises(WrongBearer, check_bearer, b"Bearer  " + self.token.encode(),
                          self.token)

    def test_trailing_garbage(self) -> None:
        """
        The token followed by more text is 403.
        """
        self.assertRaises(WrongBearer, check_bearer, b"Bearer " + self.token.encode() + b" x",
                          self.token)

    def test_pass(self) -> None:
        """
        ``Bearer <token>`` passes.
        """
        self.assertIsNone(check_bearer(b"Bearer " + self.token.encode(), self.token))

    def test_rotation(self) -> None:
        """
        The token is the one passed on this call: after a rotation the old
        header is refused and the new one accepted.
        """
        self.assertRaises(WrongBearer, check_bearer, b"Bearer " + self.token.encode(), "new")
        self.assertIsNone(check_bearer(b"Bearer new", "new"))

    def test_non_ascii_token(self) -> None:
        """
        A configured token is compared as UTF-8 bytes.
        """
        self.assertIsNone(check_bearer("Bearer t\u00f8ken".encode("utf-8"), "t\u00f8ken"))

    def test_empty_configured_token(self) -> None:
        """
        With no token configured nothing authenticates.
        """
        self.assertRaises(WrongBearer, check_bearer, b"Bearer x", "")
        self.assertRaises(MissingBearer, check_bearer, b"Bearer ", "")

    def test_statuses_and_messages(self) -> None:
        """
        The exceptions carry upstream's status and text.
        """
        self.assertEqual(MissingBearer.status, 401)
        self.assertEqual(MissingBearer.message,
                         "The required authorization heads were not present in the request.")
        self.assertEqual(WrongBearer.status, 403)
        self.assertEqual(WrongBearer.message, "You are not authorized to access this endpoint.")


class PanelTokenTests(SynchronousTestCase):
    """
    Tokens minted the way the panel mints them are accepted.
    """

    def test_file_download(self) -> None:
        """
        A panel file-download token (array ``aud``, ``iat`` 2 s ahead, ``nbf``
        = iat - 300, header ``jti``) decodes to its claims, unknown ones included.
        """
        claims = decode(panel_token())
        self.assertEqual(claims, panel_claims())

    def test_bytes_token(self) -> None:
        """
        The raw query bytes are accepted like text.
        """
        self.assertEqual(decode(panel_token().encode("ascii")), panel_claims())

    def test_backup_download(self) -> None:
        """
        A backup-download token carries ``backup_uuid`` instead of ``file_path``.
        """
        claims = panel_claims(file_path=_DROP, backup_uuid="1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b")
        self.assertEqual(decode(panel_token(claims), kind=DOWNLOAD_BACKUP), claims)

    def test_upload(self) -> None:
        """
        An upload token needs only ``server_uuid`` and ``unique_id``.
        """
        claims = panel_claims(file_path=_DROP)
        self.assertEqual(decode(panel_token(claims), kind=UPLOAD), claims)

    def test_websocket(self) -> None:
        """
        A websocket token carries a ``permissions`` array.
        """
        claims = panel_claims(file_path=_DROP, permissions=["*", "admin.websocket.errors"])
        self.assertEqual(decode(panel_token(claims), kind=WEBSOCKET), claims)

    def test_websocket_empty_permissions(self) -> None:
        """
        An empty ``permissions`` array is well-typed (the permission gate is
        the websocket's business).
        """
        claims = panel_claims(permissions=[])
        self.assertEqual(decode(panel_token(claims), kind=WEBSOCKET), claims)

    def test_transfer(self) -> None:
        """
        A transfer token carries ``sub`` and no ``server_uuid``.
        """
        claims = panel_claims(file_path=_DROP, server_uuid=_DROP, user_uuid=_DROP,
                              user_id=_DROP, sub=SERVER)
        token = jwt.encode(claims, KEY, algorithm="HS256", headers={"jti": "x", "sub": SERVER})
        self.assertEqual(decode(token, kind=TRANSFER), claims)

    def test_exp_equal_to_current_second(self) -> None:
        """
        The token is still valid during the second equal to ``exp``.
        """
        claims = panel_claims(exp=int(NOW))
        self.assertEqual(decode(panel_token(claims), now=int(NOW) + 0.999), claims)

    def test_float_exp(self) -> None:
        """
        A float ``exp`` (and float ``iat``/``nbf``) is accepted.
        """
        claims = panel_claims(exp=NOW + 0.5, iat=NOW, nbf=NOW - 300.5)
        self.assertEqual(decode(panel_token(claims)), claims)

    def test_exp_up_to_a_day_ahead(self) -> None:
        """
        An ``exp`` up to ``MAX_LIFETIME`` (a day) after now is accepted: the
        Panel's 15 minutes plus any plausible clock skew.
        """
        claims = panel_claims(exp=NOW + MAX_LIFETIME)
        self.assertEqual(decode(panel_token(claims)), claims)

    def test_leeway(self) -> None:
        """
        A configured leeway extends validity by that many seconds past ``exp``.
        """
        token = panel_token(panel_claims(exp=int(NOW) - 2))
        self.assertEqual(decode(token, leeway=2)["exp"], int(NOW) - 2)
        self.assertRaises(ExpiredToken, decode, token, leeway=1)

    def test_iat_and_nbf_not_checked(self) -> None:
        """
        ``iat`` and ``nbf`` in the future do not matter, nor do their types:
        the future here is ahead of both the token's ``now`` and the real
        clock (year 2096), so neither our check nor a library default that
        reads the wall clock could let it through by accident.
        """
        future = 4_000_000_000
        claims = panel_claims(iat=future, nbf=future + 300)
        self.assertEqual(decode(panel_token(claims)), claims)
        claims = panel_claims(iat="tomorrow", nbf=[future])
        self.assertEqual(decode(panel_token(claims)), claims)

    def test_aud_iss_sub_jti_not_checked(self) -> None:
        """
        Any ``aud``, ``iss``, ``sub`` or ``jti`` is accepted, whatever its type.
        """
        claims = panel_claims(aud="https://elsewhere", iss=5, sub=["x"], jti=7)
        token = craft({"typ": "JWT", "alg": "HS256", "jti": 7, "sub": None}, claims)
        self.assertEqual(decode(token), claims)

    def test_missing_user_uuid(self) -> None:
        """
        ``user_uuid`` is optional.
        """
        claims = panel_claims(user_uuid=_DROP)
        self.assertEqual(decode(panel_token(claims)), claims)

    def test_kind_decode(self) -> None:
        """
        ``TokenKind.decode`` applies the kind's claims and scope.
        """
        claims = panel_claims(scope="file-download")
        self.assertEqual(DOWNLOAD_FILE.decode(panel_token(claims), KEY, now=NOW), claims)
        self.assertRaises(ScopeMismatch, DOWNLOAD_BACKUP.decode,
                          panel_token(panel_claims(scope="file-download",
                                                   backup_uuid="b")), KEY, now=NOW)

    def test_kinds(self) -> None:
        """
        Each kind names Pelican's scope and the claims of downloads-uploads.md §1.
        """
        self.assertEqual(
            {kind.scope: dict(kind.required)
             for kind in (DOWNLOAD_FILE, DOWNLOAD_BACKUP, UPLOAD, WEBSOCKET, TRANSFER)},
            {"file-download": {"server_uuid": str, "file_path": str, "unique_id": str},
             "backup-download": {"server_uuid": str, "backup_uuid": str, "unique_id": str},
             "file-upload": {"server_uuid": str, "unique_id": str},
             "websocket": {"server_uuid": str, "permissions": list},
             "transfer": {"sub": str}})


class RejectedTokenTests(SynchronousTestCase):
    """
    Everything that is not a valid, unexpired, well-typed HS256 token signed
    with the node key is an ``InvalidToken`` and nothing else.
    """

    def assertInvalid(self, token: str | bytes, error: type[InvalidToken] = InvalidToken,
                      **kwargs: Any) -> InvalidToken:
        """
        ``decode`` refuses ``token`` with ``error`` and no PyJWT exception.
        """
        exc = self.assertRaises(InvalidToken, decode, token, **kwargs)
        self.assertIsInstance(exc, error)
        self.assertNotIsInstance(exc, jwt.PyJWTError)
        return exc

    def test_message(self) -> None:
        """
        Every refusal is a 403 with the project's message.
        """
        self.assertEqual(InvalidToken.status, 403)
        self.assertEqual(InvalidToken.message, "The provided token is invalid or has expired.")
        for cls in (MalformedToken, ExpiredToken, ScopeMismatch):
            self.assertTrue(issubclass(cls, InvalidToken))

    def test_alg_none(self) -> None:
        """
        ``alg: none`` with an empty signature is refused.
        """
        self.assertInvalid(craft({"typ": "JWT", "alg": "none"}, panel_claims(), key=None),
                           MalformedToken)

    def test_alg_none_with_valid_hmac(self) -> None:
        """
        ``alg: none`` is refused even with a correct HMAC-SHA-256 signature.
        """
        self.assertInvalid(craft({"typ": "JWT", "alg": "none"}, panel_claims()), MalformedToken)

    def test_alg_missing(self) -> None:
        """
        A header without ``alg`` is refused even with a correct signature.
        """
        self.assertInvalid(craft({"typ": "JWT"}, panel_claims()), MalformedToken)

    def test_alg_spelling(self) -> None:
        """
        Only the exact string ``HS256`` is accepted as ``alg``.
        """
        for alg in ("hs256", "HS256 ", ["HS256"], None, 256):
            self.assertInvalid(craft({"typ": "JWT", "alg": alg}, panel_claims()), MalformedToken)

    def test_hs512_with_right_key(self) -> None:
        """
        An HS512 token signed with the node key is refused.
        """
        self.assertInvalid(panel_token(algorithm="HS512"), MalformedToken)
        self.assertInvalid(craft({"alg": "HS512"}, panel_claims(), digest=hashlib.sha512),
                           MalformedToken)

    def test_rs256_header(self) -> None:
        """
        An ``RS256`` header (key-confusion attempt, HMAC over the node key) is refused.
        """
        self.assertInvalid(craft({"typ": "JWT", "alg": "RS256"}, panel_claims()), MalformedToken)

    def test_forged_signature(self) -> None:
        """
        A token whose signature or payload was altered is refused.
        """
        token = panel_token()
        head, payload, signature = token.split(".")
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        self.assertInvalid(head + "." + payload + "." + flipped, MalformedToken)
        forged = _b64(_json(panel_claims(file_path="/etc/shadow")))
        self.assertInvalid(head + "." + forged + "." + signature, MalformedToken)
        self.assertInvalid(head + "." + payload + ".", MalformedToken)

    def test_wrong_key(self) -> None:
        """
        A token signed with another key (or the previous node token) is refused.
        """
        self.assertInvalid(panel_token(key="another-key-" + KEY), MalformedToken)
        self.assertInvalid(panel_token(), MalformedToken, key="rotated-" + KEY)

    def test_empty_key(self) -> None:
        """
        An empty key refuses everything, including a token HMAC'd with it.
        """
        self.assertInvalid(panel_token(), MalformedToken, key="")
        self.assertInvalid(craft({"alg": "HS256"}, panel_claims(), key=""), MalformedToken, key="")

    def test_no_exp(self) -> None:
        """
        A token without ``exp`` (or with ``exp: null``) is refused.
        """
        self.assertInvalid(panel_token(panel_claims(exp=_DROP)), ExpiredToken)
        self.assertInvalid(panel_token(panel_claims(exp=None)), ExpiredToken)

    def test_exp_as_string(self) -> None:
        """
        ``exp`` given as a string is refused, even a numeric one.
        """
        self.assertInvalid(panel_token(panel_claims(exp=str(int(NOW) + 900))), ExpiredToken)

    def test_exp_as_bool(self) -> None:
        """
        ``exp: true`` is not a number.
        """
        self.assertInvalid(panel_token(panel_claims(exp=True)), ExpiredToken)

    def test_exp_not_finite(self) -> None:
        """
        ``exp`` as ``Infinity`` or ``NaN`` (accepted by Python's JSON parser) is refused.
        """
        for literal in (b"Infinity", b"NaN", b"-Infinity"):
            payload = _json(panel_claims(exp=0)).replace(b'"exp":0', b'"exp":' + literal)
            self.assertInvalid(craft({"alg": "HS256"}, None, raw_payload=payload), ExpiredToken)

    def test_exp_too_far_ahead(self) -> None:
        """
        An ``exp`` more than ``MAX_LIFETIME`` after now, such as ``10**30`` or
        the JSON number ``1e400`` (infinite once parsed), is refused.
        """
        self.assertInvalid(panel_token(panel_claims(exp=NOW + MAX_LIFETIME + 1)), ExpiredToken)
        self.assertInvalid(panel_token(panel_claims(exp=10 ** 30)), ExpiredToken)
        self.assertInvalid(panel_token(panel_claims(exp=10 ** 400)), ExpiredToken)
        payload = _json(panel_claims(exp=0)).replace(b'"exp":0', b'"exp":1e400')
        self.assertInvalid(craft({"alg": "HS256", "typ": "JWT"}, None, raw_payload=payload),
                           ExpiredToken)

    def test_exp_other_types(self) -> None:
        """
        ``exp`` as an array or an object is refused.
        """
        self.assertInvalid(panel_token(panel_claims(exp=[int(NOW) + 900])), ExpiredToken)
        self.assertInvalid(panel_token(panel_claims(exp={"t": int(NOW) + 900})), ExpiredToken)

    def test_exp_one_second_past(self) -> None:
        """
        A token is refused from the second after ``exp``.
        """
        self.assertInvalid(panel_token(panel_claims(exp=int(NOW) - 1)), ExpiredToken)
        self.assertInvalid(panel_token(panel_claims(exp=int(NOW))), ExpiredToken,
                           now=int(NOW) + 1)

    def test_float_exp_past(self) -> None:
        """
        A float ``exp`` below the current whole second is expired.
        """
        self.assertInvalid(panel_token(panel_claims(exp=int(NOW) - 0.5)), ExpiredToken)

    def test_missing_required(self) -> None:
        """
        Each required claim of the route must be present.
        """
        for name in ("server_uuid", "unique_id", "file_path"):
            self.assertInvalid(panel_token(panel_claims(**{name: _DROP})), MalformedToken)
        self.assertInvalid(panel_token(panel_claims()), MalformedToken, kind=DOWNLOAD_BACKUP)
        self.assertInvalid(panel_token(panel_claims()), MalformedToken, kind=WEBSOCKET)

    def test_empty_ids(self) -> None:
        """
        ``server_uuid`` and ``unique_id`` must be non-empty.
        """
        self.assertInvalid(panel_token(panel_claims(server_uuid="")), MalformedToken)
        self.assertInvalid(panel_token(panel_claims(unique_id="")), MalformedToken)
        self.assertInvalid(panel_token(panel_claims(unique_id="")), MalformedToken, kind=UPLOAD)

    def test_wrong_claim_types(self) -> None:
        """
        A required claim of the wrong JSON type is refused.
        """
        for name, value in (("server_uuid", 5), ("server_uuid", None), ("unique_id", True),
                            ("unique_id", ["a"]), ("file_path", {"p": "/"}),
                            ("file_path", 1.5)):
            self.assertInvalid(panel_token(panel_claims(**{name: value})), MalformedToken)

    def test_user_uuid_type(self) -> None:
        """
        ``user_uuid``, when present, must be a string, for every kind.
        """
        self.assertInvalid(panel_token(panel_claims(user_uuid=12)), MalformedToken)
        self.assertInvalid(panel_token(panel_claims(user_uuid=None)), MalformedToken,
                           kind=UPLOAD)

    def test_permissions_types(self) -> None:
        """
        ``permissions`` must be an array of strings for the websocket.
        """
        for value in ("websocket.connect", {"*": True}, ["*", 1], [None], None):
            self.assertInvalid(panel_token(panel_claims(permissions=value)), MalformedToken,
                               kind=WEBSOCKET)

    def test_bool_is_not_int(self) -> None:
        """
        A claim required as ``int`` does not accept a JSON boolean unless
        ``bool`` is listed.
        """
        token = panel_token(panel_claims(n=True))
        self.assertRaises(MalformedToken, decode_token, token, KEY, now=NOW,
                          required={"n": int}, scope=None)
        self.assertTrue(decode_token(token, KEY, now=NOW, required={"n": (int, bool)},
                                     scope=None)["n"])
        self.assertEqual(decode_token(panel_token(panel_claims(n=3)), KEY, now=NOW,
                                      required={"n": int}, scope=None)["n"], 3)

    def test_garbage(self) -> None:
        """
        Strings that are not compact JWS are refused.
        """
        good = panel_token()
        head, payload, signature = good.split(".")
        for token in ("", "abc", head + "." + payload, good + ".extra",
                      good + "." + signature, "!!!.###.$$$", "..", "a.b.c",
                      "\u00e9." + payload + "." + signature, " " + good,
                      good.replace(".", "..", 1)):
            self.assertInvalid(token, MalformedToken)

    def test_non_ascii_bytes(self) -> None:
        """
        Non-ASCII bytes are refused without a decoding error escaping.
        """
        self.assertInvalid(b"\xff\xfe." + panel_token().encode(), MalformedToken)

    def test_huge(self) -> None:
        """
        Oversized tokens are refused, even with a valid signature.
        """
        self.assertInvalid("a" * (10 ** 6), MalformedToken)
        self.assertInvalid("a" * 500_000 + "." + "b" * 500_000 + ".c", MalformedToken)
        big = panel_token(panel_claims(padding="x" * MAX_TOKEN_LENGTH))
        self.assertInvalid(big, MalformedToken)

    def test_length_boundary(self) -> None:
        """
        A valid token of exactly ``MAX_TOKEN_LENGTH`` characters is accepted; one character
        more is refused before its signature is looked at.
        """
        def token_of(length: int) -> str:
            base = len(craft({"typ": "JWT", "alg": "HS256"}, panel_claims(padding="")))
            guess = (length - base) * 3 // 4
            for extra in range(4):
                for size in range(guess - 10, guess + 10):
                    claims = panel_claims(padding="x" * size)
                    token = craft({"typ": "JWT", "alg": "HS256", "x": "y" * extra}, claims)
                    if len(token) == length:
                        return token
            raise AssertionError("no token of length {}".format(length))

        exact = token_of(MAX_TOKEN_LENGTH)
        self.assertEqual(decode(exact)["padding"][:1], "x")
        self.assertInvalid(token_of(MAX_TOKEN_LENGTH + 1), MalformedToken)

    def test_non_object_parts(self) -> None:
        """
        A header or payload that is valid JSON but not an object is refused.
        """
        self.assertInvalid(craft(None, panel_claims(), raw_header=b"[1]"), MalformedToken)
        self.assertInvalid(craft({"alg": "HS256"}, [1, 2]), MalformedToken)
        self.assertInvalid(craft({"alg": "HS256"}, "exp"), MalformedToken)

    def test_non_json_parts(self) -> None:
        """
        A header or payload that is not JSON is refused.
        """
        self.assertInvalid(craft(None, panel_claims(), raw_header=b"not json"), MalformedToken)
        self.assertInvalid(craft({"alg": "HS256"}, None, raw_payload=b"\xff{"), MalformedToken)

    def test_deeply_nested_json(self) -> None:
        """
        Pathologically nested JSON in the header or the payload is refused,
        not turned into a RecursionError.
        """
        nested = b"[" * 10_000 + b"]" * 10_000
        self.assertInvalid(craft(None, panel_claims(), raw_header=b'{"alg":"HS256","x":' + nested
                                 + b"}"), MalformedToken)
        self.assertInvalid(craft({"alg": "HS256"}, None, raw_payload=b'{"x":' + nested + b"}"),
                           MalformedToken)

    def test_diagnostic_chained(self) -> None:
        """
        The PyJWT error, when there is one, is kept as the cause for logs.
        """
        exc = self.assertInvalid(panel_token(key="other-" + KEY))
        self.assertIsInstance(exc.__cause__, jwt.PyJWTError)


class ScopeTests(SynchronousTestCase):
    """
    The ``scope`` rule (api.md §2.6 rule 6, downloads-uploads.md §2.5).
    """

    def test_absent_accepted(self) -> None:
        """
        A token without ``scope`` is accepted by default.
        """
        self.assertNotIn("scope", decode(panel_token()))

    def test_absent_refused_when_required(self) -> None:
        """
        ``tokens.require_scope`` makes the claim mandatory.
        """
        self.assertRaises(ScopeMismatch, decode, panel_token(), require_scope=True)

    def test_with_route_name(self) -> None:
        """
        A ``scope`` list containing the route's name is accepted, alone or
        among others, with or without ``require_scope``.
        """
        for scope in ("file-download", "websocket file-download", "file-upload  file-download"):
            token = panel_token(panel_claims(scope=scope))
            self.assertEqual(decode(token)["scope"], scope)
            self.assertEqual(decode(token, require_scope=True)["scope"], scope)

    def test_without_route_name(self) -> None:
        """
        A ``scope`` lacking the route's name is refused, including empty
        strings and near misses.
        """
        for scope in ("file-upload", "", " ", "file-downloads", "FILE-DOWNLOAD",
                      "file-download,websocket", "backup-download websocket"):
            self.assertRaises(ScopeMismatch, decode, panel_token(panel_claims(scope=scope)))

    def test_scope_wrong_type(self) -> None:
        """
        A ``scope`` that is not a string is refused.
        """
        for scope in (["file-download"], None, 1):
            self.assertRaises(ScopeMismatch, decode, panel_token(panel_claims(scope=scope)))

    def test_scope_none_skips(self) -> None:
        """
        ``scope=None`` leaves the rule to the caller (the websocket), who can
        apply it later with ``check_scope``.
        """
        claims = decode_token(panel_token(panel_claims(scope="file-upload", permissions=["*"])),
                              KEY, now=NOW, required=WEBSOCKET.required, scope=None,
                              require_scope=True)
        self.assertRaises(ScopeMismatch, check_scope, claims, "websocket")
        self.assertIsNone(check_scope(claims, "file-upload"))
        self.assertEqual(
            WEBSOCKET.decode(panel_token(panel_claims(permissions=[], file_path=_DROP)), KEY, now=NOW,
                             with_scope=False, require_scope=True)["permissions"], [])

    def test_check_scope_absent(self) -> None:
        """
        ``check_scope`` passes a token without ``scope`` unless it is required.
        """
        self.assertIsNone(check_scope({}, "websocket"))
        self.assertRaises(ScopeMismatch, check_scope, {}, "websocket", require_scope=True)

    def test_checked_after_claims(self) -> None:
        """
        An expired token with a wrong scope reports the expiry first.
        """
        token = panel_token(panel_claims(exp=int(NOW) - 10, scope="file-upload"))
        self.assertRaises(ExpiredToken, decode, token)


def real_claims(kind: str) -> dict[str, Any]:
    """
    The private claims each Panel ``NodeJWTService`` caller puts in its token
    (``FileController::download``, ``DownloadLinkService``,
    ``FileUploadController``, ``WebsocketController``): upload tokens of some
    Panel versions carry no user claims, websocket tokens an extra
    ``user_id``.
    """
    base = panel_claims(file_path=_DROP)
    if kind == "file-download":
        base["file_path"] = "/world/level.dat"
    elif kind == "backup-download":
        base["backup_uuid"] = "5e2f1b0a-9c8d-4e7f-a6b5-c4d3e2f1a0b9"
        del base["user_uuid"], base["user_id"]
    elif kind == "file-upload":
        del base["user_uuid"], base["user_id"]
    elif kind == "websocket":
        base["permissions"] = ["control.console", "websocket.connect"]
    return base


class TokenKindTests(SynchronousTestCase):
    """
    Each signed-URL route accepts only its own kind of Panel token, told apart
    by the kind's marker claim when no ``scope`` is sent.
    """

    kinds = {"file-download": DOWNLOAD_FILE, "backup-download": DOWNLOAD_BACKUP,
             "file-upload": UPLOAD, "websocket": WEBSOCKET}

    def test_real_tokens_accepted_on_their_route(self) -> None:
        """
        Every real Panel token shape decodes on its own route, with and
        without a matching ``scope`` (Panel 1.12.3+).
        """
        for name, kind in self.kinds.items():
            for extra in ({}, {"scope": name}):
                claims = dict(real_claims(name), **extra)
                self.assertEqual(kind.decode(panel_token(claims), KEY, now=NOW), claims)

    def test_other_kinds_refused(self) -> None:
        """
        A token of one kind is refused on every other route (an upload
        refuses a websocket token or a download token of the same server):
        `WrongKind` for a marker of another kind, a missing-claim error for
        a token lacking the route's own marker.
        """
        for route, kind in self.kinds.items():
            for other in self.kinds:
                if other == route:
                    continue
                token = panel_token(real_claims(other))
                with self.assertRaises(MalformedToken, msg=(route, other)):
                    kind.decode(token, KEY, now=NOW)

    def test_upload_refuses_each_marker(self) -> None:
        """
        An upload token carrying ``file_path``, ``backup_uuid`` or
        ``permissions`` is refused with `WrongKind`, whatever the marker's
        value.
        """
        for marker, value in (("file_path", "/"), ("backup_uuid", ""), ("permissions", [])):
            claims = dict(real_claims("file-upload"), **{marker: value})
            with self.assertRaises(WrongKind, msg=marker):
                UPLOAD.decode(panel_token(claims), KEY, now=NOW)

    def test_marker_refused_despite_scope(self) -> None:
        """
        A ``scope`` naming the route does not excuse another kind's marker.
        """
        claims = dict(real_claims("websocket"), scope="file-upload websocket")
        self.assertRaises(WrongKind, UPLOAD.decode, panel_token(claims), KEY, now=NOW)

    def test_websocket_checks_kind_without_scope(self) -> None:
        """
        The websocket (which checks ``scope`` later) still refuses a
        download token that also carries ``permissions``.
        """
        claims = dict(real_claims("websocket"), file_path="/x")
        self.assertRaises(WrongKind, WEBSOCKET.decode, panel_token(claims), KEY, now=NOW,
                          with_scope=False)

    def test_check_kind(self) -> None:
        """
        ``check_kind`` passes a kind's own marker and refuses the others.
        """
        self.assertIsNone(check_kind({"file_path": "/a"}, "file-download"))
        self.assertIsNone(check_kind({}, "file-upload"))
        self.assertRaises(WrongKind, check_kind, {"permissions": []}, "file-download")
        self.assertEqual(set(KIND_MARKERS.values()),
                         {"file-download", "backup-download", "websocket"})


class TokenStoreTests(SynchronousTestCase):
    """
    The single-use ``unique_id`` store and its continuation rule
    (downloads-uploads.md §2.3).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = TokenStore(self.clock.seconds)
        self.exp = int(NOW) + 900

    def consume(self, unique_id: str = "u1", *, ip: str = "203.0.113.7",
                is_range: bool = False, allow_resume: bool = True) -> bool:
        """
        ``consume`` on the store under test with the test's ``exp``.
        """
        return self.store.consume(unique_id, client_ip=ip, exp=self.exp, is_range=is_range,
                                  allow_resume=allow_resume)

    def test_first_use(self) -> None:
        """
        The first use of an id succeeds and records it.
        """
        self.assertIs(self.store.seen("u1"), False)
        self.assertIs(self.consume(), True)
        self.assertIs(self.store.seen("u1"), True)

    def test_first_use_with_range(self) -> None:
        """
        A first use that carries Range succeeds like any first use.
        """
        self.assertIs(self.consume(is_range=True), True)

    def test_plain_reuse_refused(self) -> None:
        """
        A second request without Range is refused, from any IP.
        """
        self.consume()
        self.assertIs(self.consume(), False)
        self.assertIs(self.consume(ip="198.51.100.1"), False)

    def test_range_reuse_same_ip(self) -> None:
        """
        A Range request from the first client's IP before ``exp`` continues,
        as often as needed, including during the second equal to ``exp``.
        """
        self.consume()
        self.assertIs(self.consume(is_range=True), True)
        self.assertIs(self.consume(is_range=True), True)
        self.clock.advance(self.exp - self.clock.seconds() + 0.9)
        self.assertIs(self.consume(is_range=True), True)

    def test_range_reuse_other_ip(self) -> None:
        """
        A Range request from another IP is refused.
        """
        self.consume()
        self.assertIs(self.consume(is_range=True, ip="203.0.113.8"), False)

    def test_range_reuse_after_exp(self) -> None:
        """
        A Range request from the same IP after the grant's ``exp`` is refused.
        """
        self.consume()
        self.clock.advance(self.exp - self.clock.seconds() + 1)
        self.assertIs(self.consume(is_range=True), False)

    def test_resume_switched_off(self) -> None:
        """
        With ``allow_resume`` false a Range reuse is refused.
        """
        self.consume()
        self.assertIs(self.consume(is_range=True, allow_resume=False), False)

    def test_no_grant_without_resume(self) -> None:
        """
        A first use made with resuming off (an upload, or the switch off)
        leaves no grant: even a same-IP Range request later is refused.
        """
        self.consume(allow_resume=False)
        self.assertIs(self.consume(is_range=True, allow_resume=True), False)

    def test_upload_strict(self) -> None:
        """
        Uploads (``is_range=False, allow_resume=False``) are strictly single use.
        """
        self.assertIs(self.consume(allow_resume=False), True)
        self.assertIs(self.consume(allow_resume=False), False)

    def test_ids_independent(self) -> None:
        """
        Consuming one id does not affect another.
        """
        self.consume("u1")
        self.assertIs(self.consume("u2"), True)

    def test_seen_never_records(self) -> None:
        """
        ``seen`` (HEAD) does not record, however often it is asked.
        """
        self.assertIs(self.store.seen("u1"), False)
        self.assertIs(self.store.seen("u1"), False)
        self.assertIs(self.consume(), True)
        self.assertEqual(len(self.store), 1)

    def test_purge_after_ttl(self) -> None:
        """
        ``purge`` drops exactly the entries recorded ``ttl`` seconds ago or
        more and reports how many.
        """
        self.consume("old")
        self.clock.advance(1800)
        self.consume("young")
        self.assertEqual(self.store.purge(), 0)
        self.clock.advance(1799)
        self.assertEqual(self.store.purge(), 0)
        self.clock.advance(1)
        self.assertEqual(self.store.purge(), 1)
        self.assertIs(self.store.seen("old"), False)
        self.assertIs(self.store.seen("young"), True)
        self.assertEqual(len(self.store), 1)
        self.clock.advance(1800)
        self.assertEqual(self.store.purge(), 1)
        self.assertEqual(len(self.store), 0)

    def test_expired_entry_absent_before_purge(self) -> None:
        """
        An entry older than ``ttl`` counts as absent even before the next purge.
        """
        self.consume()
        self.clock.advance(3600)
        self.assertIs(self.store.seen("u1"), False)
        self.assertIs(self.consume(), True)
        self.assertIs(self.consume(), False)

    def test_custom_ttl(self) -> None:
        """
        The retention is configurable.
        """
        store = TokenStore(self.clock.seconds, ttl=10)
        store.consume("u1", client_ip="ip", exp=self.exp, is_range=False, allow_resume=True)
        self.clock.advance(10)
        self.assertEqual(store.purge(), 1)

    def concurrently(self, is_range: bool, ids: list[str]) -> list[bool]:
        """
        Consume each of ``ids`` from its own thread, all released at once.
        """
        store = TokenStore(lambda: NOW)
        barrier = threading.Barrier(len(ids))
        results: list[bool] = []
        lock = threading.Lock()

        def worker(unique_id: str) -> None:
            barrier.wait()
            outcome = store.consume(unique_id, client_ip="ip", exp=self.exp,
                                    is_range=is_range, allow_resume=True)
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=worker, args=(uid,)) for uid in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        self.assertEqual(len(results), len(ids))
        return results

    def test_concurrent_single_winner(self) -> None:
        """
        Many threads consuming the same id without Range: exactly one wins.
        """
        for _ in range(5):
            self.assertEqual(self.concurrently(False, ["same"] * 64).count(True), 1)

    def test_concurrent_distinct_ids(self) -> None:
        """
        Many threads consuming different ids all win.
        """
        self.assertTrue(all(self.concurrently(False, ["id%d" % i for i in range(64)])))
