"""
Tests for websocket token revocation (websocket.md §8.1).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.auth.denials import Denials

SERVER = "8f2a0c1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b"
OTHER_SERVER = "0c5b4ae6-5a43-4b77-8f0d-6f3e1cd5d0a7"
USER = "1b7f3c2a-9d8e-4f6a-8b5c-2d1e0f9a8b7c"
OTHER_USER = "2c8f3c2a-9d8e-4f6a-8b5c-2d1e0f9a8b7c"
BOOT = 1_000.5


def claims(**changes: Any) -> dict[str, Any]:
    """
    A websocket token's claims issued at 2000; ``None`` removes a claim.
    """
    body: dict[str, Any] = {"iat": 2000, "exp": 2600, "jti": "j1", "server_uuid": SERVER,
                            "user_uuid": USER, "permissions": ["*"]}
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


class BootTimeTests(SynchronousTestCase):
    """
    Tokens issued before the daemon started are denied.
    """

    def test_before_boot(self) -> None:
        """
        ``iat`` in an earlier second than the boot is denied; the boot
        second itself and later pass (whole-second comparison).
        """
        denials = Denials(BOOT)
        self.assertTrue(denials.denied(claims(iat=999)))
        self.assertFalse(denials.denied(claims(iat=1000)))
        self.assertFalse(denials.denied(claims(iat=1001)))
        self.assertFalse(denials.denied(claims(iat=1000.9)))

    def test_fail_closed(self) -> None:
        """
        Missing or non-numeric ``iat``, missing or empty ``server_uuid`` or
        ``user_uuid`` deny the token.
        """
        denials = Denials(BOOT)
        self.assertFalse(denials.denied(claims()))
        for bad in (claims(iat=None), claims(iat="2000"), claims(iat=True),
                    claims(iat=float("nan")), claims(server_uuid=None),
                    claims(user_uuid=None), claims(user_uuid=""), claims(server_uuid=5)):
            self.assertTrue(denials.denied(bad), bad)


class JtiTests(SynchronousTestCase):
    """
    The global JTI deny map.
    """

    def test_iat_at_or_before_deny_time(self) -> None:
        """
        A denied ``jti`` refuses tokens issued up to and including the deny
        time (same second too), not later ones; other jtis are untouched.
        """
        denials = Denials(BOOT)
        denials.deny_jtis(["j1"], 2000.4)
        self.assertTrue(denials.denied(claims(iat=1999)))
        self.assertTrue(denials.denied(claims(iat=2000)))
        self.assertFalse(denials.denied(claims(iat=2001)))
        self.assertFalse(denials.denied(claims(jti="j2")))
        self.assertEqual(len(denials), 1)

    def test_global_across_servers(self) -> None:
        """
        The map is not per server.
        """
        denials = Denials(BOOT)
        denials.deny_jtis(["j1"], 3000)
        self.assertTrue(denials.denied(claims(server_uuid=OTHER_SERVER)))

    def test_latest_time_wins(self) -> None:
        """
        Denying again later extends the entry; an older time never shrinks it.
        """
        denials = Denials(BOOT)
        denials.deny_jtis(["j1"], 2000)
        denials.deny_jtis(["j1"], 2500)
        denials.deny_jtis(["j1"], 1500)
        self.assertTrue(denials.denied(claims(iat=2400)))


class UserTests(SynchronousTestCase):
    """
    The W1.12 (server, user) deny map.
    """

    def test_pair_only(self) -> None:
        """
        Only the deauthorized user on the listed servers is denied, up to the
        deny time.
        """
        denials = Denials(BOOT)
        denials.deauthorize(USER, [SERVER], 2000.0)
        self.assertTrue(denials.denied(claims()))
        self.assertFalse(denials.denied(claims(iat=2001)))
        self.assertFalse(denials.denied(claims(user_uuid=OTHER_USER)))
        self.assertFalse(denials.denied(claims(server_uuid=OTHER_SERVER)))
