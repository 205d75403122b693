"""
The behaviour of every ``/api/remote`` route of the development Panel
(panel.md §3, §5, §6 and §9.3), as pure functions of a ``Call``.

Each handler takes the parsed request and the state and returns a ``Reply``;
nothing here knows about twisted.web, so the order of checks can be read
next to the Panel's controllers: form-request validation (422) first, then
record lookup (404), then ownership (403) and state conflicts (400/409).
The SFTP route lives in ``sftp.py``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Union

from .replies import Reply, Validator, error_reply, json_reply, no_content, not_found, server_error
from .state import BackupFixture, DevPanelState


@dataclass
class Call:
    """
    One authenticated request, parsed: route parameters, query (name → all
    values), JSON body (``None`` when empty, ``null`` or invalid), the
    caller's IP and the clock reading.
    """

    state: DevPanelState
    method: str
    params: dict[str, str]
    query: dict[str, list[str]]
    body: Any
    client_ip: str
    now: float
    #: The name of the node whose credentials the request carried.
    node: str = ""

    def arg(self, name: str) -> str | None:
        """
        The first value of query parameter ``name``.
        """
        values = self.query.get(name)
        return values[0] if values else None


if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

#: A route's behaviour: the reply, or a Deferred of it (routes that call a daemon first).
Handler = Callable[[Call], Union[Reply, "Deferred[Reply]"]]

_PHP_INT = re.compile(r"^\s*([+-]?\d+)")
_FILTER_INT = re.compile(r"^\s*[+-]?(0|[1-9]\d*)\s*$")
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(Z|[+-]\d{2}:\d{2})$")


def php_int(text: str | None) -> int:
    """
    PHP's ``(int)`` cast of a query string value: leading digits, else 0.
    """
    match = _PHP_INT.match(text or "")
    return int(match.group(1)) if match else 0


# -- servers ------------------------------------------------------------------


def list_servers(call: Call) -> Reply:
    """
    ``GET /servers``: a Laravel paginated collection (panel.md §3.1).

    Only the servers of the calling node are listed.  ``page`` that is not
    an integer ≥ 1 means 1.  ``per_page`` is cast like
    PHP's ``(int)`` (default 50); a value below 1 falls back to Eloquent's
    default page size, 15.
    """
    raw_page = call.arg("page")
    page = int(raw_page) if raw_page is not None and _FILTER_INT.match(raw_page) else 1
    page = max(page, 1)
    per_page = 50 if call.arg("per_page") is None else php_int(call.arg("per_page"))
    if per_page < 1:
        per_page = 15
    servers = [s for s in call.state.servers.values() if call.state.node_of(s) == call.node
               or not call.node]
    total = len(servers)
    last_page = max(math.ceil(total / per_page), 1)
    chunk = servers[(page - 1) * per_page : page * per_page]
    path = call.state.node.url + "/api/remote/servers"

    def url(n: int) -> str:
        return "{}?page={}".format(path, n)

    prev_url = url(page - 1) if page > 1 else None
    next_url = url(page + 1) if page < last_page else None
    links = [{"url": prev_url, "label": "&laquo; Previous", "active": False}]
    links += [{"url": url(n), "label": str(n), "active": n == page} for n in range(1, last_page + 1)]
    links.append({"url": next_url, "label": "Next &raquo;", "active": False})
    first_item = (page - 1) * per_page + 1 if chunk else None
    return json_reply(
        200,
        {
            "data": [dict(uuid=s.uuid, **s.configuration()) for s in chunk],
            "links": {"first": url(1), "last": url(last_page), "prev": prev_url, "next": next_url},
            "meta": {
                "current_page": page,
                "from": first_item,
                "last_page": last_page,
                "links": links,
                "path": path,
                "per_page": per_page,
                "to": None if first_item is None else first_item + len(chunk) - 1,
                "total": total,
            },
        },
    )


def reset_servers(call: Call) -> Reply:
    """
    ``POST /servers/reset``: clear ``installing``/``restoring_backup``
    (panel.md §3.2); a restore in progress is logged as failed.
    """
    state = call.state
    state.reset_count += 1
    for server in state.servers.values():
        if server.status == "restoring_backup":
            state.panel_events.append({"event": "server:backup.restore-failed", "server": server.uuid})
        if server.status in ("installing", "restoring_backup"):
            server.status = None
    return no_content()


def get_server(call: Call) -> Reply:
    """
    ``GET /servers/{uuid}``: the configuration (panel.md §3.3).
    """
    server = call.state.servers.get(call.params["uuid"])
    if server is None:
        return not_found()
    return json_reply(200, server.configuration())


def get_install(call: Call) -> Reply:
    """
    ``GET /servers/{uuid}/install``: the install script (panel.md §3.4).
    """
    server = call.state.servers.get(call.params["uuid"])
    if server is None:
        return not_found()
    return json_reply(200, dict(server.install_script))


def post_install(call: Call) -> Reply:
    """
    ``POST /servers/{uuid}/install``: store the install result (panel.md §3.5).
    """
    v = Validator(call.body)
    successful = v.check("successful", present=True, kind="boolean")
    reinstall = v.check("reinstall", kind="boolean")
    if (reply := v.reply()) is not None:
        return reply
    server = call.state.servers.get(call.params["uuid"])
    if server is None:
        return not_found()
    status = None if successful else ("reinstall_failed" if reinstall else "install_failed")
    if server.status == "suspended":
        status = "suspended"
    server.status = status
    server.installed_at = call.now
    call.state.install_reports.append({"server": server.uuid, "successful": successful, "reinstall": bool(reinstall)})
    return no_content()


# -- backups ------------------------------------------------------------------


def _backup(call: Call) -> BackupFixture | None:
    state = call.state
    uuid = call.params["uuid"]
    backup = state.backups.get(uuid)
    if backup is None and state.auto_create_backups:
        backup = state.add_backup(uuid)
    return backup


def _owned_backup(call: Call) -> BackupFixture | Reply:
    """
    The backup a node asks about, or the Panel's answer when it may not:
    404 unknown, 403 when it belongs to a server of another node.
    """
    backup = _backup(call)
    if backup is None:
        return not_found()
    if backup.server_uuid is not None and backup.server_uuid not in call.state.servers:
        return error_reply(403, "You do not have permission to access that backup.",
                           code="HttpForbiddenException")
    return backup


def backup_part_urls(call: Call) -> Reply:
    """
    ``GET /backups/{uuid}?size=``: start a multipart upload and hand out
    ``ceil(size / part_size)`` part URLs (panel.md §5.2).
    """
    state = call.state
    size = php_int(call.arg("size"))
    if not size:
        return error_reply(400, 'A non-empty "size" query parameter must be provided.')
    backup = _owned_backup(call)
    if not isinstance(backup, BackupFixture):
        return backup
    if backup.completed:
        return error_reply(409, "This backup is already in a completed state.")
    if state.backup_disk != "s3":
        return error_reply(400, "The configured backup adapter is not an S3 compatible adapter.")
    count = max(math.ceil(size / state.part_size), 0)
    if state.object_store is not None:
        store_key = state.object_key(backup.uuid)
        backup.upload_id = state.object_store.start_upload(store_key)
        urls = state.object_store.part_urls(store_key, backup.upload_id, count)
        return json_reply(200, {"parts": urls, "part_size": state.part_size})
    backup.upload_id = "devpanel-upload-{}".format(next(state.upload_ids))
    key = state.backup_object_key(backup.uuid)
    state.s3.parts[(key, backup.upload_id)] = {}
    parts = [
        "{}/{}?partNumber={}&uploadId={}&X-Amz-Expires=3600&X-Amz-Signature=devpanel".format(
            state.s3_base(), key, n, backup.upload_id
        )
        for n in range(1, count + 1)
    ]
    return json_reply(200, {"parts": parts, "part_size": state.part_size})


def backup_report(call: Call) -> Reply:
    """
    ``POST /backups/{uuid}``: the backup result (panel.md §5.4).  For the S3
    disk the multipart upload held by the S3 double is completed from the
    reported parts (all stored parts when ``parts`` is null) or aborted.
    """
    state = call.state
    v = Validator(call.body)
    successful = v.check("successful", present=True, kind="boolean")
    v.check("checksum", required=successful is True, nullable=True, kind="string")
    v.check("checksum_type", required=successful is True, nullable=True, kind="string")
    v.check("size", required=successful is True, nullable=True, kind="numeric")
    parts = v.check("parts", nullable=True, kind="array")
    for i, _ in enumerate(parts if isinstance(parts, list) else []):
        v.check("parts.{}.etag".format(i), required=True, kind="string")
        v.check("parts.{}.part_number".format(i), required=True, kind="numeric")
    if (reply := v.reply()) is not None:
        return reply
    backup = _owned_backup(call)
    if not isinstance(backup, BackupFixture):
        return backup
    if backup.successful:
        return error_reply(400, "Cannot update the status of a backup that is already marked as completed.")
    body = call.body
    backup.completed = True
    backup.completed_at = call.now
    backup.successful = bool(successful)
    backup.locked = backup.locked if successful else False
    backup.checksum = "{}:{}".format(body["checksum_type"], body["checksum"]) if successful else None
    backup.size = int(float(body["size"])) if successful else 0
    backup.parts = list(parts) if isinstance(parts, list) else None
    state.backup_reports.append(
        {
            "backup": backup.uuid,
            "successful": backup.successful,
            "checksum": body.get("checksum"),
            "checksum_type": body.get("checksum_type"),
            "size": body.get("size"),
            "parts": backup.parts,
        }
    )
    event = "server:backup.complete" if successful else "server:backup.fail"
    state.panel_events.append({"event": event, "server": backup.server_uuid, "backup": backup.uuid})
    if state.backup_disk == "s3" and backup.upload_id is not None and state.object_store:
        # The Panel completes (or aborts) the multipart upload it started.
        store_key = state.object_key(backup.uuid)
        if successful:
            state.object_store.complete(store_key, backup.upload_id, backup.parts)
        else:
            state.object_store.abort(store_key, backup.upload_id)
    elif state.backup_disk == "s3" and backup.upload_id is not None:
        key = state.backup_object_key(backup.uuid)
        stored = state.s3.parts.pop((key, backup.upload_id), {})
        if successful:
            numbers = [int(float(p["part_number"])) for p in backup.parts] if backup.parts else sorted(stored)
            state.s3.objects[key] = b"".join(stored.get(n, b"") for n in numbers)
    return no_content()


def restore_report(call: Call) -> Reply:
    """
    ``POST /backups/{uuid}/restore``: the restore result (panel.md §5.5).
    """
    state = call.state
    v = Validator(call.body)
    successful = v.check("successful", present=True, kind="boolean")
    if (reply := v.reply()) is not None:
        return reply
    backup = _backup(call)
    if backup is None:
        return not_found()
    server = state.servers.get(backup.server_uuid or "")
    if server is not None:
        server.status = None
    # "server.backup.restore-failed" (with a dot) is the Panel's own spelling.
    event = "server:backup.restore-complete" if successful else "server.backup.restore-failed"
    state.panel_events.append({"event": event, "server": backup.server_uuid, "backup": backup.uuid})
    state.restore_reports.append({"backup": backup.uuid, "successful": successful})
    return no_content()


# -- activity -----------------------------------------------------------------


def _parse_timestamp(text: str) -> float | None:
    """
    Carbon's RFC 3339 parse after the Panel strips ``.fraction`` before a
    trailing ``Z``; ``None`` when it would throw.
    """
    text = re.sub(r"(\.\d+)Z$", "Z", text)
    if _RFC3339.match(text) is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def post_activity(call: Call) -> Reply:
    """
    ``POST /activity`` (panel.md §6.3): validate, keep items for this node's
    servers whose event starts with ``server:``, answer 200 with no body.

    Each stored record: ``user`` (as sent), ``actor`` (the UUID when it names
    a known user), ``server``, ``event``, ``metadata``, ``ip`` (empty →
    ``127.0.0.1``), ``timestamp`` (as sent) and ``when`` (epoch seconds; the
    clock reading when unparsable, with ``metadata.original_timestamp`` set).
    """
    state = call.state
    v = Validator(call.body)
    data = v.check("data", required=True, kind="array")
    items = list(data.values()) if isinstance(data, dict) else list(data or [])
    for i, item in enumerate(items):
        prefix = "data.{}".format(i)
        if not isinstance(item, dict):
            v.fail(prefix, "array", "The {attribute} must be an array.")
            continue
        v.check(prefix + ".user", nullable=True, kind="uuid")
        v.check(prefix + ".server", required=True, kind="uuid")
        v.check(prefix + ".event", required=True, kind="string")
        v.check(prefix + ".metadata", present=True, nullable=True, kind="array")
        v.check(prefix + ".ip", nullable=True, kind="ip")
        v.check(prefix + ".timestamp", required=True, kind="string")
    if (reply := v.reply()) is not None:
        return reply
    if any("user" not in item for item in items):
        # The controller reads $datum['user'] unconditionally: a PHP warning,
        # hence a 500 for the whole request (panel.md §6.3).
        return server_error()
    known_users = {u.uuid for u in state.users.values()}
    for item in items:
        if item["server"] not in state.servers or not item["event"].startswith("server:"):
            continue
        metadata = item.get("metadata")
        metadata = dict(metadata) if isinstance(metadata, dict) else ({} if metadata is None else metadata)
        when = _parse_timestamp(item["timestamp"])
        if when is None:
            when = call.now
            if isinstance(metadata, dict):
                metadata["original_timestamp"] = item["timestamp"]
        state.activity.append(
            {
                "user": item["user"],
                "actor": item["user"] if item["user"] in known_users else None,
                "server": item["server"],
                "event": item["event"],
                "metadata": metadata,
                "ip": item.get("ip") or "127.0.0.1",
                "timestamp": item["timestamp"],
                "when": when,
            }
        )
    return Reply(200)
