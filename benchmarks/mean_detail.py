"""How far our faces' mean fine detail lies from real faces': rms per region of the inner face.

A real-face recogniser reads our people as alike mostly because the average look of their features
is wrong (BENCHMARKS.md, "Realism, session 27": a real mean detail shared by every identity scores
0.670, our own 0.597). This measures that distance directly, in a few seconds: the mean ratio detail
of our frontal renders (``--ours`` identities of ``frontal``, one image each, the ones dlib's
landmarks call frontal; with any source overrides ``-o``), warped to a fitted detail model's layout
as real faces are (``python -m engine.detail_fit``), against that model's mean, as rms over the inner
face (``all``) and over ``detail_ablation.py``'s regions, weighted by the model's mask. It prints one
JSON line per model:

    python benchmarks/mean_detail.py --model runs/detail/lfw_dev_folds123.npz [--model M2 ...] [-o key=value ...]

With ``--save FILE`` it also writes our mean detail (a torch tensor) for pictures and comparisons.
About 15 s for 600 renders on 2 cores; the renders dlib calls frontal change with the renderer, so
figures move by about 0.0005 between draws. Needs the judge extra (``pip install -e ".[judge]"``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.detail_ablation import REGIONS, our_mean_detail, region_mask  # noqa: E402


def region_rms(ours: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """rms of ``real - ours`` ((3, T, T) each) over the inner face ``mask`` (T, T) (``all``) and over
    each of :data:`REGIONS` within it, averaged over the 3 channels."""
    out = {}
    for name in ("all",) + tuple(REGIONS):
        w = mask if name == "all" else mask * region_mask(name, mask.shape[-1])
        out[name] = round(float((((real - ours) ** 2 * w).sum() / (3 * w.sum())).sqrt()), 4)
    return out


def main(argv: list[str] | None = None) -> None:
    from common.cli import add_override
    from common.config import apply_overrides
    from morphable.detail import DetailModel
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="a fitted detail model (repeatable)")
    ap.add_argument("--ours", type=int, default=600, help="frontal identities rendered (one image each)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", type=Path, default=None, help="write our mean detail (of the first model's layout)")
    add_override(ap, help="morphable source override, e.g. light.occlusion_power=1")
    a = ap.parse_args(argv)
    if a.ours < 2:
        raise SystemExit(f"--ours must be >= 2, got {a.ours}")
    over = apply_overrides({}, a.override)
    for i, path in enumerate(a.model):
        dm = DetailModel.load(path)
        ours, n = our_mean_detail(dm, a.ours, a.seed, over)
        if i == 0 and a.save is not None:
            torch.save(ours, a.save)
        print(json.dumps({"model": str(path), "renders": n, "overrides": a.override or [],
                          "rms": region_rms(ours, dm.mean, dm.mask)}), flush=True)


if __name__ == "__main__":
    main()
