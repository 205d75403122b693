"""
Reading the configuration: a ``config.yml`` file (:func:`load_config`) or
plain data (:func:`config_from_dict`) turned into a validated
:class:`~.schema.Config`.

Parsing rules (config.md §1):

* YAML 1.1 through ``yaml.safe_load`` plus the one YAML 1.1 boolean spelling
  PyYAML lacks and Go's ``yaml.v2`` has (``y``/``n``).  Unknown keys are never
  an error: they are kept in ``Config.raw`` and written back by
  :func:`~.update.dump_config`.
* A key that is present replaces its default, nested mappings are merged key
  by key, lists replace the default list.  Free-form maps
  (``docker.log_config.config``, ``docker.registries``,
  ``docker.overhead.multipliers``, ``remote_query.custom_headers``) are merged
  into their default map, as ``yaml.v2`` does.
* Scalars are type-checked.  Integers do not accept booleans (a whole float
  such as ``100.0`` is accepted, ``1.5`` is not); floats accept integers; a
  string field read from a file accepts any scalar and keeps its text exactly
  as written (``token_id: 0123`` is ``"0123"``, as with ``yaml.v2``).  From a
  dict or a JSON body a string field only accepts strings.
* ``null`` (or an empty value) for a scalar or a list/map gives its zero
  value (``""``, ``0``, ``false``, empty), as ``yaml.v2`` does.  ``null`` for a
  whole section (``docker:`` with every sub-key commented out) keeps the
  section's defaults: upstream would zero every value in it, which is never
  what the operator meant (deviation).
* Errors are :class:`~.errors.ConfigError`, whose ``str()`` is one line naming
  the file, the dotted key and the problem, e.g.
  ``config.yml: api.port: expected an integer, got 'abc'``.  Besides type
  errors: missing or unreadable file, YAML syntax (with its line), a top level
  that is not a mapping, ``environment.driver`` not ``docker``/``process``, a
  port outside 0-65535 (0 asks the OS for a free port, which tests use), an
  empty ``system.*`` directory path, and an empty ``token`` (api.md §2.5: the
  daemon refuses to start without a node token).

Project decisions:

* **Relative directories.**  :func:`load_config` makes the ``system``
  directory paths (``root_directory``, ``log_directory``, ``data``,
  ``archive_directory``, ``backup_directory``, ``tmp_directory``) absolute by
  joining them to the working directory at load time, so a development config
  can say ``./var/lib`` and nothing later depends on the cwd.  The rewritten
  file therefore holds absolute paths.  :func:`config_from_dict` only does this
  when given ``cwd``.
* **Node credentials.**  ``WINGS_TOKEN_ID``/``WINGS_TOKEN`` (when non-empty)
  replace ``token_id``/``token``; the value is then expanded: ``$VAR`` and
  ``${VAR}`` from the environment first, then a ``file://<path>`` value is
  replaced by the file's content without trailing newlines (config.md §8).
  ``Config.token``/``token_id`` hold the resolved values; the file keeps what
  was written there (a ``file://`` reference is never replaced by the secret
  when the file is rewritten, unless the Panel rotates the token).
* **--debug** is not this module's concern: the caller keeps the flag apart so
  it is never written back.

This module does no I/O except in :func:`load_config` and the ``file://``
expansion.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
from dataclasses import is_dataclass
from typing import Any, Literal, Mapping, TypeVar, Union, cast, get_args, get_origin

import yaml

from .errors import ConfigError, _describe
from .fields import _field_keys, _hints, _schema_fields
from .networks import parse_allowed_network
from .schema import Config, SystemConfig

DEFAULT_CONFIG_PATH = "/etc/pterodactyl/config.yml"

_T = TypeVar("_T")


# --------------------------------------------------------------------------
# YAML flavour

_YN = re.compile(r"^(?:y|Y|n|N)$")


class _Loader(yaml.SafeLoader):
    """
    ``SafeLoader`` plus the ``y``/``n`` booleans of YAML 1.1 / ``yaml.v2``.
    """

    bool_values = {**yaml.SafeLoader.bool_values, "y": True, "n": False}


_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _YN, list("yYnN"))


class _TextLoader(yaml.BaseLoader):
    """
    Every scalar as the text written in the file (for string fields).
    """


class _Dumper(yaml.SafeDumper):
    """
    ``SafeDumper`` that quotes ``y``/``n`` so they read back as strings.
    """


_Dumper.add_implicit_resolver("tag:yaml.org,2002:bool", _YN, list("yYnN"))


# --------------------------------------------------------------------------
# Building dataclasses from plain data


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_error(path: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"expected {expected}, got {_describe(value)}", key=path)


def _text_child(text: Any, key: Any) -> Any:
    if isinstance(text, dict):
        return text.get(key if isinstance(key, str) else str(key))
    return None


def _text_item(text: Any, index: int) -> Any:
    if isinstance(text, list) and index < len(text):
        return text[index]
    return None


_ZERO: dict[Any, Any] = {str: "", int: 0, float: 0.0, bool: False}


def _convert(hint: Any, value: Any, text: Any, path: str, current: Any) -> Any:
    """
    Check and convert one value against its type hint.

    :param text: the same value as written in the file (scalars as strings),
        or ``None`` when there is no file text.
    :param current: the value this one is laid over (the default, or what an
        earlier spelling of the key set): sections and maps merge into it.
    """
    if is_dataclass(hint):
        if value is None:
            return current
        if not isinstance(value, Mapping):
            raise _type_error(path, "a mapping", value)
        return _build(cast(type, hint), value, text, path, current)
    if hint is Any:
        return copy.deepcopy(value)
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        chosen = _convert(str, value, text, path, None)
        if chosen not in choices:
            raise ConfigError(
                f"expected one of {', '.join(choices)}, got {_describe(chosen)}", key=path
            )
        return chosen
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in get_args(hint) if a is not type(None)]
        return _convert(inner[0], value, text, path, None)
    if origin is tuple:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            raise _type_error(path, "a list", value)
        item_hint = get_args(hint)[0]
        return tuple(
            _convert(item_hint, item, _text_item(text, i), f"{path}[{i}]", None)
            for i, item in enumerate(value)
        )
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _type_error(path, "a mapping", value)
        key_hint, value_hint = get_args(hint)
        result = dict(current or {})
        for raw_key, item in value.items():
            key = _convert_key(key_hint, raw_key, path)
            base = result.get(key)
            if base is None and is_dataclass(value_hint):
                base = cast(type, value_hint)()
            result[key] = _convert(
                value_hint, item, _text_child(text, raw_key), _join(path, raw_key), base
            )
        return result
    return _convert_scalar(hint, value, text, path)


def _convert_key(hint: Any, key: Any, path: str) -> Any:
    if hint is int:
        if isinstance(key, int) and not isinstance(key, bool):
            return key
        if isinstance(key, str) and re.fullmatch(r"-?[0-9]+", key.strip()):
            return int(key)
        raise ConfigError(f"expected integer keys, got {_describe(key)}", key=path)
    if isinstance(key, str):
        return key
    if isinstance(key, (bool, int, float)):
        return _describe(key) if isinstance(key, bool) else str(key)
    raise ConfigError(f"expected string keys, got {_describe(key)}", key=path)


def _convert_scalar(hint: Any, value: Any, text: Any, path: str) -> Any:
    if value is None:
        return _ZERO[hint]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(path, "a boolean (true or false)", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _type_error(path, "an integer", value)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(path, "a number", value)
    if hint is str:
        if isinstance(value, str):
            return value
        # yaml.v2 stores the scalar's text in a string field, whatever it
        # looks like (token_id: 0123, uuid: 12345, app_name: yes).
        if isinstance(text, str) and not isinstance(value, (list, tuple, Mapping)):
            return text
        raise _type_error(path, "a string", value)
    raise TypeError(f"unsupported configuration type {hint!r} at {path}")


def _build(cls: type[_T], data: Mapping[Any, Any], text: Any, path: str, base: _T) -> _T:
    """
    Lay ``data`` over ``base`` (an instance of the dataclass ``cls``).
    """
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in _schema_fields(cls):
        current = getattr(base, f.name)
        for key in _field_keys(f):
            if key in data:
                sub = _join(path, key)
                current = _convert(hints[f.name], data[key], _text_child(text, key), sub, current)
                _check_field(f, current, sub)
        values[f.name] = current
    return dataclasses.replace(base, **values)  # type: ignore[type-var]


def _check_field(f: dataclasses.Field[Any], value: Any, path: str) -> None:
    if f.metadata.get("port") and not 0 <= value <= 65535:
        raise ConfigError(f"must be between 0 and 65535, got {value}", key=path)
    if f.metadata.get("path") and not value:
        raise ConfigError("must not be empty", key=path)
    if f.metadata.get("networks"):
        for index, entry in enumerate(value):
            try:
                parse_allowed_network(entry)
            except ValueError as e:
                raise ConfigError(str(e), key=f"{path}[{index}]") from None


# --------------------------------------------------------------------------
# Secrets and paths

_ENV_REF = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+))")
_FILE_PREFIX = "file://"


def _expand(value: str, environ: Mapping[str, str], key: str) -> str:
    """
    Expand ``$VAR``/``${VAR}`` then a ``file://`` reference (config.md §8).
    """
    def variable(match: re.Match[str]) -> str:
        name = match.group(1) if match.group(1) is not None else match.group(2)
        return environ.get(name, "") if name else ""

    value = _ENV_REF.sub(variable, value)
    if value.startswith(_FILE_PREFIX):
        path = value[len(_FILE_PREFIX) :]
        try:
            with open(path, encoding="utf-8") as f:
                content = f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise ConfigError(f"cannot read {value}: {reason}", key=key) from None
        value = content.rstrip("\r\n")
    return value


def _resolve_credentials(
    config: Config, environ: Mapping[str, str]
) -> tuple[Config, dict[str, tuple[str, str]]]:
    sources: dict[str, tuple[str, str]] = {}
    resolved: dict[str, Any] = {}
    for name, variable in (("token_id", "WINGS_TOKEN_ID"), ("token", "WINGS_TOKEN")):
        written = getattr(config, name)
        chosen = environ.get(variable, "") or written
        resolved[name] = _expand(chosen, environ, name)
        sources[name] = (written, resolved[name])
    return dataclasses.replace(config, **resolved), sources


def _resolve_paths(config: Config, cwd: str) -> Config:
    changes: dict[str, Any] = {}
    for f in _schema_fields(SystemConfig):
        if f.metadata.get("path"):
            value = getattr(config.system, f.name)
            if not os.path.isabs(value):
                changes[f.name] = os.path.normpath(os.path.join(cwd, value))
    if not changes:
        return config
    return dataclasses.replace(config, system=dataclasses.replace(config.system, **changes))


def _check_token(config: Config) -> None:
    if not config.token:
        raise ConfigError(
            "must not be empty; the daemon refuses to start without a node token", key="token"
        )


def _make_config(
    data: Mapping[Any, Any],
    *,
    text: Any,
    environ: Mapping[str, str] | None,
    cwd: str | None,
    raw: Mapping[Any, Any],
    sources: dict[str, tuple[str, str]] | None = None,
) -> Config:
    """
    Lay ``data`` over the defaults, then resolve the credentials (when given
    ``environ``), check the token and resolve the paths (when given ``cwd``).
    Shared by loading and :func:`~.update.apply_panel_update`.
    """
    config = _build(Config, data, text, "", Config())
    if environ is not None:
        config, sources = _resolve_credentials(config, environ)
    _check_token(config)
    if cwd is not None:
        config = _resolve_paths(config, cwd)
    return dataclasses.replace(
        config, raw=copy.deepcopy(dict(raw)), _token_sources=dict(sources or {})
    )


# --------------------------------------------------------------------------
# Public entry points


def config_from_dict(
    data: Mapping[Any, Any],
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
    source: str | None = None,
) -> Config:
    """
    Build a :class:`Config` from plain data, with the validation of
    :func:`load_config`.

    :param environ: environment for ``WINGS_TOKEN*`` and ``${VAR}``; the
        default is an empty one, so tests never see the real environment.
    :param cwd: when given, relative ``system`` directories are joined to it.
    :param source: prefix of error messages (a file name).
    :raises ConfigError: the data is not a valid configuration.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the top level must be a mapping of keys, got {_describe(data)}", source=source
        )
    try:
        return _make_config(
            data, text=None, environ=environ or {}, cwd=cwd, raw=data
        )
    except ConfigError as e:
        raise e.with_source(source) from None


