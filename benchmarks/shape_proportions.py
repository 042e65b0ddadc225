"""Facial proportions of sampled morphable identities (issue 13): how much the vertical proportions
of the neutral face vary, in units of the eye distance, from the model's 5 ArcFace landmarks.

    python benchmarks/shape_proportions.py [--ids 2000] [--preset frontal] [--show 68 54]

Ratios (neutral shape, model space, vertical distances over the distance between the eye centres):
``nose`` eye line to nose tip, ``mouth`` eye line to mouth centre, ``mouth_width`` mouth corners.
Prints one JSON line per ratio (mean, sd, coefficient of variation, 1st/99th percentiles, the
fraction beyond 2.5 sd) and the z-scores of the ``--show`` identities.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    import torch

    from common.cli import add_override
    from common.config import apply_overrides
    from morphable import MorphableSource
    from morphable.model import face_proportions
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", type=int, default=2000)
    ap.add_argument("--preset", default="frontal")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--show", type=int, nargs="*", default=[], help="identities whose z-scores to print")
    add_override(ap, help="morphable source override")
    a = ap.parse_args(argv)
    src = MorphableSource(preset=a.preset, size=112, overrides=apply_overrides({}, a.override))
    ids = src.sample_identities(a.ids, seed=a.seed)
    for name, r in face_proportions(src.model, ids.params["shape"]).items():
        r = r.double()
        mu, sd = float(r.mean()), float(r.std())
        zs = (r - mu) / sd
        q = torch.quantile(r, torch.tensor([0.01, 0.99], dtype=torch.float64))
        print(json.dumps({"ratio": name, "mean": round(mu, 4), "sd": round(sd, 4), "cv": round(sd / mu, 4),
                          "p01": round(float(q[0]), 4), "p99": round(float(q[1]), 4),
                          "beyond_2.5sd": round(float((zs.abs() > 2.5).double().mean()), 4),
                          "show_z": {str(i): round(float(zs[i]), 2) for i in a.show if i < len(r)}}))


if __name__ == "__main__":
    main()
