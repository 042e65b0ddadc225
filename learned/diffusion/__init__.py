"""Identity-conditioned pixel-space diffusion (issue 6): UNet, cosine v-prediction schedule,
DDIM / DPM-Solver++(2M) samplers with classifier-free guidance, and the ``kind: diffusion`` trainer.

Public API: :class:`UNetConfig`, :class:`UNet`, :class:`ScheduleConfig`, :class:`CosineSchedule`,
:class:`DiffusionModel`, :func:`build_model`, :func:`sample`, :class:`StyleConfig` and :func:`low_pass`
(the optional layout/style condition, :mod:`learned.diffusion.style`). The trainer (Lightning) lives in
:mod:`learned.diffusion.trainer`, the engine source (``DiffusionSource``) in
:mod:`learned.diffusion.source`.
"""
from .model import DiffusionModel, build_model
from .sampling import SOLVERS, sample
from .schedule import CosineSchedule, ScheduleConfig
from .style import StyleConfig, low_pass
from .unet import UNet, UNetConfig

__all__ = ["UNetConfig", "UNet", "ScheduleConfig", "CosineSchedule", "DiffusionModel", "build_model", "sample", "SOLVERS",
           "StyleConfig", "low_pass"]
