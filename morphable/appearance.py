"""Procedural appearance: skin albedo, lips, eyes, brows, hair and beard, evaluated per pixel.

Skin colour follows a two-pigment (melanin / hemoglobin) Beer-Lambert model in linear RGB,
``albedo = base * exp(-(melanin * k_mel + hemoglobin * k_hem))``, which spans very light to very dark
skin with one parameter and gives redness with another. Everything else is a function of the *rest
position* of the surface point (its position on the mean head, carried through the rasterizer as a
vertex attribute) so patterns stick to anatomy and never cross UV seams: low-frequency blotches,
freckles, cheek/nose redness, eyebrows (a parametric band above each eye with hair-strand noise),
scalp hair and beard (hairline functions with strand noise), and analytic eyes (pupil, iris with
radial streaks and a limbal ring, sclera).

Identity appearance is a vector of named scalars (:data:`APPEARANCE_PARAMS`) plus a noise offset.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .default_model import REGION_IDS
from .hair import STYLES, sample_style

#: Per-identity appearance parameters (each a column of ``params["appearance"]``), all in [0, 1]
#: except where noted.
APPEARANCE_PARAMS = (
    "melanin", "hemoglobin", "redness", "blotches", "freckles", "lip_tint",
    "brow_color", "brow_thickness", "brow_height", "brow_arch", "brow_density",
    "iris_melanin", "iris_hue", "hair_melanin", "hair_red", "hair_grey", "hairline", "bald", "hair_density",
    "beard", "beard_stubble",  # a grown beard's width (chin to full) or stubble's strength; stubble when > 0.5
    # identity-level additions of layout 2: hair geometry (style index / number of styles, and
    # uniforms within the style), make-up, the resting mouth
    "hair_style", "hair_length", "hair_thickness", "hair_phase", "lipstick", "lip_hue", "eye_makeup", "mouth_rest",
    # resting face shape as small per-identity blendshape offsets (see REST_FEATURES)
    "eye_aperture", "brow_rest", "mouth_width", "lip_fullness", "nose_flare", "jaw_forward", "cheek_fullness",
    "asymmetry",
    # layout 3: skin detail - wrinkles (from age), moles
    "wrinkles", "moles",
    # layout 4: sex-typical cues a recogniser reads - the beard shadow of shaved male skin, and lash
    # density (mascara and eyeliner on made-up faces)
    "beard_shadow", "lashes",
)
#: Resting features: appearance column -> ARKit units moved by ``s = 2u - 1`` in [-1, 1], as
#: (unit, weight for s < 0, weight for s > 0) so that each column spans e.g. narrow .. wide eyes.
#: Side pairs (``...Left``/``...Right``) are scaled by 1 -/+ 0.35 * (2 * asymmetry - 1).
REST_FEATURES = {
    "eye_aperture": (("eyeSquintLeft", -0.55, 0.0), ("eyeSquintRight", -0.55, 0.0), ("eyeBlinkLeft", -0.22, 0.0),
                     ("eyeBlinkRight", -0.22, 0.0), ("eyeWideLeft", 0.0, 0.35), ("eyeWideRight", 0.0, 0.35)),
    "brow_rest": (("browDownLeft", -0.5, 0.0), ("browDownRight", -0.5, 0.0), ("browOuterUpLeft", 0.0, 0.45),
                  ("browOuterUpRight", 0.0, 0.45), ("browInnerUp", 0.0, 0.25)),
    "mouth_width": (("mouthPucker", -0.35, 0.0), ("mouthStretchLeft", 0.0, 0.4), ("mouthStretchRight", 0.0, 0.4)),
    "lip_fullness": (("mouthRollLower", -0.35, 0.0), ("mouthRollUpper", -0.35, 0.0), ("mouthShrugUpper", 0.0, 0.3),
                     ("mouthFunnel", 0.0, 0.15)),
    "nose_flare": (("noseSneerLeft", 0.0, 0.45), ("noseSneerRight", 0.0, 0.45)),
    "jaw_forward": (("jawForward", -0.35, 0.4),),
    "cheek_fullness": (("cheekSquintLeft", 0.0, 0.35), ("cheekSquintRight", 0.0, 0.35), ("cheekPuff", -0.15, 0.12)),
}
_P = {n: i for i, n in enumerate(APPEARANCE_PARAMS)}
#: Resting upper-lid drop (ARKit eyeBlink) of every face: at rest the upper lid covers the top of the
#: iris, as in photographs, instead of a ring of sclera above it. 0.30 gives our frontal faces the eye
#: aspect ratio of real ones (dlib's 68 landmarks: 0.303 against lfw-dev's 0.293; it was 0.339 at 0.12;
#: BENCHMARKS.md, "Realism, session 21").
EYE_REST_BLINK = 0.30
#: How much darker the skin in the eye's orbit is than the face's skin albedo, at the orbit's centre
#: (32 mm out and 2 mm below the eye line; a gaussian of 22 x 13 mm sd); 0 leaves the eye region as
#: bright as the cheek.
ORBIT_SHADE = 0.6
#: How much darker the nostrils' openings (6.5 mm either side of the midline, 7 mm below the nose
#: tip) and the mouth's corners are than the skin around them, at their centres.
CREASE_SHADES = {"nostril": 0.75, "mouth_corner": 0.4}
#: Shades of the small hollows and rims around the eyes and the nose that the coarse mesh's geometry
#: and occlusion do not resolve, as gaussians on the albedo in the mean head's rest frame, the same on
#: both sides: ``(centre |x|, y), (sd x, sd y)`` in metres, the strength ``k`` (the albedo times
#: ``1 - k`` at the centre: darker for k > 0, lighter for k < 0), and where: on the ``skin`` only, or on
#: the skin and the ``eye``. The medial canthus is the hollow between the eye's inner corner and the
#: nose's bridge; the nostrils' wings the outer part of their openings; the outer canthus the corner
#: where the lids and lashes meet past the eye; the eye's centre is lit (the iris's catchlight side, the
#: sclera below it) where the lids shade its corners; the lower lid's rim catches the light over the
#: darker fold of the eye bag. Set by comparing our frontal renders' mean fine detail with real faces'
#: (lfw-dev folds 1-3; BENCHMARKS.md, "Realism, session 28"): without them our faces' eyes were a
#: compact dark iris between bright corners and their nostrils half as dark as real ones.
FEATURE_SHADES = {
    "medial_canthus": ((0.013, -0.003), (0.0035, 0.012), 0.5, "skin"),
    "nostril_wing": ((0.0095, -0.0445), (0.004, 0.003), 0.95, "skin"),
    "outer_canthus": ((0.047, 0.0), (0.004, 0.004), 0.7, "eye"),
    "eye_centre": ((0.027, -0.001), (0.005, 0.003), -0.35, "eye"),
    "lower_lid": ((0.035, -0.0077), (0.008, 0.0025), -0.2, "eye"),
    "eye_bag": ((0.03, -0.014), (0.008, 0.003), 0.2, "eye"),
}

_K_MEL = torch.tensor([2.51, 3.06, 3.49])
_K_HEM = torch.tensor([0.05, 0.50, 0.40])
_BASE = torch.tensor([0.988, 0.808, 0.567])

# Shared random Fourier features for the noise fields (fixed constants, not per-run state).
_g = torch.Generator().manual_seed(12345)
_DIRS = torch.nn.functional.normalize(torch.randn(24, 3, generator=_g), dim=-1)
_PHASE = 2 * math.pi * torch.rand(24, generator=_g)
del _g


def sample_appearance(semantic: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N, len(APPEARANCE_PARAMS)) appearance parameters.

    Args:
        semantic: (N, 5) predicted [gender (0 female .. 1 male), age (anny units), african, asian,
            caucasian] of each identity's shape, used as priors (darker skin for african-weighted
            shapes, beards only on male-leaning faces, greying with age).
        g: generator; the draws are ``torch.rand(N)`` / ``torch.randn(N)`` calls in the order of
            :data:`APPEARANCE_DRAWS`.
    """
    n = semantic.shape[0]
    return appearance_from_draws(semantic, lambda: torch.rand(n, generator=g), lambda: torch.randn(n, generator=g))


