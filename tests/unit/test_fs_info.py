"""
The stat object of api.md §2.14: Go's mode strings, ``mode_bits``, UTC
times, and the MIME strings the Panel's file manager keys on.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
import zipfile

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.fs.info import (OCTET_STREAM, SNIFF_BYTES, TEXT, go_mode, rfc3339, sniff,
                                   sniff_at, stat_object)

#: Types for which the Panel offers "Unarchive" (and refuses the editor).
ARCHIVES = {"application/vnd.rar", "application/x-rar-compressed", "application/x-tar",
            "application/x-br", "application/x-bzip2", "application/gzip",
            "application/x-gzip", "application/x-lzip", "application/x-sz", "application/x-xz",
            "application/zstd", "application/zip", "application/x-7z-compressed"}


def sniffed(data: bytes) -> str:
    return sniff(data[:SNIFF_BYTES], len(data))


def tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return buffer.getvalue()


def zip_bytes(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"data")
    return buffer.getvalue()


class GoModeTests(SynchronousTestCase):
    """
    ``go_mode`` renders Go's ``FileMode.String()``, not ``stat.filemode``.
    """

    def test_examples_of_the_spec(self) -> None:
        """
        Each example of api.md §2.14 renders exactly.
        """
        cases = {
            stat.S_IFREG | 0o644: "-rw-r--r--",
            stat.S_IFDIR | 0o755: "drwxr-xr-x",
            stat.S_IFLNK | 0o777: "Lrwxrwxrwx",
            stat.S_IFIFO | 0o644: "prw-r--r--",
            stat.S_IFSOCK | 0o755: "Srwxr-xr-x",
            stat.S_IFCHR | 0o666: "Dcrw-rw-rw-",
            stat.S_IFREG | stat.S_ISUID | 0o755: "urwxr-xr-x",
            stat.S_IFDIR | stat.S_ISVTX | 0o777: "dtrwxrwxrwx",
            stat.S_IFBLK | 0o660: "Drw-rw----",
            stat.S_IFREG | stat.S_ISGID | 0o2755 & 0o777: "grwxr-xr-x",
            stat.S_IFREG: "----------",
        }
        for mode, expected in cases.items():
            self.assertEqual(go_mode(mode), expected, oct(mode))


class StatObjectTests(SynchronousTestCase):
    """
    ``stat_object`` has every field, in upstream's order, with upstream's
    formats (and the project's real ``symlink`` and UTC times).
    """

    def setUp(self) -> None:
        self.root = FilePath(self.mktemp())
        self.root.makedirs()

    def test_regular_file(self) -> None:
        """
        Fields and order; ``mode_bits`` without a leading zero; ``created``
        is the ctime and ``modified`` the mtime, in UTC with ``Z``.
        """
        path = self.root.child("server.properties")
        path.setContent(b"motd=hi\n")
        os.chmod(path.path, 0o640)
        os.utime(path.path, (1_700_000_000, 1_700_000_001))
        st = os.lstat(path.path)
        obj = stat_object("server.properties", st, TEXT)
        self.assertEqual(list(obj), ["name", "created", "modified", "mode", "mode_bits", "size",
                                     "directory", "file", "symlink", "mime"])
        self.assertEqual(obj["modified"], "2023-11-14T22:13:21Z")
        self.assertEqual(obj["created"], rfc3339(st.st_ctime))
        self.assertTrue(obj["created"].endswith("Z"))
        self.assertEqual((obj["mode"], obj["mode_bits"], obj["size"]), ("-rw-r-----", "640", 8))
        self.assertEqual((obj["directory"], obj["file"], obj["symlink"]), (False, True, False))

    def test_directory_symlink_and_no_permissions(self) -> None:
        """
        A directory is not a file; a symlink is a file and ``symlink``;
        no permission bits at all is ``"0"``.
        """
        directory = self.root.child("d")
        directory.makedirs()
        os.chmod(directory.path, 0)
        self.addCleanup(os.chmod, directory.path, 0o755)
        obj = stat_object("d", os.lstat(directory.path), "inode/directory")
        self.assertEqual((obj["directory"], obj["file"], obj["mode_bits"]), (True, False, "0"))
        os.symlink("d", self.root.child("l").path)
        link = stat_object("l", os.lstat(self.root.child("l").path), OCTET_STREAM)
        self.assertEqual((link["directory"], link["file"], link["symlink"], link["mode"][0]),
                         (False, True, True, "L"))


class SniffTests(SynchronousTestCase):
    """
    The MIME table of api.md §2.14.
    """

    def test_table(self) -> None:
        """
        Every row of the table gives the exact string.
        """
        cases = [
            (b"", TEXT),
            (b"hello world\n", TEXT),
            ("héllo wörld\n".encode(), TEXT),
            (b'{"a": [1, 2]}', "application/json"),
            (b"[1, 2, 3]\n", "application/json"),
            (b'{"a": ', TEXT),
            (zip_bytes("META-INF/MANIFEST.MF", "a.class"), "application/jar"),
            (zip_bytes("a.txt"), "application/zip"),
            (gzip.compress(b"x"), "application/gzip"),
            (b"BZh91AY&SY", "application/x-bzip2"),
            (b"\xfd7zXZ\x00\x00", "application/x-xz"),
            (b"\x28\xb5\x2f\xfd\x00", "application/zstd"),
            (tar_bytes(), "application/x-tar"),
            (b"7z\xbc\xaf\x27\x1c\x00\x04", "application/x-7z-compressed"),
            (b"Rar!\x1a\x07\x00", "application/x-rar-compressed"),
            (b"\x89PNG\r\n\x1a\n\x00", "image/png"),
            (b"\xff\xd8\xff\xe0\x00", "image/jpeg"),
            (b"GIF89a\x01\x00", "image/gif"),
            (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
            (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
            (b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00", "application/x-executable"),
            (b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x03\x00", "application/x-sharedlib"),
            (b"\x00\x01\x02\x03binary", OCTET_STREAM),
            (b"\xff\xfe\xfd", OCTET_STREAM),
        ]
        for data, expected in cases:
            self.assertEqual(sniffed(data), expected, data[:20])

    def test_archives_are_not_editable(self) -> None:
        """
        Every archive the Panel can unpack sniffs as one of its archive types.
        """
        for data in (zip_bytes("a"), gzip.compress(b"x"), tar_bytes(), b"BZh9",
                     b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"7z\xbc\xaf\x27\x1c",
                     b"Rar!\x1a\x07\x00"):
            self.assertIn(sniffed(data), ARCHIVES)

    def test_utf8_cut_by_the_window(self) -> None:
        """
        A multi-byte character cut by the 3,072-byte window of a longer file
        is still text; the same bytes at the end of the file are not.
        """
        data = b"a" * (SNIFF_BYTES - 1) + "é".encode() + b"tail"
        self.assertEqual(sniffed(data), TEXT)
        self.assertEqual(sniff(data[:SNIFF_BYTES], SNIFF_BYTES), OCTET_STREAM)

    def test_large_json_is_text(self) -> None:
        """
        JSON longer than the window is reported as text (still editable).
        """
        document = json.dumps({"k": "v" * SNIFF_BYTES}).encode()
        self.assertEqual(sniffed(document), TEXT)

    def test_sniff_at_never_opens_special_files(self) -> None:
        """
        A FIFO, a symlink and a directory are classified from their
        ``lstat`` without being opened (a FIFO open would block).
        """
        root = FilePath(self.mktemp())
        root.makedirs()
        os.mkfifo(root.child("fifo").path)
        os.symlink("/etc/passwd", root.child("link").path)
        fd = os.open(root.path, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, fd)
        for name, expected in (("fifo", OCTET_STREAM), ("link", OCTET_STREAM)):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            self.assertEqual(sniff_at(fd, name, st), expected)
        self.assertEqual(sniff_at(fd, ".", os.fstat(fd)), "inode/directory")

    def test_vanished_file(self) -> None:
        """
        A regular file that vanished after its ``lstat`` is
        ``application/octet-stream`` rather than an error.
        """
        root = FilePath(self.mktemp())
        root.makedirs()
        root.child("gone").setContent(b"text")
        fd = os.open(root.path, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, fd)
        st = os.stat("gone", dir_fd=fd, follow_symlinks=False)
        os.unlink(root.child("gone").path)
        self.assertEqual(sniff_at(fd, "gone", st), OCTET_STREAM)


class EncodedListingTests(SynchronousTestCase):
    """
    ``list_directory_json``: the listing's JSON from the cache of encoded entries, byte for
    byte what encoding ``list_directory`` gives, and never stale.
    """

    def setUp(self) -> None:
        from wings_twisted.fs import Volume
        root = FilePath(self.mktemp())
        root.makedirs()
        self.root = root
        self.volume = Volume(root.path, uid=os.getuid(), gid=os.getgid(), chown=False,
                             disk_check_interval=0)
        root.child("dir").makedirs()
        root.child("text.txt").setContent(b"hello\n")
        root.child("empty").setContent(b"")
        root.child("caf\u00e9.json").setContent(b'{"a": 1}')
        os.symlink("text.txt", root.child("link").path)
        os.symlink("/etc/passwd", root.child("out").path)
        with open(os.path.join(os.fsencode(root.path), b"bad-\xff"), "wb") as f:
            f.write(b"\x00\x01binary")

    def expected(self) -> bytes:
        from wings_twisted.fs.listing import list_directory
        return json.dumps(list_directory(self.volume, "/"), separators=(",", ":")).encode()

    def test_same_bytes_cold_and_warm(self) -> None:
        from wings_twisted.fs.listing import list_directory_json
        cold = list_directory_json(self.volume, "/")
        self.assertEqual(cold, self.expected())
        self.assertEqual(list_directory_json(self.volume, "/"), cold)
        self.assertEqual(len(json.loads(cold)), 7)

    def test_changes_are_seen(self) -> None:
        """
        Content, mode and a replacement under the same name give new entries, not cached ones.
        """
        from wings_twisted.fs.listing import list_directory_json
        list_directory_json(self.volume, "/")
        text = self.root.child("text.txt")
        text.setContent(b"\x00binary now, and longer")
        os.chmod(self.root.child("dir").path, 0o700)
        os.rename(self.root.child("empty").path, self.root.child("old").path)
        self.root.child("empty").setContent(b"x" * 10)
        entries = {e["name"]: e for e in json.loads(list_directory_json(self.volume, "/"))}
        self.assertEqual(entries["text.txt"]["size"], 23)
        self.assertEqual(entries["text.txt"]["mime"], OCTET_STREAM)
        self.assertEqual(entries["dir"]["mode_bits"], "700")
        self.assertEqual(entries["empty"]["size"], 10)
        self.assertEqual(list_directory_json(self.volume, "/"), self.expected())

    def test_bounded(self) -> None:
        """
        The cache is emptied when it would pass its size.
        """
        from wings_twisted.fs import listing
        self.patch(listing, "ENCODED_CACHE_BYTES", 400)
        listing._encoded.clear()
        listing._encoded_bytes = 0
        listing.list_directory_json(self.volume, "/")
        self.assertLessEqual(listing._encoded_bytes, 400)
        self.assertLessEqual(sum(len(v) for v in listing._encoded.values()), 400)
        self.assertEqual(listing.list_directory_json(self.volume, "/"), self.expected())
