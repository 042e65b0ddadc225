"""Procedural and image backgrounds, one per image, deterministic by that image's generator."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .degrade import gaussian_blur

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


_OCTAVES = ((3, 0.5), (7, 0.3), (17, 0.15), (41, 0.08))
_MAX_BLOCKS = 3


def draw_procedural(g: torch.Generator) -> dict[str, torch.Tensor]:
    """The random numbers of one procedural background (small tensors, drawn from ``g`` in a fixed
    order so the background depends on its image's generator only)."""
    d = {
        "base": torch.rand(3, generator=g) ** 2.2 * 0.8 + 0.02,
        "angle": torch.rand(1, generator=g) * 2 * np.pi,
        "gcol": (torch.rand(3, generator=g) - 0.5) * 0.4,
    }
    for i, (cells, _) in enumerate(_OCTAVES):
        d[f"grid{i}"] = torch.rand(3, cells, cells, generator=g) - 0.5
        d[f"amp{i}"] = torch.rand(1, generator=g)
    n_blocks = int(torch.randint(0, _MAX_BLOCKS + 1, (1,), generator=g))
    rect = torch.zeros(_MAX_BLOCKS, 4)
    col = torch.zeros(_MAX_BLOCKS, 3)
    soft = torch.ones(_MAX_BLOCKS)
    on = torch.zeros(_MAX_BLOCKS)
    for j in range(n_blocks):
        rect[j] = torch.rand(4, generator=g) * torch.tensor([1.0, 1.0, 0.7, 0.7])
        col[j] = torch.rand(3, generator=g) ** 2.2 * 0.8
        soft[j] = 0.01 + 0.05 * float(torch.rand(1, generator=g))
        on[j] = 1.0
    d.update(rect=rect, col=col, soft=soft, on=on)
    return d


@lru_cache(maxsize=32)
def _bicubic_matrix(n: int, size: int) -> torch.Tensor:
    """(size, n) weights of 1-D bicubic upsampling (``F.interpolate(mode="bicubic",
    align_corners=False)``), so a 2-D upsample is two small matrix products."""
    eye = torch.eye(n)[:, None, :, None].expand(n, 1, n, 1)  # n one-hot columns
    return F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=False)[:, 0, :, 0].T.contiguous()


def compose_procedural(draws: list[dict[str, torch.Tensor]], size: int, blur: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, size, size) linear-RGB procedural backgrounds from :func:`draw_procedural` draws: a
    colour field of random gradients and multi-scale value noise, with up to 3 soft blocks (walls,
    shelves, windows), optionally blurred by ``blur`` (B,) gaussian sigmas in output pixels (applied
    at the half resolution the field is composed at: these fields are smooth)."""
    st = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    full, size = size, (size + 1) // 2  # composed at half resolution (smooth fields), upsampled at the end
    lin = torch.linspace(-1, 1, size)
    yy, xx = lin[None, :, None], lin[None, None, :]
    ang = st["angle"][:, :, None]  # (B, 1, 1)
    grad = (xx * torch.cos(ang) + yy * torch.sin(ang))[:, None]  # (B, 1, S, S)
    out = st["base"][:, :, None, None] * (1 + st["gcol"][:, :, None, None] * grad)
    for i, (cells, amp) in enumerate(_OCTAVES):
        M = _bicubic_matrix(cells, size)  # bicubic upsampling is separable: M @ grid @ M^T
        up = M @ st[f"grid{i}"] @ M.T
        out = out * (1 + amp * st[f"amp{i}"][:, :, None, None] * 2 * up)
    u = (lin * 0.5 + 0.5)
    for j in range(_MAX_BLOCKS):
        r, c, s, on = st["rect"][:, j], st["col"][:, j], st["soft"][:, j, None], st["on"][:, j]
        if not bool(on.any()):
            continue
        mx = torch.sigmoid((u[None] - r[:, 0:1]) / s) * torch.sigmoid((r[:, 0:1] + r[:, 2:3] - u[None]) / s)  # (B, S)
        my = torch.sigmoid((u[None] - r[:, 1:2]) / s) * torch.sigmoid((r[:, 1:2] + r[:, 3:4] - u[None]) / s)
        m = (my[:, :, None] * mx[:, None, :])[:, None] * on[:, None, None, None]
        out = out * (1 - m) + c[:, :, None, None] * m
    if blur is not None:
        out = gaussian_blur(out, blur * (size / full), min_sigma=0.05)
    out = F.interpolate(out, size=(full, full), mode="bilinear", align_corners=False)
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
