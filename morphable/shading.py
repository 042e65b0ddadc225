"""The per-pixel lighting of the morphable renderer: ambient spherical harmonics with occlusion, one
directional key light (skin wrap, cast shadows), an on-camera flash, Blinn-Phong specular and the
eyes' catchlights, evaluated at the covered pixels of a batch.

:func:`light_pixels` is a pure function over tensors (CPU and CUDA). Each expression is spelled out
in a fixed order (explicit dot products and norms, integer powers by repeated squaring) so that the
compiled CPU kernel of :mod:`morphable.native` evaluates the same float32 operations in the same
order: both give the same bits (``tests/morphable/test_native.py``).
"""
from __future__ import annotations

import torch

from . import native as _native

#: the columns of the per-image table of :func:`light_pixels`
LIGHT_COLUMNS = ("sh0", "sh1", "sh2", "sh3", "sh4", "sh5", "sh6", "sh7", "sh8", "sh_detail", "ambient",
                 "ldir_x", "ldir_y", "ldir_z", "col_r", "col_g", "col_b", "intensity", "specular", "flash",
                 "cam_x", "cam_y", "cam_z", "cast")
_COL = {k: i for i, k in enumerate(LIGHT_COLUMNS)}
#: skin's per-channel wrap past the terminator (red the furthest): subsurface scattering, approximated
SKIN_WRAP = (0.45, 0.22, 0.15)
#: the least direct light the teeth get: the lips cast little shadow on the teeth just behind them
TEETH_SHADOW_FLOOR = 0.6
#: the bits of the per-pixel ``flags`` of :func:`light_pixels`
SKIN, EYE, TEETH = 1, 2, 4


def dot3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P,) the dot products of (P, 3) rows, ``(a0 b0 + a1 b1) + a2 b2``."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def unit(x: torch.Tensor) -> torch.Tensor:
    """(P, 3) rows scaled to unit length (norms under 1e-12 count as 1e-12, as ``F.normalize``). The
    norm is the float32 rounding of a float64 square root, which is correctly rounded (as the native
    kernel's); torch's float32 ``sqrt`` on CPU (MKL) is an ulp off in about 0.75% of values."""
    return x / dot3(x, x).double().sqrt().to(x.dtype).clamp_min(1e-12)[:, None]


