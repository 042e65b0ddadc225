"""Where does a learnt detail model's gain come from? Variants of one model, each judged like judge_quick.

A detail model (``identity.detail_model``, :mod:`morphable.detail`) replaces the fine detail of our
inner faces by a per-identity sample of real faces' detail. This builds variants of one fitted model
and prints the quick judge's figures (``benchmarks/judge_quick.py``: detection, genuine and impostor
mean distance, FAR@0.6, EER) for each, one JSON line per variant:

- ``none``: no detail model (the renderer's own detail);
- ``full``: the model as fitted;
- ``k<N>`` (``--ks``): its first N principal directions only;
- ``mean``: its mean detail, the same for every identity (no per-person part);
- ``ours_mean``: our own renders' mean detail, taken the same way (``--ours`` frontal renders, dlib's
  landmarks, warped to the model's layout), the same for every identity;
- ``zero``: no detail at all inside the inner face (our coarse face, blurred at the model's sigma);
- ``mean@<region>``: the mean, in one region only (:data:`REGIONS`); our own detail elsewhere.

    python benchmarks/detail_ablation.py --model runs/detail/lfw_dev_folds123.npz --ids 200 --per-id 4

Needs the judge extra (``pip install -e ".[judge]"``); about 3.5 minutes per variant at 200 ids x 4 on
2 cores.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.judge_quick import quick_judge, render_parser  # noqa: E402
from morphable.detail import FEATURE_BOXES  # noqa: E402

#: Regions of the 112 px template (our mean face's layout): rows and columns [r0, r1) x [c0, c1).
REGIONS = FEATURE_BOXES
#: Gaussian sd (px) of a region box's soft edge.
REGION_EDGE = 1.5
DEFAULT_VARIANTS = ("none", "full", "mean", "ours_mean", "zero") + tuple(f"mean@{r}" for r in REGIONS)


def region_mask(name: str, size: int = 112) -> torch.Tensor:
    """(size, size) soft box of region ``name`` (:data:`REGIONS`, given at 112 px): 1 inside, 0 outside."""
    from kornia.filters import gaussian_blur2d
    if name not in REGIONS:
        raise ValueError(f"unknown region {name!r}; regions: {sorted(REGIONS)}")
    r0, r1, c0, c1 = (round(v * size / 112) for v in REGIONS[name])
    m = torch.zeros(1, 1, size, size)
    m[..., r0:r1, c0:c1] = 1
    sd = REGION_EDGE * size / 112
    k = 2 * int(4 * sd) + 1
    return gaussian_blur2d(m, (k, k), (sd, sd), border_type="replicate")[0, 0]


def variant(dm, name: str, ours_mean: torch.Tensor | None = None):
    """The :class:`morphable.detail.DetailModel` of variant ``name`` of ``dm`` (see the module's
    docstring), or None for ``none``. ``ours_mean`` (3, T, T) is needed for ``ours_mean``."""
    from morphable.detail import DetailModel
    if name == "none":
        return None
    mean, basis, mask = dm.mean, dm.basis, dm.mask
    no_basis = torch.zeros_like(basis[:1])
    if name == "full":
        pass
    elif name.startswith("k") and name[1:].isdigit():
        k = int(name[1:])
        if not 1 <= k <= dm.k:
            raise ValueError(f"variant {name}: the model has {dm.k} directions")
        basis = basis[:k].clone()
    elif name == "mean":
        basis = no_basis
    elif name == "ours_mean":
        if ours_mean is None or ours_mean.shape != mean.shape:
            raise ValueError(f"variant ours_mean needs our mean detail {tuple(mean.shape)}")
        mean, basis = ours_mean, no_basis
    elif name == "zero":
        mean, basis = torch.zeros_like(mean), no_basis
    elif name.startswith("mean@"):
        basis, mask = no_basis, region_mask(name[5:], dm.size) * mask
    else:
        raise ValueError(f"unknown variant {name!r}; variants: none, full, k<N>, mean, ours_mean, zero, mean@<region>")
    return DetailModel(mean=mean, basis=basis, mask=mask, sigma=dm.sigma, layout=dm.layout, model=dm.model,
                       info={"variant": name, **dm.info})


def our_mean_detail(dm, n: int, seed: int = 0, overrides: dict | None = None) -> tuple[torch.Tensor, int]:
    """Our own renders' mean ratio detail (3, T, T) in ``dm``'s layout, and how many renders it
    averages: ``n`` identities of the ``frontal`` preset (with the source ``overrides``), one image
    each, the ones dlib's landmarks call frontal, fitted as ``engine.detail_fit`` fits real faces."""
    from engine.attributes import find_shape_predictor
    from engine.detail_fit import frontal_renders
    from morphable.detail import fit_detail_model
    u8, lms, _ = frontal_renders(str(find_shape_predictor().shape_predictor), ids=n, seed=seed, size=dm.size,
                                 overrides=overrides)
    if len(lms) < 2:
        raise SystemExit(f"only {len(lms)} of {n} renders are frontal to dlib: raise --ours")
    images = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255
    fit = fit_detail_model(images, lms, dm.layout.numpy(), dm.model, k=1, sigma=dm.sigma)
    return fit.mean, len(lms)


def main(argv: list[str] | None = None) -> None:
    from morphable.detail import DetailModel
    ap = render_parser(__doc__, "frontal", 4)
    ap.add_argument("--model", required=True, help="a fitted detail model (python -m engine.detail_fit)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated variants")
    ap.add_argument("--ks", type=int, nargs="*", default=[4, 16], help="also judge the first N directions only")
    ap.add_argument("--ours", type=int, default=300, help="frontal renders averaged for ours_mean")
    a = ap.parse_args(argv)
    dm = DetailModel.load(a.model)
    names = [v for v in a.variants.split(",") if v] + [f"k{k}" for k in a.ks]
    for v in names:  # bad names fail before any rendering
        variant(dm, v, torch.zeros_like(dm.mean))
    ours = None
    if "ours_mean" in names:
        ours, n = our_mean_detail(dm, a.ours, a.seed)
        print(json.dumps({"ours_mean_renders": n}))
    base = list(a.override or [])
    with tempfile.TemporaryDirectory() as tmp:
        for v in names:
            m = variant(dm, v, ours)
            over = base
            if m is not None:
                path = Path(tmp) / f"{v.replace('@', '_')}.npz"
                m.save(path)
                over = base + [f"identity.detail_model={path}"]
            a.override = over
            line = quick_judge(a)
            line["overrides"] = base
            print(json.dumps({"variant": v, **line}), flush=True)


if __name__ == "__main__":
    main()
