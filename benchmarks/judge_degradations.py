"""Do a preset's camera degradations and occluders cost real faces' detection as much as ours?

Renders the morphable source in memory (``--preset wild`` by default), then applies each rendered
image's own photometric degradations (blur, low resolution, colour jitter, noise, JPEG: the
``morphable.degrade`` factors the render logged) to a real face (one image per person, ArcFace-aligned
112 px, drawn by ``--seed``), and, in a second copy, its occluders as well (glasses placed on the
ArcFace template's eyes, patches; drawn before the degradations, as the renderer does), and runs the
judge's dlib HOG detector on all of them. Prints one JSON line: detection (and the mean HOG detection
score, ``*_score``) of the real faces clean, degraded, and occluded and degraded (``real_wild``: all
of them; ``real_wild_paired``: those paired with our faces at ``|yaw| <= --max-yaw``, and the same by
occluder, ``*_glasses`` / ``*_patch``), and of ours at ``|yaw| <= --max-yaw``, overall, by occluder
and without an occluder (glasses, sunglasses or a patch);
``ours_clean``: the same renders with the degradation and occluder probabilities at 0 (every other
factor keeps its value), so a detection target can be read against what the same conditions cost
real people, and the score lost to them compared with what they cost real faces.

    python benchmarks/judge_degradations.py --real ../shared/data/lfw-dev/images

Needs the judge extra (``pip install -e ".[judge]"``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The logged factors that :func:`morphable.degrade.apply_degradations` reads.
DEGRADATION_KEYS = ("blur", "lowres", "brightness", "contrast", "saturation", "hue", "gray", "noise", "jpeg")
#: The logged factors that :func:`morphable.occluders.draw_glasses` and ``draw_patches`` read.
OCCLUDER_KEYS = ("glasses", "lens_dark", "frame_r", "frame_g", "frame_b", "frame_width", "lens_size",
                 "patch", "patch_x", "patch_y", "patch_w", "patch_h", "patch_r", "patch_g", "patch_b")
#: Overrides that leave a render without degradations and occluders; every other factor keeps its value
#: (the source draws each factor whether it is used or not).
CLEAN = ("degradation.blur_prob=0", "degradation.noise_prob=0", "degradation.jpeg_prob=0", "degradation.lowres_prob=0",
         "degradation.jitter_prob=0", "degradation.gray_prob=0", "occluders.glasses_prob=0", "occluders.patch_prob=0")


def real_images(root: Path, n: int, seed: int = 0):
    """(n, 3, 112, 112) float tensor in [0, 1]: the first image of ``n`` people of ``root`` drawn by
    ``seed`` (people repeat when the folder has fewer than ``n``)."""
    import torch
    from PIL import Image
    people = sorted(p for p in root.iterdir() if p.is_dir() and any(p.iterdir()))
    if not people:
        raise SystemExit(f"{root} has no person folders")
    pick = np.random.default_rng(seed).choice(len(people), n, replace=len(people) < n)
    arr = np.stack([np.asarray(Image.open(sorted(people[i].iterdir())[0]).convert("RGB").resize((112, 112)))
                    for i in pick])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def main(argv: list[str] | None = None) -> None:
    import torch

    from benchmarks.judge_quick import render_batches, render_parser
    from common.align import template
    from engine import judge as J
    from morphable.degrade import apply_degradations
    from morphable.occluders import draw_glasses, draw_patches
    ap = render_parser(__doc__, "wild", 8)
    ap.add_argument("--real", type=Path, required=True, help="real faces DIR/<person>/<image>, ArcFace-aligned 112 px")
    ap.add_argument("--max-yaw", type=float, default=30.0, help="our faces counted at |yaw| <= this (degrees)")
    a = ap.parse_args(argv)
    J.require_dlib()
    models = J.find_models()
    images, factors = [], []
    for b in render_batches(a)[1]:
        images.append(b.images)
        factors.append({k: v.detach().cpu() for k, v in b.factors.items()})
    clean_args = argparse.Namespace(**{**vars(a), "override": [*a.override, *CLEAN]})
    clean_b = list(render_batches(clean_args)[1])
    clean = torch.cat([b.images for b in clean_b])
    if not torch.equal(torch.cat([b.factors["yaw"].cpu() for b in clean_b]), torch.cat([x["yaw"] for x in factors])):
        raise SystemExit("the clean render drew other poses: the degradation overrides moved other factors")
    f = {k: torch.cat([x[k] for x in factors]) for k in (*DEGRADATION_KEYS, *OCCLUDER_KEYS, "yaw")}
    n = len(f["yaw"])
    real = real_images(a.real, n, a.seed)
    noise = torch.randn(n, 3, 112, 112, generator=torch.Generator().manual_seed(a.seed))

    def degrade(x, s):
        return apply_degradations(x, {k: f[k][s:s + 64].to(x) for k in DEGRADATION_KEYS}, noise[s:s + 64])

    def occlude(x, s):  # the renderer's order: glasses, patches, then the degradations
        p = {k: f[k][s:s + 64].to(x) for k in OCCLUDER_KEYS}
        return draw_patches(draw_glasses(x, template(112).to(x).expand(len(x), 5, 2), p), p)

    degraded = torch.cat([degrade(real[s:s + 64], s) for s in range(0, n, 64)])
    occluded = torch.cat([degrade(occlude(real[s:s + 64], s), s) for s in range(0, n, 64)])

    def describe(x):
        return J.describe_arrays((x[s:s + 64] for s in range(0, len(x), 64)), models, workers=a.workers)

    ours_d, clean_d, real_d = describe(torch.cat(images)), describe(clean), describe(real)
    degraded_d, occluded_d = describe(degraded), describe(occluded)
    ours, wild = ours_d.detected, occluded_d.detected
    keep = (f["yaw"].abs() <= a.max_yaw).numpy()
    glasses, patch = (f["glasses"] > 0).numpy(), (f["patch"] > 0).numpy()
    clear = keep & ~glasses & ~patch
    on = ((f["blur"] > 0) | (f["lowres"] < 1) | (f["noise"] > 0) | (f["jpeg"] > 0)).numpy()
    r = lambda v: round(float(v), 4)  # noqa: E731
    share = lambda det, m: r(det[m].mean()) if m.any() else None  # noqa: E731
    print(json.dumps({
        "preset": a.preset, "ids": a.ids, "per_id": a.per_id, "overrides": a.override, "images": n,
        "degraded_share": r(on.mean()), "real_clean": r(real_d.detected.mean()), "real_clean_score": r(real_d.scores.mean()),
        "real_degraded": r(degraded_d.detected.mean()), "real_degraded_score": r(degraded_d.scores.mean()),
        "real_wild": r(wild.mean()), "real_wild_score": r(occluded_d.scores.mean()),
        "real_wild_paired": r(wild[keep].mean()) if keep.any() else None,
        "real_wild_glasses": share(wild, keep & glasses), "real_wild_patch": share(wild, keep & patch),
        "max_yaw": a.max_yaw, "ours": r(ours[keep].mean()), "ours_score": r(ours_d.scores[keep].mean()) if keep.any() else None,
        "ours_images": int(keep.sum()), "ours_no_occluder": r(ours[clear].mean()) if clear.any() else None,
        "ours_glasses": share(ours, keep & glasses), "ours_patch": share(ours, keep & patch),
        "glasses_images": int((keep & glasses).sum()), "patch_images": int((keep & patch).sum()),
        "ours_no_occluder_images": int(clear.sum()),
        "ours_clean": r(clean_d.detected[keep].mean()) if keep.any() else None,
        "ours_clean_score": r(clean_d.scores[keep].mean()) if keep.any() else None}))


if __name__ == "__main__":
    main()
