"""DiffAugment (Zhao et al. 2020): differentiable augmentation of real *and* generated images
before the discriminator, so a GAN can train on small data without the discriminator overfitting.

Policies (comma-separated, applied in this order): ``color`` (brightness, saturation, contrast),
``translation`` (integer shift up to 1/8 of the side, zero fill), ``cutout`` (a zeroed square of half
the side at a random place). Every image draws its own parameters; all operations are differentiable
in the images (gradients reach the generator). Images are in ``[-1, 1]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> list[str]:
    """``"color,translation,cutout"`` -> list of names (``""`` -> none); unknown names raise ValueError."""
    names = [p.strip() for p in str(policy).split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown DiffAugment policy {bad[0]!r}; use a comma-separated subset of {', '.join(POLICIES)}")
    return names


def _rand(shape, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device if generator is not None else x.device).to(x.device, x.dtype)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness ``+U(-0.5, 0.5)``, saturation ``x U(0, 2)`` around the pixel's grey, contrast
    ``x U(0.5, 1.5)`` around the image mean (per image)."""
    B = x.shape[0]
    x = x + (_rand((B, 1, 1, 1), x, generator) - 0.5)
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (_rand((B, 1, 1, 1), x, generator) * 2) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (_rand((B, 1, 1, 1), x, generator) + 0.5) + m


def translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None,
                shift: torch.Tensor | None = None) -> torch.Tensor:
    """Shift each image by an integer ``(dy, dx)`` in ``[-r, r]`` (``r = round(ratio * side)``),
    filling with zeros. ``shift``: (B, 2) explicit shifts (tests)."""
    B, C, H, W = x.shape
    if shift is None:
        ry, rx = int(H * ratio + 0.5), int(W * ratio + 0.5)
        u = _rand((B, 2), x, generator).float()
        shift = torch.stack([(u[:, 0] * (2 * ry + 1)).floor() - ry, (u[:, 1] * (2 * rx + 1)).floor() - rx], 1)
    shift = shift.to(x.device).long()
    gy = torch.arange(H, device=x.device)[None, :, None] - shift[:, 0, None, None]  # source row of each output row
    gx = torch.arange(W, device=x.device)[None, None, :] - shift[:, 1, None, None]
    gy, gx = (gy + 1).clamp(0, H + 1), (gx + 1).clamp(0, W + 1)  # index into the zero-padded image
    xp = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (B, H+2, W+2, C)
    b = torch.arange(B, device=x.device)[:, None, None]
    return xp[b, gy.expand(B, H, W), gx.expand(B, H, W)].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None,
           center: torch.Tensor | None = None) -> torch.Tensor:
    """Zero a ``ratio * side`` square per image, centred at a random pixel (clipped at the border).
    ``center``: (B, 2) explicit (row, col) centres (tests)."""
    B, C, H, W = x.shape
    sh, sw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    if center is None:
        u = _rand((B, 2), x, generator).float()
        center = torch.stack([(u[:, 0] * (H + 1 - sh % 2)).floor(), (u[:, 1] * (W + 1 - sw % 2)).floor()], 1)
    center = center.to(x.device).long()
    ys = torch.arange(H, device=x.device)[None, :, None] - (center[:, 0, None, None] - sh // 2)
    xs = torch.arange(W, device=x.device)[None, None, :] - (center[:, 1, None, None] - sw // 2)
    inside = (ys >= 0) & (ys < sh) & (xs >= 0) & (xs < sw)
    return x * (~inside)[:, None].to(x.dtype)


def diff_augment(x: torch.Tensor, policy: str | list[str], generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the policies (``"color,translation,cutout"``) to ``x`` (B, 3, H, W); keeps the memory format."""
    names = parse_policy(policy) if isinstance(policy, str) else list(policy)
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    for p in names:
        if p == "color":
            x = color(x, generator)
        elif p == "translation":
            x = translation(x, generator=generator)
        elif p == "cutout":
            x = cutout(x, generator=generator)
    return x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
