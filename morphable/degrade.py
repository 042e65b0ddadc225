"""Per-image photometric degradations (blur, noise, JPEG, low resolution, colour jitter, gray).

Parameters are sampled by the caller, one row per image, so each image depends only on its own
parameters; the ops are batched kornia/torch calls.
"""
from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F


def gaussian_blur(img: torch.Tensor, sigma: torch.Tensor, min_sigma: float = 0.0) -> torch.Tensor:
    """Blur each of the (B, C, H, W) images with its own gaussian ``sigma`` (B,) in pixels (one kernel
    size, from the largest sigma); images with ``sigma <= min_sigma`` are returned unchanged."""
    on = sigma > min_sigma
    if not bool(on.any()):
        return img
    k = int(2 * math.ceil(3 * float(sigma[on].max())) + 1)
    out = img.clone()
    out[on] = kornia.filters.gaussian_blur2d(img[on], (k, k), sigma[on].clamp_min(1e-3).to(img)[:, None].expand(-1, 2))
    return out


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
        noise: (B, 3, H, W) standard-normal noise drawn from each image's generator.

    Returns:
        (B, 3, H, W) degraded images in [0, 1].
    """
    B, _, H, W = img.shape
    out = img
    out = gaussian_blur(out, p["blur"])
    low = p["lowres"] < 1.0
    if bool(low.any()):
        out = out.clone()
        for i in torch.nonzero(low).flatten().tolist():
            s = float(p["lowres"][i])
            h, w = max(4, round(H * s)), max(4, round(W * s))
            small = F.interpolate(out[i : i + 1], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            out[i : i + 1] = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
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
