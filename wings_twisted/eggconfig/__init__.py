"""
Egg configuration-file rewrites (lifecycle.md §2.2 ``configs``, §5 step 4.5).

Before every start the server layer calls `apply_configs` in a worker thread with the egg's
``configs`` list, e.g.::

    [{"file": "server.properties", "parser": "properties",
      "replace": [{"match": "server-port", "replace_with": "25565"},
                  {"match": "server-ip", "if_value": "127.0.0.1", "replace_with": "0.0.0.0"}]}]

Each file is read through the volume sandbox (`wings_twisted.fs.Volume`), edited in memory by the
parser named in the entry, and written back atomically (temporary file + rename, mode and owner
kept) only when its content changed.  Problems never raise: they come back as one line each, to
be logged, and the start continues (as upstream, which only logs).

Parsers (one module each): ``file`` and ``properties``/``ini`` in `lines`, ``yaml``/``yml`` and
``json`` in `tree`, ``xml`` in `markup`.  What a replacement does is decided in
`replacements.Replacement.outcome`: without ``if_value`` it always applies (creating the key);
with ``if_value`` only when the key exists and its current value's text equals it; with
``if_value: "regex:<pattern>"`` only when the pattern finds the current value, which then has
every match replaced by ``replace_with`` read as a Go template (``$1``, ``${name}``).

Placeholders: ``{{config.docker.interface}}`` and ``{{config.docker.network.interface}}`` become
``docker.network.interface`` of the daemon configuration (looked up by YAML key names); any other
``{{config.…}}`` is left as written.  This is upstream's current allowlist: replacement values can
carry user input (the Panel substitutes ``{{env.X}}`` first), so exposing the whole configuration
would let a server owner copy the node token into a file they can read.

Values: for YAML and JSON, a boolean ``replace_with`` stays a boolean and a string that is a
decimal integer in int64 range (``"25565"``, also ``"0123"``) becomes an integer, as upstream;
the string ``"true"`` stays a string.  Other parsers write the text.

Missing files: as upstream, every parser but ``file`` creates the file (and its directories) when
there is something to write; ``file`` skips a missing file silently.

Decisions that differ from upstream, and why:

* Size cap: files over `MAX_FILE_SIZE` (8 MiB; upstream 64 MiB) are not edited.  Configuration
  files are small and Python's parsers need far more memory and time per byte than Go's.
* Paths: resolved by the volume sandbox (a leading ``/`` is the volume root); a path with a
  ``..`` component is refused instead of being clamped; the egg denylist applies; a directory,
  a special file or a symlink at the path is refused (even a link inside the volume, which
  upstream follows: the sandbox never follows a final link); a path through a directory link
  that leaves the volume is refused by the sandbox.
* Encoding: files must be UTF-8 (a BOM is kept); upstream edits bytes blindly.
* Atomic writes: upstream truncates and rewrites in place, so a failure could leave a truncated
  file; here a failure leaves the original untouched.  Unchanged files are not rewritten.
* Formatting kept: ``properties`` and ``ini`` only rewrite the lines they change (upstream
  ``properties`` drops every comment after the header and re-escapes every value; upstream
  ``ini`` re-formats the file); ``file`` keeps each line's terminator; YAML/JSON keep key order
  (upstream sorts keys), and a YAML/JSON/XML document whose values are already right keeps its
  exact text.  When a value does change, YAML goes through PyYAML's YAML 1.1 safe loader and
  dumper (libyaml when available): comments are lost (as upstream) and 1.1 scalars (``on``,
  ``12:30``) are re-written in canonical form with the same meaning for YAML 1.1 readers such as
  SnakeYAML.
* ``if_value`` is honoured by every parser except ``file`` (upstream ignores it for ``ini`` and
  ``xml``); a conditional replacement never creates a missing key or element (upstream creates
  them in YAML/JSON) and never matches a mapping or a list.  ``regex:`` works for
  ``properties``, ``ini`` and ``xml`` too.  Patterns are Python ``re``, not RE2: the common
  syntax is the same, but backtracking is not linear-time.
* A JSON number with a fraction in ``replace_with`` stays a number (upstream writes it as a
  string).
* Several ``{{config.…}}`` placeholders in one value are each resolved (upstream substitutes the
  first one's value for all) and the ``file`` parser resolves them too.
* Wildcards may appear several times in a YAML/JSON path (upstream: only the first is one) and a
  wildcard reaching a scalar skips it instead of failing the file.  ``name[N]`` only indexes an
  existing list element (upstream may create a one-element list).
* A replacement that cannot be applied (a path through a scalar, a line break in an ini value) is
  skipped and reported; the file's other replacements are still written.  A JSON ``null`` or
  structured ``replace_with`` and an empty ``match`` are refused (upstream writes ``<nil>`` or
  matches every line).  ``properties`` values are written with Java's ``\\uXXXX`` escapes
  (surrogate pairs beyond the BMP, where upstream writes Go's ``\\U`` which Java cannot read).
* Entries are applied one after another (upstream runs them concurrently, so two entries for one
  file race).
* An empty JSON file is treated as ``{}`` (upstream fails on it after creating it); an XML
  ``DOCTYPE`` is refused.
* Control characters in the returned lines are escaped (``\\x0a``): file names, match paths and
  parser messages come from the egg or the files and must not forge log lines.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any, Callable, Sequence

from wings_twisted.config import Config
from wings_twisted.eggconfig.lines import edit_ini, edit_properties, edit_text
from wings_twisted.eggconfig.markup import edit_xml
from wings_twisted.eggconfig.replacements import Replacement, parse_replacement
from wings_twisted.eggconfig.tree import DocumentError, edit_json, edit_yaml
from wings_twisted.fs import (
    Denied,
    FsError,
    IsDirectory,
    NameTooLong,
    NotDirectory,
    NotFound,
    QuotaExceeded,
    SpecialFile,
    Volume,
    clean_path,
)

__all__ = ["MAX_FILE_SIZE", "PARSERS", "apply_configs"]

#: Largest file edited, in bytes.
MAX_FILE_SIZE = 8 * 1024 * 1024

_Editor = Callable[[str, Sequence[Replacement]], tuple[str, list[str]]]

#: Parser name -> editor(text, replacements) -> (new text, problems).
PARSERS: dict[str, _Editor] = {
    "file": edit_text,
    "properties": edit_properties,
    "ini": edit_ini,
    "yaml": edit_yaml,
    "yml": edit_yaml,
    "json": edit_json,
    "xml": edit_xml,
}

_BOM = b"\xef\xbb\xbf"
#: Escaped in the returned lines: file names, paths and parser messages must not forge log lines.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_READ_CHUNK = 64 * 1024

_FS_PROBLEMS: Sequence[tuple[type[FsError], str]] = (
    (Denied, "the file is on the egg's denylist"),
    (IsDirectory, "the path is a directory"),
    (NotDirectory, "a parent of the file is not a directory"),
    (SpecialFile, "the path is not a regular file"),
    (NameTooLong, "the path is too long"),
    (QuotaExceeded, "not enough disk space"),
    (NotFound, "the path is missing or leaves the volume"),
)


class _Skip(Exception):
    """
    This file is not edited; the message says why.
    """


def apply_configs(volume: Volume, configs: Any, config: Config) -> list[str]:
    """
    Apply an egg's ``configs`` list to the files of a volume.  Blocking; never raises.

    :param configs: the Panel's raw list; malformed entries and replacements are reported.
    :param config: the daemon configuration, for ``{{config.…}}`` placeholders.
    :return: one line per problem (``<file>: <what went wrong>``), empty when all went well.
    """
    if configs is None:
        return []
    if not isinstance(configs, (list, tuple)):
        return ["configs: expected a list, got %s" % (type(configs).__name__,)]
    errors: list[str] = []
    for index, entry in enumerate(configs):
        label = "configs[%d]" % (index,)
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            label = entry["file"]
        try:
            errors.extend(_apply_entry(volume, entry, config, label))
        except _Skip as e:
            errors.append("%s: %s" % (label, e))
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the start
            errors.append("%s: unexpected %s: %s" % (label, type(e).__name__, e))
    return [_CONTROL.sub(lambda m: "\\x%02x" % (ord(m.group(0)),), line) for line in errors]


def _apply_entry(volume: Volume, entry: Any, config: Config, label: str) -> list[str]:
    if not isinstance(entry, dict):
        raise _Skip("the entry is not an object")
    name = entry.get("file")
    if not isinstance(name, str) or not name.strip():
        raise _Skip("'file' must be a non-empty string")
    parser = entry.get("parser")
    if not isinstance(parser, str) or parser not in PARSERS:
        raise _Skip("unknown parser %r" % (parser,))
    editor = PARSERS[parser]
    raw = entry.get("replace")
    if not isinstance(raw, list):
        raise _Skip("'replace' must be a list")
    problems: list[str] = []
    replacements: list[Replacement] = []
    for index, item in enumerate(raw):
        try:
            replacements.append(parse_replacement(item, config))
        except ValueError as e:
            problems.append("%s: replace[%d] skipped: %s" % (label, index, e))
    if not replacements:
        return problems
    try:
        edited = _edit_file(volume, _check_path(volume, name), parser, editor, replacements)
    except _Skip as e:
        edited = [str(e)]
    problems.extend("%s: %s" % (label, problem) for problem in edited)
    return problems


def _check_path(volume: Volume, name: str) -> str:
    if "\x00" in name or ".." in name.split("/"):
        raise _Skip("the path must stay inside the server's volume")
    path = clean_path(name)
    if not path:
        raise _Skip("the path names the volume root")
    if volume.is_denied(path):
        raise _Skip("the file is on the egg's denylist")
    return path


def _fs_problem(error: Exception) -> str:
    for kind, message in _FS_PROBLEMS:
        if isinstance(error, kind):
            return message
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


def _read(volume: Volume, path: str) -> bytes | None:
    """
    The file's content, ``None`` when it does not exist.
    """
    try:
        st = volume.lstat(path)
    except NotFound:
        return None
    except (FsError, OSError) as e:
        raise _Skip(_fs_problem(e)) from None
    if stat.S_ISLNK(st.st_mode):
        raise _Skip("the path is a symbolic link")
    if stat.S_ISDIR(st.st_mode):
        raise _Skip("the path is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise _Skip("the path is not a regular file")
    try:
        fd, st = volume.open_read(path)
    except (FsError, OSError) as e:
        raise _Skip(_fs_problem(e)) from None
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= MAX_FILE_SIZE and st.st_size <= MAX_FILE_SIZE:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise _Skip(_fs_problem(e)) from None
    finally:
        os.close(fd)
    if size > MAX_FILE_SIZE or st.st_size > MAX_FILE_SIZE:
        raise _Skip("the file is larger than %d bytes and is not edited" % (MAX_FILE_SIZE,))
    return b"".join(chunks)


def _write(volume: Volume, path: str, data: bytes) -> None:
    directory, _, name = path.rpartition("/")
    try:
        with volume.begin_write(directory, name) as writer:
            writer.write(data)
            writer.commit()
    except (FsError, OSError) as e:
        raise _Skip("cannot write the file: " + _fs_problem(e)) from None


def _edit_file(
    volume: Volume, path: str, parser: str, editor: _Editor, replacements: Sequence[Replacement]
) -> list[str]:
    data = _read(volume, path)
    if data is None and parser == "file":
        return []
    original = data or b""
    bom = original.startswith(_BOM)
    try:
        text = original[len(_BOM) :].decode("utf-8") if bom else original.decode("utf-8")
    except UnicodeDecodeError:
        raise _Skip("the file is not valid UTF-8") from None
    try:
        new_text, problems = editor(text, replacements)
    except DocumentError as e:
        raise _Skip(str(e)) from None
    if data is None and new_text == editor("", [])[0]:
        # Nothing to say in a file that does not exist yet: do not create it.
        return problems
    try:
        new = (_BOM if bom else b"") + new_text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Skip("a value is not valid Unicode (lone surrogate)") from None
    if new != data:
        _write(volume, path, new)
    return problems
