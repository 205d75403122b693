"""
Tests for ``wings_twisted.logs``: the log file and its reopening, the
level and noise filters, the logrotate file, and reading a log's tail.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import sys
import warnings

from twisted.logger import LogBeginner, LogLevel, Logger, LogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.logs import (LOG_NAME, OnceObserver, install_logrotate, logrotate_text,
                                open_log_file, start_file_logging, tail, text_observer)

UPSTREAM = """{directory}/wings.log {{
    size 10M
    compress
    delaycompress
    dateext
    maxage 7
    missingok
    notifempty
    postrotate
        /usr/bin/systemctl kill -s HUP wings.service >/dev/null 2>&1 || true
    endscript
}}"""


class LogFileTests(SynchronousTestCase):
    """
    ``open_log_file`` and ``LogFile``.
    """

    def test_creates_directories_and_appends(self) -> None:
        """
        The log directory and its ``install`` folder are created 0700;
        ``wings.log`` is appended to, never truncated.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child(LOG_NAME).setContent(b"earlier\n")
        logfile = open_log_file(directory.child("logs").path)
        self.addCleanup(logfile.close)
        logs = directory.child("logs")
        self.assertEqual(stat.S_IMODE(os.stat(logs.path).st_mode), 0o700)
        self.assertTrue(logs.child("install").isdir())
        again = open_log_file(directory.path)
        again.write("later\n")
        again.close()
        self.assertEqual(directory.child(LOG_NAME).getContent(), b"earlier\nlater\n")

    def test_reopen_after_rotation(self) -> None:
        """
        After the file was moved away (logrotate), ``reopen`` starts a new
        one at the same path; what was written before stays in the moved one.
        """
        directory = FilePath(self.mktemp())
        logfile = open_log_file(directory.path)
        self.addCleanup(logfile.close)
        logfile.write("before\n")
        logfile.flush()
        os.rename(logfile.path, logfile.path + ".1")
        logfile.reopen()
        logfile.write("after\n")
        logfile.flush()
        self.assertEqual(directory.child(LOG_NAME + ".1").getContent(), b"before\n")
        self.assertEqual(directory.child(LOG_NAME).getContent(), b"after\n")


class FilterTests(SynchronousTestCase):
    """
    ``text_observer``: levels, noise and format.
    """

    def emit(self, debug: bool) -> str:
        stream = io.StringIO()
        publisher = LogPublisher(text_observer(stream, debug))
        log = Logger(namespace="wings_twisted.test", observer=publisher)
        log.info("Loaded {count} servers from the panel", count=2)
        log.debug("A debug detail")
        factory = Logger(namespace="twisted.web.client._HTTP11ClientFactory", observer=publisher)
        factory.info("Starting factory {factory!r}", factory="<pool>")
        factory.info("Stopping factory {factory!r}", factory="<pool>")
        log.emit(LogLevel.critical, "failed to load server configurations")
        return stream.getvalue()

    def test_info_without_noise(self) -> None:
        """
        Outside debug: info and above, one line each, and no "Starting
        factory"/"Stopping factory" lines.
        """
        lines = self.emit(debug=False).splitlines()
        self.assertEqual([line.split(" ", 1)[1] for line in lines], [
            "[wings_twisted.test#info] Loaded 2 servers from the panel",
            "[wings_twisted.test#critical] failed to load server configurations",
        ])

    def test_debug_shows_everything(self) -> None:
        """
        With debug, debug events and the factory lines come through.
        """
        text = self.emit(debug=True)
        self.assertIn("[wings_twisted.test#debug] A debug detail", text)
        self.assertIn("Starting factory '<pool>'", text)
        self.assertIn("Stopping factory '<pool>'", text)


class OnceObserverTests(SynchronousTestCase):
    """
    ``OnceObserver`` against Twisted's start-up buffer.
    """

    def test_replay_not_written_twice(self) -> None:
        """
        Events the file saw live are not written again when logging begins
        and the buffer is replayed; earlier ones are written once; after
        ``settle`` nothing is remembered.
        """
        publisher = LogPublisher()
        beginner = LogBeginner(publisher, io.StringIO(), sys, warnings)
        log = Logger(namespace="t", observer=publisher)
        log.info("before the file")
        written: list[str] = []
        once = OnceObserver(lambda event: written.append(event["log_format"]))
        publisher.addObserver(once)
        log.info("live")
        console: list[str] = []
        beginner.beginLoggingTo([lambda event: console.append(event["log_format"])],
                                redirectStandardIO=False)
        self.assertEqual(console, ["before the file", "live"])
        self.assertEqual(sorted(written), ["before the file", "live"])
        once.settle()
        log.info("after")
        self.assertEqual(written[-1], "after")


