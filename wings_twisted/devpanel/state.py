"""
The development Panel's fixtures and memory (panel.md §9.2).

``DevPanelState`` holds what a real Panel keeps in its database for one node
(servers with their configuration, users with their SFTP credentials and
per-server permissions, backups) and records everything the daemon sends it
(the request log, activity, install/transfer/backup reports).  It is loaded
from a YAML file (``conf/devpanel.yml``) or built in code::

    state = DevPanelState.from_dict({"node": {"token_id": "…", "token": "…"}})
    state.add_server("8f2a0c1e-…", name="Example", done="Server is ready")

No Twisted imports: the resource (``resource.py``) drives this state with the
reactor's clock.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .application import ApplicationSettings
from .faults import FaultQueue, normalise_path
from .objectstore import ObjectStore, ObjectStoreSettings
from .nodes import (DEFAULT_DAEMON_URL, DEFAULT_NODE_NAME, DEFAULT_PANEL_URL, NodeCredentials,
                    other_node)
from .servers import ServerFixture, StateError, build_server

DEFAULT_PART_SIZE = 5 * 1024**3
ADMIN_PERMISSIONS = ["*", "admin.websocket.errors", "admin.websocket.install", "admin.websocket.transfer"]


@dataclass
class PanelUser:
    """
    A Panel account: SFTP credentials and per-server permission lists.

    ``permissions`` maps a server UUID to the stored list; ``["*"]`` stands for
    the owner.  A root administrator gets ``ADMIN_PERMISSIONS`` everywhere.
    """

    uuid: str
    id: int
    username: str
    password: str = ""
    public_keys: list[str] = field(default_factory=list)
    root_admin: bool = False
    permissions: dict[str, list[str]] = field(default_factory=dict)

    def permissions_for(self, server_uuid: str) -> list[str] | None:
        """
        The list the Panel's ``GetUserPermissionsService`` would return, or
        ``None`` when the user has no access to the server at all.
        """
        if self.root_admin:
            return list(ADMIN_PERMISSIONS)
        stored = self.permissions.get(server_uuid)
        return None if stored is None else list(stored)


@dataclass
class BackupFixture:
    """
    A backup row: whose it is, whether it completed, and what was reported.
    """

    uuid: str
    server_uuid: str | None
    completed: bool = False
    successful: bool = False
    upload_id: str | None = None
    checksum: str | None = None
    size: int = 0
    parts: list[dict[str, Any]] | None = None
    locked: bool = False
    name: str = ""
    ignored_files: list[str] = field(default_factory=list)
    completed_at: float | None = None


@dataclass
class ReceivedRequest:
    """
    One request as the Panel received it.

    ``path`` is below ``/api/remote`` (see ``faults.normalise_path``),
    ``route`` the matched template (``/servers/{uuid}``) or ``None``,
    ``query`` maps names to all their values, ``headers`` maps lower-cased
    names to the last value, ``body`` is the parsed JSON (``None`` for empty,
    ``null`` or invalid JSON; ``raw_body`` has the bytes), ``status`` the
    answer sent (``None`` for a dropped connection) and ``fault`` the label
    of the scripted fault that was consumed, if any.
    """

    method: str
    path: str
    route: str | None
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    timestamp: float
    client_ip: str
    status: int | None = None
    fault: str | None = None


@dataclass
class S3Store:
    """
    Objects and multipart parts held by the S3 double (panel.md §9.6).

    Keys are ``<bucket>/<object key>``; ``parts`` maps (key, upload id) to
    part number → body.
    """

    objects: dict[str, bytes] = field(default_factory=dict)
    parts: dict[tuple[str, str], dict[int, bytes]] = field(default_factory=dict)
    content_type: str = "application/x-gzip"


def _entries(value: Any, key: str, section: str) -> list[dict[str, Any]]:
    """
    Accept a section written as a list of mappings or as a mapping keyed by
    ``key``; return a list of mappings that all carry ``key``.
    """
    if value is None:
        return []
    if isinstance(value, Mapping):
        out = []
        for name, spec in value.items():
            spec = dict(spec or {})
            spec.setdefault(key, name)
            out.append(spec)
        return out
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        return [dict(v) for v in value]
    raise StateError("{}: expected a list or a mapping".format(section))


class DevPanelState:
    """
    Everything the development Panel knows and everything it was told.

    Fixtures: ``node`` (``NodeCredentials``), ``nodes`` (further nodes by
    name, for transfers), ``servers`` (uuid →
    ``ServerFixture``, ordered), ``users`` (username → ``PanelUser``),
    ``backups`` (uuid → ``BackupFixture``).  Settings: ``backup_disk``
    (``s3`` or ``wings``), ``part_size``, ``s3_base_url`` (``None`` = the S3
    double at ``<panel url>/s3``), ``bucket``, ``auto_create_backups``,
    ``sftp_throttle_attempts``/``sftp_throttle_window``,
    ``force_sftp_throttle``, ``application`` (the application API the
    ``wings configure`` command calls, ``application.py``).  Records: ``received``, ``activity``,
    ``panel_events`` (activity the Panel logs itself), ``install_reports``,
    ``transfer_reports``, ``backup_reports``, ``restore_reports``,
    ``reset_count``, ``sftp_throttle`` (key → failures, window end).
    ``faults`` is the fault queue (``faults.py``), ``s3`` the S3 double's
    store, ``upload_ids`` the counter behind multipart upload ids.
    """

    def __init__(self, node: NodeCredentials) -> None:
        self.node = node
        #: The other nodes by name (transfers between nodes: ``transfers.py``).
        self.nodes: dict[str, NodeCredentials] = {}
        #: ``server_transfers`` rows by server UUID (``transfers.TransferRecord``).
        self.transfers: dict[str, Any] = {}
        #: The Panel's client of its daemons (``transfers.DaemonCalls``), set by the resource.
        self.daemon_calls: Any = None
        self.servers: dict[str, ServerFixture] = {}
        self.users: dict[str, PanelUser] = {}
        self.backups: dict[str, BackupFixture] = {}
        self.backup_disk = "s3"
        self.part_size = DEFAULT_PART_SIZE
        self.s3_base_url: str | None = None
        self.bucket = "devpanel"
        self.auto_create_backups = False
        self.sftp_throttle_attempts = 5
        self.sftp_throttle_window = 60.0
        self.force_sftp_throttle = False
        self.application = ApplicationSettings()
        self.sftp_throttle: dict[str, tuple[int, float]] = {}
        self.received: list[ReceivedRequest] = []
        self.activity: list[dict[str, Any]] = []
        self.panel_events: list[dict[str, Any]] = []
        self.install_reports: list[dict[str, Any]] = []
        self.transfer_reports: list[dict[str, Any]] = []
        self.backup_reports: list[dict[str, Any]] = []
        self.restore_reports: list[dict[str, Any]] = []
        self.reset_count = 0
        self.faults = FaultQueue()
        self.s3 = S3Store()
        self.upload_ids = itertools.count(1)
        #: A real S3-compatible bucket (``backup_storage.s3``); ``None``: the S3 double.
        self.object_store: ObjectStore | None = None

    # -- construction -------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DevPanelState:
        """
        Build the state from the structure of ``conf/devpanel.yml``; raises
        ``StateError`` with a readable message on bad input.
        """
        if not isinstance(data, Mapping):
            raise StateError("the fixture file must contain a mapping")
        node = data.get("node")
        if not isinstance(node, Mapping):
            raise StateError("node: section missing")
        for key in ("token_id", "token"):
            if not isinstance(node.get(key), str) or not node.get(key):
                raise StateError("node.{}: a non-empty string is required".format(key))
            if "." in node[key]:
                raise StateError("node.{}: must not contain '.' (the bearer value is <token_id>.<token>)".format(key))
        state = cls(
            NodeCredentials(
                token_id=node["token_id"],
                token=node["token"],
                daemon_url=str(node.get("daemon_url", DEFAULT_DAEMON_URL)).rstrip("/"),
                url=str(node.get("url", DEFAULT_PANEL_URL)).rstrip("/"),
                name=str(node.get("name", DEFAULT_NODE_NAME)),
            )
        )
        for spec in _entries(data.get("nodes"), "name", "nodes"):
            state.add_node(**spec)
        storage = data.get("backup_storage") or {}
        if not isinstance(storage, Mapping):
            raise StateError("backup_storage: expected a mapping")
        state.backup_disk = str(storage.get("disk", state.backup_disk))
        state.part_size = int(storage.get("part_size", state.part_size))
        state.s3_base_url = storage.get("s3_base_url", state.s3_base_url)
        state.bucket = str(storage.get("bucket", state.bucket))
        state.auto_create_backups = bool(storage.get("auto_create", state.auto_create_backups))
        state.s3.content_type = str(storage.get("content_type", state.s3.content_type))
        if storage.get("s3") is not None:
            if not isinstance(storage["s3"], Mapping):
                raise StateError("backup_storage.s3: expected a mapping")
            try:
                state.object_store = ObjectStore(ObjectStoreSettings.from_dict(storage["s3"]))
            except (ValueError, TypeError, RuntimeError) as e:
                raise StateError(str(e)) from None
        sftp = data.get("sftp") or {}
        state.sftp_throttle_attempts = int(sftp.get("throttle_attempts", state.sftp_throttle_attempts))
        state.sftp_throttle_window = float(sftp.get("throttle_window", state.sftp_throttle_window))
        try:
            state.application = ApplicationSettings.from_dict(data.get("application"))
        except (ValueError, TypeError, KeyError) as e:
            raise StateError(str(e)) from None
        for spec in _entries(data.get("servers"), "uuid", "servers"):
            uuid = spec.pop("uuid")
            state.add_server(str(uuid), **spec)
        for spec in _entries(data.get("users"), "username", "users"):
            try:
                state.add_user(**spec)
            except TypeError as e:
                raise StateError("users: {}".format(e)) from None
        for spec in _entries(data.get("backups"), "uuid", "backups"):
            try:
                state.add_backup(**spec)
            except TypeError as e:
                raise StateError("backups: {}".format(e)) from None
        return state

    @classmethod
    def from_yaml(cls, path: str) -> DevPanelState:
        """
        Load ``path`` (YAML); raises ``StateError`` for unreadable or invalid
        files.
        """
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except OSError as e:
            raise StateError("cannot read {}: {}".format(path, e.strerror or e)) from None
        except yaml.YAMLError as e:
            raise StateError("{}: invalid YAML: {}".format(path, e)) from None
        return cls.from_dict(data or {})

    # -- fixtures -----------------------------------------------------------

    def add_server(self, uuid: str, **overrides: Any) -> ServerFixture:
        """
        Add (or replace) a server built by ``build_server(uuid, **overrides)``.
        """
        server = build_server(uuid, **overrides)
        self.servers[uuid] = server
        return server

    def add_node(self, name: str, token_id: str, token: str, daemon_url: str,
                 url: str | None = None) -> NodeCredentials:
        """
        Add (or replace) another node (``nodes.other_node``).
        """
        node = other_node(self.node, name, token_id, token, daemon_url)
        self.nodes[node.name] = node
        return node

    def all_nodes(self) -> list[NodeCredentials]:
        """
        Every node, the first one first.
        """
        return [self.node, *self.nodes.values()]

    def node_of(self, server: ServerFixture) -> str:
        """
        The name of the node a server is on.
        """
        return server.node or self.node.name

    def add_user(
        self,
        username: str,
        uuid: str,
        id: int,
        password: str = "",
        public_keys: Iterable[str] = (),
        root_admin: bool = False,
        permissions: Mapping[str, Iterable[str]] | None = None,
    ) -> PanelUser:
        """
        Add (or replace) a Panel user; ``permissions`` maps server UUIDs to
        permission lists (``["*"]`` for the owner).
        """
        user = PanelUser(
            uuid=str(uuid),
            id=int(id),
            username=str(username),
            password=str(password),
            public_keys=[str(k) for k in public_keys],
            root_admin=bool(root_admin),
            permissions={str(s): [str(p) for p in perms] for s, perms in (permissions or {}).items()},
        )
        self.users[user.username] = user
        return user

    def add_backup(
        self,
        uuid: str,
        server: str | None = None,
        completed: bool = False,
        successful: bool = False,
        locked: bool = False,
    ) -> BackupFixture:
        """
        Add (or replace) a backup row belonging to ``server``.
        """
        backup = BackupFixture(
            uuid=str(uuid),
            server_uuid=server,
            completed=bool(completed),
            successful=bool(successful),
            locked=bool(locked),
        )
        self.backups[backup.uuid] = backup
        return backup

    def find_user(self, ident: str) -> PanelUser | None:
        """
        A user by UUID or (case-insensitive) username.
        """
        for user in self.users.values():
            if user.uuid == ident or user.username.lower() == ident.lower():
                return user
        return None

    def default_user(self, server_uuid: str) -> PanelUser | None:
        """
        The user tokens are minted for when none is named: the first user
        whose permissions for ``server_uuid`` contain ``*``, else the first
        with any access, else the first user.
        """
        users = list(self.users.values())
        for wanted in ("owner", "any"):
            for user in users:
                perms = user.permissions_for(server_uuid)
                if perms is not None and (wanted == "any" or "*" in perms):
                    return user
        return users[0] if users else None

    # -- queries ------------------------------------------------------------

    def requests(
        self, method: str | None = None, path: str | None = None, route: str | None = None
    ) -> list[ReceivedRequest]:
        """
        The received requests, filtered by method, concrete path (with or
        without ``/api/remote``) and/or route template.
        """
        wanted = None if path is None else normalise_path(path)
        return [
            r
            for r in self.received
            if (method is None or r.method == method.upper())
            and (wanted is None or r.path == wanted)
            and (route is None or r.route == route)
        ]

    def s3_base(self) -> str:
        """
        Base URL the presigned part URLs point at.
        """
        return (self.s3_base_url or self.node.url + "/s3").rstrip("/")

    def backup_object_key(self, backup_uuid: str) -> str:
        """
        ``<bucket>/<server uuid>/<backup uuid>.tar.gz``, where the Panel puts
        an S3 backup.
        """
        backup = self.backups.get(backup_uuid)
        server = backup.server_uuid if backup is not None and backup.server_uuid else "unknown"
        return "{}/{}/{}.tar.gz".format(self.bucket, server, backup_uuid)

    def object_key(self, backup_uuid: str) -> str:
        """
        ``<server uuid>/<backup uuid>.tar.gz``: the key the Panel gives an S3
        backup in its bucket.
        """
        backup = self.backups.get(backup_uuid)
        server = backup.server_uuid if backup is not None and backup.server_uuid else "unknown"
        return "{}/{}.tar.gz".format(server, backup_uuid)

    def backup_download_url(self, backup_uuid: str) -> str:
        """
        The URL a Panel would pass as ``download_url`` to restore an S3
        backup: a presigned GET of the real bucket when one is configured,
        else the S3 double's (or ``s3_base_url``'s) object URL.
        """
        if self.object_store is not None:
            return self.object_store.download_url(self.object_key(backup_uuid))
        return "{}/{}".format(self.s3_base(), self.backup_object_key(backup_uuid))
