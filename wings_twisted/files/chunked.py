"""
Chunked upload sessions (api.md §8.11–§8.14, fork): a large file sent as
numbered chunks in any order, assembled into the volume at ``finalize``.

Each session lives in memory (``ChunkedUploads``) and keeps its chunks as
files outside every volume, in ``<system.tmp_directory>/uploads/<id>/``
(``<index>.part``, written through a temporary name and renamed, so a chunk
is either whole or absent).  Sessions belong to one server; one not
finalized within ``ChunkedUpload.chunk_expiration_hours`` of its creation is
deleted with its chunks, and the first session of a run removes whatever an
earlier run left there (sessions do not survive a restart).

``finalize`` writes the chunks in order through the volume's atomic write
(temporary file beside the destination, renamed into place; parents created;
denylist and quota checked again, since the volume may have changed since
``init``) while computing the SHA-256 of the content.

Blocking methods (``store_chunk``, ``assemble``, ``discard``) run in worker
threads; the bookkeeping runs on the reactor thread.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import IO

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from ..fs import Volume
from ..node import Node

log = Logger()

MIB = 1024 * 1024
COPY_CHUNK = 1024 * 1024


class UnknownUpload(Exception):
    """
    No such session (never created, finalized, aborted or expired): 404.
    """


class ForeignUpload(Exception):
    """
    The session belongs to another server: 403.
    """


class TooManyUploads(Exception):
    """
    The server has ``max_concurrent_uploads`` sessions already: 409.
    """


@dataclass
class Session:
    """
    One chunked upload.
    """

    upload_id: str
    server: str
    path: str
    file_size: int
    chunk_size: int
    directory: str
    total_chunks: int
    received: dict[int, int] = field(default_factory=dict)
    expiry: IDelayedCall | None = None

    def chunk_length(self, index: int) -> int:
        """
        The exact size chunk ``index`` must have.
        """
        if index == self.total_chunks - 1:
            return self.file_size - (self.total_chunks - 1) * self.chunk_size
        return self.chunk_size

    @property
    def bytes_received(self) -> int:
        """
        The total size of the distinct chunks stored.
        """
        return sum(self.received.values())


class ChunkedUploads:
    """
    The node's chunked upload sessions.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._sessions: dict[str, Session] = {}
        self._swept = False

    @property
    def directory(self) -> str:
        """
        Where sessions keep their chunks.
        """
        return os.path.join(self._node.config.system.tmp_directory, "uploads")

    def count(self, server: str) -> int:
        """
        Active sessions of ``server``.
        """
        return sum(1 for s in self._sessions.values() if s.server == server)

    def create(self, server: str, path: str, file_size: int, chunk_size: int) -> Session:
        """
        Start a session (the caller validated sizes, path and quota).

        :raises TooManyUploads: the server is at its limit.
        """
        config = self._node.config.chunked_upload
        if self.count(server) >= config.max_concurrent_uploads:
            raise TooManyUploads()
        if not self._swept:
            # Sessions live in memory: whatever a previous run left is garbage.
            shutil.rmtree(self.directory, ignore_errors=True)
            self._swept = True
        upload_id = str(uuid.uuid4())
        session = Session(upload_id, server, path, file_size, chunk_size,
                          os.path.join(self.directory, upload_id),
                          math.ceil(file_size / chunk_size))
        os.makedirs(session.directory, 0o700)
        session.expiry = self._node.clock.callLater(
            config.chunk_expiration_hours * 3600.0, self._expire, upload_id)
        self._sessions[upload_id] = session
        return session

    def get(self, upload_id: str, server: str) -> Session:
        """
        The session ``upload_id`` of ``server``.

        :raises UnknownUpload: no such session.
        :raises ForeignUpload: it belongs to another server.
        """
        session = self._sessions.get(upload_id)
        if session is None:
            raise UnknownUpload(upload_id)
        if session.server != server:
            raise ForeignUpload(upload_id)
        return session

    def forget(self, session: Session) -> None:
        """
        End a session (finalized or aborted); its directory is the caller's
        to remove (``discard``, in a worker thread).
        """
        self._sessions.pop(session.upload_id, None)
        if session.expiry is not None and session.expiry.active():
            session.expiry.cancel()

    def _expire(self, upload_id: str) -> None:
        session = self._sessions.pop(upload_id, None)
        if session is None:
            return
        log.info("Chunked upload {id} of {server} expired", id=upload_id, server=session.server)
        d = self._node.run_blocking(discard, session)
        d.addErrback(lambda f: log.failure("Removing expired upload {id} failed", f, id=upload_id))

    def forget_server(self, server: str) -> list[Session]:
        """
        End every session of a deleted server; the caller discards them.
        """
        gone = [s for s in self._sessions.values() if s.server == server]
        for session in gone:
            self.forget(session)
        return gone


def store_chunk(session: Session, index: int, body: IO[bytes], length: int) -> None:
    """
    Copy ``length`` bytes of ``body`` into chunk ``index`` (blocking),
    replacing an earlier copy of the same chunk.

    :raises ValueError: the body is shorter than ``length``.
    """
    final = os.path.join(session.directory, "{}.part".format(index))
    temp = final + ".tmp"
    body.seek(0)
    with open(temp, "wb") as out:
        remaining = length
        while remaining:
            data = body.read(min(COPY_CHUNK, remaining))
            if not data:
                raise ValueError("chunk body ended early")
            out.write(data)
            remaining -= len(data)
    os.replace(temp, final)


def assemble(session: Session, volume: Volume) -> str:
    """
    Write the chunks in order to the session's path through an atomic
    write (blocking); return the SHA-256 of the content in hex.
    """
    clean = session.path.strip("/")
    directory, _, name = clean.rpartition("/")
    digest = hashlib.sha256()
    with volume.begin_write(directory, name) as writer:
        for index in range(session.total_chunks):
            with open(os.path.join(session.directory, "{}.part".format(index)), "rb") as chunk:
                while True:
                    data = chunk.read(COPY_CHUNK)
                    if not data:
                        break
                    digest.update(data)
                    writer.write(data)
        writer.commit()
    return digest.hexdigest()


def discard(session: Session) -> None:
    """
    Remove a session's chunks (blocking).
    """
    shutil.rmtree(session.directory, ignore_errors=True)
