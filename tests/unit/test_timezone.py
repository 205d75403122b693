"""
Tests for ``system.timezone`` at boot (config.md §4.1).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.config import config_from_dict
from wings_twisted.timezone import (
    Sources,
    TimezoneError,
    detect_timezone,
    resolve_timezone,
)

from ..support import TOKEN


def sources(etc: str | None = None, timedatectl: str = "") -> Sources:
    def read(path: str) -> str:
        if etc is None:
            raise FileNotFoundError(path)
        return etc
    return Sources(read=read, timedatectl=lambda: timedatectl)


class TimezoneTests(SynchronousTestCase):
    """
    Detection order, cleaning and validation.
    """

    def test_detection_order(self) -> None:
        """
        ``TZ``, then ``/etc/timezone``, then ``timedatectl``, then UTC.
        """
        ctl = "               Local time: Fri\n                Time zone: Asia/Tokyo (JST, +0900)\n"
        self.assertEqual(detect_timezone({"TZ": "Europe/Paris"}, sources("America/Lima\n", ctl)),
                         "Europe/Paris")
        self.assertEqual(detect_timezone({}, sources("America/Lima\n", ctl)), "America/Lima")
        self.assertEqual(detect_timezone({}, sources(None, ctl)), "Asia/Tokyo")
        self.assertEqual(detect_timezone({}, sources(None, "")), "UTC")

    def test_configured_value_wins_and_is_cleaned(self) -> None:
        """
        A configured zone is used as is, minus characters other than letters,
        ``_`` and ``/`` (upstream turns ``Etc/GMT+2`` into ``Etc/GMT``).
        """
        config = config_from_dict({"token": TOKEN, "system": {"timezone": "Etc/GMT+2"}})
        resolved = resolve_timezone(config, environ={"TZ": "Asia/Tokyo"}, sources=sources())
        self.assertEqual(resolved.system.timezone, "Etc/GMT")
        empty = config_from_dict({"token": TOKEN})
        self.assertEqual(resolve_timezone(empty, environ={}, sources=sources("Europe/Berlin")).system.timezone,
                         "Europe/Berlin")

    def test_invalid_zone_fails(self) -> None:
        """
        A name the zone database does not know stops start-up with one line.
        """
        config = config_from_dict({"token": TOKEN, "system": {"timezone": "Mars/Olympus"}})
        error = self.assertRaises(TimezoneError, resolve_timezone, config, environ={}, sources=sources())
        self.assertEqual(str(error), "system.timezone: 'Mars/Olympus' is not a valid time zone")
