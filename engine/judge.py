"""Real-face judge: score a face dataset the way an external real-face recogniser sees it.

The judge is dlib's face pipeline as shipped by the ``face_recognition`` project: the HOG frontal face
detector, the 5-point shape predictor and the ResNet 128-d face descriptor
(``dlib_face_recognition_resnet_model_v1``, 99.38% on LFW), whose "same person" rule is a Euclidean
descriptor distance below 0.6. None of it was trained on synthface images, so its numbers say how much
a rendered face looks like a real face to a model that only ever saw real ones.

Install the optional extra (``pip install -e ".[judge]"``: ``dlib-bin`` + ``face-recognition-models``),
then::

    python -m engine.judge DATASET [--real DIR] [--out REPORT_DIR] [--max-ids N] [--per-id K]
                           [--upsample U] [--jitters J] [--seed S] [--workers W] [--max-pairs P]

``DATASET`` is a rendered synthface dataset (``python -m engine.render`` output: its ``|yaw|`` comes
from ``metadata.parquet``) or any face folder ``DIR/<person>/<image>`` (no yaw bins then); ``--real``
is a real face folder judged the same way, side by side (e.g. ``../shared/data/lfw-dev/images``).
Nothing is downloaded: the model files come from the installed ``face_recognition_models`` package,
or from ``--shape-predictor`` / ``--face-recognition-model`` (or the environment variables
:data:`ENV_SHAPE_PREDICTOR` / :data:`ENV_FACE_RECOGNITION_MODEL`).

Per image: the HOG detector (``upsample`` pyramid up-samplings, default :data:`DEFAULT_UPSAMPLE`),
the largest detection, its 5 landmarks, its 128-d descriptor. An image without a detection still gets
a descriptor from a fixed fallback box (:data:`FALLBACK_BOX`, the median detection on aligned faces) so
that the "all images" figures can be reported next to the "detected faces" ones.

Metrics of a set (:func:`summarise`), computed on detected faces unless said otherwise:

* **detection rate**, overall and per ``|yaw|`` bin (:data:`YAW_BINS`, degrees, from the metadata);
* **genuine / impostor mean distance**: pairs of images of one identity / of two identities (all
  pairs, or a seeded uniform sample of ``max_pairs`` when there are more);
* **FAR@0.6**: fraction of impostor pairs closer than 0.6 (the recogniser would call them the same
  person); FRR@0.6: fraction of genuine pairs at 0.6 or more;
* **EER**: the ROC point of "accept when distance <= t" where false accept rate = false reject rate
  (linearly interpolated between the two nearest ROC points), with that threshold;
* **rank-1**: leave-one-out nearest neighbour among the detected images of identities with 2+ detected
  images: the fraction whose nearest other image belongs to the same identity.

Python API: :func:`find_models`, :func:`load_face_set`, :func:`describe_face_set`,
:func:`describe_arrays`, :func:`summarise`, :func:`judge_dataset` (everything, writes the report),
:func:`judge_arrays` (in-memory images, no files), and the
pure metric functions :func:`pairwise_distances`, :func:`genuine_impostor_distances`,
:func:`equal_error_rate`, :func:`false_accept_rate`, :func:`rank1_identification`,
:func:`detection_by_yaw`.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from common import cli
from common.metrics import equal_error_rate as score_eer
from common.metrics import genuine_pairs, sample_impostor_pairs

__all__ = [
    "JudgeExtraMissing", "JudgeModels", "FaceSet", "Descriptions", "require_dlib", "find_models", "load_face_set",
    "describe_face_set", "describe_arrays", "pairwise_distances", "genuine_impostor_distances",
    "false_accept_rate", "equal_error_rate", "rank1_identification", "detection_by_yaw", "summarise",
    "judge_dataset", "judge_arrays", "markdown_summary", "main", "SAME_PERSON_THRESHOLD", "YAW_BINS",
]

#: The recogniser's own "same person" rule: Euclidean descriptor distance below 0.6.
SAME_PERSON_THRESHOLD = 0.6
#: ``|yaw|`` bins in degrees, ``[lo, hi)``; the last one also takes everything at or above 60.
YAW_BINS: tuple[tuple[float, float], ...] = ((0, 15), (15, 30), (30, 45), (45, 60), (60, 90))
#: HOG pyramid up-samplings: 1, face_recognition's default. Measured on all 6,165 112-px ArcFace-aligned
#: lfw-dev faces: detection 96.9% at 1 (98.5% at 0: also reliable, and 5x cheaper detection, but the
#: descriptor dominates the time); at 1 the frontal baseline reproduces the external reference (96.2%).
DEFAULT_UPSAMPLE = 1
#: ``num_jitters`` of dlib's ``compute_face_descriptor`` (as face_recognition; 0 and 1 both mean no jitter).
DEFAULT_JITTERS = 1
#: All impostor pairs up to this many (lfw-dev has about 19 M), else a seeded uniform sample of this size.
DEFAULT_MAX_PAIRS = 20_000_000
#: Fallback face box (left, top, right, bottom) as fractions of the image width/height, for images
#: without a detection: the median HOG box (upsample 0) of 300 112-px ArcFace-aligned lfw-dev faces,
#: (16, 26, 102, 112) px (upsample 1: (16, 26, 96, 113)). Used only for the "all images" figures.
FALLBACK_BOX = (0.143, 0.232, 0.911, 1.0)
DESCRIPTOR_DIM = 128
#: Lowest HOG window score the detector is asked for (``adjust_threshold`` of dlib's ``run``): an image
#: whose best window scores below it gets this score. A face is detected at score >= 0 (dlib's own
#: threshold; the detections and boxes are those of ``detector(img, upsample)``).
SCORE_FLOOR = -1.5

SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
FACE_RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
ENV_SHAPE_PREDICTOR = "SYNTHFACE_JUDGE_SHAPE_PREDICTOR"
ENV_FACE_RECOGNITION_MODEL = "SYNTHFACE_JUDGE_FACE_RECOGNITION_MODEL"
INSTALL_HINT = 'pip install -e ".[judge]"  (dlib-bin + face-recognition-models)'

DEFINITIONS: dict[str, str] = {
    "detection_rate": "fraction of images where dlib's HOG frontal face detector finds a face",
    "detection_score": ("the HOG detector's best window score per image (its SVM margin; >= 0 is a detection, "
                        "SCORE_FLOOR when no window scores higher): mean and median. A continuous view of "
                        "detection: it moves with changes too small to flip many images across the threshold"),
    "genuine_mean": "mean Euclidean distance between descriptors of two images of one identity",
    "impostor_mean": "mean Euclidean distance between descriptors of images of two identities",
    "far_at_0.6": "fraction of impostor pairs with distance < 0.6 (the recogniser calls them the same person)",
    "frr_at_0.6": "fraction of genuine pairs with distance >= 0.6",
    "eer": ("equal error rate of 'accept when distance <= t': where false accept rate = false reject rate, "
            "linearly interpolated between the two nearest ROC points; eer_threshold is that t"),
    "rank1": ("leave-one-out nearest neighbour among the detected images of identities with 2+ detected images: "
              "fraction whose nearest other image is of the same identity"),
    "all_images": ("the same figures over every image, undetected ones described from the fixed fallback box "
                   "FALLBACK_BOX instead of a detection"),
}


class JudgeExtraMissing(ImportError):
    """The ``judge`` extra (dlib, face_recognition_models) is not installed."""


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------


def require_dlib():
    """Import and return ``dlib``; :class:`JudgeExtraMissing` naming the install command otherwise."""
    try:
        import dlib
    except ImportError as e:
        raise JudgeExtraMissing(f"the real-face judge needs dlib, which is not installed ({e}); install the "
                                f"extra: {INSTALL_HINT}") from None
    return dlib


@dataclass(frozen=True)
class JudgeModels:
    """Paths of the two dlib model files the judge loads (the detector is built into dlib)."""

    shape_predictor: Path
    face_recognition: Path


def _models_package_dir() -> Path | None:
    """``face_recognition_models/models`` without importing the package (its ``__init__`` needs
    ``pkg_resources``, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    return Path(locations[0]) / "models" if locations else None


def find_model_file(what: str, path: str | os.PathLike | None, env: str, fname: str) -> Path:
    """One dlib model file: ``path`` if given (a file, else FileNotFoundError naming ``$env``), else
    ``fname`` in the installed ``face_recognition_models`` package (:class:`JudgeExtraMissing` when the
    package is not installed). Never downloads anything."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{what} file {p} does not exist (given by argument or ${env})")
        return p
    pkg = _models_package_dir()
    if pkg is None:
        raise JudgeExtraMissing(f"the {what} ({fname}) comes from the face_recognition_models package, which "
                                f"is not installed: {INSTALL_HINT}; or give the file with ${env}")
    p = pkg / fname
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {p} is missing from the installed face_recognition_models "
                                f"package; reinstall it ({INSTALL_HINT}) or give the file with ${env}")
    return p


def find_models(shape_predictor: str | os.PathLike | None = None,
                face_recognition: str | os.PathLike | None = None) -> JudgeModels:
    """Locate the model files: explicit paths, else the environment variables
    :data:`ENV_SHAPE_PREDICTOR` / :data:`ENV_FACE_RECOGNITION_MODEL`, else the installed
    ``face_recognition_models`` package. Never downloads anything.

    Raises FileNotFoundError for a given path that is not a file, :class:`JudgeExtraMissing` when a
    file is not given and the package is not installed.
    """
    given = {
        "shape predictor": (shape_predictor or os.environ.get(ENV_SHAPE_PREDICTOR), ENV_SHAPE_PREDICTOR,
                            SHAPE_PREDICTOR_FILE),
        "face recognition model": (face_recognition or os.environ.get(ENV_FACE_RECOGNITION_MODEL),
                                   ENV_FACE_RECOGNITION_MODEL, FACE_RECOGNITION_FILE),
    }
    found = [find_model_file(what, path, env, fname) for what, (path, env, fname) in given.items()]
    return JudgeModels(shape_predictor=found[0], face_recognition=found[1])


# ------------------------------------------------------------------------------------------------
# face sets
# ------------------------------------------------------------------------------------------------


@dataclass
class FaceSet:
    """A labelled set of face images to judge.

    ``dataset`` is an :class:`engine.formats.FaceImageDataset`; ``indices`` (N,) the items used, in
    order; ``labels`` (N,) identities ``0..C-1`` (dense, in ``names`` order); ``yaw`` (N,) degrees or
    ``None`` (no metadata); ``describe`` says where it came from and how it was subsampled.
    """

    dataset: Any
    indices: np.ndarray
    labels: np.ndarray
    names: list[str]
    yaw: np.ndarray | None
    describe: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def _read_yaw(root: Path, ds) -> np.ndarray | None:
    """``yaw`` (len(ds),) of a synthface dataset dir, matched to ``ds`` items; None without metadata."""
    from .metadata import METADATA_NAME, read_metadata

    meta_path = root / METADATA_NAME
    if not meta_path.is_file():
        return None
    table = read_metadata(meta_path)
    if "yaw" not in table.column_names:
        return None
    yaw = np.asarray(table.column("yaw").to_numpy(zero_copy_only=False), dtype=np.float64)
    if ds.kind == "imagefolder" and "path" in table.column_names:
        by_path = {p: i for i, p in enumerate(table.column("path").to_pylist()) if p is not None}
        rows = [by_path.get(f"{Path(ds.root).name}/{p}") for p in ds.paths]
        if any(r is None for r in rows):
            raise ValueError(f"{meta_path} does not list every image of {ds.root} (rerun the render to finish it)")
        return yaw[np.asarray(rows, dtype=np.int64)]
    if len(yaw) != len(ds):
        raise ValueError(f"{meta_path} has {len(yaw)} rows but the dataset {root} holds {len(ds)} images")
    return yaw  # RecordIO: records and metadata rows are both in dataset order


def load_face_set(path: str | os.PathLike, max_ids: int | None = None, per_id: int | None = None,
                  seed: int = 0, what: str = "dataset") -> FaceSet:
    """Open a synthface dataset dir or a face folder ``DIR/<person>/<image>`` as a :class:`FaceSet`.

    With ``max_ids``, that many identities are drawn uniformly without replacement by a generator seeded
    with ``seed`` (kept in name order); with ``per_id``, the first ``per_id`` images (name order) of each.
    Raises FileNotFoundError for a missing path, ValueError for an empty or unreadable folder.
    """
    from .formats import CorruptRecordError, open_dataset

    for name, v in (("max_ids", max_ids), ("per_id", per_id)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist")
    if not p.is_dir():
        raise ValueError(f"{what} {p} is not a directory (expected a synthface dataset or DIR/<person>/<image>)")
    try:
        ds = open_dataset(p)
    except (ValueError, CorruptRecordError) as e:
        raise ValueError(f"{what} {p} is not a usable face folder: {e}") from None
    labels_all = ds.labels.numpy().astype(np.int64)
    if len(labels_all) == 0:
        raise ValueError(f"{what} {p} holds no images")
    yaw_all = _read_yaw(p, ds)
    ids = np.unique(labels_all)
    if max_ids is not None and max_ids < len(ids):
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=int(max_ids), replace=False))
    keep = np.isin(labels_all, ids)
    if per_id is not None:
        rank = np.zeros(len(labels_all), dtype=np.int64)
        seen: dict[int, int] = {}
        for i, lab in enumerate(labels_all.tolist()):
            rank[i] = seen.get(lab, 0)
            seen[lab] = int(rank[i]) + 1
        keep &= rank < per_id
    indices = np.nonzero(keep)[0]
    _, labels = np.unique(labels_all[indices], return_inverse=True)
    classes = list(getattr(ds, "classes", None) or [str(i) for i in range(ds.num_classes)])
    return FaceSet(
        dataset=ds, indices=indices, labels=labels.astype(np.int64),
        names=[classes[int(i)] for i in ids], yaw=None if yaw_all is None else yaw_all[indices],
        describe={"path": str(p.resolve()), "format": ds.kind, "synthface": yaw_all is not None,
                  "images_total": int(len(labels_all)), "identities_total": int(ds.num_classes),
                  "max_ids": max_ids, "per_id": per_id, "seed": int(seed)},
    )


# ------------------------------------------------------------------------------------------------
# description (dlib; per image, in a process pool)
# ------------------------------------------------------------------------------------------------


@dataclass
class Descriptions:
    """dlib's view of N images: ``descriptors`` (N, 128) float32 (from the detection, or the fallback
    box when none), ``detected`` (N,) bool, ``boxes`` (N, 4) int (left, top, right, bottom of the box
    used), ``num_faces`` (N,) detections per image, ``scores`` (N,) float32 the best HOG window score
    (>= 0 where detected, :data:`SCORE_FLOOR` at the least), ``seconds`` wall time."""

    descriptors: np.ndarray
    detected: np.ndarray
    boxes: np.ndarray
    num_faces: np.ndarray
    scores: np.ndarray
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.detected.shape[0])


_STATE: dict[str, Any] = {}


def _init_worker(models: JudgeModels, upsample: int, jitters: int, dataset=None) -> None:
    """Load the dlib models once per process (the pool initializer; also used in-process)."""
    dlib = require_dlib()
    _STATE.update(
        detector=dlib.get_frontal_face_detector(), shape=dlib.shape_predictor(str(models.shape_predictor)),
        net=dlib.face_recognition_model_v1(str(models.face_recognition)), rect=dlib.rectangle,
        upsample=int(upsample), jitters=int(jitters), dataset=dataset)


def _as_rgb_uint8(img) -> np.ndarray:
    """(H, W, 3) C-contiguous uint8 from uint8 HWC / HW arrays or float/uint8 (3, H, W) tensors in [0, 1]."""
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) image, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def _describe_one(img: np.ndarray) -> tuple[np.ndarray, bool, tuple[int, int, int, int], int, float]:
    """``(descriptor (128,), detected, box, num_faces, score)`` of one RGB uint8 image (models from _STATE).
    Windows down to :data:`SCORE_FLOOR` are scored; those at 0 or above are the detections (the same
    boxes as ``detector(img, upsample)``: non-maximum suppression keeps the higher-scoring box)."""
    rects, scores, _ = _STATE["detector"].run(img, _STATE["upsample"], SCORE_FLOOR)
    dets = [r for r, sc in zip(rects, scores) if sc >= 0]
    best = max(scores, default=SCORE_FLOOR)
    if len(dets):
        r = max(dets, key=lambda d: d.width() * d.height())
    else:
        h, w = img.shape[:2]
        fl, ft, fr, fb = FALLBACK_BOX
        r = _STATE["rect"](int(round(fl * w)), int(round(ft * h)), int(round(fr * w)) - 1, int(round(fb * h)) - 1)
    shape = _STATE["shape"](img, r)
    desc = np.asarray(_STATE["net"].compute_face_descriptor(img, shape, _STATE["jitters"]), dtype=np.float32)
    return desc, len(dets) > 0, (r.left(), r.top(), r.right(), r.bottom()), len(dets), float(best)


def _describe_images(images: Sequence[Any]) -> list[tuple]:
    return [_describe_one(_as_rgb_uint8(im)) for im in images]


def _describe_items(items: Sequence[int]) -> list[tuple]:
    from PIL import Image

    ds = _STATE["dataset"]
    out = []
    for i in items:
        data = ds.read_bytes(int(i))
        try:
            with Image.open(io.BytesIO(data)) as im:
                img = np.asarray(im.convert("RGB"))
        except Exception as e:
            raise ValueError(f"{ds.describe_item(int(i))}: cannot decode image ({e})") from None
        out.append(_describe_one(np.ascontiguousarray(img)))
    return out


def _collect(results: Iterable[list[tuple]], seconds_from: float) -> Descriptions:
    rows = [r for chunk in results for r in chunk]
    n = len(rows)
    return Descriptions(
        descriptors=np.stack([r[0] for r in rows]) if n else np.zeros((0, DESCRIPTOR_DIM), np.float32),
        detected=np.array([r[1] for r in rows], dtype=bool),
        boxes=np.array([r[2] for r in rows], dtype=np.int64).reshape(n, 4),
        num_faces=np.array([r[3] for r in rows], dtype=np.int64),
        scores=np.array([r[4] for r in rows], dtype=np.float32),
        seconds=time.perf_counter() - seconds_from)


def _run(fn: Callable[[Any], list[tuple]], tasks: Iterable[Any], models: JudgeModels, upsample: int,
         jitters: int, workers: int, dataset=None) -> Descriptions:
    t0 = time.perf_counter()
    if upsample < 0 or jitters < 0:
        raise ValueError(f"upsample and jitters must be >= 0, got {upsample} and {jitters}")
    if workers <= 1:
        _init_worker(models, upsample, jitters, dataset)
        return _collect(map(fn, tasks), t0)
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(models, upsample, jitters, dataset)) as pool:
        return _collect(pool.imap(fn, tasks), t0)


def _chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[s:s + size] for s in range(0, len(seq), size)]


def describe_face_set(faces: FaceSet, models: JudgeModels, upsample: int = DEFAULT_UPSAMPLE,
                      jitters: int = DEFAULT_JITTERS, workers: int = 1, chunk: int = 32) -> Descriptions:
    """Describe every image of ``faces`` (read and decoded in the workers)."""
    return _run(_describe_items, _chunks(faces.indices.tolist(), chunk), models, upsample, jitters, workers,
                dataset=faces.dataset)


def describe_arrays(batches: Iterable[Any], models: JudgeModels, upsample: int = DEFAULT_UPSAMPLE,
                    jitters: int = DEFAULT_JITTERS, workers: int = 1) -> Descriptions:
    """Describe images given in memory: an iterable of batches, each a sequence of images (uint8
    (H, W, 3) arrays, or (3, H, W) float tensors/arrays in [0, 1], e.g. ``RenderBatch.images``)."""
    tasks = ([_as_rgb_uint8(im) for im in b] for b in batches)
    return _run(_describe_images, tasks, models, upsample, jitters, workers)


# ------------------------------------------------------------------------------------------------
# metrics (pure: descriptors / distances in, numbers out)
# ------------------------------------------------------------------------------------------------


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (N, M) float64 between rows of ``a`` (N, D) and ``b`` (M, D)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


def _row_distances(x: np.ndarray, i: np.ndarray, j: np.ndarray, step: int = 1 << 20) -> np.ndarray:
    out = np.empty(len(i), dtype=np.float32)
    for s in range(0, len(i), step):
        d = x[i[s:s + step]].astype(np.float64) - x[j[s:s + step]]
        out[s:s + step] = np.sqrt((d * d).sum(1))
    return out


def genuine_impostor_distances(descriptors: np.ndarray, labels: np.ndarray, max_pairs: int = DEFAULT_MAX_PAIRS,
                               seed: int = 0, block: int = 1024) -> dict[str, Any]:
    """Distances of genuine pairs (same label, ``i < j``) and impostor pairs (different labels).

    ``descriptors`` (N, D), ``labels`` (N,). Each kind uses all its pairs when there are at most
    ``max_pairs``, else ``max_pairs`` pairs drawn uniformly (with replacement) by a generator seeded
    with ``seed``. Returns ``{"genuine": (G,) float32, "impostor": (I,) float32, "genuine_total",
    "impostor_total" (pair counts before sampling), "genuine_sampled", "impostor_sampled"}``.
    """
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    x = np.asarray(descriptors, dtype=np.float32)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(lab)
    if x.shape[0] != n:
        raise ValueError(f"{x.shape[0]} descriptors but {n} labels")
    rng = np.random.default_rng(seed)
    ga, gb, n_gen = genuine_pairs(lab, max_pairs, rng)
    n_imp = n * (n - 1) // 2 - n_gen
    genuine = _row_distances(x, ga, gb)
    # impostor
    if n_imp <= max_pairs:
        parts = []
        for s in range(0, n, block):
            d = pairwise_distances(x[s:s + block], x).astype(np.float32)
            rows = np.arange(s, min(s + block, n))
            keep = (np.arange(n)[None, :] > rows[:, None]) & (lab[None, :] != lab[rows][:, None])
            parts.append(d[keep])
        impostor = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    else:
        impostor = _row_distances(x, *sample_impostor_pairs(lab, max_pairs, rng))
    return {"genuine": genuine, "impostor": impostor, "genuine_total": n_gen, "impostor_total": n_imp,
            "genuine_sampled": n_gen > max_pairs, "impostor_sampled": n_imp > max_pairs}


def false_accept_rate(impostor: np.ndarray, threshold: float = SAME_PERSON_THRESHOLD) -> float:
    """Fraction of impostor distances (I,) strictly below ``threshold`` (NaN when there are none)."""
    d = np.asarray(impostor, dtype=np.float64).reshape(-1)
    return float((d < threshold).mean()) if len(d) else float("nan")


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """``(eer, threshold)`` of "accept when distance <= t" from genuine (G,) and impostor (I,) distances:
    :func:`common.metrics.equal_error_rate` (the one EER of synthface) of the scores ``-distance``, its
    threshold negated back. FAR(t) = fraction of impostors <= t, FRR(t) = fraction of genuines > t;
    perfectly separated distances give ``(0.0, largest genuine distance)``. NaNs when either is empty;
    a ``ValueError`` for NaN/inf distances."""
    g = np.asarray(genuine, dtype=np.float64).reshape(-1)
    i = np.asarray(impostor, dtype=np.float64).reshape(-1)
    if len(g) == 0 or len(i) == 0:
        return float("nan"), float("nan")
    if not (np.isfinite(g).all() and np.isfinite(i).all()):
        raise ValueError("distances contain NaN/inf")
    eer, thr = score_eer(-np.concatenate([g, i]), np.r_[np.ones(len(g), dtype=bool), np.zeros(len(i), dtype=bool)])
    return eer, -thr


def rank1_identification(descriptors: np.ndarray, labels: np.ndarray, block: int = 1024) -> dict[str, Any]:
    """Leave-one-out rank-1 identification among the images (N, D) of identities with 2+ images.

    Each such image is a probe whose gallery is every *other* such image; it is correct when its nearest
    neighbour (Euclidean, first index on ties) has its label. Returns ``{"rank1": fraction or NaN,
    "probes": P, "identities": C}``.
    """
    x = np.asarray(descriptors, dtype=np.float64)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if x.shape[0] != len(lab):
        raise ValueError(f"{x.shape[0]} descriptors but {len(lab)} labels")
    uniq, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
    keep = counts[inv] >= 2
    x, lab = x[keep], lab[keep]
    p = len(lab)
    if p == 0:
        return {"rank1": float("nan"), "probes": 0, "identities": 0}
    correct = 0
    for s in range(0, p, block):
        d = pairwise_distances(x[s:s + block], x)
        rows = np.arange(s, min(s + block, p))
        d[rows - s, rows] = np.inf
        correct += int((lab[d.argmin(1)] == lab[rows]).sum())
    return {"rank1": correct / p, "probes": p, "identities": int((counts >= 2).sum())}


def detection_by_yaw(detected: np.ndarray, yaw: np.ndarray, bins: Sequence[tuple[float, float]] = YAW_BINS,
                     scores: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Detection rate per ``|yaw|`` bin: ``detected`` (N,) bool, ``yaw`` (N,) degrees, and with
    ``scores`` (N,) the mean detection score (``score_mean``). Bins are ``[lo, hi)``; the last one also
    takes ``|yaw| >= hi``. Rate and score NaN for an empty bin."""
    det = np.asarray(detected, dtype=bool).reshape(-1)
    a = np.abs(np.asarray(yaw, dtype=np.float64).reshape(-1))
    if len(det) != len(a):
        raise ValueError(f"{len(det)} detection flags but {len(a)} yaw values")
    sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if sc is not None and len(sc) != len(a):
        raise ValueError(f"{len(sc)} detection scores but {len(a)} yaw values")
    out = []
    for j, (lo, hi) in enumerate(bins):
        m = (a >= lo) & ((a < hi) if j < len(bins) - 1 else True)
        n = int(m.sum())
        out.append({"bin": f"{lo:g}-{hi:g}", "lo": float(lo), "hi": float(hi), "images": n,
                    "detected": int(det[m].sum()), "rate": float(det[m].mean()) if n else float("nan")})
        if sc is not None:
            out[-1]["score_mean"] = float(sc[m].mean()) if n else float("nan")
    return out


