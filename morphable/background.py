"""Procedural and image backgrounds for a batch, each deterministic by its image's random stream."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .degrade import gaussian_blur
from .rng import Draws

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


def draw_procedural(r: Draws) -> dict[str, torch.Tensor]:
    """The random numbers of a batch of procedural backgrounds, (B, ...) each, drawn from the images'
    streams ``r`` in a fixed layout (all 3 blocks are drawn, ``on`` says which are used), so each
    background depends on its image's key only."""
    d = {
        "base": r.uniform(3) ** 2.2 * 0.8 + 0.02,
        "angle": r.uniform(1) * 2 * np.pi,
        "gcol": (r.uniform(3) - 0.5) * 0.4,
    }
    for i, (cells, _) in enumerate(_OCTAVES):
        d[f"grid{i}"] = r.uniform(3, cells, cells) - 0.5
        d[f"amp{i}"] = r.uniform(1)
    n_blocks = r.integers(0, _MAX_BLOCKS)  # (B,)
    d["rect"] = r.uniform(_MAX_BLOCKS, 4) * torch.tensor([1.0, 1.0, 0.7, 0.7], device=n_blocks.device)
    d["col"] = r.uniform(_MAX_BLOCKS, 3) ** 2.2 * 0.8
    d["soft"] = 0.01 + 0.05 * r.uniform(_MAX_BLOCKS)
    d["on"] = (torch.arange(_MAX_BLOCKS, device=n_blocks.device)[None] < n_blocks[:, None]).float()
    return {k: v.float() for k, v in d.items()}


@lru_cache(maxsize=32)
def _bicubic_matrix(n: int, size: int) -> torch.Tensor:
    """(size, n) weights of 1-D bicubic upsampling (``F.interpolate(mode="bicubic",
    align_corners=False)``), so a 2-D upsample is two small matrix products."""
    eye = torch.eye(n)[:, None, :, None].expand(n, 1, n, 1)  # n one-hot columns
    return F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=False)[:, 0, :, 0].T.contiguous()


def compose_procedural(st: dict[str, torch.Tensor], size: int, blur: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, size, size) linear-RGB procedural backgrounds from :func:`draw_procedural` draws ``st``
    (on their device): a
    colour field of random gradients and multi-scale value noise, with up to 3 soft blocks (walls,
    shelves, windows), optionally blurred by ``blur`` (B,) gaussian sigmas in output pixels (applied
    at the half resolution the field is composed at: these fields are smooth)."""
    dev = st["base"].device
    full, size = size, (size + 1) // 2  # composed at half resolution (smooth fields), upsampled at the end
    lin = torch.linspace(-1, 1, size, device=dev)
    yy, xx = lin[None, :, None], lin[None, None, :]
    ang = st["angle"][:, :, None]  # (B, 1, 1)
    grad = (xx * torch.cos(ang) + yy * torch.sin(ang))[:, None]  # (B, 1, S, S)
    out = st["base"][:, :, None, None] * (1 + st["gcol"][:, :, None, None] * grad)
    for i, (cells, amp) in enumerate(_OCTAVES):
        M = _bicubic_matrix(cells, size).to(dev)  # bicubic upsampling is separable: M @ grid @ M^T
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


def draw_image_crops(r: Draws, n_files: int) -> dict[str, torch.Tensor]:
    """(B,) file index and crop parameters (side fraction, y and x position in [0, 1)) of a batch of
    photograph backgrounds, drawn from the images' streams ``r``."""
    return {"index": r.integers(0, n_files - 1), "frac": (0.4 + 0.6 * r.uniform()).float(), "py": r.uniform().float(),
            "px": r.uniform().float()}


def from_images(files: tuple[str, ...], size: int, crops: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, 3, size, size) random crops (linear RGB) of user images, one per row of ``crops``
    (:func:`draw_image_crops`, on the CPU). The files are decoded and cached once; each crop is
    resized with antialiasing (a per-image op: the crops differ in size)."""
    out = []
    for idx, frac, py, px in zip(crops["index"].tolist(), crops["frac"].tolist(), crops["py"].tolist(), crops["px"].tolist()):
        img = _load(files[idx])
        _, h, w = img.shape
        side = max(8, int(min(h, w) * frac))
        y0, x0 = int(py * (h - side + 1)), int(px * (w - side + 1))
        crop = img[:, y0 : y0 + side, x0 : x0 + side][None]
        out.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0])
    return torch.stack(out)
