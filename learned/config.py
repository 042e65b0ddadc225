"""Config sections shared by every learned-generator trainer (``kind: diffusion``, ``kind: gan``, ...).

A learned training config is YAML with a top-level ``kind`` that picks the trainer (see
:mod:`learned.train`) and the sections below; each kind adds its own sections (``model``,
``schedule``, ...) in its own dataclass. Validation reuses :func:`common.config.from_dict`:
unknown keys and wrong types raise :class:`~common.errors.ConfigError` naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.config import ConfigError
from common.people import PairsPeopleConfig, pairs_people, read_people_file


@dataclass
class DataConfig:
    """Training images.

    Attributes:
        path: ImageFolder root (``<root>/<person>/<image>``), synthface dataset dir or RecordIO
            (``train.rec`` + ``train.idx``), opened by :func:`engine.formats.open_dataset`. The images
            should be ArcFace-aligned crops (the generated images are labelled with the template landmarks).
        format: ``auto``, ``imagefolder`` or ``rec``.
        image_size: side the images are resized to (the model's size), e.g. 64 or 112.
        flip: probability of a horizontal flip per training image.
        condition: ``image`` (each image conditions on its own embedding, IDiff-Face style) or ``mean``
            (on the normalised mean embedding of its identity). People with one image count either way.
        preload: decode and resize every image once into memory (uint8) at start.
        max_images: use only the first N images (quick runs and tests); null = all.
        workers: DataLoader worker processes (only without ``preload``).
        exclude_from_pairs: leave out the people of these folds of an LFW-format pairs file
            (``{pairs: .../pairs.txt, folds: [4, 5]}``): a generator whose data will be judged on
            those folds must never see them.
        exclude_people_file: leave out the people named in this file (one name a line).
        embed_batch_size: batch size for the one-time encoder pass over the training images.
    """

    path: str | None = None
    format: str = "auto"
    image_size: int = 64
    flip: float = 0.5
    condition: str = "image"
    preload: bool = True
    max_images: int | None = None
    workers: int = 4
    embed_batch_size: int = 256
    exclude_from_pairs: PairsPeopleConfig | None = None
    exclude_people_file: str | None = None

    def excluded_people(self) -> set[str]:
        """The identity names to leave out (empty set: none)."""
        out: set[str] = set()
        if self.exclude_from_pairs is not None:
            out |= pairs_people(self.exclude_from_pairs.pairs, self.exclude_from_pairs.folds)
        if self.exclude_people_file is not None:
            out |= set(read_people_file(self.exclude_people_file))
        return out

    def validate(self, path: str = "data") -> None:
        if not self.path:
            raise ConfigError(f"{path}.path: required (an ImageFolder root or a RecordIO dataset)")
        if self.format not in ("auto", "imagefolder", "rec"):
            raise ConfigError(f"{path}.format: use auto, imagefolder or rec, got {self.format!r}")
        if self.image_size < 8:
            raise ConfigError(f"{path}.image_size must be >= 8, got {self.image_size}")
        if not 0.0 <= self.flip <= 1.0:
            raise ConfigError(f"{path}.flip must be in [0, 1]")
        if self.condition not in ("image", "mean"):
            raise ConfigError(f"{path}.condition: use image or mean, got {self.condition!r}")
        if self.exclude_from_pairs is not None:
            self.exclude_from_pairs.validate(f"{path}.exclude_from_pairs")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"{path}.max_images must be >= 1 or null")


@dataclass
class LoopConfig:
    """Optimisation and bookkeeping of a training run.

    ``precision``: ``auto`` = ``bf16-mixed`` on CUDA, ``32-true`` on CPU (any Lightning precision
    string works). ``channels_last``/``fused_adam``: ``auto`` = on for CUDA. ``checkpoint_every``:
    steps between atomic ``last.ckpt`` + exported ``checkpoint/`` writes (and at the end).
    ``sample_every``: steps between sample grids (0 = only at the end).
    """

    steps: int = 10000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 200
    lr_schedule: str = "constant"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    channels_last: bool | str = "auto"
    fused_adam: bool | str = "auto"
    compile: bool = False
    checkpoint_every: int = 1000
    sample_every: int = 1000
    log_every: int = 50
    progress_bar: bool = True

    def validate(self, path: str = "train") -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"{path}: steps and batch_size must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"{path}.lr must be > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{path}.ema_decay must be in [0, 1)")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"{path}.lr_schedule: use constant or cosine, got {self.lr_schedule!r}")
        for k in ("channels_last", "fused_adam"):
            if str(getattr(self, k)) not in ("auto", "true", "false", "True", "False"):
                raise ConfigError(f"{path}.{k}: use auto, true or false")
        if len(self.betas) != 2:
            raise ConfigError(f"{path}.betas: need two values")
        if self.devices < 1 or self.num_nodes < 1:
            raise ConfigError(f"{path}.devices and {path}.num_nodes must be >= 1")
        if self.strategy not in ("auto", "ddp"):
            raise ConfigError(f"{path}.strategy: use auto or ddp, got {self.strategy!r}")


def tristate(value: Any, cuda: bool) -> bool:
    """``auto`` -> ``cuda``; ``true``/``false`` (bool or string) -> that."""
    s = str(value).lower()
    return cuda if s == "auto" else s == "true"


#: Keys of a run config that may change between a run and its resume (they do not change the model
#: being trained): everything else must match the saved ``train_config.json``.
RESUMABLE_CHANGES = ("train.steps", "train.checkpoint_every", "train.sample_every", "train.log_every",
                     "train.progress_bar", "data.workers", "out", "name")


#: Sections added to a kind's config after runs were made, with the values that mean "off": a saved
#: run config without the section matches a new one whose section has these values (it resumes).
LATER_SECTIONS: dict[str, dict[str, Any]] = {"style": {"enabled": False}}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved run configs (``train_config.json``),
    ignoring :data:`RESUMABLE_CHANGES` (and a :data:`LATER_SECTIONS` section the old config lacks
    and the new one leaves off): a non-empty list means the run cannot be resumed as is."""
    import json

    for key, off in LATER_SECTIONS.items():
        sec = new.get(key)
        if key not in old and isinstance(sec, dict) and all(sec.get(k) == v for k, v in off.items()):
            new = {k: v for k, v in new.items() if k != key}

    def comparable(d: dict) -> dict:
        d = json.loads(json.dumps(d, default=str))
        for key in RESUMABLE_CHANGES:
            node, parts = d, key.split(".")
            for p in parts[:-1]:
                node = node.get(p, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(parts[-1], None)
        return d

    def diff(a: Any, b: Any, prefix: str = "") -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [k for key in sorted(set(a) | set(b)) for k in diff(a.get(key), b.get(key), f"{prefix}{key}.")]
        return [] if a == b else [prefix.rstrip(".")]

    return diff(comparable(old), comparable(new))
