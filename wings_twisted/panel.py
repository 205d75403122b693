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

Validation: every answer is decoded and checked inside the retry loop.  A
2xx whose body is not what the endpoint promises (invalid JSON, a listing
without a ``data`` array, a page number that is not a small non-negative
integer such as ``1e309``, more than ``MAX_PAGES`` pages) is a
``PanelError`` (``_InvalidJSON``/``_InvalidResponse``) and is retried like a
5xx: a panel that sends garbage is a failing panel, never an unhandled
exception in the daemon.
"""

from __future__ import annotations

import json
import random
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar, cast

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

#: Most pages of ``GET /api/remote/servers`` the daemon will fetch (50 000
#: servers at the default page size): a larger ``last_page`` is garbage.
MAX_PAGES = 1000

_NO_BODY = object()
_T = TypeVar("_T")


class PanelError(Exception):
    """
    The panel answered with an error status (panel.md §1.3), or could not be
    reached at all (``status`` 0).  ``url`` is the address called (without
    the query), when known: start-up errors name it.
    """

    def __init__(self, status: int, code: str = "_MissingResponseCode",
                 detail: str = "No error response returned from API endpoint.",
                 url: str | None = None) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.url = url
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
        return await self.request_decoded(method, path, _raw, params=params, body=body)

    async def request_decoded(self, method: str, path: str,
                              decode: Callable[[int, bytes], _T], *,
                              params: Mapping[str, Any] | None = None,
                              body: Any = _NO_BODY) -> _T:
        """
        ``request``, with ``decode(status, body)`` applied to a 2xx answer
        inside the retry loop: a ``PanelError`` it raises is retried like a
        5xx, and so is any other exception it raises (as a ``PanelError``).
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
                error = PanelError(0, "_TransportError", _transport_detail(e), url=url)
            else:
                if 200 <= status < 300:
                    try:
                        return decode(status, content)
                    except PanelError as e:
                        error = e
                        error.url = url
                    except Exception as e:
                        error = PanelError(status, "_InvalidResponse",
                                           "Unusable answer: {}".format(
                                               str(e) or e.__class__.__name__), url=url)
                else:
                    error = PanelError.from_response(status, content)
                    error.url = url
                    if 400 <= status < 500:
                        raise error
            wait = self._wait(retry)
            if self._clock.seconds() + wait - started > BUDGET:
                raise error
            log.warn("Panel call {method} {url} failed ({error}); retrying in {wait:.1f}s",
                     method=method, url=url, error=str(error), wait=wait)
            retry += 1
            await deferLater(self._clock, wait, lambda: None)

    async def request_json(self, method: str, path: str,
                           check: Callable[[Any], Any] | None = None, **kwargs: Any) -> Any:
        """
        ``request`` and decode the JSON answer, then ``check`` it (returning
        what ``check`` returns); a bad body or a failed check is a retried
        ``PanelError`` (module docstring).
        """
        def decode(status: int, content: bytes) -> Any:
            value = _json(status, content)
            return value if check is None else check(value)

        return await self.request_decoded(method, path, decode, **kwargs)

    async def get_servers(self, per_page: int = 50) -> list[Mapping[str, Any]]:
        """
        Every server of this node (panel.md §3.1): page 0 first, then the
        remaining pages concurrently; any failure fails the whole load.
        """
        first, current, last = await self.request_json(
            "GET", "/servers", _first_page, params={"page": "0", "per_page": str(per_page)})
        entries = list(first)
        pages = [ensureDeferred(self.request_json(
            "GET", "/servers", _page_data, params={"page": str(p), "per_page": str(per_page)}))
            for p in range(current + 1, last + 1)]
        if pages:
            try:
                results = await DeferredList(pages, fireOnOneErrback=True, consumeErrors=True)
            except FirstError as e:
                e.subFailure.raiseException()
            for _, page in results:
                entries.extend(page)
        return entries

    async def get_server(self, uuid: str) -> Mapping[str, Any]:
        """
        One server's configuration (panel.md §3.3).
        """
        answer: Mapping[str, Any] = await self.request_json("GET", "/servers/" + uuid, _object)
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
        answer: Mapping[str, Any] = await self.request_json(
            "GET", "/servers/{}/install".format(uuid), _install_script)
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

    # Backups

    async def backup_part_urls(self, backup_uuid: str, size: int) -> tuple[list[str], int]:
        """
        ``GET /backups/{uuid}?size=`` (panel.md §5.2, backups.md §6.1 step 3): the presigned
        part URLs and the part size.  A 4xx fails at once; an answer without a list of URL
        strings and a positive integer ``part_size`` is a `PanelError`.
        """
        def check(answer: Any) -> tuple[list[str], int]:
            parts = answer.get("parts") if isinstance(answer, Mapping) else None
            part_size = answer.get("part_size") if isinstance(answer, Mapping) else None
            if (not isinstance(parts, list) or not all(isinstance(p, str) for p in parts)
                    or isinstance(part_size, bool) or not isinstance(part_size, int)
                    or part_size <= 0):
                raise _invalid("The panel's part list is not usable.")
            return list(parts), part_size

        answer: tuple[list[str], int] = await self.request_json(
            "GET", "/backups/{}".format(backup_uuid), check, params={"size": str(size)})
        return answer

    async def report_backup(self, backup_uuid: str, body: Mapping[str, Any]) -> None:
        """
        ``POST /backups/{uuid}`` with the flat result object (backups.md §7.1).
        """
        await self.request("POST", "/backups/{}".format(backup_uuid), body=dict(body))

    async def report_restore(self, backup_uuid: str, successful: bool) -> None:
        """
        ``POST /backups/{uuid}/restore`` (backups.md §8.4 step 6).
        """
        await self.request("POST", "/backups/{}/restore".format(backup_uuid),
                           body={"successful": successful})

    # Transfers

    async def report_transfer_success(self, uuid: str) -> None:
        """
        ``POST /servers/{uuid}/transfer/success`` (panel.md §3.6, transfers.md §4.6): the
        destination received the server.  The panel answers only once it has asked the source to
        delete it.

        :raises PanelError: a 4xx at once (the panel refused: 404, 409), anything else after the
            retries of §1.2 (the outcome is then unknown).
        """
        await self.request("POST", "/servers/{}/transfer/success".format(uuid))

    async def report_transfer_failure(self, uuid: str) -> None:
        """
        ``POST /servers/{uuid}/transfer/failure`` (panel.md §3.6, transfers.md §3.5, §4.7).

        :raises PanelError: as ``report_transfer_success``; a 409 means the transfer was already
            resolved.
        """
        await self.request("POST", "/servers/{}/transfer/failure".format(uuid))


