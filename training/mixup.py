"""SynFace's two mixups on the training side (Qiu et al., ICCV 2021).

* **Identity mixup** labels: a dataset or stream sampled with ``identity.mixup`` (:mod:`engine.mixup`)
  holds per-identity ``mix_parent_a``, ``mix_parent_b``, ``mix_lambda``. With ``soft_labels: true`` on
  the source, :func:`soft_label_table` makes the base identities the classes (in table order) and
  gives every identity a label pair and a weight: a base identity ``(c, c, 1)``, a mixed one
  ``(class of a, class of b, lam)``. Mixed identities are no classes of their own.
* **Domain mixup** (a phase's ``domain_mixup``, :class:`training.config.DomainMixupConfig`):
  :func:`domain_mixup` mixes pixels of two sources' samples within a batch.

Both feed :func:`training.heads.soft_margin_loss` through the batch keys ``label`` (class a),
``label_b`` and ``lam`` (a's weight).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from engine.interface import derive_seed

__all__ = ["soft_label_table", "read_mix_columns", "domain_mixup"]


def soft_label_table(parent_a: np.ndarray, parent_b: np.ndarray, lam: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per identity (N,) of a mixup table: (class of a, class of b, weight of a, number of classes).

    Classes are the base identities (``lam == 1``) in table order; a mixed identity's classes are
    those of its parents (parents are always base identities)."""
    parent_a, parent_b = np.asarray(parent_a, dtype=np.int64), np.asarray(parent_b, dtype=np.int64)
    lam = np.asarray(lam, dtype=np.float64)
    base = lam >= 1.0
    cls = np.full(len(lam), -1, dtype=np.int64)
    cls[base] = np.arange(int(base.sum()))
    ya, yb = cls[parent_a], cls[parent_b]
    if (ya < 0).any() or (yb < 0).any():
        raise ValueError("identity mixup table: a mixed identity's parent is not a base identity")
    return ya, yb, np.where(base, 1.0, lam), int(base.sum())


def read_mix_columns(dataset: str | Path) -> dict[int, tuple[int, int, float]]:
    """``{identity: (parent_a, parent_b, lam)}`` from a rendered dataset's ``metadata.parquet``
    (``id_mix_*`` columns, written when it was rendered with ``identity.mixup``). Raises
    ``ValueError`` naming the file when they are missing."""
    import pyarrow.parquet as pq

    path = Path(dataset) / "metadata.parquet"
    if not path.is_file():
        raise ValueError(f"soft_labels: {path} not found (soft labels need a dataset rendered by engine.render)")
    cols = ["identity", "id_mix_parent_a", "id_mix_parent_b", "id_mix_lambda"]
    names = pq.read_schema(path).names
    if not all(c in names for c in cols[1:]):
        raise ValueError(f"soft_labels: {path} has no id_mix_* columns (render the dataset with "
                         f"-o identity.mixup.fraction=...; or set soft_labels: false)")
    t = pq.read_table(path, columns=cols).to_pandas().drop_duplicates("identity")
    return {int(i): (int(a), int(b), float(w)) for i, a, b, w in
            zip(t["identity"], t["id_mix_parent_a"], t["id_mix_parent_b"], t["id_mix_lambda"])}


def domain_mixup(x: torch.Tensor, label: torch.Tensor, label_b: torch.Tensor, lam: torch.Tensor, source: torch.Tensor,
                 a: int, b: int, lam_range: Sequence[float], p: float, seed: int, step: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix samples of source ``a`` with samples of source ``b`` of the same batch.

    ``x`` (B, 3, H, W) float images (already augmented), ``label``/``label_b`` (B,) int64 classes in the
    phase's class space, ``lam`` (B,) weight of ``label``, ``source`` (B,) source index per row.
    Every hard-labelled (``lam == 1``) row of source ``a`` is, with probability ``p``, replaced by
    ``w x_a + (1 - w) x_j`` with ``j`` a hard-labelled row of source ``b`` drawn uniformly and
    ``w ~ U[lam_range]``; its targets become ``(label_a, label[j], w)``. Rows of ``b`` stay as they
    are. The draws come from ``derive_seed(seed, "domain-mixup", step)`` (deterministic by step).
    Returns new ``(x, label, label_b, lam)``; inputs are not modified.
    """
    ra = torch.nonzero((source == a) & (lam >= 1)).squeeze(1)
    rb = torch.nonzero((source == b) & (lam >= 1)).squeeze(1)
    if ra.numel() == 0 or rb.numel() == 0 or p <= 0:
        return x, label, label_b, lam
    g = torch.Generator().manual_seed(derive_seed(seed, "domain-mixup", step))
    u = torch.rand(ra.numel(), generator=g)
    j = torch.randint(rb.numel(), (ra.numel(),), generator=g)
    w = float(lam_range[0]) + (float(lam_range[1]) - float(lam_range[0])) * torch.rand(ra.numel(), generator=g)
    m = u < p
    dev = x.device
    rows, part, w = ra[m.to(ra.device)], rb[j.to(rb.device)][m.to(rb.device)], w[m].to(dev)
    x, label_b, lam = x.clone(), label_b.clone(), lam.clone()
    ww = w.to(x.dtype).view(-1, 1, 1, 1)
    x[rows] = ww * x[rows] + (1 - ww) * x[part]
    label_b[rows] = label[part]
    lam[rows] = w.to(lam.dtype)
    return x, label, label_b, lam
