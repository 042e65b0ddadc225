"""Continuous-time cosine noise schedule and the v-prediction parameterisation.

``z_t = alpha_t * x + sigma_t * eps`` with ``alpha_t^2 + sigma_t^2 = 1`` (variance preserving) and
``t`` in ``[0, 1]``. The cosine schedule in log-SNR form (Nichol & Dhariwal; Kingma et al. VDM):
``logsnr(t) = -2 log tan(pi t / 2) + shift``, clipped to ``[logsnr_min, logsnr_max]`` by mapping
``t`` into the matching interval. ``shift = 2 log(base / size)`` ("simple diffusion", Hoogeboom et
al.) adds noise at higher resolution (e.g. ``-1.12`` for 112 px against a 64 px base).

The network predicts ``v = alpha_t * eps - sigma_t * x`` (Salimans & Ho), from which
``x = alpha_t * z_t - sigma_t * v`` and ``eps = sigma_t * z_t + alpha_t * v``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch


@dataclass
class ScheduleConfig:
    """Noise schedule of a diffusion model (saved in ``config.json``)."""

    kind: str = "cosine"
    prediction: str = "v"
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0
    shift: float = 0.0

    def validate(self, path: str = "schedule") -> None:
        from common.config import ConfigError

        if self.kind != "cosine":
            raise ConfigError(f"{path}.kind: only 'cosine' is implemented, got {self.kind!r}")
        if self.prediction != "v":
            raise ConfigError(f"{path}.prediction: only 'v' is implemented, got {self.prediction!r}")
        if not self.logsnr_min < self.logsnr_max:
            raise ConfigError(f"{path}: need logsnr_min < logsnr_max")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ScheduleConfig":
        from common.config import from_dict

        return from_dict(cls, dict(d), "schedule")


class CosineSchedule:
    """``logsnr(t)``, ``alpha(t)``, ``sigma(t)`` of the shifted cosine schedule (see the module doc)."""

    def __init__(self, cfg: ScheduleConfig | None = None):
        self.cfg = cfg or ScheduleConfig()
        self.cfg.validate()
        c = self.cfg
        # t range that keeps the unshifted logsnr inside [min, max] after the shift
        self.t_min = math.atan(math.exp(-0.5 * (c.logsnr_max - c.shift))) * 2 / math.pi
        self.t_max = math.atan(math.exp(-0.5 * (c.logsnr_min - c.shift))) * 2 / math.pi

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        t = self.t_min + t.double() * (self.t_max - self.t_min)
        return (-2.0 * torch.log(torch.tan(math.pi * t / 2)) + self.cfg.shift)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) in float64, same shape as ``t``."""
        ls = self.logsnr(t)
        return torch.sigmoid(ls).sqrt(), torch.sigmoid(-ls).sqrt()

    def add_noise(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_t, v target) for clean ``x`` (B, ...), times ``t`` (B,) and noise ``eps``."""
        a, s = self.alpha_sigma(t)
        shape = (-1,) + (1,) * (x.dim() - 1)
        a, s = a.to(x.dtype).view(shape), s.to(x.dtype).view(shape)
        return a * x + s * eps, a * eps - s * x


def v_to_x0_eps(z: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
    """(x0, eps) from ``z_t`` and predicted ``v`` (alpha, sigma broadcastable)."""
    return alpha * z - sigma * v, sigma * z + alpha * v
