"""
Tests for the twistd dropin and ``wings_twisted.tap``.
"""

from __future__ import annotations

import os

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted import tap
from wings_twisted.config import config_from_dict

from ..support import TOKEN, make_config


class PluginTests(SynchronousTestCase):
    """
    The ``wings`` tap is discoverable.
    """

    def test_discoverable(self) -> None:
        """
        ``getPlugins(IServiceMaker)`` yields tapname ``wings`` whose options
        parse an empty argv with the Wings default config path.
        """
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("wings", makers)
        options = makers["wings"].options()
        options.parseOptions([])
        self.assertEqual(options["config"], "/etc/pterodactyl/config.yml")

    def test_options(self) -> None:
        """
        ``--config`` and the upstream flags parse.
        """
        options = tap.Options()
        options.parseOptions(["--config", "x.yml", "--debug", "--ignore-certificate-errors"])
        self.assertEqual((options["config"], options["debug"], options["ignore-certificate-errors"]),
                         ("x.yml", True, True))


class ListenDescriptionTests(SynchronousTestCase):
    """
    ``listen_description``.
    """

    def test_plain(self) -> None:
        """
        Plain TCP on ``api.host``:``api.port``; IPv6 colons are escaped.
        """
        config = config_from_dict({"token": TOKEN, "api": {"host": "::", "port": 8080}})
        self.assertEqual(tap.listen_description(config), "tcp:port=8080:interface=\\:\\::backlog=1024")

    def test_tls(self) -> None:
        """
        TLS uses the ssl endpoint with the key, certificate and its chain.
        """
        config = config_from_dict({"token": TOKEN, "api": {
            "ssl": {"enabled": True, "cert": "/c/full:chain.pem", "key": "/k.pem"}}})
        self.assertEqual(tap.listen_description(config),
                         "ssl:port=8080:interface=0.0.0.0:backlog=1024:privateKey=/k.pem:"
                         "certKey=/c/full\\:chain.pem:extraCertChain=/c/full\\:chain.pem")


class BuildServiceTests(SynchronousTestCase):
    """
    ``build_service`` assembles the daemon around any reactor.
    """

    def test_builds_and_creates_directories(self) -> None:
        """
        The service tree has the listener and creates the state directories.
        """
        base = FilePath(self.mktemp())
        config = make_config(base)
        reactor = MemoryReactorClock()
        service = tap.build_service(config, reactor, listen="tcp:0", fatal=lambda m: None)
        self.assertIsNotNone(service.getServiceNamed("api"))
        for name in ("root", "log", "volumes", "backups"):
            self.assertTrue(base.child(name).isdir(), name)
        self.assertTrue(os.path.exists(base.child("root").child("wings.db").path))

    def test_bad_listener_is_a_config_error(self) -> None:
        """
        A listener description strports cannot parse is a one-line
        ``ConfigError``, not a traceback.
        """
        from wings_twisted.config import ConfigError

        config = make_config(FilePath(self.mktemp()))
        with self.assertRaises(ConfigError) as caught:
            tap.build_service(config, MemoryReactorClock(), listen="nonsense",
                              fatal=lambda m: None)
        self.assertEqual(str(caught.exception),
                         "invalid listener 'nonsense': Unknown endpoint type: 'nonsense'")

class OpenFilesTests(SynchronousTestCase):
    """
    ``raise_open_files``: the soft ``RLIMIT_NOFILE`` goes up to the hard limit at start.
    """

    def test_raised_to_hard(self) -> None:
        """
        A soft limit below the hard one is raised to it (before: left at 1,024).
        """
        import resource

        from wings_twisted.tap import raise_open_files
        calls = []
        result = raise_open_files(lambda which: (1024, 524288),
                                  lambda which, limits: calls.append((which, limits)))
        self.assertEqual(result, 524288)
        self.assertEqual(calls, [(resource.RLIMIT_NOFILE, (524288, 524288))])

    def test_already_at_hard_or_refused(self) -> None:
        """
        Nothing is changed at the hard limit; a refused change keeps the soft limit.
        """
        from wings_twisted.tap import raise_open_files
        calls = []
        self.assertEqual(raise_open_files(lambda which: (4096, 4096),
                                          lambda which, limits: calls.append(limits)), 4096)
        self.assertEqual(calls, [])

        def refuse(which: int, limits: tuple[int, int]) -> None:
            raise ValueError("not allowed")

        self.assertEqual(raise_open_files(lambda which: (1024, 8192), refuse), 1024)
