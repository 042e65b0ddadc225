"""Where the diffusion source's layout/style images come from (``overrides={"style": {...}}``).

A style-enabled diffusion checkpoint (``style.enabled: true`` in training, see
:mod:`learned.diffusion.style`) takes, besides the identity embedding, the low-pass version of an
image: the source asks a *provider* for one image per generated image and hands the model its
low-pass version. ``style.provider``:

- ``none`` (default): no style (the model's "no style" input); identity-only checkpoints accept only this.
- ``morphable``: image ``k`` of a morphable identity rendered with the morphable preset
  ``style.preset`` (``wild``: poses up to profile, hard light, backgrounds; ``frontal``: mild) and
  ``style.morphable_overrides`` (e.g. ``{"pose": {"yaw": {"lo": -60, "hi": 60}}}``). The morphable
  identity is the learned identity's *counterpart* (``style.identity: counterpart``: with
  ``identity.mode: morphable`` the morphable identity it was embedded from, else the morphable identity
  of the same row) or one ``fixed`` identity (``style.fixed_identity``: every identity then gets the
  same ``K`` layouts). Graphics control pose, light and layout; the learned model the identity and the
  texture. The render's factors go into ``RenderBatch.factors`` with a ``style_`` prefix
  (``style_yaw``, ``style_pitch``, ``style_roll``, ``style_light_*`` ...) and ``style_identity``.
- ``folder``: an image of ``style.folder`` (all images below it, sorted by path) drawn per image;
  ``style_image`` (its index) goes into the factors.

Every draw is seeded by ``(seed, identity row, variation)`` alone (morphable renders with the seed
``derive_seed(seed, "learned-style")``; the folder pick by ``generator(seed, "learned-style", r, k)``),
so a style never depends on what else is in the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from common.config import nest_dotted
from engine.interface import Identities, derive_seed, generator

PROVIDERS = ("none", "morphable", "folder")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class StyleSourceConfig:
    """``style`` overrides of the diffusion source (see the module docstring)."""

    provider: str = "none"
    preset: str = "wild"
    identity: str = "counterpart"
    fixed_identity: int = 0
    morphable_overrides: dict = field(default_factory=dict)
    folder: str | None = None


class StyleProvider:
    """One image per requested (row, variation): ``__call__(identities, rows, variations, seed) ->
    (images (B, 3, H, W) in [0, 1], factors name -> (B,) tensors)``."""

    name = "abstract"

    def __call__(self, identities: Identities, rows: torch.Tensor, variations: torch.Tensor,
                 seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


class MorphableStyles(StyleProvider):
    """Renders of morphable identities (see the module docstring). ``size``: render side in pixels
    (only the low-pass version is used, so a small render suffices)."""

    name = "morphable"

    def __init__(self, cfg: StyleSourceConfig, size: int, device: str | torch.device = "cpu"):
        from morphable import PRESETS as MORPHABLE_PRESETS
        from morphable import MorphableSource

        if cfg.preset not in MORPHABLE_PRESETS:
            raise ValueError(f"style.preset must be a morphable preset ({', '.join(sorted(MORPHABLE_PRESETS))}), "
                             f"got {cfg.preset!r}")
        if cfg.identity not in ("counterpart", "fixed"):
            raise ValueError(f"style.identity must be 'counterpart' or 'fixed', got {cfg.identity!r}")
        if int(cfg.fixed_identity) < 0:
            raise ValueError(f"style.fixed_identity must be >= 0, got {cfg.fixed_identity}")
        if not isinstance(cfg.morphable_overrides, Mapping):
            raise ValueError(f"style.morphable_overrides must be a mapping, got {cfg.morphable_overrides!r}")
        self.cfg = cfg
        try:
            self.source = MorphableSource(preset=cfg.preset, size=max(16, int(size)), aligned=True, device=str(device),
                                          overrides=nest_dotted(cfg.morphable_overrides, "style.morphable_overrides") or None)
        except ValueError as e:
            raise ValueError(f"style.morphable_overrides: {e}") from None
        self._ids: Identities | None = None
        self._ids_seed: int | None = None

    def _identities(self, need: int, seed: int) -> Identities:
        """The first ``need`` morphable identities of ``seed`` (prefix-stable, grown on demand)."""
        have = 0 if self._ids is None or self._ids_seed != seed else len(self._ids)
        if have < need:
            self._ids = self.source.sample_identities(max(need, 2 * have), seed)
            self._ids_seed = seed
        return self._ids

    def morphable_rows(self, identities: Identities, rows: torch.Tensor) -> torch.Tensor:
        """The morphable identity (row of the morphable identities of the seed) of each learned row."""
        rows = rows.long().cpu()
        if self.cfg.identity == "fixed":
            return torch.full_like(rows, int(self.cfg.fixed_identity))
        if "morphable_index" in identities.params:
            return identities.params["morphable_index"].cpu()[rows].round().long()
        return rows

    def __call__(self, identities, rows, variations, seed):
        m = self.morphable_rows(identities, rows)
        ids = self._identities(int(m.max()) + 1, int(seed))
        rb = self.source.render(ids, m, variations.long().cpu(), derive_seed(int(seed), "learned-style"))
        factors = {"style_identity": m, **{f"style_{k}": v.cpu() for k, v in rb.factors.items()}}
        return rb.images, factors


class FolderStyles(StyleProvider):
    """Images of a folder (recursively, sorted by path), one drawn per (seed, row, variation) and
    resized to ``size``."""

    name = "folder"

    def __init__(self, folder: str | None, size: int):
        if not folder:
            raise ValueError("style.provider 'folder' needs style.folder=PATH (a folder of images)")
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise ValueError(f"style.folder not found: {root}")
        self.files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise ValueError(f"style.folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.size = int(size)

    def load(self, i: int) -> torch.Tensor:
        """Image ``i`` as (3, size, size) float in [0, 1]."""
        import numpy as np
        from PIL import Image

        with Image.open(self.files[i]) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float()[None] / 255.0
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=max(x.shape[-2:]) > self.size)
        return x[0].clamp(0, 1)

    def __call__(self, identities, rows, variations, seed):
        n = len(self.files)
        idx = torch.tensor([int(torch.randint(n, (1,), generator=generator(int(seed), "learned-style", int(r), int(k))))
                            for r, k in zip(rows.tolist(), variations.tolist())], dtype=torch.int64)
        return torch.stack([self.load(int(i)) for i in idx]), {"style_image": idx}


def make_provider(cfg: StyleSourceConfig, takes_style: bool, checkpoint: Any, size: int,
                  device: str | torch.device = "cpu") -> StyleProvider | None:
    """The provider ``cfg.provider`` names (None for ``none``); clear errors for an unknown provider
    and for a provider given to a checkpoint trained without a style."""
    if cfg.provider not in PROVIDERS:
        raise ValueError(f"unknown style.provider {cfg.provider!r} (use one of {', '.join(PROVIDERS)})")
    if cfg.provider == "none":
        return None
    if not takes_style:
        raise ValueError(f"checkpoint {checkpoint} was trained without a style condition (style.enabled: false); "
                         f"style.provider {cfg.provider!r} needs a checkpoint trained with style.enabled: true "
                         "(or leave style.provider at 'none')")
    if cfg.provider == "morphable":
        return MorphableStyles(cfg, size, device)
    return FolderStyles(cfg.folder, size)
