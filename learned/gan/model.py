"""``GANGenerator``: the generator with its sampling procedure, rebuilt from a checkpoint config.

``build_model(config)`` is the builder registered for the ``"gan"`` checkpoint kind
(:mod:`learned.checkpoint`): it reads ``config["model"]`` (:class:`GeneratorConfig`) and
``config["image_size"]``. A GAN checkpoint holds only the generator (EMA and raw weights); the
discriminator lives in the training state (``last.ckpt``).

**Sampling** is one forward pass per image. Image ``b`` gets its latent ``z`` from its own CPU
generator (``torch.randn(z_dim, generator=g)``) and its per-layer noise inputs from a counter-based
hash of that generator's seed (:func:`hash_normal`), computed on the model's device, so an image
depends only on its own seed and condition, never on the batch, and noise costs no host transfer.
``noise_mode``: ``random`` (per image), ``const`` (one fixed noise for every image) or ``none``.

**Truncation** ``psi`` pulls ``w`` toward the *identity's* mean ``w``:
``w = w_e + psi (w - w_e)`` with ``w_e`` the mean of ``mapping(z_j, e)`` over a fixed bank of
``truncation_samples`` latents (the same bank for every identity); ``psi = 1`` is no truncation,
smaller values trade variety for consistency.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from engine.interface import derive_seed

from .networks import Generator, GeneratorConfig

NOISE_MODES = ("random", "const", "none")
_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for ``x`` in ``[0, 2**32)`` (int64, no overflow: split ``c`` in halves)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) on int64 tensors holding uint32 values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash_normal(seeds: torch.Tensor, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(B, n)`` standard normal values, row ``b`` a pure function of ``seeds[b]`` (a 63-bit int):
    a counter-based hash (two uniforms per value, Box-Muller), vectorised on ``device``."""
    dev = torch.device(device) if device is not None else seeds.device
    s = seeds.to(dev, torch.int64)[:, None]
    k1, k2 = s & _M32, (s >> 32) & _M32
    ctr = torch.arange(2 * n, device=dev, dtype=torch.int64)[None]
    h = _mix32(_mix32(_mix32(ctr) ^ k1) ^ k2)
    u = ((h >> 8).float() + 0.5) * (1.0 / (1 << 24))  # (0, 1), 24 bits
    u1, u2 = u[:, 0::2], u[:, 1::2]
    return (-2.0 * u1.log()).sqrt() * torch.cos((2.0 * math.pi) * u2)


class GANGenerator(Generator):
    """:class:`Generator` + config export + seeded, batch-independent sampling with truncation."""

    def config_dict(self) -> dict[str, Any]:
        return {"kind": "gan", "image_size": self.image_size, "embedding_dim": self.embedding_dim,
                "model": self.cfg.to_dict()}

    def noise_inputs(self, seeds: torch.Tensor, device: torch.device, mode: str = "random") -> list[torch.Tensor] | None:
        """Per-layer noise maps ``(B, 1, H, W)`` for images with ``seeds`` (see :func:`hash_normal`)."""
        if mode not in NOISE_MODES:
            raise ValueError(f"unknown noise_mode {mode!r}; use one of {', '.join(NOISE_MODES)}")
        shapes = self.synthesis.noise_shapes()
        if not shapes:
            return None
        B = seeds.shape[0]
        total = sum(h * w for h, w in shapes)
        if mode == "none":
            flat = torch.zeros(B, total, device=device)
        elif mode == "const":
            flat = hash_normal(torch.tensor([derive_seed("gan-const-noise")]), total, device).expand(B, -1)
        else:
            flat = hash_normal(seeds, total, device)
        out, o = [], 0
        for h, w in shapes:
            out.append(flat[:, o : o + h * w].reshape(B, 1, h, w))
            o += h * w
        return out

    @torch.no_grad()
    def w_center(self, cond: torch.Tensor, samples: int = 256, chunk: int = 8192) -> torch.Tensor:
        """(B, w_dim) mean ``w`` of each identity over a fixed bank of ``samples`` latents."""
        dev = cond.device
        key = (int(samples), str(dev))
        bank = getattr(self, "_z_bank", None)
        if bank is None or bank[0] != key:
            g = torch.Generator().manual_seed(derive_seed("gan-w-center", samples))
            bank = (key, torch.randn(int(samples), self.z_dim, generator=g).to(dev))
            self.__dict__["_z_bank"] = bank
        z = bank[1]
        uniq, inv = torch.unique(cond.float(), dim=0, return_inverse=True)
        means = []
        per = max(1, chunk // z.shape[0])
        for s in range(0, uniq.shape[0], per):
            e = uniq[s : s + per]
            U = e.shape[0]
            w = self.mapping(z.repeat(U, 1), e.repeat_interleave(z.shape[0], 0))
            means.append(w.float().reshape(U, z.shape[0], -1).mean(1))
        return torch.cat(means)[inv]

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, generators: Sequence[torch.Generator], truncation: float = 1.0,
               noise_mode: str = "random", truncation_samples: int = 256,
               latents: torch.Tensor | None = None) -> torch.Tensor:
        """Images in ``[-1, 1]`` (float32) for identity embeddings ``cond`` (B, D), one CPU generator
        per image (its ``z`` and, through its seed, its noise inputs). ``latents`` (B, z_dim), if
        given, replace the generators' ``z`` (the noise inputs still come from their seeds)."""
        if len(generators) != cond.shape[0]:
            raise ValueError(f"need one generator per image: {len(generators)} generators for {cond.shape[0]} conditions")
        if not 0.0 <= float(truncation) <= 1.0 + 1e-9:
            raise ValueError(f"truncation psi must be in [0, 1], got {truncation}")
        dev = cond.device
        if latents is None:
            z = torch.stack([torch.randn(self.z_dim, generator=g) for g in generators]).to(dev)
        else:
            if tuple(latents.shape) != (cond.shape[0], self.z_dim):
                raise ValueError(f"latents must be ({cond.shape[0]}, {self.z_dim}), got {tuple(latents.shape)}")
            z = latents.to(dev, torch.float32)
        seeds = torch.tensor([g.initial_seed() & ((1 << 63) - 1) for g in generators], dtype=torch.int64)
        noise = self.noise_inputs(seeds, dev, noise_mode)
        center = self.w_center(cond, truncation_samples) if float(truncation) < 1.0 else None
        cuda = dev.type == "cuda"
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda):
            x = self(z, cond, noise, truncation=float(truncation), w_center=center, channels_last=cuda)
        return x.float().clamp(-1, 1)


def build_model(config: Mapping[str, Any]) -> GANGenerator:
    """Rebuild a :class:`GANGenerator` from a checkpoint config (see the module docstring)."""
    return GANGenerator(GeneratorConfig.from_dict(config["model"]), int(config["image_size"]))
