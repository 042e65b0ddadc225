"""Evaluate a face generator (or any labelled face folder) through a frozen face-recognition encoder.

``python -m learned.evaluate --encoder SPEC (--dataset DIR | --source NAME --ids N --per-id K) [--real DIR]
[--train DIR] --out DIR`` writes ``report.json``, ``report.md`` and PNGs. Every number is computed in the
embedding space of the chosen encoder (:func:`learned.encoder.load_encoder`: a ``training/`` run dir or
``backbone.pt``, ``ARCH:PATH`` for an insightface arcface_torch ``.pth``). Each image set (evaluated,
real, training) is embedded exactly once, in batches, and kept in memory.

Metrics (``c_k`` is the L2-normalised mean of identity ``k``'s unit image embeddings, its *centre*):

* **Verification**: genuine pairs = pairs of images of one identity, impostor pairs = pairs of images of
  two identities (all of them, or a seeded uniform sample of ``max_pairs`` each when there are more);
  cosine-similarity histograms and the equal error rate (EER, the point of the ROC of "accept when
  cosine >= t" where false accept rate = false reject rate, linearly interpolated) with its threshold.
* **Uniqueness** (after DCFace, Kim et al., CVPR 2023): the fraction of identities that are distinct
  subjects. Identities are visited in label order; identity ``k`` is *unique* when ``cos(c_k, c_j) <=
  tau_u`` for every earlier unique identity ``j`` (a greedy de-duplication, so ``m`` mutual look-alikes
  count once). ``Uniqueness = #unique / #identities`` in ``(0, 1]``; ``tau_u`` defaults to 0.3, the
  cosine threshold DCFace uses to decide that two subjects are the same person. (DCFace measures both
  Uniqueness and Consistency with a pretrained FR model and a same-subject cosine threshold; the exact
  counting rules stated here are the ones this module implements.)
* **Consistency** (after DCFace): the fraction of images whose identity the encoder confirms: image
  ``i`` of identity ``k`` is consistent when ``cos(e_i, c_k^(-i)) > tau_c``, where ``c_k^(-i)`` is the
  centre of identity ``k`` computed *without* image ``i`` (leave-one-out, so that an image does not vote
  for itself); ``tau_c`` defaults to 0.3. Identities with one image are not scored. Also reported: the
  mean leave-one-out similarity and the *label agreement* (fraction of images whose nearest centre,
  their own taken leave-one-out, is their own identity).
* **Identity preservation**: ``cos(e_i, z_k)`` between each image and the condition embedding ``z_k``
  (``Identities.embedding``) of its identity; applicable only when a source is rendered and its identity
  embedding has the encoder's dimension (the embedding of a learned source lives in its FR encoder's
  space); "not applicable" otherwise (morphable source: a shape/texture space; dataset folders carry no
  conditions). The report records whether the source names the same encoder (``same_encoder``).
* **Memorisation** (with ``train``): for each sample, its most similar training image by cosine; the
  distribution of those maxima, the fraction above ``memorisation_threshold`` and a picture pairing the
  most similar samples with their nearest training images. A fixed threshold only suits strong
  encoders, so the check is also calibrated to the encoder: the fraction of samples closer to a
  training image than the 99th percentile of how close real training faces come to *another person's*
  training image (:func:`real_reference`).
* **Frechet distance** (with ``real``): ``|mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2))`` between
  Gaussian fits (mean, unbiased covariance) of the generated and real embeddings. The trace of the
  matrix square root is computed as ``Tr((S_g^(1/2) S_r S_g^(1/2))^(1/2))`` from symmetric
  eigendecompositions in float64, round-off eigenvalues (negative, or below ``dim * eps * max``) set to
  0 (same value as
  ``scipy.linalg.sqrtm``, but real and stable when covariances are singular, e.g. fewer images than
  dimensions).
* **Separability**: :func:`engine.interface.separability_report` of the identity centres, with the
  minimum distance ``sqrt(2 - 2 tau_u)`` (the Euclidean distance of unit vectors at cosine ``tau_u``).
* **Contact sheet**: rows = identities, columns = variations (up to 8 x 8).
* **Real-face judge** (``--judge``, optional extra ``judge``): :mod:`engine.judge`'s dlib figures of the
  evaluated images (detection rate, genuine/impostor descriptor distances, FAR@0.6, EER, rank-1).

Python API: :func:`evaluate` (everything, writes the report), :func:`embed_dataset` /
:func:`embed_source` (:class:`EmbeddedSet`), and the metric functions :func:`verification_scores`,
:func:`equal_error_rate`, :func:`identity_centres`, :func:`uniqueness`, :func:`consistency`,
:func:`identity_preservation`, :func:`nearest_neighbours`, :func:`memorisation`,
:func:`frechet_distance`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import EvaluateError
from common.metrics import equal_error_rate, genuine_pairs, sample_impostor_pairs
from common.plots import new_figure, plot_score_histograms
from common.errors import report as report_error

__all__ = [
    "EvaluateError", "EmbeddedSet", "embed_dataset", "embed_source", "evaluate", "verification_scores",
    "equal_error_rate", "identity_centres", "uniqueness", "consistency", "identity_preservation",
    "nearest_neighbours", "memorisation", "real_reference", "frechet_distance", "main", "DEFINITIONS",
]

#: DCFace's same-subject cosine threshold, the default of ``tau_u`` and ``tau_c``.
DEFAULT_ID_THRESHOLD = 0.3
DEFAULT_MEMORISATION_THRESHOLD = 0.7
DEFAULT_MAX_PAIRS = 500_000
SHEET_IDS = SHEET_VARIATIONS = 8
MEMORISED_SHOWN = 8

DEFINITIONS: dict[str, str] = {
    "verification": (
        "Genuine pairs: two images of one identity; impostor pairs: images of two identities (all pairs, or a "
        "seeded uniform sample of max_pairs of each kind). EER: the ROC point of 'accept when cosine >= t' where "
        "false accept rate = false reject rate (linear interpolation), with that threshold t."),
    "uniqueness": (
        "After DCFace (Kim et al., CVPR 2023). Centre c_k = L2-normalised mean of identity k's unit embeddings. "
        "Visiting identities in label order, k is unique when cos(c_k, c_j) <= tau_u for every earlier unique j. "
        "Uniqueness = #unique identities / #identities."),
    "consistency": (
        "After DCFace. Image i of identity k is consistent when cos(e_i, c_k^(-i)) > tau_c, c_k^(-i) being the "
        "centre of k without image i (leave-one-out). Consistency = #consistent / #scored images (identities "
        "with 2+ images). Label agreement: fraction of images whose nearest centre (own one leave-one-out) is "
        "their own identity."),
    "identity_preservation": (
        "cos(e_i, z_k) between each image embedding and the condition embedding z_k (Identities.embedding) of "
        "its identity; only when the source's identity embedding has the encoder's dimension."),
    "memorisation": (
        "For each sample, the maximum cosine similarity to any training image (its nearest training image); "
        "distribution of these maxima and the fraction above the memorisation threshold."),
    "frechet": (
        "|mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)) between Gaussian fits (mean, unbiased covariance) "
        "of generated and real embeddings; Tr((S_g S_r)^(1/2)) = Tr((S_g^(1/2) S_r S_g^(1/2))^(1/2)) from "
        "float64 symmetric eigendecompositions, round-off eigenvalues (negative or below dim*eps*max) set to 0."),
    "separability": (
        "engine.interface.separability_report of the identity centres (Euclidean distances of unit vectors), "
        "required minimum distance sqrt(2 - 2 tau_u)."),
}


# ------------------------------------------------------------------------------------------------
# metric functions (pure: embeddings in, numbers out)
# ------------------------------------------------------------------------------------------------


def _as_tensor(x, dtype=torch.float64) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _labels(labels) -> torch.Tensor:
    lab = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)).long().reshape(-1)
    return lab


def _quantiles(x: torch.Tensor, qs=(0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)) -> dict[str, float]:
    x = x.double().reshape(-1)
    if x.numel() == 0:
        return {}
    v = torch.quantile(x[:10_000_000], torch.tensor(qs, dtype=x.dtype))
    return {f"q{int(round(q * 100)):02d}": float(a) for q, a in zip(qs, v)}


def verification_scores(embeddings, labels, max_pairs: int = DEFAULT_MAX_PAIRS,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of genuine and impostor pairs -> ``(scores, issame)`` (numpy, genuine first).

    All genuine pairs (same label, ``i < j``) are used when there are at most ``max_pairs`` of them,
    else ``max_pairs`` are drawn uniformly (with replacement) by a seeded generator; likewise for
    impostor pairs (different labels). Raises :class:`EvaluateError` when no identity has two images or
    there are fewer than two identities.
    """
    if max_pairs < 1:
        raise EvaluateError(f"max_pairs must be >= 1, got {max_pairs}")
    e = F.normalize(_as_tensor(embeddings, torch.float32), dim=1)
    lab = _labels(labels).numpy()
    n = len(lab)
    if e.shape[0] != n:
        raise EvaluateError(f"{e.shape[0]} embeddings but {n} labels")
    if len(np.unique(lab)) < 2:
        raise EvaluateError(f"need at least 2 identities for impostor pairs, got {len(np.unique(lab))}")
    rng = np.random.default_rng(seed)
    ga, gb, n_gen = genuine_pairs(lab, max_pairs, rng)
    if n_gen == 0:
        raise EvaluateError("no identity has 2 or more images: genuine pairs (EER, consistency) need them")
    # impostor
    n_imp = n * (n - 1) // 2 - n_gen
    if n_imp <= max_pairs:
        iu = np.triu_indices(n, 1)
        keep = lab[iu[0]] != lab[iu[1]]
        ia, ib = iu[0][keep], iu[1][keep]
    else:
        ia, ib = sample_impostor_pairs(lab, max_pairs, rng)
    pa = np.concatenate([ga, ia])
    pb = np.concatenate([gb, ib])
    scores = np.empty(len(pa), dtype=np.float64)
    step = 1 << 18
    for s in range(0, len(pa), step):
        x, y = e[torch.from_numpy(pa[s:s + step])], e[torch.from_numpy(pb[s:s + step])]
        scores[s:s + step] = (x * y).sum(1).double().numpy()
    issame = np.r_[np.ones(len(ga), dtype=bool), np.zeros(len(ia), dtype=bool)]
    return scores, issame


