"""Registry of identity sources, imported lazily.

``create_source("morphable", preset="wild", size=112)`` imports ``morphable.MorphableSource`` only when
asked for. Any importable class path ``"package.module:Class"`` works as a name too, so tests and
plugins need no registration (``create_source("tests.fake_source:FakeSource")``).
"""
from __future__ import annotations

import importlib
from typing import Any

from .interface import IdentitySampler

_REGISTRY: dict[str, str] = {
    "morphable": "morphable:MorphableSource",
    "diffusion": "learned.source:DiffusionSource",
    "gan": "learned.gan.source:GANSource",
}


class SourceError(ValueError):
    """Unknown source name, or a class path that cannot be imported / is not an IdentitySampler."""


def register_source(name: str, target: str, overwrite: bool = True) -> None:
    """Register ``name`` -> ``"module:Class"`` (imported on first :func:`create_source`)."""
    if ":" not in target:
        raise ValueError(f"source target must be 'module:Class', got {target!r}")
    if not overwrite and name in _REGISTRY and _REGISTRY[name] != target:
        raise ValueError(f"source {name!r} is already registered as {_REGISTRY[name]!r}")
    _REGISTRY[name] = target


def unregister_source(name: str) -> None:
    _REGISTRY.pop(name, None)


def known_sources() -> list[str]:
    return sorted(_REGISTRY)


def resolve_source_class(name: str) -> type[IdentitySampler]:
    """The class for a registry name or a ``module:Class`` path (raises :class:`SourceError`)."""
    if name in _REGISTRY:
        target = _REGISTRY[name]
    elif ":" in name:
        target = name
    else:
        raise SourceError(
            f"unknown source {name!r}; known sources: {', '.join(known_sources())} "
            "(or give an importable 'module:Class')"
        )
    mod_name, _, cls_name = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise SourceError(f"cannot import source {name!r} ({target}): {e}") from e
    try:
        obj: Any = mod
        for part in cls_name.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise SourceError(f"source {name!r}: module {mod_name!r} has no attribute {cls_name!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, IdentitySampler)):
        raise SourceError(f"source {name!r}: {target} is not an IdentitySampler subclass")
    return obj


def create_source(name: str, **kwargs: Any) -> IdentitySampler:
    """Instantiate source ``name`` (registry name or ``module:Class``) with ``kwargs``.

    The usual keywords are ``preset``, ``size``, ``aligned``, ``device`` and ``overrides``. Errors the
    constructor raises (e.g. ``ValueError`` for an unknown preset) propagate unchanged.
    """
    return resolve_source_class(name)(**kwargs)
