"""``DiffusionModel``: the UNet with its noise schedule and image size, rebuilt from a config dict.

``build_model(config)`` is the builder registered for the ``"diffusion"`` checkpoint kind
(:mod:`learned.checkpoint`): it reads ``config["model"]`` (:class:`UNetConfig`),
``config["schedule"]`` (:class:`ScheduleConfig`) and ``config["image_size"]``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .sampling import sample
from .schedule import CosineSchedule, ScheduleConfig
from .unet import UNet, UNetConfig


class DiffusionModel(nn.Module):
    """UNet + schedule. ``forward`` is the UNet's (``v`` prediction); :meth:`sample` generates."""

    def __init__(self, unet_cfg: UNetConfig, schedule_cfg: ScheduleConfig, image_size: int):
        super().__init__()
        self.unet = UNet(unet_cfg, image_size)
        self.schedule = CosineSchedule(schedule_cfg)
        self.image_size = int(image_size)

    @property
    def embedding_dim(self) -> int:
        return self.unet.cfg.embedding_dim

    def forward(self, z, t, cond, drop=None) -> torch.Tensor:
        return self.unet(z, t, cond, drop=drop)

    def config_dict(self) -> dict[str, Any]:
        return {"kind": "diffusion", "image_size": self.image_size, "embedding_dim": self.embedding_dim,
                "model": self.unet.cfg.to_dict(), "schedule": self.schedule.cfg.to_dict()}

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, generators: Sequence[torch.Generator], steps: int = 25,
               solver: str = "dpmpp2m", guidance: float | torch.Tensor = 1.0, eta: float = 0.0, clip: bool = True,
               ) -> torch.Tensor:
        """Images in ``[-1, 1]`` for identity embeddings ``cond`` (B, D), one generator per image."""
        autocast = cond.device.type == "cuda"
        return sample(self, self.schedule, cond, generators, self.image_size, steps, solver, guidance, eta, clip,
                      autocast)


def build_model(config: Mapping[str, Any]) -> DiffusionModel:
    """Rebuild a :class:`DiffusionModel` from a checkpoint config (see the module docstring)."""
    return DiffusionModel(UNetConfig.from_dict(config["model"]), ScheduleConfig.from_dict(config.get("schedule", {})),
                          int(config["image_size"]))
