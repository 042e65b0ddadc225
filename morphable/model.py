"""The internal morphable-model structure every face model is loaded into.

A linear 3DMM (BFM / FLAME / ICT style)::

    vertices = mean + sum_i shape[i] * shape_std[i] * shape_basis[i]
                    + sum_j expr[j] * expression_basis[j]

with standard-normal identity coefficients ``shape`` and expression activations ``expr`` (units as
the model defines them: blendshape weights in [0, 1] for FACS-style rigs, standard-normal PCA
coefficients for BFM/FLAME, see ``expression_kind``).

Coordinates: metres, right-handed, +x = the face's left->right as seen by a viewer (the subject's
left), +y up, +z out of the face towards the viewer; the model is centred so that the midpoint of
the eyes is near the origin. Loaders convert every model into this frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

#: Names of the 5 ArcFace landmarks, in template order (image-left eye first when frontal).
LANDMARK_NAMES = ("eye_left", "eye_right", "nose_tip", "mouth_left", "mouth_right")


@dataclass
class MorphableModel:
    """A linear morphable face model (all tensors float32 unless said).

    Attributes:
        name: model name (``"anny-head"``, ``"bfm2017"``, ``"flame"``, ``"ict"``...).
        mean: (V, 3) mean shape.
        shape_basis: (Ks, V, 3) identity shape directions (unit scale; multiply by ``shape_std``).
        shape_std: (Ks,) standard deviation of each identity coefficient.
        expression_basis: (Ke, V, 3) expression directions.
        expression_labels: Ke names (FACS/ARKit names for blendshape rigs, ``pc000``.. for PCA).
        expression_kind: ``"blendshape"`` (weights in [0, 1]) or ``"pca"`` (standard normal, scaled by
            ``expression_std``).
        expression_std: (Ke,) scale of expression coefficients (ones for blendshapes).
        faces: (F, 3) int64 triangles, counter-clockwise seen from outside.
        uv: (T, 2) texture coordinates in [0, 1] (or None).
        faces_uv: (F, 3) int64 indices into ``uv`` (or None).
        albedo_mean: (V, 3) per-vertex mean albedo in [0, 1] (or None: the albedo model colours it).
        albedo_basis: (Ka, V, 3) per-vertex albedo PCA directions (or None).
        albedo_std: (Ka,) their standard deviations (or None).
        landmarks: (5,) int64 vertex indices of the ArcFace points in :data:`LANDMARK_NAMES` order
            (the eye points may be the centre of the eye socket; see ``landmark_weights``).
        landmark_weights: optional (5, M) barycentric-like weights over ``landmark_vertices`` (5, M)
            when a landmark is an average of several vertices (eye centres).
        landmark_vertices: optional (5, M) int64 vertex indices used with ``landmark_weights``.
        regions: name -> (V,) bool mask of vertex regions (``skin``, ``eyes``, ``lips``, ``brows``,
            ``teeth``, ``scalp``, ``ears``, ``neck`` ...) that the albedo model and renderer use.
        meta: free-form provenance (source file, licence, units conversion).
    """

    name: str
    mean: torch.Tensor
    shape_basis: torch.Tensor
    shape_std: torch.Tensor
    expression_basis: torch.Tensor
    expression_labels: list[str]
    faces: torch.Tensor
    expression_kind: str = "blendshape"
    expression_std: torch.Tensor | None = None
    uv: torch.Tensor | None = None
    faces_uv: torch.Tensor | None = None
    albedo_mean: torch.Tensor | None = None
    albedo_basis: torch.Tensor | None = None
    albedo_std: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None
    landmark_vertices: torch.Tensor | None = None
    landmark_weights: torch.Tensor | None = None
    regions: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        V = self.mean.shape[0]
        if self.mean.ndim != 2 or self.mean.shape[1] != 3:
            raise ValueError(f"{self.name}: mean must be (V, 3), got {tuple(self.mean.shape)}")
        if self.shape_basis.ndim != 3 or self.shape_basis.shape[1:] != (V, 3):
            raise ValueError(f"{self.name}: shape_basis must be (Ks, {V}, 3), got {tuple(self.shape_basis.shape)}")
        if self.shape_std.shape != (self.shape_basis.shape[0],):
            raise ValueError(f"{self.name}: shape_std must be ({self.shape_basis.shape[0]},), got {tuple(self.shape_std.shape)}")
        if self.expression_basis.ndim != 3 or self.expression_basis.shape[1:] != (V, 3):
            raise ValueError(
                f"{self.name}: expression_basis must be (Ke, {V}, 3), got {tuple(self.expression_basis.shape)}"
            )
        if len(self.expression_labels) != self.expression_basis.shape[0]:
            raise ValueError(f"{self.name}: {len(self.expression_labels)} expression labels for "
                             f"{self.expression_basis.shape[0]} expression directions")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"{self.name}: faces must be (F, 3), got {tuple(self.faces.shape)}")
        if int(self.faces.min()) < 0 or int(self.faces.max()) >= V:
            raise ValueError(f"{self.name}: faces index vertices outside [0, {V})")
        if self.expression_kind not in ("blendshape", "pca"):
            raise ValueError(f"{self.name}: expression_kind must be 'blendshape' or 'pca', got {self.expression_kind!r}")
        if self.expression_std is None:
            self.expression_std = torch.ones(self.expression_basis.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shape_basis.shape[0])

    @property
    def num_expression(self) -> int:
        return int(self.expression_basis.shape[0])

    def vertices(self, shape: torch.Tensor, expression: torch.Tensor | None = None) -> torch.Tensor:
        """(B, V, 3) vertices for identity coefficients ``shape`` (B, Ks) and expression (B, Ke)."""
        B = shape.shape[0]
        Ks = self.num_shape
        basis = (self.shape_basis * self.shape_std[:, None, None]).reshape(Ks, -1)
        v = self.mean.reshape(1, -1) + shape.to(basis.dtype) @ basis
        if expression is not None and self.num_expression:
            eb = (self.expression_basis * self.expression_std[:, None, None]).reshape(self.num_expression, -1)
            v = v + expression.to(eb.dtype) @ eb
        return v.reshape(B, -1, 3)

    def landmark_points(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, 5, 3) ArcFace landmark positions from (B, V, 3) vertices."""
        if self.landmark_vertices is not None and self.landmark_weights is not None:
            pts = vertices[:, self.landmark_vertices]  # (B, 5, M, 3)
            return (pts * self.landmark_weights[None, :, :, None]).sum(2)
        if self.landmarks is None:
            raise ValueError(f"{self.name}: model has no landmark definition")
        return vertices[:, self.landmarks]

    def to(self, device: str | torch.device) -> "MorphableModel":
        def mv(x):
            return x.to(device) if isinstance(x, torch.Tensor) else x

        kw = {k: mv(getattr(self, k)) for k in self.__dataclass_fields__}
        kw["regions"] = {k: mv(v) for k, v in self.regions.items()}
        return MorphableModel(**kw)

    def save(self, path: str) -> None:
        """Save as a plain ``.npz`` (no pickles): arrays plus JSON metadata."""
        import json

        arrays: dict[str, np.ndarray] = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            if isinstance(v, torch.Tensor):
                arrays[k] = v.cpu().numpy()
        for k, v in self.regions.items():
            arrays[f"region__{k}"] = v.cpu().numpy()
        header = {"name": self.name, "expression_labels": list(self.expression_labels),
                  "expression_kind": self.expression_kind, "meta": self.meta}
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str) -> "MorphableModel":
        import json

        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["__header__"]).decode())
            kw: dict = {"name": header["name"], "expression_labels": header["expression_labels"],
                        "expression_kind": header["expression_kind"], "meta": header.get("meta", {})}
            regions = {}
            for k in z.files:
                if k == "__header__":
                    continue
                if k.startswith("region__"):
                    regions[k[len("region__"):]] = torch.from_numpy(z[k].copy())
                else:
                    kw[k] = torch.from_numpy(z[k].copy())
        kw["regions"] = regions
        return cls(**kw)


