"""Which rendered factors make a real-face detector miss our faces: render a morphable preset in
memory, run dlib's HOG detector (the judge's), and print the detection rate per value (or quartile)
of every per-image factor, on faces within a yaw range.

    python benchmarks/judge_factors.py [--preset wild] [--ids 100] [--per-id 8] [--max-yaw 30]
    python benchmarks/judge_factors.py -o variation.occluder_prob=0
    python benchmarks/judge_factors.py --min-yaw 30 --max-yaw 60   # one band of turned faces

Prints one JSON line per factor, largest spread of detection rate first, then an overall line. Needs
the judge extra (``pip install -e ".[judge]"``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def factor_rates(factors: dict, detected, max_bins: int = 4, min_count: int = 20) -> list[dict]:
    """Detection rate per value of each scalar factor (per quartile when it takes more than
    ``max_bins`` values); only groups of at least ``min_count`` images. Sorted by spread."""
    import numpy as np

    out = []
    for name, v in factors.items():
        v = np.asarray(v, dtype=np.float64)
        if v.ndim != 1 or not np.isfinite(v).all():
            continue
        vals = np.unique(v)
        if len(vals) < 2:
            continue
        if len(vals) <= max_bins:
            groups = {f"={x:g}": v == x for x in vals}
        else:
            q = np.quantile(v, np.linspace(0, 1, max_bins + 1))
            idx = np.clip(np.searchsorted(q[1:-1], v, side="right"), 0, max_bins - 1)
            groups = {f"[{q[k]:.3g},{q[k + 1]:.3g}]": idx == k for k in range(max_bins)}
        rates = {k: (round(float(detected[m].mean()), 3), int(m.sum())) for k, m in groups.items() if m.sum() >= min_count}
        if len(rates) < 2:
            continue
        r = [x[0] for x in rates.values()]
        out.append({"factor": name, "spread": round(max(r) - min(r), 3), "rate_n": rates})
    return sorted(out, key=lambda d: -d["spread"])


def yaw_band(yaw, min_yaw: float, max_yaw: float):
    """(N,) bool: faces with ``min_yaw <= |yaw| <= max_yaw`` (degrees); ``yaw`` None keeps all."""
    import numpy as np

    if min_yaw > max_yaw:
        raise ValueError(f"--min-yaw ({min_yaw}) is above --max-yaw ({max_yaw})")
    if yaw is None:
        return None
    a = np.abs(np.asarray(yaw, dtype=np.float64))
    return (a >= min_yaw) & (a <= max_yaw)


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    import torch

    from engine import judge as J
    from benchmarks.judge_quick import render_batches, render_parser
    ap = render_parser(__doc__, "wild", 8)
    ap.add_argument("--max-yaw", type=float, default=30.0, help="only faces with |yaw| <= this (degrees)")
    ap.add_argument("--min-yaw", type=float, default=0.0, help="only faces with |yaw| >= this (degrees)")
    ap.add_argument("--top", type=int, default=12, help="factors printed")
    a = ap.parse_args(argv)
    if a.min_yaw > a.max_yaw:
        ap.error(f"--min-yaw ({a.min_yaw}) is above --max-yaw ({a.max_yaw})")
    J.require_dlib()
    factors: dict[str, list] = {}
    images = []
    for b in render_batches(a)[1]:
        images.append(b.images)
        for k, t in b.factors.items():
            t = t.detach().cpu()
            if t.ndim == 1:
                factors.setdefault(k, []).append(t.double())
            elif t.ndim == 2:
                for c in range(t.shape[1]):
                    factors.setdefault(f"{k}[{c}]", []).append(t[:, c].double())
    f = {k: torch.cat(v).numpy() for k, v in factors.items()}
    d = J.describe_arrays(iter(images), J.find_models(), workers=a.workers)
    det = np.asarray(d.detected, dtype=bool)
    keep = yaw_band(f.get("yaw"), a.min_yaw, a.max_yaw)
    keep = np.ones_like(det) if keep is None else keep
    for r in factor_rates({k: v[keep] for k, v in f.items()}, det[keep])[: a.top]:
        print(json.dumps(r))
    print(json.dumps({"preset": a.preset, "overrides": a.override, "images": int(keep.sum()), "min_yaw": a.min_yaw, "max_yaw": a.max_yaw,
                      "detection": round(float(det[keep].mean()), 4), "detection_all_yaw": round(float(det.mean()), 4)}))


if __name__ == "__main__":
    main()
