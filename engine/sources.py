"""Registry of identity sources, imported lazily.

``create_source("morphable", preset="wild", size=112)`` imports ``morphable.MorphableSource`` only when
asked for. Any importable class path ``"package.module:Class"`` works as a name too, so tests and
plugins need no registration (``create_source("tests.fake_source:FakeSource")``).

A source travels as one value, :class:`SourceSpec` (name + constructor keywords): from a command
line to the render workers, which each build their own copy with :meth:`SourceSpec.create`.
:func:`create_source` checks the keywords against the constructor before calling it: a
``checkpoint`` that does not exist, or one given to a source that takes none, is a
:class:`SourceError` saying so.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import SynthfaceError

from .interface import IdentitySampler

_REGISTRY: dict[str, str] = {
    "morphable": "morphable:MorphableSource",
    "diffusion": "learned.diffusion.source:DiffusionSource",
    "gan": "learned.gan.source:GANSource",
}


class SourceError(SynthfaceError, ValueError):
    """Unknown source name, a class path that cannot be imported / is not an IdentitySampler, or
    keywords its constructor cannot take (e.g. a checkpoint for a source without one)."""


@dataclass(frozen=True)
class SourceSpec:
    """A source as one picklable value: registry name (or ``module:Class``) and constructor keywords
    (``preset``, ``size``, ``aligned``, ``device``, ``overrides``, ``checkpoint`` ...)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def create(self) -> IdentitySampler:
        """A new instance (:func:`create_source`)."""
        return create_source(self.name, **self.kwargs)


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


def _check_kwargs(name: str, cls: type, kwargs: dict[str, Any]) -> None:
    """Refuse, as :class:`SourceError`, a ``checkpoint`` path that does not exist and keywords the
    constructor of ``cls`` does not take."""
    ck = kwargs.get("checkpoint")
    if ck is not None and not Path(str(ck)).expanduser().exists():
        raise SourceError(f"checkpoint not found: {ck}")
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no introspectable signature: let the constructor decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for k in kwargs:
        if k not in params:
            what = "--checkpoint (it is for learned sources such as diffusion and gan)" if k == "checkpoint" else \
                f"keyword {k!r} (it takes {', '.join(params) or 'none'})"
            raise SourceError(f"source {name!r} takes no {what}")


def create_source(name: str, **kwargs: Any) -> IdentitySampler:
    """Instantiate source ``name`` (registry name or ``module:Class``) with ``kwargs``.

    The usual keywords are ``preset``, ``size``, ``aligned``, ``device`` and ``overrides``, and
    ``checkpoint`` for learned sources. Raises :class:`SourceError` for an unknown source, a
    ``checkpoint`` that does not exist and keywords the constructor does not take; errors the
    constructor raises (e.g. ``ValueError`` for an unknown preset) propagate unchanged.
    """
    cls = resolve_source_class(name)
    _check_kwargs(name, cls, kwargs)
    return cls(**kwargs)
