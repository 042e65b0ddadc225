"""Typed configuration of what varies between identities and between images of one identity.

Every knob is a distribution (:class:`Uniform`, :class:`Normal`, :class:`Bernoulli`) sampled for a
whole batch at once from per-image counter-based streams keyed by ``(seed, identity, variation)``
(:mod:`morphable.rng`, ``draw``), and every sampled value is logged as a per-image factor. Presets: ``frontal`` (near-frontal portraits: |yaw| <= 25, a modelling key light, expressions) and ``wild``
(DigiFace-like strong variation: poses up to profile, hard light, expressions, degradations).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .rng import Draws

from common.config import from_dict, merge_into, register_converter
from common.errors import ConfigError
from engine.mixup import MixupConfig


@dataclass
class Uniform:
    """Uniform on ``[lo, hi]``."""

    lo: float
    hi: float

    def sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        if self.hi < self.lo:
            raise ValueError(f"Uniform needs lo <= hi, got lo={self.lo}, hi={self.hi}")
        return self.lo + (self.hi - self.lo) * torch.rand(n, generator=g)

    def draw(self, r: "Draws", *shape: int) -> torch.Tensor:
        """(B, *shape) values, one stream per image (:class:`morphable.rng.Draws`)."""
        if self.hi < self.lo:
            raise ValueError(f"Uniform needs lo <= hi, got lo={self.lo}, hi={self.hi}")
        return self.lo + (self.hi - self.lo) * r.uniform(*shape)


@dataclass
class Normal:
    """Normal(mean, std) clamped to ``[lo, hi]``."""

    mean: float
    std: float
    lo: float = -float("inf")
    hi: float = float("inf")

    def sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        if self.std < 0 or self.hi < self.lo:
            raise ValueError(f"Normal needs std >= 0 and lo <= hi, got {self}")
        return (self.mean + self.std * torch.randn(n, generator=g)).clamp(self.lo, self.hi)

    def draw(self, r: "Draws", *shape: int) -> torch.Tensor:
        """(B, *shape) values, one stream per image (:class:`morphable.rng.Draws`)."""
        if self.std < 0 or self.hi < self.lo:
            raise ValueError(f"Normal needs std >= 0 and lo <= hi, got {self}")
        return (self.mean + self.std * r.normal(*shape)).clamp(self.lo, self.hi)


@dataclass
class Bernoulli:
    """1.0 with probability ``p`` else 0.0."""

    p: float

    def sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"Bernoulli probability must be in [0, 1], got {self.p}")
        return (torch.rand(n, generator=g) < self.p).float()

    def draw(self, r: "Draws", *shape: int) -> torch.Tensor:
        """(B, *shape) 0/1 values, one stream per image (:class:`morphable.rng.Draws`)."""
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"Bernoulli probability must be in [0, 1], got {self.p}")
        return (r.uniform(*shape) < self.p).float()


Dist = Uniform | Normal | Bernoulli


@dataclass
class PoseConfig:
    """Head rotation in degrees: yaw (left/right, +: the face turns to image-left), pitch (+: the face
    looks down), roll (+: counter-clockwise on screen); :func:`morphable.camera.euler_to_matrix`."""

    yaw: Dist = field(default_factory=lambda: Normal(0, 30, -80, 80))
    pitch: Dist = field(default_factory=lambda: Normal(0, 12, -40, 40))
    roll: Dist = field(default_factory=lambda: Normal(0, 8, -30, 30))


@dataclass
class ExpressionConfig:
    """Facial expression: with probability ``prob`` a random mix of ``max_units`` units (ARKit names,
    ``units: all`` or a list), each with intensity from ``intensity``; eye blinks and gaze too."""

    prob: float = 0.7
    units: list[str] | str = "all"
    max_units: int = 4
    intensity: Dist = field(default_factory=lambda: Uniform(0.2, 1.0))
    presets: bool = True  # also draw named expressions (smile, surprise, ...) half of the time


@dataclass
class LightConfig:
    """Illumination: ambient spherical-harmonics environment plus one directional light.

    ``azimuth``/``elevation`` in degrees around the head (0, 0 = from the camera), ``intensity``
    of the directional light relative to ambient, ``temperature`` in kelvin for both, ``sh_detail``
    the strength of the random order-1/2 SH terms, ``white_balance`` how much of the light colour the camera's white balance removes (1 = all),
    ``specular`` skin shininess, ``shadows`` the
    probability of cast shadows (shadow map), ``softness`` the key light's size as the width of its
    shadows' penumbra (0: a point light, hard edges; 1: a window or softbox, a penumbra
    ``morphable.source.SOFT_SHADOW_MM`` wide; from 0.25 by default, where the shadow map's 3 mm texels
    no longer show as steps), ``exposure`` final brightness, ``metering`` how far
    the camera's exposure follows the face's own albedo (0: exposed for the light alone, so dark skin
    renders as dark as its albedo; 1: every face of the same mean brightness, as a face-metering
    camera does; a real-face detector misses dark faces that are under-exposed, BENCHMARKS.md),
    ``flash_prob`` the probability of an on-camera flash: a white fill light from the camera itself,
    of intensity ``flash`` (in the key light's units), whose shadows fall behind the head (none are
    drawn) and whose catchlight sits in each eye. ``occlusion_power`` is the exponent on the head's
    ambient visibility (computed once on the model's coarse mean mesh, which lacks the creases' fine
    geometry: the alar grooves, the lids' folds, the lip line): above 1 it deepens the creases' shade
    under the ambient light and the key light alike; 1 keeps the visibility as computed. The default 3
    brings our faces' contrast towards real photographs' and raises a real-face detector's margin at
    no cost in identity (BENCHMARKS.md, "Realism and speed, session 22"); a fine mesh of your own may
    want 1.
    """

    ambient: Dist = field(default_factory=lambda: Uniform(0.35, 0.8))
    sh_detail: Dist = field(default_factory=lambda: Uniform(0.0, 0.4))
    azimuth: Dist = field(default_factory=lambda: Normal(0, 45, -120, 120))
    # the key light of a photograph comes from above the horizon (sun, ceiling, window) and only
    # rarely from below (was Normal(20, 25, -40, 80): one image in five lit from below)
    elevation: Dist = field(default_factory=lambda: Normal(30, 20, -10, 80))
    intensity: Dist = field(default_factory=lambda: Uniform(0.4, 1.5))
    temperature: Dist = field(default_factory=lambda: Uniform(3200, 7500))
    white_balance: Dist = field(default_factory=lambda: Uniform(0.75, 1.0))
    tint: Dist = field(default_factory=lambda: Normal(0, 0.04, -0.12, 0.12))
    specular: Dist = field(default_factory=lambda: Uniform(0.02, 0.25))
    shadows: float = 0.5
    softness: Dist = field(default_factory=lambda: Uniform(0.25, 1.0))
    exposure: Dist = field(default_factory=lambda: Normal(0.0, 0.2, -0.6, 0.5))
    metering: float = 0.7
    flash_prob: float = 0.0
    flash: Dist = field(default_factory=lambda: Uniform(0.3, 0.9))
    occlusion_power: float = 3.0


@dataclass
class CameraConfig:
    """Camera: ``distance`` from the head in metres, ``focal_mm`` 35 mm-equivalent focal length,
    ``jitter`` of the head position in the unaligned view (fraction of the image), ``loose_scale`` the
    face size in the unaligned view relative to the aligned crop (a loose head crop), ``eye_softness``
    the gaussian sd in millimetres at the head of a blur that softens the eyes and their lid margins
    (0, the default: as drawn, pixel-sharp; images that ``degradation`` blurs or downsamples keep
    their eyes as drawn). A real-face recogniser finds softened eyes' people further apart, but at 2 mm
    the eyes look milky, detection drops in ``wild`` and FR training gains nothing (BENCHMARKS.md,
    "Realism, session 19"); 1 mm keeps them legible (the ``frontal`` preset's). ``psf`` is the
    gaussian sd, in pixels of a 112 px image (scaled with the size, as ``degradation.blur``), of a
    lens and sensor's point spread, on the images that ``degradation`` neither blurs nor downsamples
    (those carry their own softness; their ``camera_psf`` is logged as 0). Off by default (``lo = hi
    = 0``). Pixel-sharp, most of ``frontal``'s renders were crisper than 99% of lfw-dev's faces at
    112 px; ``Uniform(0.4, 0.8)`` (the ``frontal`` preset's) puts them in the real faces'
    sharpness range and a real-face recogniser finds the people a little further apart, but ``wild``
    loses detection and FR training on softened ``wild`` renders generalises worse (BENCHMARKS.md,
    "Realism, session 23" and "Realism, session 32")."""

    distance: Dist = field(default_factory=lambda: Uniform(0.45, 2.0))
    focal_mm: Dist = field(default_factory=lambda: Uniform(28, 85))
    jitter: float = 0.05
    loose_scale: float = 0.6
    eye_softness: float = 0.0
    psf: Dist = field(default_factory=lambda: Uniform(0.0, 0.0))


@dataclass
class BackgroundConfig:
    """Background: procedural (smooth colour fields, multi-scale noise, stripes/blocks), or images
    from ``folder`` (used with probability ``image_prob``), blurred with ``blur`` (pixels sigma),
    procedural colours scaled to ``saturation``."""

    folder: str | None = None
    image_prob: float = 0.5
    saturation: Dist = field(default_factory=lambda: Uniform(0.15, 0.7))
    blur: Dist = field(default_factory=lambda: Uniform(0.0, 2.0))


@dataclass
class DegradationConfig:
    """Image degradations (:mod:`morphable.degrade`), each applied with its probability: gaussian
    ``blur`` (sigma px at 112), sensor ``noise`` (std), ``jpeg`` quality (libjpeg's scale, 1-100: a
    baseline round trip, 4:2:0), ``lowres`` scale (downsample then upsample),
    colour jitter (``brightness``, ``contrast``, ``saturation``, ``hue`` in radians), ``gray``."""

    blur_prob: float = 0.3
    blur: Dist = field(default_factory=lambda: Uniform(0.3, 1.5))
    noise_prob: float = 0.3
    noise: Dist = field(default_factory=lambda: Uniform(0.005, 0.03))
    jpeg_prob: float = 0.3
    jpeg: Dist = field(default_factory=lambda: Uniform(30, 90))
    lowres_prob: float = 0.2
    lowres: Dist = field(default_factory=lambda: Uniform(0.35, 0.8))
    jitter_prob: float = 0.5
    brightness: Dist = field(default_factory=lambda: Normal(0, 0.08, -0.25, 0.25))
    contrast: Dist = field(default_factory=lambda: Normal(1, 0.12, 0.6, 1.4))
    saturation: Dist = field(default_factory=lambda: Normal(1, 0.15, 0.5, 1.5))
    hue: Dist = field(default_factory=lambda: Normal(0, 0.03, -0.1, 0.1))
    gray_prob: float = 0.03


@dataclass
class OccluderConfig:
    """Occluders: eyeglasses with probability ``glasses_prob`` (sunglasses among them with
    ``sunglasses_prob``; drawn only for |yaw| <= ``glasses_max_yaw``), ``frame_width`` and
    ``lens_size`` as fractions of the eye distance; an opaque patch (hand, object) with probability
    ``patch_prob`` and radius ``patch_size`` (fraction of the image)."""

    glasses_prob: float = 0.15
    sunglasses_prob: float = 0.3
    glasses_max_yaw: float = 50.0
    frame_width: Dist = field(default_factory=lambda: Uniform(0.02, 0.05))
    lens_size: Dist = field(default_factory=lambda: Uniform(0.38, 0.46))
    patch_prob: float = 0.08
    patch_size: Dist = field(default_factory=lambda: Uniform(0.12, 0.3))


@dataclass
class IdentityConfig:
    """How identities are drawn.

    ``shape_scale`` multiplies the standard-normal shape coefficients (1 = the model's prior),
    ``detail_scale`` those past the first 10 again (more local variation of the features without
    more of the global build: a real-face recogniser then tells the faces further apart but finds
    fewer of them, BENCHMARKS.md);
    ``min_distance`` is the separability threshold (see ``MorphableSource.sample_identities``) in the
    identity embedding space: whitened shape coefficients concatenated with appearance parameters,
    divided by sqrt(dimension) so that two independent draws are ~sqrt(2) apart (at ``shape_scale`` =
    ``detail_scale`` = 1, the defaults). ``hair_volume``
    lifts the hair-covered scalp along its normal, so hair has a silhouette, not only a colour;
    ``hair_mesh`` adds hair geometry in the identity's style (:mod:`morphable.hair`: caps, fringes,
    bobs, long hair, buns, curls) to models that have a cranium (the default model);
    ``gender_contrast`` moves each identity's shape along the model's gender direction towards a
    clearly female- or male-read face (1) or leaves the model's own, mostly androgynous spread (0);
    ``ancestry_contrast`` moves each identity's shape along the model's ancestry directions (its
    African / East Asian / European regressions, gender and age held) towards one ancestry, drawn with
    probabilities ``ancestry_shares`` (African, East Asian, European; normalised): 1 reaches the
    model's pure ancestry, more goes past it, 0 (off, the default) leaves the model's own Gaussian
    spread, in which most faces are blends of all three (BENCHMARKS.md "Realism, session 33"); skin,
    hair and iris colours follow the moved shape's estimates as always;
    ``relief`` is the rms (metres) of per-identity fine facial relief outside the shape model's span
    (brow ridge, nasal bridge, cheekbones, chin: :mod:`morphable.relief`);
    ``feature_shape`` scales the per-identity proportions of the eyes and the nose outside the shape
    model's span (:func:`morphable.relief.feature_fields`: eye size, aspect, canthal tilt, spacing,
    height and depth, brow ridge, nose width, projection, length and bridge; 0 = off);
    ``sex_features`` shifts the eye size, nose width, length and projection and the brow ridge of
    the feature-shape coefficients by that many standard deviations towards the sex-typical side of the
    identity's gender estimate (:data:`morphable.relief.SEX_FEATURES`: larger eyes and a smaller nose
    on a female-read face; 0 = none), so that a real-face recogniser reads the gender a face is drawn with;
    ``proportions`` scales how far each identity's vertical proportions (eye line to nose tip, to
    mouth and to chin, over the eye distance: :func:`morphable.model.face_proportions`) lie from the mean face's,
    by the minimum-norm change of its shape coefficients that leaves the gender regression alone
    (1 = the shape model's own spread: coefficient of variation 25% and 15%, where adult faces vary
    by well under 10%, and its short-faced tail is what a real-face detector misses; 0.4: about 10%
    and 6%, BENCHMARKS.md "Realism, session 8");
    ``mixup``: identity mixup (SynFace; :mod:`engine.mixup`), off by default: a ``fraction`` of the
    identities are convex combinations of two earlier ones (shape, relief and continuous appearance
    mixed; hair style and its geometry uniforms, bald/hairline/density and the noise offset from the
    parent with the larger weight);
    ``detail_model``: path of a feature-detail model learnt from real faces (:mod:`morphable.detail`,
    fitted by ``python -m engine.detail_fit``; None = off, the default, as no real faces ship with
    the project): each identity draws its own coefficients, and the fine detail of the rendered inner
    face is replaced by the identity's sample, ``detail_strength`` of the way (0..1), and on the drawn
    eyeballs ``detail_eyes`` of that (0..1: at 1 a sample's eyes blur our iris and catchlight, at 0 the
    eyes stay drawn, sharp "stickers" on a photographic face; BENCHMARKS.md "Realism, session 25");
    ``mean_shades``: scale of :data:`morphable.mean_shades.MEAN_SHADES`, soft light and dark patches
    that bring the features' average look nearer real photographs' (0 = off; BENCHMARKS.md
    "Realism, session 29"; off in the ``wild`` preset, session 30).
    """

    shape_scale: float = 1.0
    detail_scale: float = 1.0  # extra scale of the shape components past the first 10 (local facial detail)
    num_shape: int = 120
    min_distance: float = 0.9
    max_tries: int = 50
    hair_volume: float = 0.012  # metres of scalp-hair thickness at full density (0 = painted hair only)
    hair_mesh: bool = True
    gender_contrast: float = 1.0  # 0: the model's gender spread (mostly androgynous); 1: female- or male-read
    ancestry_contrast: float = 0.0  # 0: the model's ancestry spread (mostly blends); 1: one ancestry's pure shape
    ancestry_shares: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # African, East Asian, European (normalised)
    relief: float = 0.0011  # metres rms of per-identity fine facial relief (morphable.relief; 0 = off)
    feature_shape: float = 1.0  # scale of the eye and nose proportions (morphable.relief.FEATURE_SD; 0 = off)
    proportions: float = 0.4  # scale of the face's vertical proportions' spread (eye-nose, eye-mouth); 1 = the model's own
    sex_features: float = 0.8  # sex-typical shift (feature SDs) of eye size, nose size and brow ridge; 0 = none
    mixup: MixupConfig = field(default_factory=MixupConfig)  # identity mixup (engine.mixup); fraction 0 = off
    detail_model: str | None = None  # feature detail learnt from real faces (morphable.detail); None = off
    detail_strength: float = 1.0  # how far the learnt detail replaces the rendered (0..1)
    detail_eyes: float = 0.5  # the same on the drawn eyeballs, relative to detail_strength (0..1)
    detail_jitter: float = 0.3  # per-image sd added to the identity's detail coefficients (prior sd = 1)
    mean_shades: float = 1.0  # scale of the fitted mean shades (morphable.mean_shades); 0 = off


@dataclass
class RenderConfig:
    """Everything one :class:`~morphable.source.MorphableSource` needs."""

    size: int = 112
    aligned: bool = True
    supersample: int = 1  # render at this multiple of the size and average down (2 = 4x cost, best AA)
    edge_aa: bool = True  # with supersample 1: blend silhouette pixels with their neighbourhood
    max_batch: int = 64  # images rendered at once (memory bound); larger requests are chunked
    texture_res: int = 0  # baked albedo texture side; 0 = automatic (256 up to 256 px renders, else 512)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    expression: ExpressionConfig = field(default_factory=ExpressionConfig)
    light: LightConfig = field(default_factory=LightConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    occluders: OccluderConfig = field(default_factory=OccluderConfig)


def _frontal() -> RenderConfig:
    c = RenderConfig()
    # near-frontal portraits; a person varies about as much between them as between real portraits
    # (pose to +-25 degrees, an expression in most, a key light that models the face: BENCHMARKS.md
    # "Realism, session 9"; was +-15, 60% at intensity 0.2-0.8, ambient 0.35-0.65, shadows 0.3)
    c.pose = PoseConfig(yaw=Uniform(-25, 25), pitch=Uniform(-10, 8), roll=Uniform(-6, 6))
    c.expression = ExpressionConfig(prob=0.85, max_units=2, intensity=Uniform(0.3, 1.0), presets=True)
    c.light = LightConfig(ambient=Uniform(0.2, 0.55), sh_detail=Uniform(0.0, 0.25), azimuth=Normal(0, 30, -60, 60),
                          elevation=Uniform(10, 45), intensity=Uniform(0.6, 1.3), temperature=Uniform(4000, 6500),
                          tint=Normal(0, 0.01, -0.03, 0.03), specular=Uniform(0.08, 0.3), shadows=0.6,
                          white_balance=Uniform(0.9, 1.0),
                          exposure=Normal(0, 0.08, -0.2, 0.2))
    # portraits as a camera takes them: a lens and sensor's point spread (pixel-sharp, 60% of them were
    # crisper than 99% of lfw-dev's faces at 112 px) and eyes softened by 1 mm (drawn, their lash
    # line, iris and sclera had 1.5 times real faces' pixel-scale contrast); a real-face recogniser finds the
    # people further apart. Not in `wild`, whose FR training lost by them (BENCHMARKS.md, "Realism,
    # session 32")
    c.camera = CameraConfig(distance=Uniform(0.8, 1.5), focal_mm=Uniform(50, 85), jitter=0.0, eye_softness=1.0,
                            psf=Uniform(0.4, 0.8))
    c.background = BackgroundConfig(blur=Uniform(1.0, 3.0))
    c.occluders = OccluderConfig(glasses_prob=0.1, sunglasses_prob=0.0, patch_prob=0.0)
    # portraits as they are shared: half of them saved as JPEG at web qualities (LFW's photos are JPEGs)
    c.degradation = DegradationConfig(blur_prob=0.0, noise_prob=0.1, noise=Uniform(0.003, 0.01), jpeg_prob=0.5,
                                      jpeg=Uniform(50, 95), lowres_prob=0.0, jitter_prob=0.0, gray_prob=0.0)
    return c


def _wild() -> RenderConfig:
    c = RenderConfig()
    # pitch and roll as in photographs taken in the wild (web face sets: sd ~10 and ~8 degrees),
    # yaw kept wide (profiles included); light from the side more often than from far behind;
    # fewer and smaller opaque patches
    c.pose = PoseConfig(yaw=Normal(0, 35, -80, 80), pitch=Normal(0, 10, -30, 30), roll=Normal(0, 8, -25, 25))
    c.light.ambient = Uniform(0.4, 0.8)
    c.light.azimuth = Normal(0, 40, -110, 110)
    # news, event and party photographs are often taken with the camera's flash: a frontal fill
    # that keeps a downturned face's eyes and mouth lit (BENCHMARKS.md, "Realism, session 16")
    c.light.flash_prob = 0.3
    c.occluders.patch_prob = 0.05
    c.occluders.patch_size = Uniform(0.1, 0.25)
    # blur, noise and downsampling kept near the sharpness range of real web photographs at 112 px
    # (benchmarks/sharpness_range.py): to 1.5 px, 0.03 and 0.35 they left 15% of the faces softer
    # than 99% of lfw-dev's (now 6%), and a quarter of the noisy ones sharper than 99% of them
    # (BENCHMARKS.md, "Realism, session 20")
    c.degradation.blur = Uniform(0.3, 1.0)
    c.degradation.noise = Uniform(0.005, 0.015)
    c.degradation.lowres = Uniform(0.5, 0.8)
    # no mean shades (morphable.mean_shades): FR models trained on `wild` renders with them recognised
    # the real people of lfw-dev's folds 4-5 less well (CPU FR benchmark, 3 seeds: extended-pair EER
    # 26.7 -> 31.6, fine-tuned accuracy lower at every seed; BENCHMARKS.md, "Realism, session 30")
    c.identity.mean_shades = 0.0
    return c


PRESETS = {"frontal": _frontal, "wild": _wild}


def preset(name: str) -> RenderConfig:
    """A fresh :class:`RenderConfig` for preset ``name`` (``frontal`` or ``wild``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def _dist_from(value: Any, where: str) -> Any:
    """A distribution from its parameters (``{lo, hi}`` uniform, ``{mean, std[, lo, hi]}`` normal,
    ``{p}`` bernoulli) or a number (a constant); :func:`common.config.convert`'s hook for :data:`Dist`."""
    if isinstance(value, dict):
        keys = set(value)
        if keys == {"lo", "hi"}:
            return from_dict(Uniform, value, where)
        if {"mean", "std"} <= keys <= {"mean", "std", "lo", "hi"}:
            return from_dict(Normal, value, where)
        if keys == {"p"}:
            return from_dict(Bernoulli, value, where)
        raise ConfigError(f"{where}: a distribution is {{lo, hi}} (uniform), {{mean, std[, lo, hi]}} "
                          f"(normal) or {{p}} (bernoulli), got keys {sorted(keys)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Uniform(float(value), float(value))
    raise ConfigError(f"{where}: expected a distribution or a number, got {value!r}")


register_converter(Dist, _dist_from)


def apply_overrides(cfg: Any, overrides: dict[str, Any], where: str = "") -> Any:
    """Apply nested ``overrides`` (e.g. ``{"pose": {"yaw": {"lo": -30, "hi": 30}}}``) to a config
    dataclass in place (:func:`common.config.merge_into`), then check the values (:func:`validate`);
    unknown keys, wrong types and values out of range raise :class:`~common.errors.ConfigError`
    (a ``ValueError``) naming the key."""
    return validate(merge_into(cfg, overrides, where), where)


def validate(cfg: Any, where: str = "") -> Any:
    """Check the values of a config dataclass (recursively), as a config is loaded rather than when a
    render first samples them: every distribution's range (``lo <= hi``; a normal's ``std >= 0``; a
    bernoulli's ``p`` in [0, 1]) and every probability (a ``prob`` or ``*_prob`` field) in [0, 1].
    Raises :class:`~common.errors.ConfigError` naming the key (``pose.yaw: lo (30) > hi (-30)``);
    returns ``cfg``."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        path = f"{where}.{f.name}" if where else f.name
        if isinstance(v, (Uniform, Normal)):
            if v.hi < v.lo:
                raise ConfigError(f"{path}: lo ({v.lo:g}) > hi ({v.hi:g})")
            if isinstance(v, Normal) and v.std < 0:
                raise ConfigError(f"{path}: std must be >= 0, got {v.std:g}")
        elif isinstance(v, Bernoulli):
            if not 0.0 <= v.p <= 1.0:
                raise ConfigError(f"{path}: p must be in [0, 1], got {v.p:g}")
        elif is_dataclass(v):
            validate(v, path)
        elif (f.name == "prob" or f.name.endswith("_prob")) and isinstance(v, (int, float)) and not isinstance(v, bool):
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{path}: a probability must be in [0, 1], got {v:g}")
        elif f.name in ("detail_strength", "detail_eyes") and isinstance(v, (int, float)) and not 0.0 <= v <= 1.0:
            raise ConfigError(f"{path}: must be in [0, 1], got {v:g}")
        elif f.name in ("mean_shades", "ancestry_contrast") and isinstance(v, (int, float)) and not v >= 0:
            raise ConfigError(f"{path}: must be >= 0, got {v:g}")
        elif f.name == "ancestry_shares" and (len(v) != 3 or min(v) < 0 or not sum(v) > 0):
            raise ConfigError(f"{path}: three shares >= 0 (African, East Asian, European) with a positive sum, got {list(v)}")
        elif f.name.endswith("_power") and isinstance(v, (int, float)) and not isinstance(v, bool) and not v > 0:
            raise ConfigError(f"{path}: an exponent must be > 0, got {v:g}")
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-serialisable dict of a config (distributions as their parameter dicts)."""
    return asdict(copy.deepcopy(cfg))
