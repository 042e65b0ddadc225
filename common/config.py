"""Configuration mechanics every package shares: typed dataclasses from plain dicts, dotted
``KEY=VALUE`` overrides, path resolution, and errors that name the offending key.

* :func:`from_dict` builds a dataclass from a mapping (YAML), checking keys (unknown ones get a
  "did you mean" suggestion) and types, converting nested dataclasses, lists, dicts, unions and
  ``Literal`` values; a dataclass' ``validate(path)`` method (if any) runs after it is built.
* :func:`merge_into` merges a nested override mapping into a config instance in place (same checks
  and messages as :func:`from_dict`; nested dataclasses are merged field by field).
* :func:`register_converter` lets a package teach :func:`convert` a type it cannot build from fields
  alone (e.g. :mod:`morphable.variation`'s distribution union: ``{lo, hi}``, ``{mean, std}``, ``{p}``
  or a number).
* :func:`apply_overrides` applies ``a.b.c=value`` strings (values parsed as YAML; ``phases.0.steps``
  indexes lists) to a raw dict before it is converted.
* :func:`nest_dotted` turns a mapping with dotted keys (``{"identity.mode": ...}``) into a nested one.
* :func:`config_to_dict` turns a config back into plain data; :func:`resolve_path` makes a relative
  path absolute (working directory, then the given base dirs, e.g. the config's dir and
  :data:`REPO_ROOT`).

Errors are :class:`~common.errors.ConfigError` whose message starts with the dotted key path
(``phases[1].weights.synth: ...``); :func:`join_key` and :func:`key_error` build such messages.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, Union

import yaml

from .errors import ConfigError

__all__ = ["ConfigError", "REPO_ROOT", "from_dict", "merge_into", "convert", "register_converter", "apply_overrides", "parse_override", "nest_dotted",
           "config_to_dict",
           "resolve_path", "join_key", "key_error", "suggest", "type_name"]

#: The repository root (holds ``configs/``); the last base dir relative config paths resolve against.
REPO_ROOT = Path(__file__).resolve().parent.parent


def suggest(key: str, allowed: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the allowed name closest to ``key``, or ``""``."""
    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def type_name(v: Any) -> str:
    """The YAML-ish name of ``v``'s type for messages (``null`` for None)."""
    return "null" if v is None else type(v).__name__


#: ``type -> fn(value, path)`` for types :func:`convert` cannot build by itself (:func:`register_converter`).
_CONVERTERS: dict[Any, Callable[[Any, str], Any]] = {}


def register_converter(tp: Any, fn: Callable[[Any, str], Any]) -> None:
    """Make :func:`convert` build values of type ``tp`` (a class or a union such as ``A | B``) with
    ``fn(value, path)``, which returns the value or raises :class:`ConfigError` naming ``path``."""
    _CONVERTERS[tp] = fn


