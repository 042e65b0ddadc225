"""Contrastive self-supervision for unlabelled synthetic faces (USynthFace, Boutros et al. 2022).

A curriculum phase with ``loss: contrastive`` ignores identity labels: every image gives two strongly
augmented views; the backbone + a projection head (the *query* encoder) embeds view 1, a momentum
encoder (an exponential moving average of the backbone and the projection head, MoCo v2) embeds view
2, and the InfoNCE loss asks the query to pick its own key out of the key and a queue of keys from
earlier batches (the negatives)::

    l_pos = <q, k>            (B,)        q, k: (B, P) unit vectors
    l_neg = q @ queue^T        (B, K)      queue: (K, P) unit vectors
    loss  = CE([l_pos, l_neg] / T, target 0)

After each step the batch's keys enter the queue, oldest out first (:func:`enqueue`). The momentum
encoder follows ``theta_k <- m theta_k + (1 - m) theta_q`` (:func:`momentum_update`; batch-norm
statistics are averaged the same way) and computes the keys in train mode (batch-norm with the key
batch's own statistics, as MoCo's key encoder does). In eval mode its running statistics, inherited from
a backbone that moves under it, made the keys of a fresh phase nearly one point (per-dimension spread
summed over the 128 outputs 0.18 against 6-9 in train mode) and the instance task never got going: on
3,000 ``wild`` renders, tiny backbone, lr 0.03, the InfoNCE loss after 375 steps was 6.63 with the
positive's top-1 at 3% (eval mode) against 6.05 and falling (train mode). The query and its key see
different batches (two views), so batch statistics give no shortcut between them that shuffle-BN would
have to break on one device. The projection head, momentum encoder and queue are *phase state*
(:class:`MoCoState`): kept in the phase's ``last.ckpt`` (resume continues with the same queue) and
dropped at the phase's end, so the next phase (e.g. supervised fine-tuning with a margin head on
authentic faces) gets the backbone only.

Views: each view is ``FaceAugment(augment)`` of the same image, drawn independently (default preset
``contrastive``: crop, flip, affine, strong colour jitter, grayscale, blur, low resolution, noise; see
:data:`training.augment.PRESETS`). The source's own ``augment`` is not used in a contrastive phase.
No second render of the same identity is used (that would use the labels): the only
"generator-side" variation is whatever the source already put into each image.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.config import ConfigError
from common.config import key_error as _err

__all__ = ["ContrastiveConfig", "MoCoState", "LOSSES", "info_nce_logits", "info_nce_loss", "enqueue",
           "momentum_update"]

#: values of a phase's ``loss``: ``margin`` (the margin head + cross-entropy on labels, the default) or
#: ``contrastive`` (this module; labels unused)
LOSSES = ("margin", "contrastive")


@dataclass
class ContrastiveConfig:
    """Options of a ``loss: contrastive`` phase (``phases[i].contrastive``).

    ``queue_size``: negatives kept (K); ``momentum``: EMA factor m of the key encoder; ``temperature``:
    T of the InfoNCE softmax; ``proj_dim``: output size of the projection head; ``proj_hidden``: its
    hidden width (0: a single linear layer); ``augment``: the view augmentation, a preset name of
    :data:`training.augment.PRESETS` or an augmentation mapping (``{preset: contrastive, blur: 0}``).
    """

    queue_size: int = 4096
    momentum: float = 0.999
    temperature: float = 0.2
    proj_dim: int = 128
    proj_hidden: int = 512
    augment: Any = "contrastive"

    def validate(self, path: str) -> None:
        if isinstance(self.queue_size, bool) or self.queue_size < 1:
            raise _err(path, "queue_size", f"must be >= 1, got {self.queue_size}")
        if not 0.0 <= self.momentum < 1.0:
            raise _err(path, "momentum", f"must be in [0, 1), got {self.momentum}")
        if not self.temperature > 0:
            raise _err(path, "temperature", f"must be > 0, got {self.temperature}")
        if self.proj_dim < 1:
            raise _err(path, "proj_dim", f"must be >= 1, got {self.proj_dim}")
        if self.proj_hidden < 0:
            raise _err(path, "proj_hidden", f"must be >= 0 (0: linear projection), got {self.proj_hidden}")
        from .augment import validate_augment_config

        try:
            validate_augment_config(self.augment_dict())
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{path}.augment.{e}" if path else f"augment.{e}") from None

    def augment_dict(self) -> dict[str, Any]:
        """The view augmentation as a :func:`training.augment.build_augment` mapping."""
        if isinstance(self.augment, str):
            return {"preset": self.augment}
        if self.augment is None:
            return {}
        if not isinstance(self.augment, dict):
            raise TypeError(f"expected a preset name or a mapping, got {type(self.augment).__name__}")
        return dict(self.augment)


# ----------------------------------------------------------------------------------------------
# pure functions
# ----------------------------------------------------------------------------------------------


def info_nce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(B, 1 + K)`` logits ``[<q_i, k_i>, <q_i, queue_j>...] / T``; the positive is column 0.

    ``q``, ``k``: ``(B, P)``; ``queue``: ``(K, P)`` (all expected L2-normalised; not re-normalised here)."""
    if q.shape != k.shape or q.ndim != 2 or queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"expected q, k (B, P) and queue (K, P), got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(queue.shape)}")
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.t()
    return torch.cat([pos, neg], dim=1) / float(temperature)


