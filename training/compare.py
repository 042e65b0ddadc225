"""Is arm A better than arm B, or is the gap within the seed spread?

Both arms are trained with the same seeds and scored on the same pairs, so the comparison is paired:
``d_s = metric_A(seed s) - metric_B(seed s)``. The rule (:func:`paired_comparison`):

* ``mean`` and ``std`` (``ddof=1``) of the ``d_s``; ``t = mean / (std / sqrt(n))``, two-sided ``p`` from
  Student's t with ``n - 1`` degrees of freedom (a paired t-test);
* the verdict is **decided** (``A > B`` or ``A < B``) when ``p < alpha`` (default 0.05), i.e. the 95%
  confidence interval of the mean paired difference excludes 0; otherwise **within seed spread**;
* ``wins``: on how many seeds A beat B (the sign test's count, reported beside the t-test: with 3 seeds a
  sign test alone can never reach p < 0.05, its smallest p being 0.25).

With ``std = 0`` (identical differences on every seed) any non-zero mean is decided; ``n = 1`` decides
nothing. For "higher is better" metrics (accuracy, TAR, AUC) ``A > B`` means A is better; for EER pass
``higher_is_better=False`` and the verdict names the better arm the same way.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["PairedComparison", "paired_comparison"]


@dataclass
class PairedComparison:
    """The paired comparison of ``a`` and ``b`` on one metric (see the module docstring)."""

    a: str
    b: str
    metric: str
    n: int
    diffs: list[float]
    mean: float
    std: float
    t: float | None
    p: float | None
    ci95: tuple[float, float] | None
    wins: int
    decided: bool
    verdict: str

    def as_dict(self) -> dict:
        return asdict(self)


def paired_comparison(a: Sequence[float], b: Sequence[float], name_a: str = "A", name_b: str = "B",
                      metric: str = "metric", alpha: float = 0.05, higher_is_better: bool = True) -> PairedComparison:
    """Paired t-test of ``a[s] - b[s]`` over seeds ``s`` (same length, no NaN); see the module docstring."""
    from scipy import stats

    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired comparison needs one value per seed for both arms, got {len(x)} and {len(y)}")
    if len(x) == 0 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"paired comparison of {metric}: values missing or not finite")
    d = x - y
    n = len(d)
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else 0.0
    better = d > 0 if higher_is_better else d < 0
    wins = int(better.sum())
    t = p = ci = None
    if n > 1:
        se = std / math.sqrt(n)
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * se
        ci = (mean - half, mean + half)
        if se > 0:
            t = mean / se
            p = float(2 * stats.t.sf(abs(t), n - 1))
        else:
            t = math.inf if mean != 0 else 0.0
            p = 0.0 if mean != 0 else 1.0
    decided = p is not None and p < alpha
    if decided:
        a_better = (mean > 0) == higher_is_better
        verdict = f"{name_a if a_better else name_b} better (p={p:.3g}, {wins}/{n} seeds favour {name_a})"
    else:
        why = "one seed" if n == 1 else f"p={p:.3g}"
        verdict = f"within seed spread ({why}, {wins}/{n} seeds favour {name_a})"
    return PairedComparison(name_a, name_b, metric, n, d.tolist(), mean, std, t, p, ci, wins, decided, verdict)
