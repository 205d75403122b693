"""
Who may push a server to this node (transfers.md §4.1, ``transfers.token``) and the source's
``transfer logs`` lines (§6.2, ``transfers.progress``).
"""

from __future__ import annotations

import re
import time

from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.devpanel.state import NodeCredentials
from wings_twisted.devpanel.tokens import mint, mint_transfer, mint_websocket
from wings_twisted.transfers.progress import (
    human_bytes,
    log_line,
    progress_bar,
    rfc1123,
)
from wings_twisted.transfers.token import (
    BadTransferToken,
    MissingAuthorization,
    authorize,
    bearer_token,
    canonical_uuid,
)

KEY = "destination-node-token-0123456789abcdef0123456789abcdef0123456789"
NOW = 1_800_000_000.0
SERVER = "8f2a0c1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b"
NODE = NodeCredentials("dest0000000000id", KEY, daemon_url="https://dest.example:8080",
                       url="https://panel.example")


def header(token: str) -> bytes:
    return ("Bearer " + token).encode()


class AuthorizationTests(SynchronousTestCase):
    """
    transfers.md §4.1: the header (401) and the token (403).
    """

    def test_panel_token(self) -> None:
        """
        A token minted as the Panel mints it (``sub`` in claims and header, ``jti`` = sha256 of
        the uuid, array ``aud``, 15 minutes) is accepted and names the server.
        """
        grant = authorize(header(mint_transfer(NODE, SERVER, now=NOW)), KEY, now=NOW)
        self.assertEqual(grant.uuid, SERVER)
        self.assertEqual(grant.claims["sub"], SERVER)

    def test_header_shapes(self) -> None:
        """
        Missing, another scheme, a lower-case ``bearer`` or nothing after it: 401.
        """
        token = mint_transfer(NODE, SERVER, now=NOW)
        for value in (None, b"", b"Basic abc", b"bearer " + token.encode(), b"Bearer ",
                      b"Bearer   ", token.encode()):
            with self.assertRaises(MissingAuthorization, msg=repr(value)):
                authorize(value, KEY, now=NOW)
        self.assertEqual(bearer_token(b"  Bearer  abc  "), b"abc")
        self.assertEqual(MissingAuthorization.status, 401)

    def test_refused_tokens(self) -> None:
        """
        Forged (another node's key), expired, without ``exp``, a websocket token (wrong kind),
        a download token, ``alg: none``, garbage: 403.
        """
        other = NodeCredentials("x", "another-node-key", url="https://panel.example")
        forged = [
            mint_transfer(other, SERVER, now=NOW),
            mint_transfer(NODE, SERVER, now=NOW, expired=True),
            mint_transfer(NODE, SERVER, now=NOW, missing_exp=True),
            mint_transfer(NODE, SERVER, now=NOW, lifetime=10 * 86400),
            mint_websocket(NODE, SERVER, now=NOW, extra_claims={"sub": SERVER}),
            mint(NODE, "download-file", SERVER, now=NOW,
                 claims={"file_path": "/x", "server_uuid": SERVER, "sub": SERVER}),
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI4ZjJhMGMxZSJ9.",
            "not.a.jwt",
        ]
        for token in forged:
            with self.assertRaises(BadTransferToken, msg=token):
                authorize(header(token), KEY, now=NOW)
        self.assertEqual(BadTransferToken.message, "The provided token is invalid or has expired.")

    def test_exp_is_inclusive(self) -> None:
        """
        A token is valid up to and including its ``exp`` second.
        """
        token = mint_transfer(NODE, SERVER, now=NOW)
        authorize(header(token), KEY, now=NOW + 900.9)
        with self.assertRaises(BadTransferToken):
            authorize(header(token), KEY, now=NOW + 901)

    def test_scope(self) -> None:
        """
        ``scope`` is checked when present (``transfer`` required), required only with
        ``tokens.require_scope``.
        """
        authorize(header(mint_transfer(NODE, SERVER, now=NOW, scope=True)), KEY, now=NOW)
        authorize(header(mint_transfer(NODE, SERVER, now=NOW, scope="a transfer b")), KEY,
                  now=NOW)
        with self.assertRaises(BadTransferToken):
            authorize(header(mint_transfer(NODE, SERVER, now=NOW, scope="websocket")), KEY,
                      now=NOW)
        with self.assertRaises(BadTransferToken):
            authorize(header(mint_transfer(NODE, SERVER, now=NOW)), KEY, now=NOW,
                      require_scope=True)

    def test_subject(self) -> None:
        """
        ``sub`` is parsed as leniently as upstream (upper case, braces, ``urn:uuid:``, 32
        digits) and continued in canonical form; it must be a version 4 UUID.
        """
        for written in (SERVER.upper(), "{" + SERVER + "}", "urn:uuid:" + SERVER,
                        SERVER.replace("-", "")):
            token = mint_transfer(NODE, SERVER, now=NOW, extra_claims={"sub": written})
            self.assertEqual(authorize(header(token), KEY, now=NOW).uuid, SERVER)
        for bad in ("not-a-uuid", "", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", 12, None):
            token = mint_transfer(NODE, SERVER, now=NOW, extra_claims={"sub": bad})
            with self.assertRaises(BadTransferToken, msg=repr(bad)):
                authorize(header(token), KEY, now=NOW)
        self.assertIsNone(canonical_uuid("x" * 100))

    def test_token_for_another_server(self) -> None:
        """
        A ``server_uuid`` claim naming another server than ``sub`` is refused.
        """
        other = "0f2a0c1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b"
        token = mint_transfer(NODE, SERVER, now=NOW, extra_claims={"server_uuid": other})
        with self.assertRaises(BadTransferToken):
            authorize(header(token), KEY, now=NOW)
        same = mint_transfer(NODE, SERVER, now=NOW, extra_claims={"server_uuid": SERVER})
        self.assertEqual(authorize(header(same), KEY, now=NOW).uuid, SERVER)


class ProgressTests(SynchronousTestCase):
    """
    transfers.md §6.2: the ``transfer logs`` lines.
    """

    def test_line(self) -> None:
        """
        Yellow bold prefix with an RFC 1123 time, reset at the end.
        """
        line = log_line(NOW, "Streaming archive to destination...")
        self.assertRegex(line, r"^\x1b\[33m\x1b\[1m[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} "
                               r"\d{2}:\d{2}:\d{2} \S+ \[Transfer System\] \[Source Node\]:"
                               r"\x1b\[39m Streaming archive to destination\.\.\.\x1b\[0m$")

    def test_rfc1123(self) -> None:
        """
        Go's ``time.RFC1123`` layout in local time with the zone abbreviation.
        """
        value = rfc1123(NOW)
        local = time.localtime(NOW)
        self.assertEqual(value.split(" ")[-1], local.tm_zone)
        self.assertTrue(re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|"
                                 r"Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} ", value))

    def test_bar(self) -> None:
        """
        ⌊25 × written / total⌋ cells clamped to 0–25, 0 for a total of 0; binary units with one
        decimal from 1 KiB.
        """
        gib = 1024 ** 3
        self.assertEqual(progress_bar(int(1.2 * gib), int(3.4 * gib)),
                         "Uploading [========                 ] 1.2 GiB / 3.4 GiB")
        self.assertEqual(progress_bar(5, 0), "Uploading [                         ] 5 B / 0 B")
        self.assertEqual(progress_bar(10, 5), "Uploading [=========================] 10 B / 5 B")
        self.assertEqual(human_bytes(1023), "1023 B")
        self.assertEqual(human_bytes(1536), "1.5 KiB")
        self.assertEqual(human_bytes(812 * 1024 * 1024), "812.0 MiB")
        self.assertEqual(human_bytes(2 ** 70), "1024.0 EiB")
