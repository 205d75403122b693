"""
What the daemon checks before it starts, beyond what loading checks: the
values that are well-typed yet cannot work (config.md §2, §3, §4.1).

:func:`check_for_boot` raises one :class:`~.errors.ConfigError` naming the
key, so start-up ends with a single line such as
``/etc/pterodactyl/config.yml: remote: must be the Panel's URL (http:// or
https://), got ''``.  Loading (:func:`~.load.config_from_dict`) stays
lenient about these, so tests and ``POST /api/update`` can build partial
configurations; only a daemon about to boot needs all of them.

Checked: ``remote`` (an ``http``/``https`` URL with a host, as every Panel
call is built on it), ``token_id`` and ``token`` (present, and without the
``.`` that separates them in ``Authorization: Bearer <token_id>.<token>``,
which the Panel would refuse), the TLS files when ``api.ssl.enabled``
(readable, a PEM certificate and the unencrypted PEM key that belongs to
it), ``remote_query.timeout`` and
``remote_query.boot_servers_per_page`` (at least 1).  Ports and empty paths
are refused by loading already; a directory that cannot be created is
reported by :func:`ensure_directories`.

Reads files (the TLS pair, parsed with ``cryptography``) and creates
directories; imports nothing from Twisted.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from .errors import ConfigError, _describe
from .schema import Config


def _check_remote(remote: str) -> None:
    try:
        parts = urlsplit(remote)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        usable = False
    if not usable:
        raise ConfigError(
            "must be the Panel's URL (http:// or https://), got {}".format(_describe(remote)),
            key="remote")


def _check_credential(name: str, value: str) -> None:
    if not value:
        raise ConfigError("must not be empty: copy it from the Panel's node configuration",
                          key=name)
    if "." in value or any(c.isspace() for c in value):
        raise ConfigError(
            "must not contain '.' or spaces: the Panel reads "
            "'Authorization: Bearer <token_id>.<token>'", key=name)


def _read_pem(key: str, path: str) -> bytes:
    if not path:
        raise ConfigError("must name a PEM file when api.ssl.enabled is true", key=key)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError("cannot read {}: {}".format(path, e.strerror or e), key=key) from None


def _check_tls(cert_path: str, key_path: str) -> None:
    """
    The certificate chain and its private key load, and belong together
    (what the TLS listener would otherwise refuse with a traceback).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_data = _read_pem("api.ssl.cert", cert_path)
    key_data = _read_pem("api.ssl.key", key_path)
    try:
        certificate = x509.load_pem_x509_certificates(cert_data)[0]
    except ValueError:
        raise ConfigError("{} holds no PEM certificate".format(cert_path),
                          key="api.ssl.cert") from None
    try:
        private = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError):
        raise ConfigError("{} holds no unencrypted PEM private key".format(key_path),
                          key="api.ssl.key") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise ConfigError("{} is not the private key of {}".format(key_path, cert_path),
                          key="api.ssl.key")


def check_for_boot(config: Config, *, source: str | None = None) -> None:
    """
    Refuse a configuration the daemon cannot boot with.

    :param source: the file name prefixed to the message.
    :raises ConfigError: one line naming the first bad key.
    """
    try:
        _check_remote(config.remote)
        _check_credential("token_id", config.token_id)
        _check_credential("token", config.token)
        if config.api.ssl.enabled:
            _check_tls(config.api.ssl.cert, config.api.ssl.key)
        query = config.remote_query
        for key, value in (("remote_query.timeout", query.timeout),
                           ("remote_query.boot_servers_per_page", query.boot_servers_per_page)):
            if value < 1:
                raise ConfigError("must be at least 1, got {}".format(value), key=key)
    except ConfigError as e:
        raise e.with_source(source) from None


#: The ``system`` keys naming directories the daemon creates at boot.
DIRECTORY_KEYS = ("root_directory", "log_directory", "data", "backup_directory",
                  "archive_directory", "tmp_directory")


def ensure_directories(config: Config, *, source: str | None = None) -> None:
    """
    Create the daemon's state and data directories (0700, config.md §4.1).

    :raises ConfigError: one names the key whose directory cannot be
        created, e.g. ``system.data: cannot create /srv/x: Permission denied``.
    """
    for name in DIRECTORY_KEYS:
        path = getattr(config.system, name)
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ConfigError("cannot create {}: {}".format(path, e.strerror or e),
                              key="system." + name, source=source) from None
