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

``variation.mode=disentangled`` (ExFaceGAN): each identity's variations are drawn on the identity side of a
boundary in latent space learned with the frozen FR encoder (:mod:`learned.gan.disentangle`); ``plain``
(default) is the source as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from dataclasses import asdict, field

from common.config import ConfigError
from engine.interface import Identities, generator

from ..source import LearnedConfig, LearnedSource
from .disentangle import VariationConfig, fit_boundaries, label_candidates, shift_to_side, signed_distance
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
    variation: VariationConfig = field(default_factory=VariationConfig)


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

    def config(self) -> dict[str, Any]:
        c = super().config()
        if self.cfg.variation.mode == "plain":  # the plain source's config as before this option existed
            c.pop("variation", None)
        return c

    def _generate(self, cond: torch.Tensor, gens: list[torch.Generator], params: dict[str, Any]) -> torch.Tensor:
        return self.model.sample(cond, gens, truncation=float(params["truncation"]), noise_mode=str(params["noise_mode"]),
                                 truncation_samples=int(params["truncation_samples"]), latents=params.get("latents"))

    # -- ExFaceGAN-style disentangled variations (learned.gan.disentangle) ---------------------------
    def sample_identities(self, n: int, seed: int) -> Identities:
        ids = super().sample_identities(n, seed)
        if self.cfg.variation.mode == "disentangled":
            self._add_boundaries(ids, seed)
        return ids

    @torch.no_grad()
    def _latent_images(self, cond: torch.Tensor, seeds: list[tuple]) -> torch.Tensor:
        """Encoder embeddings (B, D) of ``G(z, cond)``, image ``b``'s ``z`` and noise from
        ``generator(*seeds[b])``, rendered with the source's sampling settings in chunks of ``max_batch``."""
        s, mb, enc = self.sampling(), max(1, int(self.cfg.max_batch)), self.encoder()
        out = []
        for a in range(0, len(seeds), mb):
            gens = [generator(*k) for k in seeds[a : a + mb]]
            x = self.model.sample(cond[a : a + mb].to(self.device), gens, truncation=float(s["truncation"]),
                                  noise_mode=str(s["noise_mode"]), truncation_samples=int(s["truncation_samples"]))
            out.append(enc.embed(x))
        return torch.cat(out)

    def _add_boundaries(self, ids: Identities, seed: int) -> None:
        """Fit each identity's boundary (module docstring of :mod:`learned.gan.disentangle`) and add
        ``exface_w`` / ``exface_b`` params, ``id_exface_*`` meta and a report entry to ``ids``."""
        vc, zd = self.cfg.variation, self.model.z_dim
        E = ids.params["embedding"]
        N, M = len(ids), int(vc.candidates)
        ref = self._latent_images(E, [(seed, "exface-reference", r) for r in range(N)])  # (N, D)
        cand_seeds = [(seed, "exface-candidate", r, j) for r in range(N) for j in range(M)]
        cand = self._latent_images(E.repeat_interleave(M, 0), cand_seeds).view(N, M, -1)
        cos = torch.einsum("nmd,nd->nm", cand, ref)
        pos, thr = label_candidates(cos, vc.threshold, vc.quantile)
        z_ref = torch.stack([torch.randn(zd, generator=generator(seed, "exface-reference", r)) for r in range(N)])
        z = torch.stack([torch.randn(zd, generator=generator(*k)) for k in cand_seeds]).view(N, M, zd)
        # the reference latent is a positive sample too
        zz = torch.cat([z_ref[:, None], z], 1)
        yy = torch.cat([torch.ones(N, 1, dtype=torch.bool), pos], 1)
        w, b = fit_boundaries(zz, yy, steps=vc.steps, lr=vc.lr, l2=vc.l2)
        dist = signed_distance(z.double(), w[:, None], b[:, None])  # (N, M)
        fit_acc = ((dist >= 0) == pos).double().mean(1)
        posf = pos.double()
        gap = (dist * posf).sum(1) / posf.sum(1).clamp_min(1) - (dist * (1 - posf)).sum(1) / (1 - posf).sum(1).clamp_min(1)
        acc_m = (dist >= vc.margin).double()
        cos_d = cos.double()
        cos_acc = (cos_d * acc_m).sum(1) / acc_m.sum(1)  # nan where no candidate is accepted
        ids.params["exface_w"] = w.float()
        ids.params["exface_b"] = b.float()
        meta = {"exface_threshold": thr.double(), "exface_fit_accuracy": fit_acc, "exface_gap": gap,
                "exface_accepted": acc_m.mean(1), "exface_cos_all": cos_d.mean(1), "exface_cos_accepted": cos_acc}
        ids.meta.update({k: v.float() for k, v in meta.items()})
        ids.report["variation"] = {
            **asdict(vc), "identities": N,
            **{k.replace("exface_", "mean_"): float(torch.nanmean(v)) for k, v in meta.items()}}

    def _chunk_inputs(self, identities: Identities, rows: torch.Tensor, variations: torch.Tensor,
                      seed: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        if self.cfg.variation.mode != "disentangled":
            return {}, {}
        if "exface_w" not in identities.params:
            raise ConfigError("variation.mode=disentangled: these identities carry no boundaries (sampled by a "
                              "source in plain mode); sample them with this source")
        z = torch.stack([torch.randn(self.model.z_dim, generator=generator(seed, "learned-noise", int(a), int(k)))
                         for a, k in zip(rows, variations)])
        w, b = identities.params["exface_w"][rows].cpu(), identities.params["exface_b"][rows].cpu()
        z2, shift = shift_to_side(z, w, b, self.cfg.variation.margin)
        dist = signed_distance(z2.double(), w.double(), b.double()).float()
        return {"latents": z2}, {"exface_shift": shift.float(), "exface_distance": dist}

    def _factors(self, params: dict[str, Any], B: int) -> dict[str, torch.Tensor]:
        return {"truncation": torch.full((B,), float(params["truncation"]))}
