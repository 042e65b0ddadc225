"""Loaders for external 3D morphable face models that users download themselves.

Every loader converts its model into :class:`morphable.model.MorphableModel` in the frame that
``morphable/model.py`` fixes: metres, right-handed, +y up, +z out of the face towards the viewer,
+x to image-right when frontal (the subject's left), translated so that the midpoint of the two
eye landmarks is the origin.

Supported formats (the files are not redistributed with this project; see each loader):

* :func:`load_ict`   -- ICT-FaceKit ``FaceXModel`` folder of OBJ morph targets (MIT licence).
* :func:`load_bfm`   -- Basel Face Model 2009 (``01_MorphableModel.mat``) and the statismo HDF5
  files of BFM 2017 / 2019 (``model2017-1_bfm_nomouth.h5`` ...).
* :func:`load_flame` -- FLAME 2020 / 2023 ``generic_model.pkl`` (read with a restricted unpickler
  that never imports chumpy nor executes pickled code) or an ``.npz`` with the same arrays.
* :func:`load_model` -- dispatches on ``kind`` or by sniffing the path.

Common behaviour
----------------
* ``landmarks``: optional ``{name: vertex index | [vertex indices]}`` for the five names in
  :data:`morphable.model.LANDMARK_NAMES` (``eye_left`` is the eye on the image-left when frontal, i.e.
  the subject's right eye, at smaller x).  A list is averaged (``landmark_vertices`` /
  ``landmark_weights``).  Without it, built-in indices are used for the official ICT topology
  (the Multi-PIE 68 indices published in the ICT-FaceKit README); otherwise the geometric heuristic
  :func:`locate_landmarks` runs on the mean shape.  Every landmark set is sanity-checked (left/right
  order, eyes above nose above mouth, nose in front of the eyes, plausible eye distance); user
  landmarks that fail raise ``ValueError``; failing built-in indices fall back to the heuristic with a
  warning; a failing heuristic raises ``ValueError`` asking for explicit landmarks.
* Triangle winding is made counter-clockwise seen from outside: the summed normal of the triangles
  around the nose tip must point to +z, otherwise all triangles are flipped (BFM 2009 ships
  clockwise triangles).  ``meta["winding_flipped"]`` records it.
* Units: each loader takes ``units`` (``"m"``, ``"dm"``, ``"cm"``, ``"mm"``, ``"um"``, ``"auto"`` or a
  float factor to metres).  ``"auto"`` picks the unit that makes the mean shape about head-sized.  A
  model whose extent is not 5 cm .. 2 m after conversion is rejected (wrong units are the commonest
  silent failure).
* Regions: ICT gets the vertex ranges of its README; models with separate eyeball meshes (FLAME) get
  ``eyes`` from the detected eyeball components; otherwise ``{"skin": all True}``.
* Every structural problem (missing key, inconsistent vertex counts, indices out of range, non-finite
  values, unreadable or forbidden content) raises ``ValueError`` whose message names the file.  A path
  that does not exist raises ``FileNotFoundError``.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .model import LANDMARK_NAMES, MorphableModel

__all__ = [
    "ObjMesh",
    "read_obj",
    "locate_landmarks",
    "load_ict",
    "load_bfm",
    "load_flame",
    "load_model",
    "ICT_LANDMARKS",
    "ICT_MULTIPIE68",
]

LandmarkSpec = Mapping[str, "int | Sequence[int]"]

_UNITS = {"m": 1.0, "dm": 0.1, "cm": 0.01, "mm": 1e-3, "um": 1e-6, "µm": 1e-6}
_MIN_EXTENT_M, _MAX_EXTENT_M = 0.05, 2.0

# Anthropometric priors (metres) used by the landmark heuristic, relative to the nose tip.  They are
# the ArcFace 5-point template proportions at an inter-pupillary distance of 63 mm.
_EYE_HALF_IPD = 0.0315
_EYE_ABOVE_NOSE = 0.035
_MOUTH_BELOW_NOSE = 0.034
_MOUTH_HALF_WIDTH = 0.025


# --------------------------------------------------------------------------------------------------
# OBJ
# --------------------------------------------------------------------------------------------------
@dataclass
class ObjMesh:
    """A Wavefront OBJ mesh with polygons fan-triangulated.

    Attributes:
        vertices: (V, 3) float64 positions in file units.
        uv: (T, 2) float64 texture coordinates or None when the file has no ``vt``.
        faces: (F, 3) int64 triangles (0-based); polygon ``(p0, p1, ..., pn)`` becomes
            ``(p0, p1, p2), (p0, p2, p3), ...`` so the polygon's winding is kept.
        faces_uv: (F, 3) int64 indices into ``uv`` or None when not every corner has a ``vt``.
        face_polygon: (F,) int64 index of the source polygon of each triangle.
        num_polygons: number of ``f`` records.
    """

    vertices: np.ndarray
    uv: np.ndarray | None
    faces: np.ndarray
    faces_uv: np.ndarray | None
    face_polygon: np.ndarray
    num_polygons: int


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return path.read_bytes()
    except OSError as e:  # a directory, permissions ...
        raise ValueError(f"{path}: cannot read file: {e}") from e


def _obj_index(tok: str, count: int, what: str, path: Path, lineno: int) -> int:
    try:
        i = int(tok)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: bad {what} index {tok!r} in face") from None
    if i > 0:
        j = i - 1
    elif i < 0:
        j = count + i
    else:
        raise ValueError(f"{path}:{lineno}: OBJ indices are 1-based, got 0")
    if not 0 <= j < count:
        raise ValueError(f"{path}:{lineno}: face references {what} {i} but only {count} {what}s are defined so far")
    return j


def read_obj(path: str | os.PathLike) -> ObjMesh:
    """Read a Wavefront OBJ: ``v``, ``vt`` and ``f`` records (``i``, ``i/t``, ``i//n``, ``i/t/n``,
    negative relative indices); polygons are fan-triangulated.  Other records are ignored.

    Raises ``ValueError`` naming the file and line for malformed records or out-of-range indices.
    """
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = data.decode("latin-1")
        except UnicodeDecodeError as e:  # pragma: no cover - latin-1 decodes anything
            raise ValueError(f"{path}: not a text OBJ file") from e
    if "\x00" in text:
        raise ValueError(f"{path}: not a text OBJ file (contains NUL bytes)")
    verts: list[list[str]] = []
    uvs: list[list[str]] = []
    tri_v: list[tuple[int, int, int]] = []
    tri_t: list[tuple[int, int, int] | None] = []
    tri_poly: list[int] = []
    npoly = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line or line[0] not in "vf":
            continue
        parts = line.split()
        if not parts:
            continue
        tag = parts[0]
        if tag == "v":
            if len(parts) < 4:
                raise ValueError(f"{path}:{lineno}: vertex record needs 3 coordinates: {line.strip()!r}")
            verts.append(parts[1:4])
        elif tag == "vt":
            if len(parts) < 3:
                raise ValueError(f"{path}:{lineno}: texture record needs 2 coordinates: {line.strip()!r}")
            uvs.append(parts[1:3])
        elif tag == "f":
            corners = parts[1:]
            if len(corners) < 3:
                raise ValueError(f"{path}:{lineno}: face with fewer than 3 vertices")
            vi: list[int] = []
            ti: list[int] | None = []
            for c in corners:
                sub = c.split("/")
                vi.append(_obj_index(sub[0], len(verts), "vertex", path, lineno))
                if ti is not None and len(sub) > 1 and sub[1]:
                    ti.append(_obj_index(sub[1], len(uvs), "texture coordinate", path, lineno))
                else:
                    ti = None
            for k in range(1, len(vi) - 1):
                tri_v.append((vi[0], vi[k], vi[k + 1]))
                tri_t.append(None if ti is None else (ti[0], ti[k], ti[k + 1]))
                tri_poly.append(npoly)
            npoly += 1
    if not verts:
        raise ValueError(f"{path}: no vertices ('v' records) found")
    try:
        V = np.asarray(verts, dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"{path}: non-numeric vertex coordinate ({e})") from None
    UV = None
    if uvs:
        try:
            UV = np.asarray(uvs, dtype=np.float64)
        except ValueError as e:
            raise ValueError(f"{path}: non-numeric texture coordinate ({e})") from None
    faces = np.asarray(tri_v, dtype=np.int64).reshape(-1, 3)
    faces_uv = None
    if tri_t and all(t is not None for t in tri_t):
        faces_uv = np.asarray(tri_t, dtype=np.int64).reshape(-1, 3)
    return ObjMesh(V, UV, faces, faces_uv, np.asarray(tri_poly, dtype=np.int64), npoly)


def _read_obj_vertices(path: Path) -> np.ndarray:
    """Fast path for morph targets: only the ``v`` records, (V, 3) float64."""
    data = _read_bytes(path)
    lines = [ln for ln in data.split(b"\n") if ln.startswith(b"v ") or ln.startswith(b"v\t")]
    if not lines:
        raise ValueError(f"{path}: no vertices ('v' records) found")
    rows = [ln.split()[1:4] for ln in lines]
    if any(len(r) != 3 for r in rows):
        raise ValueError(f"{path}: a vertex record has fewer than 3 coordinates")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"{path}: non-numeric vertex coordinate ({e})") from None


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------
def _unit_scale(units: str | float, points: np.ndarray, path: Path) -> tuple[float, str]:
    """Factor from file units to metres, and a description."""
    if isinstance(units, (int, float)) and not isinstance(units, bool):
        if not (math.isfinite(units) and units > 0):
            raise ValueError(f"{path}: units factor must be a positive number, got {units!r}")
        return float(units), f"x{float(units):g}"
    if not isinstance(units, str):
        raise ValueError(f"{path}: units must be a string or a float, got {units!r}")
    if units == "auto":
        ext = float(np.max(np.ptp(points, axis=0)))
        if not math.isfinite(ext) or ext <= 0:
            raise ValueError(f"{path}: degenerate mean shape (extent {ext}), cannot infer units")
        # A face / head model is a few decimetres across: pick the unit whose conversion is closest
        # (in log scale) to 0.25 m.  Candidate units are a factor >= 10 apart, so this is unambiguous.
        best = min(("m", "dm", "cm", "mm", "um"), key=lambda u: abs(math.log10(ext * _UNITS[u] / 0.25)))
        return _UNITS[best], f"{best} (auto)"
    if units not in _UNITS:
        raise ValueError(f"{path}: unknown units {units!r}; use one of {sorted(_UNITS)} or 'auto' or a float")
    return _UNITS[units], units


def _check_extent(mean_m: np.ndarray, unit_desc: str, path: Path) -> None:
    ext = float(np.max(np.ptp(mean_m, axis=0)))
    if not (_MIN_EXTENT_M <= ext <= _MAX_EXTENT_M):
        raise ValueError(
            f"{path}: the mean shape is {ext:.4g} m across after converting from {unit_desc}; a face model "
            f"should be {_MIN_EXTENT_M}..{_MAX_EXTENT_M} m. The file's units are probably different: pass units=..."
        )


def _median_edge(P: np.ndarray, F: np.ndarray) -> float:
    if len(F) == 0:
        return 0.0
    sel = F if len(F) <= 200_000 else F[:: len(F) // 200_000 + 1]
    e = np.linalg.norm(P[sel[:, [1, 2, 0]]] - P[sel], axis=-1)
    return float(np.median(e))


def _components(F: np.ndarray, V: int) -> tuple[int, np.ndarray]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(F) == 0:
        return V, np.arange(V)
    r = np.concatenate([F[:, 0], F[:, 1], F[:, 2]])
    c = np.concatenate([F[:, 1], F[:, 2], F[:, 0]])
    A = coo_matrix((np.ones(len(r), dtype=np.int32), (r, c)), shape=(V, V))
    return connected_components(A, directed=False)


def _find_eyeballs(P: np.ndarray, F: np.ndarray, xc: float, nose: np.ndarray):
    """Separate, roughly spherical mesh components of eyeball size on each side above the nose.

    Returns ``(pupil_left, pupil_right, eye_vertices)`` (pupil = the front-most (+z) vertex of the
    eyeball and of the components lying on it, e.g. an iris/cornea mesh) or None.
    """
    n, lab = _components(F, len(P))
    if n < 3:
        return None
    counts = np.bincount(lab, minlength=n)
    order = np.argsort(lab, kind="stable")
    groups = np.split(order, np.cumsum(counts)[:-1])
    cents = np.array([P[g].mean(0) for g in groups])
    best: dict[int, tuple[int, int]] = {}
    for ci, g in enumerate(groups):
        if len(g) < 20:
            continue
        Q = P[g]
        ext = np.ptp(Q, axis=0)
        if not (np.all(ext >= 0.014) and np.all(ext <= 0.040) and ext.max() / ext.min() <= 1.6):
            continue
        r = np.linalg.norm(Q - cents[ci], axis=1)
        if r.std() > 0.25 * r.mean():
            continue
        dx = cents[ci, 0] - xc
        dy = cents[ci, 1] - nose[1]
        if not (0.012 <= abs(dx) <= 0.06 and 0.0 <= dy <= 0.08 and cents[ci, 2] < nose[2]):
            continue
        side = 0 if dx < 0 else 1
        if side not in best or len(g) > best[side][1]:
            best[side] = (ci, len(g))
    if len(best) != 2:
        return None
    pupils = []
    eye_vertices = []
    for side in (0, 1):
        ci = best[side][0]
        c = cents[ci]
        radius = float(np.linalg.norm(P[groups[ci]] - c, axis=1).mean())
        members = [groups[ci]]
        for cj, g in enumerate(groups):
            if cj == ci or np.linalg.norm(cents[cj] - c) > radius:
                continue
            if np.linalg.norm(P[g] - c, axis=1).max() <= 1.15 * radius:  # lies on the eyeball (iris, cornea)
                members.append(g)
        idx = np.concatenate(members)
        pupils.append(int(idx[np.argmax(P[idx, 2])]))
        eye_vertices.append(idx)
    return pupils[0], pupils[1], np.concatenate(eye_vertices)


def _snap(P: np.ndarray, x: float, y: float, edge: float) -> int:
    """Front-most vertex near (x, y): among vertices within a small xy disc, those within 2 mm of the
    largest z (the visible surface), the one nearest in xy."""
    d = np.hypot(P[:, 0] - x, P[:, 1] - y)
    r = max(0.003, 0.75 * edge)
    for _ in range(10):
        cand = np.flatnonzero(d < r)
        if cand.size:
            break
        r *= 1.5
    else:
        return int(np.argmin(d))
    zmax = P[cand, 2].max()
    front = cand[P[cand, 2] >= zmax - 0.002]
    return int(front[np.argmin(d[front])])


def _find_stomion(P: np.ndarray, xc: float, nose: np.ndarray, edge: float) -> float | None:
    """y of the lip line on the midline: the front profile's local minimum between the lips."""
    w = max(0.004, 0.75 * edge)
    binw = max(0.0015, 0.5 * edge)
    if binw > 0.004:
        return None  # too coarse to resolve the lips
    sel = (np.abs(P[:, 0] - xc) < w) & (P[:, 1] < nose[1] - 0.005) & (P[:, 1] > nose[1] - 0.07)
    if sel.sum() < 8:
        return None
    y, z = P[sel, 1], P[sel, 2]
    b = np.floor((nose[1] - y) / binw).astype(np.int64)
    nb = int(b.max()) + 1
    prof = np.full(nb, -np.inf)
    np.maximum.at(prof, b, z)
    keep = np.isfinite(prof)  # drop empty bins: neighbours are the next occupied bins
    centres = (nose[1] - (np.arange(nb) + 0.5) * binw)[keep]
    prof = prof[keep]
    best, best_y = None, None
    expected = nose[1] - _MOUTH_BELOW_NOSE
    for k in range(1, len(prof) - 1):
        if not (nose[1] - 0.047 <= centres[k] <= nose[1] - 0.024):
            continue
        if prof[k] > prof[k - 1] or prof[k] > prof[k + 1]:
            continue
        above = np.flatnonzero((centres > centres[k]) & (centres <= centres[k] + 0.012))
        below = np.flatnonzero((centres < centres[k]) & (centres >= centres[k] - 0.012))
        if not (above.size and below.size):
            continue
        a = above[np.argmax(prof[above])]
        b = below[np.argmax(prof[below])]
        # Both neighbouring maxima must be real bumps (upper / lower lip), not a slope that keeps
        # rising out of the window (the nose above the subnasale).
        if (a > 0 and prof[a - 1] > prof[a]) or (b < len(prof) - 1 and prof[b + 1] > prof[b]):
            continue
        depth = min(prof[a], prof[b]) - prof[k]
        if depth < 0.0008:
            continue
        dist = abs(centres[k] - expected)
        if best is None or dist < best:
            best, best_y = dist, float(centres[k])
    return best_y


