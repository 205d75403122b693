"""
SFTP logins checked by the panel (``sftp.md`` §3.2–§3.5, ``panel.md`` §4).

Every attempt goes through one `PanelChecker`, registered in the portal for public keys and
passwords (so Conch offers exactly ``publickey,password``):

1. the username must match ``^(.+)\\.([a-z0-9]{8})$`` (case-insensitive) before anything else —
   scanners never reach the panel;
2. a password attempt while ``system.sftp.key_only`` is set is refused without a panel call;
3. a public key offered without a signature (OpenSSH's "would you accept this key?") is asked of
   the panel once and the answer remembered for this connection and username; an accepted key
   answers ``PK_OK`` (``ValidPublicKey``);
4. a signed public-key request is verified first — a bad signature never reaches the panel —
   then answered from the remembered answer, or from the panel;
5. a panel success must name a server registered on this node, else the attempt fails.

The panel call's body (``sftp.md`` §3.4)::

    {"type": "password" | "public_key", "username": "<as sent>",
     "password": "<password> | <algorithm> <base64 key blob>\\n",
     "ip": "<client address>:<port>", "session_id": "<base64>", "client_version": "<base64>"}

Any 4xx answer is a refused login (logged as a warning with the panel's message); a network
error, a 5xx or an unusable answer after the client's 30-second retry budget is a refused login
logged as an error.  The Conch user-auth service (`PanelUserAuthServer`) puts what the checker
needs about the connection into the credentials, allows 6 failed attempts, keeps Conch's 1-second
delay after a wrong password, and cancels a panel call still running when the client leaves.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh import keys
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword, SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from zope.interface import implementer

from ..panel import PanelClient, PanelError, SftpGrant

__all__ = ["ConnectionFacts", "Login", "PanelChecker", "PanelUserAuthServer", "split_username"]

log = Logger()

_USERNAME = re.compile(r"(.+)\.([a-z0-9]{8})", re.IGNORECASE)


def split_username(username: bytes) -> tuple[str, str] | None:
    """
    ``(panel username, server short id)`` of an SFTP username, or ``None`` when it does not
    have the form ``<user>.<8 letters or digits>`` (the last dot separates them).
    """
    try:
        text = username.decode("utf-8")
    except UnicodeDecodeError:
        return None
    match = _USERNAME.fullmatch(text)
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True)
class Login:
    """
    What a successful login binds the connection to (``sftp.md`` §3.5 step 6): the panel user,
    the server, the permission list and the client address without its port.
    """

    user: str
    server: str
    permissions: frozenset[str]
    ip: str


@dataclass
class ConnectionFacts:
    """
    What the checker needs to know about the SSH connection an attempt arrives on.

    :ivar address: ``host:port`` of the client (``[v6]:port`` for IPv6).
    :ivar keys: the panel's answers about public keys on this connection, keyed by
        ``(username, key blob)``: the grant, or ``None`` for a refusal.
    """

    host: str
    port: int
    session_id: bytes
    client_version: bytes
    keys: dict[tuple[bytes, bytes], SftpGrant | None] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """
        ``host:port`` as the panel receives it (Go's ``net.JoinHostPort``).
        """
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        return "{}:{}".format(host, self.port)


@implementer(IUsernamePassword)
class PanelPassword:
    """
    A password attempt and the connection it arrived on.
    """

    def __init__(self, username: bytes, password: bytes, facts: ConnectionFacts) -> None:
        self.username = username
        self.password = password
        self.facts = facts

    def checkPassword(self, password: bytes) -> bool:
        """
        Never checked locally: the panel decides.
        """
        return False


@implementer(ISSHPrivateKey)
class PanelKey:
    """
    A public-key attempt (with or without a signature) and the connection it arrived on.
    """

    def __init__(self, username: bytes, algName: bytes, blob: bytes, sigData: bytes | None,
                 signature: bytes | None, facts: ConnectionFacts) -> None:
        self.username = username
        self.algName = algName
        self.blob = blob
        self.sigData = sigData
        self.signature = signature
        self.facts = facts


class _Undecided(UnauthorizedLogin):
    """
    The panel could not be asked (network error, 5xx, unusable answer): a refused attempt whose
    answer is not remembered.
    """


@implementer(ICredentialsChecker)
class PanelChecker:
    """
    The one checker of the SFTP portal: every attempt is decided by the panel.

    :param key_only: read on every attempt (``system.sftp.key_only``).
    :param registered: whether a server UUID is registered on this node.
    """

    credentialInterfaces = (ISSHPrivateKey, IUsernamePassword)

    def __init__(self, panel: PanelClient, *, key_only: Callable[[], bool],
                 registered: Callable[[str], bool]) -> None:
        self._panel = panel
        self._key_only = key_only
        self._registered = registered

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """
        Decide one attempt (the module docstring's steps); fires with the `Login` or fails with
        ``UnauthorizedLogin`` (or ``ValidPublicKey`` for an accepted key query).
        """
        if isinstance(credentials, PanelKey):
            return Deferred.fromCoroutine(self._check_key(credentials))
        if isinstance(credentials, PanelPassword):
            return Deferred.fromCoroutine(self._check_password(credentials))
        raise UnauthorizedLogin("unsupported credentials")

    def _username(self, username: bytes, facts: ConnectionFacts) -> None:
        if split_username(username) is None:
            log.info("SFTP login refused for {username!r} from {ip}: invalid format",
                     username=username, ip=facts.host)
            raise UnauthorizedLogin("invalid username format")

    async def _check_password(self, credentials: PanelPassword) -> Login:
        facts = credentials.facts
        self._username(credentials.username, facts)
        if self._key_only():
            log.info("SFTP password login refused for {username!r} from {ip}: password "
                     "authentication is disabled; only SSH keys are allowed",
                     username=credentials.username, ip=facts.host)
            raise UnauthorizedLogin("password authentication is disabled")
        password = credentials.password.decode("utf-8", "surrogateescape")
        grant = await self._ask("password", credentials.username, password, facts)
        return self._login(grant, credentials.username, facts)

    async def _check_key(self, credentials: PanelKey) -> Login:
        facts = credentials.facts
        self._username(credentials.username, facts)
        try:
            key = keys.Key.fromString(credentials.blob)
        except (keys.BadKeyError, ValueError):
            raise UnauthorizedLogin("unparsable public key")
        if credentials.signature is not None:
            if credentials.sigData is None or not key.verify(credentials.signature,
                                                             credentials.sigData):
                log.info("SFTP login refused for {username!r} from {ip}: bad key signature",
                         username=credentials.username, ip=facts.host)
                raise UnauthorizedLogin("bad signature")
        cache_key = (credentials.username, credentials.blob)
        if cache_key in facts.keys:
            grant = facts.keys[cache_key]
            if grant is None:
                raise UnauthorizedLogin("public key refused")
        else:
            line = "{} {}\n".format(key.sshType().decode("ascii"),
                                    base64.b64encode(credentials.blob).decode("ascii"))
            try:
                grant = await self._ask("public_key", credentials.username, line, facts)
            except _Undecided:
                raise
            except UnauthorizedLogin:
                facts.keys[cache_key] = None
                raise
            facts.keys[cache_key] = grant
        login = self._login(grant, credentials.username, facts)
        if credentials.signature is None:
            raise ValidPublicKey()
        return login

    async def _ask(self, kind: str, username: bytes, secret: str,
                   facts: ConnectionFacts) -> SftpGrant:
        body = {
            "type": kind,
            "username": username.decode("utf-8"),
            "password": secret,
            "ip": facts.address,
            "session_id": base64.b64encode(facts.session_id).decode("ascii"),
            "client_version": base64.b64encode(facts.client_version).decode("ascii"),
        }
        try:
            return await self._panel.validate_sftp(body)
        except CancelledError:
            raise
        except PanelError as e:
            if 400 <= e.status < 500:
                log.warn("SFTP login refused by the panel for {username!r} from {ip}: {error}",
                         username=username, ip=facts.host, error=str(e))
                raise UnauthorizedLogin("the credentials provided were invalid")
            error = str(e)
        except Exception as e:
            error = str(e) or type(e).__name__
        log.error("Checking SFTP credentials of {username!r} from {ip} failed: {error}",
                  username=username, ip=facts.host, error=error)
        raise _Undecided("the panel could not check the credentials")

    def _login(self, grant: SftpGrant, username: bytes, facts: ConnectionFacts) -> Login:
        if not self._registered(grant.server):
            log.warn("SFTP login of {username!r} from {ip} refused: server {server} is not on "
                     "this node", username=username, ip=facts.host, server=grant.server)
            raise UnauthorizedLogin("server not on this node")
        return Login(grant.user, grant.server, frozenset(grant.permissions), facts.host)


class _ConnectionPortal:
    """
    The factory's portal as one connection's user-auth service sees it: Conch's credentials are
    replaced by ours, which carry the connection's facts, and the transport is the mind (the
    realm binds the avatar to it).  Attempts still running are cancelled by `cancel_all`.
    """

    def __init__(self, portal: Any, transport: Any) -> None:
        self._portal = portal
        self._transport = transport
        self._pending: set[Deferred[Any]] = set()

    def listCredentialsInterfaces(self) -> list[Any]:
        """
        The interfaces of the portal's checkers.
        """
        interfaces: list[Any] = self._portal.listCredentialsInterfaces()
        return interfaces

    def login(self, credentials: Any, mind: object, *interfaces: Any) -> Deferred[Any]:
        """
        Log in with ``credentials`` wrapped in `PanelPassword` or `PanelKey`.
        """
        facts = self._transport.facts()
        ours: object
        if isinstance(credentials, SSHPrivateKey):
            ours = PanelKey(credentials.username, credentials.algName, credentials.blob,
                            credentials.sigData, credentials.signature, facts)
        else:
            ours = PanelPassword(credentials.username, credentials.password, facts)
        d: Deferred[Any] = self._portal.login(ours, self._transport, *interfaces)
        self._pending.add(d)

        def done(result: object) -> object:
            self._pending.discard(d)
            return result

        return d.addBoth(done)

    def cancel_all(self) -> None:
        """
        Cancel every attempt still waiting (the client left).
        """
        for d in list(self._pending):
            d.cancel()


class PanelUserAuthServer(SSHUserAuthServer):
    """
    Conch's ``ssh-userauth`` service with credentials that carry the connection's facts, 6 failed
    attempts allowed, Conch's 1-second delay after a refused password, and the attempts still
    waiting for the panel cancelled when the client leaves.

    The transport (``transport.SftpTransport``) provides ``facts()`` and ``clock``.
    """

    # Conch disconnects once the count of failures *exceeds* this: the 6th failure disconnects.
    attemptsBeforeDisconnect = 5
    # The login grace time is the transport's; this only backs it up.
    loginTimeout = 24 * 60 * 60

    def serviceStarted(self) -> None:
        """
        Set up Conch's state on the transport's clock, with this connection's portal.
        """
        self.clock = self._transport().clock
        super().serviceStarted()
        self.portal = _ConnectionPortal(self.portal, self.transport)

    def _transport(self) -> Any:
        return self.transport

    def serviceStopped(self) -> None:
        """
        Cancel the login timer and whatever the panel is still being asked.
        """
        super().serviceStopped()
        self.portal.cancel_all()
