"""
The refusals of the backup routes, as domain exceptions (the web layer turns each into its
status and JSON envelope: ``web.backups``).  Messages are the texts of backups.md §3, §4.1,
§8.1–§8.3, §9.1.
"""

from __future__ import annotations

__all__ = ["BACKUP_NOT_FOUND", "BackupConflict", "BackupError", "BackupInvalid",
           "BackupNotFound", "INVALID_UUID"]

INVALID_UUID = "The backup identifier must be a valid UUID."
BACKUP_NOT_FOUND = "The requested backup was not found on this server."
ALREADY_GENERATING = "A backup with this identifier is already being generated."
BACKUP_WHILE_RESTORING = "A backup cannot be created while the server is being restored."
RESTORE_RUNNING = "A backup restore is already in progress for this server."
RESTORE_WHILE_TRANSFERRING = "A backup cannot be restored while the server is being transferred."
RESTORE_WHILE_INSTALLING = "A backup cannot be restored while the server is being installed."
DOWNLOAD_URL_REQUIRED = ("The download_url field is required when the backup adapter is set "
                         "to S3.")


class BackupError(Exception):
    """
    A refusal; ``status`` is the HTTP status of its answer.
    """

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BackupInvalid(BackupError):
    """
    400: the request cannot be used.
    """

    status = 400


class BackupNotFound(BackupError):
    """
    404: no such backup for this server.
    """

    status = 404

    def __init__(self, message: str = BACKUP_NOT_FOUND) -> None:
        super().__init__(message)


class BackupConflict(BackupError):
    """
    409: the server's state refuses it (backups.md §10).
    """

    status = 409