def appearance_draw_runs() -> list[tuple[str, int]]:
    """The draws of :func:`sample_appearance` for one identity (N = 1) as runs ``(kind, count)``,
    kind ``"u"`` (``torch.rand``) or ``"n"`` (``torch.randn``), in order. The sequence is fixed (every
    branch of every ``torch.where`` is drawn), so one identity's draws can be taken as one
    ``torch.rand(count)`` / ``torch.randn(count)`` call per run (bit-identical: both fill serially
    for fewer than 16 values) and the arithmetic batched over many identities with
    :func:`appearance_from_draws`."""
    return [tuple(r) for r in _DRAW_RUNS]


def appearance_from_draws(semantic: torch.Tensor, u: "Callable[[], torch.Tensor]",
                          nrm: "Callable[[], torch.Tensor]") -> torch.Tensor:
    """(N, len(APPEARANCE_PARAMS)) appearance parameters from draws: ``u()`` returns the next (N,)
    uniform column and ``nrm()`` the next (N,) standard-normal column, in the order of
    :func:`sample_appearance` (see :func:`appearance_draw_runs`). Pure elementwise arithmetic per
    identity, so a batch of N gives each row the bits it gets alone."""
    n = semantic.shape[0]
    gender = semantic[:, 0].clamp(0, 1)
    age = semantic[:, 1]
    afr, asi, cau = (semantic[:, 2:5].clamp_min(0) + 1e-3).unbind(1)
    s = afr + asi + cau
    afr, asi, cau = afr / s, asi / s, cau / s
    mel_mean = 0.08 * cau + 0.30 * asi + 0.72 * afr
    melanin = (mel_mean + 0.10 * nrm() + 0.05 * (u() - 0.5)).clamp(0.02, 0.95)
    hemoglobin = (0.55 + 0.2 * nrm()).clamp(0.15, 1.1)
    redness = (u() ** 1.5) * (1 - melanin)
    blotches = u()
    freckles = torch.where(u() < 0.25 * (1 - melanin) ** 2 * 2, u(), torch.zeros(n))
    lip_tint = u()
    hair_mel = (0.55 + 0.6 * melanin + 0.25 * nrm()).clamp(0.0, 1.0)
    hair_red = torch.where(u() < 0.08 * cau, u(), 0.15 * u())
    old = ((age - 0.6) / 0.35).clamp(0, 1)
    hair_grey = (old ** 2 * u() * 1.2).clamp(0, 1)  # greying mostly past 50
    brow_color = (hair_mel + 0.1 * nrm()).clamp(0, 1)
    brow_thickness = (0.12 + 0.55 * gender + 0.3 * u()).clamp(0, 1)
    brow_height, brow_arch, brow_density = (0.35 * (1 - gender) + 0.65 * u()), (u() * (1.3 - 0.9 * gender)).clamp(0, 1), (0.5 + 0.5 * u())
    iris_mel = torch.where(u() < 0.35 * cau * (1 - melanin), 0.35 * u(), (0.55 + 0.5 * u()).clamp(0, 1))
    iris_hue = u()
    hairline = u()
    bald = torch.where(u() < 0.3 * gender * old.clamp_min(0.3), u(), torch.zeros(n))
    hair_density = 0.7 + 0.3 * u()
    beard = torch.where((u() < 0.45) & (gender > 0.6), u(), torch.zeros(n))
    stubble = u()
    # hair geometry: the style's prior depends on gender, age and ancestry (morphable.hair); bald
    # and buzzed styles keep only a thin painted scalp, receding ones a high hairline
    style = sample_style(gender, age, afr, u())
    ns = len(STYLES)
    is_ = lambda name: style == STYLES.index(name)  # noqa: E731
    hair_density = torch.where(is_("bald"), 0.12 + 0.1 * u(), torch.where(is_("buzz"), 0.45 + 0.2 * u(), hair_density))
    bald = torch.where(is_("receding"), (0.45 + 0.5 * u()).clamp_max(1.0), torch.where(is_("bald"), bald, bald * 0.5))
    hair_length, hair_thickness, hair_phase = u(), u(), u()
    # make-up, mostly on female-read faces: lipstick strength and hue (0 nude .. 1 deep red), eye make-up
    fem = (1 - gender).clamp(0, 1)
    lipstick = torch.where(u() < 0.85 * fem ** 1.5, 0.3 + 0.7 * u(), torch.zeros(n))
    lip_hue = u()
    eye_makeup = torch.where(u() < 0.8 * fem ** 1.5, 0.3 + 0.7 * u(), torch.zeros(n))
    mouth_rest = u()
    rest = [u() for _ in range(len(REST_FEATURES) + 1)]
    # age 0.45 .. 0.95 is ~20 .. 80 years: lines appear from the late thirties, deepen past sixty
    wrinkles = (((age - 0.58) / 0.3).clamp(0, 1) * (0.6 + 0.6 * u())).clamp(0, 1)
    moles = u() ** 2
    # shaved male skin keeps a grey-blue shadow of the beard (visible on lighter skin); every face has
    # a lash line (0.4-0.7; a real-face detector finds faces without one less often), darker and
    # thicker with eye make-up
    beard_shadow = torch.where(gender > 0.55, 0.4 + 0.6 * u(), 0.1 * u()) * ((gender - 0.4) / 0.4).clamp(0, 1)
    lashes = (0.4 + 0.3 * u() + 0.5 * eye_makeup).clamp(0, 1)
    cols = [melanin, hemoglobin, redness, blotches, freckles, lip_tint, brow_color, brow_thickness, brow_height,
            brow_arch, brow_density, iris_mel, iris_hue, hair_mel, hair_red, hair_grey, hairline, bald,
            hair_density, beard, stubble, (style.float() + 0.5) / ns, hair_length, hair_thickness, hair_phase,
            lipstick, lip_hue, eye_makeup, mouth_rest, *rest, wrinkles, moles, beard_shadow, lashes]
    return torch.stack(cols, 1)


