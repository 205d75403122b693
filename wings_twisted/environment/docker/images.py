"""
Making sure a container's image is there before it is created
(lifecycle.md §20.3, §16.2 step 5).

* A ``~``-prefixed image is local: it is never pulled, and a missing one is
  a clear error instead of the engine's "no such image".
* Any other image is pulled (``POST /images/create?fromImage=…&tag=…``) on
  every container creation, as upstream does, within ``PULL_TIMEOUT``, with
  the credentials of the first ``docker.registries`` entry whose key is a
  prefix of the image name (``X-Registry-Auth``).  The engine answers with a
  stream of JSON progress objects; each becomes a ``"<status> <progress>"``
  line for ``on_progress``.  A failure arrives either as an HTTP error
  (Docker for refused credentials) or as an ``error`` object inside a 200
  stream (both engines, mid-pull): both fail the pull.
* When the pull fails but an image with exactly that reference exists
  locally, the daemon goes on with it and logs a warning.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import quote

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.logger import Logger

from ...config import Config
from .client import DockerClient
from .errors import DockerError
from .spec import full_reference, image_name, local_image, registry_auth, split_image

log = Logger()

#: Seconds a pull may take (upstream's 15 minutes).
PULL_TIMEOUT = 15 * 60.0


class PullError(DockerError):
    """
    The engine answered the pull but reported an error in its stream (or
    the pull took too long).
    """


async def image_id(client: DockerClient, image: str) -> str | None:
    """
    The engine's id of ``image`` (``GET /images/{name}/json``); ``None``
    when it has no such image.
    """
    try:
        found = await client.call("GET", "/images/{}/json".format(
            quote(full_reference(image), safe="")))
    except DockerError as e:
        if e.missing:
            return None
        raise
    return str(found.get("Id") or "") if isinstance(found, dict) else ""


async def image_exists(client: DockerClient, image: str) -> bool:
    """
    Whether the engine has ``image``.
    """
    return await image_id(client, image) is not None


async def pull(client: DockerClient, image: str, config: Config,
               on_progress: Callable[[str], None], *, timeout: float = PULL_TIMEOUT) -> None:
    """
    Pull ``image``; ``DockerError`` when the engine refuses or the stream
    reports an error.
    """
    name, tag = split_image(image)
    params = {"fromImage": name}
    if tag:
        params["tag"] = tag
    headers = {}
    auth = registry_auth(image, config)
    if auth is not None:
        headers["X-Registry-Auth"] = auth
    errors: list[str] = []

    def progress(document: Any) -> None:
        if not isinstance(document, dict):
            return
        error = document.get("error") or (document.get("errorDetail") or {}).get("message")
        if error:
            errors.append(str(error))
            return
        status = str(document.get("status") or "")
        detail = str(document.get("progress") or "")
        if status:
            on_progress((status + " " + detail).rstrip())

    stream = await client.stream("POST", "/images/create", progress, params=params,
                                 headers=headers)
    try:
        await stream.done.addTimeout(timeout, client.clock)
    except TimeoutError:
        stream.stop()
        raise PullError("Pulling {} took longer than {:g} s.".format(image, timeout),
                        engine_message="the pull took longer than {:g} s".format(timeout)) \
            from None
    except CancelledError:
        stream.stop()
        raise
    if errors:
        raise PullError("Pulling {} failed: {}".format(image_name(image), errors[-1]),
                        engine_message=errors[-1])


async def ensure_image(client: DockerClient, image: str, config: Config,
                       on_progress: Callable[[str], None]) -> str:
    """
    The rules of the module docstring; the image's id (empty when the
    engine does not say).  ``DockerError`` when no usable image can be had.
    """
    name = image_name(image)
    if not name:
        raise DockerError("The server has no container image configured.")
    if local_image(image):
        found = await image_id(client, image)
        if found is None:
            raise DockerError("The local image {} does not exist on this node (images "
                              "starting with ~ are never pulled).".format(name))
        return found
    try:
        await pull(client, image, config, on_progress)
    except DockerError as e:
        if e.unreachable and not isinstance(e, PullError):
            raise
        found = await image_id(client, image)
        if found is not None:
            log.warn("Pulling {image} failed ({error}); using the local image", image=name,
                     error=e.message)
            return found
        raise DockerError("Cannot pull the image {}: {}".format(
            name, e.engine_message or e.message), status=e.status) from None
    return await image_id(client, image) or ""
