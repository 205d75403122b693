"""
Credentials, all pure (no Twisted, no clock reads): the node's bearer token
(``bearer``), the panel's signed JWTs and their kinds (``tokens``), the
single-use ``unique_id`` store (``store``) and the websocket deny lists
(``denials``).  The common names are re-exported here.
"""

from .bearer import BearerError, MissingBearer, WrongBearer, check_bearer
from .store import TokenStore
from .tokens import (DOWNLOAD_BACKUP, DOWNLOAD_FILE, MAX_TOKEN_LENGTH, TRANSFER, UPLOAD,
                     WEBSOCKET, ExpiredToken, InvalidToken, MalformedToken, ScopeMismatch,
                     TokenKind, WrongKind, check_kind, check_scope, decode_token)

__all__ = [
    "BearerError", "MissingBearer", "WrongBearer", "check_bearer", "TokenStore",
    "DOWNLOAD_BACKUP", "DOWNLOAD_FILE", "MAX_TOKEN_LENGTH", "TRANSFER", "UPLOAD", "WEBSOCKET",
    "ExpiredToken", "InvalidToken", "MalformedToken", "ScopeMismatch", "TokenKind",
    "check_scope", "decode_token", "WrongKind", "check_kind",
]
