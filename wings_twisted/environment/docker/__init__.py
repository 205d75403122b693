"""
The Docker environment (``environment.driver: docker``, lifecycle.md §13,
§16.3, §19–§21): game servers in containers over the Docker Engine API.

Modules, lowest first: ``errors`` (the one error type), ``host`` (where the
engine is, API version), ``info`` (``GET /api/system`` data), ``client``
(treq over the engine socket: calls and JSON streams), ``attach`` (the
HTTP 101 hijack for a container's stdio), ``spec`` (the container and
installer documents of §20.1/§16.3, pure), ``stats`` (the formulas of
§13.2, pure), ``images`` (pulls with registry credentials, §20.3),
``network`` (the node network at boot, §20.4), ``installer`` (the install
container, §16.3) and ``environment`` (``DockerEnvironment``, the
``IEnvironment`` itself).  The client's public names are re-exported here.
"""

from __future__ import annotations

from .client import DEFAULT_TIMEOUT, DockerClient, Stream
from .errors import DockerError
from .host import (
    DEFAULT_HOST,
    FALLBACK_API_VERSION,
    MAX_API_VERSION,
    DockerHost,
    EngineEndpointFactory,
    negotiated_version,
    parse_api_version,
    parse_docker_host,
)
from .info import EngineInfo, engine_info_from

__all__ = [
    "DEFAULT_HOST", "DEFAULT_TIMEOUT", "FALLBACK_API_VERSION", "MAX_API_VERSION", "DockerClient",
    "DockerError", "DockerHost", "EngineEndpointFactory", "EngineInfo", "Stream",
    "engine_info_from", "negotiated_version", "parse_api_version", "parse_docker_host",
]