class LogrotateTests(SynchronousTestCase):
    """
    ``install_logrotate``.
    """

    def setUp(self) -> None:
        self.etc = FilePath(self.mktemp())
        self.etc.makedirs()
        self.file = self.etc.child("wings")

    def test_installed_when_missing(self) -> None:
        """
        The file rotates ``wings.log`` of the log directory at 10 MiB,
        compressed, 7 days, and reloads the unit (SIGHUP to the main
        process only); mode 0644.
        """
        self.assertEqual(install_logrotate("/var/log/pterodactyl", self.etc.path), "installed")
        self.assertEqual(self.file.getContent().decode(), logrotate_text("/var/log/pterodactyl"))
        text = self.file.getContent().decode()
        self.assertTrue(text.startswith("/var/log/pterodactyl/wings.log {\n    size 10M\n"))
        self.assertIn("maxage 7", text)
        self.assertIn("/usr/bin/systemctl reload wings.service >/dev/null 2>&1 || true", text)
        self.assertEqual(stat.S_IMODE(os.stat(self.file.path).st_mode), 0o644)

    def test_operator_file_kept(self) -> None:
        """
        A file the operator wrote is never touched.
        """
        self.file.setContent(b"/var/log/pterodactyl/wings.log { daily }\n")
        self.assertEqual(install_logrotate("/var/log/pterodactyl", self.etc.path), "kept")
        self.assertEqual(self.file.getContent(), b"/var/log/pterodactyl/wings.log { daily }\n")

    def test_upstream_file_replaced(self) -> None:
        """
        Upstream's generated file (with or without its redirection), whose
        HUP reaches every process of the unit, is replaced with ours.
        """
        for text in (UPSTREAM, UPSTREAM.replace(" >/dev/null 2>&1 || true", "")):
            self.file.setContent(text.format(directory="/var/log/pterodactyl").encode())
            self.assertEqual(install_logrotate("/var/log/pterodactyl", self.etc.path), "replaced")
            self.assertEqual(self.file.getContent().decode(),
                             logrotate_text("/var/log/pterodactyl"))

    def test_no_logrotate(self) -> None:
        """
        Without the logrotate directory nothing is written.
        """
        missing = self.etc.child("absent")
        self.assertEqual(install_logrotate("/var/log/pterodactyl", missing.path), "no logrotate")
        self.assertFalse(missing.exists())


class _Reactor:
    """
    The two reactor methods ``start_file_logging`` uses, run at once.
    """

    def __init__(self) -> None:
        self.when_running: list = []

    def callWhenRunning(self, f, *args):  # noqa: N802 - Twisted's name
        self.when_running.append(f)

    def callFromThread(self, f, *args):  # noqa: N802 - Twisted's name
        f(*args)


class StartFileLoggingTests(SynchronousTestCase):
    """
    ``start_file_logging``.
    """

    def test_file_rotation_and_hup(self) -> None:
        """
        Events go to ``wings.log``, the logrotate file is installed, and
        SIGHUP reopens the file (the handler is restored afterwards).
        """
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        base = FilePath(self.mktemp())
        etc = base.child("logrotate.d")
        etc.makedirs()
        publisher = LogPublisher()
        reactor = _Reactor()
        logfile = start_file_logging(base.child("log").path, debug=False, rotate=True,
                                     reactor=reactor, publisher=publisher,  # type: ignore[arg-type]
                                     logrotate_directory=etc.path)
        self.addCleanup(logfile.close)
        Logger(namespace="t", observer=publisher).info("hello")
        self.assertIn("[t#info] hello", base.descendant(["log", LOG_NAME]).getContent().decode())
        self.assertTrue(etc.child("wings").exists())
        os.rename(logfile.path, logfile.path + ".1")
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)  # type: ignore[operator]
        Logger(namespace="t", observer=publisher).info("again")
        self.assertIn("[t#info] again", base.descendant(["log", LOG_NAME]).getContent().decode())
        self.assertEqual(len(reactor.when_running), 1)


class TailTests(SynchronousTestCase):
    """
    ``tail``.
    """

    def test_last_lines(self) -> None:
        """
        The last ``count`` lines, also when they span several read chunks;
        a missing file has none.
        """
        path = FilePath(self.mktemp())
        path.setContent("".join("line {}\n".format(i) for i in range(1000)).encode())
        self.assertEqual(tail(path.path, 3), ["line 997", "line 998", "line 999"])
        self.assertEqual(tail(path.path, 300, chunk=64)[0], "line 700")
        self.assertEqual(tail(path.path, 0), [])
        self.assertEqual(tail(path.path + ".missing", 10), [])
