"""Cameras, head rotations and the ArcFace alignment (pure batched tensor functions).

Frames: model/world metres, +y up, +z towards the camera. The camera sits on the +z axis at
``distance`` looking down -z. Pixel frame: x right, y down, origin at the top-left corner.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from common.align import ARCFACE_TEMPLATE, template  # noqa: F401  (morphable's public names for them)


def euler_to_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotation from angles in degrees, applied as R = Rz(roll) @ Rx(pitch) @ Ry(yaw).

    yaw > 0 turns the face towards image-left (the subject's right... as seen: the nose moves to
    -x), pitch > 0 lowers the chin (the face looks down: the nose tip moves down the image), roll > 0
    tilts the head counter-clockwise on screen (the eye on image-right rises).
    """
    y, p, r = (torch.deg2rad(a) for a in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = y.cos(), y.sin(), p.cos(), p.sin(), r.cos(), r.sin()
    one, zero = torch.ones_like(y), torch.zeros_like(y)
    Ry = torch.stack([cy, zero, -sy, zero, one, zero, sy, zero, cy], -1).view(-1, 3, 3)
    Rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).view(-1, 3, 3)
    Rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).view(-1, 3, 3)
    return Rz @ Rx @ Ry


@dataclass
class Camera:
    """A batch of ``B`` pinhole cameras looking down -z from ``(0, 0, distance)``.

    Attributes:
        distance: (B,) metres from the head origin.
        focal: (B,) focal length in pixels of the rendered image.
        center: (B, 2) principal point in pixels.
    """

    distance: torch.Tensor
    focal: torch.Tensor
    center: torch.Tensor

    @staticmethod
    def from_35mm(distance: torch.Tensor, focal_mm: torch.Tensor, size: int) -> "Camera":
        """Focal from a 35 mm-equivalent length (36 mm sensor width mapped to ``size`` pixels)."""
        focal = focal_mm / 36.0 * size
        c = torch.full((distance.shape[0], 2), size / 2.0, dtype=distance.dtype, device=distance.device)
        return Camera(distance=distance, focal=focal, center=c)

    @property
    def position(self) -> torch.Tensor:
        """(B, 3) camera centres in world coordinates."""
        z = torch.zeros_like(self.distance)
        return torch.stack([z, z, self.distance], -1)

    def to_view(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) world points -> camera frame (camera at origin looking down -z)."""
        return points - self.position[:, None]

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) world points -> (B, N, 3) pixel x, pixel y, positive depth."""
        v = self.to_view(points)
        depth = (-v[..., 2]).clamp_min(1e-6)
        x = self.focal[:, None] * v[..., 0] / depth + self.center[:, None, 0]
        y = -self.focal[:, None] * v[..., 1] / depth + self.center[:, None, 1]
        return torch.stack([x, y, depth], -1)


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) least-squares similarity (Umeyama, no reflection) mapping ``src`` to ``dst``.

    Args:
        src: (B, N, 2) points; dst: (N, 2) or (B, N, 2) target points.
    """
    if dst.ndim == 2:
        dst = dst.expand(src.shape[0], -1, -1)
    dst = dst.to(src)
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s, d = src - mu_s, dst - mu_d
    # Complex-number form of the 2D similarity: a + ib = sum(conj(s) d) / sum(|s|^2).
    sx, sy, dx, dy = s[..., 0], s[..., 1], d[..., 0], d[..., 1]
    den = (sx * sx + sy * sy).sum(1).clamp_min(1e-12)
    a = (sx * dx + sy * dy).sum(1) / den
    b = (sx * dy - sy * dx).sum(1) / den
    R = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (B, 2, 2)
    t = mu_d.squeeze(1) - (R @ mu_s.squeeze(1)[..., None]).squeeze(-1)
    return torch.cat([R, t[..., None]], -1)


def apply_affine(M: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply (B, 2, 3) affine maps to (B, N, 2) points."""
    return pts @ M[:, :, :2].transpose(1, 2) + M[:, None, :, 2]


def focal_scale(M: torch.Tensor) -> torch.Tensor:
    """(B,) scale factor of (B, 2, 3) similarity transforms."""
    return torch.sqrt(M[:, 0, 0] ** 2 + M[:, 1, 0] ** 2)


def colour_temperature_rgb(kelvin: torch.Tensor) -> torch.Tensor:
    """(B, 3) linear-RGB white balance of a black body at ``kelvin`` (B,), normalised to unit
    luminance (Tanner Helland's fit of the Planckian locus, 1000-40000 K)."""
    t = (kelvin / 100.0).clamp(10, 400)
    r = torch.where(t <= 66, torch.full_like(t, 255.0), 329.698727446 * (t - 60).clamp_min(1e-3) ** -0.1332047592)
    g = torch.where(t <= 66, 99.4708025861 * torch.log(t) - 161.1195681661,
                    288.1221695283 * (t - 60).clamp_min(1e-3) ** -0.0755148492)
    b = torch.where(t >= 66, torch.full_like(t, 255.0),
                    torch.where(t <= 19, torch.zeros_like(t), 138.5177312231 * torch.log((t - 10).clamp_min(1e-3)) - 305.0447927307))
    rgb = (torch.stack([r, g, b], -1).clamp(0, 255) / 255.0) ** 2.2
    lum = (rgb * torch.tensor([0.2126, 0.7152, 0.0722], dtype=rgb.dtype, device=rgb.device)).sum(-1, keepdim=True)
    return rgb / lum.clamp_min(1e-6)


def direction(azimuth: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
    """(B, 3) unit vector towards a light at azimuth/elevation degrees (0, 0 = from the camera)."""
    az, el = torch.deg2rad(azimuth), torch.deg2rad(elevation)
    return torch.stack([el.cos() * az.sin(), el.sin(), el.cos() * az.cos()], -1)


__all__ = [
    "ARCFACE_TEMPLATE", "Camera", "apply_affine", "colour_temperature_rgb", "direction", "euler_to_matrix",
    "focal_scale", "similarity_transform", "template",
]
