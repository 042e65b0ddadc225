"""Procedural and image backgrounds, one per image, deterministic by that image's generator."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@lru_cache(maxsize=8)
def list_images(folder: str) -> tuple[str, ...]:
    """Sorted image files under ``folder`` (recursive); ValueError if none."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"background folder {folder!r} does not exist or is not a directory")
    files = tuple(sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in _IMAGE_EXT))
    if not files:
        raise ValueError(f"background folder {folder!r} holds no images ({sorted(_IMAGE_EXT)})")
    return files


@lru_cache(maxsize=256)
def _load(path: str) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous() ** 2.2  # linear


def procedural(size: int, g: torch.Generator) -> torch.Tensor:
    """(3, size, size) linear-RGB procedural background: a colour field of random gradients and
    multi-scale value noise, with a few soft blocks or stripes (walls, shelves, windows)."""
    base = torch.rand(3, generator=g) ** 2.2 * 0.8 + 0.02
    out = base[:, None, None].expand(3, size, size).clone()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    ang = torch.rand(1, generator=g) * 2 * np.pi
    grad = (xx * torch.cos(ang) + yy * torch.sin(ang))[None]
    gcol = (torch.rand(3, generator=g) - 0.5) * 0.4
    out = out * (1 + gcol[:, None, None] * grad)
    for cells, amp in ((3, 0.5), (7, 0.3), (17, 0.15), (41, 0.08)):
        grid = torch.rand(1, 3, cells, cells, generator=g) - 0.5
        up = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)[0]
        out = out * (1 + amp * float(torch.rand(1, generator=g)) * 2 * up)
    n_blocks = int(torch.randint(0, 4, (1,), generator=g))
    for _ in range(n_blocks):
        x0, y0, w, h = (torch.rand(4, generator=g) * torch.tensor([1.0, 1.0, 0.7, 0.7])).tolist()
        col = torch.rand(3, generator=g) ** 2.2 * 0.8
        soft = 0.01 + 0.05 * float(torch.rand(1, generator=g))
        mx = torch.sigmoid((xx * 0.5 + 0.5 - x0) / soft) * torch.sigmoid((x0 + w - (xx * 0.5 + 0.5)) / soft)
        my = torch.sigmoid((yy * 0.5 + 0.5 - y0) / soft) * torch.sigmoid((y0 + h - (yy * 0.5 + 0.5)) / soft)
        m = (mx * my)[None]
        out = out * (1 - m) + col[:, None, None] * m
    return out.clamp(0.0, 1.0)


def from_image(files: tuple[str, ...], size: int, g: torch.Generator) -> tuple[torch.Tensor, int]:
    """(3, size, size) random crop of a random user image (linear RGB) and the file index."""
    idx = int(torch.randint(0, len(files), (1,), generator=g))
    img = _load(files[idx])
    _, h, w = img.shape
    frac = 0.4 + 0.6 * float(torch.rand(1, generator=g))
    side = max(8, int(min(h, w) * frac))
    y0 = int(torch.randint(0, h - side + 1, (1,), generator=g))
    x0 = int(torch.randint(0, w - side + 1, (1,), generator=g))
    crop = img[:, y0 : y0 + side, x0 : x0 + side][None]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0], idx


def exists(path: str | None) -> bool:
    return bool(path) and os.path.isdir(str(path))
