"""
Property-based tests of the archives (hypothesis): extraction of arbitrary archives — names with
``..``, absolute names, empty and dot components, duplicates, every kind of link and special
entry — into a volume holding symlinks that lead out of it never changes anything outside the
volume, never creates a link or special file, and never leaves a temporary file; and an archive
made by compress extracts back to the same files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.archive import Damaged, UnknownFormat, Unsupported, create_archive, decompress
from wings_twisted.fs import FsError, Volume

from .archive_support import Member, make_volume, tar_bytes, tree, write, zip_bytes

_PROFILE = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

#: Components that matter: escapes, the volume's own links, the denylist, plain names.
_COMPONENTS = st.sampled_from(["a", "b", "..", ".", "", "out", "abs", "rel", "inner", "x.secret",
                               "run.sh", "\u00e9"])
_NAMES = st.builds(lambda lead, parts: lead + "/".join(parts),
                   st.sampled_from(["", "/", "./", "../"]),
                   st.lists(_COMPONENTS, min_size=1, max_size=5))
_TARGETS = st.sampled_from(["/", "/etc/passwd", "../..", "../outside", "a", "out/keep.txt"])
_MEMBERS = st.one_of(
    st.builds(Member, _NAMES, st.binary(max_size=64)),
    st.builds(Member, _NAMES, st.just(b""), st.just("dir")),
    st.builds(lambda n, t: Member(n, t.encode(), "symlink"), _NAMES, _TARGETS),
    st.builds(lambda n, t: Member(n, t.encode(), "hardlink"), _NAMES, _TARGETS),
    st.builds(Member, _NAMES, st.just(b""), st.sampled_from(["fifo", "chardev"])),
)


def _snapshot(root: str) -> dict[str, tuple[object, ...]]:
    """
    Everything beneath ``root`` with content, mode and times (the outside must not change at
    all).
    """
    found: dict[str, tuple[object, ...]] = {}
    for relative, (kind, value) in tree(root).items():
        st_ = os.lstat(os.path.join(root, relative))
        found[relative] = (kind, value, st_.st_mode, st_.st_mtime_ns, st_.st_ino)
    return found


class ExtractionPropertyTests(SynchronousTestCase):
    """
    Nothing an archive holds can reach outside the volume.
    """

    def _world(self) -> tuple[str, str, Volume]:
        base = tempfile.mkdtemp(dir=os.path.abspath("."))
        outside = os.path.join(base, "outside")
        os.makedirs(os.path.join(outside, "deeper"))
        with open(os.path.join(outside, "keep.txt"), "w") as f:
            f.write("outside")
        volume = make_volume(base, denylist=["*.secret"])
        os.makedirs(os.path.join(volume.root, "a"))
        os.symlink(outside, os.path.join(volume.root, "out"))
        os.symlink("/", os.path.join(volume.root, "abs"))
        os.symlink("../outside", os.path.join(volume.root, "rel"))
        os.symlink("a", os.path.join(volume.root, "inner"))
        return base, outside, volume

    def _check(self, members: list[Member], as_zip: bool) -> None:
        base, outside, volume = self._world()
        try:
            before = _snapshot(outside)
            links_before = {k: v for k, v in tree(volume.root).items() if v[0] == "link"}
            data = zip_bytes([m for m in members if m.kind in ("file", "dir", "symlink")]) \
                if as_zip else tar_bytes(members)
            write(volume, "archive.tar", data)
            try:
                decompress(volume, "/a/..", "archive.tar")
            except (FsError, Damaged, UnknownFormat, Unsupported, zipfile.BadZipFile):
                pass
            self.assertEqual(_snapshot(outside), before)
            after = tree(volume.root)
            self.assertEqual({k: v for k, v in after.items() if v[0] == "link"}, links_before)
            self.assertEqual([k for k, v in after.items() if v[0] == "other"], [])
            self.assertEqual([k for k in after if ".upload-" in k], [])
            self.assertEqual([k for k in after if k.endswith(".secret")], [])
        finally:
            shutil.rmtree(base)

    @_PROFILE
    @given(st.lists(_MEMBERS, max_size=12))
    def test_tar_extraction_stays_inside(self, members: list[Member]) -> None:
        """
        Any tar archive: the outside is untouched, no link, special or temporary file appears,
        denylisted names are never written.
        """
        self._check(members, as_zip=False)

    @_PROFILE
    @given(st.lists(_MEMBERS, max_size=12))
    def test_zip_extraction_stays_inside(self, members: list[Member]) -> None:
        """
        The same for zip archives (Unix symlink entries included).
        """
        self._check(members, as_zip=True)


_FILE_NAMES = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x00"),
                      min_size=1, max_size=20).filter(lambda n: n not in (".", ".."))


class RoundTripPropertyTests(SynchronousTestCase):
    """
    Compress, then decompress elsewhere: the same files come back.
    """

    @settings(max_examples=60, deadline=None, database=None)
    @given(st.dictionaries(st.lists(_FILE_NAMES, min_size=1, max_size=3).map("/".join),
                           st.binary(max_size=3000), max_size=8),
           st.sampled_from([0, 1, 9]))
    def test_round_trip(self, files: dict[str, bytes], level: int) -> None:
        """
        Every file (any name, including non-ASCII and very long ones) comes back with its content.
        """
        base = tempfile.mkdtemp(dir=".")
        try:
            volume = make_volume(base)
            written: dict[str, bytes] = {}
            for name, data in files.items():
                try:
                    write(volume, "src/" + name, data)
                except (IsADirectoryError, NotADirectoryError, FileExistsError, OSError):
                    continue
                written[name] = data
            os.makedirs(os.path.join(volume.root, "src"), exist_ok=True)
            path, _ = create_archive(volume, "src", ["."], level=level, now=1_700_000_000)
            os.rename(os.path.join(volume.root, path), os.path.join(volume.root, "a.tgz"))
            decompress(volume, "dst", "../a.tgz")
            got = {k: v[1] for k, v in tree(os.path.join(volume.root, "dst")).items()
                   if v[0] == "file"}
            expected = {k: v[1] for k, v in tree(os.path.join(volume.root, "src")).items()
                        if v[0] == "file"}
            self.assertEqual(got, expected)
        finally:
            shutil.rmtree(base)
