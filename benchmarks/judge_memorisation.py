"""Do our identities copy the real people a feature-detail model was fitted on?

A detail model (``identity.detail_model``, :mod:`morphable.detail`) is fitted to real faces. Its samples
blend principal directions, so no identity should carry a real person's face; this measures it with
the real-face recogniser. For each of ``--ids`` identities (``--per-id`` images each, in memory) the
nearest of the real faces (``--real``, the fitted people: ``--exclude`` leaves out those the fit left
out) by dlib descriptor distance, with and without the detail model; as a reference, the same for
real people who were not fitted (``--exclude``'s people, one image each). Prints one JSON line per
set: the mean and 5th percentile of each identity's nearest real distance, and the share of
identities with a real face nearer than dlib's 0.6 "same person" threshold (real strangers: about 1%
of pairs, but a nearest neighbour among thousands is found under 0.6 far more often).

    python benchmarks/judge_memorisation.py --real ../shared/data/lfw-dev/images --exclude folds45.txt \\
        -o identity.detail_model=runs/detail/lfw_dev_folds123.npz

Needs the judge extra (``pip install -e ".[judge]"``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.judge_quick import render_batches, render_parser  # noqa: E402


def nearest(desc: np.ndarray, labels: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(L,) per label of ``desc`` (N, D) with ``labels`` (N,): the smallest distance from any of its
    descriptors to any of ``real`` (M, D)."""
    from engine import judge as J
    d = J.pairwise_distances(desc, real).min(1)
    return np.array([d[labels == u].min() for u in np.unique(labels)])


def summary(name: str, near: np.ndarray) -> dict:
    """One set's line: its identities' nearest real distances summarised (only the count when none)."""
    if not len(near):
        return {"set": name, "identities": 0}
    return {"set": name, "identities": int(len(near)), "nearest_real_mean": round(float(near.mean()), 4),
            "nearest_real_p5": round(float(np.percentile(near, 5)), 4),
            "under_0.6": round(float((near < 0.6).mean()), 4), "under_0.5": round(float((near < 0.5).mean()), 4)}


def main(argv: list[str] | None = None) -> None:
    from engine import judge as J
    from engine.detail_fit import read_people, real_faces
    ap = render_parser(__doc__, "frontal", 2)
    ap.add_argument("--real", type=Path, required=True, help="the real faces the detail model was fitted on")
    ap.add_argument("--exclude", type=Path, default=None,
                    help="people the fit left out (names, one a line): the reference set, not compared against")
    a = ap.parse_args(argv)
    J.require_dlib()
    models = J.find_models()
    held = read_people(a.exclude)
    real, _ = real_faces(a.real, exclude=held)
    dr = J.describe_arrays([real[s:s + 256] for s in range(0, len(real), 256)], models, workers=a.workers)
    ref = dr.descriptors[dr.detected]
    print(json.dumps({"real_faces": int(len(real)), "detected": int(dr.detected.sum())}), flush=True)
    if held:
        others, names = real_faces(a.real, exclude={p.name for p in a.real.iterdir() if p.is_dir()} - held)
        first = np.unique(np.array(names), return_index=True)[1]
        dh = J.describe_arrays([others[first]], models, workers=a.workers)
        print(json.dumps(summary("real people not fitted", nearest(dh.descriptors[dh.detected],
                                                                   np.arange(len(first))[dh.detected], ref))), flush=True)
    over = list(a.override)
    plain = [x for x in over if not x.startswith("identity.detail_model")]
    sets = [("ours, no detail model", plain)] + ([("ours, with the detail model", over)] if plain != over else [])
    for name, o in sets:
        a.override = o
        rows, batches, _ = render_batches(a)
        d = J.describe_arrays((b.images for b in batches), models, workers=a.workers)
        lab = rows.numpy()
        print(json.dumps(summary(name, nearest(d.descriptors[d.detected], lab[d.detected], ref))), flush=True)


if __name__ == "__main__":
    main()
