"""A quick real-face judge of a morphable config: render in memory, describe with dlib, print one line.

For trying a renderer change in about a minute (100 ids x 4 `frontal` by default) before the full
``python -m engine.render ... && python -m engine.judge ...`` measurement (200 ids x 10) that
BENCHMARKS.md records. Same dlib models and rules as ``engine.judge``: detection rate, genuine and
impostor mean distance and FAR@0.6 on detected faces, EER.

    python benchmarks/judge_quick.py
    python benchmarks/judge_quick.py -o identity.feature_shape=0 --ids 100 --per-id 4

Needs the judge extra (``pip install -e ".[judge]"``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def render_parser(doc: str, preset: str, per_id: int) -> argparse.ArgumentParser:
    """The options of an in-memory judge script: ``--ids --per-id --preset --seed --workers -o``."""
    from common.cli import add_override

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--ids", type=int, default=100)
    ap.add_argument("--per-id", type=int, default=per_id)
    ap.add_argument("--preset", default=preset)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    add_override(ap, help="morphable source override, e.g. identity.feature_shape=0")
    return ap


def render_batches(a: argparse.Namespace):
    """``(rows (N,), iterator of RenderBatch, Identities)``: ``a.ids`` identities x ``a.per_id``
    variations of the configured morphable source at 112 px, rendered 64 at a time."""
    import torch

    from common.config import apply_overrides
    from morphable import MorphableSource
    src = MorphableSource(preset=a.preset, size=112, overrides=apply_overrides({}, a.override))
    ids = src.sample_identities(a.ids, seed=a.seed)
    rows = torch.arange(a.ids).repeat_interleave(a.per_id)
    var = torch.arange(a.per_id).repeat(a.ids)
    return rows, (src.render(ids, rows[s:s + 64], var[s:s + 64], seed=a.seed) for s in range(0, len(rows), 64)), ids


def quick_judge(a: argparse.Namespace) -> dict:
    """The quick judge's figures of the configured source (``render_parser``'s options): detection rate
    and mean score, genuine and impostor mean distance, FAR@0.6 and EER on detected faces."""
    from engine import judge as J
    J.require_dlib()
    rows, renders, _ = render_batches(a)
    batches = (b.images for b in renders)
    d = J.describe_arrays(batches, J.find_models(), workers=a.workers)
    lab = rows.numpy()
    det = d.detected
    pairs = J.genuine_impostor_distances(d.descriptors[det], lab[det], seed=0)
    gen, imp = pairs["genuine"], pairs["impostor"]
    return {"preset": a.preset, "ids": a.ids, "per_id": a.per_id, "overrides": a.override,
            "detection": round(float(det.mean()), 4),
            "detection_score": round(float(d.scores.mean()), 4), "genuine": round(float(gen.mean()), 4),
            "impostor": round(float(imp.mean()), 4), "far_0.6": round(J.false_accept_rate(imp), 4),
            "eer": round(J.equal_error_rate(gen, imp)[0], 4)}


def main(argv: list[str] | None = None) -> None:
    a = render_parser(__doc__, "frontal", 4).parse_args(argv)
    print(json.dumps(quick_judge(a)))


if __name__ == "__main__":
    main()
