"""
The console pipeline pieces: line splitting, ANSI stripping, done-strings,
the console throttle, the process environment variables, the event bus.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.environment.lines import LineSplitter
from wings_twisted.servers.console import (
    THROTTLE_NOTICE,
    ConsoleThrottle,
    DoneMatcher,
    daemon_line,
    env_value,
    environment_variables,
    strip_ansi,
)
from wings_twisted.servers.events import EventBus, encode_frame


class LineSplitterTests(SynchronousTestCase):
    def split(self, *chunks: bytes, max_line: int = 64 * 1024) -> list[str]:
        lines: list[str] = []
        splitter = LineSplitter(lines.append, max_line=max_line)
        for chunk in chunks:
            splitter.feed(chunk)
        splitter.flush()
        return lines

    def test_crlf_and_empty_lines(self) -> None:
        self.assertEqual(self.split(b"a\r\n\r\nb\n\nc"), ["a", "b", "c"])

    def test_pieces_across_chunks(self) -> None:
        self.assertEqual(self.split(b"hel", b"lo\r", b"\nwor", b"ld\n"), ["hello", "world"])

    def test_space_carriage_return(self) -> None:
        self.assertEqual(self.split(b"a \rb\n"), ["a\r\nb"])

    def test_long_lines_are_cut(self) -> None:
        self.assertEqual(self.split(b"x" * 10 + b"\n", max_line=4), ["xxxx", "xxxx", "xx"])
        self.assertEqual(self.split(b"y" * 9, max_line=4), ["yyyy", "yyyy", "y"])

    def test_invalid_utf8_and_split_characters(self) -> None:
        snow = "☃".encode()
        self.assertEqual(self.split(b"\xff ok\n", snow[:1], snow[1:] + b"\n"),
                         ["\ufffd ok", "☃"])


class AnsiTests(SynchronousTestCase):
    def test_strip(self) -> None:
        self.assertEqual(strip_ansi("\x1b[33m\x1b[1mDone\x1b[0m (1s)"), "Done (1s)")
        self.assertEqual(strip_ansi("\x9b31mred\x1b]0;title\x07!"), "red!")

    def test_daemon_line(self) -> None:
        self.assertEqual(daemon_line("Pterodactyl", "hi"),
                         "\x1b[33m\x1b[1m[Pterodactyl Daemon]:\x1b[39m hi\x1b[0m")


class DoneMatcherTests(SynchronousTestCase):
    def test_substring(self) -> None:
        done = DoneMatcher([")! For help, type "])
        self.assertTrue(done.matches('[12:00] Done (7.9s)! For help, type "help"'))
        self.assertFalse(done.matches("Starting"))

    def test_regex_and_fallback(self) -> None:
        self.assertTrue(DoneMatcher([r"regex:^Done \(\d+s\)"]).matches("Done (12s)"))
        self.assertFalse(DoneMatcher([r"regex:^Done \(\d+s\)"]).matches("x Done (12s)"))
        broken = DoneMatcher(["regex:(unclosed"])
        self.assertTrue(broken.matches("line regex:(unclosed here"))
        self.assertFalse(broken.matches("unclosed"))

    def test_strip_ansi(self) -> None:
        self.assertFalse(DoneMatcher(["Ready"]).matches("Re\x1b[0mady"))
        self.assertTrue(DoneMatcher(["Ready"], strip=True).matches("Re\x1b[0mady"))

    def test_empty(self) -> None:
        self.assertFalse(DoneMatcher([]))
        self.assertFalse(DoneMatcher([""]).matches("anything"))


class ThrottleTests(SynchronousTestCase):
    def test_window(self) -> None:
        clock = Clock()
        throttle = ConsoleThrottle(clock.seconds, enabled=True, lines=3, interval=0.1)
        results = [throttle.allow() for _ in range(6)]
        self.assertEqual(results, [(True, False)] * 3 + [(False, True), (False, False),
                                                         (False, False)])
        clock.advance(0.2)
        self.assertEqual(throttle.allow(), (True, False))
        self.assertEqual(throttle.dropped, 3)

    def test_notice_fires_again_after_an_allowed_line(self) -> None:
        clock = Clock()
        throttle = ConsoleThrottle(clock.seconds, enabled=True, lines=1, interval=0.1)
        self.assertEqual([throttle.allow() for _ in range(2)], [(True, False), (False, True)])
        clock.advance(0.2)
        self.assertEqual([throttle.allow() for _ in range(2)], [(True, False), (False, True)])

    def test_disabled(self) -> None:
        clock = Clock()
        for throttle in (ConsoleThrottle(clock.seconds, enabled=False, lines=1, interval=0.1),
                         ConsoleThrottle(clock.seconds, enabled=True, lines=0, interval=0.1)):
            self.assertEqual({throttle.allow() for _ in range(100)}, {(True, False)})

    def test_reset(self) -> None:
        clock = Clock()
        throttle = ConsoleThrottle(clock.seconds, enabled=True, lines=1, interval=10)
        throttle.allow()
        self.assertEqual(throttle.allow(), (False, True))
        throttle.reset()
        self.assertEqual(throttle.allow(), (True, False))
        self.assertTrue(THROTTLE_NOTICE.startswith("Server is outputting"))


class EnvironmentVariablesTests(SynchronousTestCase):
    def test_order_and_duplicates(self) -> None:
        env = environment_variables("Europe/Berlin", "java -jar {{JAR}}", 1024, "127.0.0.1",
                                    25565, [("jar", "server.jar"), ("server_port", "1"),
                                            ("P_SERVER_ALLOCATION_LIMIT", 0), ("FLAG", True),
                                            ("EMPTY", None), ("RATIO", 1.5)])
        self.assertEqual(env, [("TZ", "Europe/Berlin"), ("STARTUP", "java -jar {{JAR}}"),
                               ("SERVER_MEMORY", "1024"), ("SERVER_IP", "127.0.0.1"),
                               ("SERVER_PORT", "25565"), ("JAR", "server.jar"),
                               ("P_SERVER_ALLOCATION_LIMIT", "0"), ("FLAG", "true"),
                               ("EMPTY", ""), ("RATIO", "1.5")])

    def test_values(self) -> None:
        self.assertEqual(env_value(2.0), "2")
        self.assertEqual(env_value(False), "false")


class EventBusTests(SynchronousTestCase):
    def test_order_unsubscribe_and_failing_subscriber(self) -> None:
        bus = EventBus()
        seen: list[str] = []

        def broken(event: object) -> None:
            raise RuntimeError("boom")

        bus.subscribe(broken)
        unsubscribe = bus.subscribe(lambda e: seen.append(e.name))
        bus.publish("status", "running")
        bus.publish("stats", "{}")
        unsubscribe()
        unsubscribe()
        bus.publish("status", "offline")
        self.assertEqual(seen, ["status", "stats"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        bus.close()
        bus.subscribe(lambda e: seen.append(e.name))
        self.assertEqual(bus.publish("x").name, "x")

    def test_frames(self) -> None:
        self.assertEqual(encode_frame("auth success"), b'{"event":"auth success"}')
        self.assertEqual(encode_frame("deleted", "null"), b'{"event":"deleted","args":["null"]}')
        self.assertEqual(encode_frame("console output", "é"),
                         '{"event":"console output","args":["é"]}'.encode())
