"""
Backups (backups.md): creating them (local and S3 through the Panel's presigned URLs),
restoring them, deleting them.  A feature package: it uses the domain (``servers``, ``fs``,
``archive``), the panel client and the remote-pull guard of ``files``, never the web layer
(``web.backups`` holds the routes).

* `services`: `BackupServices` (the node's generations, index, slots, worker pool; create and
  delete) and the job of one backup;
* `restore`: the restore route's checks and its job;
* `storage`: archive paths and lookup, the staging file, ignore rules, truncation;
* `index`: the ownership index (backup → server) in the state database;
* `s3`: presigned part uploads (`PartProducer`, retries);
* `download`: the restore's S3 download (SSRF guard, redirects, content type) and `BodyQueue`;
* `limiter`: the token bucket of ``system.backups.write_limit``;
* `slots`: ``system.backups.max_concurrent``;
* `report`: the Panel report bodies and websocket events;
* `errors`: the refusals the routes turn into statuses.
"""

from __future__ import annotations

from .errors import BackupConflict, BackupError, BackupInvalid, BackupNotFound
from .services import ADAPTERS, BackupServices, Generation

__all__ = ["ADAPTERS", "BackupConflict", "BackupError", "BackupInvalid", "BackupNotFound",
           "BackupServices", "Generation"]
