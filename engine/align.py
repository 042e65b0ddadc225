"""Align a folder of face photographs to the ArcFace template, the layout every real-face input of
synthface expects (``engine.detail_fit``, the learned generators' training folders, FR fine-tuning).

    python -m engine.align photos/ aligned/ [--size 112]

``photos/`` holds a folder per person (``photos/<person>/<image>``) or images directly; ``aligned/``
gets the same layout, one PNG crop per image (``<stem>.png``). In each image dlib's HOG detector (the
judge's) finds the largest face and the 68-point shape predictor its landmarks; the five points of
the ArcFace template (eye centres, nose tip, mouth corners) give a similarity transform, and the crop
is resampled through it (bicubic, after a box reduction by an integer factor where the face is
much larger than the crop, so that nothing aliases). Images in which no face is found are listed in
``aligned/no_face.txt``.

A killed run resumes: crops already written are kept (each is written to a temporary name and renamed
when whole), and the run goes on with the rest. The same input gives the same bytes. Needs the judge
extra (``pip install -e ".[judge]"``); nothing is downloaded. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from common.align import template

from .formats import IMAGE_EXTENSIONS

__all__ = ["align_face", "detect_landmarks", "five_points", "list_images", "main"]

#: Images with a longer side above this are scaled down for detection (the landmarks are scaled back).
MAX_DETECT_SIDE = 1024
#: Images with a longer side below this are upsampled once by the detector (small faces).
UPSAMPLE_BELOW = 400


def five_points(lm: np.ndarray) -> np.ndarray:
    """(5, 2) ArcFace points (left eye centre, right eye centre, nose tip, left and right mouth corners,
    in image order: the eye on the image's left first) from dlib's 68 landmarks ``lm`` (68, 2)."""
    lm = np.asarray(lm, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"68 landmarks (68, 2) expected, got {lm.shape}")
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def detect_landmarks(image: np.ndarray, detector, predictor) -> np.ndarray | None:
    """dlib's 68 landmarks (68, 2) (pixel-index x, y in ``image``) of the largest face in the uint8
    (H, W, 3) ``image``, or None. Large images are scaled down for detection
    (:data:`MAX_DETECT_SIDE`), small ones upsampled once (:data:`UPSAMPLE_BELOW`)."""
    from PIL import Image
    h, w = image.shape[:2]
    scale = min(1.0, MAX_DETECT_SIDE / max(h, w))
    im = image
    if scale < 1.0:
        im = np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
    im = np.ascontiguousarray(im)
    boxes = detector(im, 1 if max(im.shape[:2]) < UPSAMPLE_BELOW else 0)
    if len(boxes) == 0:
        return None
    s = predictor(im, max(boxes, key=lambda b: b.area()))
    lm = np.array([[q.x, q.y] for q in s.parts()], np.float64)
    if scale < 1.0:  # back to the full image's pixel-index coordinates
        lm = (lm + 0.5) * np.array([w / im.shape[1], h / im.shape[0]]) - 0.5
    return lm


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (Umeyama, no reflection) mapping points ``src`` onto ``dst``."""
    from morphable.camera import similarity_transform
    return similarity_transform(torch.from_numpy(src)[None], torch.from_numpy(dst))[0].numpy()


def align_face(image: np.ndarray, lm: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """The ArcFace-aligned ``size`` px crop (size, size, 3) uint8 of the face whose 68 landmarks ``lm``
    (68, 2) were found in the uint8 (H, W, 3) ``image``, and the (2, 3) similarity from image pixels to
    crop pixels (pixel-index coordinates).

    The five template points (:func:`five_points`) fix a similarity transform onto
    :func:`common.align.template`; each crop pixel samples the image through its inverse (bicubic,
    border pixels repeated). Where the crop is less than half the face's size in the image, the image
    is first box-reduced by the integer factor that brings it to between 1/2 and 1."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a uint8 (H, W, 3) image expected, got {image.dtype} {image.shape}")
    M = _similarity(five_points(lm), template(size).double().numpy())  # image px -> crop px
    scale = float(np.hypot(M[0, 0], M[1, 0]))  # crop px per image px
    x = torch.from_numpy(np.array(image, np.float64)).permute(2, 0, 1)[None]
    f = max(1, int(np.floor(1.0 / scale + 1e-6)))  # box reduction: the resampling that follows scales by (0.5, 1]
    if f > 1:
        x = F.avg_pool2d(x, f, stride=f)
    # crop px -> (reduced) image px: the inverse similarity, then the reduction's index map
    A, t = M[:, :2], M[:, 2]
    Ainv = np.linalg.inv(A)
    yy, xx = np.mgrid[0:size, 0:size]
    q = (np.stack([xx.ravel(), yy.ravel()], 1) - t) @ Ainv.T  # (size*size, 2) image px
    q = (q - (f - 1) / 2.0) / f
    h, w = x.shape[-2:]
    grid = torch.from_numpy(q / np.array([max(w - 1, 1), max(h - 1, 1)]) * 2 - 1).view(1, size, size, 2)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=True)[0]
    return out.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), M


def list_images(root: Path) -> list[tuple[Path, Path]]:
    """``(image, relative output path)`` of every image under ``root``: ``<person>/<image>`` (one folder
    per person) and images directly in ``root``; outputs are ``<person>/<stem>.png`` / ``<stem>.png``."""
    is_img = lambda p: p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS  # noqa: E731
    out = [(f, Path(p.name) / f"{f.stem}.png") for p in sorted(root.iterdir()) if p.is_dir()
           for f in sorted(p.iterdir()) if is_img(f)]
    return out + [(f, Path(f"{f.stem}.png")) for f in sorted(root.iterdir()) if is_img(f)]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="face photographs: a folder per person, or images")
    ap.add_argument("out", type=Path, help="where the aligned crops go (the same layout, PNG)")
    ap.add_argument("--size", type=int, default=112, help="crop side in px (the template scales with it)")
    a = ap.parse_args(argv)
    if a.size < 16:
        raise SystemExit(f"--size must be >= 16 px, got {a.size}")
    if not a.src.is_dir():
        raise SystemExit(f"{a.src}: not a folder")
    if a.out.resolve() == a.src.resolve():
        raise SystemExit(f"{a.out}: the output folder must differ from the input folder")
    files = list_images(a.src)
    if not files:
        raise SystemExit(f"{a.src}: no images (a folder per person, or images)")
    dup = sorted(str(o) for o, n in Counter(o for _, o in files).items() if n > 1)[:3]
    if dup:
        raise SystemExit(f"{a.src}: images whose names differ only by extension would share an output: {dup}")
    from PIL import Image

    from .attributes import find_shape_predictor
    from .judge import require_dlib
    dlib = require_dlib()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(find_shape_predictor().shape_predictor))
    t0 = time.time()
    done = skipped = 0
    no_face: list[str] = []
    for f, rel in files:
        dst = a.out / rel
        if dst.exists():
            skipped += 1
            continue
        try:
            img = np.asarray(Image.open(f).convert("RGB"))
        except OSError as e:
            raise SystemExit(f"{f}: not a readable image ({e})") from e
        lm = detect_landmarks(img, detector, predictor)
        if lm is None:
            no_face.append(str(f.relative_to(a.src)))
            continue
        crop, _ = align_face(img, lm, a.size)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        Image.fromarray(crop).save(tmp, format="PNG")
        os.replace(tmp, dst)
        done += 1
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "no_face.txt").write_text("".join(f"{p}\n" for p in no_face))
    print(json.dumps({"src": str(a.src), "out": str(a.out), "size": a.size, "images": len(files), "aligned": done,
                      "already_aligned": skipped, "no_face": len(no_face), "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
