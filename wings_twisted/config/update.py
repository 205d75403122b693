"""
Changing the configuration and writing it back: ``POST /api/update``
(:func:`apply_panel_update`), values the daemon resolved itself
(:func:`replace_values`) and the file (:func:`dump_config`,
:func:`write_config`).

:func:`apply_panel_update` implements ``POST /api/update`` (api.md §3.2,
config.md §6.2); the caller checks ``ignore_panel_config_updates`` first and
writes the result with :func:`write_config` (blocking: run it through
``run_blocking``).

The file is written with every known key, then at each level the unknown keys
of the file the configuration was read from (``Config.raw``), so they survive
a rewrite.  ``token_id``/``token`` are written as they were in the file
unless they changed since, and ``None`` values are left out.

This module does no I/O except in :func:`write_config`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from dataclasses import is_dataclass
from typing import Any, Mapping, TypeVar, cast, get_args, get_origin

import yaml

from .errors import ConfigError, UpdateError, _describe
from .fields import _field_keys, _hints, _schema_fields, _yaml_key
from .load import _FILE_PREFIX, _Dumper, _make_config
from .schema import Config

#: An ``api.ssl.key`` pushed by the Panel that starts with this keeps the
#: current certificate paths (api.md §3.2 rule 4).
LETS_ENCRYPT_PREFIX = "/etc/letsencrypt/live/"

_T = TypeVar("_T")


# --------------------------------------------------------------------------
# Writing


def _to_tree(value: Any) -> Any:
    """
    Plain YAML/JSON data for a config value (YAML key names, lists, dicts).
    """
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[Any, Any] = {}
        for f in _schema_fields(type(value)):
            item = getattr(value, f.name)
            if item is None:
                continue
            out[_yaml_key(f)] = _to_tree(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_to_tree(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_tree(v) for k, v in value.items()}
    return value


def _with_unknown(cls: type, known: dict[Any, Any], raw: Any) -> dict[Any, Any]:
    """
    Add the keys of ``raw`` that the schema of ``cls`` does not know.
    """
    if not isinstance(raw, Mapping):
        return known
    result = dict(known)
    hints = _hints(cls)
    claimed: set[Any] = set()
    for f in _schema_fields(cls):
        keys = _field_keys(f)
        claimed.update(keys)
        name = _yaml_key(f)
        hint = hints[f.name]
        if name not in result:
            continue
        for key in keys:
            sub = raw.get(key)
            if not isinstance(sub, Mapping):
                continue
            if is_dataclass(hint):
                result[name] = _with_unknown(cast(type, hint), result[name], sub)
            elif get_origin(hint) is dict and is_dataclass(get_args(hint)[1]):
                entries = dict(result[name])
                for entry, entry_raw in sub.items():
                    if entry in entries:
                        entries[entry] = _with_unknown(
                            get_args(hint)[1], entries[entry], entry_raw
                        )
                result[name] = entries
    for key, value in raw.items():
        if key not in claimed:
            result[key] = copy.deepcopy(value)
    return result


def dump_config(config: Config) -> str:
    """
    Render ``config`` as YAML: every known key (defaults included) followed,
    at each level, by the unknown keys of the file it was read from.

    ``token_id``/``token`` are written as they were in the file (an
    environment override or a ``file://`` reference stays out of the file)
    unless they changed since, e.g. rotated by the Panel.  ``None`` values
    (unset ``uid``/``gid``, absent raw sections) are left out.
    """
    tree = _to_tree(config)
    for name, (written, resolved) in config._token_sources.items():
        if getattr(config, name) == resolved:
            tree[name] = written
    tree = _with_unknown(Config, tree, config.raw)
    return yaml.dump(
        tree,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )


def write_config(config: Config, path: str) -> None:
    """
    Write :func:`dump_config` output to ``path`` atomically with mode 0600
    (temporary file in the same directory, fsync, ``os.replace``).  Blocking.

    A symlinked ``path`` is followed: its target is replaced, the link stays.

    :raises OSError: the file could not be written; ``path`` is unchanged.
    """
    data = dump_config(config).encode("utf-8")
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        # Some filesystems refuse fsync on a directory; the rename is done.
        pass
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------
# POST /api/update


def _is_collection(hint: Any) -> bool:
    return get_origin(hint) in (tuple, dict)


def _filter_update(cls: type, body: Mapping[Any, Any]) -> dict[Any, Any]:
    """
    The part of a Panel update body that the schema of ``cls`` knows.

    Unknown keys and ``allowed_mounts`` are dropped.  ``null`` keeps the
    current value, except for lists and maps which it empties (Go's JSON
    decoding).
    """
    hints = _hints(cls)
    out: dict[Any, Any] = {}
    for f in _schema_fields(cls):
        if f.metadata.get("panel_ignored"):
            continue
        hint = hints[f.name]
        name = _yaml_key(f)
        for key in _field_keys(f):
            if key not in body:
                continue
            value = body[key]
            if value is None:
                if _is_collection(hint):
                    out[name] = None
                continue
            if is_dataclass(hint) and isinstance(value, Mapping):
                value = _merge_trees(out.get(name) or {}, _filter_update(cast(type, hint), value))
            out[name] = value
    return out


def _merge_trees(base: Mapping[Any, Any], over: Mapping[Any, Any]) -> dict[Any, Any]:
    """
    ``over`` laid on ``base``: mappings merge key by key, anything else
    (lists included) replaces.
    """
    result = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merge_trees(result[key], value)
        else:
            result[key] = value
    return result


def apply_panel_update(config: Config, body: Any) -> Config:
    """
    Lay a ``POST /api/update`` JSON body over ``config`` (api.md §3.2).

    Keys present replace, nested objects merge, arrays replace, unknown keys
    and ``allowed_mounts`` are ignored, ``null`` keeps the current value.  If
    the new ``api.ssl.key`` starts with ``/etc/letsencrypt/live/`` the current
    ``api.ssl.cert``/``key`` are kept.  The result keeps ``config.raw``, so
    unknown keys of the file survive the rewrite.  Checking
    ``ignore_panel_config_updates`` and writing the file are the caller's job.

    :raises UpdateError: the body is not an object, a value has the wrong type,
        the token would be empty or uses ``$``/``file://`` indirection.
    """
    if not isinstance(body, Mapping):
        raise UpdateError(f"the request body must be a JSON object, got {_describe(body)}")
    update = _filter_update(Config, body)
    for name in ("token_id", "token"):
        value = update.get(name)
        if isinstance(value, str) and ("$" in value or value.startswith(_FILE_PREFIX)):
            raise UpdateError(
                "must not use $VAR or file:// indirection in a Panel update", key=name
            )
    merged = _merge_trees(_to_tree(config), update)
    api = update.get("api")
    ssl = api.get("ssl") if isinstance(api, Mapping) else None
    new_key = ssl.get("key") if isinstance(ssl, Mapping) else None
    if isinstance(new_key, str) and new_key.startswith(LETS_ENCRYPT_PREFIX):
        merged["api"]["ssl"]["cert"] = config.api.ssl.cert
        merged["api"]["ssl"]["key"] = config.api.ssl.key
    try:
        return _make_config(
            merged,
            text=None,
            environ=None,
            cwd=None,
            raw=config.raw,
            sources=config._token_sources,
        )
    except ConfigError as e:
        raise UpdateError(e.problem, key=e.key) from None


# --------------------------------------------------------------------------
# Programmatic changes


def replace_values(obj: _T, changes: Mapping[str, Any]) -> _T:
    """
    Return a copy of ``obj`` (a config dataclass) with dotted attribute paths
    replaced, e.g. ``replace_values(config, {"system.user.uid": 988})``.

    No validation is done: this is for values the daemon resolved itself
    (timezone, uid/gid, the resolved data directory).

    :raises KeyError: a path does not name an attribute.
    """
    for dotted, value in changes.items():
        obj = _replace_one(obj, dotted.split("."), value, dotted)
    return obj


def _replace_one(obj: Any, parts: list[str], value: Any, dotted: str) -> Any:
    name = parts[0]
    if not is_dataclass(obj) or name not in {f.name for f in _schema_fields(type(obj))}:
        raise KeyError(dotted)
    if len(parts) > 1:
        value = _replace_one(getattr(obj, name), parts[1:], value, dotted)
    return dataclasses.replace(cast(Any, obj), **{name: value})
