"""Identity-disentangled variations in the GAN's latent space (ExFaceGAN, Boutros et al. 2023).

``variation.mode: disentangled`` (``--override variation.mode=disentangled``): for each identity
``r`` (its condition ``e_r``) the source learns, with the frozen FR encoder, a linear boundary in the
latent ``z`` space that separates latents keeping the identity of a *reference* image from latents
that do not, and draws the identity's variations on the identity side of it:

1. reference latent ``z_ref`` and ``candidates`` latents ``z_j``, each from its own seeded generator
   (``generator(seed, "exface-reference", r)``, ``generator(seed, "exface-candidate", r, j)``); their
   images ``G(z, e_r)`` (same truncation / noise settings as the render) and encoder embeddings;
2. labels: candidate ``j`` keeps the identity when ``cos(f(G(z_j)), f(G(z_ref))) >= t_r``, ``t_r`` the
   ``threshold`` if set, else the per-reference ``quantile`` of the candidates' cosines (balanced
   classes whatever the encoder's cosine scale); the reference latent itself is a positive;
3. a logistic regression ``sigmoid(<w_r, z> + b_r)`` per identity, fitted by ``steps`` of full-batch
   gradient descent (L2 ``l2`` on ``w``), batched over identities (:func:`fit_boundaries`, float64);
4. variation ``k`` draws its latent as the plain source does (``generator(seed, "learned-noise", r,
   k)``) and is moved along the boundary normal ``n = w / |w|`` just far enough to lie ``margin``
   (in latent standard deviations) inside the identity side: ``z' = z + max(0, margin - d(z)) n``,
   ``d(z) = (<w, z> + b) / |w|`` (:func:`shift_to_side`). Its other directions stay as drawn, so the
   variety orthogonal to the identity direction is kept.

Per identity, ``id_exface_*`` metadata columns: ``threshold`` (t_r), ``fit_accuracy`` (of the
boundary on its candidates), ``gap`` (mean signed distance of the identity-keeping candidates minus
that of the others: how far apart the boundary puts them, in latent standard deviations),
``accepted`` (fraction of plain candidates already ``margin`` inside: what a rejection sampler would
keep), ``cos_all`` / ``cos_accepted`` (mean cosine to the reference of all / of the accepted
candidates). Per image: ``exface_shift`` (how far it was moved) and ``exface_distance`` (its signed
distance after the move). The boundaries are computed once, when identities are sampled (cost:
``candidates + 1`` generator and encoder passes per identity), and travel with the identity table.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common.config import key_error as _err

__all__ = ["VariationConfig", "VARIATION_MODES", "fit_boundaries", "shift_to_side", "label_candidates"]

VARIATION_MODES = ("plain", "disentangled")


@dataclass
class VariationConfig:
    """How the GAN source draws an identity's variations (``overrides`` key ``variation``; see the
    module docstring). ``plain`` (default): one random latent per variation."""

    mode: str = "plain"
    candidates: int = 128
    threshold: float | None = None
    quantile: float = 0.5
    margin: float = 1.0
    steps: int = 300
    lr: float = 0.5
    l2: float = 1e-2

    def validate(self, path: str = "variation") -> None:
        if self.mode not in VARIATION_MODES:
            raise _err(path, "mode", f"must be one of {', '.join(VARIATION_MODES)}, got {self.mode!r}")
        if self.candidates < 4:
            raise _err(path, "candidates", f"must be >= 4, got {self.candidates}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise _err(path, "threshold", f"a cosine in [-1, 1] (or null: the per-reference quantile), got {self.threshold}")
        if not 0.0 < self.quantile < 1.0:
            raise _err(path, "quantile", f"must be in (0, 1), got {self.quantile}")
        if self.margin < 0:
            raise _err(path, "margin", f"must be >= 0, got {self.margin}")
        if self.steps < 1:
            raise _err(path, "steps", f"must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise _err(path, "lr", f"must be > 0, got {self.lr}")
        if self.l2 < 0:
            raise _err(path, "l2", f"must be >= 0, got {self.l2}")


def label_candidates(cos: torch.Tensor, threshold: float | None, quantile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity-keeping labels ``(N, M)`` bool of candidates with cosines ``cos`` ``(N, M)`` to their
    reference, and the per-reference thresholds ``(N,)`` (``threshold`` or the ``quantile`` of each row)."""
    if threshold is None:
        t = torch.quantile(cos.double(), float(quantile), dim=1).to(cos.dtype)
    else:
        t = torch.full(cos.shape[:1], float(threshold), dtype=cos.dtype)
    return cos >= t[:, None], t


def fit_boundaries(z: torch.Tensor, y: torch.Tensor, steps: int = 300, lr: float = 0.5,
                   l2: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched L2-regularised logistic regressions, one per row: ``z`` ``(N, M, d)`` samples, ``y``
    ``(N, M)`` labels in {0, 1}. Full-batch gradient descent from zero (deterministic; float64) on
    ``mean BCE(<w, z> + b, y) + l2 / 2 |w|^2``. Returns ``w`` ``(N, d)`` and ``b`` ``(N,)``."""
    if z.ndim != 3 or y.shape != z.shape[:2]:
        raise ValueError(f"expected z (N, M, d) and y (N, M), got {tuple(z.shape)} and {tuple(y.shape)}")
    z, y = z.double(), y.double()
    N, M, d = z.shape
    w = torch.zeros(N, d, dtype=torch.float64)
    b = torch.zeros(N, dtype=torch.float64)
    for _ in range(int(steps)):
        p = torch.sigmoid(torch.einsum("nmd,nd->nm", z, w) + b[:, None])
        r = (p - y) / M  # (N, M): d mean-BCE / d logit
        gw = torch.einsum("nmd,nm->nd", z, r) + l2 * w
        gb = r.sum(1)
        w = w - lr * gw
        b = b - lr * gb
    return w, b


def signed_distance(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(<w, z> + b) / |w|`` for ``z`` ``(..., d)`` with ``w`` ``(..., d)``, ``b`` ``(...)`` broadcast."""
    nrm = w.norm(dim=-1).clamp_min(1e-12)
    return ((z * w).sum(-1) + b) / nrm


def shift_to_side(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Move latents ``z`` ``(B, d)`` along their boundary's unit normal (``w`` ``(B, d)``, ``b``
    ``(B,)``) to at least ``margin`` inside the positive side: ``z + max(0, margin - d(z)) n``.
    Returns the moved latents and the shifts ``(B,)``."""
    zd, wd, bd = z.double(), w.double(), b.double()
    dist = signed_distance(zd, wd, bd)
    shift = (float(margin) - dist).clamp_min(0.0)
    n = F.normalize(wd, dim=-1)
    return (zd + shift[:, None] * n).to(z.dtype), shift.to(z.dtype)