def chin_and_cheek_vertices(model: MorphableModel) -> tuple[int, int, int] | None:
    """``(chin, cheek_left, cheek_right)`` vertex indices on the model's mean face: the lowest point of
    the chin's front at the midline (within 8 cm below the mouth), and the widest points of the face's
    front between the eye line and the nose tip (cheekbones, ears excluded); None when the mesh has no
    such vertices (e.g. a coarse test head). Skin vertices only when the model labels them
    (``regions["vertex_region"]``)."""
    mv = model.mean
    L = model.landmark_points(mv[None])[0]
    eye_y, nose_y, mouth_y = L[:2, 1].mean(), L[2, 1], L[3:, 1].mean()
    vreg = model.regions.get("vertex_region")
    skin = torch.ones(mv.shape[0], dtype=torch.bool) if vreg is None else (vreg.cpu() == 0)  # REGION_IDS skin
    x, y, z = mv.cpu().unbind(-1)
    front = z > L[2, 2].cpu() - 0.06
    chin = skin & front & (x.abs() < 0.01) & (y < mouth_y.cpu()) & (y > mouth_y.cpu() - 0.08)
    cheek = skin & front & (y < eye_y.cpu() - 0.01) & (y > nose_y.cpu())
    if not bool(chin.any()) or not bool(cheek.any()):
        return None
    ci, ki = torch.nonzero(chin)[:, 0], torch.nonzero(cheek)[:, 0]
    return int(ci[y[ci].argmin()]), int(ki[x[ki].argmax()]), int(ki[x[ki].argmin()])


def face_proportions(model: MorphableModel, shape: torch.Tensor) -> dict[str, torch.Tensor]:
    """Proportions of the neutral faces of ``shape`` (B, K) in model space, from the 5 landmarks and
    :func:`chin_and_cheek_vertices`, over the distance between the eye centres: ``nose`` (B,) the eye
    line to the nose tip (vertical), ``mouth`` (B,) the eye line to the mouth centre (vertical),
    ``chin`` (B,) the eye line to the chin (vertical), ``mouth_width`` (B,), ``face_width`` (B,) across
    the cheekbones (``chin`` and ``face_width`` only on meshes that have those vertices). Differentiable."""
    V = model.vertices(shape)
    L = model.landmark_points(V)  # (B, 5, 3): eyes, nose tip, mouth corners
    eye_mid, iod = (L[:, 0] + L[:, 1]) / 2, (L[:, 0] - L[:, 1]).norm(dim=-1)
    mouth_mid = (L[:, 3] + L[:, 4]) / 2
    out = {"nose": (eye_mid[:, 1] - L[:, 2, 1]) / iod, "mouth": (eye_mid[:, 1] - mouth_mid[:, 1]) / iod}
    found = chin_and_cheek_vertices(model)
    if found is not None:
        out["chin"] = (eye_mid[:, 1] - V[:, found[0], 1]) / iod
    out["mouth_width"] = (L[:, 3] - L[:, 4]).norm(dim=-1) / iod
    if found is not None:
        out["face_width"] = (V[:, found[1], 0] - V[:, found[2], 0]) / iod
    return out

