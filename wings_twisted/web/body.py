"""
Reading JSON request bodies (api.md §2.10): parsed whatever the
``Content-Type``, empty → 400 with the "parsable format" text, malformed →
400 with the generic text.
"""

from __future__ import annotations

import json
from typing import IO, Any

from twisted.web.server import Request

from .errors import GENERIC_MESSAGE, BadRequest

EMPTY_BODY = "The data passed in the request was not in a parsable format. Please try again."
MAX_JSON = 8 * 1024 * 1024


def read_json(request: Request) -> Any:
    """
    The decoded JSON body of ``request``.
    """
    content: IO[bytes] | None = request.content
    if content is None:
        raise BadRequest(EMPTY_BODY)
    content.seek(0)
    data = content.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise BadRequest("The request body is too large.", status=413)
    if not data.strip():
        raise BadRequest(EMPTY_BODY)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(GENERIC_MESSAGE)


def read_object(request: Request) -> dict[str, Any]:
    """
    The body, which must be a JSON object.
    """
    body = read_json(request)
    if not isinstance(body, dict):
        raise BadRequest(GENERIC_MESSAGE)
    return body
