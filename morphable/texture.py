"""UV-space texture baking: the albedo of an identity is evaluated once per texel, then sampled
per pixel (bilinear), so its cost is shared by all images of that identity in a batch."""
from __future__ import annotations

import numpy as np
import torch

from .model import MorphableModel
from .raster import interpolate, rasterize


def texel_map(model: MorphableModel, res: int, faces: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Rest position and region of every texel of the model's UV layout, cropped to the UV box the
    model uses and dilated past island borders (no seams under bilinear filtering).

    Args:
        model: the model (needs ``uv`` and ``faces_uv``).
        res: texture side in texels.
        faces: optional (F,) bool mask of the faces to bake (default all); the crop box is theirs.

    Returns:
        dict with ``p`` (res*res, 3) rest positions of the covered texels, ``region`` (Nc,) int64
        their regions, ``index`` (res*res,) int64 the covered texel each texel copies (dilation),
        ``box`` (4,) [u0, v0, u1, v1] of the crop in the model's UV space.
    """
    if model.uv is None or model.faces_uv is None:
        raise ValueError(f"{model.name}: texture baking needs uv and faces_uv")
    uv = model.uv.float().cpu()
    fsel = torch.ones(model.faces.shape[0], dtype=torch.bool) if faces is None else faces.cpu()
    used = uv[model.faces_uv[fsel].reshape(-1).cpu()]
    lo, hi = used.min(0).values, used.max(0).values
    pad = (hi - lo) * 0.01
    lo, hi = lo - pad, hi + pad
    side = (hi - lo).max()
    box = torch.cat([lo, lo + side])
    t = (uv - lo) / side  # [0, 1]
    scr = torch.stack([t[:, 0] * res, (1 - t[:, 1]) * res, torch.ones(len(t))], -1)[None]
    faces_uv = torch.where(fsel[:, None], model.faces_uv.cpu(), torch.zeros_like(model.faces_uv.cpu()))
    frag = rasterize(scr, faces_uv, res, res, cull_backfaces=False)
    p = interpolate(frag, model.faces.cpu(), model.mean.float().cpu()[None])[0]
    region_f = model.regions.get("face_region", torch.zeros(model.faces.shape[0], dtype=torch.int64)).cpu()
    region = torch.where(frag.mask[0], region_f[frag.face[0].clamp_min(0)], torch.zeros_like(frag.face[0]))
    covered = frag.mask[0].numpy()
    from scipy.ndimage import distance_transform_edt

    _, (iy, ix) = distance_transform_edt(~covered, return_indices=True)
    flat = torch.from_numpy((iy * res + ix).astype(np.int64)).reshape(-1)
    cov_idx = torch.from_numpy(np.flatnonzero(covered.reshape(-1)))
    remap = torch.full((res * res,), -1, dtype=torch.int64)
    remap[cov_idx] = torch.arange(len(cov_idx))
    return {"p": p.reshape(-1, 3)[cov_idx], "region": region.reshape(-1)[cov_idx], "index": remap[flat], "box": box}


def uv_grid(uv: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Model UVs (..., 2) -> ``grid_sample`` coordinates in [-1, 1] of a texture baked over ``box``."""
    lo, side = box[:2].to(uv), (box[2] - box[0]).to(uv)
    t = (uv - lo) / side
    return torch.stack([t[..., 0] * 2 - 1, (1 - t[..., 1]) * 2 - 1], -1)


def sample_at(tex: torch.Tensor, which: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup at ``P`` scattered points: texture ``which[p]`` of ``tex`` (U, C, T, T) at
    ``grid[p]`` (P, 2) in ``grid_sample`` coordinates -> (P, C).

    Same convention as ``F.grid_sample(..., align_corners=False, padding_mode="border")`` without
    expanding the textures to one per image or sampling uncovered pixels.
    """
    from . import native

    if native.usable(tex, grid):
        return native.sample_texture(tex.permute(0, 2, 3, 1), which, grid)
    U, C, Th, Tw = tex.shape
    x = (((grid[:, 0] + 1) * Tw - 1) / 2).clamp(0, Tw - 1)
    y = (((grid[:, 1] + 1) * Th - 1) / 2).clamp(0, Th - 1)
    x0, y0 = x.floor(), y.floor()
    tx, ty = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp_max(Tw - 1), (y0 + 1).clamp_max(Th - 1)
    flat = tex.permute(0, 2, 3, 1).reshape(U * Th * Tw, C)
    base = which * (Th * Tw)
    a, b = flat[base + y0 * Tw + x0], flat[base + y0 * Tw + x1]
    c, d = flat[base + y1 * Tw + x0], flat[base + y1 * Tw + x1]
    return (a * (1 - tx) + b * tx) * (1 - ty) + (c * (1 - tx) + d * tx) * ty