def locate_landmarks(
    vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor
) -> tuple[dict[str, list[int]], dict]:
    """Geometric heuristic for the 5 ArcFace landmarks on a mean face in the model frame (metres,
    +y up, +z towards the viewer).

    1. midline ``xc`` = centre of the bounding box in x; nose tip = the front-most (max z) vertex
       within ~6 mm of the midline.
    2. lip line: the deepest local minimum of the front profile along the midline 24..47 mm below the
       nose tip (needs a mesh finer than ~8 mm); its distance to the nose, relative to the 34 mm
       average, gives a face scale ``s`` (clipped to 0.85..1.2); without it ``s = 1``.
    3. eyes: if the mesh has separate, roughly spherical eyeball components (FLAME, ICT) the pupils are
       their front-most vertices; otherwise the front surface vertex nearest to
       ``(xc -/+ 31.5 mm * s, nose_y + 35 mm * s)``.
    4. mouth corners: the front surface vertex nearest to ``(xc -/+ 25 mm * s, lip line y)``.

    Expected accuracy on a mean face is a few millimetres (eyes with eyeball meshes: exact pupils);
    pass explicit landmarks to a loader for anything better.  Returns ``(landmarks, info)`` with
    ``landmarks[name] = [vertex index]`` and ``info`` describing what was found (``eye_vertices``:
    indices of eyeball meshes, if any).
    """
    P = np.asarray(vertices.detach().cpu() if isinstance(vertices, torch.Tensor) else vertices, dtype=np.float64)
    F = np.asarray(faces.detach().cpu() if isinstance(faces, torch.Tensor) else faces, dtype=np.int64)
    if P.ndim != 2 or P.shape[1] != 3 or len(P) < 5:
        raise ValueError(f"locate_landmarks: need (V, 3) vertices, got {P.shape}")
    edge = _median_edge(P, F)
    xc = 0.5 * float(P[:, 0].min() + P[:, 0].max())
    band = max(0.006, 0.75 * edge)
    mid = np.flatnonzero(np.abs(P[:, 0] - xc) < band)
    if mid.size == 0:
        raise ValueError("locate_landmarks: no vertex near the mid-sagittal plane")
    nose = int(mid[np.argmax(P[mid, 2])])
    n = P[nose]
    stom = _find_stomion(P, xc, n, edge)
    s = 1.0
    if stom is not None:
        s = float(np.clip((n[1] - stom) / _MOUTH_BELOW_NOSE, 0.85, 1.2))
    mouth_y = stom if stom is not None else n[1] - _MOUTH_BELOW_NOSE
    info: dict[str, Any] = {"scale": s, "lip_line_found": stom is not None, "eyeballs": False}
    eb = _find_eyeballs(P, F, xc, n)
    if eb is not None:
        el, er, eye_vertices = eb
        info["eyeballs"] = True
        info["eye_vertices"] = eye_vertices
    else:
        el = _snap(P, xc - _EYE_HALF_IPD * s, n[1] + _EYE_ABOVE_NOSE * s, edge)
        er = _snap(P, xc + _EYE_HALF_IPD * s, n[1] + _EYE_ABOVE_NOSE * s, edge)
    ml = _snap(P, xc - _MOUTH_HALF_WIDTH * s, mouth_y, edge)
    mr = _snap(P, xc + _MOUTH_HALF_WIDTH * s, mouth_y, edge)
    lms = {"eye_left": [el], "eye_right": [er], "nose_tip": [nose], "mouth_left": [ml], "mouth_right": [mr]}
    return lms, info


