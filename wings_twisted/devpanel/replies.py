"""
Responses of the development Panel and the Laravel-style request validation
they rely on.

Error bodies follow the Panel's exception handler (panel.md §1.3)::

    {"errors": [{"code": "NotFoundHttpException", "status": "404",
                 "detail": "The requested resource could not be found on the server."}]}

``code`` is the PHP exception's class name and ``status`` a string.
Validation failures (422) carry one element per failing field with
``code: "ValidationException"`` and ``meta: {"source_field", "rule"}``, and
the detail Laravel would write (``The successful field is required.``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

NOT_FOUND_DETAIL = "The requested resource could not be found on the server."
SERVER_ERROR_DETAIL = "An error was encountered while processing this request."

_UUID = re.compile(r"^[\da-fA-F]{8}-[\da-fA-F]{4}-[\da-fA-F]{4}-[\da-fA-F]{4}-[\da-fA-F]{12}$")

_CODES = {
    400: "BadRequestHttpException",
    401: "HttpException",
    403: "AccessDeniedHttpException",
    404: "NotFoundHttpException",
    405: "MethodNotAllowedHttpException",
    409: "ConflictHttpException",
    422: "ValidationException",
    429: "TooManyRequestsHttpException",
}


@dataclass
class Reply:
    """
    A complete HTTP answer: status, headers and body bytes.
    """

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, value: Any, headers: Mapping[str, str] | None = None) -> Reply:
    """
    ``value`` encoded as JSON with ``Content-Type: application/json``.
    """
    out = {"Content-Type": "application/json"}
    out.update(headers or {})
    return Reply(status, json.dumps(value).encode("utf-8"), out)


def no_content() -> Reply:
    """
    ``204 No Content``.
    """
    return Reply(204)


def error_reply(
    status: int, detail: str, code: str | None = None, headers: Mapping[str, str] | None = None
) -> Reply:
    """
    The Panel's error JSON with one element.
    """
    error = {"code": code or _CODES.get(status, "HttpException"), "status": str(status), "detail": detail}
    return json_reply(status, {"errors": [error]}, headers)


def not_found() -> Reply:
    """
    The Panel's 404 for an unknown route or record.
    """
    return error_reply(404, NOT_FOUND_DETAIL)


def server_error() -> Reply:
    """
    The Panel's generic 500 (production mode hides the exception text).
    """
    return error_reply(500, SERVER_ERROR_DETAIL, code="ErrorException")


def is_uuid(value: Any) -> bool:
    """
    Laravel's ``uuid`` rule.
    """
    return isinstance(value, str) and _UUID.match(value) is not None


def is_ip(value: Any) -> bool:
    """
    Laravel's ``ip`` rule (IPv4 or IPv6, no zone index).
    """
    if not isinstance(value, str) or "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_numeric(value: Any) -> bool:
    """
    Laravel's ``numeric`` rule: a JSON number or a numeric string.
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value.strip())
        except ValueError:
            return False
        return value.strip() != ""
    return False


_MISSING = object()


class Validator:
    """
    Collect field errors the way Laravel's validator reports them: at most
    one error per field, in rule order, then render a 422 reply.

    Only strict JSON booleans pass ``boolean`` (Laravel also takes 0, 1, "0"
    and "1"): upstream Wings always sends real booleans, and a stricter double
    catches a daemon that does not.
    """

    def __init__(self, data: Any) -> None:
        self._data = data if isinstance(data, Mapping) else {}
        self.errors: list[dict[str, Any]] = []
        self._failed: set[str] = set()

    def value(self, path: str, data: Any = None) -> Any:
        """
        The value at dotted ``path`` (``_MISSING`` when absent).
        """
        node: Any = self._data if data is None else data
        for part in path.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return _MISSING
        return node

    def fail(self, path: str, rule: str, message: str) -> None:
        """
        Record a failure of ``rule`` for ``path`` unless the field already
        failed.
        """
        if path in self._failed:
            return
        self._failed.add(path)
        attribute = path.replace("_", " ")
        self.errors.append(
            {
                "code": "ValidationException",
                "status": "422",
                "detail": message.format(attribute=attribute),
                "meta": {"source_field": path, "rule": rule},
            }
        )

    def check(
        self,
        path: str,
        *,
        required: bool = False,
        present: bool = False,
        nullable: bool = False,
        kind: str | None = None,
        choices: tuple[str, ...] | None = None,
    ) -> Any:
        """
        Apply the usual rule set to one field and return its value
        (``None`` when absent).  ``kind`` is one of ``boolean``, ``string``,
        ``array``, ``uuid``, ``ip``, ``numeric``.
        """
        value = self.value(path)
        if value is _MISSING:
            if required:
                self.fail(path, "required", "The {attribute} field is required.")
            elif present:
                self.fail(path, "present", "The {attribute} field must be present.")
            return None
        if value is None or value == "" or (required and value in ([], {})):
            # ConvertEmptyStringsToNull runs before validation; "required"
            # also rejects an empty array.
            if required:
                self.fail(path, "required", "The {attribute} field is required.")
                return None
            if nullable:
                return None
            value = None
        checks = {
            "boolean": (lambda v: isinstance(v, bool), "The {attribute} field must be true or false."),
            "string": (lambda v: isinstance(v, str), "The {attribute} must be a string."),
            "array": (lambda v: isinstance(v, (dict, list)), "The {attribute} must be an array."),
            "uuid": (is_uuid, "The {attribute} must be a valid UUID."),
            "ip": (is_ip, "The {attribute} must be a valid IP address."),
            "numeric": (is_numeric, "The {attribute} must be a number."),
        }
        if kind is not None:
            test, message = checks[kind]
            if not test(value):
                self.fail(path, kind, message)
                return None
        if choices is not None and value not in choices:
            self.fail(path, "in", "The selected {attribute} is invalid.")
            return None
        return value

    def reply(self) -> Reply | None:
        """
        The 422 reply, or ``None`` when every field passed.
        """
        if not self.errors:
            return None
        return json_reply(422, {"errors": self.errors})
