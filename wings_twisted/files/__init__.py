"""
The state the file routes keep between requests, per node: chunked upload
sessions (``chunked``), remote pulls (``pull``), archive jobs and tasks
(``archives``).
``FileServices`` bundles them; ``web.site.build_root`` makes the node's one
bundle and the file routes share it.

A feature package: it may use the domain (``servers``, ``fs``, ``streams``,
``archive``) and the ground, never the web layer.
"""

from __future__ import annotations

from twisted.internet.defer import DeferredLock

from ..node import Node
from .archives import ArchiveTasks
from .chunked import ChunkedUploads
from .pull import Pulls


class FileServices:
    """
    The node's file-route state.
    """

    def __init__(self, node: Node) -> None:
        self.uploads = ChunkedUploads(node)
        #: Remote pulls (``pull``).
        self.pulls = Pulls(node)
        #: Archive jobs and the fork's archive tasks (``files.archives``).
        self.archive_tasks = ArchiveTasks(node)
        #: One line edit at a time per server (``web.file_lines``).
        self.edit_locks: dict[str, DeferredLock] = {}
