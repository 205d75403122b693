"""
Helpers of the archive tests: volumes in temporary directories, and archives built in memory
with the standard library (hostile ones included: the tests make every archive they use, none is
downloaded).
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from typing import Iterable, Sequence

from wings_twisted.fs import Volume


def make_volume(base: str, *, denylist: Sequence[str] = (), limit: int = 0) -> Volume:
    """
    A volume at ``base/volume`` owned by the test's own user, walked for usage on every check.
    """
    root = os.path.join(base, "volume")
    os.makedirs(root, exist_ok=True)
    volume = Volume(root, uid=os.getuid(), gid=os.getgid(), denylist=denylist,
                    disk_limit_bytes=limit, disk_check_interval=0.000001)
    return volume


@dataclass
class Member:
    """
    One member of a test archive: ``kind`` is ``file``, ``dir``, ``symlink``, ``hardlink``,
    ``fifo`` or ``chardev``; ``data`` the content (or the link target for links).
    """

    name: str
    data: bytes = b""
    kind: str = "file"
    mode: int = 0o644
    mtime: int = 1_600_000_000
    size: int | None = None


def tar_bytes(members: Iterable[Member], mode: str = "w", *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """
    A tar archive (``mode`` ``w``, ``w:gz``, ``w:bz2``, ``w:xz``) of ``members``, exactly as
    listed: names are not cleaned, duplicates are kept.
    """
    buffer = io.BytesIO()
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE}
    with tarfile.open(fileobj=buffer, mode=mode, format=fmt) as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = kinds[member.kind]
            info.mode = member.mode
            info.mtime = member.mtime
            if member.kind in ("symlink", "hardlink"):
                info.linkname = member.data.decode()
                archive.addfile(info)
            elif member.kind == "file":
                info.size = len(member.data) if member.size is None else member.size
                archive.addfile(info, io.BytesIO(member.data))
            else:
                archive.addfile(info)
    return buffer.getvalue()


def zip_bytes(members: Iterable[Member], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """
    A zip archive of ``members`` (files, directories and Unix symlinks), names as given.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression) as archive:
        warnings.simplefilter("ignore")  # duplicate names are what some tests want
        for member in members:
            info = zipfile.ZipInfo(member.name, date_time=(2020, 9, 13, 12, 26, 40))
            info.create_system = 3
            info.compress_type = compression
            if member.kind == "dir":
                info.external_attr = (0o40000 | member.mode) << 16
                archive.writestr(info, b"")
            elif member.kind == "symlink":
                info.external_attr = (0o120000 | 0o777) << 16
                archive.writestr(info, member.data)
            else:
                info.external_attr = (0o100000 | member.mode) << 16
                archive.writestr(info, member.data)
    return buffer.getvalue()


def write(volume: Volume, path: str, data: bytes) -> str:
    """
    Put ``data`` at the volume-relative ``path`` (directly, as a test fixture).
    """
    host = os.path.join(volume.root, path)
    os.makedirs(os.path.dirname(host), exist_ok=True)
    with open(host, "wb") as f:
        f.write(data)
    return host


def tree(root: str) -> dict[str, tuple[str, bytes | str]]:
    """
    Everything beneath ``root``: relative path → (``file``, content) / (``dir``, "") /
    (``link``, target) / (``other``, "").
    """
    found: dict[str, tuple[str, bytes | str]] = {}
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                found[relative] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                found[relative] = ("dir", "")
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    found[relative] = ("file", f.read())
            else:
                found[relative] = ("other", "")
    return found