def _verification(descriptors: np.ndarray, labels: np.ndarray, max_pairs: int, seed: int) -> dict[str, Any]:
    """Pair figures of one subset; also returns the distance arrays under ``_genuine`` / ``_impostor``."""
    n_ids = len(np.unique(labels))
    pairs = genuine_impostor_distances(descriptors, labels, max_pairs=max_pairs, seed=seed)
    g, i = pairs["genuine"], pairs["impostor"]
    eer, thr = equal_error_rate(g, i)
    r1 = rank1_identification(descriptors, labels)
    nan = float("nan")
    return {
        "images": int(len(labels)), "identities": int(n_ids),
        "genuine_pairs": int(len(g)), "impostor_pairs": int(len(i)),
        "genuine_pairs_total": pairs["genuine_total"], "impostor_pairs_total": pairs["impostor_total"],
        "impostor_sampled": pairs["impostor_sampled"], "genuine_sampled": pairs["genuine_sampled"],
        "genuine_mean": float(g.mean()) if len(g) else nan, "impostor_mean": float(i.mean()) if len(i) else nan,
        "far_at_0.6": false_accept_rate(i), "frr_at_0.6": float((g >= SAME_PERSON_THRESHOLD).mean()) if len(g) else nan,
        "eer": eer, "eer_threshold": thr,
        "rank1": r1["rank1"], "rank1_probes": r1["probes"], "rank1_identities": r1["identities"],
        "_genuine": g, "_impostor": i,
    }


