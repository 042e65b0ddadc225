"""Verification metrics shared by FR evaluation (:mod:`training.verification`) and generator
evaluation (:mod:`learned.evaluate`): the ROC and the equal error rate, both of "accept when
score >= threshold" (higher score = more similar)."""
from __future__ import annotations

import numpy as np

from .errors import EvaluateError

__all__ = ["roc_curve", "equal_error_rate"]


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
