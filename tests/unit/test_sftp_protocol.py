"""
Bad input over the SFTP wire gets a clean status — never silence, a dropped channel or a
traceback in the log — and the server's work stays bounded (``sftp.protocol``,
``sftp.session.SftpChannel``).
"""

from __future__ import annotations

import os
import struct

from twisted.conch.ssh import filetransfer as fx
from twisted.conch.ssh.common import NS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.sftp import protocol as sftp_protocol
from wings_twisted.sftp.filesystem import MAX_HANDLES
from wings_twisted.sftp.protocol import MAX_MESSAGE, MAX_READ, SftpServerProtocol
from wings_twisted.sftp.session import WINDOW, SftpChannel

from ..sftp_support import RawWire, filesystem
from ..support import SERVER, Harness


class WireCase(SynchronousTestCase):
    """
    A raw client on a session with every permission; fails a test that logs a traceback.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER)
        self.server = self.h.add_server()
        self.root = self.server.volume.root
        with open(os.path.join(self.root, "f.txt"), "wb") as f:
            f.write(b"0123456789")
        self.protocol = SftpServerProtocol(filesystem(self.h, self.server), lambda: None)
        self.wire = RawWire(self.protocol)
        self.wire.send(fx.FXP_INIT, b"", request=3)
        (kind, version, extensions), = self.wire.answers()
        self.assertEqual((kind, version), (fx.FXP_VERSION, 3))
        self.assertEqual(extensions, NS(b"posix-rename@openssh.com") + NS(b"1"))
        self.failures: list[dict[str, object]] = []

        def observe(event: dict[str, object]) -> None:
            if event.get("log_failure") is not None:
                self.failures.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def tearDown(self) -> None:
        self.assertEqual(self.failures, [])


class BadInputTests(WireCase):
    """
    The done-means list of bad input.
    """

    def test_unknown_handles(self) -> None:
        """
        ``READ``, ``WRITE``, ``CLOSE``, ``FSTAT``, ``FSETSTAT`` and ``READDIR`` on a handle never
        given out answer ``FAILURE``.
        """
        bad = NS(b"no-such-handle")
        sent = [self.wire.send(fx.FXP_READ, bad + struct.pack("!QL", 0, 10)),
                self.wire.send(fx.FXP_WRITE, bad + struct.pack("!Q", 0) + NS(b"x")),
                self.wire.send(fx.FXP_CLOSE, bad),
                self.wire.send(fx.FXP_FSTAT, bad),
                self.wire.send(fx.FXP_FSETSTAT, bad + struct.pack("!L", 0)),
                self.wire.send(fx.FXP_READDIR, bad)]
        self.assertEqual(self.wire.status(), [(r, fx.FX_FAILURE) for r in sent])

    def test_reads_past_the_end_and_huge_lengths(self) -> None:
        """
        A read at or past the end is ``EOF``; a read of 4 GiB answers at most ``MAX_READ``.
        """
        handle = self.wire.open(b"/f.txt")
        request = self.wire.send(fx.FXP_READ, NS(handle) + struct.pack("!QL", 10, 5))
        self.assertEqual(self.wire.status(), [(request, fx.FX_EOF)])
        self.wire.send(fx.FXP_READ, NS(handle) + struct.pack("!QL", 2 ** 40, 2 ** 32 - 1))
        self.assertEqual(self.wire.status()[0][1], fx.FX_EOF)
        self.wire.send(fx.FXP_READ, NS(handle) + struct.pack("!QL", 4, 2 ** 32 - 1))
        (kind, _, rest), = self.wire.answers()
        self.assertEqual((kind, rest[4:]), (fx.FXP_DATA, b"456789"))
        self.assertLessEqual(MAX_READ, MAX_MESSAGE)

    def test_oversized_message_is_skipped(self) -> None:
        """
        A message longer than ``MAX_MESSAGE`` is answered ``BAD_MESSAGE`` and skipped as its
        bytes arrive, without being buffered; the next request is served.
        """
        length = MAX_MESSAGE + 1000
        self.wire.raw(struct.pack("!LBL", length, fx.FXP_WRITE, 77))
        self.assertEqual(self.wire.status(), [(77, fx.FX_BAD_MESSAGE)])
        for _ in range((length - 5) // 4096):
            self.wire.raw(b"\0" * 4096)
        self.wire.raw(b"\0" * ((length - 5) % 4096))
        self.assertEqual(self.protocol.buffered, 0)
        request = self.wire.send(fx.FXP_STAT, NS(b"/f.txt"))
        (kind, answered, _), = self.wire.answers()
        self.assertEqual((kind, answered), (fx.FXP_ATTRS, request))

    def test_nul_bytes_in_names(self) -> None:
        """
        Names with NUL bytes are missing, for every kind of request.
        """
        sent = [self.wire.send(fx.FXP_OPEN, NS(b"f.txt\0x") + struct.pack("!LL", 1, 0)),
                self.wire.send(fx.FXP_STAT, NS(b"/f\0")),
                self.wire.send(fx.FXP_REMOVE, NS(b"/\0")),
                self.wire.send(fx.FXP_MKDIR, NS(b"/d\0x") + struct.pack("!L", 0)),
                self.wire.send(fx.FXP_RENAME, NS(b"/f.txt") + NS(b"/g\0"))]
        self.assertEqual(self.wire.status(), [(r, fx.FX_NO_SUCH_FILE) for r in sent])
        self.assertEqual(sorted(os.listdir(self.root)), ["f.txt"])

    def test_ten_thousand_open_handles(self) -> None:
        """
        10,000 opens: the first ``MAX_HANDLES`` get handles, the rest ``FAILURE``; closing one
        makes room again, and the session keeps working.
        """
        handles = []
        failed = 0
        for _ in range(10_000):
            self.wire.send(fx.FXP_OPEN, NS(b"/f.txt") + struct.pack("!LL", fx.FXF_READ, 0))
            (kind, _, rest), = self.wire.answers()
            if kind == fx.FXP_HANDLE:
                handles.append(rest[4:])
            else:
                self.assertEqual(struct.unpack("!L", rest[:4])[0], fx.FX_FAILURE)
                failed += 1
        self.assertEqual((len(handles), failed), (MAX_HANDLES, 10_000 - MAX_HANDLES))
        self.wire.send(fx.FXP_CLOSE, NS(handles.pop()))
        self.assertEqual(self.wire.status()[0][1], fx.FX_OK)
        self.wire.open(b"/f.txt")

    def test_malformed_requests(self) -> None:
        """
        Truncated fields, a string running past the end and trailing bytes are
        ``BAD_MESSAGE``; an unknown request type is ``OP_UNSUPPORTED``; unknown extensions too.
        """
        handle = self.wire.open(b"/f.txt", fx.FXF_WRITE)
        sent = [self.wire.send(fx.FXP_READ, NS(handle) + b"\0\0"),
                self.wire.send(fx.FXP_WRITE, NS(handle) + struct.pack("!QL", 0, 100) + b"short"),
                self.wire.send(fx.FXP_OPEN, b"\0\0\0\xffab"),
                self.wire.send(fx.FXP_CLOSE, NS(handle) + b"extra")]
        self.assertEqual(self.wire.status(), [(r, fx.FX_BAD_MESSAGE) for r in sent])
        unknown = self.wire.send(99, b"whatever")
        version = self.wire.send(fx.FXP_VERSION, b"")
        extension = self.wire.send(fx.FXP_EXTENDED, NS(b"statvfs@openssh.com") + NS(b"/"))
        self.assertEqual(self.wire.status(), [(unknown, fx.FX_OP_UNSUPPORTED),
                                              (version, fx.FX_OP_UNSUPPORTED),
                                              (extension, fx.FX_OP_UNSUPPORTED)])
        with open(os.path.join(self.root, "f.txt"), "rb") as f:
            self.assertEqual(f.read(), b"0123456789")

    def test_requests_split_and_joined(self) -> None:
        """
        Requests cut anywhere across deliveries, and several in one delivery, are all served
        in order.
        """
        one = struct.pack("!BL", fx.FXP_STAT, 1) + NS(b"/f.txt")
        two = struct.pack("!BL", fx.FXP_LSTAT, 2) + NS(b"/nope")
        data = struct.pack("!L", len(one)) + one + struct.pack("!L", len(two)) + two
        for byte in range(len(data)):
            self.wire.raw(data[byte:byte + 1])
        answers = self.wire.answers()
        self.assertEqual([(kind, request) for kind, request, _ in answers],
                         [(fx.FXP_ATTRS, 1), (fx.FXP_STATUS, 2)])


class ChannelTests(SynchronousTestCase):
    """
    The session channel: only ``subsystem sftp``, and back-pressure through the window.
    """

    def channel(self) -> tuple[SftpChannel, list[int]]:
        h = Harness(FilePath(self.mktemp()), SERVER)
        server = h.add_server()
        adjustments: list[int] = []

        class Avatar:
            clock = Clock()

            def filesystem(self) -> object:
                return filesystem(h, server)

        class Connection:
            transport = StringTransport()

            def adjustWindow(self, channel: SftpChannel, size: int) -> None:
                channel.localWindowLeft += size
                adjustments.append(size)

            def sendData(self, channel: SftpChannel, data: bytes) -> None:
                pass

        channel = SftpChannel(remoteWindow=2 ** 20, remoteMaxPacket=32768, avatar=Avatar())
        channel.conn = Connection()
        return channel, adjustments

    def test_only_the_sftp_subsystem(self) -> None:
        """
        ``shell``, ``exec``, ``pty-req``, ``env``, another subsystem and a subsystem request
        shorter than its length field all fail; ``sftp`` succeeds once.
        """
        channel, _ = self.channel()
        self.assertEqual(channel.requestReceived(b"shell", b""), 0)
        self.assertEqual(channel.requestReceived(b"exec", NS(b"id")), 0)
        self.assertEqual(channel.requestReceived(b"pty-req", NS(b"xterm") + b"\0" * 16), 0)
        self.assertEqual(channel.requestReceived(b"env", NS(b"A") + NS(b"B")), 0)
        self.assertEqual(channel.requestReceived(b"subsystem", b"\0\0"), 0)
        self.assertEqual(channel.requestReceived(b"subsystem", b"\0\0\0\x09sftp"), 0)
        self.assertEqual(channel.requestReceived(b"subsystem", NS(b"shell")), 0)
        self.assertEqual(channel.requestReceived(b"subsystem", NS(b"sftp")), 1)
        self.assertEqual(channel.requestReceived(b"subsystem", NS(b"sftp")), 0)

    def test_window_withheld_while_busy(self) -> None:
        """
        The channel grants window back as data is consumed, but not while the work it holds is
        at the high-water mark; it grants again once the work is done.
        """
        channel, adjustments = self.channel()
        channel.requestReceived(b"subsystem", NS(b"sftp"))
        sftp = channel.sftp
        assert sftp is not None
        channel.localWindowLeft -= WINDOW // 2 + 1
        sftp.load = sftp_protocol.HIGH_WATER
        channel.dataReceived(b"")
        self.assertEqual(adjustments, [])
        sftp.load = 0
        channel.progress()
        self.assertEqual(adjustments, [WINDOW // 2 + 1])
        self.assertEqual(channel.localWindowLeft, WINDOW)
