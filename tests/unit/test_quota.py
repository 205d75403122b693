"""
Tests for the quota of a volume under concurrency and in blocks (``wings_twisted.fs.quota``):
reservations held by writes in progress, the block and inode charge, and what the files API calls
(``Volume.reserve``).
"""

from __future__ import annotations

import errno
import os

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.fs import INODE_CHARGE, NoSpace, QuotaExceeded, Volume, charge, charge_size
from wings_twisted.fs.paths import translate_error
from wings_twisted.fs.quota import BYTES
from wings_twisted.web.errors import to_api_error

MIB = 1024 * 1024


def make_volume(test: SynchronousTestCase, limit: int, **kwargs: object) -> Volume:
    """
    A fresh volume with ``limit`` bytes of ``disk_space``, never walked between checks.
    """
    volume = Volume(FilePath(test.mktemp()).path, uid=os.getuid(), gid=os.getgid(),
                    disk_limit_bytes=limit, chown=False, **kwargs)  # type: ignore[arg-type]
    volume.ensure_root()
    return volume


class ReservationTests(SynchronousTestCase):
    """
    Writes in progress hold what they have written against the limit.
    """

    def test_interleaved_uploads_never_exceed_the_limit(self) -> None:
        """
        Six uploads interleaved chunk by chunk against an 8 MiB limit: together they never get
        past the limit, the ones refused leave nothing, and the usage after the commits is
        within the limit (before: all six succeeded, 36 MiB on disk).
        """
        volume = make_volume(self, 8 * MIB)
        writes = [volume.begin_write("/", "f%d.bin" % i) for i in range(6)]
        chunk = b"x" * MIB
        refused = set()
        for _ in range(6):
            for i, write in enumerate(writes):
                if i in refused:
                    continue
                try:
                    write.write(chunk)
                except QuotaExceeded:
                    refused.add(i)
                    write.abort()
                self.assertLessEqual(volume.usage() + volume.reserved_usage(), 8 * MIB)
        for i, write in enumerate(writes):
            if i not in refused:
                write.commit()
        self.assertTrue(refused)
        self.assertEqual(volume.reserved_usage(), 0)
        self.assertLessEqual(volume.refresh_usage(), 8 * MIB)
        on_disk = sum(os.path.getsize(os.path.join(volume.root, n)) for n in os.listdir(volume.root))
        self.assertLessEqual(on_disk, 8 * MIB)

    def test_hold_given_back_on_abort_and_counted_on_commit(self) -> None:
        """
        An aborted write gives its hold back; a committed one turns it into usage.
        """
        volume = make_volume(self, 4 * MIB)
        write = volume.begin_write("/", "a")
        write.write(b"y" * MIB)
        self.assertEqual((write.reserved, volume.reserved_usage()), (MIB, MIB))
        self.assertFalse(volume.fits(3 * MIB + 1))
        write.abort()
        self.assertEqual(volume.reserved_usage(), 0)
        self.assertTrue(volume.fits(4 * MIB))
        write = volume.begin_write("/", "b")
        write.write(b"y" * 100)
        write.commit()
        self.assertEqual((volume.reserved_usage(), volume.usage()), (0, INODE_CHARGE))

    def test_reservation_api(self) -> None:
        """
        ``Volume.reserve`` (pulls, extractions): ``require`` holds the change so far when it
        fits beside the others, refuses (holding what it held) when not, ``commit`` counts the
        final change, ``release`` gives everything back; a negative change holds nothing.
        """
        volume = make_volume(self, 10_000, accounting=BYTES)
        first, second = volume.reserve(), volume.reserve()
        self.assertTrue(first.require(6_000))
        self.assertFalse(second.require(4_001))
        self.assertEqual(second.held, 0)
        self.assertTrue(second.require(4_000))
        self.assertFalse(first.require(6_001))
        self.assertEqual(first.held, 6_000)
        self.assertFalse(volume.has_space() and volume.fits(1))
        first.commit(5_000)
        self.assertEqual((volume.usage(), volume.reserved_usage()), (5_000, 4_000))
        second.release()
        second.release()
        self.assertEqual(volume.reserved_usage(), 0)
        self.assertTrue(second.require(-100))
        self.assertEqual(second.held, 0)

    def test_unlimited_still_tracks(self) -> None:
        """
        With no limit every require passes, and holds are still given back.
        """
        volume = make_volume(self, 0)
        reservation = volume.reserve()
        self.assertTrue(reservation.require(10 ** 15))
        reservation.release()
        self.assertEqual(volume.reserved_usage(), 0)


