"""Mean shades: a few soft light and dark patches that bring the average look of our faces' features
nearer real photographs'.

A real-face recogniser reads our people as alike mostly because the *average* look of their features
is off, more than because they vary too little (BENCHMARKS.md, "Realism, sessions 27-29"): every
render multiplied by one fixed map, the ratio of real faces' mean image to ours (each warped to one
layout by its landmarks), moves ``frontal`` impostor pairs from 0.662 to 0.691. Such a map is a
picture of real faces and does not ship. A :class:`Shade` is its parametric stand-in: an anisotropic
gaussian on the face's rest surface with a log gain per colour channel, mirrored to both sides when
its centre is off the midline. Fourteen of them, fitted to the map over the brows, eyes and nose
(:func:`fit_shades`, ``python -m engine.shade_fit``), carry a third of the map's gain (0.662 -> 0.671);
ten more, fitted over the nose to what those left (session 30), take it to 0.677, and 26 more over
the mouth, the brows and the nose (session 31) to 0.687 (the quick judge).
They hold nothing of any one face: a few numbers each, the mean of 2,200 faces.

The renderer multiplies each face pixel of the displayed image by ``exp(sum of gains)`` at its rest
position (``identity.mean_shades`` scales the gains; 0 turns them off), after lighting, so a shade
reads the same under every light, as the map it stands in for. The ``wild`` preset leaves them off:
FR models trained on ``wild`` renders with them recognised unseen real people less well (BENCHMARKS.md,
"Realism, session 30").
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["MEAN_SHADES", "Shade", "fit_shades", "rest_to_template", "shade_box", "shade_log_gain", "shade_texture", "table_sha1",
           "template_rest_grid"]


@dataclass(frozen=True)
class Shade:
    """A gaussian ``gain * exp(-((|x| - cx) / sx)^2 - ((y - cy) / sy)^2)`` of log gain on the rest
    surface (metres, the model's frame: x to the face's left, y up). ``cx > 0``: a mirrored pair at
    ``x = +-cx``; ``cx = 0``: one shade on the midline; ``cx < 0`` (a fitted pair that drifted past
    the midline): one ridge across it, strongest at ``x = 0``."""

    centre: tuple[float, float]  # (cx, cy) metres
    sd: tuple[float, float]  # (sx, sy) metres
    gain: tuple[float, float, float]  # log gain per linear RGB channel at the centre


#: The default shades: fitted by ``python -m engine.shade_fit --real ../shared/data/lfw-dev/images
#: --exclude <lfw-dev folds 4-5 people>`` (BENCHMARKS.md, "Realism, session 29") to the ratio of real
#: faces' mean image to our ``frontal`` renders' without them (seed 0), over the brows, eyes and
#: nose. In words: the eyes' surroundings lighter and warmer (our lids and sockets were darker than
#: real ones), a darker line along the lids in a lighter eye, lighter brow heads and warmer brows,
#: the nose's bridge and ridge lighter, the nostrils and the skin under the nose darker. The next 10
#: (session 30) were fitted over the nose alone to what the first 14 left: the nose's wings lighter
#: with a darker groove around them, where real noses' alar lobes and alar-facial grooves show. The
#: last 26 (session 31), each group to what the table before it left: over the mouth (lips and their
#: seam lighter, as real mouths, which often show some teeth, are on average), over the brows (the
#: brow heads lighter, the brows' outer parts and the skin above them a little darker), then over the
#: mouth and nose together.
MEAN_SHADES: tuple[Shade, ...] = (
    Shade(centre=(0.0332, -0.0002), sd=(0.0103, 0.0125), gain=(0.193, 0.273, 0.323)),
    Shade(centre=(0.0332, -0.0013), sd=(0.0139, 0.0051), gain=(0.018, -0.231, -0.4)),
    Shade(centre=(0.0257, -0.0021), sd=(0.0068, 0.0038), gain=(0.4, 0.4, 0.4)),
    Shade(centre=(0.0268, -0.0026), sd=(0.0041, 0.0016), gain=(-0.283, -0.343, -0.308)),
    Shade(centre=(0.0105, -0.0453), sd=(0.0034, 0.0041), gain=(-0.063, -0.22, -0.271)),
    Shade(centre=(0.0159, 0.0117), sd=(0.0058, 0.0069), gain=(0.189, 0.134, 0.07)),
    Shade(centre=(0.0329, -0.0068), sd=(0.0042, 0.0018), gain=(-0.086, -0.159, -0.163)),
    Shade(centre=(0.0267, -0.0053), sd=(0.0022, 0.0015), gain=(-0.126, -0.175, -0.157)),
    Shade(centre=(0.0345, -0.0009), sd=(0.0033, 0.0017), gain=(0.193, 0.176, 0.181)),
    Shade(centre=(0.0303, 0.0141), sd=(0.0139, 0.0043), gain=(0.05, -0.083, -0.262)),
    Shade(centre=(0.0, -0.0557), sd=(0.0139, 0.0038), gain=(-0.174, -0.205, -0.157)),
    Shade(centre=(0.0, -0.0467), sd=(0.004, 0.0064), gain=(-0.08, -0.143, -0.151)),
    Shade(centre=(0.0, -0.0023), sd=(0.0071, 0.0114), gain=(0.106, 0.137, 0.17)),
    Shade(centre=(0.0, -0.0327), sd=(0.0051, 0.0139), gain=(0.053, 0.075, 0.16)),
    # python -m engine.shade_fit ... --on-top --regions nose --pairs 8 --mids 2 (session 30), on the 14 above
    Shade(centre=(0.0106, -0.0453), sd=(0.0026, 0.003), gain=(-0.022, -0.087, -0.142)),
    Shade(centre=(0.0275, -0.0173), sd=(0.0049, 0.0035), gain=(-0.035, -0.086, -0.109)),
    Shade(centre=(0.0204, -0.0443), sd=(0.0113, 0.0071), gain=(-0.225, -0.388, -0.374)),
    Shade(centre=(0.0191, -0.0452), sd=(0.008, 0.0057), gain=(0.266, 0.389, 0.4)),
    Shade(centre=(0.015, -0.0382), sd=(0.0034, 0.0038), gain=(0.115, 0.156, 0.21)),
    Shade(centre=(0.0215, -0.0118), sd=(0.0039, 0.0041), gain=(-0.082, -0.12, -0.131)),
    Shade(centre=(-0.0028, -0.0504), sd=(0.0112, 0.0052), gain=(0.4, 0.375, 0.375)),
    Shade(centre=(0.0186, -0.0073), sd=(0.0024, 0.002), gain=(-0.086, -0.109, -0.115)),
    Shade(centre=(0.0, -0.0521), sd=(0.0071, 0.0039), gain=(-0.319, -0.342, -0.371)),
    Shade(centre=(0.0, -0.0464), sd=(0.0041, 0.0034), gain=(-0.192, -0.19, -0.193)),
    # python -m engine.shade_fit ... --on-top --regions mouth --pairs 6 --mids 3 (session 31), on the table above
    Shade(centre=(0.0066, -0.0685), sd=(0.0096, 0.0017), gain=(0.282, 0.37, 0.391)),
    Shade(centre=(0.0098, -0.0723), sd=(0.0046, 0.0018), gain=(0.251, 0.216, 0.26)),
    Shade(centre=(0.0064, -0.0798), sd=(0.0139, 0.0048), gain=(0.177, 0.26, 0.346)),
    Shade(centre=(0.0236, -0.0761), sd=(0.0049, 0.0029), gain=(0.065, 0.121, 0.158)),
    Shade(centre=(0.0241, -0.0689), sd=(0.0025, 0.0019), gain=(0.168, 0.141, 0.027)),
    Shade(centre=(0.0157, -0.0701), sd=(0.0032, 0.0019), gain=(0.218, 0.168, 0.182)),
    Shade(centre=(0.0, -0.0626), sd=(0.011, 0.0055), gain=(0.27, 0.4, 0.4)),
    Shade(centre=(0.0, -0.0684), sd=(0.0139, 0.0104), gain=(-0.296, -0.4, -0.381)),
    Shade(centre=(0.0, -0.0711), sd=(0.0084, 0.0045), gain=(0.4, 0.353, 0.381)),
    # python -m engine.shade_fit ... --on-top --regions brows --pairs 6 --mids 2 (session 31), on the table above
    Shade(centre=(0.0168, 0.0142), sd=(0.0043, 0.0023), gain=(0.151, 0.16, 0.178)),
    Shade(centre=(0.0258, 0.0142), sd=(0.0139, 0.0021), gain=(-0.001, -0.069, -0.143)),
    Shade(centre=(0.026, 0.0418), sd=(0.0139, 0.0077), gain=(-0.066, -0.074, -0.074)),
    Shade(centre=(0.0402, 0.0193), sd=(0.0049, 0.0025), gain=(-0.077, -0.075, -0.103)),
    Shade(centre=(0.0393, 0.033), sd=(0.0119, 0.0073), gain=(-0.077, -0.064, -0.077)),
    Shade(centre=(0.0525, 0.0159), sd=(0.0076, 0.0138), gain=(-0.09, -0.053, -0.081)),
    Shade(centre=(0.0, 0.0437), sd=(0.0139, 0.0098), gain=(-0.068, -0.068, -0.053)),
    Shade(centre=(0.0, 0.0233), sd=(0.0139, 0.0139), gain=(-0.011, -0.001, 0.044)),
    # python -m engine.shade_fit ... --on-top --regions mouth,nose --pairs 6 --mids 3 (session 31), on the table above
    Shade(centre=(0.015, -0.0687), sd=(0.0139, 0.0014), gain=(0.214, 0.256, 0.272)),
    Shade(centre=(0.0266, -0.0618), sd=(0.0089, 0.0084), gain=(-0.118, -0.137, -0.147)),
    Shade(centre=(0.0242, -0.0707), sd=(0.0026, 0.0057), gain=(0.108, 0.146, 0.127)),
    Shade(centre=(0.0106, -0.0425), sd=(0.0035, 0.0029), gain=(-0.083, -0.132, -0.142)),
    Shade(centre=(0.0178, -0.0702), sd=(0.0109, 0.0036), gain=(-0.224, -0.31, -0.4)),
    Shade(centre=(0.0153, -0.0711), sd=(0.007, 0.0021), gain=(0.248, 0.26, 0.332)),
    Shade(centre=(0.0, -0.044), sd=(0.0047, 0.003), gain=(-0.08, -0.093, -0.084)),
    Shade(centre=(0.0, -0.0611), sd=(0.0139, 0.0025), gain=(0.036, 0.046, 0.091)),
    Shade(centre=(0.0, -0.0694), sd=(0.0051, 0.0014), gain=(0.091, 0.085, 0.083)),
)


def table_sha1(shades: Sequence[Shade] | None = None) -> str:
    """sha1 (hex, 12 digits) of ``shades`` (default :data:`MEAN_SHADES`): their numbers, in order. A
    dataset's config records it, so that renders drawn with another table do not resume it."""
    shades = MEAN_SHADES if shades is None else shades
    text = ";".join(f"{s.centre!r},{s.sd!r},{s.gain!r}" for s in shades)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def shade_log_gain(ax: torch.Tensor, y: torch.Tensor, shades: Sequence[Shade] | None = None) -> torch.Tensor:
    """(..., 3) summed log gain of ``shades`` (default :data:`MEAN_SHADES`) at rest positions
    ``|x|`` = ``ax`` and ``y`` (tensors of one shape (...), metres). All shades at once: a (..., K)
    table of gaussians times the (K, 3) gains."""
    shades = MEAN_SHADES if shades is None else shades
    if not shades:
        return torch.zeros(*ax.shape, 3, dtype=ax.dtype, device=ax.device)
    t = torch.tensor([[*s.centre, *s.sd] for s in shades], dtype=ax.dtype, device=ax.device)  # (K, 4)
    gain = torch.tensor([s.gain for s in shades], dtype=ax.dtype, device=ax.device)  # (K, 3)
    d = ((ax[..., None] - t[:, 0]) / t[:, 2]).square_() + ((y[..., None] - t[:, 1]) / t[:, 3]).square_()
    return d.neg_().exp_() @ gain


