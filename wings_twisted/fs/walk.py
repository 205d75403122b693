"""
The resolution walk of ``api.md`` §2.11: from a cleaned client path to a directory descriptor.

A client path never becomes a host path string.  After the lexical cleaning of `clean_path`, the
walk opens the volume root once and every further component with
``openat(O_DIRECTORY | O_NOFOLLOW)`` relative to the descriptor of its parent, keeping the stack of
open directory descriptors:

* an intermediate symlink is accepted only when its text is relative: its components are spliced
  into the rest of the walk, a ``..`` pops the descriptor stack and one that would pop the root
  fails, and at most `MAX_LINK_HOPS` links are followed per walk;
* absolute link text, a link that would climb above the root, a loop and a missing component are
  all `NotFound`; an existing non-directory component is `NotDirectory`; a walk deeper than
  `MAX_DEPTH` directories is `NameTooLong`;
* because every step is an ``openat`` with ``O_NOFOLLOW`` from a descriptor already held, swapping a
  directory for a symlink concurrently can only make the walk fail, never leave the root.

The walk only ever yields the descriptor of a *directory*; what happens to the final component
(never followed for open, read, write or stat) is up to the operation that asked.
"""

from __future__ import annotations

import errno
import os
import stat as _stat
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from .paths import (
    DIR_FLAGS,
    DIR_MODE,
    MAX_DEPTH,
    MAX_LINK_HOPS,
    NAME_MAX,
    Escapes,
    NameTooLong,
    NotFound,
    Owner,
    close_all,
    give,
    lstat_at,
    translate_error,
)

__all__ = ["directory", "entry"]


def _open_root(root: str, clean: str) -> int:
    """
    Open the volume directory itself; a missing or replaced volume is `NotFound` for ``clean``.
    """
    try:
        return os.open(root, DIR_FLAGS)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            raise NotFound(clean) from None
        raise


@contextmanager
def directory(
    root: str,
    clean: str,
    parts: Sequence[str],
    *,
    owner: Owner = None,
    created: list[tuple[int, str]] | None = None,
    mkdir: Callable[..., None] = os.mkdir,
) -> Iterator[int]:
    """
    The descriptor of the directory ``parts`` leads to from the volume ``root``, valid inside the
    ``with`` block.

    :param clean: the cleaned path the parts come from, for errors.
    :param owner: given the directories created.
    :param created: when given, missing directories are created (0755, chowned) and recorded in it
        as ``(duplicate of the parent descriptor, name)``, shallowest first; the caller releases
        them with `release_created`.
    :param mkdir: ``os.mkdir`` (tests pass one that races with a remover).
    """
    stack = [_open_root(root, clean)]
    try:
        _descend(stack, parts, clean, owner, created, mkdir)
        yield stack[-1]
    finally:
        close_all(stack)


@contextmanager
def entry(root: str, clean: str, parts: Sequence[str]) -> Iterator[tuple[int, str | None]]:
    """
    The directory holding the entry ``parts`` leads to and the entry's name in it, valid inside
    the ``with`` block, following a final symlink as well when its text is relative and stays
    beneath the root (``sftp.md`` §6.2 ``STAT``): absolute or escaping link text is `Escapes`.

    The name is ``None`` when the path ends at a directory (the root, or link text ending in
    ``/``, ``.`` or ``..``): the descriptor is then that directory.  A missing final entry is
    yielded as it is; the caller finds it missing.
    """
    stack = [_open_root(root, clean)]
    try:
        pending = list(parts)
        hops = 0
        while pending:
            *above, last = pending
            _descend(stack, above, clean, None, None)
            if last in ("", ".", ".."):
                _descend(stack, [last], clean, None, None)
                break
            st = lstat_at(stack[-1], last)
            if st is None or not _stat.S_ISLNK(st.st_mode):
                yield stack[-1], last
                return
            target = os.readlink(last, dir_fd=stack[-1])
            hops += 1
            if hops > MAX_LINK_HOPS or target == "" or target.startswith("/"):
                raise Escapes(clean)
            pending = target.split("/")
        yield stack[-1], None
    finally:
        close_all(stack)


def _descend(
    stack: list[int],
    parts: Sequence[str],
    clean: str,
    owner: Owner,
    created: list[tuple[int, str]] | None,
    mkdir: Callable[..., None] = os.mkdir,
) -> None:
    """
    Walk ``parts`` as directories from ``stack[-1]``, pushing one descriptor per level.
    """
    pending = list(reversed(parts))
    hops = 0
    mkdir_attempts = 0
    just_created: str | None = None
    while pending:
        name = pending.pop()
        created_now = just_created == name
        just_created = None
        if name == "" or name == ".":
            continue
        if name == "..":
            # Only link text can bring a ".." here: clean_path removed the client's.
            if len(stack) == 1:
                raise Escapes(clean)
            os.close(stack.pop())
            continue
        if len(os.fsencode(name)) > NAME_MAX:
            raise NameTooLong(clean)
        if len(stack) > MAX_DEPTH:
            raise NameTooLong(clean)
        top = stack[-1]
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=top)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                try:
                    target = os.readlink(name, dir_fd=top)
                except OSError:
                    # Not a symlink (or no longer one).
                    raise translate_error(e, clean) from None
                hops += 1
                if hops > MAX_LINK_HOPS or target == "" or target.startswith("/"):
                    raise Escapes(clean) from None
                pending.extend(reversed(target.split("/")))
                continue
            if e.errno == errno.ENOENT and created is not None:
                # Bounded, in case something keeps removing what we create.
                mkdir_attempts += 1
                if mkdir_attempts > 2 * MAX_DEPTH:
                    raise NotFound(clean) from None
                try:
                    mkdir(name, DIR_MODE, dir_fd=top)
                except FileExistsError:
                    pass
                except OSError as mkdir_error:
                    raise translate_error(mkdir_error, clean) from None
                else:
                    just_created = name
                pending.append(name)
                continue
            raise translate_error(e, clean) from None
        stack.append(fd)
        if created_now and created is not None:
            # Set the mode and owner through the descriptor: the name could have been
            # swapped since mkdir, the descriptor cannot.
            os.fchmod(fd, DIR_MODE)
            give(fd, owner)
            created.append((os.dup(top), name))

