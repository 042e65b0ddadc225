"""Verification metrics shared by FR evaluation (:mod:`training.verification`) and generator
evaluation (:mod:`learned.evaluate`): the ROC and the equal error rate, both of "accept when
score >= threshold" (higher score = more similar)."""
from __future__ import annotations

import numpy as np

from .errors import EvaluateError

__all__ = ["roc_curve", "equal_error_rate", "genuine_pairs", "sample_impostor_pairs"]


def _roc_counts(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tp, fp, thresholds)`` at each distinct score, in decreasing order of score: the integer
    true / false accept counts when accepting scores >= that threshold."""
    order = np.argsort(-scores, kind="mergesort")
    s, yy = scores[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    return np.cumsum(yy)[last], np.cumsum(~yy)[last], s[last]


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> dict[str, np.ndarray]:
    """ROC of 'accept if score >= threshold': arrays ``fpr``, ``tpr``, ``thresholds`` (decreasing;
    the first threshold is ``+inf`` with fpr = tpr = 0), one point per distinct score."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(issame, dtype=bool)
    tp, fp, thr = _roc_counts(scores, y)
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return {
        "fpr": np.r_[0.0, fp / n_neg],
        "tpr": np.r_[0.0, tp / n_pos],
        "thresholds": np.r_[np.inf, thr],
    }


def equal_error_rate(scores, issame) -> tuple[float, float]:
    """``(eer, threshold)`` of "accept when score >= threshold" (higher score = more similar).

    The EER is where the false accept rate equals the false reject rate along the ROC (linearly
    interpolated between its two nearest points; the threshold is the one at the first ROC point with
    FAR >= FRR, compared exactly on integer counts). Perfectly separated scores give
    ``(0.0, lowest genuine score)``. Raises :class:`~common.errors.EvaluateError` (a ValueError) for
    mismatched lengths, NaN/inf scores, or only one kind of pair.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(issame, dtype=bool).reshape(-1)
    if len(s) != len(y):
        raise EvaluateError(f"{len(s)} scores but {len(y)} labels")
    if not np.all(np.isfinite(s)):
        raise EvaluateError("scores contain NaN/inf (did the encoder produce NaN embeddings?)")
    if y.all() or (~y).all():
        raise EvaluateError("EER needs both genuine and impostor scores")
    # ROC points (one per distinct score, descending), with integer counts so that FAR = FRR is exact
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tp, fp, thr = _roc_counts(s, y)
    tp, fp, thr = np.r_[0, tp], np.r_[0, fp], np.r_[np.inf, thr]
    fn = n_pos - tp
    d = fp * n_pos - fn * n_neg  # sign of FAR - FRR; increases along the curve
    i = int(np.argmax(d >= 0))
    far, frr = fp / n_neg, fn / n_pos
    if i == 0 or d[i] == 0:
        return float(far[i]), float(thr[i])
    a0, a1 = far[i - 1] - frr[i - 1], far[i] - frr[i]
    w = -a0 / (a1 - a0)
    return float(far[i - 1] + w * (far[i] - far[i - 1])), float(thr[i])


def genuine_pairs(labels: np.ndarray, max_pairs: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Index pairs ``(a, b)`` of samples with the same label (``a < b`` in label order) and their
    total count. All of them when there are at most ``max_pairs``, else ``max_pairs`` pairs drawn
    uniformly (with replacement) from ``rng``: an identity with probability proportional to its
    pair count, then two distinct members of it. ``labels`` (N,) int."""
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    order = np.argsort(lab, kind="stable")
    _, starts, counts = np.unique(lab[order], return_index=True, return_counts=True)
    gcount = counts.astype(np.int64) * (counts - 1) // 2
    total = int(gcount.sum())
    if total <= max_pairs:
        ga, gb = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for s, c in zip(starts, counts):
            if c >= 2:
                iu = np.triu_indices(int(c), 1)
                ga.append(order[s + iu[0]])
                gb.append(order[s + iu[1]])
        return np.concatenate(ga), np.concatenate(gb), total
    cls = rng.choice(len(counts), size=max_pairs, p=gcount / total)
    c = counts[cls]
    a = rng.integers(0, c)
    b = rng.integers(0, c - 1)
    b = b + (b >= a)  # a distinct member of the same identity
    return order[starts[cls] + a], order[starts[cls] + b], total


def sample_impostor_pairs(labels: np.ndarray, count: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` index pairs of samples with different labels, drawn uniformly (with replacement)
    from ``rng`` by rejection (cheap when most pairs differ, as in any face set of many people)."""
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(lab)
    ia = np.empty(0, dtype=np.int64)
    ib = np.empty(0, dtype=np.int64)
    while len(ia) < count:
        a = rng.integers(0, n, size=2 * count)
        b = rng.integers(0, n, size=2 * count)
        ok = lab[a] != lab[b]
        ia, ib = np.concatenate([ia, a[ok]]), np.concatenate([ib, b[ok]])
    return ia[:count], ib[:count]