def identity_centres(embeddings, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(centres (C, D), sums (C, D), counts (C,))`` for labels ``0..C-1``: ``sums`` of the unit
    embeddings per identity and their L2-normalised means (the centres), in float64."""
    e = F.normalize(_as_tensor(embeddings), dim=1)
    lab = _labels(labels)
    if len(lab) != e.shape[0]:
        raise EvaluateError(f"{e.shape[0]} embeddings but {len(lab)} labels")
    if len(lab) == 0:
        raise EvaluateError("no embeddings")
    if int(lab.min()) < 0:
        raise EvaluateError("labels must be >= 0")
    c = int(lab.max()) + 1
    sums = torch.zeros(c, e.shape[1], dtype=torch.float64).index_add_(0, lab, e)
    counts = torch.bincount(lab, minlength=c)
    if (counts == 0).any():
        raise EvaluateError(f"labels must be 0..C-1 with every identity present; {int((counts == 0).sum())} missing")
    return F.normalize(sums, dim=1), sums, counts


def uniqueness(centres, threshold: float = DEFAULT_ID_THRESHOLD) -> dict[str, Any]:
    """DCFace-style Uniqueness of identity ``centres`` (C, D) (see the module docstring).

    Returns ``uniqueness`` (#unique / C), ``unique_identities``, ``num_identities``, ``threshold``,
    ``duplicate_pairs`` (pairs of identities with centre cosine > threshold) and quantiles of each
    centre's highest cosine to another centre (``nearest_centre_similarity``).
    """
    c = F.normalize(_as_tensor(centres), dim=1)
    n = c.shape[0]
    if n == 0:
        raise EvaluateError("no identities")
    kept = torch.zeros(n, dtype=torch.bool)
    nearest = torch.full((n,), float("nan"), dtype=torch.float64)
    dup_pairs = 0
    step = 2048
    for s in range(0, n, step):
        block = c[s:s + step] @ c.T  # (b, n) cosines of this block of centres to all centres
        b = block.shape[0]
        rows = torch.arange(b)
        cols = rows + s
        over = block > threshold
        dup_pairs += int((over & (torch.arange(n).unsqueeze(0) > cols.unsqueeze(1))).sum())  # pairs j < k
        over[rows, cols] = False
        block[rows, cols] = -float("inf")
        nearest[s:s + b] = block.max(1).values
        for r in range(b):  # greedy, in label order: only earlier identities are in ``kept`` yet
            if not bool((over[r] & kept).any()):
                kept[s + r] = True
    keep = int(kept.sum())
    return {
        "uniqueness": keep / n,
        "unique_identities": keep,
        "num_identities": int(n),
        "threshold": float(threshold),
        "duplicate_pairs": dup_pairs,
        "nearest_centre_similarity": _quantiles(nearest) if n > 1 else {},
    }


def consistency(embeddings, labels, threshold: float = DEFAULT_ID_THRESHOLD) -> dict[str, Any]:
    """DCFace-style Consistency (see the module docstring) with leave-one-out centres.

    Returns ``consistency`` (fraction of scored images with ``cos(e_i, c_k^(-i)) > threshold``),
    ``mean_similarity`` (mean of those cosines), ``label_agreement``, ``scored_images``,
    ``unscored_images`` (of single-image identities), ``threshold``, ``similarity_quantiles`` and
    ``per_identity`` (mean cosine of each scored identity, for the worst-identity list).
    """
    e = F.normalize(_as_tensor(embeddings), dim=1)
    lab = _labels(labels)
    centres, sums, counts = identity_centres(e, lab)
    n_img = counts[lab]
    scored = n_img >= 2
    if not bool(scored.any()):
        raise EvaluateError("no identity has 2 or more images: consistency needs them")
    es, ls = e[scored], lab[scored]
    loo = F.normalize(sums[ls] - es, dim=1)
    sim = (es * loo).sum(1)
    # label agreement: nearest centre, own centre replaced by the leave-one-out one
    correct = 0
    step = 4096
    cf = centres.float()
    for s in range(0, es.shape[0], step):
        x = es[s:s + step]
        cs = (x.float() @ cf.T).double()
        cs[torch.arange(x.shape[0]), ls[s:s + step]] = sim[s:s + step]
        correct += int((cs.argmax(1) == ls[s:s + step]).sum())
    per_id_sum = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, ls, sim)
    per_id_n = torch.bincount(ls, minlength=len(counts))
    has = per_id_n > 0
    per_identity = {int(k): float(per_id_sum[k] / per_id_n[k]) for k in torch.nonzero(has).reshape(-1).tolist()}
    return {
        "consistency": float((sim > threshold).double().mean()),
        "mean_similarity": float(sim.mean()),
        "label_agreement": correct / int(scored.sum()),
        "scored_images": int(scored.sum()),
        "unscored_images": int((~scored).sum()),
        "threshold": float(threshold),
        "similarity_quantiles": _quantiles(sim),
        "per_identity": per_identity,
        "similarities": sim,
    }


def identity_preservation(embeddings, labels, conditions) -> dict[str, Any]:
    """Cosine between each image embedding and its identity's condition ``conditions[labels[i]]``.

    Returns ``mean``, ``std``, ``quantiles``, ``per_identity`` (mean per identity) and ``similarities``.
    Raises :class:`EvaluateError` when the dimensions differ (not the same space).
    """
    e = F.normalize(_as_tensor(embeddings), dim=1)
    z = F.normalize(_as_tensor(conditions), dim=1)
    lab = _labels(labels)
    if e.shape[1] != z.shape[1]:
        raise EvaluateError(f"condition dimension {z.shape[1]} != embedding dimension {e.shape[1]}")
    if len(lab) and int(lab.max()) >= z.shape[0]:
        raise EvaluateError(f"label {int(lab.max())} has no condition ({z.shape[0]} conditions)")
    sim = (e * z[lab]).sum(1)
    c = z.shape[0]
    per_sum = torch.zeros(c, dtype=torch.float64).index_add_(0, lab, sim)
    per_n = torch.bincount(lab, minlength=c)
    return {
        "mean": float(sim.mean()),
        "std": float(sim.std()) if sim.numel() > 1 else 0.0,
        "quantiles": _quantiles(sim),
        "per_identity": {int(k): float(per_sum[k] / per_n[k]) for k in torch.nonzero(per_n).reshape(-1).tolist()},
        "similarities": sim,
    }


def nearest_neighbours(query, reference, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``query`` (N, D): ``(max cosine (N,), index (N,))`` of its most similar row of
    ``reference`` (M, D), in query chunks (memory O(chunk * M))."""
    q = F.normalize(_as_tensor(query, torch.float32), dim=1)
    r = F.normalize(_as_tensor(reference, torch.float32), dim=1)
    if r.shape[0] == 0:
        raise EvaluateError("empty reference set")
    if q.shape[1] != r.shape[1]:
        raise EvaluateError(f"dimension mismatch: {q.shape[1]} vs {r.shape[1]}")
    vals, idx = [], []
    for s in range(0, q.shape[0], chunk):
        v, i = (q[s:s + chunk] @ r.T).max(1)
        vals.append(v)
        idx.append(i)
    if not vals:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    return torch.cat(vals).double(), torch.cat(idx)


def real_reference(training, labels, max_images: int = 2000) -> torch.Tensor:
    """Calibration for :func:`memorisation`: for (up to ``max_images``, evenly spread) training images,
    the cosine to the most similar training image of *another* identity (M',). A generated image
    closer to a training image than real faces come to other people's images is suspicious, whatever
    the encoder's scale (weak encoders put every face at cosine ~0.9+)."""
    t = F.normalize(_as_tensor(training, torch.float32), dim=1)
    lab = _labels(labels)
    M = t.shape[0]
    if M < 2 or int(lab.unique().numel()) < 2:
        return torch.zeros(0, dtype=torch.float64)
    sub = torch.linspace(0, M - 1, min(M, max_images)).round().long().unique()
    out = []
    for s in range(0, sub.numel(), 512):
        q = sub[s:s + 512]
        sim = t[q] @ t.T
        sim[lab[q][:, None] == lab[None, :]] = -float("inf")
        out.append(sim.max(1).values)
    return torch.cat(out).double()


def memorisation(samples, training, threshold: float = DEFAULT_MEMORISATION_THRESHOLD,
                 top: int = MEMORISED_SHOWN, training_labels=None) -> dict[str, Any]:
    """Nearest training image of every sample (cosine): ``max_similarity`` (N,), ``nearest`` (N,),
    ``fraction_above`` the threshold, ``num_above``, ``mean``, ``quantiles`` and ``top`` (sample indices
    of the ``top`` highest maxima, most similar first). With ``training_labels``, also the encoder-
    calibrated check of :func:`real_reference`: ``real_other_q50`` / ``real_other_q99`` (how close real
    faces come to another person's training image) and ``fraction_above_real_q99``."""
    sim, idx = nearest_neighbours(samples, training)
    order = torch.argsort(sim, descending=True, stable=True)[:top]
    calib: dict[str, Any] = {}
    if training_labels is not None:
        ref = real_reference(training, training_labels)
        if ref.numel():
            q50, q99 = torch.quantile(ref, torch.tensor([0.5, 0.99], dtype=ref.dtype)).tolist()
            calib = {"real_other_q50": q50, "real_other_q99": q99, "real_reference_images": int(ref.numel()),
                     "fraction_above_real_q99": float((sim > q99).double().mean()) if sim.numel() else 0.0}
    return {**calib,
        "threshold": float(threshold),
        "fraction_above": float((sim > threshold).double().mean()) if sim.numel() else 0.0,
        "num_above": int((sim > threshold).sum()),
        "mean": float(sim.mean()) if sim.numel() else float("nan"),
        "quantiles": _quantiles(sim),
        "max_similarity": sim,
        "nearest": idx,
        "top": order.tolist(),
    }


def _psd_eigvals(m: np.ndarray, vectors: bool = False):
    """Eigenvalues (and vectors) of the symmetric part of ``m`` with round-off ones set to 0: negative
    ones and those below ``dim * eps * max`` (their square roots would otherwise add up to a visible
    bias when the matrix is singular, e.g. a covariance of fewer samples than dimensions)."""
    sym = (m + m.T) / 2.0
    w, v = np.linalg.eigh(sym) if vectors else (np.linalg.eigvalsh(sym), None)
    tol = max(float(w.max(initial=0.0)), 0.0) * len(w) * np.finfo(np.float64).eps * 4
    w = np.where(w > tol, w, 0.0)
    return (w, v) if vectors else w


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = _psd_eigvals(m, vectors=True)
    return (v * np.sqrt(w)) @ v.T


def frechet_distance(x, y) -> float:
    """Frechet distance between Gaussian fits of ``x`` (N, D) and ``y`` (M, D) (see the module
    docstring). Needs at least 2 rows each; computed in float64."""
    a = _as_tensor(x).numpy()
    b = _as_tensor(y).numpy()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise EvaluateError(f"Frechet distance needs (N, D) and (M, D) arrays, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise EvaluateError(f"Frechet distance needs at least 2 embeddings per set, got {len(a)} and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise EvaluateError("embeddings contain NaN/inf")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s1, s2 = np.atleast_2d(s1), np.atleast_2d(s2)
    r1 = _psd_sqrt(s1)
    mid = r1 @ s2 @ r1
    tr_sqrt = float(np.sqrt(_psd_eigvals(mid)).sum())
    fd = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    # the exact value is >= 0; clip the round-off of identical distributions
    return max(fd, 0.0) if fd > -1e-9 * max(1.0, float(np.trace(s1) + np.trace(s2))) else fd


# ------------------------------------------------------------------------------------------------
# image sets
# ------------------------------------------------------------------------------------------------


@dataclass
class EmbeddedSet:
    """A set of images embedded once: unit ``embeddings`` (N, D) float32 on CPU, ``labels`` (N,) in
    ``0..C-1``, ``variation`` (N,) index of each image within its identity, ``names`` (C identity names),
    ``conditions`` ((C, D') identity conditions or ``None``), ``fetch(indices)`` -> images (n, 3, H, W)
    in [0, 1] (re-read or re-rendered on demand), ``item_name(i)``, ``describe`` and ``seconds``."""

    embeddings: torch.Tensor
    labels: torch.Tensor
    variation: torch.Tensor
    names: list[str]
    fetch: Callable[[Sequence[int]], torch.Tensor]
    item_name: Callable[[int], str]
    describe: dict[str, Any]
    conditions: torch.Tensor | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_identities(self) -> int:
        return len(self.names)


class _Collate:
    """DataLoader collate: uint8 images of any size -> float (B, 3, H, W) in [-1, 1] at ``size``."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, batch):
        out = []
        for img, _label in batch:
            x = img.float().div(127.5).sub(1.0).unsqueeze(0)
            if tuple(x.shape[-2:]) != self.size:
                x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                                  antialias=x.shape[-1] > self.size[1])
            out.append(x)
        return torch.cat(out)


def _resize01(images: list[torch.Tensor], size: tuple[int, int] | None) -> torch.Tensor:
    out = []
    for img in images:
        x = img.float().div(255.0).unsqueeze(0) if img.dtype == torch.uint8 else img.float().unsqueeze(0)
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > size[1]).clamp(0, 1)
        out.append(x)
    return torch.cat(out) if out else torch.zeros(0, 3, 1, 1)


def _check_positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum):
        raise EvaluateError(f"{name} must be an integer >= {minimum}, got {value!r}")


def embed_dataset(path: str | os.PathLike, encoder, max_images: int | None = None, batch_size: int = 128,
                  workers: int = 0, min_identities: int = 2, what: str = "dataset") -> EmbeddedSet:
    """Embed a dataset read by :func:`engine.formats.open_dataset` (synthface output dir, ImageFolder
    ``DIR/<identity>/<img>``, or RecordIO). With ``max_images``, the first ``max_images`` images (in
    identity order) are used. Images are resized to the encoder's input size before embedding."""
    from engine.formats import CorruptRecordError, open_dataset

    _check_positive("max_images", max_images)
    _check_positive("batch_size", batch_size)
    _check_positive("workers", workers, 0)
    p = Path(path).expanduser()
    if not p.exists() and not Path(str(p) + ".rec").is_file():
        raise EvaluateError(f"{what} not found: {p}")
    try:
        ds = open_dataset(p)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise EvaluateError(f"{what} {p}: {e}") from None
    except (ValueError, CorruptRecordError) as e:
        raise EvaluateError(f"{what} {p} is not a usable face dataset: {e}") from None
    n = len(ds) if max_images is None else min(len(ds), int(max_images))
    if n == 0:
        raise EvaluateError(f"{what} {p} holds no images")
    raw = ds.labels[:n].long()
    uniq, labels = torch.unique(raw, sorted=True, return_inverse=True)
    classes = list(getattr(ds, "classes", None) or [str(i) for i in range(ds.num_classes)])
    names = [classes[int(u)] if int(u) < len(classes) else str(int(u)) for u in uniq]
    if len(names) < min_identities:
        raise EvaluateError(f"{what} {p} has {len(names)} identit{'y' if len(names) == 1 else 'ies'}"
                            f"{' in its first ' + str(n) + ' images' if n < len(ds) else ''}; "
                            f"need at least {min_identities} (layout DIR/<identity>/<image>)")
    variation = torch.zeros(n, dtype=torch.long)
    seen: dict[int, int] = {}
    for i, lab in enumerate(labels.tolist()):
        variation[i] = seen.get(lab, 0)
        seen[lab] = int(variation[i]) + 1
    subset = torch.utils.data.Subset(ds, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_Collate(encoder.input_size))
    t0 = time.perf_counter()
    embs = []
    try:
        for x in loader:
            embs.append(encoder.embed(x, batch_size=batch_size))
    except CorruptRecordError as e:
        raise EvaluateError(f"{what} {p}: {e}") from None
    seconds = time.perf_counter() - t0
    first = ds[0][0]
    display = (int(first.shape[-2]), int(first.shape[-1]))

    def fetch(indices: Sequence[int]) -> torch.Tensor:
        return _resize01([ds[int(i)][0] for i in indices], display)

    def item_name(i: int) -> str:
        return os.path.relpath(ds.describe_item(int(i)), str(ds.root)) if ds.kind == "imagefolder" else f"record {i}"

    return EmbeddedSet(
        embeddings=torch.cat(embs), labels=labels.long(), variation=variation, names=names, fetch=fetch,
        item_name=item_name, seconds=seconds,
        describe={"kind": "dataset", "path": str(p.resolve()) if p.exists() else str(p), "format": ds.kind,
                  "images_total": len(ds), "images_used": n, "identities": len(names)},
    )


def embed_source(source, encoder, ids: int, per_id: int, seed: int = 0, batch_size: int = 128,
                 keep: tuple[int, int] = (SHEET_IDS, SHEET_VARIATIONS)) -> EmbeddedSet:
    """Sample ``ids`` identities from ``source`` (an :class:`engine.interface.IdentitySampler`) with
    ``seed``, render ``per_id`` variations of each (identity-major, in batches) and embed them. Images of
    the first ``keep`` identities x variations are kept for the contact sheet; others are re-rendered
    on demand by ``fetch`` (the interface makes image ``(seed, identity, variation)`` deterministic)."""
    _check_positive("ids", ids, 2)
    _check_positive("per_id", per_id, 2)
    _check_positive("batch_size", batch_size)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise EvaluateError(f"seed must be an integer >= 0, got {seed!r}")
    t0 = time.perf_counter()
    identities = source.sample_identities(int(ids), seed=int(seed))
    if len(identities) != ids:
        raise EvaluateError(f"source returned {len(identities)} identities for ids={ids}")
    total = ids * per_id
    flat = torch.arange(total)
    rows_all, vars_all = flat // per_id, flat % per_id
    embs, kept = [], {}
    for s in range(0, total, batch_size):
        rows, variations = rows_all[s:s + batch_size], vars_all[s:s + batch_size]
        batch = source.render(identities, rows, variations, seed=int(seed))
        imgs = batch.images.float()
        embs.append(encoder.embed(imgs.mul(2.0).sub(1.0), batch_size=batch_size))
        for j in range(len(rows)):
            if int(rows[j]) < keep[0] and int(variations[j]) < keep[1]:
                kept[s + j] = imgs[j].detach().cpu().clamp(0, 1)
    seconds = time.perf_counter() - t0

    def fetch(indices: Sequence[int]) -> torch.Tensor:
        indices = [int(i) for i in indices]
        missing = [i for i in indices if i not in kept]
        got = {}
        for s in range(0, len(missing), batch_size):
            part = missing[s:s + batch_size]
            b = source.render(identities, rows_all[part], vars_all[part], seed=int(seed))
            got.update({i: b.images[j].float().cpu().clamp(0, 1) for j, i in enumerate(part)})
        return torch.stack([kept[i] if i in kept else got[i] for i in indices]) if indices else torch.zeros(0, 3, 1, 1)

    def item_name(i: int) -> str:
        return f"identity {int(rows_all[i])} variation {int(vars_all[i])}"

    cond = identities.embedding.detach().cpu().float() if identities.embedding is not None else None
    cfg = {}
    try:
        cfg = source.config()
    except Exception:  # config is informative only
        pass
    return EmbeddedSet(
        embeddings=torch.cat(embs), labels=rows_all.clone(), variation=vars_all.clone(),
        names=[str(i) for i in range(ids)], fetch=fetch, item_name=item_name, conditions=cond, seconds=seconds,
        describe={"kind": "source", "source": getattr(source, "name", type(source).__name__), "ids": int(ids),
                  "per_id": int(per_id), "seed": int(seed), "images_used": total, "identities": int(ids)},
        extra={"config": cfg, "identity_report": identities.report},
    )


# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------


def _hist_png(values: torch.Tensor, path: Path, title: str, xlabel: str, threshold: float | None = None,
              threshold_label: str = "threshold") -> str:
    v = values.double().numpy()
    fig = new_figure((6.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = float(min(v.min(), threshold if threshold is not None else v.min())), float(v.max())
    edges = np.linspace(lo - 1e-3, max(hi, lo + 1e-3) + 1e-3, 51)
    ax.hist(v, bins=edges, color="tab:blue", alpha=0.75, label=f"{len(v)} images")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1.2, label=f"{threshold_label} {threshold:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path.name


def _memorised_png(gen: EmbeddedSet, train: EmbeddedSet, mem: Mapping[str, Any], path: Path) -> str:
    top = list(mem["top"])
    gi = gen.fetch(top)
    ti = train.fetch([int(mem["nearest"][i]) for i in top])
    k = len(top)
    fig = new_figure((1.75 * k + 0.9, 4.6))
    for j, i in enumerate(top):
        nearest = int(mem["nearest"][i])
        for row, (img, label) in enumerate(((gi[j], gen.item_name(i)), (ti[j], train.item_name(nearest)))):
            ax = fig.add_subplot(2, k, row * k + j + 1)
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            parts = label.replace(os.sep, "/").rsplit("/", 1)
            ax.set_xlabel("\n".join(t if len(t) <= 24 else t[:10] + ".." + t[-12:] for t in parts), fontsize=7)
            if row == 0:
                ax.set_title(f"cos {float(mem['max_similarity'][i]):.3f}", fontsize=10,
                             color="tab:red" if float(mem["max_similarity"][i]) > mem["threshold"] else "black")
            if j == 0:
                ax.set_ylabel("sample" if row == 0 else "nearest train", fontsize=10)
    fig.suptitle("Most memorised samples (top) and their nearest training images (bottom)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path.name


def _contact_sheet_png(s: EmbeddedSet, path: Path) -> str:
    from engine.contact_sheet import contact_sheet, save_png

    lab, var = s.labels, s.variation
    counts = torch.bincount(lab, minlength=s.num_identities)
    # the identities with the most images (label order among equals: the first ones of a rendered source)
    ids = sorted(range(s.num_identities), key=lambda k: (-int(counts[k]), k))[:SHEET_IDS]
    cols = max(1, min(SHEET_VARIATIONS, int(counts[ids].max())))
    cells: list[int | None] = []
    for k in ids:
        members = torch.nonzero((lab == k) & (var < cols)).reshape(-1).tolist()
        members.sort(key=lambda i: int(var[i]))
        cells.extend(members + [None] * (cols - len(members)))
    wanted = [i for i in cells if i is not None]
    imgs = s.fetch(wanted)
    blank = torch.ones_like(imgs[0])
    it = iter(imgs)
    grid = torch.stack([next(it) if i is not None else blank for i in cells])
    save_png(contact_sheet(grid, nrow=cols), path)
    return path.name


# ------------------------------------------------------------------------------------------------
# the evaluation
# ------------------------------------------------------------------------------------------------


def _check_threshold(name: str, v: float) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or not -1.0 <= v <= 1.0:
        raise EvaluateError(f"{name} must be a cosine in [-1, 1], got {v!r}")
    return float(v)


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        d = torch.device(device)
    except RuntimeError as e:
        raise EvaluateError(f"bad device {device!r}: {e}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise EvaluateError(f"device {device!r} requested but CUDA is not available")
    return str(d)


def _load_encoder(spec, device: str, allow_random: bool):
    from learned.encoder import EncoderError, load_encoder

    if hasattr(spec, "embed") and hasattr(spec, "embedding_size"):
        return spec.to(device)
    try:
        return load_encoder(spec, device=device, allow_random=allow_random)
    except EncoderError as e:
        raise EvaluateError(f"bad encoder spec {spec!r}: {e}") from None


def _make_source(name, checkpoint, preset, size, device, overrides=None):
    from engine.interface import IdentitySampler
    from engine.sources import SourceError, SourceSpec

    if isinstance(name, IdentitySampler):
        return name, getattr(name, "name", type(name).__name__)
    kwargs: dict[str, Any] = {"device": device}
    if checkpoint is not None:
        kwargs["checkpoint"] = str(checkpoint)
    if preset is not None:
        kwargs["preset"] = preset
    if size is not None:
        _check_positive("size", size, 8)
        kwargs["size"] = int(size)
    if overrides:
        kwargs["overrides"] = dict(overrides)
    try:
        return SourceSpec(str(name), kwargs).create(), str(name)
    except SourceError as e:  # unknown source, checkpoint not found or not taken
        raise EvaluateError(str(e)) from None
    except (ValueError, TypeError, OSError, KeyError, RuntimeError) as e:
        raise EvaluateError(f"cannot create source {name!r}: {e}") from None


def _same_encoder(cond: Any, spec: Mapping[str, Any]) -> bool | None:
    """Whether the condition encoder a source names (its config's ``encoder`` spec) is the evaluation
    encoder (``spec``: the resolved spec of an :class:`FREncoder`); ``None`` when the source names none.
    Paths compare resolved (a run dir equals its ``backbone.pt``); other keys compare by value."""
    from learned.encoder import _normalise_spec

    if cond is None:
        return None
    try:
        c = _normalise_spec(cond)
    except Exception:
        return False

    def place(p: Any) -> Path:
        q = Path(str(p)).expanduser().resolve()
        return q.parent if q.is_file() and q.name in ("backbone.pt", "model_config.json") else q

    for k, val in c.items():
        if k in ("path", "checkpoint"):
            if spec.get(k) is None or place(val) != place(spec[k]):
                return False
        elif k == "input_size":
            norm = (lambda x: [int(x), int(x)] if isinstance(x, (int, float)) else [int(v) for v in x])
            if k in spec and norm(val) != norm(spec[k]):
                return False
        elif k in spec and spec[k] != val:
            return False
    return True


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (bool, int, str)) or x is None:
        return x
    return str(x)


def evaluate(encoder, *, dataset=None, source=None, checkpoint=None, ids: int | None = None,
             per_id: int | None = None, seed: int = 0, preset: str | None = None, size: int | None = None,
             overrides: Mapping[str, Any] | None = None, real=None, train=None, out=None, max_images: int | None = None, batch_size: int = 128,
             device: str = "cpu", workers: int = 0, max_pairs: int = DEFAULT_MAX_PAIRS,
             uniqueness_threshold: float = DEFAULT_ID_THRESHOLD,
             consistency_threshold: float = DEFAULT_ID_THRESHOLD,
             memorisation_threshold: float = DEFAULT_MEMORISATION_THRESHOLD,
             allow_random_encoder: bool = False, log: Callable[[str], None] | None = None,
             judge: bool = False) -> dict[str, Any]:
    """Run every metric (see the module docstring) and, with ``out``, write ``report.json``,
    ``report.md`` and the PNGs there. Returns the report dict (the JSON content).

    ``encoder`` is a spec for :func:`learned.encoder.load_encoder` (or an :class:`FREncoder`). Give
    exactly one of ``dataset`` (a path) and ``source`` (a registry name, ``module:Class`` or an
    ``IdentitySampler`` instance, with ``ids`` and ``per_id``; ``overrides`` go to the source as in
    ``engine.render --override``). ``real`` and ``train`` are face folders
    (or any dataset :func:`engine.formats.open_dataset` reads); ``max_images`` caps each dataset read.
    ``allow_random_encoder`` accepts an untrained ``random_init_seed`` encoder spec (tests only).
    """
    say = log or (lambda _m: None)
    t_start = time.perf_counter()
    if (dataset is None) == (source is None):
        raise EvaluateError("give exactly one of --dataset DIR or --source NAME")
    if dataset is not None and (ids is not None or per_id is not None or checkpoint is not None or overrides):
        raise EvaluateError("--ids/--per-id/--checkpoint/--override go with --source, not --dataset")
    if source is not None and (ids is None or per_id is None):
        raise EvaluateError("--source needs --ids N and --per-id K")
    _check_positive("max_images", max_images, 2)
    _check_positive("batch_size", batch_size)
    _check_positive("workers", workers, 0)
    _check_positive("max_pairs", max_pairs)
    tau_u = _check_threshold("uniqueness threshold", uniqueness_threshold)
    tau_c = _check_threshold("consistency threshold", consistency_threshold)
    tau_m = _check_threshold("memorisation threshold", memorisation_threshold)
    if judge:  # fail before the long work when the optional extra is missing
        from engine.judge import find_models, require_dlib

        try:
            require_dlib()
            judge_models = find_models()
        except (ImportError, FileNotFoundError) as e:
            raise EvaluateError(f"--judge: {e}") from None
    device = _resolve_device(device)
    enc = _load_encoder(encoder, device, allow_random_encoder)
    say(f"encoder: {enc.spec} (D={enc.embedding_size}, input {enc.input_size[0]}x{enc.input_size[1]}) on {device}")

    cache: dict[str, EmbeddedSet] = {}

    def folder(path, what: str, min_ids: int) -> EmbeddedSet:
        key = str(Path(path).expanduser().resolve())
        if key not in cache:
            say(f"embedding {what} {path} ...")
            cache[key] = embed_dataset(path, enc, max_images=max_images, batch_size=batch_size, workers=workers,
                                       min_identities=min_ids, what=what)
            s = cache[key]
            say(f"  {len(s)} images, {s.num_identities} identities in {s.seconds:.1f}s")
        return cache[key]

    if dataset is not None:
        gen = folder(dataset, "dataset", 2)
        src_obj = None
    else:
        src_obj, src_name = _make_source(source, checkpoint, preset, size, device, overrides)
        say(f"rendering {ids} x {per_id} images from source {src_name} (seed {seed}) ...")
        gen = embed_source(src_obj, enc, int(ids), int(per_id), seed=seed, batch_size=batch_size)
        gen.describe.update(source=src_name, checkpoint=None if checkpoint is None else str(checkpoint),
                            preset=preset, overrides=dict(overrides or {}),
                            identity_mode=(gen.extra.get("identity_report") or {}).get("mode"))
        say(f"  {len(gen)} images in {gen.seconds:.1f}s")
    # validate the optional folders before the (possibly long) metrics
    real_set = folder(real, "real folder", 1) if real is not None else None
    train_set = folder(train, "training folder", 1) if train is not None else None

    outdir = Path(out) if out is not None else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    counts = torch.bincount(gen.labels)
    report: dict[str, Any] = {
        "encoder": {"spec": enc.spec, "embedding_size": enc.embedding_size, "input_size": list(enc.input_size)},
        "input": gen.describe,
        "num_images": len(gen),
        "num_identities": gen.num_identities,
        "images_per_identity": {"min": int(counts.min()), "mean": float(counts.double().mean()),
                                "max": int(counts.max())},
        "definitions": DEFINITIONS,
    }

    # verification
    scores, issame = verification_scores(gen.embeddings, gen.labels, max_pairs=max_pairs, seed=seed)
    eer, eer_t = equal_error_rate(scores, issame)
    g, i_ = scores[issame], scores[~issame]
    d_prime = float((g.mean() - i_.mean()) / math.sqrt(0.5 * (g.var() + i_.var()))) if g.var() + i_.var() > 0 else None
    report["verification"] = {
        "eer": eer, "eer_threshold": eer_t, "num_genuine": int(issame.sum()), "num_impostor": int((~issame).sum()),
        "genuine_mean": float(g.mean()), "impostor_mean": float(i_.mean()), "d_prime": d_prime,
        "genuine_quantiles": _quantiles(torch.from_numpy(g)), "impostor_quantiles": _quantiles(torch.from_numpy(i_)),
    }
    if outdir is not None:
        plot_score_histograms(scores, issame, outdir / "similarity_histograms.png", threshold=eer_t,
                              title=f"Genuine vs impostor cosine (EER {100 * eer:.2f}%)")
        files["similarity_histograms"] = "similarity_histograms.png"

    # DCFace uniqueness / consistency
    centres, _sums, _counts = identity_centres(gen.embeddings, gen.labels)
    uq = uniqueness(centres, tau_u)
    cons = consistency(gen.embeddings, gen.labels, tau_c)
    per_id_cons = cons.pop("per_identity")
    cons_sims = cons.pop("similarities")
    worst = sorted(per_id_cons.items(), key=lambda kv: kv[1])[:5]
    cons["least_consistent_identities"] = [{"identity": gen.names[k], "mean_similarity": v} for k, v in worst]
    report["uniqueness"] = uq
    report["consistency"] = cons
    if outdir is not None:
        files["consistency_histogram"] = _hist_png(
            cons_sims, outdir / "consistency_histogram.png",
            f"Consistency {100 * cons['consistency']:.1f}%: image vs own identity centre (leave-one-out)",
            "cosine similarity to own identity centre", tau_c, "tau_c")

    # identity preservation
    ip: dict[str, Any]
    if gen.conditions is None:
        ip = {"applicable": False, "reason": "not applicable: a dataset folder carries no identity conditions"}
    elif gen.conditions.shape[1] != enc.embedding_size:
        ip = {"applicable": False,
              "reason": (f"not applicable: the source's identity embedding has dimension {gen.conditions.shape[1]}, "
                         f"the encoder's {enc.embedding_size} (not the encoder's space, e.g. the morphable "
                         "shape/texture space)")}
    else:
        res = identity_preservation(gen.embeddings, gen.labels, gen.conditions)
        sims = res.pop("similarities")
        per = res.pop("per_identity")
        cfg = gen.extra.get("config")
        cond_enc = cfg.get("encoder") if isinstance(cfg, Mapping) else None
        same = _same_encoder(cond_enc, enc.spec)
        ip = {"applicable": True, **res, "condition_encoder": cond_enc, "same_encoder": same,
              "worst_identities": [{"identity": gen.names[k], "mean_similarity": v}
                                   for k, v in sorted(per.items(), key=lambda kv: kv[1])[:5]]}
        if outdir is not None:
            files["identity_preservation_histogram"] = _hist_png(
                sims, outdir / "identity_preservation_histogram.png",
                f"Identity preservation: image vs condition (mean {res['mean']:.3f})", "cosine similarity")
    report["identity_preservation"] = ip

    # memorisation
    if train_set is not None:
        mem = memorisation(gen.embeddings, train_set.embeddings, tau_m, training_labels=train_set.labels)
        rec = {k: v for k, v in mem.items() if k not in ("max_similarity", "nearest", "top")}
        rec.update(applicable=True, training_set=train_set.describe, most_similar=[
            {"sample": gen.item_name(i), "identity": gen.names[int(gen.labels[i])],
             "nearest_training_image": train_set.item_name(int(mem["nearest"][i])),
             "similarity": float(mem["max_similarity"][i])} for i in mem["top"]])
        if outdir is not None:
            files["memorisation_histogram"] = _hist_png(
                mem["max_similarity"], outdir / "memorisation_histogram.png",
                f"Nearest training image: {100 * rec['fraction_above']:.1f}% of samples above {tau_m:.2f}",
                "max cosine similarity to the training set", tau_m, "threshold")
            files["memorisation_pairs"] = _memorised_png(gen, train_set, mem, outdir / "memorisation_pairs.png")
        report["memorisation"] = rec
    else:
        report["memorisation"] = {"applicable": False, "reason": "no --train folder given"}

    # Frechet distance
    if real_set is not None:
        fd = frechet_distance(gen.embeddings, real_set.embeddings)
        note = None
        if min(len(gen), len(real_set)) <= enc.embedding_size:
            note = (f"fewer images than dimensions ({min(len(gen), len(real_set))} <= {enc.embedding_size}): the "
                    "covariances are singular and the distance is biased upwards; compare only equal-size runs")
        report["frechet"] = {"applicable": True, "distance": fd, "num_generated": len(gen),
                             "num_real": len(real_set), "real_set": real_set.describe, "note": note}
    else:
        report["frechet"] = {"applicable": False, "reason": "no --real folder given"}

    # separability
    from engine.interface import separability_report

    report["separability"] = separability_report(centres.float(), space=f"encoder centres ({enc.embedding_size}-d)",
                                                 min_distance=math.sqrt(2.0 - 2.0 * tau_u))

    if judge:
        from engine.judge import judge_arrays

        say("judging the evaluated images with dlib (engine.judge) ...")
        batches = (gen.fetch(range(s, min(s + batch_size, len(gen)))) for s in range(0, len(gen), batch_size))
        report["judge"] = judge_arrays(batches, gen.labels.numpy(), seed=seed, models=judge_models)

    if outdir is not None:
        files["contact_sheet"] = _contact_sheet_png(gen, outdir / "contact_sheet.png")
    report["files"] = files
    # embedding seconds of each distinct set (a folder given in several roles is embedded once)
    secs = {"generated_set": round(gen.seconds, 3)}
    if real_set is not None and real_set is not gen:
        secs["real_set"] = round(real_set.seconds, 3)
    if train_set is not None and train_set is not gen and train_set is not real_set:
        secs["training_set"] = round(train_set.seconds, 3)
    report["seconds"] = {**secs, "total": round(time.perf_counter() - t_start, 3)}
    report = _jsonable(report)
    if outdir is not None:
        (outdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (outdir / "report.md").write_text(render_markdown(report))
        say(f"report written to {outdir}/report.md")
    return report


# ------------------------------------------------------------------------------------------------
# markdown
# ------------------------------------------------------------------------------------------------


def _f(x: Any, nd: int = 4) -> str:
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def render_markdown(r: Mapping[str, Any]) -> str:
    """The human-readable ``report.md`` of a report dict."""
    inp = r["input"]
    files = r.get("files", {})
    lines = ["# synthface evaluation report", ""]
    if inp["kind"] == "dataset":
        lines.append(f"Evaluated: dataset `{inp['path']}` ({inp['format']}), {inp['images_used']} of "
                     f"{inp['images_total']} images.")
    else:
        ck = f", checkpoint `{inp['checkpoint']}`" if inp.get("checkpoint") else ""
        pr = f", preset `{inp['preset']}`" if inp.get("preset") else ""
        ov = "".join(f", `{k}={v}`" for k, v in (inp.get("overrides") or {}).items())
        lines.append(f"Evaluated: source `{inp['source']}`{ck}{pr}{ov}, {inp['ids']} identities x {inp['per_id']} "
                     f"variations, seed {inp['seed']}.")
    e = r["encoder"]
    lines += [f"Encoder: `{json.dumps(e['spec'])}` ({e['embedding_size']}-d, input {e['input_size'][0]}x"
              f"{e['input_size'][1]}). All similarities are cosines of its unit embeddings.", "",
              f"{r['num_images']} images, {r['num_identities']} identities "
              f"({r['images_per_identity']['min']}-{r['images_per_identity']['max']} images each).", ""]
    v, u, c = r["verification"], r["uniqueness"], r["consistency"]
    ip, mem, fd, sep = r["identity_preservation"], r["memorisation"], r["frechet"], r["separability"]
    lines += ["## Summary", "", "| metric | value |", "| --- | --- |",
              f"| EER (threshold) | {100 * v['eer']:.2f}% ({_f(v['eer_threshold'], 4)}) |",
              f"| genuine / impostor mean cosine | {_f(v['genuine_mean'], 3)} / {_f(v['impostor_mean'], 3)} |",
              f"| Uniqueness (tau_u {u['threshold']:.2f}) | {u['uniqueness']:.4f} ({u['unique_identities']} of "
              f"{u['num_identities']}) |",
              f"| Consistency (tau_c {c['threshold']:.2f}) | {c['consistency']:.4f} |",
              f"| mean similarity to own centre / label agreement | {_f(c['mean_similarity'], 3)} / "
              f"{_f(c['label_agreement'], 4)} |",
              "| identity preservation (mean cosine to condition) | "
              + (_f(ip['mean'], 3) if ip.get("applicable") else "not applicable") + " |",
              "| memorisation (fraction above threshold) | "
              + (f"{100 * mem['fraction_above']:.2f}% above {mem['threshold']:.2f} (max "
                 f"{_f(mem['quantiles'].get('q100'), 3)})" if mem.get("applicable") else "not applicable") + " |",
              "| memorisation, calibrated (closer than 99% of real other-person neighbours) | "
              + (f"{100 * mem['fraction_above_real_q99']:.2f}%" if "fraction_above_real_q99" in mem else "not applicable")
              + " |",
              "| Frechet distance to real | " + (_f(fd['distance'], 4) if fd.get("applicable") else "not applicable")
              + " |",
              f"| separability: min centre distance (required {sep['min_distance_required']:.3f}) | "
              f"{_f(sep.get('achieved_min_distance'), 3)} |", ""]
    if files.get("contact_sheet"):
        lines += ["## Contact sheet", "", "Rows = identities, columns = variations.", "",
                  f"![contact sheet]({files['contact_sheet']})", ""]
    lines += ["## Verification", "", DEFINITIONS["verification"], "",
              f"{v['num_genuine']} genuine and {v['num_impostor']} impostor pairs; EER {100 * v['eer']:.2f}% at "
              f"cosine {_f(v['eer_threshold'], 4)}; d' {_f(v['d_prime'], 3)}.", ""]
    if files.get("similarity_histograms"):
        lines += [f"![similarity histograms]({files['similarity_histograms']})", ""]
    lines += ["## Uniqueness and Consistency", "", "**Uniqueness.** " + DEFINITIONS["uniqueness"], "",
              f"Uniqueness {u['uniqueness']:.4f}: {u['unique_identities']} unique of {u['num_identities']} "
              f"identities; {u['duplicate_pairs']} identity pairs with centre cosine > {u['threshold']:.2f}. "
              f"The thresholds are encoder-dependent (0.3 suits ArcFace/AdaFace-class encoders); this encoder's "
              f"EER threshold on this set is {_f(v['eer_threshold'], 3)}.", "",
              "**Consistency.** " + DEFINITIONS["consistency"], "",
              f"Consistency {c['consistency']:.4f} over {c['scored_images']} images ({c['unscored_images']} in "
              f"single-image identities not scored); mean leave-one-out similarity {_f(c['mean_similarity'], 3)}; "
              f"label agreement {_f(c['label_agreement'], 4)}.", ""]
    if c.get("least_consistent_identities"):
        lines.append("Least consistent identities: " + ", ".join(
            f"{w['identity']} ({w['mean_similarity']:.3f})" for w in c["least_consistent_identities"]) + ".")
        lines.append("")
    if files.get("consistency_histogram"):
        lines += [f"![consistency]({files['consistency_histogram']})", ""]
    lines += ["## Identity preservation", "", DEFINITIONS["identity_preservation"], ""]
    if ip.get("applicable"):
        lines.append(f"Mean {ip['mean']:.4f} (std {ip['std']:.4f}, median {_f(ip['quantiles'].get('q50'), 4)}); "
                     f"condition encoder: {ip.get('condition_encoder') or 'not named by the source'}; same encoder: "
                     f"{'unknown' if ip.get('same_encoder') is None else ip['same_encoder']}.")
        if files.get("identity_preservation_histogram"):
            lines += ["", f"![identity preservation]({files['identity_preservation_histogram']})"]
    else:
        lines.append(ip["reason"].capitalize() + ".")
    lines += ["", "## Memorisation", "", DEFINITIONS["memorisation"], ""]
    if mem.get("applicable"):
        ts = mem["training_set"]
        q = mem["quantiles"]
        lines += [f"Training set `{ts['path']}` ({ts['images_used']} images). Nearest-training-image cosine: mean "
                  f"{_f(mem['mean'], 3)}, median {_f(q.get('q50'), 3)}, 99th percentile {_f(q.get('q99'), 3)}, max "
                  f"{_f(q.get('q100'), 3)}; {mem['num_above']} samples ({100 * mem['fraction_above']:.2f}%) above "
                  f"{mem['threshold']:.2f}.", "", "| sample | nearest training image | cosine |", "| --- | --- | --- |"]
        if "real_other_q99" in mem:
            lines += [f"Calibrated to this encoder: a real training face's most similar training image of *another* "
                      f"person has cosine median {_f(mem['real_other_q50'], 3)}, 99th percentile "
                      f"{_f(mem['real_other_q99'], 3)} ({mem['real_reference_images']} faces); "
                      f"**{100 * mem['fraction_above_real_q99']:.2f}%** of the samples are closer than that 99th "
                      "percentile to a training image (about 1% is what unrelated new faces give).", ""]
        lines += [f"| {m['sample']} | {m['nearest_training_image']} | {m['similarity']:.4f} |" for m in mem["most_similar"]]
        lines.append("")
        for key in ("memorisation_histogram", "memorisation_pairs"):
            if files.get(key):
                lines += [f"![{key}]({files[key]})", ""]
    else:
        lines += ["Not applicable: " + mem["reason"] + ".", ""]
    lines += ["## Frechet distance", "", DEFINITIONS["frechet"], ""]
    if fd.get("applicable"):
        lines.append(f"Frechet distance {fd['distance']:.6f} between {fd['num_generated']} generated and "
                     f"{fd['num_real']} real embeddings (`{fd['real_set']['path']}`).")
        if fd.get("note"):
            lines.append("Note: " + fd["note"] + ".")
    else:
        lines.append("Not applicable: " + fd["reason"] + ".")
    lines += ["", "## Separability of identity centres", "", DEFINITIONS["separability"], "",
              f"Achieved minimum distance {_f(sep.get('achieved_min_distance'), 4)} (required "
              f"{sep['min_distance_required']:.4f}); pairwise mean {_f(sep.get('pairwise_mean'), 4)}, quantiles "
              + ", ".join(f"{k} {val:.3f}" for k, val in sep.get("pairwise_quantiles", {}).items()) + ".", ""]
    if r.get("judge"):
        from engine.judge import markdown_summary

        lines += markdown_summary(r["judge"]) + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m learned.evaluate",
        description="Evaluate a generator checkpoint/source or a face dataset folder under a frozen FR encoder: "
                    "similarity histograms + EER, DCFace Uniqueness/Consistency, identity preservation, "
                    "memorisation, Frechet distance, separability and a contact sheet.")
    p.add_argument("--encoder", required=True,
                   help="FR encoder: a training/ run dir or backbone.pt, or ARCH:PATH of an arcface_torch .pth")
    g = p.add_argument_group("what to evaluate (one of)")
    g.add_argument("--dataset", help="ImageFolder/RecordIO dataset (python -m engine.render output) or any face "
                                     "folder DIR/<identity>/<image>")
    g.add_argument("--source", help="identity source to render (morphable, diffusion, gan or module:Class)")
    g.add_argument("--checkpoint", help="generator checkpoint (passed to the source as checkpoint=)")
    g.add_argument("--ids", type=int, help="identities to render")
    g.add_argument("--per-id", type=int, help="variations per identity")
    g.add_argument("--seed", type=int, default=0, help="render seed (also seeds pair sampling; default 0)")
    g.add_argument("--preset", help="source preset")
    g.add_argument("--size", type=int, help="source image size")
    g.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="source override (YAML value), repeatable, as in engine.render (e.g. identity.mode=fitted)")
    p.add_argument("--real", help="real face folder for the Frechet distance (e.g. ../shared/data/lfw-dev)")
    p.add_argument("--train", help="the generator's training folder, for the memorisation check")
    p.add_argument("--out", default="eval_report", help="output directory (default: eval_report)")
    p.add_argument("--max-images", type=int, help="use at most this many images of each dataset read")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0, help="DataLoader decode workers for datasets (default 0)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--max-pairs", type=int, default=DEFAULT_MAX_PAIRS,
                   help=f"cap on genuine and on impostor pairs (sampled beyond; default {DEFAULT_MAX_PAIRS})")
    p.add_argument("--uniqueness-threshold", type=float, default=DEFAULT_ID_THRESHOLD)
    p.add_argument("--consistency-threshold", type=float, default=DEFAULT_ID_THRESHOLD)
    p.add_argument("--memorisation-threshold", type=float, default=DEFAULT_MEMORISATION_THRESHOLD)
    p.add_argument("--allow-random-encoder", action="store_true",
                   help="TESTS ONLY: accept an untrained encoder spec (JSON with random_init_seed)")
    p.add_argument("--judge", action="store_true",
                   help='also score the images with dlib\'s real-face recogniser (engine.judge; needs pip install -e ".[judge]")')
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def _parse_encoder(spec: str, allow_random: bool):
    s = spec.strip()
    if s.startswith("{"):  # a JSON spec, e.g. {"arch": "iresnet50", "checkpoint": PATH, "embedding_size": 512}
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise EvaluateError(f"bad encoder spec: not valid JSON ({e})") from None
    return s


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        import yaml

        overrides = {}
        for item in args.override:
            if "=" not in item:
                raise EvaluateError(f"bad --override {item!r}: expected KEY=VALUE")
            k, v = item.split("=", 1)
            overrides[k.strip()] = yaml.safe_load(v)
        report = evaluate(
            _parse_encoder(args.encoder, args.allow_random_encoder), dataset=args.dataset, source=args.source,
            checkpoint=args.checkpoint, ids=args.ids, per_id=args.per_id, seed=args.seed, preset=args.preset,
            size=args.size, overrides=overrides, real=args.real, train=args.train, out=args.out, max_images=args.max_images,
            batch_size=args.batch_size, device=args.device, workers=args.workers, max_pairs=args.max_pairs,
            uniqueness_threshold=args.uniqueness_threshold, consistency_threshold=args.consistency_threshold,
            memorisation_threshold=args.memorisation_threshold, allow_random_encoder=args.allow_random_encoder,
            log=log, judge=args.judge)
    except EvaluateError as e:  # bad input to the evaluator: a missing or unusable dataset, source or encoder, ...
        return report_error(e)
    v = report["verification"]
    print(f"EER {100 * v['eer']:.2f}% | uniqueness {report['uniqueness']['uniqueness']:.4f} | consistency "
          f"{report['consistency']['consistency']:.4f} | report: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    # Run the importable module, not this ``__main__`` copy (same classes as ``import learned.evaluate``).
    from learned.evaluate import main as _main

    sys.exit(_main())