def convert(tp: Any, value: Any, path: str) -> Any:
    """``value`` checked and converted to type ``tp`` (errors name ``path``)."""
    if tp is Any or tp is object:
        return value
    try:
        hook = _CONVERTERS.get(tp)
    except TypeError:  # an unhashable annotation
        hook = None
    if hook is not None:
        return hook(value, path)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be null")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(a, value, path)
            except ConfigError as e:
                errors.append(str(e))
        names = " or ".join(getattr(a, "__name__", str(a)) for a in args if a is not type(None))
        raise ConfigError(f"{path}: expected {names}, got {type_name(value)} {value!r}"
                          if len(errors) != 1 else errors[0])
    if origin is Literal:
        allowed = typing.get_args(tp)
        sval = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and \
            any(isinstance(a, str) for a in allowed) else value
        if sval not in allowed:
            raise ConfigError(f"{path}: must be one of {', '.join(map(repr, allowed))}, got {value!r}"
                              + suggest(str(value), [str(a) for a in allowed]))
        return sval
    if dataclasses.is_dataclass(tp):
        coerce = getattr(tp, "_coerce", None)
        if coerce is not None:
            value = coerce(value)
        return from_dict(tp, value, path)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type_name(value)} {value!r}")
        args = typing.get_args(tp)
        sub = args[0] if args else Any
        return [convert(sub, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type_name(value)} {value!r}")
        args = typing.get_args(tp)
        sub = args[1] if len(args) == 2 else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{path}: keys must be strings, got {k!r}")
            out[k] = convert(sub, v, f"{path}.{k}")
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {type_name(value)} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected an integer, got {type_name(value)} {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '5e-4' as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {type_name(value)} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {type_name(value)} {value!r}")
    return value


def _checked_fields(cls: type, data: Any, path: str) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """``(type hints, public init fields)`` of dataclass ``cls`` after checking that ``data`` is a
    mapping whose keys are all such fields (errors name ``path`` / ``path.key``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {type_name(data)} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    for k in data:
        if k not in fields:
            raise ConfigError(f"{join_key(path, k)}: unknown key{suggest(k, list(fields))}; "
                              f"allowed keys: {', '.join(fields)}")
    return typing.get_type_hints(cls), fields


def _validated(obj: Any, path: str) -> Any:
    """``obj`` after its ``validate(path)`` method (if it has one) ran."""
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types; errors name ``path.key``."""
    hints, fields = _checked_fields(cls, {} if data is None else data, path)
    data = data or {}
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = convert(hints[name], data[name], join_key(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{join_key(path, name)}: required key is missing")
    return _validated(cls(**kwargs), path)


def merge_into(obj: Any, overrides: Any, path: str = "") -> Any:
    """Merge the nested mapping ``overrides`` into dataclass instance ``obj`` in place and return it.

    A field holding a dataclass whose type is that dataclass is merged field by field when given a
    mapping (``{"pose": {"yaw": ...}}`` leaves ``pose.pitch`` as it was); any other field is replaced
    by ``convert(field type, value)``. Keys and types are checked as in :func:`from_dict` (errors name
    ``path.key``), and each merged dataclass' ``validate(path)`` method (if any) runs after it."""
    hints, _ = _checked_fields(type(obj), overrides, path)
    for k, v in overrides.items():
        where, tp = join_key(path, k), hints[k]
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(tp) and isinstance(cur, tp) and isinstance(v, Mapping):
            merge_into(cur, v, where)
        else:
            setattr(obj, k, convert(tp, v, where))
    return _validated(obj, path)


def join_key(path: str, key: Any) -> str:
    """``path.key`` (or ``key`` at the top level)."""
    return f"{path}.{key}" if path else str(key)


def key_error(path: str, key: str, msg: str) -> ConfigError:
    """A :class:`ConfigError` ``path.key: msg``."""
    return ConfigError(f"{join_key(path, key)}: {msg}")


def parse_value(text: str) -> Any:
    """An override's value: parsed as YAML, or the text itself when it is not valid YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_override(ov: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> ``(["a", "b", "c"], value)`` (value parsed by :func:`parse_value`)."""
    if "=" not in ov:
        raise ConfigError(f"override {ov!r}: expected key.path=value")
    key, _, raw = ov.partition("=")
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {ov!r}: empty key")
    return keys, parse_value(raw)


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (``phases.0.steps=100``; values parsed as YAML) to a raw dict."""
    data = copy.deepcopy(data)
    for ov in overrides or ():
        keys, value = parse_override(ov)
        node: Any = data
        for i, k in enumerate(keys):
            last = i == len(keys) - 1
            where = ".".join(keys[: i + 1])
            if isinstance(node, list):
                try:
                    idx = int(k)
                    node[idx]  # noqa: B018 - bounds check
                except (ValueError, IndexError):
                    raise ConfigError(f"override {ov!r}: {where}: not a valid list index (list has {len(node)} "
                                      "items)") from None
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[k] = value
                else:
                    if node.get(k) is None:
                        node[k] = {}
                    node = node[k]
            else:
                raise ConfigError(f"override {ov!r}: {'.'.join(keys[:i])} is not a mapping or list")
    return data


def nest_dotted(d: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``{"pose.yaw": v}`` -> ``{"pose": {"yaw": v}}``, recursively, merging keys that share a prefix
    (a mapping of overrides may spell a key dotted or nested)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        node = out
        parts = str(k).split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{join_key(where, k)}: conflicts with another key")
        v = nest_dotted(v, where) if isinstance(v, Mapping) else v
        if isinstance(node.get(parts[-1]), dict) and isinstance(v, dict):
            node[parts[-1]].update(v)
        else:
            node[parts[-1]] = v
    return out


def resolve_path(p: str | None, base_dirs: Sequence[Path]) -> str | None:
    """Absolute path for ``p``: as is if absolute or existing relative to the working directory,
    else the first of ``base_dirs`` where it exists, else relative to the working directory."""
    if p is None:
        return None
    p = os.path.expanduser(os.path.expandvars(str(p)))
    if os.path.isabs(p):
        return p
    if os.path.exists(p):
        return os.path.abspath(p)
    for b in base_dirs:
        cand = Path(b) / p
        if cand.exists():
            return str(cand.resolve())
    return os.path.abspath(p)


def config_to_dict(cfg: Any) -> Any:
    """Plain (YAML/JSON-serialisable) dict of a config dataclass (private fields dropped)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                if not f.name.startswith("_")}
    if isinstance(cfg, Mapping):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    return cfg