def shade_box(shades: Sequence[Shade] | None = None, reach: float = 3.0) -> tuple[float, float, float]:
    """``(max |x|, min y, max y)`` (metres) of the box holding every shade out to ``reach`` of its sds
    (beyond 3 sds a shade's gain is under exp(-9) of its peak: 5e-5 at the largest gain here)."""
    shades = MEAN_SHADES if shades is None else shades
    if not shades:
        return 0.0, 0.0, 0.0
    return (max(s.centre[0] + reach * s.sd[0] for s in shades), min(s.centre[1] - reach * s.sd[1] for s in shades),
            max(s.centre[1] + reach * s.sd[1] for s in shades))


def shade_texture(shades: Sequence[Shade] | None = None, step: float = 0.00025) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """The shades' summed log gain baked on a grid of ``step`` metres over :func:`shade_box` (|x| from
    0): a (3, H, W) texture, texel (i, j) at ``(|x|, y) = (j * step, y_min + i * step)``, and the box
    ``(x_max, y_min, y_max)`` its far corners stand for. Read bilinearly, it differs from
    :func:`shade_log_gain` by under 0.002 (a quarter millimetre against sds of 1.5 mm and more)."""
    x_max, y_min, y_max = shade_box(shades)
    w, h = max(2, math.ceil(x_max / step) + 1), max(2, math.ceil((y_max - y_min) / step) + 1)
    xs = torch.arange(w, dtype=torch.float64) * step
    ys = y_min + torch.arange(h, dtype=torch.float64) * step
    tex = shade_log_gain(xs[None, :].expand(h, w), ys[:, None].expand(h, w), shades).permute(2, 0, 1)
    return tex.float().contiguous(), (float(xs[-1]), float(ys[0]), float(ys[-1]))


