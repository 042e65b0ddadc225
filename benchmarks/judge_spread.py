"""Along which of a real-face recogniser's axes do our people vary too little?

dlib descriptors of real faces (one image per person) and of the morphable source's identities (one
image each, rendered in memory) are projected on the real descriptors' principal directions. For
each direction: its share of the real faces' total variance, our variance over the real one, and
the shortfall ``(real - ours) / real total``. The impostor distance follows the total ratio: with
one image per person, the mean squared distance between two people is twice the total variance.
Prints one JSON line (the total ratio, the shortfall in the first 10 / ``--show`` directions, and
each of the first ``--show`` directions).

    python benchmarks/judge_spread.py --real ../shared/data/lfw-dev/images --ids 400
    python benchmarks/judge_spread.py --real ../shared/data/lfw-dev/images --ids 400 -o identity.ancestry_contrast=1

Needs the judge extra (``pip install -e ".[judge]"``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def spread_by_direction(real: np.ndarray, ours: np.ndarray) -> dict:
    """Variance of descriptors ``ours`` (M, D) against ``real`` (N, D) along the real ones' principal
    directions (each set about its own mean). Returns ``total_ratio`` (ours' total variance over
    real's) and, per direction in order of real variance, ``share`` (of the real total), ``ratio``
    (ours over real) and ``shortfall`` (``(real - ours) / real total``; negative where ours vary more)."""
    real, ours = np.asarray(real, np.float64), np.asarray(ours, np.float64)
    if real.ndim != 2 or ours.ndim != 2 or real.shape[1] != ours.shape[1]:
        raise ValueError(f"descriptors must be (N, D) and (M, D) with one D, got {real.shape} and {ours.shape}")
    if len(real) < 2 or len(ours) < 2:
        raise ValueError(f"need at least 2 descriptors on each side, got {len(real)} real and {len(ours)} ours")
    _, _, vt = np.linalg.svd(real - real.mean(0), full_matrices=False)
    vr = ((real - real.mean(0)) @ vt.T).var(0)
    vo = ((ours - ours.mean(0)) @ vt.T).var(0)
    total = float(((real - real.mean(0)) ** 2).sum(1).mean())
    return {"total_ratio": float(((ours - ours.mean(0)) ** 2).sum(1).mean()) / total,
            "share": vr / total, "ratio": vo / np.maximum(vr, 1e-12), "shortfall": (vr - vo) / total}


def main(argv: list[str] | None = None) -> None:
    from benchmarks.judge_gender import real_faces
    from benchmarks.judge_quick import render_batches, render_parser
    from engine import judge as J
    ap = render_parser(__doc__, "frontal", 1)
    ap.add_argument("--real", type=Path, required=True, help="real faces DIR/<person>/<image>, ArcFace-aligned 112 px")
    ap.add_argument("--real-people", type=int, default=900)
    ap.add_argument("--show", type=int, default=12, help="directions to print")
    a = ap.parse_args(argv)
    J.require_dlib()
    models = J.find_models()
    imgs, _ = real_faces(a.real, a.real_people)
    dr = J.describe_arrays([imgs[i:i + 64] for i in range(0, len(imgs), 64)], models, workers=a.workers)
    rows, renders, _ = render_batches(a)
    first = np.r_[True, rows.numpy()[1:] != rows.numpy()[:-1]]  # one image per identity
    ds = J.describe_arrays((b.images for b in renders), models, workers=a.workers)
    s = spread_by_direction(dr.descriptors[dr.detected], ds.descriptors[ds.detected & first])
    k = min(a.show, len(s["share"]))
    r = lambda v: round(float(v), 4)  # noqa: E731
    print(json.dumps({
        "preset": a.preset, "ids": a.ids, "overrides": a.override, "real_people": int(dr.detected.sum()),
        "ours": int((ds.detected & first).sum()), "total_ratio": r(s["total_ratio"]),
        "shortfall_first10": r(s["shortfall"][:10].sum()), f"shortfall_first{k}": r(s["shortfall"][:k].sum()),
        "directions": [{"k": i, "share": r(s["share"][i]), "ratio": r(s["ratio"][i]), "shortfall": r(s["shortfall"][i])}
                       for i in range(k)]}))


if __name__ == "__main__":
    main()
