"""``DiffusionSource``: images sampled from an identity-conditioned diffusion checkpoint behind the
identity-sampler interface.

``engine.create_source("diffusion", checkpoint=PATH, size=64, device="cuda", overrides={...})``
(``python -m engine.render --source diffusion --checkpoint PATH --size 64 ...``). Everything but the
sampler call (checkpoint loading, identities in the FR encoder's space, landmarks) is
:class:`learned.source.LearnedSource`, shared with the GAN source (:mod:`learned.gan.source`).

**Variations**: variation ``k`` of identity row ``r`` is one noise: its initial noise (and DDIM's
per-step noise) come from ``generator(seed, "learned-noise", r, k)``, so an image depends only on
(seed, identity, variation). Guidance scale, solver and steps come from the checkpoint's ``sample``
section, the preset and ``overrides``; they are logged per image in ``RenderBatch.factors``
(``guidance``, ``steps``, ``noise_seed``).

**Style** (checkpoints trained with ``style.enabled: true``): ``overrides={"style": {"provider": ...}}``
gives each image a layout/style image, of which the model sees the low-pass version: ``none``
(default, no style), ``morphable`` (image ``k`` of the identity's morphable counterpart, or of a fixed
morphable identity, rendered with a morphable preset: graphics set pose, light and layout) or
``folder`` (images of a folder); see :mod:`learned.style_providers`. The provider's per-image factors
(``style_yaw``, ``style_pitch``, ``style_roll``, ... or ``style_image``) join ``RenderBatch.factors``.
A provider other than ``none`` with a checkpoint trained without a style is an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..source import PRESETS, LearnedConfig, LearnedSource
from ..style_providers import StyleSourceConfig, make_provider
from .sampling import SOLVERS


@dataclass
class DiffusionConfig(LearnedConfig):
    """:class:`LearnedConfig` + sampling: ``guidance``/``solver``/``steps``/``eta``/``clip`` default to
    the checkpoint's ``sample`` section (``None`` here)."""

    guidance: float | None = None
    solver: str | None = None
    steps: int | None = None
    eta: float | None = None
    clip: bool | None = None
    style: StyleSourceConfig = field(default_factory=StyleSourceConfig)


class DiffusionSource(LearnedSource):
    """Images sampled from an identity-conditioned diffusion checkpoint (``kind: diffusion``).

    Args:
        checkpoint: the ``checkpoint/`` directory of a ``python -m learned.train`` run (or its
            ``config.json`` / ``ema.pt``).
        preset: ``default``/``wild`` (checkpoint sampling settings) or ``consistent`` (1.5x guidance).
        size: output side; the checkpoint's by default (another size needs ``resize: true``).
        aligned: must be True.
        device: ``cpu`` or ``cuda`` (bf16 autocast on CUDA).
        overrides: :class:`DiffusionConfig` keys, e.g. ``{"guidance": 3.0, "solver": "ddim", "steps": 20,
            "identity": {"mode": "morphable", "min_distance": 1.0}, "style": {"provider": "morphable"}}``.
    """

    name = "diffusion"
    kind = "diffusion"
    config_class = DiffusionConfig

    def sampling(self) -> dict[str, Any]:
        """Guidance, solver, steps, eta, clip: checkpoint defaults < preset < overrides."""
        s = dict(self.ckpt.config.get("sample", {}))
        out = {k: s.get(k) for k in ("guidance", "solver", "steps", "eta", "clip")}
        if "guidance_mult" in PRESETS[self.preset] and out["guidance"] is not None:
            out["guidance"] = float(out["guidance"]) * PRESETS[self.preset]["guidance_mult"]
        return self._overridden(out)

    def __init__(self, checkpoint: str | None = None, preset: str = "default", size: int | None = None,
                 aligned: bool = True, device: str = "cpu", overrides: Mapping[str, Any] | None = None):
        super().__init__(checkpoint, preset, size, aligned, device, overrides)
        s = self.sampling()
        if s["solver"] not in SOLVERS:
            raise ValueError(f"unknown solver {s['solver']!r} (use one of {', '.join(SOLVERS)})")
        if int(s["steps"]) < 1 or float(s["guidance"]) < 0:
            raise ValueError(f"steps must be >= 1 and guidance >= 0, got steps={s['steps']} guidance={s['guidance']}")
        st = self.model.style_cfg
        # the provider's images are only seen low-passed to st.size px: a small render suffices
        render = self.native_size if self.cfg.style.provider != "morphable" else \
            max(16, min(self.native_size, max(32, 4 * int(st.size))))
        self.style_provider = make_provider(self.cfg.style, self.model.takes_style, self.ckpt.path, render, self.device)

    def _chunk_inputs(self, identities, rows, variations, seed):
        if self.style_provider is None:
            return {}, {}
        images, factors = self.style_provider(identities, rows, variations, int(seed))
        style = self.model.style_of(images.to(self.device).float() * 2 - 1)
        return {"style": style}, factors

    def _generate(self, cond: torch.Tensor, gens: list[torch.Generator], params: dict[str, Any]) -> torch.Tensor:
        return self.model.sample(cond, gens, steps=int(params["steps"]), solver=str(params["solver"]),
                                 guidance=float(params["guidance"]), eta=float(params["eta"] or 0.0),
                                 clip=bool(params["clip"] if params["clip"] is not None else True),
                                 style=params.get("style"))

    def _factors(self, params: dict[str, Any], B: int) -> dict[str, torch.Tensor]:
        return {"guidance": torch.full((B,), float(params["guidance"])),
                "steps": torch.full((B,), int(params["steps"]), dtype=torch.int64)}
