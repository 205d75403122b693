"""
The SFTP operations on one server's volume (``sftp.md`` §5–§7): ``ISFTPServer`` as one-line
delegations to the sandboxed ``fs.Volume`` (run in worker threads), behind the permission rules.

Order of checks for every modifying request (§6.1, §6.2): read-only mode (``OP_UNSUPPORTED``),
then the permission (``PERMISSION_DENIED``, before any file-system access, so a refused create
leaves nothing behind), then the write guard of a restore or an incoming transfer
(``PERMISSION_DENIED`` with the guard's text).  A suspended server has no permissions at all;
``REALPATH`` needs none.

Paths are the request's bytes decoded as UTF-8 with ``surrogateescape`` (names that are not UTF-8
round-trip); the volume cleans them (``/`` is the volume root, ``..`` clamped at it) and resolves
them without ever leaving the volume.  Activity records (§7.1) carry the path as received.

Decisions where the specification leaves room:

* one session holds at most `MAX_HANDLES` open files and directories; more opens answer
  ``FAILURE`` (the daemon's descriptors are shared by every session and route);
* ``MKDIR`` of an existing directory succeeds (upstream's ``MkdirAll``);
* ``READLINK`` returns the link text to users with ``file.read`` (§11 question 3: the text is
  what ``ls -l`` in the container shows anyway);
* ``FSETSTAT`` of a size on a handle not opened for writing is ``FAILURE`` (as ``ftruncate``).
"""

from __future__ import annotations

import stat as _stat
from typing import Any, Coroutine, TypeVar

from twisted.conch.interfaces import ISFTPServer
from twisted.conch.ssh import filetransfer as fx
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..activity import ActivityLog
from ..blocking import RunBlocking
from ..fs import FileHandle, NotFound, clean_path
from ..servers.server import Server
from .auth import Login
from .errors import QUOTA_EXCEEDED, denied, failure, sftp_error, unsupported
from .files import SftpDirectory, SftpFile, attributes, long_name

__all__ = ["MAX_HANDLES", "SftpFilesystem", "requested_mode"]

log = Logger()

T = TypeVar("T")

#: Open files and directories one SFTP session may hold.
MAX_HANDLES = 256

_WRITE_FLAGS = fx.FXF_WRITE | fx.FXF_APPEND | fx.FXF_CREAT | fx.FXF_TRUNC


def decode(raw: bytes) -> str:
    """
    A path or name from the wire.
    """
    return raw.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    """
    A path or name for the wire.
    """
    return text.encode("utf-8", "surrogateescape")


def requested_mode(permissions: int) -> int:
    """
    The mode a ``SETSTAT`` sets (upstream's mapping, §6.2): the permission bits, ``0644`` when
    none are set, ``0755`` when the request carries the directory type.
    """
    if _stat.S_ISDIR(permissions):
        return 0o755
    return (permissions & 0o777) or 0o644


def _listing(volume: Any, path: str) -> list[tuple[bytes, bytes, dict[str, int]]]:
    """
    A directory's entries as ``READDIR`` sends them (built in the worker thread).
    """
    return [(encode(name), encode(long_name(name, st)), attributes(st))
            for name, st in volume.listdir(path)]


