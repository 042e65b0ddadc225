"""Batched, deterministic samplers: DDIM and DPM-Solver++(2M), with classifier-free guidance.

Determinism: the initial noise of image ``b`` (and, for DDIM with ``eta > 0``, every per-step noise)
is drawn from ``generators[b]``, one ``torch.Generator`` per image (the caller seeds it with
``derive_seed(seed, identity, variation)``), on the CPU, then moved to the model's device. So an
image depends on its own seed and condition only, never on what else is in the batch (up to the
floating-point effects of batched kernels).

Time grid: ``N`` model evaluations at ``t_i = 1 - i / N`` (``i = 0 .. N-1``); the last update goes to
``t = 0`` (no noise), where both solvers return the data prediction.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .schedule import CosineSchedule

SOLVERS = ("dpmpp2m", "ddim")


def initial_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """(B, *shape) standard normal, row ``b`` from ``generators[b]`` (CPU, float32)."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def ddim_noise_std(a_t: float, s_t: float, a_s: float, s_s: float, eta: float) -> float:
    """DDIM's per-step noise std from time ``t`` to the less noisy ``s`` (Song et al. 2021, eq. 16):
    ``eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)`` with ``abar = alpha^2``,
    ``1 - abar = sigma^2``; ``eta = 1`` is the std of the forward posterior ``q(z_s | z_t, x)``."""
    return eta * math.sqrt(max(0.0, (s_s ** 2 / s_t ** 2) * (1.0 - a_t ** 2 / a_s ** 2)))


def guided_x0(model: Callable, schedule: CosineSchedule, z: torch.Tensor, t: float, cond: torch.Tensor,
              guidance: torch.Tensor, clip: bool = True, autocast: bool = False,
              style: torch.Tensor | None = None) -> torch.Tensor:
    """Data prediction at time ``t`` with classifier-free guidance on ``v``:
    ``v = v_null + w (v_cond - v_null)`` per image (``guidance`` (B,)); ``w == 1`` everywhere skips
    the unconditional pass. Guidance is on the identity only: a ``style`` (B, ...) goes to both passes."""
    B = z.shape[0]
    tt = torch.full((B,), float(t), device=z.device)
    need_uncond = bool((guidance != 1.0).any())
    dev_type = z.device.type
    kw = {} if style is None else {"style": style}
    with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=autocast):
        if need_uncond:
            drop = torch.cat([torch.zeros(B, dtype=torch.bool, device=z.device), torch.ones(B, dtype=torch.bool, device=z.device)])
            if style is not None:
                kw = {"style": torch.cat([style, style])}
            v2 = model(torch.cat([z, z]), torch.cat([tt, tt]), torch.cat([cond, cond]), drop=drop, **kw).float()
            vc, vu = v2[:B], v2[B:]
            v = vu + guidance.view(-1, 1, 1, 1).to(vc.dtype) * (vc - vu)
        else:
            v = model(z, tt, cond, **kw).float()
    a, s = schedule.alpha_sigma(torch.tensor([float(t)]))
    x0 = float(a) * z - float(s) * v
    return x0.clamp(-1, 1) if clip else x0


@torch.no_grad()
def sample(model: Callable, schedule: CosineSchedule, cond: torch.Tensor, generators: Sequence[torch.Generator],
           image_size: int, steps: int = 25, solver: str = "dpmpp2m", guidance: float | torch.Tensor = 1.0,
           eta: float = 0.0, clip: bool = True, autocast: bool = False, style: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ``B = len(cond)`` images in ``[-1, 1]`` (float32, on ``cond``'s device).

    Args:
        model: ``model(z, t, cond, drop=None) -> v`` (a :class:`~learned.diffusion.unet.UNet`).
        cond: (B, D) identity embeddings.
        generators: one CPU generator per image (initial noise, DDIM noise).
        steps: number of model evaluations (x2 batch with guidance != 1).
        solver: ``"dpmpp2m"`` (DPM-Solver++(2M), data prediction, multistep) or ``"ddim"``.
        guidance: classifier-free guidance scale ``w`` (scalar or (B,)); 1 = conditional only, 0 = unconditional.
        eta: DDIM stochasticity (0 = deterministic DDIM); per-step noise from ``generators``.
        clip: clamp the data prediction to ``[-1, 1]`` at every step.
        autocast: run the network under bf16 autocast (CUDA).
        style: (B, C, S, S) style conditions (``model(..., style=...)``), or None: the model is called
            without a ``style`` argument (identity-only models).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if len(generators) != cond.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} generators for {cond.shape[0]} conditions")
    if style is not None and style.shape[0] != cond.shape[0]:
        raise ValueError(f"need one style per image: {style.shape[0]} styles for {cond.shape[0]} conditions")
    dev = cond.device
    style = None if style is None else style.to(dev)
    B, N = cond.shape[0], int(steps)
    w = torch.as_tensor(guidance, dtype=torch.float32, device=dev).reshape(-1).expand(B).contiguous()
    z = initial_noise(generators, (3, image_size, image_size)).to(dev)
    ts = [1.0 - i / N for i in range(N + 1)]
    t_all = torch.tensor(ts, dtype=torch.float64)
    alpha, sigma = schedule.alpha_sigma(t_all)
    alpha[-1], sigma[-1] = 1.0, 0.0  # t = 0: clean data
    lam = torch.log(alpha / sigma)  # +inf at the end
    x0_prev = None
    for i in range(N):
        x0 = guided_x0(model, schedule, z, ts[i], cond, w, clip, autocast, style)
        if i == N - 1:
            return x0
        a_i, s_i, a_n, s_n = (float(v) for v in (alpha[i], sigma[i], alpha[i + 1], sigma[i + 1]))
        if solver == "ddim":
            eps = (z - a_i * x0) / s_i
            if eta > 0:
                c = ddim_noise_std(a_i, s_i, a_n, s_n, eta)
                noise = torch.stack([torch.randn(z.shape[1:], generator=g) for g in generators]).to(dev)
                z = a_n * x0 + math.sqrt(max(0.0, s_n ** 2 - c ** 2)) * eps + c * noise
            else:
                z = a_n * x0 + s_n * eps
        else:
            h = float(lam[i + 1] - lam[i])
            if x0_prev is None:
                d = x0
            else:
                r = float(lam[i] - lam[i - 1]) / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            z = (s_n / s_i) * z - a_n * math.expm1(-h) * d
        x0_prev = x0
    raise AssertionError("unreachable")
