"""
The Docker Engine API client: the one place the daemon talks to the
container engine over HTTP (the attach hijack, which HTTP clients cannot do,
is ``attach``).

Requests go through a treq ``HTTPClient`` whose agent connects with an
endpoint factory (``host.EngineEndpointFactory``: a ``UNIXClientEndpoint``
for a unix socket, a ``HostnameEndpoint`` for ``tcp://``), on the reactor
passed in.  The API version is negotiated once (``host``) and every call but
``/_ping`` goes to ``/v<version>/...``: versioned paths pin the JSON shapes
we decode.  A failed negotiation is retried by the next call.

Three kinds of call:

* ``call``: one request with an optional JSON body, the whole answer read
  (at most ``MAX_BODY``) and decoded; one deadline (``timeout`` seconds)
  covers the connection, the head and the body;
* ``stream``: a long response read as it arrives, one JSON document per line
  (the stats stream, image-pull progress); the deadline covers only the
  head, ``Stream.stop`` ends it;
* ``request``: the raw exchange under both (status, headers, body).

Every failure, transport errors included, is a ``DockerError`` with a
readable message (``errors``); a non-2xx answer carries its status.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, cast
from urllib.parse import urlencode

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from ... import __version__
from ...reactor import IReactor
from .errors import DockerError, describe, status_error
from .host import DEFAULT_HOST, EngineEndpointFactory, negotiated_version, parse_api_version, \
    parse_docker_host
from .info import EngineInfo, engine_info_from

log = Logger()

DEFAULT_TIMEOUT = 15.0
MAX_BODY = 8 * 1024 * 1024
#: A streamed line longer than this is a broken stream.
MAX_LINE = 1024 * 1024

USER_AGENT = "wings-twisted/{}".format(__version__).encode()

Query = Mapping[str, "str | int | bool"]


class _BodyReader(Protocol):
    """
    Collects a response body up to ``MAX_BODY``; cancelling ``done`` drops
    the connection so a stalled engine does not keep it.
    """

    def __init__(self) -> None:
        self.done: Deferred[bytes] = Deferred(self._cancel)
        self._chunks: list[bytes] = []
        self._size = 0

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            cast(Any, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > MAX_BODY:
            self.done.errback(DockerError("The engine's answer exceeds {} bytes.".format(
                MAX_BODY)))
            self._cancel(self.done)
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)


class Stream(Protocol):
    """
    A streamed response, one JSON document per line to ``on_object``.
    ``done`` fires (``None``) when the engine ends the body or ``stop`` is
    called, and fails with ``DockerError`` when the connection breaks.
    """

    def __init__(self, what: str, on_object: Callable[[Any], None]) -> None:
        self.what = what
        self.done: Deferred[None] = Deferred()
        self._on_object = on_object
        self._buffer = b""
        self._stopped = False

    def stop(self) -> None:
        """
        Stop reading and drop the connection; ``done`` fires.
        """
        if self._stopped:
            return
        self._stopped = True
        if self.transport is not None:
            cast(Any, self.transport).stopProducing()
        if not self.done.called:
            self.done.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        self._buffer += data
        while not self._stopped:
            line, newline, rest = self._buffer.partition(b"\n")
            if not newline:
                break
            self._buffer = rest
            self._line(line)
        if len(self._buffer) > MAX_LINE:
            log.warn("Dropping an over-long line of {what}", what=self.what)
            self._buffer = b""

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            document = json.loads(line)
        except ValueError:
            log.warn("Ignoring a line of {what} that is not JSON", what=self.what)
            return
        try:
            self._on_object(document)
        except Exception:
            log.failure("Handling a line of {what} failed", what=self.what)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._buffer and not self._stopped:
            self._line(self._buffer)
        self._buffer = b""
        self._stopped = True
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(DockerError("The engine dropped {}: {}".format(
                self.what, describe(reason.value))))


class DockerClient:
    """
    Calls the Docker Engine API through ``http`` at ``base_url``.

    :param clock: the reactor's clock, for timeouts.
    :param api_version: a fixed API version (``DOCKER_API_VERSION``), or
        ``None`` to negotiate.
    :param pool: the connection pool behind ``http``, closed by ``close``.
    :param endpoint: opens a raw connection to the engine (the attach hijack).
    """

    def __init__(self, http: HTTPClient, clock: IReactorTime, *, base_url: str = "http://docker",
                 where: str = DEFAULT_HOST, api_version: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 pool: HTTPConnectionPool | None = None,
                 endpoint: Callable[[], IStreamClientEndpoint] | None = None) -> None:
        self._http = http
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self.where = where
        self.timeout = timeout
        self._pool = pool
        self._endpoint = endpoint
        self._api_version: str | None = None
        if api_version:
            parsed = parse_api_version(api_version)
            self._api_version = "{}.{}".format(*parsed)

    @classmethod
    def from_environment(cls, reactor: IReactor, environ: Mapping[str, str], *,
                         timeout: float = DEFAULT_TIMEOUT) -> "DockerClient":
        """
        A client for the engine named by ``DOCKER_HOST`` and
        ``DOCKER_API_VERSION`` in ``environ`` (config.md §5), connecting
        with ``reactor``.  Nothing is connected yet.
        """
        if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"):
            raise DockerError("DOCKER_TLS_VERIFY / DOCKER_CERT_PATH: TLS connections to the "
                              "engine are not supported yet.")
        host = parse_docker_host(environ.get("DOCKER_HOST", ""))
        pool = HTTPConnectionPool(reactor, persistent=True)
        endpoints = EngineEndpointFactory(reactor, host, connect_timeout=timeout)
        agent = Agent.usingEndpointFactory(reactor, endpoints, pool=pool)
        return cls(HTTPClient(agent), reactor, base_url=host.base_url, where=host.url,
                   api_version=environ.get("DOCKER_API_VERSION") or None, timeout=timeout,
                   pool=pool, endpoint=endpoints.endpoint)

    def endpoint(self) -> IStreamClientEndpoint:
        """
        A raw connection endpoint to the engine (``attach``).
        """
        if self._endpoint is None:
            raise DockerError("This engine client cannot open raw connections.")
        return self._endpoint()

    def close(self) -> Deferred[None]:
        """
        Close idle connections; fires when they are gone.
        """
        if self._pool is None:
            return succeed(None)
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed

    # -- raw exchanges ---------------------------------------------------------------------------

    async def _send(self, method: str, path: str, *, data: bytes | None,
                    headers: Mapping[str, str] | None, timeout: float) -> Any:
        all_headers = Headers({b"User-Agent": [USER_AGENT]})
        for name, value in (headers or {}).items():
            all_headers.setRawHeaders(name.encode("ascii"), [value.encode("latin-1")])
        if data is not None:
            all_headers.setRawHeaders(b"Content-Type", [b"application/json"])
        return await self._http.request(
            method, self.base_url + path, headers=all_headers, data=data, unbuffered=True,
            allow_redirects=False, reactor=cast(Any, self.clock), timeout=timeout)

    def _failed(self, error: Exception, what: str, started: float, timeout: float) -> DockerError:
        if isinstance(error, DockerError):
            return error
        if self.clock.seconds() - started >= timeout:
            return DockerError("The engine at {} did not answer {} within {:g} s.".format(
                self.where, what, timeout), timed_out=True)
        return DockerError("Cannot reach the engine at {} ({}): {}".format(
            self.where, what, describe(error)))

    async def request(self, method: str, path: str, *, data: bytes | None = None,
                      headers: Mapping[str, str] | None = None,
                      timeout: float | None = None) -> tuple[int, Any, bytes]:
        """
        One call to ``path`` as given (no version prefix): ``(status,
        headers, body)`` whatever the status; ``DockerError`` when there is
        no complete answer within ``timeout`` seconds.
        """
        timeout = self.timeout if timeout is None else timeout
        started = self.clock.seconds()
        what = "{} {}".format(method, path)
        try:
            response = await self._send(method, path, data=data, headers=headers,
                                        timeout=timeout)
            reader = _BodyReader()
            response.deliverBody(reader)
            left = max(timeout - (self.clock.seconds() - started), 0.001)
            body = await reader.done.addTimeout(left, self.clock)
        except CancelledError:
            raise
        except Exception as e:
            raise self._failed(e, what, started, timeout) from None
        return response.code, response.headers, body

    async def api_version(self) -> str:
        """
        The API version in use, negotiated with ``/_ping`` on first use.
        """
        if self._api_version is None:
            status, headers, body = await self.request("GET", "/_ping")
            if status != 200:
                raise status_error("GET /_ping", status, body)
            server = headers.getRawHeaders(b"API-Version", [None])[0]
            self._api_version = negotiated_version(
                server.decode("ascii", "replace") if server else None)
            log.debug("Using Docker API {version} (engine offers {server})",
                      version=self._api_version, server=server)
        return self._api_version

    async def versioned(self, path: str, params: Query | None = None) -> str:
        """
        ``/v<version><path>?<params>``.
        """
        version = await self.api_version()
        query = ""
        if params:
            query = "?" + urlencode({k: _query_value(v) for k, v in params.items()})
        return "/v{}{}{}".format(version, path, query)

    # -- calls -----------------------------------------------------------------------------------

    async def call(self, method: str, path: str, *, params: Query | None = None,
                   body: Any = None, headers: Mapping[str, str] | None = None,
                   timeout: float | None = None, absolute: bool = False) -> Any:
        """
        ``method /v<version><path>`` with ``body`` as JSON (when not
        ``None``); the decoded answer (``None`` for an empty one).  A
        non-2xx status is a ``DockerError`` with that status.  ``absolute``
        sends ``path`` without the version prefix (podman's ``/v4.0.0/libpod``
        endpoints).
        """
        if absolute:
            query = "?" + urlencode({k: _query_value(v) for k, v in params.items()}) \
                if params else ""
            target = path + query
        else:
            target = await self.versioned(path, params)
        data = None if body is None else json.dumps(body).encode("utf-8")
        status, _, answer = await self.request(method, target, data=data, headers=headers,
                                               timeout=timeout)
        if not 200 <= status < 300:
            raise status_error("{} {}".format(method, target), status, answer)
        if not answer.strip():
            return None
        try:
            return json.loads(answer)
        except ValueError:
            raise DockerError("The engine answered {} {} with invalid JSON.".format(
                method, target), status=status) from None

    async def get_json(self, path: str, *, timeout: float | None = None) -> Any:
        """
        ``GET /v<version><path>``, decoded.
        """
        return await self.call("GET", path, timeout=timeout)

    async def get_bytes(self, path: str, params: Query | None = None, *,
                        timeout: float | None = None) -> bytes:
        """
        ``GET /v<version><path>`` whose answer is not JSON (container logs).
        """
        target = await self.versioned(path, params)
        status, _, answer = await self.request("GET", target, timeout=timeout)
        if not 200 <= status < 300:
            raise status_error("GET " + target, status, answer)
        return answer

    async def stream(self, method: str, path: str, on_object: Callable[[Any], None], *,
                     params: Query | None = None, headers: Mapping[str, str] | None = None,
                     timeout: float | None = None) -> Stream:
        """
        Start a streamed call; returns once the engine answered 2xx (else a
        ``DockerError``), with the ``Stream`` delivering each line.
        """
        timeout = self.timeout if timeout is None else timeout
        target = await self.versioned(path, params)
        what = "{} {}".format(method, target)
        started = self.clock.seconds()
        try:
            response = await self._send(method, target, data=None, headers=headers,
                                        timeout=timeout)
        except CancelledError:
            raise
        except Exception as e:
            raise self._failed(e, what, started, timeout) from None
        if not 200 <= response.code < 300:
            reader = _BodyReader()
            response.deliverBody(reader)
            try:
                answer = await reader.done.addTimeout(timeout, self.clock)
            except Exception:
                answer = b""
            raise status_error(what, response.code, answer)
        stream = Stream(what, on_object)
        response.deliverBody(stream)
        return stream

    # -- system ----------------------------------------------------------------------------------

    async def version(self) -> dict[str, Any]:
        """
        ``GET /version``: the engine's version document.
        """
        return _object(await self.get_json("/version"), "/version")

    async def info(self) -> dict[str, Any]:
        """
        ``GET /info``: the engine's system-wide information.
        """
        return _object(await self.get_json("/info"), "/info")

    async def engine_info(self) -> EngineInfo:
        """
        ``/version`` and ``/info`` mapped for ``GET /api/system?v=2``.
        """
        version = await self.version()
        info = await self.info()
        return engine_info_from(version, info)


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DockerError("The engine answered GET {} with a non-object.".format(path))
    return value
