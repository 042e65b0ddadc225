"""Margin-based classification heads for face-recognition training.

Each head is an ``nn.Module`` holding the class centres ``weight`` of shape
``(num_classes, embedding_size)`` (same layout as insightface arcface_torch's PartialFC weight)
and maps ``(embeddings (B, D), labels (B,))`` to logits ``(B, C)`` ready for
``F.cross_entropy(logits, labels)``:

* :class:`NormFace`: ``s * cos(theta)`` (no margin; also what every head returns for ``labels=None``);
* :class:`ArcFace`: target ``s * cos(theta + m)`` with insightface's ``th``/``mm`` fallback
  (``cos(theta) - sin(pi - m) * m`` once ``theta + m > pi``), optional ``easy_margin``;
* :class:`CosFace`: target ``s * (cos(theta) - m)``;
* :class:`AdaFace`: feature-norm-adaptive margin (Kim et al. 2022, mk-minchul/AdaFace): the
  embedding norm, standardised with an EMA of batch mean/std, scales an angular and an additive
  margin (``g_angle = -m * z``, ``g_add = m + m * z``, ``z = clip(h * (norm - mu) / (sigma + eps), -1, 1)``).

Labels equal to ``-1`` get no margin (arcface_torch convention; use ``ignore_index=-1`` in the loss).
The cosine matrix and margin maths run in float32 even under autocast (bf16 cosines are too coarse
for a margin of ~0.5 rad at ``s=64``). Embeddings need not be normalised; heads normalise them
(AdaFace also reads their norms, so feed it the raw backbone output).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MarginHead",
    "NormFace",
    "ArcFace",
    "CosFace",
    "AdaFace",
    "create_head",
    "list_heads",
    "soft_margin_loss",
    "register_head",
]

_HEADS: dict[str, Callable[..., "MarginHead"]] = {}


def register_head(name: str, *, overwrite: bool = False):
    """Class/factory decorator: ``@register_head("arcface")``; factory signature
    ``(embedding_size, num_classes, **margins) -> MarginHead``."""

    def deco(cls):
        key = name.lower()
        if key in _HEADS and not overwrite:
            raise ValueError(f"head {key!r} is already registered (pass overwrite=True)")
        _HEADS[key] = cls
        return cls

    return deco


def list_heads() -> list[str]:
    """Names of the registered heads."""
    return sorted(_HEADS)


def create_head(name: str, embedding_size: int, num_classes: int, **margins) -> "MarginHead":
    """Build a registered head, e.g. ``create_head("arcface", 512, 10_000, m=0.5, s=64)``."""
    key = name.lower()
    if key not in _HEADS:
        raise KeyError(f"unknown head {name!r}; available: {', '.join(list_heads())}")
    return _HEADS[key](embedding_size, num_classes, **margins)


class MarginHead(nn.Module):
    """Base class: cosine logits between L2-normalised embeddings and class centres.

    Subclasses implement :meth:`target_logit`, which maps the target-class cosines
    ``(N,)`` (float32, in ``[-1, 1]``) of the labelled rows to their margin-adjusted cosines.
    """

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0):
        super().__init__()
        if embedding_size <= 0 or num_classes <= 0:
            raise ValueError(f"embedding_size and num_classes must be > 0, got {embedding_size}, {num_classes}")
        self.embedding_size = int(embedding_size)
        self.s = float(s)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        self.reset_parameters()

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def reset_parameters(self) -> None:
        """Class centres ~ N(0, 0.01) as in arcface_torch's PartialFC."""
        with torch.no_grad():
            self.weight.normal_(0.0, 0.01)

    def reset_classes(self, num_classes: int) -> None:
        """Replace the class centres with ``num_classes`` freshly initialised ones (same device and
        dtype), e.g. to fine-tune on new identities. The ``weight`` Parameter object changes, so
        (re)build the optimizer afterwards."""
        if num_classes <= 0:
            raise ValueError(f"num_classes must be > 0, got {num_classes}")
        w = self.weight
        self.weight = nn.Parameter(torch.empty(num_classes, self.embedding_size, device=w.device, dtype=w.dtype),
                                   requires_grad=w.requires_grad)
        self.reset_parameters()

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, D) -> (B, C)`` float32 cosine similarities, clamped to ``[-1, 1]``."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"expected embeddings of shape (B, {self.embedding_size}), got {tuple(embeddings.shape)}")
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            emb = F.normalize(embeddings.float(), dim=1)
            w = F.normalize(self.weight.float(), dim=1)
            return F.linear(emb, w).clamp(-1.0, 1.0)

    def target_logit(self, cos_t: torch.Tensor, index: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``cos_t (N,)``: target cosines of rows ``index (N,)`` of ``embeddings (B, D)`` -> ``(N,)``."""
        raise NotImplementedError

    def _prepare(self, embeddings: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        """Hook run once per forward with labels (AdaFace: clamp and batch statistics)."""
        return cos

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``embeddings (B, D)``, ``labels (B,)`` int (``-1`` = no margin) -> logits ``(B, C)`` float32.

        Without labels returns ``s * cos`` (no margin)."""
        cos = self.cosine(embeddings)
        if labels is None:
            return cos * self.s
        labels = labels.reshape(-1).long()
        if labels.shape[0] != cos.shape[0]:
            raise ValueError(f"got {cos.shape[0]} embeddings but {labels.shape[0]} labels")
        if labels.numel() and (labels.max() >= cos.shape[1] or labels.min() < -1):
            raise ValueError(f"labels must be in [-1, {cos.shape[1] - 1}], got range "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        cos = self._prepare(embeddings, cos)
        return self._margin_at(cos, labels, embeddings)

    def _margin_at(self, cos: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)``: ``s * cos`` with the margin applied at column ``labels[b]`` of each row."""
        index = torch.nonzero(labels != -1).squeeze(1)
        cols = labels[index]
        cos_t = cos[index, cols]
        new_t = self.target_logit(cos_t, index, embeddings)
        logits = cos.index_put((index, cols), new_t.to(cos.dtype))
        return logits * self.s

    def _check_labels(self, labels: torch.Tensor, cos: torch.Tensor, name: str) -> torch.Tensor:
        labels = labels.reshape(-1).long()
        if labels.shape[0] != cos.shape[0]:
            raise ValueError(f"got {cos.shape[0]} embeddings but {labels.shape[0]} {name}")
        if labels.numel() and (labels.max() >= cos.shape[1] or labels.min() < 0):
            raise ValueError(f"{name} must be in [0, {cos.shape[1] - 1}], got range [{int(labels.min())}, {int(labels.max())}]")
        return labels

    def pair_logits(self, embeddings: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, C)`` twice, from one cosine matrix (and one :meth:`_prepare`, so AdaFace's
        statistics move once): with the margin at ``labels_a`` and with it at ``labels_b`` (B,)."""
        cos = self.cosine(embeddings)
        la = self._check_labels(labels_a, cos, "labels_a")
        lb = self._check_labels(labels_b, cos, "labels_b")
        cos = self._prepare(embeddings, cos)
        return self._margin_at(cos, la, embeddings), self._margin_at(cos, lb, embeddings)

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, s={self.s}"


@register_head("normface")
class NormFace(MarginHead):
    """Plain normalised softmax: logits ``s * cos(theta)``."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0):
        super().__init__(embedding_size, num_classes, s)

    def target_logit(self, cos_t, index, embeddings):
        return cos_t


@register_head("arcface")
class ArcFace(MarginHead):
    """Additive angular margin: target logit ``s * cos(theta + m)``.

    As in insightface, when ``theta + m > pi`` (``cos(theta) <= th = cos(pi - m)``) the target
    logit becomes ``cos(theta) - mm`` with ``mm = sin(pi - m) * m``, keeping it monotonic in
    theta; with ``easy_margin`` the margin is only applied where ``cos(theta) > 0``.
    """

    def __init__(self, embedding_size: int, num_classes: int, m: float = 0.5, s: float = 64.0,
                 easy_margin: bool = False):
        super().__init__(embedding_size, num_classes, s)
        self.m = float(m)
        self.easy_margin = bool(easy_margin)
        self.cos_m = math.cos(self.m)
        self.sin_m = math.sin(self.m)
        self.th = math.cos(math.pi - self.m)
        self.mm = math.sin(math.pi - self.m) * self.m

    def target_logit(self, cos_t, index, embeddings):
        # clamp_min keeps d sqrt / d cos finite at |cos| = 1 (torch.where would turn inf * 0 into NaN)
        sin_t = torch.sqrt((1.0 - cos_t * cos_t).clamp_min(1e-12))
        phi = cos_t * self.cos_m - sin_t * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            return torch.where(cos_t > 0, phi, cos_t)
        return torch.where(cos_t > self.th, phi, cos_t - self.mm)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m={self.m}, easy_margin={self.easy_margin}"


@register_head("cosface")
class CosFace(MarginHead):
    """Additive cosine margin: target logit ``s * (cos(theta) - m)``."""

    def __init__(self, embedding_size: int, num_classes: int, m: float = 0.35, s: float = 64.0):
        super().__init__(embedding_size, num_classes, s)
        self.m = float(m)

    def target_logit(self, cos_t, index, embeddings):
        return cos_t - self.m

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m={self.m}"


@register_head("adaface")
class AdaFace(MarginHead):
    """AdaFace: quality (feature-norm) adaptive margin, following mk-minchul/AdaFace ``head.py``.

    Per sample, ``z = clip(h * (||f|| - mu) / (sigma + eps), -1, 1)`` where ``mu``/``sigma`` are
    EMAs (rate ``t_alpha``) of the batch mean/std of the (detached, clipped to [0.001, 100])
    embedding norms, updated in training mode only. The target logit is
    ``cos(clip(theta - m * z, eps, pi - eps)) - (m + m * z)``: high-norm (high-quality) samples get
    a larger additive, CosFace-like margin (emphasising hard samples), low-norm ones an angular,
    ArcFace-like margin (de-emphasising them); ``z = 0`` gives plain CosFace with margin ``m``.
    All cosines are clamped to ``[-1 + eps, 1 - eps]`` (``eps = 1e-3``) as in the reference code.
    """

    eps = 1e-3

    def __init__(self, embedding_size: int, num_classes: int, m: float = 0.4, h: float = 0.333,
                 s: float = 64.0, t_alpha: float = 0.01):
        super().__init__(embedding_size, num_classes, s)
        self.m = float(m)
        self.h = float(h)
        self.t_alpha = float(t_alpha)
        self.register_buffer("batch_mean", torch.ones(1) * 20)
        self.register_buffer("batch_std", torch.ones(1) * 100)

    @staticmethod
    def _safe_norms(embeddings: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device_type=embeddings.device.type, enabled=False):
            return embeddings.detach().float().norm(dim=1).clip(min=0.001, max=100)

    def _prepare(self, embeddings, cos):
        if self.training and embeddings.shape[0] > 1:
            norms = self._safe_norms(embeddings)
            with torch.no_grad():
                a = self.t_alpha
                self.batch_mean.mul_(1 - a).add_(a * norms.mean())
                self.batch_std.mul_(1 - a).add_(a * norms.std())
        return cos.clamp(-1 + self.eps, 1 - self.eps)

    def margin_scaler(self, norms: torch.Tensor) -> torch.Tensor:
        """``z`` in ``[-1, 1]`` for the given embedding norms under the current statistics."""
        z = (norms - self.batch_mean) / (self.batch_std + self.eps)
        return torch.clip(z * self.h, -1, 1)

    def target_logit(self, cos_t, index, embeddings):
        z = self.margin_scaler(self._safe_norms(embeddings[index]))
        g_angular = -self.m * z
        theta = cos_t.acos()
        theta_m = torch.clip(theta + g_angular, min=self.eps, max=math.pi - self.eps)
        g_add = self.m + self.m * z
        return theta_m.cos() - g_add

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m={self.m}, h={self.h}, t_alpha={self.t_alpha}"


def soft_margin_loss(head: MarginHead, embeddings: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor,
                     lam: torch.Tensor, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Margin loss with mixed targets (SynFace, Qiu et al. 2021), for any :class:`MarginHead`.

    A sample whose label distribution is ``lam * y_a + (1 - lam) * y_b`` costs
    ``lam * CE(logits with the margin at a, a) + (1 - lam) * CE(logits with the margin at b, b)``: each
    target class gets the margin in its own term. ``embeddings (B, D)``, ``labels_a``/``labels_b``
    (B,) int, ``lam`` (B,) in [0, 1] (a's weight; 1 for a hard label, where the loss of that row is the
    hard loss exactly: per row, ``reduction="none"``; the mean may differ from ``F.cross_entropy``'s in
    the last bit, its sum runs in another order). Returns ``(loss: mean over the batch, or (B,) with
    ``reduction="none"``; logits with the margin at a (B, C))``.
    """
    la, lb = head.pair_logits(embeddings, labels_a, labels_b)
    lam = lam.to(la.dtype).reshape(-1)
    ce_a = F.cross_entropy(la, labels_a.reshape(-1).long(), reduction="none")
    ce_b = F.cross_entropy(lb, labels_b.reshape(-1).long(), reduction="none")
    loss = lam * ce_a + (1 - lam) * ce_b
    if reduction == "none":
        return loss, la
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return loss.mean(), la