class ChargeTests(SynchronousTestCase):
    """
    Usage counts allocated blocks and at least one block per inode.
    """

    def test_charge_rule(self) -> None:
        """
        A regular file costs its size rounded up to 4 KiB (at least 4 KiB, even empty) or its
        allocated blocks if more; other entries their blocks, at least 4 KiB.
        """
        self.assertEqual([charge_size(n) for n in (0, 1, 4096, 4097)], [4096, 4096, 4096, 8192])
        base = FilePath(self.mktemp())
        base.makedirs()
        sparse = base.child("sparse")
        with open(sparse.path, "wb") as f:
            f.truncate(10 * MIB)
        self.assertEqual(charge(os.lstat(sparse.path)), 10 * MIB)
        os.symlink("x", base.child("link").path)
        self.assertEqual(charge(os.lstat(base.child("link").path)), INODE_CHARGE)
        self.assertGreaterEqual(charge(os.lstat(base.path)), INODE_CHARGE)

    def test_many_tiny_files_are_refused(self) -> None:
        """
        A 1 MiB limit takes at most 256 one-byte files (before: 8,000 were accepted, 31.5 MiB on
        the host), and empty files count too.
        """
        volume = make_volume(self, MIB)
        accepted = 0
        for i in range(400):
            try:
                with volume.begin_write("/", "f%d" % i) as write:
                    write.write(b"" if i % 2 else b"z")
                    write.commit()
            except QuotaExceeded:
                break
            accepted += 1
        self.assertEqual(accepted, 256)
        self.assertEqual(volume.refresh_usage(), 256 * INODE_CHARGE)

    def test_walk_charges_every_entry(self) -> None:
        """
        The usage walk charges files, empty files, directories and symlinks, and removing a
        tree gives back what it was charged.
        """
        volume = make_volume(self, 0)
        root = FilePath(volume.root)
        root.child("d").makedirs()
        root.child("d").child("a").setContent(b"a" * 5000)
        root.child("empty").setContent(b"")
        os.symlink("d", root.child("l").path)
        expected = sum(charge(os.lstat(p)) for p in
                       (root.child("d").path, root.child("d").child("a").path,
                        root.child("empty").path, root.child("l").path))
        self.assertEqual(volume.refresh_usage(), expected)
        self.assertGreaterEqual(expected, 8192 + 3 * INODE_CHARGE)
        freed = volume.remove("d")
        self.assertEqual(volume.usage(), expected - freed)
        self.assertEqual(volume.refresh_usage(), expected - freed)

    def test_bytes_accounting_is_upstreams(self) -> None:
        """
        ``accounting=BYTES`` keeps upstream's rule: regular-file sizes only.
        """
        volume = make_volume(self, 0, accounting=BYTES)
        FilePath(volume.root).child("a").setContent(b"abc")
        FilePath(volume.root).child("d").makedirs()
        self.assertEqual(volume.refresh_usage(), 3)


class FullDiskTests(SynchronousTestCase):
    """
    A full host disk is told apart from the server's quota.
    """

    def test_enospc_is_507(self) -> None:
        """
        ``ENOSPC``/``EDQUOT`` become ``NoSpace``, answered 507 with a message that names the
        node's disk (not the server's quota, which stays 400).
        """
        for code in (errno.ENOSPC, errno.EDQUOT):
            error = translate_error(OSError(code, "full"), "/a")
            self.assertIsInstance(error, NoSpace)
            api = to_api_error(error)
            assert api is not None
            self.assertEqual(api.status, 507)
            self.assertIn("node", api.message)
        quota = to_api_error(QuotaExceeded("/a"))
        assert quota is not None
        self.assertEqual(quota.status, 400)
