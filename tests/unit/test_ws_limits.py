"""
Tests for the websocket rate limiters and the back-pressure outbox
(websocket.md §9, §10.1).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.websocket.limits import (
    LINE,
    OTHER,
    STATS,
    Admission,
    MessageLimits,
    Outbox,
    Outlet,
    ThrottleRuns,
    TokenBucket,
    kind_of,
)


class TokenBucketTests(SynchronousTestCase):
    """
    ``TokenBucket``.
    """

    def test_burst_then_refill(self) -> None:
        """
        A full bucket gives ``burst`` tokens at once, then one per interval.
        """
        bucket = TokenBucket(10, 0.2, now=100.0)
        self.assertEqual([bucket.take(100.0) for _ in range(11)], [True] * 10 + [False])
        self.assertFalse(bucket.take(100.19))
        self.assertTrue(bucket.take(100.2))
        self.assertFalse(bucket.take(100.2))

    def test_never_above_burst(self) -> None:
        """
        A long pause refills up to the burst only.
        """
        bucket = TokenBucket(2, 5.0, now=0.0)
        self.assertTrue(bucket.take(0.0))
        self.assertTrue(bucket.take(1000.0))
        self.assertTrue(bucket.take(1000.0))
        self.assertFalse(bucket.take(1000.0))

    def test_clock_backwards(self) -> None:
        """
        A clock stepping backwards refills nothing and breaks nothing.
        """
        bucket = TokenBucket(1, 1.0, now=50.0)
        self.assertTrue(bucket.take(50.0))
        self.assertFalse(bucket.take(10.0))
        self.assertTrue(bucket.take(51.0))


class ThrottleRunsTests(SynchronousTestCase):
    """
    ``ThrottleRuns``.
    """

    def test_one_notice_per_run(self) -> None:
        """
        Only the first refusal of a run asks for a notice; an acceptance of
        the same name starts a new run; names are independent.
        """
        runs = ThrottleRuns()
        self.assertTrue(runs.refused("a"))
        self.assertFalse(runs.refused("a"))
        self.assertTrue(runs.refused("b"))
        runs.accepted("b")
        self.assertFalse(runs.refused("a"))
        runs.accepted("a")
        self.assertTrue(runs.refused("a"))


class MessageLimitsTests(SynchronousTestCase):
    """
    ``MessageLimits`` with the W1.12 bucket table.
    """

    def test_global_bucket(self) -> None:
        """
        Ten frames pass, the eleventh is refused with a ``global`` notice,
        the twelfth silently; 200 ms later one passes and ends the run.
        """
        limits = MessageLimits()
        verdicts = [limits.admit_frame(0.0) for _ in range(12)]
        self.assertEqual(verdicts[:10], [Admission(True)] * 10)
        self.assertEqual(verdicts[10], Admission(False, "global"))
        self.assertEqual(verdicts[11], Admission(False, None))
        self.assertEqual(limits.admit_frame(0.2), Admission(True))
        self.assertEqual(limits.admit_frame(0.2), Admission(False, "global"))

    def test_event_buckets(self) -> None:
        """
        ``auth`` and ``send logs`` allow 2 then one per 5 s; ``send command``
        10 then one per second.
        """
        limits = MessageLimits()
        for name, burst, interval in (("auth", 2, 5.0), ("send logs", 2, 5.0),
                                      ("send command", 10, 1.0)):
            for _ in range(burst):
                self.assertTrue(limits.admit_event(name, 0.0).allowed)
            self.assertEqual(limits.admit_event(name, 0.0), Admission(False, name))
            self.assertFalse(limits.admit_event(name, interval * 0.9).allowed)
            self.assertTrue(limits.admit_event(name, interval).allowed)

    def test_shared_bucket_runs_per_name(self) -> None:
        """
        ``set state``, ``send stats`` and unknown events share one bucket of
        4, but each name gets its own first notice, and an accepted message
        ends only its own run.
        """
        limits = MessageLimits()
        for name in ("set state", "send stats", "whatever", ""):
            self.assertTrue(limits.admit_event(name, 0.0).allowed)
        self.assertEqual(limits.admit_event("set state", 0.0), Admission(False, "set state"))
        self.assertEqual(limits.admit_event("send stats", 0.0), Admission(False, "send stats"))
        self.assertEqual(limits.admit_event("set state", 0.0), Admission(False, None))
        self.assertTrue(limits.admit_event("send stats", 1.0).allowed)
        self.assertEqual(limits.admit_event("set state", 1.0), Admission(False, None))
        self.assertEqual(limits.admit_event("send stats", 1.0), Admission(False, "send stats"))

    def test_event_buckets_are_separate(self) -> None:
        """
        Exhausting ``auth`` leaves the other buckets full.
        """
        limits = MessageLimits()
        limits.admit_event("auth", 0.0)
        limits.admit_event("auth", 0.0)
        self.assertFalse(limits.admit_event("auth", 0.0).allowed)
        self.assertTrue(limits.admit_event("send logs", 0.0).allowed)
        self.assertTrue(limits.admit_event("set state", 0.0).allowed)


class OutboxTests(SynchronousTestCase):
    """
    ``Outbox``: bounded lines, newest stats, ordered output.
    """

    def drain(self, box: Outbox) -> list[bytes]:
        out: list[bytes] = []
        while True:
            frame = box.pop()
            if frame is None:
                return out
            out.append(frame)

    def test_order_is_kept(self) -> None:
        """
        Frames of all kinds come out in the order they went in.
        """
        box = Outbox()
        for frame, kind in ((b"1", LINE), (b"2", OTHER), (b"3", STATS), (b"4", LINE), (b"5", OTHER)):
            self.assertTrue(box.push(frame, kind))
        self.assertEqual(len(box), 5)
        self.assertEqual(self.drain(box), [b"1", b"2", b"3", b"4", b"5"])
        self.assertEqual(len(box), 0)

    def test_lines_ring(self) -> None:
        """
        Only the newest ``max_lines`` lines are kept; other frames never go.
        """
        box = Outbox(max_lines=3)
        box.push(b"status", OTHER)
        for i in range(10):
            box.push(b"line%d" % i, LINE)
        self.assertEqual(self.drain(box), [b"status", b"line7", b"line8", b"line9"])
        self.assertEqual(box.dropped, 7)

    def test_newest_stats(self) -> None:
        """
        A newer ``stats`` replaces the waiting one and takes its own place in
        the order.
        """
        box = Outbox()
        box.push(b"s1", STATS)
        box.push(b"x", OTHER)
        box.push(b"s2", STATS)
        self.assertEqual(self.drain(box), [b"x", b"s2"])

    def test_overflow(self) -> None:
        """
        More than ``max_other`` never-dropped frames report an overflow.
        """
        box = Outbox(max_other=2)
        self.assertTrue(box.push(b"a", OTHER))
        self.assertTrue(box.push(b"b", OTHER))
        self.assertFalse(box.push(b"c", OTHER))


class OutletTests(SynchronousTestCase):
    """
    ``Outlet``: straight through, queued while paused, flushed, overflow.
    """

    def setUp(self) -> None:
        self.sent: list[bytes] = []
        self.overflows = 0

        def send(frame: bytes) -> None:
            self.sent.append(frame)
            if frame == b"pause-me":
                self.outlet.pause()

        def overflow() -> None:
            self.overflows += 1

        self.outlet = Outlet(send, overflow, max_lines=2, max_other=2)

    def test_pause_resume(self) -> None:
        """
        Frames pass while running, wait while paused, and resume in order;
        a send that pauses again stops the drain.
        """
        self.outlet.write(b"a", OTHER)
        self.outlet.pause()
        for frame in (b"l1", b"l2", b"l3"):
            self.outlet.write(frame, LINE)
        self.outlet.write(b"pause-me", OTHER)
        self.outlet.write(b"z", OTHER)
        self.assertEqual(self.sent, [b"a"])
        self.outlet.resume()
        self.assertEqual(self.sent, [b"a", b"l2", b"l3", b"pause-me"])
        self.assertTrue(self.outlet.paused)
        self.outlet.write(b"after", OTHER)
        self.outlet.flush()
        self.assertEqual(self.sent[-2:], [b"z", b"after"])
        self.assertEqual(self.outlet.dropped, 1)

    def test_overflow_once(self) -> None:
        """
        The overflow callback runs once; later writes are ignored.
        """
        self.outlet.pause()
        for _ in range(5):
            self.outlet.write(b"s", OTHER)
        self.assertEqual(self.overflows, 1)
        self.outlet.resume()
        self.assertEqual(self.sent, [])

    def test_kinds(self) -> None:
        """
        Lines, stats and the rest are told apart by event name.
        """
        self.assertEqual([kind_of(n) for n in ("console output", "daemon message", "stats",
                                               "status", "deleted", "jwt error")],
                         [LINE, LINE, STATS, OTHER, OTHER, OTHER])
