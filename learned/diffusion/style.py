"""The optional layout/style condition of the diffusion model: a low-pass version of an image.

A *style* is what is left of an image after it is area-downsampled to ``size`` x ``size`` pixels
(optionally converted to luma), then bilinearly upsampled back to the model's size: the pose, the
layout of face, hair and background, the light and colour, but not the identity's details. The UNet
takes it as extra input channels concatenated to ``z_t`` plus one *presence* channel (1 where a style
is given); "no style" is all zeros, presence included (see :class:`~learned.diffusion.unet.UNet`).

Training (``style.enabled: true``): the style of each training image is its own low-pass version
(of its mirrored copy with probability ``style.flip``), replaced by "no style" with probability
``style.drop`` independently of the identity dropout, so the model works with and without a style
and the identity still has to come from the embedding. Sampling: a style provider of the source
(:mod:`learned.style_providers`) gives one style image per generated image.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

#: ITU-R BT.601 luma weights (the ``gray`` style).
LUMA = (0.299, 0.587, 0.114)


@dataclass
class StyleConfig:
    """The style condition of a diffusion model (``style:`` of a training config, saved in the
    checkpoint's ``config.json``; a checkpoint without it takes no style).

    Attributes:
        enabled: the model takes a style (extra input channels).
        size: side in pixels of the low-pass image (e.g. 8: a 64 px face becomes 8x8 blocks).
        gray: keep the luma only (1 channel): layout and light, not colour.
        drop: training probability of "no style" per image (independent of the identity dropout).
        flip: training probability that an image's style comes from its mirrored copy.
    """

    enabled: bool = False
    size: int = 8
    gray: bool = False
    drop: float = 0.5
    flip: float = 0.0

    @property
    def channels(self) -> int:
        """Style image channels (the UNet adds one presence channel); 0 when disabled."""
        return 0 if not self.enabled else (1 if self.gray else 3)

    def validate(self, path: str = "style") -> None:
        from common.config import ConfigError

        if int(self.size) < 1:
            raise ConfigError(f"{path}.size must be >= 1 pixel, got {self.size}")
        if not 0.0 <= float(self.drop) < 1.0:
            raise ConfigError(f"{path}.drop must be in [0, 1) (1 would never train with a style), got {self.drop}")
        if not 0.0 <= float(self.flip) <= 1.0:
            raise ConfigError(f"{path}.flip must be in [0, 1], got {self.flip}")

    def check_image_size(self, image_size: int, path: str = "style") -> None:
        """A style must be a low-pass image: ``size`` at most half the model's ``image_size``."""
        from common.config import ConfigError

        if self.enabled and 2 * int(self.size) > int(image_size):
            raise ConfigError(f"{path}.size ({self.size}) must be at most half of data.image_size ({image_size}): "
                              "the style is a low-pass layout, not the image itself")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "StyleConfig":
        from common.config import from_dict

        return from_dict(cls, dict(d or {}), "style")


def low_pass(images: torch.Tensor, size: int, gray: bool = False, out_size: int | None = None) -> torch.Tensor:
    """The style of ``images`` (B, 3, H, W) (any range, e.g. [-1, 1]): area-downsampled to ``size``
    px, luma only if ``gray`` (B, 1, ...), bilinearly upsampled to ``out_size`` (default ``H``)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"style images must be (B, 3, H, W), got {tuple(images.shape)}")
    out = int(out_size or images.shape[-1])
    x = F.interpolate(images.float(), size=(int(size), int(size)), mode="area")
    if gray:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    return F.interpolate(x, size=(out, out), mode="bilinear", align_corners=False)
