"""The ArcFace 5-point alignment template (the one definition of it)."""
from __future__ import annotations

import torch

__all__ = ["ARCFACE_TEMPLATE", "template"]

#: The standard insightface ArcFace 112x112 5-point template (x, y) in pixels: left eye, right eye,
#: nose tip, left and right mouth corners.
ARCFACE_TEMPLATE = torch.tensor(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def template(size: int) -> torch.Tensor:
    """(5, 2) ArcFace template scaled to a ``size`` x ``size`` crop."""
    return ARCFACE_TEMPLATE * (size / 112.0)
