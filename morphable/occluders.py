"""Occluders drawn over the rendered face in image space: eyeglasses / sunglasses placed from the
projected eye landmarks, and opaque patches (hands, objects, masks of unknown shape).

All parameters come per image from the caller (sampled from each image's own generator) and are
logged as factors; the drawing is batched over (B, H, W) pixel grids.
"""
from __future__ import annotations

import torch


def draw_glasses(img: torch.Tensor, lm: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Composite eyeglasses onto sRGB images.

    Args:
        img: (B, 3, H, W) in [0, 1].
        lm: (B, 5, 2) landmarks in pixels (left eye, right eye, ...).
        p: per-image (B,) ``glasses`` (0/1), ``lens_dark`` (0 clear .. 1 sunglasses), ``frame_r``,
            ``frame_g``, ``frame_b`` (frame colour), ``frame_width`` (fraction of the eye distance),
            ``lens_size`` (lens half-width as a fraction of the eye distance).
    """
    on = p["glasses"] > 0
    if not bool(on.any()):
        return img
    if not bool(on.all()):  # draw only on the images that wear glasses
        out = img.clone()
        out[on] = draw_glasses(img[on], lm[on], {k: v[on] for k, v in p.items()})
        return out
    B, _, H, W = img.shape
    dev, dt = img.device, img.dtype
    el, er = lm[:, 0], lm[:, 1]
    d = er - el
    ipd = d.norm(dim=-1).clamp_min(1.0)  # (B,)
    ux = d / ipd[:, None]  # eye-line direction
    uy = torch.stack([-ux[:, 1], ux[:, 0]], -1)  # perpendicular (image down when upright)
    yy, xx = torch.meshgrid(torch.arange(H, device=dev, dtype=dt) + 0.5, torch.arange(W, device=dev, dtype=dt) + 0.5,
                            indexing="ij")
    pix = torch.stack([xx, yy], -1)[None]  # (1, H, W, 2)
    a = (p["lens_size"] * ipd)[:, None, None]  # half-width
    b = a * 0.75  # half-height
    fw = (p["frame_width"] * ipd)[:, None, None]
    frame = torch.zeros(B, H, W, device=dev, dtype=dt)
    lens = torch.zeros(B, H, W, device=dev, dtype=dt)
    for eye in (el, er):
        c = eye + uy * (0.05 * ipd)[:, None]  # lenses sit slightly below the eye centre line
        rel = pix - c[:, None, None, :]
        u = (rel * ux[:, None, None, :]).sum(-1)
        v = (rel * uy[:, None, None, :]).sum(-1)
        r = torch.sqrt((u / a) ** 2 + (v / b) ** 2)  # 1 on the rim
        rim = (1 - ((r - 1).abs() * a / fw).clamp(0, 1) ** 2).clamp(0, 1)
        frame = torch.maximum(frame, rim)
        lens = torch.maximum(lens, (1 - ((r - 1) * a / 1.0).clamp(0, 1)))
    # bridge between the lenses and temples towards the ears
    mid = (el + er) / 2
    rel = pix - mid[:, None, None, :]
    u = (rel * ux[:, None, None, :]).sum(-1)
    v = (rel * uy[:, None, None, :]).sum(-1)
    half_gap = (0.5 * ipd)[:, None, None] - a
    bridge = ((u.abs() <= half_gap + 1) & ((v + 0.05 * ipd[:, None, None]).abs() <= fw * 0.6)).to(dt)
    temple = ((u.abs() >= 0.5 * ipd[:, None, None] + a * 0.95) & (u.abs() <= 0.5 * ipd[:, None, None] + a * 1.6)
              & ((v + 0.1 * ipd[:, None, None]).abs() <= fw * 0.5)).to(dt)
    frame = torch.maximum(frame, torch.maximum(bridge, temple)) * on[:, None, None]
    lens = lens * on[:, None, None]
    dark = p["lens_dark"].to(dt)[:, None, None, None]
    tint = 1 - 0.88 * dark
    out = img * (1 - lens[:, None]) + (img * tint + 0.04 * (1 - dark) * 0.5) * lens[:, None]
    fc = torch.stack([p["frame_r"], p["frame_g"], p["frame_b"]], -1).to(dt)[:, :, None, None]
    return out * (1 - frame[:, None]) + fc * frame[:, None]


def draw_patches(img: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Composite one soft-edged elliptical patch per image where ``patch`` (B,) is 1: centre
    ``patch_x``, ``patch_y`` and radii ``patch_w``, ``patch_h`` as fractions of the image, colour
    ``patch_r/g/b`` with a shading gradient (a hand, a cup, a scarf...)."""
    on = p["patch"] > 0
    if not bool(on.any()):
        return img
    if not bool(on.all()):  # draw only on the images that have a patch
        out = img.clone()
        out[on] = draw_patches(img[on], {k: v[on] for k, v in p.items()})
        return out
    B, _, H, W = img.shape
    dev, dt = img.device, img.dtype
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H, device=dev, dtype=dt), torch.linspace(0, 1, W, device=dev, dtype=dt),
                            indexing="ij")
    dx = (xx[None] - p["patch_x"].to(dt)[:, None, None]) / p["patch_w"].to(dt)[:, None, None]
    dy = (yy[None] - p["patch_y"].to(dt)[:, None, None]) / p["patch_h"].to(dt)[:, None, None]
    r = torch.sqrt(dx * dx + dy * dy)
    m = (1 - ((r - 0.9) / 0.2).clamp(0, 1)) * on[:, None, None]
    col = torch.stack([p["patch_r"], p["patch_g"], p["patch_b"]], -1).to(dt)[:, :, None, None]
    shade = (1.1 - 0.35 * (dx + dy).clamp(-1, 1) * 0.5)[:, None]
    return img * (1 - m[:, None]) + (col * shade).clamp(0, 1) * m[:, None]