def _transport_detail(error: Exception) -> str:
    """
    One line for a failed attempt: the reasons Twisted wraps in
    ``ResponseNeverReceived`` and friends, not their ``repr``.
    """
    reasons = getattr(error, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return "; ".join(str(r.getErrorMessage()) for r in reasons)
    return str(error) or error.__class__.__name__


def _invalid(detail: str) -> PanelError:
    return PanelError(200, "_InvalidResponse", detail)


def _json(status: int, content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        raise PanelError(status, "_InvalidJSON", "The panel answered with invalid JSON.") from None


def _object(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid("The panel answered with a non-object.")
    return value


def _install_script(value: Any) -> Mapping[str, Any]:
    answer = _object(value)
    if not isinstance(answer.get("script"), str):
        raise _invalid("The panel's install script is not usable.")
    for key in ("container_image", "entrypoint"):
        if answer.get(key) is not None and not isinstance(answer.get(key), str):
            raise _invalid("The panel's install {} is not a string.".format(key))
    return answer


def page_number(value: Any, default: int) -> int:
    """
    A page number of the listing's ``meta``: absent (``None``) is
    ``default``; anything but an integral number (or a numeric string) in
    ``0..MAX_PAGES`` is a `PanelError`.
    """
    if value is None:
        return default
    number: int | float
    if isinstance(value, bool):
        raise _invalid("page number {!r} is not a number".format(value))
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str) and value.strip().isdigit() and len(value) < 10:
        number = int(value)
    else:
        raise _invalid("page number {!r} is not a number".format(value))
    if isinstance(number, float) and (not math.isfinite(number) or not number.is_integer()):
        raise _invalid("page number {!r} is not an integer".format(value))
    if not 0 <= number <= MAX_PAGES:
        raise _invalid("page number {!r} is out of range".format(value))
    return int(number)


def _page_data(page: Any) -> list[Mapping[str, Any]]:
    if not isinstance(page, Mapping) or not isinstance(page.get("data"), list):
        raise _invalid("The server listing has no data array.")
    return [entry for entry in page["data"] if isinstance(entry, Mapping)]


def _first_page(page: Any) -> tuple[list[Mapping[str, Any]], int, int]:
    entries = _page_data(page)
    meta = page.get("meta")
    if meta is not None and not isinstance(meta, Mapping):
        raise _invalid("The server listing's meta is not an object.")
    meta = meta or {}
    return (entries, page_number(meta.get("current_page"), 1),
            page_number(meta.get("last_page"), 1))


def _raw(status: int, content: bytes) -> tuple[int, bytes]:
    return status, content