def info_nce_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE loss ``-log softmax(logits)[:, 0]`` of :func:`info_nce_logits` (a scalar)."""
    logits = info_nce_logits(q, k, queue, temperature)
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


@torch.no_grad()
def enqueue(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """Write ``keys`` ``(B, P)`` into the ring buffer ``queue`` ``(K, P)`` in place, key ``b`` at row
    ``(ptr + b) mod K`` (the oldest entries are overwritten first), and advance ``ptr`` (a 0-d long
    tensor) to ``(ptr + B) mod K``. With ``B > K`` only the last ``K`` keys stay."""
    K, B = queue.shape[0], keys.shape[0]
    if B > K:
        keys = keys[B - K:]  # the dropped keys would have been overwritten anyway
        start = (int(ptr) + B - K) % K
    else:
        start = int(ptr)
    n = keys.shape[0]
    idx = (start + torch.arange(n, device=queue.device)) % K
    queue[idx] = keys.to(queue.dtype)
    ptr.fill_((int(ptr) + B) % K)


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module, m: float) -> None:
    """``theta_t <- m theta_t + (1 - m) theta_s`` for every parameter (same structure) and every
    floating buffer (batch-norm statistics: averaged like the weights they belong to, so that the key
    encoder's running statistics match its weights should it run in eval mode; :meth:`MoCoState.keys`
    uses batch statistics); integer buffers (``num_batches_tracked``) are copied."""
    for pt, ps in zip(target.parameters(), source.parameters()):
        pt.mul_(m).add_(ps.detach(), alpha=1.0 - m)
    for bt, bs in zip(target.buffers(), source.buffers()):
        if bt.is_floating_point():
            bt.mul_(m).add_(bs.detach(), alpha=1.0 - m)
        else:
            bt.copy_(bs)


# ----------------------------------------------------------------------------------------------
# phase state
# ----------------------------------------------------------------------------------------------


def projection_head(embedding_size: int, hidden: int, out: int) -> nn.Module:
    """MoCo v2's MLP head ``Linear -> ReLU -> Linear`` (or one ``Linear`` when ``hidden`` is 0)."""
    if hidden <= 0:
        return nn.Sequential(nn.Linear(embedding_size, out))
    return nn.Sequential(nn.Linear(embedding_size, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


class MoCoState(nn.Module):
    """The state of one contrastive phase: query projection head (trained), momentum key encoder
    (backbone copy + projection copy, EMA, no gradients), the negatives' queue and its pointer.

    Args:
        backbone: the query backbone (copied into the key encoder now).
        embedding_size: the backbone's output size.
        cfg: the phase's :class:`ContrastiveConfig`.
        seed: seeds the projection head's init and the queue's initial random unit vectors.
    """

    def __init__(self, backbone: nn.Module, embedding_size: int, cfg: ContrastiveConfig, seed: int = 0):
        super().__init__()
        from .augment import build_augment

        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.proj_q = projection_head(embedding_size, cfg.proj_hidden, cfg.proj_dim)
            queue = F.normalize(torch.randn(cfg.queue_size, cfg.proj_dim), dim=1)
        dev = next(backbone.parameters()).device
        self.proj_q.to(dev)
        self.key_backbone = copy.deepcopy(backbone)
        self.proj_k = copy.deepcopy(self.proj_q)
        for p in list(self.key_backbone.parameters()) + list(self.proj_k.parameters()):
            p.requires_grad_(False)
        self.register_buffer("queue", queue.to(dev))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long, device=dev))
        self.augment = build_augment(cfg.augment_dict())

    def freeze_keys(self) -> None:
        """Key encoder: no gradients, eval mode (call after anything that sets requires_grad / train)."""
        for p in list(self.key_backbone.parameters()) + list(self.proj_k.parameters()):
            p.requires_grad_(False)
        self.key_backbone.eval()
        self.proj_k.eval()

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented views of float ``(B, 3, H, W)`` images in ``[0, 1]``."""
        return self.augment(x.clone()), self.augment(x.clone())

    def query(self, emb: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` unit query vectors of backbone embeddings ``(B, D)``."""
        return F.normalize(self.proj_q(emb.float()), dim=1)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, query_backbone: nn.Module) -> torch.Tensor:
        """Momentum step (from ``query_backbone`` and the query head), then ``(B, P)`` unit keys of
        normalised images ``x``."""
        momentum_update(self.key_backbone, query_backbone, self.cfg.momentum)
        momentum_update(self.proj_k, self.proj_q, self.cfg.momentum)
        self.freeze_keys()
        self.key_backbone.train()  # batch statistics of the key batch (see the module docstring)
        self.proj_k.train()
        try:
            return F.normalize(self.proj_k(self.key_backbone(x).float()), dim=1)
        finally:
            self.freeze_keys()

    def loss(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE loss against the current queue and the top-1 accuracy of the positive."""
        logits = info_nce_logits(q, k, self.queue.clone(), self.cfg.temperature)
        loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        with torch.no_grad():
            acc = (logits.argmax(1) == 0).float().mean()
        return loss, acc

    def push(self, k: torch.Tensor) -> None:
        enqueue(self.queue, self.queue_ptr, k)
