"""``DiffusionModel``: the UNet with its noise schedule and image size, rebuilt from a config dict.

``build_model(config)`` is the builder registered for the ``"diffusion"`` checkpoint kind
(:mod:`learned.checkpoint`): it reads ``config["model"]`` (:class:`UNetConfig`),
``config["schedule"]`` (:class:`ScheduleConfig`), ``config["image_size"]`` and ``config["style"]``
(:class:`StyleConfig`; absent in checkpoints from before the style condition: no style).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .sampling import sample
from .schedule import CosineSchedule, ScheduleConfig
from .style import StyleConfig, low_pass
from .unet import UNet, UNetConfig


class DiffusionModel(nn.Module):
    """UNet + schedule (+ the optional style condition). ``forward`` is the UNet's (``v``
    prediction); :meth:`sample` generates; :meth:`style_of` makes the style of images."""

    def __init__(self, unet_cfg: UNetConfig, schedule_cfg: ScheduleConfig, image_size: int,
                 style_cfg: StyleConfig | None = None):
        super().__init__()
        self.style_cfg = style_cfg or StyleConfig()
        self.style_cfg.validate()
        self.unet = UNet(unet_cfg, image_size, style_channels=self.style_cfg.channels)
        self.schedule = CosineSchedule(schedule_cfg)
        self.image_size = int(image_size)

    @property
    def embedding_dim(self) -> int:
        return self.unet.cfg.embedding_dim

    @property
    def takes_style(self) -> bool:
        return bool(self.style_cfg.enabled)

    def forward(self, z, t, cond, drop=None, style=None, style_drop=None) -> torch.Tensor:
        if style is None and style_drop is None:
            return self.unet(z, t, cond, drop=drop)
        return self.unet(z, t, cond, drop=drop, style=style, style_drop=style_drop)

    def style_of(self, images: torch.Tensor) -> torch.Tensor:
        """The style condition (B, C, S, S) of ``images`` (B, 3, H, W) in ``[-1, 1]``, any ``H``."""
        if not self.takes_style:
            raise ValueError("this diffusion model was trained without a style condition (style.enabled: false)")
        return low_pass(images, self.style_cfg.size, self.style_cfg.gray, self.image_size)

    def config_dict(self) -> dict[str, Any]:
        return {"kind": "diffusion", "image_size": self.image_size, "embedding_dim": self.embedding_dim,
                "model": self.unet.cfg.to_dict(), "schedule": self.schedule.cfg.to_dict(),
                "style": self.style_cfg.to_dict()}

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, generators: Sequence[torch.Generator], steps: int = 25,
               solver: str = "dpmpp2m", guidance: float | torch.Tensor = 1.0, eta: float = 0.0, clip: bool = True,
               style: torch.Tensor | None = None) -> torch.Tensor:
        """Images in ``[-1, 1]`` for identity embeddings ``cond`` (B, D), one generator per image;
        ``style``: (B, C, S, S) styles (:meth:`style_of`) or None (no style)."""
        if style is not None and not self.takes_style:
            raise ValueError("this diffusion model was trained without a style condition (style.enabled: false)")
        autocast = cond.device.type == "cuda"
        return sample(self, self.schedule, cond, generators, self.image_size, steps, solver, guidance, eta, clip,
                      autocast, style=style)


def build_model(config: Mapping[str, Any]) -> DiffusionModel:
    """Rebuild a :class:`DiffusionModel` from a checkpoint config (see the module docstring)."""
    return DiffusionModel(UNetConfig.from_dict(config["model"]), ScheduleConfig.from_dict(config.get("schedule", {})),
                          int(config["image_size"]), StyleConfig.from_dict(config.get("style")))
