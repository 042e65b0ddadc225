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


#: Feature shape: the per-identity fields of :func:`feature_fields`, in this order, and the standard
#: deviation of each coefficient at ``identity.feature_shape`` = 1 (a fraction for size, aspect, nose
#: width, radians for tilt, metres for the moves). Measured against a real-face recogniser (BENCHMARKS.md).
FEATURE_FIELDS = ("eye_size", "eye_aspect", "eye_tilt", "eye_spacing", "eye_height", "eye_depth", "brow_ridge",
                  "nose_width", "nose_projection", "nose_length", "nose_bridge")
FEATURE_SD = (0.14, 0.12, 0.09, 0.003, 0.003, 0.004, 0.005, 0.10, 0.0025, 0.002, 0.002)
NUM_FEATURE = len(FEATURE_FIELDS)
#: Sex-typical shifts of some feature-shape coefficients, (on a female-read face, on a male-read face)
#: in units of ``identity.sex_features``: relative to the face, men's noses are wider, longer and more
#: projecting and their brow ridges stronger, women's eyes larger (a real-face recogniser reads these
#: as gender; male eyes are not made smaller, which the detector misses: BENCHMARKS.md, session 9).
SEX_FEATURES = {"eye_size": (1.0, 0.0), "brow_ridge": (-1.0, 1.0), "nose_width": (-1.0, 1.0),
                "nose_projection": (-0.5, 0.5), "nose_length": (-0.5, 0.5)}


def _plateau(r: torch.Tensor, inner: float, outer: float) -> torch.Tensor:
    return 1 - _smoothstep(inner, outer, r)


def feature_fields(points: torch.Tensor, eye_centres: torch.Tensor, nose_tip: torch.Tensor,
                   eyeball: torch.Tensor | None = None) -> torch.Tensor:
    """(V, 3, NUM_FEATURE) displacement fields of the eyes and the nose at rest positions ``points``
    (V, 3) (metres, eye midpoint at the origin, +z towards the camera), one per :data:`FEATURE_FIELDS`,
    mirrored left/right so a face stays symmetric (asymmetry comes from the shape model).

    Eyes (``eye_centres`` (2, 3)): each eye and its lids move as one piece inside a plateau of 15 mm
    around the eye centre, fading out by 32 mm; ``eye_size`` scales the eye region about its centre,
    ``eye_aspect`` stretches it wide and flat (or round), ``eye_tilt`` turns it (canthal tilt: outer
    corners up), ``eye_spacing`` moves the eyes apart, ``eye_height`` up, ``eye_depth`` forward
    (protruding) or back (deep-set), ``brow_ridge`` pushes the brow forward. The eyeballs
    (``eyeball`` (V,) bool) are not scaled or stretched, only moved and turned, so irises stay round:
    a larger or wider eye region opens the lids around them.

    Nose (``nose_tip`` (3,)): ``nose_width`` scales the lower nose (alae) sideways, ``nose_projection``
    moves the nose forward, ``nose_length`` moves the tip down, ``nose_bridge`` raises the bridge.
    Fixed functions of the mean head, the same for every identity."""
    x, y, z = points.unbind(-1)
    ex, ey = eye_centres[:, 0].abs().mean(), eye_centres[:, 1].mean()
    sx = torch.where(x < 0, -1.0, 1.0).to(points)
    dx, dy = x - sx * ex, y - ey
    r = (dx * dx + dy * dy).sqrt()
    front = _smoothstep(-0.05, -0.03, z)
    w = _plateau(r, 0.015, 0.032) * front
    ws = w if eyeball is None else w * (~eyeball.to(torch.bool)).to(w)
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    f = [torch.stack([dx, dy, zero], -1) * ws[:, None],  # eye_size
         torch.stack([dx, -dy, zero], -1) * ws[:, None],  # eye_aspect
         torch.stack([-dy * sx, dx * sx, zero], -1) * w[:, None],  # eye_tilt
         torch.stack([sx, zero, zero], -1) * w[:, None],  # eye_spacing
         torch.stack([zero, one, zero], -1) * w[:, None],  # eye_height
         torch.stack([zero, zero, one], -1) * w[:, None]]  # eye_depth
    rb = ((x.abs() - 0.8 * ex) ** 2 / 1.6 + (y - ey - 0.02) ** 2).sqrt()
    f.append(torch.stack([zero, zero, one], -1) * (_plateau(rb, 0.008, 0.025) * front)[:, None])  # brow_ridge
    nx, ny, nz = nose_tip.unbind(-1)
    nfront = _smoothstep(nz - 0.03, nz - 0.015, z)
    low = ((x / 1.2) ** 2 + (y - (ny - 0.008)) ** 2).sqrt()
    w_low = _plateau(low, 0.012, 0.026) * nfront
    f.append(torch.stack([x, zero, zero], -1) * w_low[:, None])  # nose_width
    w_nose = _plateau(((x / 0.8) ** 2 + ((y - ny) / 1.6) ** 2).sqrt(), 0.008, 0.02) * nfront
    f.append(torch.stack([zero, zero, one], -1) * w_nose[:, None])  # nose_projection
    w_tip = _plateau((x * x + (y - ny - 0.004) ** 2).sqrt(), 0.007, 0.02) * nfront
    f.append(torch.stack([zero, -one, zero], -1) * w_tip[:, None])  # nose_length
    w_br = _plateau(((x / 0.6) ** 2 + ((y - (ny + ey) / 2) / 2.5) ** 2).sqrt(), 0.004, 0.012) * _smoothstep(-0.01, 0.0, z)
    f.append(torch.stack([zero, zero, one], -1) * w_br[:, None])  # nose_bridge
    return torch.stack(f, -1)


def feature_displacement(coef: torch.Tensor, fields: torch.Tensor, amplitude: float) -> torch.Tensor:
    """(U, V, 3) displacement in metres for per-identity standard-normal coefficients ``coef``
    (U, NUM_FEATURE) and ``fields`` (V, 3, NUM_FEATURE) from :func:`feature_fields`, each
    coefficient scaled by its :data:`FEATURE_SD` times ``amplitude``."""
    sd = torch.tensor(FEATURE_SD, dtype=fields.dtype, device=fields.device) * amplitude
    return torch.einsum("uk,vdk->uvd", coef.to(fields.dtype) * sd, fields)