def summarise(desc: Descriptions, labels: np.ndarray, yaw: np.ndarray | None = None,
              max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0) -> dict[str, Any]:
    """All judge figures of one set: ``desc`` of N images, ``labels`` (N,), ``yaw`` (N,) degrees or None.

    Keys: ``num_images``, ``num_identities``, ``num_detected``, ``detection_rate``, ``detection_score``
    (mean and median of ``desc.scores``), ``detection_by_yaw`` (list or None), ``num_faces_multiple``
    (images with 2+ detections), ``detected`` (figures on detected faces: see :func:`_verification`)
    and ``all_images`` (every image, undetected ones from the fallback box). Distance arrays ride along
    under ``_genuine`` / ``_impostor`` inside those two (drop them before JSON: :func:`_public`).
    """
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(lab) != len(desc):
        raise ValueError(f"{len(desc)} descriptions but {len(lab)} labels")
    if len(lab) == 0:
        raise ValueError("no images to judge")
    det = desc.detected
    out: dict[str, Any] = {
        "num_images": int(len(lab)), "num_identities": int(len(np.unique(lab))),
        "num_detected": int(det.sum()), "detection_rate": float(det.mean()),
        "detection_score": {"mean": float(desc.scores.mean()), "median": float(np.median(desc.scores)),
                            "floor": SCORE_FLOOR},
        "num_faces_multiple": int((desc.num_faces >= 2).sum()),
        "detection_by_yaw": None if yaw is None else detection_by_yaw(det, yaw, scores=desc.scores),
        "detected": _verification(desc.descriptors[det], lab[det], max_pairs, seed),
        "all_images": _verification(desc.descriptors, lab, max_pairs, seed),
        "describe_seconds": round(desc.seconds, 3),
        "seconds_per_1000_images": round(1000.0 * desc.seconds / len(lab), 3),
    }
    return out


