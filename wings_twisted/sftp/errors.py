"""
The SFTP status of every error a file operation can end with (``sftp.md`` §6.2, §9.2).

=====================================================  =============================================
error                                                  status
=====================================================  =============================================
``fs.NotFound`` (missing, escaping, final symlink)      ``NO_SUCH_FILE``
``fs.Denied`` (egg denylist)                            ``PERMISSION_DENIED``
``WriteGuarded`` (restore, incoming transfer)           ``PERMISSION_DENIED`` with the guard's text
``fs.QuotaExceeded``, ``ENOSPC``, ``EDQUOT``            15 "Quota Exceeded" (as upstream)
``EOFError``                                            ``EOF``
``NotImplementedError``                                 ``OP_UNSUPPORTED``
``EACCES``, ``EPERM``                                   ``PERMISSION_DENIED``
anything else from ``fs`` or the system                 ``FAILURE``
=====================================================  =============================================

``FAILURE`` covers directories where a file was expected, special files, existing targets, names
too long, moves into oneself and descriptor exhaustion — SFTP v3 has no finer codes that OpenSSH
clients show.  Only an error that is none of these (a bug) is logged with its traceback, by the
protocol.
"""

from __future__ import annotations

import errno

from twisted.conch.ssh import filetransfer as fx

from ..fs import Denied, FsError, NotFound, QuotaExceeded
from ..servers.occupancy import WriteGuarded

__all__ = ["QUOTA_EXCEEDED", "denied", "failure", "sftp_error", "unsupported"]

#: ``SSH_FX_QUOTA_EXCEEDED`` of the later drafts.
QUOTA_EXCEEDED = 15


def denied(message: str = "permission denied") -> fx.SFTPError:
    """
    ``PERMISSION_DENIED``.
    """
    return fx.SFTPError(fx.FX_PERMISSION_DENIED, message)


def unsupported(message: str = "operation unsupported") -> fx.SFTPError:
    """
    ``OP_UNSUPPORTED`` (read-only mode, unsupported requests).
    """
    return fx.SFTPError(fx.FX_OP_UNSUPPORTED, message)


def failure(message: str = "failure") -> fx.SFTPError:
    """
    ``FAILURE``.
    """
    return fx.SFTPError(fx.FX_FAILURE, message)


def sftp_error(error: BaseException) -> BaseException:
    """
    The status error for ``error`` (the module docstring's table); errors without a status
    mapping are returned unchanged (the protocol logs them).
    """
    if isinstance(error, (fx.SFTPError, EOFError, NotImplementedError)):
        return error
    if isinstance(error, WriteGuarded):
        return denied(str(error))
    if isinstance(error, NotFound):
        return fx.SFTPError(fx.FX_NO_SUCH_FILE, "no such file")
    if isinstance(error, Denied):
        return denied("This file cannot be modified: present in egg denylist.")
    if isinstance(error, QuotaExceeded):
        return fx.SFTPError(QUOTA_EXCEEDED, "Quota Exceeded")
    if isinstance(error, FsError):
        return failure(type(error).__name__)
    if isinstance(error, OSError):
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return fx.SFTPError(QUOTA_EXCEEDED, "Quota Exceeded")
        if error.errno in (errno.EACCES, errno.EPERM):
            return denied()
        if error.errno == errno.ENOENT:
            return fx.SFTPError(fx.FX_NO_SUCH_FILE, "no such file")
        return failure(error.strerror or "failure")
    if isinstance(error, ValueError):
        # A closed handle, a negative offset.
        return failure(str(error) or "failure")
    return error
