"""Which part of the face holds a real-face recogniser's view of identity, and how varied ours is there.

A face region (brows and eyes, eyes, nose, mouth) of each donor image is pasted, with a soft 3 px edge,
into one of 8 fixed real faces (the contexts); the mean dlib descriptor distance between different
donors pasted into the same context measures how varied that region alone is to the recogniser (a
bland region scores low, whatever the rest of the face). Donors are real people (``--real``) and the
morphable source's identities rendered in memory (``--preset``, ``-o`` overrides), both ArcFace-aligned
112 px, 2 images each.

    python benchmarks/judge_regions.py --real ../shared/data/lfw-dev/images --ids 200
    python benchmarks/judge_regions.py --real ../shared/data/lfw-dev/images -o identity.feature_shape=0

Needs the judge extra (``pip install -e ".[judge]"``). Prints one JSON line per donor set.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Region boxes (rows y0:y1, columns x0:x1) on the 112 px ArcFace template.
REGIONS = {"brows_eyes": (28, 62, 20, 94), "eyes": (38, 62, 22, 92), "nose": (55, 82, 40, 72), "mouth": (78, 100, 32, 82)}
CONTEXTS = 8


def soft_box(y0: int, y1: int, x0: int, x1: int, size: int = 112, edge: float = 3.0) -> np.ndarray:
    """(size, size, 1) mask: 1 inside the box, ramping to 0 over ``edge`` px at its border."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    def ramp(v, a, b):
        return np.clip((v - a) / edge, 0, 1) * np.clip((b - v) / edge, 0, 1)
    return (ramp(yy, y0, y1) * ramp(xx, x0, x1))[..., None]


def real_faces(root: Path, n: int, seed: int = 0) -> np.ndarray:
    """(2n, 112, 112, 3) float32: the first 2 images of ``n`` people (with 2+ images) drawn by ``seed``."""
    from PIL import Image
    people = sorted(p for p in root.iterdir() if p.is_dir() and len(list(p.iterdir())) >= 2)
    if len(people) < n:
        raise SystemExit(f"{root} has {len(people)} people with 2+ images; --ids {n} needs as many")
    pick = np.random.default_rng(seed).choice(len(people), n, replace=False)
    return np.stack([np.asarray(Image.open(sorted(people[i].iterdir())[k]).convert("RGB").resize((112, 112)))
                     for i in sorted(pick) for k in range(2)]).astype(np.float32)


def synthetic_faces(preset: str, n: int, overrides: dict, seed: int = 1) -> np.ndarray:
    """(2n, 112, 112, 3) float32: ``n`` morphable identities x 2 variations."""
    import torch

    from morphable import MorphableSource
    src = MorphableSource(preset=preset, size=112, overrides=overrides)
    ids = src.sample_identities(n, seed=seed)
    rows, var = torch.arange(n).repeat_interleave(2), torch.arange(2).repeat(n)
    imgs = torch.cat([src.render(ids, rows[s:s + 64], var[s:s + 64], seed=seed).images for s in range(0, 2 * n, 64)])
    return (imgs.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.float32)


def region_diversity(donors: np.ndarray, contexts: np.ndarray, models, workers: int = 2) -> dict[str, float]:
    """Per region of :data:`REGIONS`: mean descriptor distance between images of different donors
    pasted into the same context; detected faces only (NaN without such a pair). ``donors`` (2n, 112,
    112, 3): 2 images per donor, donor ``i``'s two going into context ``i % C``; ``contexts`` (C, 112,
    112, 3)."""
    from engine import judge as J
    n, C = len(donors) // 2, len(contexts)
    lab = np.repeat(np.arange(n), 2)
    ctx = contexts[(lab % C)]
    out = {}
    for name, box in REGIONS.items():
        m = soft_box(*box)
        mix = (ctx * (1 - m) + donors * m).clip(0, 255).astype(np.uint8)
        d = J.describe_arrays([list(mix[i:i + 64]) for i in range(0, len(mix), 64)], models, workers=workers)
        dist = J.pairwise_distances(d.descriptors, d.descriptors)
        iu = np.triu_indices(len(dist), 1)
        ok = (d.detected[:, None] & d.detected[None])[iu]
        sel = ((lab % C)[:, None] == (lab % C)[None])[iu] & (lab[:, None] != lab[None])[iu] & ok
        out[name] = round(float(dist[iu][sel].mean()), 4) if sel.any() else float("nan")
    return out


def main(argv: list[str] | None = None) -> None:
    from common.cli import add_override
    from common.config import apply_overrides
    from engine import judge as J
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, required=True, help="real faces DIR/<person>/<image>, ArcFace-aligned 112 px")
    ap.add_argument("--ids", type=int, default=200, help="people of each donor set (2 images each)")
    ap.add_argument("--preset", default="frontal")
    add_override(ap, help="morphable source override, e.g. identity.feature_shape=0")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    J.require_dlib()
    models = J.find_models()
    real = real_faces(a.real, a.ids + CONTEXTS)
    contexts = real[2 * a.ids::2][:CONTEXTS]  # people not among the real donors
    real = real[: 2 * a.ids]
    ov = apply_overrides({}, a.override)
    for name, donors in (("real", real), (f"morphable {a.preset} {ov or ''}".strip(), synthetic_faces(a.preset, a.ids, ov))):
        print(json.dumps({"donors": name, **region_diversity(donors, contexts, models, a.workers)}), flush=True)


if __name__ == "__main__":
    main()