def rest_to_template(model, size: int = 112) -> torch.Tensor:
    """(2, 3) affine from a rest position (x, y, 1) (metres) to the ``size`` px ArcFace template's
    pixels (edge coordinates) of ``model`` (a :class:`~morphable.model.MorphableModel`): its mean
    face seen from the front, its 5 landmarks aligned to the template, as the renders are."""
    from .camera import similarity_transform, template
    L = model.landmark_points(model.mean[None])[0].float()
    M = similarity_transform(torch.stack([L[:, 0], -L[:, 1]], -1)[None], template(size).to(L)[None])[0]
    return M * torch.tensor([1.0, -1.0, 1.0], device=M.device)


def template_rest_grid(affine: torch.Tensor, size: int = 112) -> torch.Tensor:
    """(size, size, 2) rest position (x, y) (metres) seen at each template pixel's centre: the inverse
    of :func:`rest_to_template`'s ``affine`` (2, 3)."""
    A, t = affine[:, :2].double(), affine[:, 2].double()
    c = torch.arange(size, dtype=torch.float64) + 0.5
    uv = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1)  # (size, size, 2): (u, v) at row v, column u
    return ((uv - t) @ torch.linalg.inv(A).T).float()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (C, H, W) with sd ``sigma`` px, borders replicated: as two matrix products with
    the kernel's (n, n) operator (the replicated borders folded into the edge pixels' weights)."""
    r = int(math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()

    def op(n: int) -> torch.Tensor:
        i = torch.arange(n, device=x.device)[:, None]
        j = (i + torch.arange(-r, r + 1, device=x.device)[None]).clamp(0, n - 1)
        return torch.zeros(n, n, dtype=x.dtype, device=x.device).scatter_add_(1, j, k.expand(n, -1))
    return op(x.shape[-2]) @ x @ op(x.shape[-1]).T


def fit_shades(target: torch.Tensor, weight: torch.Tensor, rest_xy: torch.Tensor, pairs: int = 6, mids: int = 2,
               sigma: float = 3.0, coarse_weight: float = 0.3, steps: int = 800, px_per_m: float = 577.16,
               max_gain: float = 0.4) -> tuple[list[Shade], float]:
    """Fit ``pairs`` mirrored and ``mids`` midline :class:`Shade` s to a log-gain map.

    Args:
        target: (C, T, T) log gain wanted at each template pixel (C = 3 per channel, or 1: the same
            gain on every channel), e.g. ``log(real mean / our mean)``.
        weight: (T, T) where it counts (0..1), e.g. the inner face's feature regions.
        rest_xy: (T, T, 2) rest position (x, y) (metres) seen at each template pixel.
        sigma: the gaussian sd (px) that splits fine from coarse: the fine part of the fit (the map
            minus its blur) is matched with weight 1, its coarse part with ``coarse_weight``.
        steps: Adam steps of the final joint fit (each greedy addition gets a quarter of them).
        px_per_m: template pixels per metre of the rest frame (sets the sd bounds: 1-8 px, 0.8-8 px).
        max_gain: bound on each channel's log gain at a shade's centre.

    Each shade starts at the largest remaining fine residual (a pair more than 2 px off the midline,
    with its mirror image; a midline shade within 2 px of it) and the shades so far are refined
    together; after the last, all of them for ``steps``. Deterministic. Returns the shades and the
    fraction of the weighted loss they explain.
    """
    C, T = target.shape[0], target.shape[-1]
    if target.shape[-2:] != weight.shape or rest_xy.shape != (T, T, 2) or C not in (1, 3):
        raise ValueError(f"target (1 or 3, T, T), weight (T, T), rest_xy (T, T, 2) expected, got "
                         f"{tuple(target.shape)}, {tuple(weight.shape)}, {tuple(rest_xy.shape)}")
    if pairs < 0 or mids < 0 or pairs + mids == 0:
        raise ValueError(f"pairs and mids must be >= 0 and not both 0, got {pairs}, {mids}")
    target, weight = target.float(), weight.float()[None]
    u = rest_xy.float() * px_per_m  # rest positions in px units, for the optimiser's scale
    ax, y = u[..., 0].abs(), u[..., 1]
    fine = lambda x: x - _blur(x, sigma)  # noqa: E731
    t_fine, t_coarse = fine(target), _blur(target, sigma)

    def model(ps: list[list[torch.Tensor]]) -> torch.Tensor:
        out = torch.zeros_like(target)
        for cx, cy, lsx, lsy, a in ps:
            g = torch.exp(-(((ax - cx) / lsx.exp()) ** 2 + ((y - cy) / lsy.exp()) ** 2))
            out = out + a[:, None, None] * g
        return out

    def loss(out: torch.Tensor) -> torch.Tensor:
        err = (fine(out) - t_fine) ** 2 + coarse_weight * (_blur(out, sigma) - t_coarse) ** 2
        return (err * weight).sum() / (weight.sum() * C)

    ps: list[list[torch.Tensor]] = []
    mirrored: list[bool] = []
    for i in range(pairs + mids):
        pair = i < pairs
        with torch.no_grad():
            res = (t_fine - fine(model(ps))).abs().mean(0) * weight[0]
        # a pair starts off the midline (ax is |x|: its mirror image comes with it), a midline shade on it
        score = res * (ax > 2).float() if pair else res * (u[..., 0].abs() < 2).float()
        j = int(score.argmax())
        r, c = divmod(j, T)
        free = [torch.tensor(float(ax[r, c]) if pair else 0.0), torch.tensor(float(y[r, c])),
                torch.tensor(math.log(2.0)), torch.tensor(math.log(2.0)), (t_fine[:, r, c]).clone()]
        for k, t in enumerate(free):
            t.requires_grad_(pair or k != 0)
        ps.append(free)
        mirrored.append(pair)
        opt = torch.optim.Adam([t for p in ps for t in p if t.requires_grad], lr=0.05)
        for _ in range(steps if i == pairs + mids - 1 else steps // 4):
            opt.zero_grad()
            loss(model(ps)).backward()
            opt.step()
            with torch.no_grad():
                for p in ps:
                    p[2].clamp_(0.0, math.log(8.0))
                    p[3].clamp_(math.log(0.8), math.log(8.0))
                    p[4].clamp_(-max_gain, max_gain)
    with torch.no_grad():
        l0 = float(loss(torch.zeros_like(target)))
        l1 = float(loss(model(ps)))
    shades = []
    for (cx, cy, lsx, lsy, a), pair in zip([[t.detach() for t in p] for p in ps], mirrored):
        gain = [float(v) for v in a] * (3 // C)
        shades.append(Shade(centre=(round(float(cx) / px_per_m, 4) if pair else 0.0, round(float(cy) / px_per_m, 4)),
                            sd=(round(math.exp(float(lsx)) / px_per_m, 4), round(math.exp(float(lsy)) / px_per_m, 4)),
                            gain=tuple(round(v, 3) for v in gain)))
    return shades, 1 - l1 / max(l0, 1e-12)
