"""
The SFTP host key (``sftp.md`` §2): ``<system.data>/.sftp/id_ed25519``.

Upstream Wings writes an unencrypted Ed25519 key as PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``).
An existing file is reused byte for byte — users' ``known_hosts`` entries depend on it, and a node
migrated from upstream keeps its key; a missing one is generated in that same format (file ``0600``,
directory ``0755``).  Conch's own parser does not read PKCS#8 Ed25519 blocks, so the file is loaded
with ``cryptography`` and wrapped in a Conch ``Key``.

Blocking (file I/O): the composition root calls `load_or_create` in a worker thread.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh.keys import Key

__all__ = ["HostKeyError", "host_key_path", "load_or_create"]


class HostKeyError(Exception):
    """
    The host key file exists but cannot be used, or cannot be written.
    """


def host_key_path(data: str) -> str:
    """
    Where the host key lives for ``system.data`` = ``data``.
    """
    return os.path.join(data, ".sftp", "id_ed25519")


def _generate(path: str) -> None:
    """
    Write a new Ed25519 key as unencrypted PKCS#8 PEM, mode 0600, never over an existing file.
    """
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    # O_EXCL: two daemons starting at once must not overwrite each other's key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create(data: str) -> tuple[Key, bool]:
    """
    The host key of ``system.data`` = ``data``, generated first when the file is missing.

    :return: the private key and whether it was generated now.
    :raises HostKeyError: the file cannot be read, parsed or written, or is not an Ed25519 key.
    """
    path = host_key_path(data)
    created = False
    try:
        if not os.path.lexists(path):
            try:
                _generate(path)
                created = True
            except FileExistsError:
                pass
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise HostKeyError("{}: {}".format(path, e.strerror or e)) from None
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise HostKeyError("{}: not an unencrypted PEM private key ({})".format(path, e)) from None
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise HostKeyError("{}: not an Ed25519 key".format(path))
    return Key(private), created
