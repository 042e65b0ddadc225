"""How sharp our faces are against real photographs: the ``sharpness`` attribute of
``engine.attributes`` (log10 variance of the Laplacian of L*) over a fixed inner-face box of
ArcFace-aligned 112 px images, for real faces (the first image of ``--real-n`` people) and a morphable
preset rendered in memory, with the rendered images split by each degradation (on / off). No
detector, no landmarks: a minute.

    python benchmarks/sharpness_range.py --real ../shared/data/lfw-dev/images [--preset wild] [--ids 100]
    python benchmarks/sharpness_range.py --real DIR -o degradation.noise.lo=0.005 degradation.noise.hi=0.015
    python benchmarks/sharpness_range.py --real DIR --preset frontal --bands

Prints JSON lines: the real percentiles, ours (|yaw| <= ``--max-yaw``), the fractions of ours below the
real 1st and above the real 99th percentile, and ours per degradation. ``--bands`` adds where the
contrast sits, region by region: for real faces and ours, the median sd of the luminance finer than 1
px, between 1 and 3 px and between 3 and 8 px (:func:`band_contrast`) in each feature's box.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The inner face of an ArcFace-aligned 112 px image (rows, columns): brows to chin, cheek to cheek.
INNER_BOX = (slice(30, 100), slice(26, 86))
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
#: Luminance bands of :func:`band_contrast`: differences of gaussian blurs of these sd (px at 112; 0 is
#: the image itself).
BANDS = ((0.0, 1.0), (1.0, 3.0), (3.0, 8.0))
#: Boxes (rows r0:r1, columns c0:c1 of the 112 px template) of :func:`band_contrast`: the features'
#: (:data:`morphable.detail.FEATURE_BOXES`) and the skin of the cheek beside the nose.
CHEEK_BOX = (62, 90, 22, 40)
#: Degradation factors and when each is on (its logged value).
DEGRADATIONS = {"noise": lambda v: v > 0, "blur": lambda v: v > 0, "jpeg": lambda v: v > 0, "lowres": lambda v: v < 1}


def face_sharpness(images: np.ndarray) -> np.ndarray:
    """(N,) sharpness of (N, 112, 112, 3) uint8 aligned faces over :data:`INNER_BOX`."""
    from engine.attributes import _srgb_to_lab, laplacian_sharpness

    if images.ndim != 4 or images.shape[1:] != (112, 112, 3):
        raise ValueError(f"expected (N, 112, 112, 3) aligned faces, got {images.shape}")
    mask = np.zeros((112, 112), bool)
    mask[INNER_BOX] = True
    return np.array([laplacian_sharpness(_srgb_to_lab(x)[..., 0], mask) for x in images])


def band_contrast(images: np.ndarray) -> dict[str, list[float]]:
    """Where (N, 112, 112, 3) uint8 aligned faces carry their contrast: per box (the features' and
    :data:`CHEEK_BOX`), the median over the faces of the sd of each luminance band of :data:`BANDS`
    (Rec. 601 luma of the values in [0, 1]), finest first."""
    from scipy.ndimage import gaussian_filter

    from morphable.detail import FEATURE_BOXES

    if images.ndim != 4 or images.shape[1:] != (112, 112, 3):
        raise ValueError(f"expected (N, 112, 112, 3) aligned faces, got {images.shape}")
    lum = (images.astype(np.float64) / 255) @ np.array([0.299, 0.587, 0.114])
    blur = {s: lum if s == 0 else gaussian_filter(lum, (0, s, s)) for s in {s for band in BANDS for s in band}}
    bands = [blur[a] - blur[b] for a, b in BANDS]
    boxes = {**FEATURE_BOXES, "cheek": CHEEK_BOX}
    return {name: [round(float(np.median(b[:, r0:r1, c0:c1].std((1, 2)))), 4) for b in bands]
            for name, (r0, r1, c0, c1) in boxes.items()}


def percentiles(v: np.ndarray) -> dict[str, float]:
    return {f"p{q}": round(float(x), 3) for q, x in zip(PERCENTILES, np.percentile(v, PERCENTILES))}


def compare(real: np.ndarray, ours: np.ndarray, factors: dict[str, np.ndarray] | None = None) -> list[dict]:
    """JSON-able lines: real and our percentiles, our share outside the real 1st-99th percentiles,
    and our percentiles with each degradation of ``factors`` (name -> (N,)) on and off."""
    lo, hi = np.percentile(real, [1, 99])
    out = [{"set": "real", "n": len(real), **percentiles(real)},
           {"set": "ours", "n": len(ours), **percentiles(ours), "below_real_p1": round(float(np.mean(ours < lo)), 3),
            "above_real_p99": round(float(np.mean(ours > hi)), 3)}]
    for name, on_of in DEGRADATIONS.items():
        if factors is None or name not in factors:
            continue
        on = on_of(np.asarray(factors[name]))
        for state, m in (("on", on), ("off", ~on)):
            if m.any():
                out.append({"set": f"ours, {name} {state}", "n": int(m.sum()), **percentiles(ours[m])})
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    from benchmarks.judge_degradations import real_images
    from benchmarks.judge_quick import render_batches, render_parser
    from engine.formats import to_uint8_hwc

    ap = render_parser(__doc__, "wild", 8)
    ap.add_argument("--real", type=Path, required=True, help="real faces DIR/<person>/<image>, ArcFace-aligned 112 px")
    ap.add_argument("--real-n", type=int, default=2000, help="real faces: the first image of this many people")
    ap.add_argument("--max-yaw", type=float, default=30.0, help="only our faces with |yaw| <= this (degrees)")
    ap.add_argument("--bands", action="store_true", help="also the contrast per luminance band and feature box")
    a = ap.parse_args(argv)
    real_x = real_images(a.real, a.real_n)  # (n, 3, 112, 112) in [0, 1]
    real_u8 = to_uint8_hwc(real_x)
    real = face_sharpness(real_u8)
    _, batches, _ = render_batches(a)
    images, factors = [], {}
    for b in batches:
        images.append(to_uint8_hwc(b.images))
        for k, v in b.factors.items():
            factors.setdefault(k, []).append(v.cpu())
    fac = {k: torch.cat(v).numpy() for k, v in factors.items()}
    keep = np.abs(fac["yaw"]) <= a.max_yaw
    ours_x = np.concatenate(images)[keep]
    ours = face_sharpness(ours_x)
    for line in compare(real, ours, {k: v[keep] for k, v in fac.items() if v.ndim == 1}):
        print(json.dumps(line), flush=True)
    if a.bands:
        for name, x in (("real", real_u8), ("ours", ours_x)):
            print(json.dumps({"set": f"{name}, bands (< 1, 1-3, 3-8 px)", "n": len(x), **band_contrast(x)}), flush=True)


if __name__ == "__main__":
    main()
