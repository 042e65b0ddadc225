"""GAN objectives: non-saturating logistic loss, R1 gradient penalty, identity loss.

- Discriminator: ``softplus(D(fake)) + softplus(-D(real))``.
- Generator: ``softplus(-D(fake))`` (non-saturating).
- R1 (Mescheder et al. 2018): ``gamma / 2 * E ||grad_x D(x_real)||^2``, *lazy*: computed every
  ``r1_every`` steps and multiplied by ``r1_every`` so its average weight is unchanged (StyleGAN2).
- Identity (IDnet-style): ``1 - cos(encoder(G(z, e)), e)`` through the frozen FR encoder, so the
  generated face is recognised as the identity it was conditioned on.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss (mean over the batch)."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss (mean over the batch)."""
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(d: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E ||grad_x d(x)||^2, logits)`` at the real images ``real``, differentiable in ``d``'s
    parameters (``create_graph``). ``d`` maps images to (B,) logits (augmentation may sit inside it:
    the gradient is taken with respect to the un-augmented images)."""
    x = real.detach().requires_grad_(True)
    logits = d(x)
    (grad,) = torch.autograd.grad(logits.float().sum(), x, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean(), logits


def identity_loss(encoder: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                  cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean(1 - cos(encoder(images), cond)), cos per image)``; ``encoder`` returns unit embeddings."""
    e = encoder(images).float()
    cos = (F.normalize(e, dim=-1) * F.normalize(cond.float(), dim=-1)).sum(-1)
    return (1.0 - cos).mean(), cos.detach()
