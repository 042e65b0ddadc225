"""Where a real-face recogniser finds identity: the face's 2D landmark geometry, or its appearance?

Each face's 68 dlib landmarks are found (frontal faces only: the nose tip within 0.12 eye distances of
the eyes' midline), then a piecewise-affine warp (Delaunay triangles of the landmarks and 8 border
points) separates the two:

* **appearance**: every face warped to one geometry, the mean landmarks of the real faces. What stays
  different between people is shading, albedo and the features' inner detail.
* **geometry**: a few fixed donor faces (real and ours), each warped to every face's landmarks. What
  differs within a donor is the 2D layout of the features alone.

For each, the mean dlib descriptor distance between different people (detected faces), real people
(``--real``) against the morphable source's identities rendered in memory (``--preset``, ``-o``), one
112 px ArcFace-aligned image each. ``--blur`` also judges the appearance sets after a gaussian blur
(sigma in px), to see how much of it is coarse layout.

Our donors warped to the real layouts (``ours_donor_real_geometry``) measure how well our faces serve as
a canvas for a given change of geometry; real donors score higher. ``--paste REGION`` pastes a real
donor's region (warped to our donor's landmarks, soft 3 px box of the 112 px template) into each of our
donors first, to find which region makes the difference (BENCHMARKS.md, "Realism, session 18");
``--paste-band detail`` pastes only the real region's fine detail (the image minus its gaussian blur at
``--band-sigma`` px) onto our region's blur, ``coarse`` the converse ("Realism, session 19").

    python benchmarks/judge_warp.py --real ../shared/data/lfw-dev/images --ids 150
    python benchmarks/judge_warp.py --real ../shared/data/lfw-dev/images --ids 150 --blur 3
    python benchmarks/judge_warp.py --real ../shared/data/lfw-dev/images --ids 40 --donors 24 --paste brows_eyes
    python benchmarks/judge_warp.py --real ../shared/data/lfw-dev/images --ids 40 --donors 24 --paste features --paste-band detail

Needs the judge extra (``pip install -e ".[judge]"``). Prints one JSON line per set, then a summary.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.detail_fit import is_frontal, landmarks  # noqa: E402
from morphable.detail import piecewise_affine  # noqa: E402

#: Regions for ``--paste`` (rows y0:y1, columns x0:x1 of the 112 px template): judge_regions.py's, and
#: the inner face; ``outer`` is everything outside the inner face, ``features`` the union of the brows
#: and eyes, the nose and the mouth (the skin between them left out).
PASTE_REGIONS = {"brows_eyes": (28, 62, 20, 94), "eyes": (38, 62, 22, 92), "nose": (55, 82, 40, 72),
                 "mouth": (78, 100, 32, 82), "inner": (26, 104, 22, 90), "outer": (26, 104, 22, 90),
                 "features": None}
#: What of the real region ``--paste-band`` pastes: all of it, its fine detail (the image minus its
#: gaussian blur) on our region's blur, or its blur under our region's fine detail.
PASTE_BANDS = ("all", "detail", "coarse")


def _region_mask(region: str) -> np.ndarray:
    """(112, 112, 1) soft mask of ``region`` (:data:`PASTE_REGIONS`): 3 px edges (4 px around the inner
    face for ``outer``)."""
    from benchmarks.judge_regions import soft_box
    if region == "outer":
        return 1 - soft_box(*PASTE_REGIONS["inner"], edge=4.0)
    if region == "features":
        keep = np.ones((112, 112, 1), np.float32)
        for r in ("brows_eyes", "nose", "mouth"):
            keep = keep * (1 - soft_box(*PASTE_REGIONS[r], edge=3.0))
        return 1 - keep
    return soft_box(*PASTE_REGIONS[region], edge=3.0)


def paste_region(ours, ours_lm: np.ndarray, real, real_lm: np.ndarray, region: str, band: str = "all",
                 sigma: float = 3.0):
    """``ours`` (3, 112, 112) with ``region`` (:data:`PASTE_REGIONS`) replaced by that of ``real``
    (3, 112, 112), warped to ``ours_lm`` (68, 2) first so that the features meet; soft 3 px edge (4 px
    around the inner face for ``outer``). ``band`` (:data:`PASTE_BANDS`) ``detail`` pastes the real
    region's fine detail (the image minus its gaussian blur of ``sigma`` px) onto the blur of ours,
    ``coarse`` the real blur under our fine detail. (3, 112, 112)."""
    import torch
    if region not in PASTE_REGIONS:
        raise ValueError(f"region {region!r}: expected one of {sorted(PASTE_REGIONS)}")
    if band not in PASTE_BANDS:
        raise ValueError(f"band {band!r}: expected one of {list(PASTE_BANDS)}")
    m = torch.from_numpy(_region_mask(region)).permute(2, 0, 1).to(ours)
    y = piecewise_affine(real, real_lm, ours_lm)
    if band != "all":
        from kornia.filters import gaussian_blur2d
        k = 2 * int(4 * sigma) + 1
        blur = lambda z: gaussian_blur2d(z[None], (k, k), (sigma, sigma), border_type="replicate")[0]  # noqa: E731
        y = blur(ours) + (y - blur(y)) if band == "detail" else blur(y) + (ours - blur(ours))
        y = y.clamp(0, 1)
    return ours * (1 - m) + y * m


def impostor(images, models, workers: int) -> dict:
    """Detection rate and mean / FAR@0.6 of the distances between the detected faces of ``images``
    (N, 3, H, W) float tensor in [0, 1], each image a different person."""
    from engine import judge as J
    d = J.describe_arrays([images[s:s + 64] for s in range(0, len(images), 64)], models, workers=workers)
    det = d.detected
    imp = J.genuine_impostor_distances(d.descriptors[det], np.arange(len(images))[det], seed=0)["impostor"]
    return {"detection": round(float(det.mean()), 4), "impostor": round(float(imp.mean()), 4) if len(imp) else None,
            "far_0.6": round(J.false_accept_rate(imp), 4) if len(imp) else None}


def donor_impostor(images, donors: int, models, workers: int) -> tuple[float, np.ndarray]:
    """Detection rate of ``images`` (donors * L, 3, H, W), donor-major (each donor warped to the same L
    layouts), and per donor the mean distance between its detected images (NaN under 2). (rate, (donors,))."""
    from engine import judge as J
    d = J.describe_arrays([images[s:s + 64] for s in range(0, len(images), 64)], models, workers=workers)
    per = len(images) // donors
    out = np.full(donors, np.nan)
    for j in range(donors):
        x = d.descriptors[j * per:(j + 1) * per][d.detected[j * per:(j + 1) * per]]
        if len(x) > 1:
            out[j] = J.pairwise_distances(x, x)[np.triu_indices(len(x), 1)].mean()
    return float(d.detected.mean()), out


def _frontal_faces(images: np.ndarray, predictor: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    lms = landmarks(images, predictor)
    keep = [i for i, lm in enumerate(lms) if is_frontal(lm)][:n]
    return images[keep], np.stack([lms[i] for i in keep]) if keep else np.zeros((0, 68, 2))


def main(argv: list[str] | None = None) -> None:
    import torch

    from engine import judge as J
    from engine.attributes import find_shape_predictor
    from engine.formats import to_uint8_hwc
    from benchmarks.judge_quick import render_batches, render_parser
    ap = render_parser(__doc__, "frontal", 1)
    ap.add_argument("--real", type=Path, required=True, help="real aligned 112 px faces, a folder per person")
    ap.add_argument("--donors", type=int, default=4, help="fixed donors per kind for the geometry sets")
    ap.add_argument("--blur", type=float, default=0.0, help="also judge the appearance sets blurred (sigma, px)")
    ap.add_argument("--paste", default=None, choices=sorted(PASTE_REGIONS),
                    help="paste this region of a real donor into each of our geometry donors")
    ap.add_argument("--paste-band", default="all", choices=PASTE_BANDS,
                    help="what of the real region to paste: all, its fine detail, or its coarse part")
    ap.add_argument("--band-sigma", type=float, default=3.0, help="gaussian sigma (px) that splits detail from coarse")
    a = ap.parse_args(argv)
    if a.ids < 2 or a.donors < 1:
        raise SystemExit(f"--ids must be >= 2 and --donors >= 1, got {a.ids} and {a.donors}")
    if a.band_sigma <= 0:
        raise SystemExit(f"--band-sigma must be > 0, got {a.band_sigma}")
    J.require_dlib()
    models, predictor = J.find_models(), str(find_shape_predictor().shape_predictor)
    from PIL import Image
    people = sorted(p for p in a.real.iterdir() if p.is_dir()) if a.real.is_dir() else []
    if not people:
        raise SystemExit(f"--real {a.real}: no person folders")
    want = 3 * (a.ids + a.donors)  # candidates: frontal ones are kept
    pick = np.random.default_rng(a.seed).permutation(len(people))[:want]
    real = np.stack([np.asarray(Image.open(sorted(f for f in people[i].iterdir() if f.is_file())[0]).convert("RGB")
                                .resize((112, 112))) for i in pick])
    a.ids, n = want, a.ids  # render as many candidates as real ones, one image each
    a.per_id = 1
    _, batches, _ = render_batches(a)
    ours = np.concatenate([to_uint8_hwc(b.images) for b in batches])
    (ri, rl), (oi, ol) = _frontal_faces(real, predictor, n + a.donors), _frontal_faces(ours, predictor, n + a.donors)
    m = min(len(ri), len(oi)) - a.donors
    if m < 2:
        raise SystemExit(f"too few frontal faces found ({len(ri)} real, {len(oi)} ours) for --donors {a.donors}")
    to_t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    rt, ot = to_t(ri), to_t(oi)
    mean = rl[:m].mean(0)
    res: dict[str, dict] = {}

    def report(name: str, images) -> None:
        res[name] = impostor(images, models, a.workers)
        print(json.dumps({"set": name, "faces": m, **res[name]}), flush=True)
    report("real", rt[:m])
    report("ours", ot[:m])
    app = {k: torch.stack([piecewise_affine(x[i], lm[i], mean) for i in range(m)]) for k, x, lm in (("real", rt, rl), ("ours", ot, ol))}
    for k in ("real", "ours"):
        report(f"{k}_appearance", app[k])
    if a.blur > 0:
        from kornia.filters import gaussian_blur2d
        r = int(3 * a.blur + 0.5)
        for k in ("real", "ours"):
            report(f"{k}_appearance_blur", gaussian_blur2d(app[k], (2 * r + 1, 2 * r + 1), (a.blur, a.blur)))
    od = ot.clone()
    if a.paste:  # each of our donors gets the region of the real donor of the same rank
        for j in range(a.donors):
            od[m + j] = paste_region(ot[m + j], ol[m + j], rt[m + j], rl[m + j], a.paste, a.paste_band, a.band_sigma)
    for dk, dx, dl in (("real", rt, rl), ("ours", od, ol)):
        for gk, gl in (("real", rl), ("ours", ol)):
            warped = torch.stack([piecewise_affine(dx[m + j], dl[m + j], gl[i]) for j in range(a.donors) for i in range(m)])
            det, imp = donor_impostor(warped, a.donors, models, a.workers)
            res[f"{dk}_donor_{gk}_geometry"] = {"detection": round(float(det), 4),
                                                "impostor": round(float(np.nanmean(imp)), 4) if np.isfinite(imp).any() else None}
            print(json.dumps({"set": f"{dk}_donor_{gk}_geometry", "faces": m, "donors": a.donors,
                              **res[f"{dk}_donor_{gk}_geometry"]}), flush=True)
    print(json.dumps({"summary": {k: v["impostor"] for k, v in res.items()}, "faces": m, "preset": a.preset,
                      "overrides": a.override, "paste": a.paste, "paste_band": a.paste_band}))


if __name__ == "__main__":
    main()
