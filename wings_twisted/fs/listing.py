"""
Reading a volume's metadata for clients: directory listings (``api.md``
§5.2), the stat of one entry (§8.3) and the fork's name search (§8.2), all as
stat objects (``info.stat_object``).

* A listing never follows symlinks (``lstat`` of each entry), includes every
  entry but ``.``/``..`` (the denylist does not filter listings), puts
  directories first and sorts each group by name bytes (project: upstream's
  comparator is inconsistent; the Panel re-sorts anyway).  Every regular file
  is opened to sniff its MIME type; one that vanishes or cannot be read is
  ``application/octet-stream`` instead of failing the whole listing.
* Sniffed types are remembered per file identity and version (device, inode,
  size, mtime and ctime in ns), so a directory listed again — the file
  manager does it on every visit — costs one ``fstatat`` per entry.  Any
  change of the file changes its mtime or ctime, so the cache never answers
  for other content.  ``list_directory_json`` (the route's body) remembers the
  encoded stat object of each regular file and directory the same way (the
  name and mode join the key), so a listing seen before is one ``fstatat``
  and one dictionary lookup per entry: 10,000 entries are ~2.4 MB of JSON
  whose encoding was most of a warm listing's time (``bench/files.py``).  The
  cache holds 4 MiB at most (a 10,000-file folder), a bound on what it adds to
  the daemon's memory.
* The search walks depth-first from a start directory without following
  symlinks, matches names and (project: ``content``) file contents, skips (neither descends nor reports) directories named like an
  entry of ``Search.blacklisted_dirs`` (case-insensitively), stops descending
  below ``max_recursion_depth``, and is bounded: at most ``limit`` results
  and ``deadline`` seconds (project), after which it answers what it found.
  Result names are volume-relative paths without a leading slash (project).

Pure module: no Twisted; run it through ``run_blocking``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat as _stat
import threading
import time
from typing import Any, Callable, Iterable

from .info import DIRECTORY, OCTET_STREAM, sniff_at, stat_object
from .paths import DIR_FLAGS, NotDirectory, NotFound, lstat_at, split_path
from .volume import Volume

#: Sniffed types kept; the cache is emptied when it reaches this size.
MIME_CACHE_SIZE = 65536
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
CONTENT_CHUNK = 1024 * 1024
#: Search bounds (project).
SEARCH_LIMIT = 10000
SEARCH_SECONDS = 10.0

#: Bytes of encoded stat objects kept; the cache is emptied when it reaches this size.
ENCODED_CACHE_BYTES = 4 * 1024 * 1024

_cache: dict[tuple[int, int, int, int, int], str] = {}
_cache_lock = threading.Lock()
_encoded: dict[tuple[str, int, int, int, int, int, int], bytes] = {}
_encoded_bytes = 0


def _mime(dir_fd: int, name: str, st: os.stat_result) -> str:
    if not _stat.S_ISREG(st.st_mode):
        return sniff_at(dir_fd, name, st)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    mime = _cache.get(key)
    if mime is None:
        mime = sniff_at(dir_fd, name, st)
        if mime != OCTET_STREAM or st.st_size:
            with _cache_lock:
                if len(_cache) >= MIME_CACHE_SIZE:
                    _cache.clear()
                _cache[key] = mime
    return mime


def _entries(dir_fd: int) -> list[tuple[str, os.stat_result]]:
    found = []
    with os.scandir(dir_fd) as iterator:
        for entry in iterator:
            try:
                found.append((entry.name, entry.stat(follow_symlinks=False)))
            except OSError:
                continue
    return found


def _ordered(entries: Iterable[tuple[str, os.stat_result]]) -> list[tuple[str, os.stat_result]]:
    """
    Directories first, then everything else, each by name bytes.
    """
    return sorted(entries, key=lambda item: (not _stat.S_ISDIR(item[1].st_mode),
                                             item[0].encode("utf-8", "surrogateescape")))


def list_directory(volume: Volume, path: str) -> list[dict[str, Any]]:
    """
    The stat objects of the entries of directory ``path`` (§5.2).

    :raises NotFound: missing, escaping, or not a directory.
    """
    try:
        with volume.directory(path) as (dir_fd, _):
            return [stat_object(name, st, _mime(dir_fd, name, st))
                    for name, st in _ordered(_entries(dir_fd))]
    except NotDirectory as e:
        raise NotFound(e.path) from None


def list_directory_json(volume: Volume, path: str) -> bytes:
    """
    ``list_directory`` as compact JSON (``json.dumps(..., separators=(",", ":"))``, byte for
    byte), from the cache of encoded entries where it can (module docstring).

    :raises NotFound: missing, escaping, or not a directory.
    """
    try:
        with volume.directory(path) as (dir_fd, _):
            parts = [_encoded_entry(dir_fd, name, st) for name, st in _ordered(_entries(dir_fd))]
    except NotDirectory as e:
        raise NotFound(e.path) from None
    return b"[" + b",".join(parts) + b"]"


def _encoded_entry(dir_fd: int, name: str, st: os.stat_result) -> bytes:
    global _encoded_bytes
    mode = st.st_mode
    cacheable = _stat.S_ISREG(mode) or _stat.S_ISDIR(mode)
    key = (name, st.st_dev, st.st_ino, mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if cacheable:
        found = _encoded.get(key)
        if found is not None:
            return found
    mime = _mime(dir_fd, name, st)
    data = json.dumps(stat_object(name, st, mime), separators=(",", ":")).encode("utf-8")
    # As the MIME cache: an empty file that could not be sniffed is not remembered.
    if cacheable and (mime != OCTET_STREAM or st.st_size):
        with _cache_lock:
            if _encoded_bytes + len(data) > ENCODED_CACHE_BYTES:
                _encoded.clear()
                _encoded_bytes = 0
            _encoded[key] = data
            _encoded_bytes += len(data)
    return data


def stat_entry(volume: Volume, path: str) -> dict[str, Any]:
    """
    The stat object of one entry, a final symlink described rather than
    followed (§8.3); the volume root is ``/``'s directory.

    :raises NotFound: missing or escaping.
    """
    clean, parts = split_path(path)
    if not parts:
        with volume.directory("") as (root_fd, _):
            return stat_object("/", os.fstat(root_fd), DIRECTORY)
    try:
        with volume.directory("/".join(parts[:-1])) as (parent_fd, _):
            name = parts[-1]
            found = lstat_at(parent_fd, name)
            if found is None:
                raise NotFound(clean)
            return stat_object(name, found, _mime(parent_fd, name, found))
    except NotDirectory:
        raise NotFound(clean) from None


def name_matches(name: str, pattern: str) -> bool:
    """
    The fork's search rule (§8.2), case-insensitive: a shell wildcard when
    the pattern has ``*`` or ``?``; else a substring, an extension or the
    whole name.
    """
    n, p = name.lower(), pattern.lower()
    if "*" in p or "?" in p:
        return fnmatch.fnmatchcase(n, p)
    if p in n or n == p:
        return True
    if p.startswith(".") or "." not in p:
        extension = n.rpartition(".")[2] if "." in n else None
        return extension is not None and extension == p.lstrip(".")
    return False


def search(volume: Volume, directory: str, pattern: str | None, *, blacklist: Iterable[str],
           max_depth: int, content: bytes | None = None, limit: int = SEARCH_LIMIT,
           deadline: float = SEARCH_SECONDS,
           clock: Callable[[], float] = time.monotonic) -> list[dict[str, Any]]:
    """
    The entries under ``directory`` whose names match ``pattern`` (any name
    when ``None``) and, when ``content`` is given, regular files that contain
    those bytes, as stat objects named by their volume-relative path, in walk
    order.

    :raises NotFound: the start directory is missing, escaping or not a
        directory.
    """
    skipped = {name.lower() for name in blacklist}
    stop_at = clock() + deadline
    results: list[dict[str, Any]] = []
    try:
        with volume.directory(directory) as (start_fd, clean):
            _walk(os.dup(start_fd), clean, max_depth, pattern, content, skipped, results, limit,
                  lambda: clock() >= stop_at)
    except NotDirectory as e:
        raise NotFound(e.path) from None
    return results


def _walk(start: int, prefix: str, max_depth: int, pattern: str | None, content: bytes | None,
          skipped: set[str], results: list[dict[str, Any]], limit: int,
          late: Callable[[], bool]) -> None:
    """
    Depth-first and lexical: each entry is reported, then (a directory) walked,
    before its next sibling.  Takes ownership of ``start``.
    """
    # (descriptor, its volume-relative path, depth, entries still to visit)
    stack: list[tuple[int, str, int, list[tuple[str, os.stat_result]]]] = []
    try:
        stack.append((start, prefix, 0, sorted(_entries(start), key=_name_bytes, reverse=True)))
        while stack and len(results) < limit and not late():
            fd, path, depth, pending = stack[-1]
            if not pending:
                os.close(fd)
                stack.pop()
                continue
            name, st = pending.pop()
            is_dir = _stat.S_ISDIR(st.st_mode)
            if is_dir and name.lower() in skipped:
                continue
            relative = path + "/" + name if path else name
            if ((pattern is None or name_matches(name, pattern))
                    and (content is None or (_stat.S_ISREG(st.st_mode)
                                             and contains(fd, name, content, late)))):
                results.append(stat_object(relative, st, _mime(fd, name, st)))
            if is_dir and depth + 1 <= max_depth:
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    entries = sorted(_entries(child), key=_name_bytes, reverse=True)
                except OSError:
                    os.close(child)
                    continue
                stack.append((child, relative, depth + 1, entries))
    finally:
        for fd, _, _, _ in stack:
            os.close(fd)


def contains(dir_fd: int, name: str, needle: bytes, late: Callable[[], bool]) -> bool:
    """
    Whether regular file ``name`` holds ``needle`` (read in bounded chunks
    that overlap by ``len(needle) - 1`` bytes; never a FIFO, never through
    a link).
    """
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        keep = len(needle) - 1
        tail = b""
        offset = 0
        while not late():
            data = os.pread(fd, CONTENT_CHUNK, offset)
            if not data:
                return False
            if needle in (tail + data if tail else data):
                return True
            offset += len(data)
            tail = data[-keep:] if keep else b""
        return False
    except OSError:
        return False
    finally:
        os.close(fd)


def _name_bytes(entry: tuple[str, os.stat_result]) -> bytes:
    return entry[0].encode("utf-8", "surrogateescape")