@implementer(ISFTPServer)
class SftpFilesystem:
    """
    The SFTP operations of one session, bound to a login and its server.

    :param read_only: ``system.sftp.read_only`` when the session started.
    """

    avatar = None

    def __init__(self, server: Server, login: Login, *, run_blocking: RunBlocking,
                 activity: ActivityLog, read_only: bool, gather: float = 0.0) -> None:
        """
        :param gather: seconds a read or write waits for the ones behind it (`files.GATHER`).
        """
        self._server = server
        self._volume = server.volume
        self._login = login
        self._run = run_blocking
        self._activity = activity
        self._read_only = read_only
        self._gather = gather
        self.handles = 0

    # -- rules -----------------------------------------------------------------------------------

    def can(self, permission: str) -> bool:
        """
        ``can(p)`` of §6.1: not suspended, and ``p`` or ``*`` granted.
        """
        granted = self._login.permissions
        return not self._server.suspended and (permission in granted or "*" in granted)

    def _require(self, permission: str) -> None:
        if not self.can(permission):
            raise denied()

    def _modify(self, permission: str) -> None:
        if self._read_only:
            raise unsupported("the server is in read-only mode")
        self._require(permission)
        self._server.check_writable()

    def _check_handle_write(self) -> None:
        if self._server.suspended:
            raise denied()
        try:
            self._server.check_writable()
        except Exception as e:
            raise sftp_error(e)

    def _check_handle_read(self) -> None:
        if self._server.suspended:
            raise denied()

    def _call(self, work: Coroutine[Any, Any, T]) -> Deferred[T]:
        d: Deferred[T] = Deferred.fromCoroutine(work)
        d.addErrback(_translate)
        return d

    def _record(self, event: str, files: list[Any]) -> None:
        login = self._login
        d = self._run(self._activity.record, event, server=self._server.uuid, user=login.user,
                      ip=login.ip, metadata={"files": files})
        d.addErrback(lambda f: log.failure("Recording SFTP activity failed", f))

    def _count_handle(self) -> None:
        if self.handles >= MAX_HANDLES:
            raise failure("too many open handles")
        self.handles += 1

    def _release_handle(self) -> None:
        self.handles -= 1

    # -- ISFTPServer -----------------------------------------------------------------------------

    def gotVersion(self, otherVersion: int, extData: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """
        Advertise ``posix-rename@openssh.com`` only (§4).
        """
        return {b"posix-rename@openssh.com": b"1"}

    def realPath(self, path: bytes) -> bytes:
        """
        The cleaned absolute path, without touching the disk or asking for a permission (§5).
        """
        return encode("/" + clean_path(decode(path)))

    def openFile(self, filename: bytes, flags: int, attrs: dict[str, Any]) -> Deferred[SftpFile]:
        """
        ``OPEN`` (§6.2): reading needs ``file.read-content``; writing ``file.update`` for an
        existing file, ``file.create`` for a new one, and honours the flags.
        """
        return self._call(self._open_file(decode(filename), flags))

    async def _open_file(self, path: str, flags: int) -> SftpFile:
        volume = self._volume
        reading = bool(flags & fx.FXF_READ)
        if not flags & _WRITE_FLAGS:
            self._require("file.read-content")
            self._count_handle()
            try:
                handle = await self._run(volume.open_file, path)
            except BaseException:
                self._release_handle()
                raise
            return self._file(handle)
        if self._read_only:
            raise unsupported("the server is in read-only mode")
        if not volume.quota.has_space_cached():
            raise fx.SFTPError(QUOTA_EXCEEDED, "Quota Exceeded")
        self._server.disk_bytes()  # refreshes a stale figure in the background
        exists = await self._run(_exists, volume, path)
        self._require("file.update" if exists else "file.create")
        if reading:
            self._require("file.read-content")
        self._server.check_writable()
        self._count_handle()
        create = bool(flags & fx.FXF_CREAT) and (not exists or self.can("file.create"))
        try:
            handle = await self._run(
                volume.open_file, path, read=reading, write=True, create=create,
                exclusive=create and bool(flags & fx.FXF_EXCL), truncate=bool(flags & fx.FXF_TRUNC),
                append=bool(flags & fx.FXF_APPEND), make_parents=create)
        except BaseException:
            self._release_handle()
            raise
        self._record("server:sftp.create" if handle.created else "server:sftp.write", [path])
        return self._file(handle)

    def _file(self, handle: FileHandle) -> SftpFile:
        return SftpFile(handle, self._run, check_write=self._check_handle_write,
                        check_read=self._check_handle_read, prepare_attrs=self.file_attributes,
                        on_close=self._release_handle, clock=self._server.context.clock,
                        gather=self._gather)

    def removeFile(self, filename: bytes) -> Deferred[None]:
        """
        ``REMOVE`` (``file.delete``): a file, a link itself, or a whole directory tree.
        """
        return self._call(self._remove(decode(filename)))

    def removeDirectory(self, path: bytes) -> Deferred[None]:
        """
        ``RMDIR`` (``file.delete``): recursive, as upstream.
        """
        return self._call(self._remove(decode(path)))

    async def _remove(self, path: str) -> None:
        self._modify("file.delete")
        if not clean_path(path):
            raise failure("cannot remove the root directory")
        await self._run(self._volume.remove, path)
        self._record("server:sftp.delete", [path])

    def renameFile(self, oldpath: bytes, newpath: bytes) -> Deferred[None]:
        """
        ``RENAME`` and ``posix-rename@openssh.com`` (``file.update``): an existing target is
        replaced; the denylist is checked on both paths.
        """
        return self._call(self._rename(decode(oldpath), decode(newpath)))

    async def _rename(self, old: str, new: str) -> None:
        self._modify("file.update")
        if not clean_path(old) or not clean_path(new):
            raise failure("cannot rename the root directory")
        await self._run(self._volume.rename, old, new, replace=True)
        self._record("server:sftp.rename", [{"from": old, "to": new}])

    def makeDirectory(self, path: bytes, attrs: dict[str, Any]) -> Deferred[None]:
        """
        ``MKDIR`` (``file.create``): with missing parents, mode 0755 whatever was asked.
        """
        return self._call(self._mkdir(decode(path)))

    async def _mkdir(self, path: str) -> None:
        self._modify("file.create")
        await self._run(self._volume.mkdir, path)
        self._record("server:sftp.create-directory", [path])

    def openDirectory(self, path: bytes) -> Deferred[SftpDirectory]:
        """
        ``OPENDIR`` (``file.read``): the entries with their ``lstat`` attributes.
        """
        return self._call(self._opendir(decode(path)))

    async def _opendir(self, path: str) -> SftpDirectory:
        self._require("file.read")
        self._count_handle()
        try:
            entries = await self._run(_listing, self._volume, path)
        except BaseException:
            self._release_handle()
            raise
        return SftpDirectory(entries, self._release_handle)

    def getAttrs(self, path: bytes, followLinks: bool) -> Deferred[dict[str, int]]:
        """
        ``STAT`` (a final link followed only inside the volume) and ``LSTAT`` (``file.read``).
        """
        return self._call(self._stat(decode(path), bool(followLinks)))

    async def _stat(self, path: str, follow: bool) -> dict[str, int]:
        self._require("file.read")
        volume = self._volume
        st = await self._run(volume.follow_stat if follow else volume.lstat, path)
        return attributes(st)

    def setAttrs(self, path: bytes, attrs: dict[str, Any]) -> Deferred[None]:
        """
        ``SETSTAT`` (``file.update``): only the attributes present; owner ignored.
        """
        return self._call(self._setstat(decode(path), attrs))

    async def _setstat(self, path: str, attrs: dict[str, Any]) -> None:
        self._modify("file.update")
        if not clean_path(path):
            raise failure("cannot change the root directory")
        mode = requested_mode(attrs["permissions"]) if "permissions" in attrs else None
        times = (attrs["atime"], attrs["mtime"]) if "atime" in attrs and "mtime" in attrs else None
        await self._run(self._volume.setstat, path, mode=mode, size=attrs.get("size"),
                        atime_mtime=times)

    def file_attributes(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """
        Check ``FSETSTAT`` like ``SETSTAT`` and return the attributes to apply to the handle.
        """
        try:
            self._modify("file.update")
        except Exception as e:
            raise sftp_error(e)
        applied = {k: v for k, v in attrs.items() if k in ("size", "atime", "mtime")}
        if "permissions" in attrs:
            applied["permissions"] = requested_mode(attrs["permissions"])
        return applied

    def readLink(self, path: bytes) -> Deferred[bytes]:
        """
        ``READLINK`` (``file.read``): the link text as stored.
        """
        return self._call(self._readlink(decode(path)))

    async def _readlink(self, path: str) -> bytes:
        self._require("file.read")
        return encode(await self._run(self._volume.readlink, path))

    def makeLink(self, linkPath: bytes, targetPath: bytes) -> Deferred[None]:
        """
        ``SYMLINK`` (``file.create``).  Conch passes the request's two strings in draft order,
        but OpenSSH (and so nearly every client) sends the target first (§6.4): the first
        argument is the target text, the second the path of the new link.
        """
        return self._call(self._symlink(link=decode(targetPath), target=decode(linkPath)))

    async def _symlink(self, link: str, target: str) -> None:
        self._modify("file.create")
        await self._run(self._volume.symlink, link, target)

    def extendedRequest(self, extendedName: bytes, extendedData: bytes) -> bytes:
        """
        Other extensions (``posix-rename@openssh.com`` is the protocol's) are unsupported.
        """
        raise NotImplementedError()


def _exists(volume: Any, path: str) -> bool:
    try:
        volume.lstat(path)
    except NotFound:
        return False
    return True


def _translate(failure: Failure) -> Failure:
    """
    The failure of an operation, its error replaced by the status error it stands for.
    """
    return Failure(sftp_error(failure.value))

