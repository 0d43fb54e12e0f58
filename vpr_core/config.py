"""One typed configuration mechanism: frozen dataclasses built from YAML and overrides.

Layering is defaults < file < ``key.path=value`` overrides. Unknown keys are errors that name
the closest valid key. Every front end (CLI, training, ROS parameters) uses these functions.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from vpr_core.errors import ConfigError

T = TypeVar('T')


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, where: str = '') -> T:
    """Build dataclass ``cls`` from a nested mapping, checking keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise ConfigError(f'{where or cls.__name__}: expected a mapping, got {got}')
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(where, key, fields))
        kwargs[key] = _coerce(hints[key], value, f'{where}.{key}' if where else key)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Turn a (nested) config dataclass into plain dicts/lists, suitable for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def to_json(obj: Any) -> str:
    """Canonical JSON of a config (sorted keys), used for fingerprints and metadata."""
    return json.dumps(to_dict(obj), sort_keys=True, separators=(',', ':'))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value."""
    if '=' not in text:
        raise ConfigError(f'override {text!r} must look like key.path=value')
    key, raw = text.split('=', 1)
    path = [part for part in key.strip().split('.') if part]
    if not path:
        raise ConfigError(f'override {text!r} has an empty key')
    return path, yaml.safe_load(raw) if raw.strip() else ''


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Return a deep copy of ``data`` with every ``key.path=value`` override applied."""
    result = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f'override {text!r}: {part!r} is not a section')
            node = child
        node[path[-1]] = value
    return result


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: Sequence[str] = (), *, base: T | None = None) -> T:
    """Load ``cls`` from defaults (or ``base``), a YAML file, then overrides."""
    data = to_dict(base) if base is not None else {}
    if path is not None:
        data = _deep_merge(data, read_yaml(path))
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f'config file not found: {path}') from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f'config file {path} is not valid YAML: {exc}') from exc
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f'config file {path} must hold a mapping at top level')
    return content


def _deep_merge(base: dict, top: Mapping) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _unknown_key_message(where: str, key: str, fields: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(str(key), list(fields), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ''
    section = where or 'top level'
    return f"unknown config key '{key}' in {section}{hint} (valid: {', '.join(sorted(fields))})"


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f'{where}: invalid value {value!r}')
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f'{where}: {value!r} is not one of {list(args)}')
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{where}: expected a list, got {value!r}')
        item = args[0] if args else Any
        if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
            return tuple(_coerce(item, v, f'{where}[{i}]') for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f'{where}: expected {len(args)} values, got {len(value)}')
        return tuple(_coerce(a, v, f'{where}[{i}]') for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return from_dict(hint, value, where=where)
    return _coerce_scalar(hint, value, where)


def _coerce_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f'{where}: expected true/false, got {value!r}')
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f'{where}: expected an integer, got {value!r}')
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f'{where}: expected a number, got {value!r}')
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f'{where}: expected a string, got {value!r}')
    return value
