"""Fit the morphable renderer's mean shades (:mod:`morphable.mean_shades`) to a folder of real aligned faces.

    python -m engine.shade_fit --real ../shared/data/lfw-dev/images --exclude folds45.txt --out runs/shades.json

Real faces (aligned to the ArcFace template, one folder per person or a flat folder; the frontal ones
by dlib's 68 landmarks, the judge extra) and ``--ours`` frontal renders of the morphable model drawn
*without* mean shades (``identity.mean_shades=0``) are each warped to our renders' mean landmarks,
divided channel by channel by their inner face's mean (no exposure or colour cast counts), and
averaged. The log ratio of the two mean images over the feature regions (brows, eyes, nose, mouth:
:data:`FIT_REGIONS`) is what the shades stand in for; :func:`morphable.mean_shades.fit_shades` fits
``--pairs`` mirrored and ``--mids`` midline gaussians to it, placed on the rest surface through the
model's front view. Prints one JSON line, and the shades as Python for
:data:`morphable.mean_shades.MEAN_SHADES`; ``--out`` also writes them as JSON. Nothing is downloaded,
and no picture of a real face is kept: the shades are a few numbers each.

``--on-top`` fits shades to add to the table instead: to what is left between the real faces' mean
and our renders' drawn *with* :data:`~morphable.mean_shades.MEAN_SHADES` (the default renderer), over
``--regions`` (a comma list of :data:`FIT_REGIONS`' names; all four by default). The default table
was made so, each step on the table before it: the fit above over the brows, eyes and nose (14
shades), then ``--on-top`` with ``--regions nose --pairs 8 --mids 2``, ``--regions mouth --pairs 6
--mids 3``, ``--regions brows --pairs 6 --mids 2`` and ``--regions mouth,nose --pairs 6 --mids 3``, all
on ``frontal`` renders drawn pixel-sharp (before the preset's ``camera.psf`` and ``eye_softness``; a
fit on top of them now adds nothing: BENCHMARKS.md, "Realism, session 32").

``--evaluate`` fits nothing: it prints how far our renders' mean lies from the real faces' (rms of the
log ratio over ``--regions``, and per region) without the shades and with :data:`MEAN_SHADES`, e.g.
on people the shades were not fitted to; it takes no ``--on-top``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from morphable.detail import FEATURE_BOXES

from .detail_fit import frontal_real_faces, frontal_renders, read_people

__all__ = ["FIT_REGIONS", "main", "mean_face", "offset_rms", "region_weight"]

#: Boxes (rows r0:r1, columns c0:c1 of the 112 px template; :data:`morphable.detail.FEATURE_BOXES`) of
#: the features the shades are fitted over: the brows, the eyes, the nose with the skin under it, and
#: the mouth. (Real faces' mean mouth shows some teeth, as people in photographs smile: the mouth's
#: shades lighten the lips and their seam a little, which does not read as teeth on a closed mouth.)
FIT_REGIONS = {k: FEATURE_BOXES[k] for k in ("brows", "eyes", "nose", "mouth")}


def mean_face(images, lms: np.ndarray, layout: np.ndarray):
    """(3, T, T) mean of uint8 faces ``images`` (N, T, T, 3), each warped from its landmarks ``lms``
    (N, 68, 2) to ``layout`` (68, 2) and divided per channel by its mean over the inner face."""
    import torch

    from morphable.detail import inner_face_mask, piecewise_affine
    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255
    m = inner_face_mask(x.shape[-1])
    total = torch.zeros(3, *x.shape[-2:])
    for i in range(len(x)):
        w = piecewise_affine(x[i], lms[i], layout)
        total += w / ((w * m).sum((1, 2), keepdim=True) / m.sum()).clamp_min(1e-3)
    return total / max(len(x), 1)


def region_weight(size: int = 112, edge: float = 1.5):
    """(size, size) weight of :data:`FIT_REGIONS` (their union, edges softened by a gaussian of sd
    ``edge`` px at 112) within the inner face."""
    return _region_weight(size, tuple(FIT_REGIONS), edge)


def _region_weight(size: int, names: tuple[str, ...], edge: float = 1.5):
    import torch

    from morphable.detail import inner_face_mask
    from morphable.mean_shades import _blur
    box = torch.zeros(1, size, size)
    for r0, r1, c0, c1 in (FIT_REGIONS[n] for n in names):
        box[0, round(r0 * size / 112):round(r1 * size / 112), round(c0 * size / 112):round(c1 * size / 112)] = 1
    return _blur(box, edge * size / 112)[0].clamp(0, 1) * inner_face_mask(size)


def offset_rms(off, regions: Sequence[str] = tuple(FIT_REGIONS)) -> dict[str, float]:
    """rms of a (3, T, T) log-ratio map over the union of ``regions`` (names of :data:`FIT_REGIONS`;
    all four by default) as ``all``, and over each of them."""
    T = off.shape[-1]
    regions = tuple(regions)
    out = {}
    for name in ("all", *regions):
        w = _region_weight(T, regions) if name == "all" else _region_weight(T, (name,))
        out[name] = round(float(((off ** 2) * w).sum() / (3 * w.sum())) ** 0.5, 4)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", required=True, type=Path, help="real faces aligned to the ArcFace template")
    ap.add_argument("--exclude", type=Path, default=None, help="people to leave out: folder names, one a line")
    ap.add_argument("--ours", type=int, default=600, help="frontal identities rendered (one image each)")
    ap.add_argument("--pairs", type=int, default=10, help="mirrored shades")
    ap.add_argument("--mids", type=int, default=4, help="shades on the midline")
    ap.add_argument("--max-faces", type=int, default=0, help="at most this many real images (0 = all)")
    ap.add_argument("--model", default=None, help="morphable model file (default: the built-in model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the shades here (.json)")
    ap.add_argument("--regions", default=",".join(FIT_REGIONS),
                    help=f"comma list of the regions to fit over, of {', '.join(FIT_REGIONS)} [default: all]")
    ap.add_argument("--on-top", action="store_true",
                    help="fit shades to add to MEAN_SHADES: to the residual of renders drawn with them")
    ap.add_argument("--evaluate", action="store_true",
                    help="fit nothing: the distance without and with MEAN_SHADES, over --regions")
    a = ap.parse_args(argv)
    if a.ours < 8 or a.pairs < 0 or a.mids < 0 or a.pairs + a.mids == 0 or a.max_faces < 0:
        raise SystemExit(f"--ours must be >= 8, --pairs and --mids >= 0 and not both 0, --max-faces >= 0; "
                         f"got {a.ours}, {a.pairs}, {a.mids}, {a.max_faces}")
    regions = tuple(r.strip() for r in a.regions.split(",") if r.strip())
    bad = [r for r in regions if r not in FIT_REGIONS]
    if bad or not regions or len(set(regions)) != len(regions):
        raise SystemExit(f"--regions must be distinct names of {', '.join(FIT_REGIONS)}; got {a.regions!r}")
    if a.evaluate and a.on_top:
        raise SystemExit("--evaluate measures renders without and with MEAN_SHADES and fits nothing; "
                         "--on-top fits shades to add to it: give one of them")
    exclude = read_people(a.exclude)
    import torch

    from morphable import MorphableSource
    from morphable.detail import inner_face_mask
    from morphable.mean_shades import fit_shades, rest_to_template, template_rest_grid
    t0 = time.time()
    predictor, real, names, lms, keep = frontal_real_faces(a.real, exclude, a.max_faces, a.seed)
    if len(keep) < 8:
        raise SystemExit(f"{len(keep)} frontal faces found in {len(real)} images under {a.real}: need 8")
    ours, our_lms, model_name = frontal_renders(predictor, a.model, ids=a.ours, seed=a.seed,
                                                overrides=None if a.on_top else {"identity": {"mean_shades": 0.0}})
    if len(ours) < 8:
        raise SystemExit(f"only {len(ours)} of {a.ours} renders are frontal to dlib: raise --ours")
    layout = our_lms.mean(0)
    real_mean = mean_face(real[keep], np.stack([lms[i] for i in keep]), layout)
    mask = inner_face_mask(real_mean.shape[-1])

    def offset(our_mean):
        return torch.log((real_mean / our_mean.clamp_min(1e-3)).clamp(0.5, 2.0)) * mask

    target = offset(mean_face(ours, our_lms, layout))
    if a.evaluate:
        shaded, shaded_lms, _ = frontal_renders(predictor, a.model, ids=a.ours, seed=a.seed)
        report = {"model": model_name, "real": str(a.real), "real_faces": len(keep), "excluded_people": len(exclude),
                  "renders": [len(ours), len(shaded)],
                  "regions": list(regions), "without": offset_rms(target, regions),
                  "with": offset_rms(offset(mean_face(shaded, shaded_lms, layout)), regions),
                  "seconds": round(time.time() - t0, 1)}
        print(json.dumps(report))
        return 0
    src = MorphableSource(preset="frontal", size=112, model=a.model)
    grid = template_rest_grid(rest_to_template(src.model, 112), 112)
    shades, explained = fit_shades(target, _region_weight(112, regions), grid, pairs=a.pairs, mids=a.mids)
    out = {"model": model_name, "real": str(a.real), "real_faces": len(keep), "regions": list(regions),
           "on_top": bool(a.on_top),
           "people": len({names[i] for i in keep}), "excluded_people": len(exclude), "renders": len(ours),
           "explained": round(explained, 3), "shades": [asdict(s) for s in shades], "seconds": round(time.time() - t0, 1)}
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.out.with_name(a.out.name + ".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        os.replace(tmp, a.out)
    print(json.dumps(out))
    print("MEAN_SHADES = MEAN_SHADES + (" if a.on_top else "MEAN_SHADES = (")
    for s in shades:
        print(f"    Shade(centre={s.centre}, sd={s.sd}, gain={s.gain}),")
    print(")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
