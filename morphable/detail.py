"""Feature detail learnt from real faces: a PCA model of the fine structure of real aligned faces,
sampled per identity and drawn over the rendered face in place of its own.

A real-face recogniser reads most of a person's identity in the features' fine detail (the lids'
margins, the iris and its shadow, the nostrils and alar creases, the lip line: structure under a few
pixels at 112 px; BENCHMARKS.md, "Realism, sessions 18-19"), and there our rendered faces are a poor
canvas: sharp, drawn outlines that vary little from person to person. A :class:`DetailModel` holds
the mean and principal directions of that detail over a folder of real faces, each warped to the
layout of our own mean face first (its 68 landmarks), so that the detail of every real face lines up
with our features. An identity draws standard-normal coefficients (``identity.detail_model``,
:class:`morphable.MorphableSource`); the renderer then replaces the fine detail of the inner face by
the identity's sample, attached to the face's rest surface, so it follows pose and expression.

The detail is a ratio: ``image / blur(image) - 1`` (gaussian ``sigma`` px at the 112 px template),
applied as ``blur(render) * (1 + detail)``, so its contrast scales with the local brightness.

A sample is a blend of principal directions, not any one real face: with ``k`` much smaller than the
number of faces fitted, no identity carries a real person's detail. Fitting needs real faces and
dlib's landmarks: ``python -m engine.detail_fit`` (the judge extra). Nothing here downloads anything.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DETAIL_FRONT", "DETAIL_SIZE", "DetailModel", "FEATURE_BOXES", "INNER_FACE", "fit_detail_model", "inner_face_mask", "piecewise_affine",
           "ratio_detail"]

#: Side (px) of the template the detail lives in: the 112 px ArcFace template.
DETAIL_SIZE = 112
#: The inner face of the 112 px template as an ellipse: centre (x, y), semi-axes (x, y) in px, and the
#: radii (in units of the ellipse) where the mask starts to fall and reaches 0 (a smoothstep between).
#: It holds the brows and eyes, the nose, the mouth and the skin between them (BENCHMARKS.md, "Realism,
#: session 18": a real inner face makes our faces as good a canvas as a real face; the outer part
#: nothing), and fades out over the cheeks, forehead and chin so that no seam shows.
INNER_FACE = ((56.0, 62.0), (40.0, 46.0), (0.8, 1.1))
#: Boxes of the features in the 112 px template (our mean face's layout): rows and columns
#: [r0, r1) x [c0, c1). The regions that ``engine.shade_fit`` fits over and the detail and mean-look
#: benchmarks report on.
FEATURE_BOXES = {"brows": (26, 45, 20, 92), "eyes": (42, 62, 20, 92), "nose": (55, 84, 38, 74), "mouth": (80, 102, 30, 82)}
#: Depth (metres, in the model's rest frame) behind the eye centres where the detail has faded out and
#: where it is whole: the template's pixels are reached from the front of the face only, not from the
#: sides or back of the head that project onto them.
DETAIL_FRONT = (0.045, 0.03)
#: Format version of a saved :class:`DetailModel`.
FORMAT_VERSION = 1
#: Border points (x, y) of the 112 px template, added to the landmarks so that a warp covers it all.
_BORDER = np.array([[0, 0], [55.5, 0], [111, 0], [111, 55.5], [111, 111], [55.5, 111], [0, 111], [0, 55.5]])


def inner_face_mask(size: int = DETAIL_SIZE) -> torch.Tensor:
    """(size, size) float32 mask of :data:`INNER_FACE` (scaled from 112 px to ``size``): 1 inside,
    falling smoothly to 0 across the ellipse's rim."""
    (cx, cy), (ax, ay), (r0, r1) = INNER_FACE
    c = (torch.arange(size, dtype=torch.float32) + 0.5) * (DETAIL_SIZE / size) - 0.5  # pixel centres, 112 px units
    r = (((c[None, :] - cx) / ax) ** 2 + ((c[:, None] - cy) / ay) ** 2).sqrt()
    t = ((r1 - r) / (r1 - r0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def piecewise_affine(img: torch.Tensor, src: np.ndarray, dst: np.ndarray) -> torch.Tensor:
    """Warp ``img`` (C, H, W) so that its points ``src`` (K, 2) (x, y in pixel-index coordinates) land
    on ``dst`` (K, 2): each output pixel is sampled (bilinear, border-clamped) through the affine map
    of the Delaunay triangle of ``dst`` (plus the image's border points) it falls in. (C, H, W)."""
    from scipy.spatial import Delaunay
    _, h, w = img.shape
    border = _BORDER * np.array([(w - 1) / 111.0, (h - 1) / 111.0])
    s, d = np.vstack([np.asarray(src, np.float64), border]), np.vstack([np.asarray(dst, np.float64), border])
    tri = Delaunay(d)
    yy, xx = np.mgrid[0:h, 0:w]
    p = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    k = tri.find_simplex(p)
    k[k < 0] = 0  # only pixels on the hull's edge, by rounding: any triangle touching it maps them
    t = tri.transform[k]
    b2 = np.einsum("nij,nj->ni", t[:, :2], p - t[:, 2])
    bary = np.concatenate([b2, 1 - b2.sum(1, keepdims=True)], 1)
    q = (bary[:, :, None] * s[tri.simplices[k]]).sum(1)
    grid = torch.from_numpy(q / np.array([w - 1, h - 1]) * 2 - 1).to(img).view(1, h, w, 2)
    return F.grid_sample(img[None], grid, align_corners=True, padding_mode="border")[0]


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from kornia.filters import gaussian_blur2d
    k = 2 * int(4 * sigma) + 1
    return gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="replicate")


def ratio_detail(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """The fine detail of (N, 3, H, W) images in [0, 1] as a ratio to their gaussian blur of ``sigma``
    px: ``image / blur - 1``, the blur floored at 1/255 and the ratio clipped to [-1, 3]. (N, 3, H, W)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 px, got {sigma}")
    return (images / _blur(images, sigma).clamp_min(1 / 255) - 1).clamp(-1, 3)


@dataclass
class DetailModel:
    """Mean and principal directions of real faces' fine detail in our mean face's layout.

    Attributes:
        mean: (3, T, T) float32 mean ratio detail (:func:`ratio_detail`), T = :data:`DETAIL_SIZE`.
        basis: (K, 3, T, T) float32 principal directions, each scaled by its standard deviation, so
            that ``mean + z @ basis`` with ``z ~ N(0, I)`` draws from the fitted distribution.
        mask: (T, T) float32 where the detail replaces the render's (:func:`inner_face_mask`).
        sigma: gaussian sd (px at T) that splits detail from the coarse face.
        layout: (68, 2) float32 the landmarks (dlib's 68, pixel-index x, y at T) the real faces were
            warped to: our mean face's.
        model: name of the morphable model whose layout it is.
        info: provenance (faces and people fitted, source folder, explained variance).
        sha1: the file's content hash when read by :meth:`load` (empty for a model fitted in memory).
    """

    mean: torch.Tensor
    basis: torch.Tensor
    mask: torch.Tensor
    sigma: float
    layout: torch.Tensor
    model: str
    info: dict[str, Any] = field(default_factory=dict)
    sha1: str = ""

    def __post_init__(self) -> None:
        T = self.mean.shape[-1]
        if self.mean.shape != (3, T, T) or self.basis.ndim != 4 or self.basis.shape[1:] != (3, T, T):
            raise ValueError(f"detail model: mean (3, T, T) and basis (K, 3, T, T) expected, got "
                             f"{tuple(self.mean.shape)} and {tuple(self.basis.shape)}")
        if self.mask.shape != (T, T):
            raise ValueError(f"detail model: mask ({T}, {T}) expected, got {tuple(self.mask.shape)}")
        if not self.sigma > 0:
            raise ValueError(f"detail model: sigma must be > 0, got {self.sigma}")

    @property
    def k(self) -> int:
        """Number of principal directions (coefficients per identity)."""
        return int(self.basis.shape[0])

    @property
    def size(self) -> int:
        """Template side T in px."""
        return int(self.mean.shape[-1])

    def to(self, device: str | torch.device) -> "DetailModel":
        """The same model with its mean, basis and mask on ``device``."""
        return DetailModel(mean=self.mean.to(device), basis=self.basis.to(device), mask=self.mask.to(device),
                           sigma=self.sigma, layout=self.layout, model=self.model, info=self.info, sha1=self.sha1)

    def maps(self, z: torch.Tensor) -> torch.Tensor:
        """(U, 3, T, T) detail of ``U`` identities from their coefficients ``z`` (U, K)."""
        if z.ndim != 2 or z.shape[1] != self.k:
            raise ValueError(f"detail coefficients: (U, {self.k}) expected, got {tuple(z.shape)}")
        b = self.basis.to(z.device, z.dtype)
        return self.mean.to(z.device, z.dtype) + (z @ b.flatten(1)).view(-1, *self.mean.shape)

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` (the basis as float16: half the size, ~1e-3 relative error) with its
        config as JSON beside the arrays, so that :meth:`load` rebuilds it."""
        cfg = {"format_version": FORMAT_VERSION, "sigma": float(self.sigma), "model": self.model, "info": self.info}
        with open(path, "wb") as f:
            np.savez(f, mean=self.mean.numpy().astype(np.float32), basis=self.basis.numpy().astype(np.float16),
                     mask=self.mask.numpy().astype(np.float32), layout=self.layout.numpy().astype(np.float32),
                     config=np.frombuffer(json.dumps(cfg).encode(), np.uint8))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DetailModel":
        """Read a model written by :meth:`save`; a clear error for a missing or foreign file."""
        p = os.fspath(path)
        if not os.path.isfile(p):
            raise FileNotFoundError(f"detail model {p!r}: no such file (fit one with `python -m engine.detail_fit`)")
        with open(p, "rb") as f:
            data = f.read()
        try:
            with np.load(io.BytesIO(data)) as z:
                cfg = json.loads(bytes(z["config"]).decode())
                arrays = {k: torch.from_numpy(z[k].astype(np.float32)) for k in ("mean", "basis", "mask", "layout")}
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"detail model {p!r}: not a synthface detail model ({e})") from e
        if cfg.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"detail model {p!r}: format version {cfg.get('format_version')}, this code reads {FORMAT_VERSION}")
        return cls(sigma=float(cfg["sigma"]), model=str(cfg["model"]), info=dict(cfg.get("info", {})),
                   sha1=hashlib.sha1(data).hexdigest(), **arrays)


def fit_detail_model(images: torch.Tensor, landmarks: np.ndarray, layout: np.ndarray, model: str, k: int = 128,
                     sigma: float = 3.0, info: dict[str, Any] | None = None) -> DetailModel:
    """Fit a :class:`DetailModel` to real aligned faces.

    Args:
        images: (N, 3, T, T) float in [0, 1], real faces aligned to the ArcFace template at T px.
        landmarks: (N, 68, 2) their landmarks (dlib's 68, pixel-index x, y).
        layout: (68, 2) the landmarks of our mean face at T px, where every face is warped to.
        model: name of the morphable model ``layout`` belongs to.
        k: principal directions kept (< N).
        sigma: gaussian sd (px at T) that splits the detail from the coarse face.
        info: provenance to store.

    Each face is warped to ``layout`` (:func:`piecewise_affine`), its :func:`ratio_detail` taken and
    masked to the inner face; the principal directions come from an SVD of the centred (N, 3 T T) table.
    """
    n = images.shape[0]
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images: (N, 3, T, T) expected, got {tuple(images.shape)}")
    if landmarks.shape != (n, 68, 2) or np.asarray(layout).shape != (68, 2):
        raise ValueError(f"landmarks (N, 68, 2) and layout (68, 2) expected, got {landmarks.shape} and {np.shape(layout)}")
    if not 0 < k < n:
        raise ValueError(f"k must be in 1..{n - 1} for {n} faces, got {k}")
    T = images.shape[-1]
    x = images.float()
    warped = torch.stack([piecewise_affine(x[i], landmarks[i], layout) for i in range(n)])
    mask = inner_face_mask(T)
    d = (ratio_detail(warped, sigma) * mask).flatten(1).double()
    mu = d.mean(0)
    _, s, vh = torch.linalg.svd(d - mu, full_matrices=False)
    sd = s[:k] / max(n - 1, 1) ** 0.5
    basis = (vh[:k] * sd[:, None]).float().view(k, 3, T, T)
    meta = dict(info or {})
    meta.update(faces=int(n), k=int(k), explained_variance=round(float((s[:k] ** 2).sum() / (s ** 2).sum()), 4))
    return DetailModel(mean=mu.float().view(3, T, T), basis=basis, mask=mask, sigma=float(sigma),
                       layout=torch.as_tensor(np.asarray(layout), dtype=torch.float32), model=model, info=meta)