def load_config(
    path: str, *, environ: Mapping[str, str] | None = None, cwd: str | None = None
) -> Config:
    """
    Read and validate a ``config.yml`` (blocking).

    :param environ: environment for ``WINGS_TOKEN*`` and ``${VAR}``; default
        ``os.environ``.
    :param cwd: directory relative ``system`` paths are joined to; default the
        current working directory.
    :raises ConfigError: one line naming ``path`` and the problem.
    """
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise ConfigError(
            f"cannot read the configuration file: {e.strerror or e}", source=path
        ) from None
    try:
        document = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("the file is not valid UTF-8", source=path) from None
    try:
        data = yaml.load(document, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_problem(e), source=path) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the top level must be a mapping of keys, got {_describe(data)}", source=path
        )
    try:
        text = yaml.load(document, Loader=_TextLoader)  # noqa: S506 - no object construction
    except yaml.YAMLError:
        text = None
    try:
        return _make_config(
            data,
            text=text,
            environ=os.environ if environ is None else environ,
            cwd=os.getcwd() if cwd is None else cwd,
            raw=data,
        )
    except ConfigError as e:
        raise e.with_source(path) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "context", None) or str(error)
    problem = " ".join(str(problem).split())
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {problem}"
    return f"invalid YAML: {problem}"
