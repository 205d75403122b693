"""
Server transfers between the development Panel's nodes, driven as the Panel drives them
(transfers.md §2, panel.md §3.6).

The Panel knows several nodes (``node`` and the ``nodes`` section of the fixture file); each
server belongs to one (``node:`` of a server, the first node when absent), and each node's daemon
lists only its own servers.  A transfer:

1. is started from the admin route (``POST /admin/servers/{uuid}/transfer`` with
   ``{"node": "<name>"}``, what the Panel's admin page posts; ``python -m wings_twisted.devpanel
   transfer`` calls it) or ``DaemonCalls.start_transfer`` in tests.  The checks of §2.1 (known
   destination, another node, no pending transfer, not installing or restoring), then a pending
   `TransferRecord`, the JWT of §2.2 signed with the **destination's** daemon token, and the call
   of §2.3 to the source (15-second timeout); a failed call rolls everything back and answers the
   admin with the error;
2. ends with the destination's ``transfer/success`` (§2.4): the server moves to the destination
   node (and to the new allocation, when one was given), the record is marked successful, then
   ``DELETE /api/servers/{uuid}`` is sent to the **old** node (its failure only logged) and only
   then the Panel answers 204, as the Panel's controller does;
3. or with ``transfer/failure`` from either node: the record is marked failed, the server stays.

Once a report was accepted, every further report of that transfer gets 409 ("Server is not being
transferred.").  A server marked ``transfer: true`` in the fixtures without a record (tests that
drive one daemon) gets the single-node behaviour: the first report is accepted and recorded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping, cast

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .handlers import Call
from .replies import Reply, error_reply, json_reply, no_content, not_found
from .serving import write_reply
from .state import DevPanelState, NodeCredentials
from .tokens import mint_transfer

log = Logger()

#: The Panel's timeout for its call to the source (transfers.md §2.3).
SOURCE_TIMEOUT = 15.0
NOT_TRANSFERRING = "Server is not being transferred."


@dataclass
class TransferRecord:
    """
    A ``server_transfers`` row: ``successful`` is ``None`` while pending.
    """

    server: str
    old_node: str
    new_node: str
    old_allocation: dict[str, Any]
    new_allocation: dict[str, Any] | None
    started: float
    successful: bool | None = None


def node_named(state: DevPanelState, name: str | None) -> NodeCredentials | None:
    """
    The node called ``name`` (``None``: the first node).
    """
    if name is None or name == state.node.name:
        return state.node
    return state.nodes.get(name)


def pending(state: DevPanelState, uuid: str) -> TransferRecord | None:
    """
    The server's pending transfer, if any.
    """
    record = state.transfers.get(uuid)
    return record if record is not None and record.successful is None else None


class DaemonCalls:
    """
    The Panel's calls to the daemons of its nodes.
    """

    def __init__(self, state: DevPanelState, http: HTTPClient, reactor: IReactorTime) -> None:
        self._state = state
        self._http = http
        self._reactor = reactor

    async def _call(self, node: NodeCredentials, method: str, path: str, body: Any = None,
                    timeout: float = SOURCE_TIMEOUT) -> tuple[int, bytes]:
        headers = Headers({b"Authorization": [b"Bearer " + node.token.encode()],
                           b"Accept": [b"application/json"],
                           b"Content-Type": [b"application/json"]})
        data = None if body is None else json.dumps(body).encode()
        response = await self._http.request(method, node.daemon_url + path, data=data,
                                            headers=headers, timeout=timeout,
                                            reactor=cast(Any, self._reactor))
        return response.code, await response.content()

    async def start_transfer(self, uuid: str, destination: str, *,
                             allocation: str | None = None) -> Reply:
        """
        §2.1–§2.3: the answer the admin gets (202 with the record, or the error).
        """
        state = self._state
        fixture = state.servers.get(uuid)
        if fixture is None:
            return not_found()
        source = node_named(state, fixture.node)
        target = state.nodes.get(destination) if destination != state.node.name else state.node
        if source is None or target is None:
            return error_reply(422, "Unknown node {!r}.".format(destination))
        if target is source:
            return error_reply(422, "The server is already on node {!r}.".format(destination))
        if pending(state, uuid) is not None or fixture.transfer:
            return error_reply(409, "This server is already being transferred.")
        if fixture.status in ("installing", "install_failed", "restoring_backup"):
            return error_reply(409, "This server is not in a state that can be transferred.")
        default = dict(fixture.settings.get("allocations", {}).get("default", {}))
        new = None
        if allocation:
            ip, _, port = allocation.rpartition(":")
            new = {"ip": ip, "port": int(port)}
        record = TransferRecord(uuid, source.name, target.name, default, new,
                                self._reactor.seconds())
        state.transfers[uuid] = record
        fixture.transfer = True
        token = mint_transfer(NodeCredentials(target.token_id, target.token,
                                              daemon_url=target.daemon_url, url=state.node.url,
                                              name=target.name),
                              uuid, now=self._reactor.seconds())
        body = {"server_id": uuid, "url": target.daemon_url + "/api/transfers",
                "token": "Bearer " + token, "server": {"uuid": uuid, "start_on_completion": False}}
        try:
            status, answer = await self._call(source, "POST",
                                              "/api/servers/{}/transfer".format(uuid), body)
        except Exception as e:
            status, answer = 0, str(e).encode()
        if not 200 <= status < 300:
            # The Panel's transaction is rolled back: no record, allocations released.
            del state.transfers[uuid]
            fixture.transfer = False
            log.warn("devpanel: the source refused the transfer of {uuid}: {status} {answer!r}",
                     uuid=uuid, status=status, answer=answer[:300])
            return error_reply(502, "The source node answered {}: {}".format(
                status, answer[:300].decode("utf-8", "replace")))
        log.info("devpanel: transfer of {uuid} from {source} to {target} started", uuid=uuid,
                 source=source.name, target=target.name)
        return json_reply(202, {"transfer": asdict(record)})

    async def delete_server(self, node: NodeCredentials, uuid: str) -> None:
        """
        ``DELETE /api/servers/{uuid}`` on ``node``; a failure is only logged.
        """
        try:
            status, answer = await self._call(node, "DELETE", "/api/servers/" + uuid, timeout=30)
        except Exception as e:
            log.warn("devpanel: deleting {uuid} on {node} failed: {error}", uuid=uuid,
                     node=node.name, error=str(e))
            return
        if status != 204:
            log.warn("devpanel: deleting {uuid} on {node}: {status} {answer!r}", uuid=uuid,
                     node=node.name, status=status, answer=answer[:300])


def transfer_success(call: Call) -> Reply | Deferred[Reply]:
    """
    ``POST /servers/{uuid}/transfer/success`` (§2.4): move the server, then delete it on the old
    node, then 204.
    """
    state = call.state
    uuid = call.params["uuid"]
    fixture = state.servers.get(uuid)
    if fixture is None:
        return not_found()
    record = pending(state, uuid)
    if record is None:
        return _single_node(call, True)
    old = node_named(state, record.old_node)
    record.successful = True
    fixture.transfer = False
    fixture.node = None if record.new_node == state.node.name else record.new_node
    if record.new_allocation is not None:
        allocations = fixture.settings.setdefault("allocations", {})
        allocations["default"] = dict(record.new_allocation)
        allocations["mappings"] = {record.new_allocation["ip"]: [record.new_allocation["port"]]}
    state.transfer_reports.append({"server": uuid, "successful": True})
    calls = state.daemon_calls
    if old is None or not isinstance(calls, DaemonCalls):
        return no_content()
    return Deferred.fromCoroutine(_delete_then(calls, old, uuid))


async def _delete_then(calls: DaemonCalls, old: NodeCredentials, uuid: str) -> Reply:
    await calls.delete_server(old, uuid)
    return no_content()


def transfer_failure(call: Call) -> Reply:
    """
    ``POST /servers/{uuid}/transfer/failure`` (§2.4): the transfer failed; the server stays.
    """
    state = call.state
    uuid = call.params["uuid"]
    if uuid not in state.servers:
        return not_found()
    record = pending(state, uuid)
    if record is None:
        return _single_node(call, False)
    record.successful = False
    state.servers[uuid].transfer = False
    state.transfer_reports.append({"server": uuid, "successful": False})
    return no_content()


def _single_node(call: Call, successful: bool) -> Reply:
    fixture = call.state.servers[call.params["uuid"]]
    if not fixture.transfer:
        return error_reply(409, NOT_TRANSFERRING)
    fixture.transfer = False
    call.state.transfer_reports.append({"server": fixture.uuid, "successful": successful})
    return no_content()


class AdminResource(Resource):
    """
    ``/admin``: ``POST /admin/servers/{uuid}/transfer`` (``{"node", "allocation"}``) starts a
    transfer, ``GET /admin/transfers`` lists the records.  Development only: no authentication,
    so the Panel must listen on loopback.
    """

    isLeaf = True

    def __init__(self, state: DevPanelState, calls: DaemonCalls | None) -> None:
        super().__init__()
        self._state = state
        self._calls = calls

    def render(self, request: Request) -> int:
        """
        Route and answer.
        """
        segments = [s.decode("utf-8", "replace") for s in request.postpath or [] if s]
        method = request.method.decode("ascii", "replace").upper()
        if method == "GET" and segments == ["transfers"]:
            records = [asdict(r) for r in self._state.transfers.values()]
            write_reply(request, json_reply(200, {"data": records}))
            return NOT_DONE_YET
        if (method != "POST" or len(segments) != 3 or segments[0] != "servers"
                or segments[2] != "transfer"):
            write_reply(request, not_found())
            return NOT_DONE_YET
        body = _json_body(request)
        node = body.get("node")
        if not isinstance(node, str) or self._calls is None:
            write_reply(request, error_reply(422, "The node field is required."))
            return NOT_DONE_YET
        allocation = body.get("allocation")
        d = Deferred.fromCoroutine(self._calls.start_transfer(
            segments[1], node, allocation=allocation if isinstance(allocation, str) else None))
        d.addCallback(lambda reply: write_reply(request, reply))
        d.addErrback(lambda f: log.failure("devpanel: starting a transfer failed", f))
        return NOT_DONE_YET


def _json_body(request: Request) -> Mapping[str, Any]:
    content = request.content
    raw = content.read() if content is not None else b""
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
