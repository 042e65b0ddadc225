"""Pixel-space UNet conditioned on an identity embedding (AdaGN + cross-attention on identity tokens).

The network predicts ``v`` (see :mod:`learned.diffusion.schedule`) from a noisy image ``z_t``, the
diffusion time ``t`` in ``[0, 1]`` and an identity condition ``c`` (``(B, D)``, an FR-encoder
embedding) or the learned *null* condition (classifier-free guidance, Contextual Partial Dropout):

- **AdaGN**: every residual block normalises with GroupNorm and modulates with a per-channel scale
  and shift computed from ``time embedding + identity embedding``.
- **Cross-attention**: at the resolutions in ``attention_resolutions`` a block does self-attention
  over the pixels, then cross-attention from the pixels to ``identity_tokens`` tokens projected from
  ``c`` (``F.scaled_dot_product_attention``).
- **Null condition**: a learned ``(D,)`` vector that replaces ``c`` where ``drop`` is true; it goes
  through the same projections, so "unconditional" is just another input.
- **Style** (optional, ``style_channels > 0``): a low-pass image (:mod:`learned.diffusion.style`)
  concatenated to ``z_t`` at the stem, plus a presence channel (1 where a style is given). "No style"
  (``style=None`` or ``style_drop`` true) is all zeros, presence included. Without style channels the
  network is exactly the identity-only one (same parameters, same outputs).

Sizes: the network is built for one ``image_size``; the input is padded (replicate) up to a
multiple of ``2 ** (levels - 1)`` and the output cropped back, so 64 px (4 levels: 64/32/16/8) and
112 px (5 levels: 112/56/28/14/7, or 4 levels: 112/56/28/14) need no padding; other sizes are padded.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    """Architecture of :class:`UNet` (saved in ``config.json`` beside the weights).

    Attributes:
        base_channels: channels of the first level.
        channel_mult: channel multiplier per level (``len`` = number of levels; ``levels - 1`` downsamplings).
        num_res_blocks: residual blocks per level (the decoder has one more per level, as in ADM).
        attention_resolutions: feature-map sides (in pixels of the padded input) with attention blocks.
        head_channels: channels per attention head.
        identity_tokens: number of tokens the identity embedding is projected to (cross-attention).
        embedding_dim: ``D`` of the identity condition (the encoder's embedding size).
        dropout: dropout inside residual blocks.
        groups: GroupNorm groups (channels must be divisible by it).
    """

    base_channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [16, 8])
    head_channels: int = 64
    identity_tokens: int = 4
    embedding_dim: int = 512
    dropout: float = 0.0
    groups: int = 32

    def validate(self, path: str = "model") -> None:
        from common.config import ConfigError

        if self.base_channels < 1 or self.num_res_blocks < 1 or self.embedding_dim < 1 or self.identity_tokens < 1:
            raise ConfigError(f"{path}: base_channels, num_res_blocks, embedding_dim and identity_tokens must be >= 1")
        if not self.channel_mult or any(int(m) < 1 for m in self.channel_mult):
            raise ConfigError(f"{path}.channel_mult: need a non-empty list of positive integers, got {self.channel_mult}")
        for m in self.channel_mult:
            if (self.base_channels * m) % self.groups:
                raise ConfigError(f"{path}: channels {self.base_channels * m} not divisible by groups={self.groups}")
        if self.head_channels < 1:
            raise ConfigError(f"{path}.head_channels must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{path}.dropout must be in [0, 1)")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UNetConfig":
        from common.config import from_dict

        return from_dict(cls, dict(d), "model")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of times ``t`` (B,) in [0, 1] (scaled by 1000 like DDPM steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, AdaGN (scale/shift from the embedding) -> SiLU -> dropout -> conv, + skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb)).to(h.dtype)[:, :, None, None].chunk(2, 1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over pixels, then cross-attention from pixels to the identity tokens."""

    def __init__(self, ch: int, ctx_dim: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(1, ch // head_channels)
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        self.norm_x = nn.GroupNorm(groups, ch)
        self.q_x = nn.Conv2d(ch, ch, 1)
        self.kv_x = nn.Linear(ctx_dim, 2 * ch)
        self.proj_x = nn.Conv2d(ch, ch, 1)
        for p in (self.proj, self.proj_x):
            nn.init.zeros_(p.weight)
            nn.init.zeros_(p.bias)

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, heads, L, C/heads)
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, -1)
        a = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v))
        x = x + self.proj(a.transpose(1, 2).reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w))
        q = self.q_x(self.norm_x(x)).flatten(2).transpose(1, 2)
        k, v = self.kv_x(ctx).to(q.dtype).chunk(2, -1)
        a = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v))
        return x + self.proj_x(a.transpose(1, 2).reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """Res blocks (+ attention) of one resolution in the encoder or decoder."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class UNet(nn.Module):
    """ADM-style UNet, see the module docstring. ``forward(z, t, cond, drop=None, style=None,
    style_drop=None) -> v``; ``style`` (B, style_channels, S, S) only when ``style_channels > 0``.

    ``image_size`` fixes where attention runs (levels whose feature side, for the padded input, is
    in ``cfg.attention_resolutions``); the network accepts that size only.
    """

    def __init__(self, cfg: UNetConfig, image_size: int, style_channels: int = 0):
        super().__init__()
        cfg.validate()
        self.cfg, self.image_size = cfg, int(image_size)
        if int(style_channels) < 0:
            raise ValueError(f"style_channels must be >= 0, got {style_channels}")
        self.style_channels = int(style_channels)
        C, G = cfg.base_channels, cfg.groups
        self.levels = len(cfg.channel_mult)
        self.padded = self.padded_size(self.image_size)
        attn_levels = {lvl for lvl in range(self.levels) if self.padded // (2 ** lvl) in {int(r) for r in cfg.attention_resolutions}}
        emb_dim = ctx_dim = 4 * C
        self.ctx_dim = ctx_dim
        self.time_mlp = nn.Sequential(nn.Linear(C, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        D = cfg.embedding_dim
        self.null_embedding = nn.Parameter(torch.randn(D) / math.sqrt(D))
        self.id_mlp = nn.Sequential(nn.Linear(D, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.id_tokens = nn.Linear(D, cfg.identity_tokens * ctx_dim)
        self.token_pos = nn.Parameter(torch.randn(cfg.identity_tokens, ctx_dim) * 0.02)
        self.ctx_norm = nn.LayerNorm(ctx_dim)
        self.stem = nn.Conv2d(3 + (self.style_channels + 1 if self.style_channels else 0), C, 3, padding=1)

        def attn(lvl: int, ch: int) -> nn.Module:
            return AttentionBlock(ch, ctx_dim, cfg.head_channels, G) if lvl in attn_levels else nn.Identity()

        # encoder: per level num_res_blocks x (res, attn|identity), then a downsample (not after the last)
        self.down = nn.ModuleList()
        chans = [C]
        ch = C
        for lvl, m in enumerate(cfg.channel_mult):
            blocks: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks):
                blocks += [ResBlock(ch, C * m, emb_dim, G, cfg.dropout), attn(lvl, C * m)]
                ch = C * m
                chans.append(ch)
            self.down.append(_Level(blocks))
            if lvl < self.levels - 1:
                self.down.append(Downsample(ch))
                chans.append(ch)
        self.mid1 = ResBlock(ch, ch, emb_dim, G, cfg.dropout)
        self.mid_attn = AttentionBlock(ch, ctx_dim, cfg.head_channels, G)
        self.mid2 = ResBlock(ch, ch, emb_dim, G, cfg.dropout)
        # decoder: per level num_res_blocks + 1 x (res on [h, skip], attn|identity), then an upsample
        self.up = nn.ModuleList()
        for lvl, m in reversed(list(enumerate(cfg.channel_mult))):
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks += [ResBlock(ch + chans.pop(), C * m, emb_dim, G, cfg.dropout), attn(lvl, C * m)]
                ch = C * m
            self.up.append(_Level(blocks))
            if lvl > 0:
                self.up.append(Upsample(ch))
        self.out_norm = nn.GroupNorm(G, ch)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def padded_size(self, size: int) -> int:
        k = 2 ** (self.levels - 1)
        return -(-int(size) // k) * k

    # ---------------------------------------------------------------------------------------------
    def condition(self, cond: torch.Tensor, drop: torch.Tensor | None = None):
        """(embedding (B, E), context tokens (B, T, E)) of the identity condition; rows with
        ``drop`` use the learned null embedding instead."""
        c = cond.float()
        if drop is not None:
            c = torch.where(drop[:, None], self.null_embedding[None].to(c.dtype), c)
        e = self.id_mlp(c)
        tok = self.id_tokens(c).view(c.shape[0], self.cfg.identity_tokens, self.ctx_dim) + self.token_pos
        return e, self.ctx_norm(tok)

    def style_input(self, z: torch.Tensor, style: torch.Tensor | None, style_drop: torch.Tensor | None) -> torch.Tensor:
        """``z`` with the style channels and the presence channel appended (zeros: no style)."""
        B, H, W = z.shape[0], z.shape[-2], z.shape[-1]
        if style is None:
            return torch.cat([z, z.new_zeros(B, self.style_channels + 1, H, W)], 1)
        if tuple(style.shape) != (B, self.style_channels, H, W):
            raise ValueError(f"style must be (B, {self.style_channels}, {H}, {W}) for this UNet, got {tuple(style.shape)}")
        keep = torch.ones(B, dtype=torch.bool, device=z.device) if style_drop is None else ~style_drop.to(z.device)
        keep = keep[:, None, None, None]
        s = torch.where(keep, style.to(z.dtype), torch.zeros((), dtype=z.dtype, device=z.device))
        return torch.cat([z, s, keep.to(z.dtype).expand(B, 1, H, W)], 1)

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, drop: torch.Tensor | None = None,
                style: torch.Tensor | None = None, style_drop: torch.Tensor | None = None) -> torch.Tensor:
        H, W = z.shape[-2:]
        if (H, W) != (self.image_size, self.image_size):
            raise ValueError(f"this UNet was built for {self.image_size} px images, got {H}x{W}")
        if self.style_channels:
            z = self.style_input(z, style, style_drop)
        elif style is not None:
            raise ValueError("this UNet takes no style (it was built with style_channels=0)")
        P = self.padded
        x = z if P == H else F.pad(z, (0, P - W, 0, P - H), mode="replicate")
        emb_id, ctx = self.condition(cond, drop)
        emb = self.time_mlp(timestep_embedding(t, self.cfg.base_channels)) + emb_id
        h = self.stem(x)
        hs = [h]
        for mod in self.down:
            if isinstance(mod, _Level):
                for j in range(0, len(mod.blocks), 2):
                    h = mod.blocks[j](h, emb)
                    if not isinstance(mod.blocks[j + 1], nn.Identity):
                        h = mod.blocks[j + 1](h, ctx)
                    hs.append(h)
            else:
                h = mod(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb), ctx), emb)
        for mod in self.up:
            if isinstance(mod, _Level):
                for j in range(0, len(mod.blocks), 2):
                    h = mod.blocks[j](torch.cat([h, hs.pop()], 1), emb)
                    if not isinstance(mod.blocks[j + 1], nn.Identity):
                        h = mod.blocks[j + 1](h, ctx)
            else:
                h = mod(h)
        out = self.out(F.silu(self.out_norm(h)))
        return out[..., :H, :W]