def _record_draw_runs() -> list[tuple[str, int]]:
    kinds: list[str] = []

    def rec(kind: str) -> Callable[[], torch.Tensor]:
        def draw() -> torch.Tensor:
            kinds.append(kind)
            return torch.full((1,), 0.5)
        return draw
    appearance_from_draws(torch.full((1, 5), 0.5), rec("u"), rec("n"))
    runs: list[list] = []
    for k in kinds:
        if runs and runs[-1][0] == k:
            runs[-1][1] += 1
        else:
            runs.append([k, 1])
    return [(k, c) for k, c in runs]


#: the draw sequence of one identity (see :func:`appearance_draw_runs`)
_DRAW_RUNS = _record_draw_runs()


def _feature_shade(ax: torch.Tensor, y: torch.Tensor, where: str) -> torch.Tensor:
    """Albedo factor of the :data:`FEATURE_SHADES` placed ``where`` (``skin`` or ``eye``) at rest positions
    ``|x|`` = ``ax`` and ``y`` (tensors of one shape, metres): the product of their ``1 - k * gaussian``,
    each at least 0.05; the same shape."""
    f = torch.ones_like(ax)
    for (cx, cy), (sx, sy), k, on in FEATURE_SHADES.values():
        if on == where and k != 0:
            f = f * (1 - k * torch.exp(-(((ax - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))).clamp_min(0.05)
    return f


def _smoothstep(e0: float, e1: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _amplitude(j: int) -> float:
    """The scale that brings a sum of ``j`` unit sinusoids to about [-1, 1]."""
    return 1.6 / math.sqrt(j) / 1.4


def _waves(wavelength: float, k: slice, scale: tuple[float, float, float] | float | None, dtype: torch.dtype
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(J, 3) wave vectors (radians per metre) and (J,) phases of one noise field: the shared
    directions ``k`` at ``wavelength`` (metres), the field stretched per axis by ``scale`` (the field at
    ``q * scale``)."""
    d = _DIRS[k].double() * (2 * math.pi / wavelength)
    if scale is not None:
        d = d * torch.as_tensor(scale, dtype=torch.float64)
    return d.to(dtype), _PHASE[k].double()


def _offset_phase(off: torch.Tensor, d: torch.Tensor, ph: torch.Tensor) -> torch.Tensor:
    """(N, J) phase of the waves ``d`` (J, 3) at noise offsets ``off`` (N, 3), in [0, 2 pi): computed in
    float64 and wrapped, so that offsets of tens of metres keep a sub-millimetre wave's precision."""
    return torch.remainder(off.double() @ d.double().T + ph.to(off.device), 2 * math.pi).to(off.dtype)


def _noise(p: torch.Tensor, off: torch.Tensor, wavelength: float, k: slice,
           scale: tuple[float, float, float] | float | None = None) -> torch.Tensor:
    """Sum-of-sinusoids noise in about [-1, 1] at a given wavelength (metres) at rest positions ``p``
    (P, 3) of identities with noise offsets ``off`` (P, 3): the field at ``(p + off) * scale``."""
    d, ph = _waves(wavelength, k, scale, p.dtype)
    d = d.to(p.device)
    x = p @ d.T + _offset_phase(off, d, ph)
    return torch.sin(x).sum(-1) * _amplitude(d.shape[0])


NoiseField = Callable[..., torch.Tensor]
"""``noise(wavelength, k, scale=None) -> (P,)``: one of :func:`shade_albedo`'s noise fields at its points."""


def point_noise(p: torch.Tensor, off: torch.Tensor) -> NoiseField:
    """The noise fields at points ``p`` (P, 3) of identities with noise offsets ``off`` (P, 3)."""
    return lambda wavelength, k, scale=None: _noise(p, off, wavelength, k, scale)


class TexelNoise:
    """The noise fields at ``N`` fixed points (a texture's texels) for ``U`` identities at once.

    A field at texel ``i`` of identity ``u`` is ``sum_j sin(a_ij + b_uj)`` with ``a`` the texel's phase
    and ``b`` the identity's offset phase; as ``sin a cos b + cos a sin b`` it is one (U, 2J) x (2J, N)
    matrix product, with ``sin a`` and ``cos a`` computed once per field and kept (12 MB for the ten
    fields of the 17,000 texels of a 256-texel bake) instead of U x N x J sines per bake. The same function as
    :func:`point_noise` at the same points, to float rounding.

    Args:
        p: (N, 3) rest positions of the texels.
    """

    def __init__(self, p: torch.Tensor) -> None:
        self.p = p
        self._basis: dict[tuple, torch.Tensor] = {}

    def _field_basis(self, wavelength: float, k: slice, scale) -> torch.Tensor:
        key = (wavelength, k.start, k.stop, scale)  # scale: None, a float or a tuple (hashable)
        if key not in self._basis:
            d, _ = _waves(wavelength, k, scale, torch.float64)
            a = self.p.double() @ d.to(self.p.device).T  # (N, J), in float64: texels far from the origin keep their phase
            self._basis[key] = torch.cat([torch.sin(a), torch.cos(a)], 1).T.contiguous().to(self.p.dtype)  # (2J, N)
        return self._basis[key]

    def fields(self, off: torch.Tensor) -> NoiseField:
        """The noise fields of identities with noise offsets ``off`` (U, 3) at every texel: each
        field is (U, N) (for :func:`shade_albedo` of points ``p[None]`` and offsets ``off[:, None]``)."""
        def noise(wavelength: float, k: slice, scale=None) -> torch.Tensor:
            d, ph = _waves(wavelength, k, scale, off.dtype)
            b = _offset_phase(off, d.to(off.device), ph)  # (U, J)
            coef = torch.cat([torch.cos(b), torch.sin(b)], 1)  # sin(a + b) = sin a cos b + cos a sin b
            return (coef @ self._field_basis(wavelength, k, scale)) * _amplitude(b.shape[1])
        return noise


def skin_base(melanin: torch.Tensor, hemoglobin: torch.Tensor) -> torch.Tensor:
    """(..., 3) linear skin albedo for melanin/hemoglobin (...)."""
    dev = melanin.device
    return _BASE.to(dev) * torch.exp(-(melanin[..., None] * _K_MEL.to(dev) + hemoglobin[..., None] * _K_HEM.to(dev)))


def hair_colour(mel: torch.Tensor, red: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
    """(..., 3) linear hair albedo from eumelanin, pheomelanin (red) and grey fractions."""
    dev = mel.device
    blond = torch.tensor([0.55, 0.40, 0.22], device=dev)
    dark = torch.tensor([0.012, 0.008, 0.006], device=dev)
    ginger = torch.tensor([0.45, 0.13, 0.04], device=dev)
    m = mel[..., None] ** 0.5
    c = blond * (dark / blond) ** m
    c = c * (1 - red[..., None] * 0.8) + ginger * red[..., None] * 0.8 * (1 - m)
    greyc = torch.tensor([0.55, 0.55, 0.55], device=dev)
    return c * (1 - grey[..., None]) + greyc * grey[..., None]


def scalp_hair(p: torch.Tensor, app: torch.Tensor, jitter: torch.Tensor | float = 0.0,
               edge: tuple[float, float] = (-0.007, 0.005), ears: torch.Tensor | float = 0.0) -> torch.Tensor:
    """(P,) scalp-hair coverage in [0, 1] at rest positions ``p`` (P, 3) of identities with
    appearance ``app`` (P, A): a hairline that is a function of the azimuth around the vertical axis
    (forehead, temples, above the ears, nape), raised by baldness, thinned by ``hair_density``;
    ``jitter`` (P,) displaces the hairline (strand noise); ``edge`` is the ramp across it (metres,
    below/above the line): narrow for the colour, wide for the hair volume so that the raised shell
    has no steps on a coarse mesh. ``ears`` (P,) in [0, 1]: how much the hair covers the ears
    (0: sideburns stop before the ear, as on short hair)."""
    a = lambda name: app[..., _P[name]]  # noqa: E731
    x, y, z = p.unbind(-1)
    phi = torch.atan2(x, z - (-0.09)).abs()  # 0 at the front, pi at the back (axis behind the eyes)
    front = 0.055 + 0.03 * a("hairline") + 0.06 * a("bald")
    temple = front - 0.015
    side = 0.02 + 0.03 * a("bald")
    back = -0.06 + 0.08 * a("bald")
    hl = torch.where(phi < 0.6, front - 0.02 * (phi / 0.6) ** 2,
                     torch.where(phi < 1.25, temple + (side - temple) * (phi - 0.6) / 0.65,
                                 side + (back - side) * ((phi - 1.25) / (math.pi - 1.25)).clamp(0, 1)))
    hair = _smoothstep(edge[0], edge[1], y - hl + jitter)  # a soft, thinning edge rather than a cut
    # a bald crown: hair remains only on the sides and back
    t_crown = ((y - (front - 0.05)) / 0.05).clamp(0, 1)
    hair = hair * (1 - 0.95 * a("bald") * t_crown * t_crown * (3 - 2 * t_crown))
    # sideburns stop before the ear: keep skin where the ear is (|x| large, y around the eye line)
    ear = _smoothstep(0.068, 0.075, x.abs()) * (1 - _smoothstep(0.01, 0.03, y))
    return hair * (1 - ear * (1 - ears)) * a("hair_density")


#: The nasolabial fold's line on (|x|, y) at rest (metres): from beside the nose's wing down to beyond
#: the mouth's corner.
NASOLABIAL = (0.019, -0.030, 0.032, -0.063)
#: How much a full smile (``mouthSmile`` 1) darkens the nasolabial fold's line: smiling deepens the
#: fold (FACS AU12, the lip-corner puller), which the blendshapes' coarse mesh does not crease.
SMILE_FOLD = 0.6


def _segment_line(ax: torch.Tensor, y: torch.Tensor, x0: float, y0: float, x1: float, y1: float, width: float
                  ) -> torch.Tensor:
    """(P,) gaussian line of ``width`` (metres) around the segment (x0, y0) - (x1, y1) on (|x|, y)."""
    dx, dy = x1 - x0, y1 - y0
    t = (((ax - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy)).clamp(0, 1)
    d2 = (ax - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2
    return torch.exp(-d2 / width ** 2)


def smile_folds(p: torch.Tensor, smile: torch.Tensor) -> torch.Tensor:
    """(P,) albedo darkening in [0, 1) of the nasolabial folds at rest positions ``p`` (P, 3) of skin
    under a smile of strength ``smile`` (P,) in [0, 1] (the mean ``mouthSmile`` weight), on the face's
    front (as :func:`skin_lines`'s lines)."""
    x, y, z = p.unbind(-1)
    line = _segment_line(x.abs(), y, *NASOLABIAL, 0.004)
    return (SMILE_FOLD * smile.clamp(0, 1) * line * _smoothstep(-0.035, -0.01, z)).clamp(0, 0.9)


def skin_lines(p: torch.Tensor, wrinkles: torch.Tensor, eye_centres: torch.Tensor) -> torch.Tensor:
    """(P,) darkening in [0, 1) of creases and lines at rest positions ``p`` (P, 3): nasolabial folds
    and the crease under the eyes for every adult (faintly), and with ``wrinkles`` (P,) in [0, 1]
    (from age) forehead lines, crow's feet and marionette lines. Baked into the skin albedo (the
    shading of a crease at 112 px is mostly its darker line)."""
    x, y, z = p.unbind(-1)
    ax = x.abs()
    ex, ey = eye_centres[:, 0].abs().mean(), eye_centres[:, 1].mean()
    front = _smoothstep(-0.035, -0.01, z)

    naso = _segment_line(ax, y, *NASOLABIAL, 0.0022)
    under = torch.exp(-(((ax - ex) / 0.011) ** 2 + ((y - ey + 0.011) / 0.0025) ** 2))
    out = (0.10 + 0.22 * wrinkles) * naso + (0.05 + 0.12 * wrinkles) * under
    # forehead: three or four horizontal lines 7 mm apart, bending with the brow
    fy = y - 0.032 - 1.5 * x * x
    ph = torch.remainder(fy / 0.007, 1.0) - 0.5
    fore = torch.exp(-(ph / 0.13) ** 2) * _smoothstep(-0.004, 0.0, fy) * (1 - _smoothstep(0.02, 0.028, fy))
    fore = fore * (1 - _smoothstep(0.035, 0.05, ax))
    # crow's feet: a fan of short lines at the outer eye corners
    cx, cy = ax - (ex + 0.014), y - ey
    r = (cx * cx + cy * cy).sqrt()
    fan = torch.cos(torch.atan2(cy, cx.clamp_min(1e-4)) * 9).clamp_min(0) ** 6
    crow = fan * _smoothstep(0.002, 0.004, r) * (1 - _smoothstep(0.009, 0.014, r)) * _smoothstep(-0.002, 0.001, cx)
    marionette = _segment_line(ax, y, 0.027, -0.070, 0.030, -0.088, 0.0018)
    out = out + wrinkles * (0.22 * fore + 0.25 * crow + 0.2 * marionette)
    return (out * front).clamp(0, 0.6)


def shade_albedo(
    p: torch.Tensor,
    region: torch.Tensor,
    app: torch.Tensor,
    offset: torch.Tensor,
    eye_centres: torch.Tensor,
    noise: NoiseField | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Albedo and specular weight of ``P`` visible surface points.

    The leading dimensions broadcast: a texture bake shades ``N`` texels for ``U`` identities with
    ``p`` (1, N, 3), ``region`` (1, N), ``app`` (U, 1, A) and ``offset`` (U, 1, 3), so that what depends
    on the texel alone is computed once, not ``U`` times.

    Args:
        p: (P, 3) rest positions (metres, mean-head frame, eye midpoint at the origin).
        region: (P,) int64 region id (:data:`~morphable.default_model.REGION_IDS`).
        app: (P, A) appearance parameters of each point's identity.
        offset: (P, 3) per-identity noise offsets (decorrelate noise between identities).
        eye_centres: (2, 3) rest positions of the left/right eye centres.
        noise: the noise fields at these points (default :func:`point_noise` of ``p`` and
            ``offset``; a texture bake passes :meth:`TexelNoise.fields`, the same fields computed
            faster).

    Returns:
        albedo (P, 3) linear RGB in [0, 1], specular weight (P,) in [0, 1].
    """
    a = lambda name: app[..., _P[name]]  # noqa: E731
    noise = point_noise(p, offset) if noise is None else noise
    x, y, z = p.unbind(-1)
    ax = x.abs()
    # ---- skin
    blot = noise(0.045, slice(0, 6)) * 0.5 + noise(0.015, slice(6, 12)) * 0.5
    mel = a("melanin") * (1 + 0.06 * a("blotches") * blot)
    freck = _smoothstep(0.45, 0.85, noise(0.004, slice(12, 18)) * 0.7 + noise(0.0025, slice(18, 24)) * 0.5)
    freck_zone = _smoothstep(-0.06, -0.03, y) * (1 - _smoothstep(0.02, 0.05, y)) * _smoothstep(-0.02, 0.01, z)
    mel = mel + a("freckles") * freck * freck_zone * 0.2
    cheek = torch.exp(-(((ax - 0.045) / 0.018) ** 2 + ((y + 0.035) / 0.02) ** 2))
    nose = torch.exp(-((x / 0.012) ** 2 + ((y + 0.035) / 0.012) ** 2)) * _smoothstep(0.01, 0.03, z)
    hem = a("hemoglobin") * (1 + 0.12 * blot) + a("redness") * (0.8 * cheek + 0.6 * nose)
    # slightly paler, redder ears and darker around the eyes
    socket = torch.exp(-(((ax - 0.032) / 0.016) ** 2 + ((y + 0.006) / 0.009) ** 2))
    mel = mel * (1 + 0.15 * socket)
    # fine mottling (pores and capillaries at a few millimetres) and moles: sparse dark spots where a
    # fine noise field peaks, more of them with ``moles``
    mel = mel * (1 + 0.05 * noise(0.003, slice(0, 12)))
    mole_f = noise(0.011, slice(12, 24), 1.7)
    thr = 2.45 - 0.35 * a("moles")  # the field's sd is ~0.8: a few spots per face at most
    mole = _smoothstep(0.0, 0.15, mole_f - thr) * _smoothstep(-0.04, -0.01, z)
    mel = mel + 0.6 * mole * (0.3 + mel)
    alb = skin_base(mel, hem)
    alb = alb * (1 - skin_lines(p, a("wrinkles"), eye_centres))[..., None]
    # eye make-up: shadow on the upper lid and a darker rim, fading towards the brow
    lid = torch.exp(-(((ax - 0.033) / 0.016) ** 2 + ((y - 0.004) / 0.006) ** 2)) * _smoothstep(-0.03, -0.01, z)
    em = (a("eye_makeup") * lid * 0.6)[..., None]
    alb = alb * (1 - em) + alb * torch.tensor([0.35, 0.28, 0.32], device=p.device) * em
    # the eye socket's shade: the lids and the skin around the eye lie in the orbit's hollow and are
    # darker (thin, vascular skin), which the coarse mesh's ambient occlusion leaves out
    on_skin = region == REGION_IDS["skin"]
    orbit = torch.exp(-(((ax - 0.032) / 0.0216) ** 2 + ((y + 0.002) / 0.0132) ** 2)) * on_skin
    alb = alb * (1 - ORBIT_SHADE * orbit)[..., None]
    alb = alb * torch.where(on_skin, _feature_shade(ax, y, "skin"), 1.0)[..., None]
    # the nostrils' openings under the nose tip and the mouth's corners: small hollows, dark in
    # photographs, that the coarse mesh's ambient occlusion does not resolve
    nostril = torch.exp(-(((ax - 0.0065) / 0.003) ** 2 + ((y + 0.0475) / 0.0022) ** 2)) * (z > 0.012)
    corner = torch.exp(-(((ax - 0.0255) / 0.003) ** 2 + ((y + 0.0696) / 0.003) ** 2))
    hollow = CREASE_SHADES["nostril"] * nostril + CREASE_SHADES["mouth_corner"] * corner
    alb = alb * (1 - hollow * on_skin).clamp_min(0.05)[..., None]
    spec = torch.full_like(x, 0.5)

    # ---- lips
    lips = region == REGION_IDS["lips"]
    # lips: more melanin than the skin around them (darker, browner lips on darker skin), more blood
    lip_col = skin_base(a("melanin") * (1.3 + 0.25 * a("lip_tint")) + 0.03, a("hemoglobin") + 0.45 + 0.5 * a("lip_tint"))
    # lipstick: from nude pink (hue 0) to deep red / berry (hue 1), stronger on the lips' centre
    hue = a("lip_hue")[..., None]
    # (the nude end is the natural lip colour, a little rosier and glossier; deep shades darken on darker skin)
    nude = lip_col * torch.tensor([1.15, 0.85, 0.9], device=p.device)
    deep = torch.tensor([0.42, 0.03, 0.06], device=p.device) * (1 - 0.45 * a("melanin"))[..., None]
    stick = nude * (1 - hue) + deep * hue
    ls = a("lipstick")[..., None] * 0.85
    lip_col = lip_col * (1 - ls) + stick * ls
    alb = torch.where(lips[..., None], lip_col, alb)
    spec = torch.where(lips, 0.8, spec)

    # ---- eyebrows: a band above each eye from x_in to x_out: a thick head at the inner end, an arch
    # peaking about two thirds out, a tail that thins and drops; low and straight on male-read faces
    # (brow_height and brow_arch are drawn so), hairs running outwards (streaks along x), soft edges
    ex = eye_centres[1, 0].abs()
    x_in, x_out = 0.30 * ex, 1.72 * ex
    uu = (ax - x_in) / (x_out - x_in)
    uc = uu.clamp(0, 1)
    peak = 0.62
    arch = torch.where(uc < peak, torch.sin(0.5 * math.pi * uc / peak), torch.cos(0.5 * math.pi * (uc - peak) / (1 - peak) * 0.9))
    yc = 0.0085 + 0.0085 * a("brow_height") + 0.0055 * a("brow_arch") * arch - 0.004 * _smoothstep(0.75, 1.0, uc)
    th = (0.0028 + 0.0062 * a("brow_thickness")) * (1.2 - 0.75 * uc ** 1.5)
    dy = (y - yc) / th.clamp_min(1e-4)
    strands = noise(0.0012, slice(0, 12), (0.3, 1.0, 1.0)) * 0.5 + 0.5
    body = 1 - _smoothstep(0.35, 1.0, dy.abs())
    brow = body * _smoothstep(-0.02, 0.14, uu) * (1 - _smoothstep(0.88, 1.04, uu))
    brow = brow * _smoothstep(-0.035, -0.02, z) * on_skin
    brow = (brow * (0.85 + 0.15 * strands) * (0.8 + 0.2 * a("brow_density")) * 1.15).clamp(0, 1)
    bcol = hair_colour((a("brow_color") * 1.15 + 0.05).clamp(0, 1), a("hair_red"), a("hair_grey") * 0.5)
    alb = alb * (1 - brow[..., None]) + bcol * brow[..., None]

    # ---- scalp hair
    hn = noise(0.0025, slice(6, 18), (1.0, 0.3, 1.0))
    wave = noise(0.012, slice(0, 6))  # the hairline wanders on a centimetre scale
    hair = scalp_hair(p, app, 0.0025 * wave + 0.0015 * hn) * on_skin
    # strands: the soft edge thins out in streaks along the hair's growth
    hair = hair * (1 - 0.6 * (1 - hair) * (0.5 + 0.5 * hn))
    hcol = hair_colour(a("hair_melanin"), a("hair_red"), a("hair_grey")) * (0.75 + 0.25 * (hn * 0.5 + 0.5))[..., None]
    alb = alb * (1 - hair[..., None]) + hcol * hair[..., None]
    spec = spec * (1 - hair) + 0.3 * hair

    # ---- beard: below the nose, in front, excluding lips. Its upper edge on the cheek runs from the
    # sideburn (|x| 65 mm, 20 mm below the eyes) down to the mouth corner (|x| 28 mm, 58 mm below), as a
    # grown beard's cheek line does; under the nose the moustache joins it
    t_cheek = ((ax - 0.028) / (0.065 - 0.028)).clamp(0, 1)
    beard_line = -0.058 + 0.038 * t_cheek ** 0.8
    chin_zone = (1 - _smoothstep(beard_line - 0.008, beard_line, y)) * _smoothstep(-0.055, -0.03, z) * (1 - _smoothstep(0.055, 0.07, ax))
    moustache = _smoothstep(-0.058, -0.054, y) * (1 - _smoothstep(-0.05, -0.046, y)) * (1 - _smoothstep(0.02, 0.03, ax))
    # a grown beard is dense hair over a zone that widens with ``beard`` (a chin beard and moustache
    # at low values, a full beard to the sideburns at high ones); stubble is a short, sparser hair
    # tone over the whole zone whose strength follows ``beard`` (a beard painted at the opacity
    # ``beard`` read as a translucent grey smudge: BENCHMARKS.md, "Realism, session 11")
    grown = a("beard_stubble") <= 0.5
    half_w = torch.where(grown, 0.022 + 0.05 * a("beard"), torch.full_like(ax, 0.07))
    chin_zone = chin_zone * (1 - _smoothstep(half_w - 0.012, half_w, ax))
    bz = torch.maximum(chin_zone * _smoothstep(-0.16, -0.14, y), moustache) * on_skin
    bn = noise(0.0018, slice(12, 24)) * 0.5 + 0.5
    on = _smoothstep(0.0, 0.08, a("beard"))
    dens = on * torch.where(grown, 0.8 + 0.2 * bn, (0.3 + 0.4 * a("beard")) * (0.7 + 0.3 * bn))
    beard = bz * dens
    # stubble's short hairs show darker than the hair's own colour over skin
    beard_col = torch.where(grown[..., None], hcol, hcol * 0.7)
    alb = alb * (1 - beard[..., None]) + beard_col * beard[..., None]
    # the shadow of shaved beard: jaw, chin and upper lip, darker and a little bluer. Its upper edge on
    # the cheek runs from the sideburn (|x| 65 mm, 10 mm below the eyes) down to the mouth corner
    # (|x| 28 mm, 55 mm below), soft over a centimetre; it shows on lighter skin and barely on dark skin
    t_edge = ((ax - 0.028) / (0.065 - 0.028)).clamp(0, 1)
    cheek_line = -0.055 + (0.045 * t_edge ** 0.7)
    sh_zone = torch.maximum((1 - _smoothstep(cheek_line - 0.012, cheek_line, y)) * _smoothstep(-0.16, -0.13, y),
                            _smoothstep(-0.062, -0.052, y) * (1 - _smoothstep(-0.047, -0.04, y)) * (1 - _smoothstep(0.018, 0.03, ax)))
    sh_zone = sh_zone * _smoothstep(-0.055, -0.03, z) * (1 - _smoothstep(0.06, 0.072, ax))
    sh_zone = sh_zone * on_skin * (1 - beard)
    bsh = (a("beard_shadow") * sh_zone * (1 - 0.7 * a("melanin")) * 0.22)[..., None]
    alb = alb * (1 - bsh * torch.tensor([0.55, 0.45, 0.3], device=p.device))

    # ---- eyes
    eye = (region == REGION_IDS["eye"]) | (region == REGION_IDS["eye_back"])
    if bool(eye.any()):
        ec = torch.where((x < 0)[..., None], eye_centres[0], eye_centres[1])
        r = ((p[..., :2] - ec[..., :2]) ** 2).sum(-1).sqrt()
        ang = torch.atan2(p[..., 1] - ec[..., 1], p[..., 0] - ec[..., 0])
        iris_r, pupil_r = 0.0058, 0.0022
        brown = torch.tensor([0.10, 0.045, 0.015], device=p.device)
        blue = torch.tensor([0.10, 0.20, 0.32], device=p.device)
        green = torch.tensor([0.10, 0.15, 0.06], device=p.device)
        im = a("iris_melanin")[..., None]
        light = blue * (1 - a("iris_hue"))[..., None] + green * a("iris_hue")[..., None]
        # light (blue/grey/green) irises below ~0.35, hazel in between, brown above 0.55 and darker
        # brown towards 1 (at 112 px a dark brown iris reads almost as dark as the pupil)
        t = _smoothstep(0.3, 0.55, im)
        iris_c = light * (1 - t) + brown * t * (1.25 - 0.75 * ((im - 0.55) / 0.45).clamp(0, 1))
        streak = 0.75 + 0.25 * torch.sin(ang * 23 + 40 * r + offset[..., 0]) * torch.sin(ang * 9 - offset[..., 1])
        iris_c = iris_c * streak[..., None] * (0.55 + 0.45 * (r / iris_r).clamp(0, 1))[..., None]
        limbal = _smoothstep(0.7, 1.0, r / iris_r)
        iris_c = iris_c * (1 - 0.7 * limbal)[..., None]
        # sclera: a wet, slightly warm off-white, darker and redder towards the corners (lids,
        # vessels); its tone varies by identity (more yellow with melanin and age cues via redness)
        tone = (0.56 + 0.1 * (offset[..., 2] - offset[..., 2].floor()))[..., None]
        sclera = tone * torch.tensor([1.0, 0.93, 0.86], device=p.device) - 0.05 * a("melanin")[..., None] * torch.tensor(
            [0.0, 0.3, 0.8], device=p.device)
        corner = _smoothstep(0.006, 0.014, r)[..., None]
        sclera = sclera * (1 - 0.35 * corner) + torch.tensor([0.04, -0.02, -0.02], device=p.device) * corner
        pupil = torch.tensor([0.01, 0.01, 0.01], device=p.device).expand_as(sclera)
        t_i = _smoothstep(iris_r + 0.0003, iris_r - 0.0003, r)[..., None]
        t_p = _smoothstep(pupil_r + 0.0003, pupil_r - 0.0003, r)[..., None]
        ecol = sclera * (1 - t_i) + iris_c * t_i
        ecol = ecol * (1 - t_p) + pupil * t_p
        alb = torch.where(eye[..., None], ecol, alb)
        spec = torch.where(eye, 1.0, spec)

    # the lids' corners, the eye's centre and the rims under it (FEATURE_SHADES), on the skin and the eye
    on_eye = on_skin | (region == REGION_IDS["eye"])
    alb = alb * torch.where(on_eye, _feature_shade(ax, y, "eye"), 1.0)[..., None]

    # ---- inside the mouth and the eye sockets
    cav = region == REGION_IDS["mouth_cavity"]
    alb = torch.where(cav[..., None], torch.tensor([0.08, 0.015, 0.015], device=p.device).expand_as(alb), alb)
    tongue = region == REGION_IDS["tongue"]
    alb = torch.where(tongue[..., None], torch.tensor([0.45, 0.12, 0.12], device=p.device).expand_as(alb), alb)
    sock = region == REGION_IDS["eye_cavity"]
    alb = torch.where(sock[..., None], alb * torch.tensor([0.55, 0.4, 0.4], device=p.device), alb)
    shape = torch.broadcast_shapes(p.shape[:-1], region.shape, app.shape[:-1], offset.shape[:-1])
    return alb.clamp(0, 1).expand(*shape, 3), spec.clamp(0, 1).expand(shape)


def shade_hair(coords: torch.Tensor, app: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Albedo (P, 3) and strand noise (P,) in [-1, 1] of ``P`` points of the hair mesh (the noise
    breaks the highlights up along the strands: :func:`~morphable.hair.hair_highlights`).

    Args:
        coords: (P, 2) hair-mesh coordinates (phi / pi around the head, t from the crown (0) down
            to the curtain's end (1)), see :class:`~morphable.hair.HairRig`.
        app: (P, A) appearance parameters; offset: (P, 3) per-identity noise offsets.
    """
    a = lambda name: app[:, _P[name]]  # noqa: E731
    ph, t = coords[:, 0] * math.pi, coords[:, 1]
    curl = _P["hair_phase"]
    o = offset[:, 0] * 0.01 + app[:, curl] * 6.0
    # strands run from the crown down: fine streaks across phi, bent by a slow wave (more for curly styles)
    bend = 0.6 * torch.sin(t * 23 + o) + 0.3 * torch.sin(ph * 5 - o)
    # incommensurate frequencies and a wandering phase: no regular ribbing (which reads as knitwear)
    fine = (torch.sin(ph * 260 + 3 * bend + o) * torch.sin(ph * 97 + t * 31 - o) * 0.6
            + torch.sin(ph * 610 - 5 * bend + 1.3 * o + 4 * torch.sin(t * 47 + ph * 13)) * 0.3)
    clump = torch.sin(ph * 37 + 2 * bend + 0.7 * o) * torch.sin(ph * 11 - t * 9 + 2.1 * o)
    shade = (0.8 + 0.09 * fine + 0.08 * clump).clamp(0.45, 1.1)
    # roots a little darker under the crown's parting, ends slightly lighter (sun-bleached)
    shade = shade * (0.9 + 0.1 * _smoothstep(0.0, 0.15, t)) * (1 + 0.12 * _smoothstep(0.6, 1.0, t))
    col = hair_colour(a("hair_melanin"), a("hair_red"), a("hair_grey")) * shade[:, None]
    return col.clamp(0, 1), (fine / 0.9 * 0.7 + clump * 0.3).clamp(-1, 1)


def rest_expression(app: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """(N, len(labels)) resting blendshape weights of ``N`` identities (``app`` (N, A)) over the
    model's expression units ``labels`` (units a model lacks are skipped): the features of
    :data:`REST_FEATURES` plus a slight resting smile (``mouth_rest``: most faces at rest are not sad)."""
    index = {n: i for i, n in enumerate(labels)}
    out = torch.zeros(app.shape[0], len(labels), dtype=app.dtype, device=app.device)
    asym = 0.35 * (2 * app[:, _P["asymmetry"]] - 1)
    for col, units in REST_FEATURES.items():
        s = 2 * app[:, _P[col]] - 1
        for unit, w_neg, w_pos in units:
            if unit in index:
                side = 1 + asym if unit.endswith("Left") else (1 - asym if unit.endswith("Right") else 1.0)
                out[:, index[unit]] += torch.where(s < 0, -s * w_neg, s * w_pos) * side
    for unit in ("eyeBlinkLeft", "eyeBlinkRight"):
        if unit in index:
            out[:, index[unit]] += EYE_REST_BLINK
    for unit in ("mouthSmileLeft", "mouthSmileRight"):
        if unit in index:
            out[:, index[unit]] += 0.08 + 0.22 * app[:, _P["mouth_rest"]]
    return out
