"""Per-image photometric degradations (blur, noise, JPEG, low resolution, colour jitter, gray).

Parameters are sampled by the caller, one row per image, so each image depends only on its own
parameters; the ops are batched kornia/torch calls on the images' device (no loop over images).
"""
from __future__ import annotations

import math
from functools import lru_cache

import kornia
import torch
import torch.nn.functional as F


def gaussian_blur(img: torch.Tensor, sigma: torch.Tensor, min_sigma: float = 0.0, own_kernel: bool = False) -> torch.Tensor:
    """Blur each of the (B, C, H, W) images with its own gaussian ``sigma`` (B,) in pixels (one kernel
    size, from the largest sigma); images with ``sigma <= min_sigma`` are returned unchanged. With
    ``own_kernel`` each image's kernel spans 3 sd of its own sigma (one blur per kernel size), so an
    image's result does not depend on the rest of its batch."""
    on = sigma > min_sigma
    if not bool(on.any()):
        return img
    out = img.clone()
    k = 2 * torch.ceil(3 * sigma) + 1 if own_kernel else torch.where(on, 2 * math.ceil(3 * float(sigma[on].max())) + 1, 0)
    for size in k[on].unique().tolist():
        sel = on & (k == size)
        out[sel] = kornia.filters.gaussian_blur2d(img[sel], (int(size), int(size)),
                                                  sigma[sel].clamp_min(1e-3).to(img)[:, None].expand(-1, 2))
    return out


@lru_cache(maxsize=1024)
def _resample_operator(n: int, m: int, device: str) -> torch.Tensor:
    """(n, n) matrix of the 1-D round trip of :func:`lowres`: a length-``n`` signal downsampled to
    ``m`` (bilinear, antialiased) and upsampled back (bilinear), both ``align_corners=False`` (the
    operators of ``F.interpolate`` applied to the unit impulses)."""
    eye = torch.eye(n, dtype=torch.float64)[None, None]  # column j: the impulse at j (rows resampled only)
    down = F.interpolate(eye, size=(m, n), mode="bilinear", align_corners=False, antialias=True)
    up = F.interpolate(down, size=(n, n), mode="bilinear", align_corners=False)
    return up[0, 0].float().to(device)  # [output i, input j]


def lowres(img: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Low resolution: each of the (B, C, H, W) images downsampled by its ``scale`` (B,) (to
    ``max(4, round(H * s))`` x ``max(4, round(W * s))``, antialiased bilinear) and upsampled back
    (bilinear). Both resamplings are separable and linear, so each image's round trip is two small
    matrices, ``Ay @ x @ Ax^T``: one batched matmul, a matrix per distinct size (cached)."""
    B, C, H, W = img.shape
    if B == 0:
        return img
    s = scale.detach().double().cpu()
    hs = (H * s).round().clamp_min(4).long()
    ws = (W * s).round().clamp_min(4).long()
    dev = str(img.device)
    pairs, inv = torch.unique(torch.stack([hs, ws], 1), dim=0, return_inverse=True)
    ay = torch.stack([_resample_operator(H, int(h), dev) for h in pairs[:, 0].tolist()])[inv.to(img.device)]
    ax = torch.stack([_resample_operator(W, int(w), dev) for w in pairs[:, 1].tolist()])[inv.to(img.device)]
    return ay.to(img.dtype)[:, None] @ img @ ax.to(img.dtype).transpose(1, 2)[:, None]


_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def hue_matrix(hue: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) RGB -> RGB matrices rotating the hue by ``hue`` (B,) radians: a rotation of the
    chroma plane (I, Q) of YIQ, luma kept (the classic linear hue shift; cheaper than HSV)."""
    c, s = torch.cos(hue), torch.sin(hue)
    one, zero = torch.ones_like(hue), torch.zeros_like(hue)
    rot = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, c, -s], -1),
                       torch.stack([zero, s, c], -1)], -2)
    T = _RGB2YIQ.to(hue)
    return torch.linalg.inv(T) @ rot @ T


def apply_degradations(img: torch.Tensor, p: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
    """Degrade sRGB images.

    Args:
        img: (B, 3, H, W) sRGB in [0, 1].
        p: per-image parameters, each (B,): ``blur`` (sigma px at this size, 0 = off), ``lowres``
            (scale, 1 = off), ``brightness``, ``contrast``, ``saturation``, ``hue`` (identity values
            0, 1, 1, 0 = off), ``gray`` (0/1), ``noise`` (std), ``jpeg`` (quality, 0 = off).
        noise: (B, 3, H, W) standard-normal noise drawn from each image's stream (rows whose
            ``noise`` std is 0 may hold anything, e.g. zeros).

    Returns:
        (B, 3, H, W) degraded images in [0, 1].
    """
    B, _, H, W = img.shape
    out = img
    out = gaussian_blur(out, p["blur"])
    low = p["lowres"] < 1.0
    if bool(low.any()):
        out = out.clone()
        out[low] = lowres(out[low], p["lowres"][low])
    # colour jitter
    out = out + p["brightness"].to(img)[:, None, None, None]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * p["contrast"].to(img)[:, None, None, None] + mean
    gray = (out * torch.tensor([0.299, 0.587, 0.114], device=img.device)[None, :, None, None]).sum(1, keepdim=True)
    out = gray + (out - gray) * p["saturation"].to(img)[:, None, None, None]
    hue = p["hue"].to(img)
    hon = hue != 0
    if bool(hon.any()):  # hue rotation on the images that have one (the others pass unchanged)
        out = out.clone()
        out[hon] = torch.einsum("bij,bjhw->bihw", hue_matrix(hue[hon]), out[hon].clamp(0, 1))
    g = p["gray"].to(img)[:, None, None, None]
    gray = (out * torch.tensor([0.299, 0.587, 0.114], device=img.device)[None, :, None, None]).sum(1, keepdim=True)
    out = out * (1 - g) + gray * g
    out = out + noise * p["noise"].to(img)[:, None, None, None]
    out = out.clamp(0, 1)
    q = p["jpeg"]
    jon = q > 0
    if bool(jon.any()):
        out = out.clone()
        out[jon] = kornia.enhance.jpeg_codec_differentiable(out[jon], q[jon].to(img)).clamp(0, 1)
    return out
