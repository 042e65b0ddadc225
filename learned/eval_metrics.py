"""Generator-evaluation metrics through a frozen FR encoder: pure functions, embeddings in, numbers out.

Verification pairs and scores (the EER itself is :func:`common.metrics.equal_error_rate`, the one EER of
synthface), identity centres, uniqueness, consistency, identity preservation, nearest neighbours,
memorisation and the Frechet distance; :data:`DEFINITIONS` states each in words (copied into the report).
The definitions in full: :mod:`learned.evaluate`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import EvaluateError
from common.metrics import genuine_pairs, sample_impostor_pairs

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


