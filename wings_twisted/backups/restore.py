"""
Restoring a backup into a server's volume (backups.md §8).

Before the 202 (`begin_restore`), in this order (§8.2): the server's state (a restore already
running → 409; transferring either way → 409; installing → 409, project), then the archive:
``wings`` locates it (§3; missing, recorded for another server or still generating → 404) and
opens it; ``s3`` opens the download (``download.open_download``; refusals → 400).  Only then is
the server marked *restoring* (``Occupancy.begin_restore``: power actions refused, the write
guard of api.md §2.9 up).  Nothing in the volume has been touched.

The background job (`_restore`, §8.4), as background work of the server (deleting the server
cancels it):

1. the suspended flag is left alone (project);
2. a process that is not offline is asked to stop and given 2 minutes, never killed; a failure
   fails the restore;
3. ``truncate_directory``: every entry of the volume is removed (``storage.truncate_volume``);
4. the archive is read through the write limiter (§5.6) into ``archive.Extractor`` with the
   ``RESTORE`` policy, on the backup pool's thread: entry names are cleaned lexically and a name
   that leaves the volume fails the job (`Escape`); each entry's stored name is published as
   ``daemon message`` ``(restoring): <name>`` before it is written; directories are created;
   links and special entries are skipped; the denylist does not apply; any write error fails
   the job (files already restored stay);
5. ``POST /backups/{uuid}/restore`` ``{"successful": …}`` (a failure is only logged);
6. ``daemon message`` with the success or failure text, then ``backup restore completed`` ``""``;
7. *restoring* is cleared and the file or connection closed.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.web.iweb import IResponse

from ..archive import RESTORE, Extractor
from ..archive.codecs import Damaged, FdSource, gzip_source
from ..archive.readers import tar_entries
from ..environment import EnvironmentError as EnvError
from ..panel import PanelError
from ..servers.occupancy import Occupied
from ..servers.server import Server
from . import report
from .download import BodyQueue, HostPolicy, deliver, open_download
from .errors import (
    RESTORE_RUNNING,
    RESTORE_WHILE_INSTALLING,
    RESTORE_WHILE_TRANSFERRING,
    BackupConflict,
)
from .limiter import TokenBucket, make_bucket
from .services import EXPECTED, BackupServices, run_cancellable
from .storage import truncate_volume

__all__ = ["Escape", "begin_restore", "check_name", "extract_stream"]

log = Logger()

#: Seconds a running process gets to stop before a restore (§8.4 step 2).
STOP_BUDGET = 120.0
_PIECE = 256 * 1024


class Escape(Exception):
    """
    An archive entry whose name leaves the volume.
    """


def check_name(name: str) -> str:
    """
    The entry name cleaned lexically (leading ``/`` stripped, ``.`` and ``..`` resolved).

    :raises Escape: the name leaves the volume.
    """
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise Escape("the archive entry {!r} leaves the volume".format(name))
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def _check_state(server: Server) -> None:
    state = server.occupancy.state
    if state == "restoring":
        raise BackupConflict(RESTORE_RUNNING)
    if state in ("transferring", "receiving"):
        raise BackupConflict(RESTORE_WHILE_TRANSFERRING)
    if state == "installing":
        raise BackupConflict(RESTORE_WHILE_INSTALLING)


class _Limited:
    """
    A source read through the limiter (§8.4 step 4: the compressed stream).
    """

    def __init__(self, read: Callable[[int], bytes], bucket: TokenBucket | None) -> None:
        self._read = read
        self._bucket = bucket

    def read(self, size: int) -> bytes:
        data = self._read(size)
        if self._bucket is not None and data:
            self._bucket.take(len(data))
        return data


def extract_stream(server: Server, read: Callable[[int], bytes], *, bucket: TokenBucket | None,
                   cancel: threading.Event, progress: Callable[[str], object]) -> int:
    """
    Extract the tar.gz read from ``read`` into the server's volume (§8.4 steps 4–5, blocking);
    the number of files written.
    """
    def on_entry(name: str) -> None:
        check_name(name)
        progress(name)

    source = gzip_source(_Limited(read, bucket))
    with Extractor(server.volume, "", policy=RESTORE, cancel=cancel,
                   on_entry=on_entry) as extractor:
        extractor.extract_all(tar_entries(source))
        for name in extractor.stats.skipped_names:
            log.info("Restore of {server} skipped {name!r} (not a regular file or directory)",
                     server=server.uuid, name=name)
        return extractor.stats.files


async def begin_restore(services: BackupServices, server: Server, backup_uuid: str,
                        adapter: str, truncate: bool, download_url: str) -> None:
    """
    The synchronous part of ``POST .../backup/{uuid}/restore`` (§8.2 steps 2–5); the job then
    runs in the background.

    :raises BackupConflict, BackupNotFound, BackupInvalid: the refusals of §8.2–§8.3.
    """
    _check_state(server)
    node = services.node
    fd: int | None = None
    response: IResponse | None = None
    if adapter == "wings":
        path = services.find(server, backup_uuid)
        fd = await services.run_job(os.open, path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    else:
        outgoing = node.outgoing
        if outgoing is None:
            raise RuntimeError("this node makes no outgoing connections")
        policy = HostPolicy(node.config.system.backups.restore_host_allowlist)
        response = await open_download(download_url, policy, node.clock, outgoing.connector,
                                       outgoing.resolver, outgoing.tls)
    try:
        _check_state(server)
        server.occupancy.begin_restore()
    except (BackupConflict, Occupied):
        if fd is not None:
            os.close(fd)
        if response is not None:
            deliver(response, node.clock).stop()
        raise BackupConflict(RESTORE_RUNNING) from None
    services.publish_fork(server, report.RESTORE_STARTED, backup_uuid)
    server.track(_restore, services, server, backup_uuid, adapter, truncate, fd, response)


async def _restore(services: BackupServices, server: Server, backup_uuid: str, adapter: str,
                   truncate: bool, fd: int | None, response: IResponse | None) -> None:
    node = services.node
    cancel = threading.Event()
    body: BodyQueue | None = None
    successful = False
    try:
        env = server.environment
        if env is not None and server.state != "offline":
            try:
                await env.wait_for_stop(STOP_BUDGET, False)
            except EnvError:
                # A process (or container) that is gone counts as stopped (§8.4 step 2).
                if server.state != "offline":
                    raise
        if truncate:
            await services.run_job(truncate_volume, server.volume)
        bucket = make_bucket(node.config.system.backups.write_limit)

        def progress(name: str) -> None:
            services.call_from_thread(_progress, server, name)

        read: Callable[[int], bytes]
        if fd is not None:
            read = FdSource(fd).read
        else:
            assert response is not None
            body = deliver(response, node.clock, cancel)
            read = body.read
        try:
            await run_cancellable(services.run_job, cancel, extract_stream, server, read,
                                  bucket=bucket, cancel=cancel, progress=progress)
        except CancelledError:
            if body is not None:
                body.abandon()
            raise
        successful = True
    except CancelledError:
        log.info("Restore of {backup} into {server} was cancelled", backup=backup_uuid,
                 server=server.uuid)
    except EXPECTED + (Escape, Damaged, EnvError, TimeoutError, ConnectionError) as e:
        log.error("Restore of {backup} into {server} failed: {error}", backup=backup_uuid,
                  server=server.uuid, error=str(e) or type(e).__name__)
    except Exception as e:
        log.failure("Restore of {backup} into {server} failed: {error}", backup=backup_uuid,
                    server=server.uuid, error=str(e))
    finally:
        if fd is not None:
            os.close(fd)
        if body is not None:
            body.abandon()
            body.stop()
        elif response is not None:
            deliver(response, node.clock).stop()
    await _finish(services, server, backup_uuid, adapter, successful)


def _progress(server: Server, name: str) -> None:
    if not server.occupancy.deleted:
        server.events.publish("daemon message", "(restoring): {}".format(name))


async def _finish(services: BackupServices, server: Server, backup_uuid: str, adapter: str,
                  successful: bool) -> None:
    """
    §8.4 steps 6–9.
    """
    try:
        await services.node.panel.report_restore(backup_uuid, successful)
    except (PanelError, CancelledError) as e:
        log.error("Reporting the restore of {backup} failed: {error}", backup=backup_uuid,
                  error=str(e))
    if not server.occupancy.deleted:
        server.events.publish("daemon message", report.restore_message(adapter, successful))
        server.events.publish(report.RESTORE_COMPLETED, "")
    server.occupancy.finished()