def _parse_landmarks(spec: LandmarkSpec, V: int, path: Path) -> list[list[int]]:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{path}: landmarks must be a dict {{name: index or [indices]}}, got {type(spec).__name__}")
    missing = [k for k in LANDMARK_NAMES if k not in spec]
    extra = [k for k in spec if k not in LANDMARK_NAMES]
    if missing or extra:
        raise ValueError(f"{path}: landmarks must have exactly the keys {list(LANDMARK_NAMES)}; "
                         f"missing {missing}, unknown {extra}")
    out = []
    for k in LANDMARK_NAMES:
        v = spec[k]
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            items = [v]
        elif isinstance(v, np.ndarray):
            items = list(v.reshape(-1))
        elif isinstance(v, (list, tuple)):
            items = list(v)
        else:
            items = []
        if not items:
            raise ValueError(f"{path}: landmark {k!r} must be a vertex index or a non-empty list of indices, got {v!r}")
        idx = []
        for i in items:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise ValueError(f"{path}: landmark {k!r} has a non-integer index {i!r}")
            if not 0 <= int(i) < V:
                raise ValueError(f"{path}: landmark {k!r} index {int(i)} out of range for {V} vertices")
            idx.append(int(i))
        out.append(idx)
    return out


def _landmark_positions(P: np.ndarray, lists: list[list[int]]) -> np.ndarray:
    return np.stack([P[idx].mean(0) for idx in lists])


def _landmark_problems(pos: np.ndarray) -> list[str]:
    el, er, nose, ml, mr = pos
    probs = []
    if not el[0] < er[0]:
        probs.append("eye_left must have smaller x than eye_right (image-left eye = subject's right eye)")
    if not ml[0] < mr[0]:
        probs.append("mouth_left must have smaller x than mouth_right")
    if not min(el[1], er[1]) > nose[1]:
        probs.append("the eyes must be above (+y) the nose tip")
    if not nose[1] > max(ml[1], mr[1]):
        probs.append("the nose tip must be above (+y) the mouth corners")
    if not nose[2] > 0.5 * (el[2] + er[2]):
        probs.append("the nose tip must be in front (+z) of the eyes")
    ipd = float(np.linalg.norm(er - el))
    if not 0.03 <= ipd <= 0.12:
        probs.append(f"eye distance {ipd * 1000:.1f} mm is not a human 30..120 mm")
    return probs


def _orient_faces(P: np.ndarray, F: np.ndarray, nose: np.ndarray) -> bool:
    """True when the triangles around the nose tip face -z (clockwise seen from outside)."""
    if len(F) == 0:
        return False
    cent = P[F].mean(1)
    k = min(50, len(F))
    near = np.argpartition(np.linalg.norm(cent - nose, axis=1), k - 1)[:k]
    tri = P[F[near]]
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return float(nrm[:, 2].sum()) < 0


