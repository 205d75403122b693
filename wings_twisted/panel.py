"""
The client for the panel's remote API (panel.md §1–§3, §6): the one place
the daemon talks to the panel.

Every request carries ``Authorization: Bearer <token_id>.<token>``, ``Accept:
application/vnd.pterodactyl.v1+json``, ``Content-Type: application/json`` and a
``Pterodactyl Wings/v<version>`` User-Agent.  A POST without data sends the
literal body ``null``.

Retries (§1.2): transport errors, 5xx and non-2xx below 400 are retried with
exponential backoff (first wait 0.5 s, ×1.5, ±50 % jitter, at most 12 s per
wait) until 30 s have passed since the first attempt; a retry whose wait would
end past that budget is not started.  4xx answers fail at once.  Each attempt
has a hard timeout of ``remote_query.timeout`` seconds.  The clock and the
jitter source are injected so tests run on ``Clock``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, cast

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, DeferredList, FirstError, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from . import __version__

log = Logger()

FIRST_WAIT = 0.5
GROWTH = 1.5
JITTER = 0.5
LONGEST_WAIT = 12.0
BUDGET = 30.0

_NO_BODY = object()


class PanelError(Exception):
    """
    The panel answered with an error status (panel.md §1.3), or could not be
    reached at all (``status`` 0).
    """

    def __init__(self, status: int, code: str = "_MissingResponseCode",
                 detail: str = "No error response returned from API endpoint.") -> None:
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.status == 0:
            return "Panel unreachable: {}".format(self.detail)
        return "Error response from Panel: {}: {} (HTTP/{})".format(
            self.code, self.detail, self.status)

    @classmethod
    def from_response(cls, status: int, body: bytes) -> "PanelError":
        """
        Decode the panel's ``{"errors": [...]}`` shape, keeping the first one.
        """
        try:
            errors = json.loads(body).get("errors")
            first = errors[0]
            return cls(status, str(first.get("code")), str(first.get("detail")))
        except (ValueError, AttributeError, TypeError, IndexError, KeyError):
            return cls(status)


@dataclass(frozen=True)
class SftpGrant:
    """
    The panel's answer to a valid SFTP credential (``POST /sftp/auth``, panel.md §4).
    """

    user: str
    server: str
    permissions: tuple[str, ...]


class PanelClient:
    """
    Calls ``<remote>/api/remote/...`` with the node's credentials.
    """

    def __init__(self, http: HTTPClient, clock: IReactorTime, *, remote: str,
                 token_id: str, token: str, timeout: float = 30.0,
                 custom_headers: Mapping[str, str] | None = None,
                 jitter: Callable[[], float] = random.random) -> None:
        self._http = http
        self._clock = clock
        self.base = remote[:-1] if remote.endswith("/") else remote
        self.timeout = timeout
        self._jitter = jitter
        self._custom_headers = dict(custom_headers or {})
        self.set_credentials(token_id, token)

    def set_credentials(self, token_id: str, token: str) -> None:
        """
        Use a new node credential from the next request on (config.md §6.2).
        """
        self._token_id = token_id
        self._token = token

    def _headers(self) -> dict[bytes, list[bytes]]:
        headers = {
            b"Authorization": [b"Bearer " + f"{self._token_id}.{self._token}".encode()],
            b"Accept": [b"application/vnd.pterodactyl.v1+json"],
            b"Content-Type": [b"application/json"],
            b"User-Agent": [f"Pterodactyl Wings/v{__version__} (id:{self._token_id})".encode()],
        }
        for name, value in self._custom_headers.items():
            headers[name.encode()] = [value.encode()]
        return headers

    def _wait(self, retry: int) -> float:
        base = min(FIRST_WAIT * GROWTH ** retry, LONGEST_WAIT)
        return min(base * (1 + JITTER * (2 * self._jitter() - 1)), LONGEST_WAIT)

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      body: Any = _NO_BODY) -> tuple[int, bytes]:
        """
        Make one call with the retry policy; return ``(status, body)`` of a
        2xx answer or raise ``PanelError``.
        """
        url = self.base + "/api/remote" + path
        data = None
        if method != "GET":
            data = json.dumps(None if body is _NO_BODY else body).encode()
        started = self._clock.seconds()
        retry = 0
        while True:
            try:
                response = await self._http.request(
                    method, url, params=params, data=data, headers=Headers(self._headers()),
                    timeout=self.timeout, reactor=cast(Any, self._clock))
                content = await response.content()
                status = response.code
            except CancelledError:
                raise
            except Exception as e:
                error = PanelError(0, "_TransportError", str(e) or e.__class__.__name__)
            else:
                if 200 <= status < 300:
                    return status, content
                error = PanelError.from_response(status, content)
                if 400 <= status < 500:
                    raise error
            wait = self._wait(retry)
            if self._clock.seconds() + wait - started > BUDGET:
                raise error
            log.warn("Panel call {method} {path} failed ({error}); retrying in {wait:.1f}s",
                     method=method, path=path, error=str(error), wait=wait)
            retry += 1
            await deferLater(self._clock, wait, lambda: None)

    async def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """
        ``request`` and decode the JSON answer (a bad body is a PanelError).
        """
        status, content = await self.request(method, path, **kwargs)
        try:
            return json.loads(content)
        except ValueError:
            raise PanelError(status, "_InvalidJSON", "The panel answered with invalid JSON.")

    async def get_servers(self, per_page: int = 50) -> list[Mapping[str, Any]]:
        """
        Every server of this node (panel.md §3.1): page 0 first, then the
        remaining pages concurrently; any failure fails the whole load.
        """
        first = await self.request_json("GET", "/servers",
                                        params={"page": "0", "per_page": str(per_page)})
        entries = list(_page_data(first))
        meta = first.get("meta") if isinstance(first, Mapping) else None
        current = _int(meta.get("current_page") if isinstance(meta, Mapping) else None, 1)
        last = _int(meta.get("last_page") if isinstance(meta, Mapping) else None, 1)
        pages = [ensureDeferred(self.request_json(
            "GET", "/servers", params={"page": str(p), "per_page": str(per_page)}))
            for p in range(current + 1, last + 1)]
        if pages:
            try:
                results = await DeferredList(pages, fireOnOneErrback=True, consumeErrors=True)
            except FirstError as e:
                e.subFailure.raiseException()
            for _, page in results:
                entries.extend(_page_data(page))
        return entries

    async def get_server(self, uuid: str) -> Mapping[str, Any]:
        """
        One server's configuration (panel.md §3.3).
        """
        answer = await self.request_json("GET", "/servers/" + uuid)
        if not isinstance(answer, Mapping):
            raise PanelError(200, "_InvalidJSON", "The panel answered with a non-object.")
        return answer

    async def reset_servers(self) -> None:
        """
        ``POST /servers/reset`` after boot (panel.md §3.2).
        """
        await self.request("POST", "/servers/reset")

    async def get_install_script(self, uuid: str) -> Mapping[str, Any]:
        """
        ``{container_image, entrypoint, script}`` of a server's egg (panel.md §3.4).
        """
        answer = await self.request_json("GET", "/servers/{}/install".format(uuid))
        if not isinstance(answer, Mapping) or not isinstance(answer.get("script"), str):
            raise PanelError(200, "_InvalidJSON", "The panel's install script is not usable.")
        return answer

    async def report_install(self, uuid: str, successful: bool, reinstall: bool) -> None:
        """
        ``POST /servers/{uuid}/install`` (panel.md §3.5).
        """
        await self.request("POST", "/servers/{}/install".format(uuid),
                           body={"successful": successful, "reinstall": reinstall})

    async def validate_sftp(self, credentials: Mapping[str, str]) -> SftpGrant:
        """
        ``POST /sftp/auth`` (panel.md §4, sftp.md §3.4) with the body as given (``type``,
        ``username``, ``password``, ``ip``, ``session_id``, ``client_version``); retried on
        network errors and 5xx within the 30-second budget like every call.

        :raises PanelError: any 4xx (the credentials are refused), the budget spent, or an
            answer without ``user``, ``server`` and a ``permissions`` list of strings.
        """
        answer = await self.request_json("POST", "/sftp/auth", body=dict(credentials))
        if isinstance(answer, Mapping):
            user, server = answer.get("user"), answer.get("server")
            permissions = answer.get("permissions")
            if (isinstance(user, str) and isinstance(server, str)
                    and isinstance(permissions, list)
                    and all(isinstance(p, str) for p in permissions)):
                return SftpGrant(user, server, tuple(permissions))
        raise PanelError(200, "_InvalidJSON", "The panel's SFTP answer is not usable.")

    async def send_activity(self, records: Sequence[Mapping[str, Any]]) -> None:
        """
        Ship activity records (panel.md §6.3).
        """
        await self.request("POST", "/activity", body={"data": list(records)})


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _page_data(page: Any) -> list[Mapping[str, Any]]:
    if not isinstance(page, Mapping) or not isinstance(page.get("data"), list):
        raise PanelError(200, "_InvalidJSON", "The server listing has no data array.")
    return [entry for entry in page["data"] if isinstance(entry, Mapping)]