def pow_int(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x ** k`` for an integer ``k >= 1`` by repeated squaring: the powers ``x^(2^i)`` of the set
    bits of ``k`` multiplied from the highest down (a fixed order the native kernel repeats)."""
    powers, p = [], x
    for i in range(k.bit_length()):
        if i:
            p = p * p
        if k >> i & 1:
            powers.append(p)
    out = powers[-1]
    for q in reversed(powers[:-1]):
        out = out * q
    return out


def light_pixels(normal: torch.Tensor, position: torch.Tensor, occlusion: torch.Tensor, albedo: torch.Tensor,
                 specular: torch.Tensor, shadow: torch.Tensor, ndl_raw: torch.Tensor, flags: torch.Tensor,
                 bsel: torch.Tensor, table: torch.Tensor, native: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Light the covered pixels.

    Args:
        normal, position: (P, 3) unit normal and position (scene units) of each pixel's surface.
        occlusion: (P,) ambient visibility in [0, 1] (creases also catch less of the key light).
        albedo: (P, 3) linear albedo; specular: (P,) specular weight (0 on the eyes).
        shadow: (P,) the key light's lit fraction from the shadow map, softened (1 = lit).
        ndl_raw: (P,) ``dot3(normal, key light direction)``, negative on the far side.
        flags: (P,) uint8 bits :data:`SKIN` (skin and lips: wrap lighting, a scattered shadow edge),
            :data:`EYE` (catchlights instead of specular) and :data:`TEETH` (a shadow floor).
        bsel: (P,) int64 image of each pixel; table: (B, 24) float per-image light, columns
            :data:`LIGHT_COLUMNS` (the key light's direction and linear colour, ``cast`` 1 where the
            image has cast shadows).
        native: use the compiled CPU kernel where it can serve these tensors (same bits).

    Returns:
        ``(lin, lum, shadow, half)``: (P, 3) lit linear RGB before exposure, (P,) the irradiance's
        mean over RGB (the exposure meters it), (P,) the shadow after skin scattering and the teeth's
        floor, and (P, 3) the unit half vector between the key light and the view.
    """
    if table.ndim != 2 or table.shape[1] != len(LIGHT_COLUMNS):
        raise ValueError(f"the light table must be (B, {len(LIGHT_COLUMNS)}), got {tuple(table.shape)}")
    any_flash = bool((table[:, _COL["flash"]] > 0).any())  # some image of the batch has a flash
    tensors = (normal, position, occlusion, albedo, specular, shadow, ndl_raw, table)
    if native and _native.usable(*tensors):
        return _native.light_pixels(normal, position, occlusion, albedo, specular, shadow, ndl_raw, flags, bsel, table,
                                    any_flash)
    t = table.index_select(0, bsel)  # (P, 24)
    c = {k: t[:, i] for k, i in _COL.items()}
    ldir, col, cam = (t[:, _COL[k]:_COL[k] + 3] for k in ("ldir_x", "col_r", "cam_x"))
    skin, eye, teeth = (flags & SKIN) > 0, (flags & EYE) > 0, (flags & TEETH) > 0
    nx, ny, nz = normal[:, 0], normal[:, 1], normal[:, 2]
    sh = [c[f"sh{i}"] for i in range(9)]
    sh_val = (sh[0] * 0.2 + sh[1] * nx + sh[2] * (ny + 0.5) + sh[3] * nz
              + 0.5 * (sh[4] * nx * ny + sh[5] * ny * nz + sh[6] * nx * nz + sh[7] * (nx * nx - ny * ny)
                       + sh[8] * (3 * nz * nz - 1)))
    amb = c["ambient"] * (1 + c["sh_detail"] * sh_val).clamp(0.15, 2.0) * (0.75 + 0.25 * ny.clamp(-1, 1))
    amb = amb * occlusion.clamp(0.05, 1)
    ndl = ndl_raw.clamp_min(0)
    wrap = torch.tensor(SKIN_WRAP, dtype=normal.dtype, device=normal.device)
    ndl3 = torch.where(skin[:, None], ((ndl_raw[:, None] + wrap) / (1 + wrap)).clamp_min(0), ndl[:, None])
    # a shadow edge on skin is softened by the same scattering
    shadow = torch.where(skin & (c["cast"] > 0), shadow * 0.85 + 0.15 * (ndl > 0).to(shadow.dtype), shadow)
    shadow = torch.where(teeth, shadow.clamp_min(TEETH_SHADOW_FLOOR), shadow)
    crease = 0.4 + 0.6 * occlusion.clamp(0, 1)  # creases catch less of the key light and of the flash
    inten, specf, flash = c["intensity"], c["specular"], c["flash"]
    irr = (amb[:, None] + (inten * shadow * crease)[:, None] * ndl3) * col
    view = unit(cam - position)
    ndv = dot3(normal, view).clamp_min(0)
    if any_flash:  # an on-camera flash: white (the camera balances for it), its shadows behind the head
        irr = irr + (flash * ndv * crease)[:, None]
    half = unit(ldir + view)
    ndh = dot3(normal, half).clamp_min(0)
    spec = specf * specular * inten * shadow * pow_int(ndh, 24)
    ei = eye.nonzero().flatten()
    if len(ei):  # wet eyes: a sharp catchlight of the key light and of the bright environment above the camera
        ve = view.index_select(0, ei)
        ne = normal.index_select(0, ei)
        key = pow_int(ndh.index_select(0, ei), 250) * inten[ei] * shadow[ei]
        up = torch.tensor([0.0, 0.6, 0.0], dtype=ve.dtype, device=ve.device)
        env = pow_int(dot3(ne, unit(unit(ve + up) + ve)).clamp_min(0), 120) * c["ambient"][ei]
        catch = 1.6 * key + 0.8 * env
        if any_flash:  # the flash's catchlight, at the centre of the eye's view
            catch = catch + 1.6 * pow_int(ndv[ei], 250) * flash[ei]
        spec = spec.index_copy(0, ei, catch)
    lin = albedo * irr + spec[:, None] * col
    if any_flash:  # the flash's highlight (its half vector is the view direction; none on the eyes,
        # whose specular weight is 0: their catchlight is above)
        lin = lin + (specf * specular * flash * pow_int(ndv, 24))[:, None]
    lum = (irr[:, 0] + irr[:, 1] + irr[:, 2]) / 3
    return lin, lum, shadow, half