def _as_tensor(a: np.ndarray | None, dtype=torch.float32) -> torch.Tensor | None:
    if a is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def _build(
    *,
    path: Path,
    name: str,
    mean: np.ndarray,
    shape_basis: np.ndarray,
    shape_std: np.ndarray,
    expression_basis: np.ndarray,
    expression_labels: list[str],
    expression_kind: str,
    expression_std: np.ndarray | None,
    faces: np.ndarray,
    unit_desc: str,
    landmarks: LandmarkSpec | None,
    builtin_landmarks: tuple[str, list[list[int]]] | None = None,
    uv: np.ndarray | None = None,
    faces_uv: np.ndarray | None = None,
    albedo_mean: np.ndarray | None = None,
    albedo_basis: np.ndarray | None = None,
    albedo_std: np.ndarray | None = None,
    regions: dict[str, np.ndarray] | None = None,
    meta: dict | None = None,
) -> MorphableModel:
    """Validate, resolve landmarks, fix winding, centre on the eye midpoint, build the model."""
    meta = dict(meta or {})
    V = mean.shape[0]
    if mean.ndim != 2 or mean.shape[1] != 3 or V < 5:
        raise ValueError(f"{path}: mean shape must be (V, 3) with V >= 5, got {mean.shape}")
    if shape_basis.ndim != 3 or shape_basis.shape[1:] != (V, 3):
        raise ValueError(f"{path}: identity basis must be (K, {V}, 3), got {shape_basis.shape}")
    if shape_basis.shape[0] == 0:
        raise ValueError(f"{path}: the model has no identity components (MorphableModel needs at least one)")
    if shape_std.shape != (shape_basis.shape[0],):
        raise ValueError(f"{path}: {shape_std.shape} identity std for {shape_basis.shape[0]} components")
    if expression_basis.ndim != 3 or expression_basis.shape[1:] != (V, 3):
        raise ValueError(f"{path}: expression basis must be (K, {V}, 3), got {expression_basis.shape}")
    for what, a in (("mean shape", mean), ("identity basis", shape_basis), ("identity std", shape_std),
                    ("expression basis", expression_basis), ("expression std", expression_std),
                    ("albedo mean", albedo_mean), ("albedo basis", albedo_basis), ("albedo std", albedo_std),
                    ("uv", uv)):
        if a is not None and not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: {what} contains NaN or infinite values")
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(f"{path}: triangles must be a non-empty (F, 3) array, got {faces.shape}")
    if faces.min() < 0 or faces.max() >= V:
        raise ValueError(f"{path}: triangles index vertices outside [0, {V}) (min {faces.min()}, max {faces.max()})")
    if faces_uv is not None:
        if faces_uv.shape != faces.shape or uv is None or faces_uv.min() < 0 or faces_uv.max() >= len(uv):
            raise ValueError(f"{path}: texture triangles are inconsistent with the uv coordinates")
    _check_extent(mean, unit_desc, path)

    # --- landmarks --------------------------------------------------------------------------------
    lists: list[list[int]] | None = None
    info: dict | None = None
    if landmarks is not None:
        lists = _parse_landmarks(landmarks, V, path)
        probs = _landmark_problems(_landmark_positions(mean, lists))
        if probs:
            raise ValueError(f"{path}: the given landmarks are implausible on the mean shape: " + "; ".join(probs))
        source = "user"
    elif builtin_landmarks is not None:
        bname, blists = builtin_landmarks
        probs = _landmark_problems(_landmark_positions(mean, blists))
        if probs:
            warnings.warn(f"{path}: built-in {bname} landmarks fail sanity checks ({'; '.join(probs)}); "
                          "falling back to the geometric heuristic", stacklevel=3)
        else:
            lists, source = blists, f"builtin:{bname}"
    if lists is None:
        try:
            auto, info = locate_landmarks(mean, faces)
        except ValueError as e:
            raise ValueError(f"{path}: cannot locate landmarks automatically ({e}); pass landmarks=...") from e
        lists = [auto[k] for k in LANDMARK_NAMES]
        probs = _landmark_problems(_landmark_positions(mean, lists))
        if probs:
            raise ValueError(f"{path}: the automatic landmark heuristic gave implausible points ({'; '.join(probs)}); "
                             "pass landmarks={name: vertex index} explicitly")
        source = "heuristic+eyeballs" if info.get("eyeballs") else "heuristic"
        meta["landmark_heuristic_scale"] = float(info.get("scale", 1.0))
    meta["landmark_source"] = source
    meta["landmark_indices"] = {k: list(v) for k, v in zip(LANDMARK_NAMES, lists)}
    pos = _landmark_positions(mean, lists)

    # --- regions (before centring: the eyeball search works in the same frame either way) --------
    if regions is None:
        if info is not None:
            eye_vertices = info.get("eye_vertices")
        else:
            xc = 0.5 * float(mean[:, 0].min() + mean[:, 0].max())
            eb = _find_eyeballs(mean, faces, xc, pos[2])
            eye_vertices = None if eb is None else eb[2]
        if eye_vertices is not None and len(eye_vertices):
            eyes = np.zeros(V, dtype=bool)
            eyes[eye_vertices] = True
            regions = {"skin": ~eyes, "eyes": eyes}
        else:
            regions = {"skin": np.ones(V, dtype=bool)}
    for k, m in regions.items():
        if m.shape != (V,) or m.dtype != bool:
            raise ValueError(f"{path}: region {k!r} must be a ({V},) bool mask")

    # --- winding and centring ---------------------------------------------------------------------
    flipped = _orient_faces(mean, faces, pos[2])
    if flipped:
        faces = faces[:, [0, 2, 1]]
        if faces_uv is not None:
            faces_uv = faces_uv[:, [0, 2, 1]]
    meta["winding_flipped"] = bool(flipped)
    offset = 0.5 * (pos[0] + pos[1])
    mean = mean - offset
    meta["translation_m"] = [float(v) for v in -offset]
    meta["units"] = unit_desc

    M = max(len(v) for v in lists)
    reps = []
    for idx, p in zip(lists, pos - offset):
        reps.append(idx[int(np.argmin(np.linalg.norm(mean[idx] - p, axis=1)))])
    lm_vertices = lm_weights = None
    if M > 1:
        lm_vertices = np.array([idx + [idx[0]] * (M - len(idx)) for idx in lists], dtype=np.int64)
        lm_weights = np.array([[1.0 / len(idx)] * len(idx) + [0.0] * (M - len(idx)) for idx in lists])

    return MorphableModel(
        name=name,
        mean=_as_tensor(mean),
        shape_basis=_as_tensor(shape_basis),
        shape_std=_as_tensor(shape_std),
        expression_basis=_as_tensor(expression_basis),
        expression_labels=list(expression_labels),
        faces=torch.from_numpy(np.ascontiguousarray(faces)).long(),
        expression_kind=expression_kind,
        expression_std=_as_tensor(expression_std),
        uv=_as_tensor(uv),
        faces_uv=None if faces_uv is None else torch.from_numpy(np.ascontiguousarray(faces_uv)).long(),
        albedo_mean=_as_tensor(albedo_mean),
        albedo_basis=_as_tensor(albedo_basis),
        albedo_std=_as_tensor(albedo_std),
        landmarks=torch.tensor(reps, dtype=torch.long),
        landmark_vertices=None if lm_vertices is None else torch.from_numpy(lm_vertices),
        landmark_weights=None if lm_weights is None else torch.from_numpy(lm_weights).float(),
        regions={k: torch.from_numpy(np.ascontiguousarray(m)) for k, m in regions.items()},
        meta=meta,
    )


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    return p


# --------------------------------------------------------------------------------------------------
# ICT-FaceKit
# --------------------------------------------------------------------------------------------------
#: 0-based Multi-PIE 68-point landmark vertices of the ICT-FaceKit topology (from its README).
ICT_MULTIPIE68 = (
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443,
    268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147,
    4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695, 2081,
    0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
)
ICT_NUM_VERTICES = 26719
#: ArcFace landmarks on the ICT topology: eye centres = mean of the 6 eye-contour points (68-point
#: 36-41 = image-left eye, 42-47 = image-right eye), nose tip = point 30, mouth corners = 48 / 54.
ICT_LANDMARKS = {
    "eye_left": list(ICT_MULTIPIE68[36:42]),
    "eye_right": list(ICT_MULTIPIE68[42:48]),
    "nose_tip": [ICT_MULTIPIE68[30]],
    "mouth_left": [ICT_MULTIPIE68[48]],
    "mouth_right": [ICT_MULTIPIE68[54]],
}
# Vertex ranges [start, stop) of the ICT-FaceKit README geometry table.
_ICT_RANGES = {
    "face": [(0, 9409)],
    "head_neck": [(9409, 11248)],
    "mouth_socket": [(11248, 13294)],
    "eye_sockets": [(13294, 14062)],
    "gums_tongue": [(14062, 17039)],
    "teeth": [(17039, 21451)],
    "eyes": [(21451, 24591)],
    "lacrimal_fluid": [(24591, 24999)],
    "eye_blend": [(24999, 25047)],
    "eye_occlusion": [(25047, 25351)],
    "eyelashes": [(25351, 26719)],
}


def _ict_regions(V: int) -> dict[str, np.ndarray]:
    regions = {}
    for k, spans in _ICT_RANGES.items():
        m = np.zeros(V, dtype=bool)
        for a, b in spans:
            m[a:b] = True
        regions[k] = m
    regions["skin"] = regions["face"] | regions.pop("head_neck")
    regions["mouth_interior"] = regions.pop("mouth_socket") | regions.pop("gums_tongue")
    return regions


