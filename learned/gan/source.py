"""``GANSource``: images from an identity-conditioned GAN checkpoint behind the identity-sampler interface.

``engine.create_source("gan", checkpoint=PATH)`` (``python -m engine.render --source gan --checkpoint PATH
--ids N``). Everything but the generator call is :class:`learned.source.LearnedSource`, shared with the
diffusion source: identities are separable unit vectors (or embedded morphable faces) in the FR
encoder's space, sampled exactly as for ``--source diffusion``; image ``(identity r, variation k)``
gets its own generator seeded by ``derive_seed(seed, "learned-noise", r, k)`` (logged per image as
``noise_seed``: the seed of its latent ``z`` and of its noise inputs), so an image never depends on
the batch. One generator forward pass per image.

Sampling settings (checkpoint ``sample`` section < preset < overrides): ``truncation`` (psi toward the
identity's mean ``w``, logged per image), ``truncation_samples``, ``noise_mode`` (``random``, ``const``,
``none``). Presets: ``default``/``wild`` = the checkpoint's settings, ``consistent`` = psi 0.7 (tighter
identity, less variety).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..source import LearnedConfig, LearnedSource
from .model import NOISE_MODES

#: Per-preset sampling settings of the GAN source (an explicit override wins).
GAN_PRESETS: dict[str, dict[str, Any]] = {"default": {}, "wild": {}, "consistent": {"truncation": 0.7}}


@dataclass
class GANConfig(LearnedConfig):
    """:class:`LearnedConfig` + GAN sampling: ``truncation``, ``truncation_samples`` and
    ``noise_mode`` default to the checkpoint's ``sample`` section (``None`` here)."""

    truncation: float | None = None
    truncation_samples: int | None = None
    noise_mode: str | None = None


class GANSource(LearnedSource):
    """Images from a ``kind: gan`` checkpoint (see the module docstring).

    Args:
        checkpoint: the ``checkpoint/`` directory of a ``python -m learned.train`` GAN run (or its
            ``config.json`` / ``ema.pt``).
        preset: ``default``/``wild`` (checkpoint settings) or ``consistent`` (truncation psi 0.7).
        size: output side; the checkpoint's by default (another size needs ``resize: true``).
        aligned: must be True.
        device: ``cpu`` or ``cuda`` (bf16 autocast and channels_last on CUDA).
        overrides: :class:`GANConfig` keys, e.g. ``{"truncation": 0.8, "noise_mode": "const",
            "identity": {"mode": "morphable"}}``.
    """

    name = "gan"
    kind = "gan"
    config_class = GANConfig

    def __init__(self, checkpoint: str | None = None, preset: str = "default", size: int | None = None,
                 aligned: bool = True, device: str = "cpu", overrides: Mapping[str, Any] | None = None):
        super().__init__(checkpoint, preset, size, aligned, device, overrides)
        s = self.sampling()
        if s["noise_mode"] not in NOISE_MODES:
            raise ValueError(f"unknown noise_mode {s['noise_mode']!r} (use one of {', '.join(NOISE_MODES)})")
        try:
            psi, n = float(s["truncation"]), int(s["truncation_samples"])
        except (TypeError, ValueError):
            raise ValueError(f"truncation must be a number and truncation_samples a whole number, got "
                             f"{s['truncation']!r} and {s['truncation_samples']!r}") from None
        if not 0.0 <= psi <= 1.0 or n < 1:
            raise ValueError(f"truncation must be in [0, 1] and truncation_samples >= 1, got {psi} and {n}")

    def sampling(self) -> dict[str, Any]:
        """Truncation, truncation_samples, noise_mode: checkpoint defaults < preset < overrides."""
        s = dict(self.ckpt.config.get("sample", {}))
        out = {"truncation": float(s.get("truncation", 1.0)), "truncation_samples": int(s.get("truncation_samples", 256)),
               "noise_mode": str(s.get("noise_mode", "random"))}
        out.update(GAN_PRESETS.get(self.preset, {}))
        return self._overridden(out)

    def _generate(self, cond: torch.Tensor, gens: list[torch.Generator], params: dict[str, Any]) -> torch.Tensor:
        return self.model.sample(cond, gens, truncation=float(params["truncation"]), noise_mode=str(params["noise_mode"]),
                                 truncation_samples=int(params["truncation_samples"]))

    def _factors(self, params: dict[str, Any], B: int) -> dict[str, torch.Tensor]:
        return {"truncation": torch.full((B,), float(params["truncation"]))}
