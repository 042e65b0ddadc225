"""Plots shared by FR verification and generator evaluation: figures drawn without pyplot, and the
genuine/impostor score histograms."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["new_figure", "save_figure", "plot_score_histograms"]


def new_figure(figsize=(5.5, 4.5)):
    """A matplotlib Figure with its own Agg canvas: no pyplot, no global backend switch, thread-safe."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay ``fig`` out tightly and write it as PNG to ``path`` (parent dirs created); returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_score_histograms(scores: np.ndarray, issame: Sequence[bool] | np.ndarray, path: str | os.PathLike,
                          threshold: float | None = None, bins: int = 50, title: str | None = None) -> Path:
    """Write overlaid genuine/impostor cosine-score histograms (densities) as PNG, with an optional
    vertical threshold line. Returns the path written."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(issame).astype(bool)
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = (float(scores.min()), float(scores.max())) if len(scores) else (-1.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, bins + 1)
    ax.hist(scores[y], bins=edges, density=True, alpha=0.55, label=f"genuine ({int(y.sum())})", color="tab:green")
    ax.hist(scores[~y], bins=edges, density=True, alpha=0.55, label=f"impostor ({int((~y).sum())})", color="tab:red")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left")
    return save_figure(fig, path)