def _public(x: Any) -> Any:
    """Drop ``_``-prefixed keys and make NaN/inf JSON-safe (None)."""
    if isinstance(x, dict):
        return {k: _public(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [_public(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ------------------------------------------------------------------------------------------------
# plots and markdown
# ------------------------------------------------------------------------------------------------


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_distance_histograms(sets: Mapping[str, Mapping[str, Any]], path: Path) -> str:
    """One panel per set: genuine / impostor distance densities (detected faces) and the 0.6 line."""
    fig = _figure((5.5 * len(sets), 4.2))
    bins = np.linspace(0.0, 1.2, 61)
    ax0 = None
    for k, (name, s) in enumerate(sets.items()):
        ax = fig.add_subplot(1, len(sets), k + 1, sharey=ax0)
        ax0 = ax0 or ax
        v = s["detected"]
        for key, colour, label in (("_genuine", "tab:green", "genuine"), ("_impostor", "tab:red", "impostor")):
            d = np.clip(v[key], bins[0], bins[-1])
            if len(d):
                ax.hist(d, bins=bins, density=True, alpha=0.55, color=colour,
                        label=f"{label} (n={len(d):,}, mean {d.mean():.2f})")
        ax.axvline(SAME_PERSON_THRESHOLD, color="k", ls="--", lw=1, label="same-person threshold 0.6")
        ax.set_title(f"{name}: detected {_pct(s['detection_rate'])}, EER {_pct(v['eer'])}, "
                     f"FAR@0.6 {_pct(v['far_at_0.6'])}", fontsize=9)
        ax.set_xlabel("dlib descriptor distance (Euclidean)")
        if k == 0:
            ax.set_ylabel("density")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    return path.name


def plot_detection_by_yaw(sets: Mapping[str, Mapping[str, Any]], path: Path) -> str:
    """Bars: detection rate per |yaw| bin of each set with yaw; dashed lines: overall rates."""
    fig = _figure((6.5, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    with_yaw = [(n, s) for n, s in sets.items() if s.get("detection_by_yaw")]
    width = 0.8 / max(1, len(with_yaw))
    labels = [f"{b[0]:g}-{b[1]:g}" for b in YAW_BINS]
    x = np.arange(len(YAW_BINS))
    colours = ["tab:blue", "tab:orange", "tab:purple"]
    for j, (name, s) in enumerate(with_yaw):
        rows = s["detection_by_yaw"]
        rates = [100 * r["rate"] if r["images"] else 0.0 for r in rows]
        bars = ax.bar(x + (j - (len(with_yaw) - 1) / 2) * width, rates, width, color=colours[j % 3], label=name)
        for b, r in zip(bars, rows):
            ax.annotate(f"n={r['images']}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=7)
    for j, (name, s) in enumerate(sets.items()):
        ax.axhline(100 * s["detection_rate"], ls="--", lw=1, color=["k", "tab:gray", "tab:brown"][j % 3],
                   label=f"{name} overall {100 * s['detection_rate']:.1f}%")
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_xlabel("|yaw| (degrees, from the metadata)")
    ax.set_ylabel("HOG detection rate (%)")
    ax.set_ylim(0, 110)
    ax.set_title("dlib HOG face detection vs head yaw", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    return path.name


def _pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.1f}%"


def _num(x: Any, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def summary_table(sets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown table (one column per set) of the headline figures."""
    names = list(sets)
    rows = [
        ("images / identities", lambda s: f"{s['num_images']} / {s['num_identities']}"),
        ("detection rate", lambda s: _pct(s["detection_rate"])),
        ("detection score, mean (median)", lambda s: f"{_num(s['detection_score']['mean'])} "
         f"({_num(s['detection_score']['median'])})" if s.get("detection_score") else "-"),
        ("genuine mean distance", lambda s: _num(s["detected"]["genuine_mean"])),
        ("impostor mean distance", lambda s: _num(s["detected"]["impostor_mean"])),
        ("FAR@0.6 (impostor pairs < 0.6)", lambda s: _pct(s["detected"]["far_at_0.6"])),
        ("FRR@0.6 (genuine pairs >= 0.6)", lambda s: _pct(s["detected"]["frr_at_0.6"])),
        ("EER (threshold)", lambda s: f"{_pct(s['detected']['eer'])} ({_num(s['detected']['eer_threshold'])})"),
        ("rank-1 identification (probes)", lambda s: f"{_pct(s['detected']['rank1'])} ({s['detected']['rank1_probes']})"),
        ("genuine / impostor pairs", lambda s: f"{s['detected']['genuine_pairs']:,} / {s['detected']['impostor_pairs']:,}"
         + (" (sampled)" if s["detected"]["impostor_sampled"] else "")),
        ("EER, all images (fallback box)", lambda s: _pct(s["all_images"]["eer"])),
        ("FAR@0.6, all images", lambda s: _pct(s["all_images"]["far_at_0.6"])),
        ("seconds per 1000 images", lambda s: _num(s["seconds_per_1000_images"], 1)),
    ]
    out = ["| metric (detected faces unless said) | " + " | ".join(names) + " |",
           "| --- |" + " --- |" * len(names)]
    out += [f"| {label} | " + " | ".join(f(sets[n]) for n in names) + " |" for label, f in rows]
    return out


def yaw_table(sets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown table of detection rate per |yaw| bin (sets with yaw only); [] when none has yaw."""
    with_yaw = [n for n, s in sets.items() if s.get("detection_by_yaw")]
    if not with_yaw:
        return []
    out = ["| \\|yaw\\| (deg) | " + " | ".join(with_yaw) + " |", "| --- |" + " --- |" * len(with_yaw)]
    for j, (lo, hi) in enumerate(YAW_BINS):
        cells = []
        for n in with_yaw:
            r = sets[n]["detection_by_yaw"][j]
            score = f", score {_num(r['score_mean'])}" if r.get("score_mean") is not None else ""
            cells.append(f"{_pct(r['rate'])} ({r['detected']}/{r['images']}{score})")
        out.append(f"| {lo:g}-{hi:g} | " + " | ".join(cells) + " |")
    return out


def markdown_summary(report: Mapping[str, Any], heading: str = "##") -> list[str]:
    """Markdown lines of a judge report (as returned by :func:`judge_dataset` / :func:`judge_arrays`)."""
    sets = report["sets"]
    j = report["judge"]
    lines = [f"{heading} Real-face judge (dlib)", "",
             f"dlib {j['dlib_version']}: HOG detector (upsample {j['upsample']}), largest face, 5-point shape, "
             f"ResNet 128-d descriptor (num_jitters {j['jitters']}); same person when distance < "
             f"{SAME_PERSON_THRESHOLD}. Pair figures on detected faces; seed {report['seed']}.", ""]
    lines += summary_table(sets) + [""]
    yt = yaw_table(sets)
    if yt:
        lines += ["Detection rate by |yaw| (bins [lo, hi), the last one open-ended), with the mean detection "
                  "score:", ""] + yt + [""]
    for n, s in sets.items():
        d = s["detected"]
        if d["impostor_sampled"] or d["genuine_sampled"]:
            lines.append(f"{n}: {d['impostor_pairs']:,} of {d['impostor_pairs_total']:,} impostor pairs "
                         f"(and {d['genuine_pairs']:,} of {d['genuine_pairs_total']:,} genuine) drawn uniformly, seed "
                         f"{report['seed']}.")
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """The ``report.md`` of :func:`judge_dataset`."""
    sets, files = report["sets"], report.get("files", {})
    lines = ["# synthface real-face judge report", ""]
    for n, s in sets.items():
        src = s["source"]
        sub = ", ".join(f"{k} {src[k]}" for k in ("max_ids", "per_id") if src.get(k))
        lines.append(f"- {n}: `{src['path']}` ({src['format']}{', synthface metadata' if src['synthface'] else ''})"
                     f", {s['num_images']} of {src['images_total']} images{' (' + sub + ')' if sub else ''}.")
    lines.append("")
    lines += markdown_summary(report)
    for key, title in (("distance_histograms", "Distance histograms"), ("detection_by_yaw", "Detection vs yaw")):
        if files.get(key):
            lines += [f"### {title}", "", f"![{key}]({files[key]})", ""]
    lines += ["### Definitions", ""] + [f"- **{k}**: {v}." for k, v in report["definitions"].items()] + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the whole judge
# ------------------------------------------------------------------------------------------------


def _judge_header(models: JudgeModels, upsample: int, jitters: int) -> dict[str, Any]:
    dlib = require_dlib()
    return {"dlib_version": getattr(dlib, "__version__", "unknown"), "detector": "HOG frontal_face_detector",
            "shape_predictor": str(models.shape_predictor), "face_recognition_model": str(models.face_recognition),
            "upsample": int(upsample), "jitters": int(jitters), "threshold": SAME_PERSON_THRESHOLD,
            "fallback_box": list(FALLBACK_BOX)}


def judge_dataset(dataset: str | os.PathLike, real: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
          max_ids: int | None = None, per_id: int | None = None, upsample: int = DEFAULT_UPSAMPLE,
          jitters: int = DEFAULT_JITTERS, seed: int = 0, workers: int | None = None,
          max_pairs: int = DEFAULT_MAX_PAIRS, models: JudgeModels | None = None,
          log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Judge ``dataset`` (and ``real`` side by side); with ``out`` write ``report.json``, ``report.md``,
    ``distance_histograms.png`` and ``detection_by_yaw.png`` there. ``max_ids`` / ``per_id`` subsample
    both sets (see :func:`load_face_set`). Returns the JSON-safe report dict."""
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    faces = {"dataset": load_face_set(dataset, max_ids, per_id, seed, "dataset")}
    if real is not None:
        faces["real"] = load_face_set(real, max_ids, per_id, seed, "real folder")
    require_dlib()
    models = models or find_models()
    sets: dict[str, dict[str, Any]] = {}
    for name, fs in faces.items():
        say(f"judging {name} {fs.describe['path']}: {len(fs)} images, {len(fs.names)} identities ...")
        desc = describe_face_set(fs, models, upsample, jitters, workers)
        s = summarise(desc, fs.labels, fs.yaw, max_pairs=max_pairs, seed=seed)
        s["source"] = fs.describe
        sets[name] = s
        say(f"  detected {s['num_detected']}/{s['num_images']} in {desc.seconds:.1f}s")
    report: dict[str, Any] = {"judge": _judge_header(models, upsample, jitters), "seed": int(seed),
                              "max_pairs": int(max_pairs), "workers": workers, "sets": sets,
                              "definitions": DEFINITIONS}
    if out is not None:
        outdir = Path(out)
        outdir.mkdir(parents=True, exist_ok=True)
        files = {"distance_histograms": plot_distance_histograms(sets, outdir / "distance_histograms.png")}
        if any(s.get("detection_by_yaw") for s in sets.values()):
            files["detection_by_yaw"] = plot_detection_by_yaw(sets, outdir / "detection_by_yaw.png")
        report["files"] = files
    report["seconds"] = round(time.perf_counter() - t0, 3)
    report = _public(report)
    if out is not None:
        (outdir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        (outdir / "report.md").write_text(render_markdown(report))
        say(f"report written to {outdir / 'report.md'}")
    return report


def judge_arrays(batches: Iterable[Any], labels: np.ndarray, yaw: np.ndarray | None = None,
                 upsample: int = DEFAULT_UPSAMPLE, jitters: int = DEFAULT_JITTERS, seed: int = 0,
                 workers: int | None = None, max_pairs: int = DEFAULT_MAX_PAIRS, models: JudgeModels | None = None,
                 name: str = "dataset") -> dict[str, Any]:
    """Judge in-memory images (batches as in :func:`describe_arrays`; N images in all, ``labels`` (N,))
    -> a JSON-safe report ``{"judge", "seed", "max_pairs", "sets": {name: summary}}`` (no files)."""
    require_dlib()
    models = models or find_models()
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    desc = describe_arrays(batches, models, upsample, jitters, workers)
    s = summarise(desc, labels, yaw, max_pairs=max_pairs, seed=seed)
    return _public({"judge": _judge_header(models, upsample, jitters), "seed": int(seed), "max_pairs": int(max_pairs),
                    "workers": workers, "sets": {name: s}, "definitions": DEFINITIONS})


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "engine.judge",
        description="Score a face dataset with dlib's real-face recogniser (HOG detector, 5-point shape, ResNet "
                    "128-d descriptor; same person below distance 0.6): detection rate (per |yaw| bin for "
                    "synthface datasets), genuine/impostor distances, FAR@0.6, EER, rank-1. Needs the extra: "
                    + INSTALL_HINT)
    p.add_argument("dataset", help="synthface dataset dir (engine.render output) or face folder DIR/<person>/<image>")
    p.add_argument("--real", help="real face folder judged side by side (e.g. ../shared/data/lfw-dev/images)")
    cli.add_out(p, default="judge_report", help="report directory (default: judge_report)")
    p.add_argument("--max-ids", type=int, help="judge at most this many identities of each set (seeded sample)")
    p.add_argument("--per-id", type=int, help="judge at most the first K images of each identity")
    p.add_argument("--upsample", type=int, default=DEFAULT_UPSAMPLE,
                   help=f"HOG detector pyramid up-samplings (default {DEFAULT_UPSAMPLE})")
    p.add_argument("--jitters", type=int, default=DEFAULT_JITTERS,
                   help=f"descriptor num_jitters (default {DEFAULT_JITTERS}; 0 and 1 mean no jitter)")
    p.add_argument("--seed", type=int, default=0, help="seed of the identity and pair sampling (default 0)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="dlib worker processes (default: CPU count; 0 or 1 = in this process)")
    p.add_argument("--max-pairs", type=int, default=DEFAULT_MAX_PAIRS,
                   help=f"all impostor/genuine pairs up to this many, else a seeded sample (default {DEFAULT_MAX_PAIRS})")
    p.add_argument("--shape-predictor", help=f"{SHAPE_PREDICTOR_FILE} path (default: ${ENV_SHAPE_PREDICTOR} or the "
                                             "face_recognition_models package)")
    p.add_argument("--face-recognition-model", help=f"{FACE_RECOGNITION_FILE} path (default: "
                                                    f"${ENV_FACE_RECOGNITION_MODEL} or the package)")
    cli.add_quiet(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))

    def work() -> None:
        given = args.shape_predictor or args.face_recognition_model
        models = find_models(args.shape_predictor, args.face_recognition_model) if given else None
        report = judge_dataset(args.dataset, real=args.real, out=args.out, max_ids=args.max_ids, per_id=args.per_id,
                               upsample=args.upsample, jitters=args.jitters, seed=args.seed, workers=args.workers,
                               max_pairs=args.max_pairs, models=models, log=log)
        print("\n".join(summary_table(report["sets"])))
        yt = yaw_table(report["sets"])
        if yt:
            print()
            print("\n".join(yt))
        print(f"\nreport: {Path(args.out) / 'report.md'}")

    return cli.run(work, also=(ImportError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    # run the importable module (pool workers unpickle functions of engine.judge, not of __main__)
    from engine.judge import main as _main

    sys.exit(_main())