def load_ict(
    path: str | os.PathLike,
    landmarks: LandmarkSpec | None = None,
    *,
    units: str | float = "cm",
    expressions: Sequence[str] | None = None,
    name: str = "ict",
) -> MorphableModel:
    """Load the ICT-FaceKit face model (MIT licence) from its ``FaceXModel`` folder.

    Expected layout (``path`` = the folder, or its ``generic_neutral_mesh.obj``)::

        generic_neutral_mesh.obj          neutral mesh: v (V lines), vt, f with v/vt/vn (quads...)
        identity000.obj .. identityNNN.obj identity morph targets (full meshes, same V and order)
        browDown_L.obj, jawOpen.obj, ...   expression morph targets (ARKit names, _L/_R split)
        vertex_indices.json                optional; its "expressions" list fixes which expression
                                           OBJs are used and their order

    Without ``vertex_indices.json`` (and without ``expressions=``) every other ``*.obj`` in the folder
    is an expression target, sorted by name.  Only the ``v`` records of morph targets are read; each
    must have the neutral mesh's vertex count.

    Conversion: coordinates are centimetres (``units="cm"``), +y up, the face looks to +z, +x is the
    subject's left -- already the model frame, so only the scale and the eye-midpoint translation
    change.  Identity targets become ``shape_basis`` = target - neutral with ``shape_std = 1`` (ICT
    samples identity weights from a standard normal); expression targets become
    ``expression_basis`` = target - neutral, ``expression_kind="blendshape"`` (weights in [0, 1]).
    Polygons are fan-triangulated (keeping their winding); ``uv``/``faces_uv`` come from ``vt`` (ICT
    uses several UV tiles, values are kept as stored, see ``meta["uv_range"]``).

    With the official 26719-vertex topology, landmarks default to the README's Multi-PIE 68 indices
    (see :data:`ICT_LANDMARKS`) and regions to its vertex ranges (``skin`` = face + head/neck,
    ``eyes``, ``teeth``, ``mouth_interior``, ``eye_sockets``, ``lacrimal_fluid``, ``eye_blend``,
    ``eye_occlusion``, ``eyelashes``, ``face``); the eye blend / occlusion / lacrimal meshes are
    transparent overlays in ICT's Unreal shaders and should normally not be rendered opaque.
    """
    p = _existing(path)
    if p.is_dir():
        folder, neutral_path = p, p / "generic_neutral_mesh.obj"
        if not neutral_path.exists():
            raise ValueError(f"{p}: not an ICT-FaceKit folder (no generic_neutral_mesh.obj)")
    else:
        folder, neutral_path = p.parent, p
    mesh = read_obj(neutral_path)
    if len(mesh.faces) == 0:
        raise ValueError(f"{neutral_path}: the neutral mesh has no faces")
    V = len(mesh.vertices)

    id_files = []
    for f in folder.iterdir():
        m = re.fullmatch(r"identity(\d+)\.obj", f.name)
        if m:
            id_files.append((int(m.group(1)), f))
    id_files = [f for _, f in sorted(id_files)]
    if not id_files:
        raise ValueError(f"{folder}: no identity morph targets (identity000.obj ...) found")

    config = folder / "vertex_indices.json"
    if expressions is None and config.exists():
        try:
            cfg = json.loads(config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{config}: unreadable JSON ({e})") from e
        if not isinstance(cfg, dict) or not isinstance(cfg.get("expressions"), list):
            raise ValueError(f"{config}: missing key 'expressions' (a list of expression names)")
        expressions = [str(e) for e in cfg["expressions"]]
    if expressions is None:
        skip = {neutral_path.name}
        expressions = sorted(f.stem for f in folder.glob("*.obj")
                             if f.name not in skip and not re.fullmatch(r"identity\d+\.obj", f.name))
    ex_files = []
    for e in expressions:
        f = folder / f"{e}.obj"
        if not f.exists():
            raise ValueError(f"{folder}: expression morph target {f.name} is listed but missing")
        ex_files.append(f)

    scale, unit_desc = _unit_scale(units, mesh.vertices, neutral_path)
    neutral = mesh.vertices

    def deltas(files: list[Path]) -> np.ndarray:
        out = np.empty((len(files), V, 3), dtype=np.float32)
        for i, f in enumerate(files):
            v = _read_obj_vertices(f)
            if v.shape[0] != V:
                raise ValueError(f"{f}: has {v.shape[0]} vertices but the neutral mesh {neutral_path.name} has {V}")
            out[i] = (v - neutral) * scale
        return out

    shape_basis = deltas(id_files)
    expression_basis = deltas(ex_files)
    meta = {
        "source": str(folder), "format": "ict-facekit", "licence": "MIT (ICT-FaceKit)",
        "identity_files": [f.name for f in id_files],
        "num_polygons": mesh.num_polygons,
    }
    if mesh.uv is not None:
        meta["uv_range"] = [float(mesh.uv.min()), float(mesh.uv.max())]
    official = V == ICT_NUM_VERTICES
    return _build(
        path=neutral_path, name=name, mean=neutral * scale,
        shape_basis=shape_basis, shape_std=np.ones(len(id_files)),
        expression_basis=expression_basis, expression_labels=list(expressions),
        expression_kind="blendshape", expression_std=np.ones(len(ex_files)),
        faces=mesh.faces, uv=mesh.uv if mesh.faces_uv is not None else None, faces_uv=mesh.faces_uv,
        unit_desc=unit_desc, landmarks=landmarks,
        builtin_landmarks=("ict-multipie68", [ICT_LANDMARKS[k] for k in LANDMARK_NAMES]) if official else None,
        regions=_ict_regions(V) if official else None, meta=meta,
    )


# --------------------------------------------------------------------------------------------------
# Basel Face Model
# --------------------------------------------------------------------------------------------------
def _pca(basis: np.ndarray, spread: np.ndarray, spread_is_variance: bool, V: int, path: Path, what: str):
    """(3V, K) basis + (K,) spread -> ((K, V, 3) unit-norm directions, (K,) std in file units).

    The files define ``sample = mean + basis @ (std * c)``; directions are normalised and any column
    norm is folded into the std, so the model is reproduced exactly whatever the column scaling.
    """
    basis = np.asarray(basis)
    spread = np.asarray(spread, dtype=np.float64).reshape(-1)
    if basis.ndim != 2 or basis.shape[0] != 3 * V:
        raise ValueError(f"{path}: {what} basis must be ({3 * V}, K) for {V} vertices, got {basis.shape}")
    K = basis.shape[1]
    if spread.shape != (K,):
        raise ValueError(f"{path}: {what} has {spread.size} variances/std devs for {K} basis columns")
    if spread_is_variance:
        if np.any(spread < 0):
            raise ValueError(f"{path}: {what} has negative variances")
        std = np.sqrt(spread)
    else:
        std = np.abs(spread)
    if not np.issubdtype(basis.dtype, np.floating):
        raise ValueError(f"{path}: {what} basis must be floating point, got {basis.dtype}")
    norms = np.sqrt(np.einsum("ij,ij->j", basis, basis, dtype=np.float64))
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError(f"{path}: {what} basis has zero or non-finite columns")
    if K and np.max(np.abs(norms - 1)) > 0.05:
        warnings.warn(f"{path}: {what} basis columns are not unit-norm (norms {norms.min():.3g}..{norms.max():.3g}); "
                      "folding the norms into the standard deviations", stacklevel=3)
    dirs = (np.asarray(basis, dtype=np.float32) / norms.astype(np.float32)).T.reshape(K, V, 3)
    return dirs, std * norms


def _bfm_from_arrays(
    path: Path, version: str, *, shape_mean, shape_basis, shape_spread, shape_var: bool, tri, tri_one_based: bool,
    color_mean=None, color_basis=None, color_spread=None, color_var: bool = False, color_255: bool | None = None,
    expr_mean=None, expr_basis=None, expr_spread=None, expr_var: bool = True,
    units: str | float, landmarks, name: str | None,
) -> MorphableModel:
    mu = np.asarray(shape_mean, dtype=np.float64).reshape(-1)
    if mu.size == 0 or mu.size % 3:
        raise ValueError(f"{path}: shape mean has {mu.size} values, not a multiple of 3")
    V = mu.size // 3
    mean = mu.reshape(V, 3)
    scale, unit_desc = _unit_scale(units, mean, path)
    sdirs, sstd = _pca(shape_basis, shape_spread, shape_var, V, path, "shape")

    tri = np.asarray(tri)
    if tri.ndim != 2 or 3 not in tri.shape:
        raise ValueError(f"{path}: triangle list must be (F, 3) or (3, F), got {tri.shape}")
    if tri.shape[1] != 3:
        tri = tri.T
    if not np.issubdtype(tri.dtype, np.integer):
        if not np.all(np.isfinite(tri)) or np.any(tri != np.round(tri)):
            raise ValueError(f"{path}: triangle list has non-integer entries")
    tri = tri.astype(np.int64)
    if tri_one_based:
        if tri.min() < 1:
            raise ValueError(f"{path}: triangle list must be 1-based (MATLAB), found index {tri.min()}")
        tri = tri - 1
    if tri.min() < 0 or tri.max() >= V:
        raise ValueError(f"{path}: triangles reference vertex {tri.max()} but the model has {V} vertices")

    albedo_mean = albedo_basis = albedo_std = None
    if color_mean is not None:
        cm = np.asarray(color_mean, dtype=np.float64).reshape(-1)
        if cm.size != 3 * V:
            raise ValueError(f"{path}: colour mean has {cm.size} values but the shape has {V} vertices")
        if color_255 is None:
            color_255 = float(np.max(cm)) > 1.5
        cscale = 1.0 / 255.0 if color_255 else 1.0
        albedo_mean = np.clip(cm.reshape(V, 3) * cscale, 0.0, 1.0)
        if color_basis is not None:
            albedo_basis, cstd = _pca(color_basis, color_spread, color_var, V, path, "colour")
            albedo_std = cstd * cscale

    if expr_basis is not None:
        edirs, estd = _pca(expr_basis, expr_spread, expr_var, V, path, "expression")
        estd = estd * scale
        labels = [f"pc{i:03d}" for i in range(len(estd))]
        if expr_mean is not None:
            em = np.asarray(expr_mean, dtype=np.float64).reshape(-1)
            if em.size != 3 * V:
                raise ValueError(f"{path}: expression mean has {em.size} values but the shape has {V} vertices")
            em = em.reshape(V, 3)
            spread = float(np.sqrt(np.mean((mean - mean.mean(0)) ** 2)))
            if np.sqrt(np.mean(em ** 2)) < 0.25 * spread:
                mean = mean + em  # a mean expression deformation (BFM 2017): part of the mean face
            elif np.sqrt(np.mean((em - mean) ** 2)) < 0.25 * spread:
                pass  # absolute coordinates of the same mean face: nothing to add
            else:
                raise ValueError(f"{path}: expression mean is neither a deformation nor the shape mean")
    else:
        edirs, estd, labels = np.zeros((0, V, 3), np.float32), np.zeros(0), []

    meta = {"source": str(path), "format": "bfm", "version": version,
            "licence": "Basel Face Model licence (non-commercial research use)"}
    return _build(
        path=path, name=name or "bfm2009", mean=mean * scale,
        shape_basis=sdirs, shape_std=sstd * scale,
        expression_basis=edirs, expression_labels=labels, expression_kind="pca", expression_std=estd,
        faces=tri, albedo_mean=albedo_mean, albedo_basis=albedo_basis, albedo_std=albedo_std,
        unit_desc=unit_desc, landmarks=landmarks, meta=meta,
    )


def _need(d: Mapping, key: str, path: Path, layout: str):
    if key not in d:
        raise ValueError(f"{path}: missing key {key!r} (expected the {layout} layout)")
    return d[key]


def _bfm2009(d: Mapping, path: Path, units, landmarks, name) -> MorphableModel:
    layout = "BFM 2009 01_MorphableModel.mat (shapeMU, shapePC, shapeEV, tl[, texMU, texPC, texEV])"
    has_tex = "texMU" in d
    return _bfm_from_arrays(
        path, "2009",
        shape_mean=_need(d, "shapeMU", path, layout), shape_basis=_need(d, "shapePC", path, layout),
        shape_spread=_need(d, "shapeEV", path, layout), shape_var=False,
        tri=_need(d, "tl", path, layout), tri_one_based=True,
        color_mean=d["texMU"] if has_tex else None,
        color_basis=_need(d, "texPC", path, layout) if has_tex else None,
        color_spread=_need(d, "texEV", path, layout) if has_tex else None, color_var=False, color_255=True,
        units=units, landmarks=landmarks, name=name,
    )


def _h5_array(f, key: str, path: Path, layout: str) -> np.ndarray:
    if key not in f:
        raise ValueError(f"{path}: missing key {key!r} (expected the {layout} layout)")
    obj = f[key]
    if not hasattr(obj, "shape"):
        raise ValueError(f"{path}: {key!r} is a group, expected a dataset")
    return np.asarray(obj[()])


def _bfm_statismo(f, path: Path, units, landmarks, name) -> MorphableModel:
    layout = "BFM 2017/2019 statismo HDF5 (shape/model/{mean,pcaBasis,pcaVariance}, shape/representer/cells)"
    for cells_key in ("shape/representer/cells", "representer/cells", "color/representer/cells"):
        if cells_key in f:
            break
    else:
        raise ValueError(f"{path}: missing key 'shape/representer/cells' (expected the {layout} layout)")

    def part(prefix: str, required: bool):
        if f"{prefix}/model" not in f:
            if required:
                raise ValueError(f"{path}: missing key '{prefix}/model' (expected the {layout} layout)")
            return None, None, None
        return (_h5_array(f, f"{prefix}/model/mean", path, layout),
                _h5_array(f, f"{prefix}/model/pcaBasis", path, layout),
                _h5_array(f, f"{prefix}/model/pcaVariance", path, layout))

    sm, sb, sv = part("shape", True)
    cm, cb, cv = part("color", False)
    em, eb, ev = part("expression", False)
    version = "2017/2019 statismo-h5" if eb is not None else "statismo-h5"
    if name is None:
        name = "bfm2019" if "2019" in path.name else "bfm2017" if eb is not None else "bfm"
    return _bfm_from_arrays(
        path, version, shape_mean=sm, shape_basis=sb, shape_spread=sv, shape_var=True,
        tri=_h5_array(f, cells_key, path, layout), tri_one_based=False,
        color_mean=cm, color_basis=cb, color_spread=cv, color_var=True, color_255=None,
        expr_mean=em, expr_basis=eb, expr_spread=ev, expr_var=True,
        units=units, landmarks=landmarks, name=name,
    )


def load_bfm(
    path: str | os.PathLike,
    landmarks: LandmarkSpec | None = None,
    *,
    units: str | float = "auto",
    name: str | None = None,
) -> MorphableModel:
    """Load a Basel Face Model (non-commercial licence; the user downloads it).

    BFM 2009 -- ``01_MorphableModel.mat`` (MATLAB v5 via ``scipy.io.loadmat``; v7.3/HDF5 files with
    the same variables are read with h5py)::

        shapeMU (3V, 1)   mean shape, xyz interleaved      shapePC (3V, K) orthonormal columns
        shapeEV (K, 1)    standard deviations              tl (F, 3) 1-based triangles (clockwise)
        texMU (3V, 1), texPC (3V, Kc), texEV (Kc, 1)       per-vertex colour in 0..255

    BFM 2017 / 2019 -- statismo ``.h5`` (``model2017-1_bfm_nomouth.h5``, ``model2019_*.h5``)::

        shape/model/mean (3V,)  shape/model/pcaBasis (3V, K)  shape/model/pcaVariance (K,)
        shape/representer/cells (3, F) 0-based triangles
        color/model/...  (same three datasets, colour in [0, 1])     -- optional
        expression/model/... (same; the mean is a deformation added to the face)   -- optional

    The format is chosen from the contents (``shapeMU`` vs ``shape/model``), not only the suffix.
    Coordinates are y up, z towards the viewer, x to the subject's left (model frame).  BFM 2017/2019
    are in millimetres; the 2009 ``.mat`` is often described as millimetres but its magnitudes are
    micrometres (Deep3DFaceRecon divides it by 1e5 to get decimetres).  ``units="auto"`` (default)
    picks the unit from the size of the mean face (recorded in ``meta["units"]``); pass
    ``units="mm"`` etc. to force it.

    PCA columns are normalised to unit norm and their std (``sqrt(pcaVariance)`` for h5, ``shapeEV``
    for 2009; any deviation of the column norms from 1 is folded into it, with a warning) scaled to
    metres becomes ``shape_std``.  Colour becomes ``albedo_mean``/``albedo_basis``/``albedo_std`` in
    [0, 1] (2009 divided by 255; h5 colour divided by 255 only if its mean exceeds 1.5).  Expressions
    are ``expression_kind="pca"`` with ``expression_std`` = their std in metres; a small
    ``expression/model/mean`` is a mean deformation and is added to ``mean``.  BFM 2009 has no
    expressions (``Ke = 0``, ``expression_basis`` (0, V, 3)).  Triangles come out counter-clockwise
    (the 2009 ``tl`` is clockwise and gets flipped).  No landmarks are built in (heuristic unless
    ``landmarks`` is given); regions are ``{"skin": all}``.
    """
    p = _existing(path)
    if p.is_dir():
        raise ValueError(f"{p}: expected a BFM .mat or .h5 file, got a directory")
    with open(p, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"\x89HDF\r\n\x1a\n"):
        return _load_bfm_h5(p, units, landmarks, name)
    if not magic.startswith(b"MATLAB") and p.suffix.lower() != ".mat":
        raise ValueError(f"{p}: not a BFM file (expected a MATLAB .mat or an HDF5 .h5; bad signature {magic!r})")
    import scipy.io

    try:
        d = scipy.io.loadmat(str(p))
    except NotImplementedError:  # MATLAB v7.3 = HDF5 with a 512-byte user block
        return _load_bfm_h5(p, units, landmarks, name, kind="MATLAB v7.3 (HDF5)")
    except Exception as e:  # scipy raises ValueError/TypeError/MatReadError/... on corrupted files
        raise ValueError(f"{p}: unreadable MATLAB file ({type(e).__name__}: {e})") from e
    return _bfm2009(d, p, units, landmarks, name)


def _load_bfm_h5(p: Path, units, landmarks, name, kind: str = "HDF5") -> MorphableModel:
    """A BFM in an HDF5 file; ``kind`` names the format in the error of an unreadable file (a MATLAB
    file whose header declares v7.3 is read here too)."""
    import h5py

    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise ValueError(f"{p}: unreadable {kind} file ({e})") from e
    with f:
        if "shape" in f:
            return _bfm_statismo(f, p, units, landmarks, name)
        if "shapeMU" in f:  # MATLAB v7.3: HDF5 with column-major (transposed) variables
            d = {k: np.asarray(f[k][()]).T for k in f.keys() if hasattr(f[k], "shape")}
            return _bfm2009(d, p, units, landmarks, name)
        raise ValueError(f"{p}: missing key 'shape/model' or 'shapeMU' (not a Basel Face Model file)")


# --------------------------------------------------------------------------------------------------
# FLAME (restricted unpickling)
# --------------------------------------------------------------------------------------------------
class _ChumpyStandIn:
    """Holds the pickled state of a chumpy object; chumpy itself is never imported."""

    chumpy_class = "chumpy.ch.Ch"

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            d = dict(state[0] or {})
            d.update(state[1] or {})
            state = d
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state for {self.chumpy_class}")
        self.__dict__["_state"] = state


class _SparseStandIn:
    """Holds the pickled state of a scipy.sparse matrix (never executes scipy code while unpickling)."""

    sparse_class = "scipy.sparse.csc_matrix"

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:
            d = dict(state[0] or {})
            d.update(state[1] or {})
            state = d
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state for {self.sparse_class}")
        self.__dict__["_state"] = state

    @property
    def shape(self) -> tuple[int, ...] | None:
        s = self.__dict__.get("_state", {})
        shp = s.get("_shape", s.get("shape"))
        try:
            return tuple(int(v) for v in shp)
        except (TypeError, ValueError):
            return None


_STANDIN_CACHE: dict[tuple[str, str], type] = {}


def _standin(base: type, attr: str, module: str, name: str) -> type:
    key = (module, name)
    if key not in _STANDIN_CACHE:
        _STANDIN_CACHE[key] = type(f"StandIn_{name}", (base,), {attr: f"{module}.{name}", "__module__": __name__})
    return _STANDIN_CACHE[key]


def _safe_reconstructor(cls, base, state):
    """Replacement for ``copyreg._reconstructor`` (protocol 0/1 pickles) limited to the stand-ins."""
    allowed = isinstance(cls, type) and issubclass(cls, (_ChumpyStandIn, _SparseStandIn))
    if not allowed or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copyreg._reconstructor called with {cls!r}, {base!r}: refused")
    return object.__new__(cls)


def _safe_codecs_encode(obj, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as used by Python 3 protocol-2 pickles for bytes (latin-1 text only)."""
    if not isinstance(obj, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin-1 encoded bytes")
    return obj.encode("latin-1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray as ma  # numpy >= 2
        from numpy._core import numeric as nm
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma
        from numpy.core import numeric as nm
    g: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        g[(mod, "_reconstruct")] = ma._reconstruct
        g[(mod, "scalar")] = ma.scalar
    if hasattr(nm, "_frombuffer"):
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            g[(mod, "_frombuffer")] = nm._frombuffer
    return g


_SPARSE_NAMES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}
_SPARSE_MODULES = re.compile(r"scipy\.sparse(\._?(csc|csr|coo|compressed|base|matrix|arrays))?")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, plain containers and inert stand-ins.

    Allowed globals: numpy array/dtype/scalar reconstruction, ``set``/``frozenset``/``object``,
    ``copyreg._reconstructor`` and ``_codecs.encode`` (restricted re-implementations), scipy sparse
    matrix classes (mapped to :class:`_SparseStandIn`) and any ``chumpy`` class (mapped to
    :class:`_ChumpyStandIn`).  Any other global raises ``ValueError`` naming it -- nothing else is
    imported or called.
    """

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path
        self._numpy = _numpy_globals()

    def find_class(self, module: str, name: str):
        if (module, name) in self._numpy:
            return self._numpy[(module, name)]
        if module in ("builtins", "__builtin__"):
            if name in ("set", "frozenset"):
                return {"set": set, "frozenset": frozenset}[name]
            if name == "object":
                return object
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":
            return _safe_codecs_encode
        if module == "chumpy" or module.startswith("chumpy."):
            return _standin(_ChumpyStandIn, "chumpy_class", module, name)
        if _SPARSE_MODULES.fullmatch(module) and name in _SPARSE_NAMES:
            return _standin(_SparseStandIn, "sparse_class", module, name)
        raise ValueError(f"{self._path}: refusing to unpickle forbidden class/function {module}.{name} "
                         "(only numpy arrays, scipy sparse matrices and chumpy arrays are allowed)")

    def persistent_load(self, pid):
        raise ValueError(f"{self._path}: refusing to unpickle persistent id {pid!r}")


def _restricted_pickle_load(path: Path) -> Any:
    data = _read_bytes(path)
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: corrupted or unsupported pickle ({e})") from e
    except Exception as e:  # UnpicklingError, EOFError, TypeError, AttributeError, MemoryError ...
        raise ValueError(f"{path}: corrupted or unsupported pickle ({type(e).__name__}: {e})") from e


def _chumpy_value(obj: _ChumpyStandIn, path: Path, key: str, depth: int = 0) -> np.ndarray:
    state = obj.__dict__.get("_state", {})
    if depth > 8:
        raise ValueError(f"{path}: {key!r}: chumpy object nesting too deep")
    # A plain Ch holds its value in ``x``; accept ``_x`` / ``a`` too, but only when no other term is
    # present (``add(a, b)``, ``transpose(a, axes)`` ... would need chumpy to evaluate).
    public = {k for k in state if not k.startswith("_")} - {"label", "terms", "dterms"}
    for k in ("x", "_x", "a"):
        if k in state and not (public - {k}):
            v = state[k]
            return _chumpy_value(v, path, key, depth + 1) if isinstance(v, _ChumpyStandIn) else np.asarray(v)
    raise ValueError(f"{path}: {key!r} is a chumpy {obj.chumpy_class} expression (terms {sorted(state)}) "
                     "that cannot be evaluated without chumpy; convert the model to plain numpy arrays first")


def _flame_array(d: Mapping, key: str, path: Path, required: bool = True) -> np.ndarray | None:
    if key not in d:
        if required:
            raise ValueError(f"{path}: missing key {key!r} (expected a FLAME model with v_template, shapedirs, f)")
        return None
    v = d[key]
    if isinstance(v, _ChumpyStandIn):
        v = _chumpy_value(v, path, key)
    if isinstance(v, _SparseStandIn):
        raise ValueError(f"{path}: {key!r} is a sparse matrix, expected a dense array")
    try:
        a = np.asarray(v)
    except Exception as e:
        raise ValueError(f"{path}: {key!r} is not an array ({e})") from e
    if a.dtype == object:
        raise ValueError(f"{path}: {key!r} is not a numeric array (dtype object)")
    return a


def load_flame(
    path: str | os.PathLike,
    landmarks: LandmarkSpec | None = None,
    *,
    num_shape: int = 300,
    units: str | float = "m",
    name: str = "flame",
) -> MorphableModel:
    """Load a FLAME model (FLAME licence; the user downloads it): ``generic_model.pkl`` of FLAME
    2020 / 2023 or an ``.npz`` with the same arrays.

    Expected contents (a dict; V = 5023 for the official model)::

        v_template (V, 3)            mean shape in metres       f (F, 3) 0-based triangles
        shapedirs  (V, 3, Ks + Ke)   first ``num_shape`` (300) identity, the rest (100) expression
        posedirs (V, 3, P), weights (V, J), J_regressor (J, V) sparse, kintree_table (2, J)   -- optional,
                                     only checked for consistent vertex counts (pose is not used)

    The pickle is read with a restricted unpickler (Python 2 pickles via ``encoding="latin1"``):
    chumpy objects become inert stand-ins whose array is their ``x`` term (``_x``/``a`` accepted),
    scipy sparse matrices become stand-ins, and any other class or function in the file raises
    ``ValueError`` naming it without importing or running anything.  ``.npz`` files are read with
    ``allow_pickle=False``.

    FLAME shape/expression directions are already scaled for standard-normal coefficients, so
    ``shape_basis = shapedirs[..., :num_shape]`` as (Ks, V, 3) with ``shape_std = 1`` and
    ``expression_basis = shapedirs[..., num_shape:]`` with ``expression_kind="pca"``,
    ``expression_std = 1``.  FLAME is in metres, +y up, facing +z, +x the subject's left (model
    frame).  No landmark indices are built in: the heuristic uses FLAME's separate eyeball meshes
    (pupils = their front-most vertices) plus the geometric priors; regions get ``eyes`` from those
    eyeball meshes.
    """
    p = _existing(path)
    if p.is_dir():
        raise ValueError(f"{p}: expected a FLAME .pkl or .npz file, got a directory")
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except ValueError as e:
            raise ValueError(f"{p}: unreadable or pickled .npz ({e})") from e
        except Exception as e:  # BadZipFile, OSError, EOFError ...
            raise ValueError(f"{p}: unreadable .npz file ({type(e).__name__}: {e})") from e
        fmt = "flame-npz"
    else:
        d = _restricted_pickle_load(p)
        fmt = "flame-pkl"
    if not isinstance(d, Mapping):
        raise ValueError(f"{p}: expected a dict of FLAME arrays, got {type(d).__name__}")
    vt = _flame_array(d, "v_template", p)
    sd = _flame_array(d, "shapedirs", p)
    f = _flame_array(d, "f", p)
    if vt.ndim != 2 or vt.shape[1] != 3:
        raise ValueError(f"{p}: v_template must be (V, 3), got {vt.shape}")
    V = vt.shape[0]
    if sd.ndim != 3 or sd.shape[1] != 3:
        raise ValueError(f"{p}: shapedirs must be (V, 3, K), got {sd.shape}")
    if sd.shape[0] != V:
        raise ValueError(f"{p}: shapedirs has {sd.shape[0]} vertices but v_template has {V}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"{p}: f must be (F, 3) triangles, got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"{p}: f must hold integer vertex indices, got {f.dtype}")
    K = sd.shape[2]
    if not 0 < num_shape <= K:
        raise ValueError(f"{p}: num_shape={num_shape} but shapedirs has {K} components")
    for key, axis in (("posedirs", 0), ("weights", 0)):
        a = _flame_array(d, key, p, required=False)
        if a is not None and (a.ndim < 2 or a.shape[axis] != V):
            raise ValueError(f"{p}: {key} has shape {a.shape}, inconsistent with {V} vertices")
    jr = d.get("J_regressor")
    if isinstance(jr, _SparseStandIn):
        jshape = jr.shape
    elif jr is not None:
        jshape = _flame_array(d, "J_regressor", p).shape
    else:
        jshape = None
    if jshape is not None and (len(jshape) != 2 or jshape[1] != V):
        raise ValueError(f"{p}: J_regressor has shape {jshape}, inconsistent with {V} vertices")

    scale, unit_desc = _unit_scale(units, vt.astype(np.float64), p)
    sd = sd.astype(np.float64) * scale
    shape_basis = np.ascontiguousarray(sd[:, :, :num_shape].transpose(2, 0, 1))
    expr_basis = np.ascontiguousarray(sd[:, :, num_shape:].transpose(2, 0, 1))
    Ke = expr_basis.shape[0]
    meta = {"source": str(p), "format": fmt, "licence": "FLAME licence (non-commercial research use)",
            "num_shape": int(num_shape), "num_expression": int(Ke)}
    return _build(
        path=p, name=name, mean=vt.astype(np.float64) * scale,
        shape_basis=shape_basis, shape_std=np.ones(num_shape),
        expression_basis=expr_basis, expression_labels=[f"pc{i:03d}" for i in range(Ke)],
        expression_kind="pca", expression_std=np.ones(Ke),
        faces=f.astype(np.int64), unit_desc=unit_desc, landmarks=landmarks, meta=meta,
    )


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------
_LOADERS = {"ict": load_ict, "bfm": load_bfm, "flame": load_flame}


def _sniff(p: Path) -> str:
    if p.is_dir():
        if (p / "generic_neutral_mesh.obj").exists():
            return "ict"
        raise ValueError(f"{p}: directory is not an ICT-FaceKit model folder (no generic_neutral_mesh.obj)")
    suffix = p.suffix.lower()
    if suffix == ".obj":
        return "ict"
    if suffix in (".mat", ".h5", ".hdf5"):
        return "bfm"
    if suffix in (".pkl", ".pickle"):
        return "flame"
    with open(p, "rb") as fh:
        magic = fh.read(8)
    if suffix == ".npz" or magic.startswith(b"PK"):
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = set(z.files)
        except Exception as e:
            raise ValueError(f"{p}: unreadable .npz file ({type(e).__name__}: {e})") from e
        if "__header__" in keys:
            return "internal"
        if {"v_template", "shapedirs"} <= keys:
            return "flame"
        raise ValueError(f"{p}: .npz is neither a FLAME model (v_template, shapedirs, f) nor a saved MorphableModel")
    if magic.startswith(b"\x89HDF") or magic.startswith(b"MATLAB"):
        return "bfm"
    if magic[:1] == b"\x80":
        return "flame"
    raise ValueError(f"{p}: unknown morphable model format; pass kind= one of {sorted(_LOADERS)}")


def load_model(path: str | os.PathLike, kind: str | None = None, **kw) -> MorphableModel:
    """Load an external morphable model: ``kind`` in ``{"ict", "bfm", "flame"}`` or sniffed from the
    path (folder / ``.obj`` -> ICT, ``.mat`` / ``.h5`` -> BFM, ``.pkl`` / FLAME ``.npz`` -> FLAME; an
    ``.npz`` written by :meth:`MorphableModel.save` is loaded back as is).  ``kw`` go to the loader
    (``landmarks``, ``units``, ``name``, ``num_shape`` ...)."""
    p = _existing(path)
    if kind is None:
        kind = _sniff(p)
        if kind == "internal":
            if kw:
                raise ValueError(f"{p}: a saved MorphableModel takes no loader options, got {sorted(kw)}")
            return MorphableModel.load(str(p))
    if kind not in _LOADERS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(_LOADERS)}")
    return _LOADERS[kind](p, **kw)
