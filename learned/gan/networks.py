"""StyleGAN2-style conditional generator and residual projection discriminator.

**Generator** (:class:`Generator`), conditioned on an identity embedding ``e`` (a unit vector of the
frozen FR encoder, ``(B, D)``):

- *Mapping network*: ``z`` (normalised to unit second moment) concatenated with a learned projection
  of ``e`` (also normalised) through ``mapping_layers`` equalised-lr fully connected layers (lr
  multiplier ``mapping_lr_mult``) gives ``w``; one ``w`` drives every layer.
- *Synthesis network*: a learned constant at ``start_size`` (``image_size / 2 ** (levels - 1)``: 4 for
  64 px, 7 for 112 px = 7 * 16), then per level a 2x bilinear upsample and two 3x3 *modulated*
  convolutions (style = affine(w) scales the input channels, weights *demodulated* to unit output
  variance), each followed by a per-pixel noise input with a learned strength, a bias and a leaky
  ReLU. *Skip* RGB outputs: every level adds a modulated 1x1 ``toRGB`` to the upsampled image.
  Modulation is applied to the activations around one shared convolution (StyleGAN2's non-fused
  form), so a batch is a plain conv (channels_last and bf16 friendly) and an image never depends on
  its batch.

**Discriminator** (:class:`Discriminator`): ``fromRGB`` then residual blocks (two 3x3 convs, 2x
average-pool downsample, 1x1 skip, sum scaled by ``1/sqrt 2``) down to ``start_size``, a
minibatch-standard-deviation feature, a 3x3 conv and a fully connected layer to a feature ``h``;
the output is ``fc(h) + <proj(e), h> / sqrt(dim h)`` (projection-conditional head).

All weights use equalised learning rate (stored ``N(0, 1)``, scaled at run time by ``1/sqrt(fan_in)``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def _levels_start(image_size: int, levels: int, what: str) -> int:
    start = image_size // 2 ** (levels - 1)
    if levels < 1 or start < 2 or start * 2 ** (levels - 1) != image_size:
        raise ValueError(f"{what}: {levels} levels do not fit image_size {image_size} (image_size / 2**(levels-1) "
                         f"must be an integer >= 2, e.g. 5 levels for 64 px (4x4 start) or 112 px (7x7 start))")
    return start


@dataclass
class GeneratorConfig:
    """Architecture of :class:`Generator` (saved in a checkpoint's ``config.json``).

    Attributes:
        z_dim: latent size.
        w_dim: intermediate latent (style) size.
        embedding_dim: ``D`` of the identity condition (set from the encoder by the trainer).
        embed_features: width of the identity projection fed to the mapping network (0 = ``w_dim``).
        mapping_layers: fully connected layers of the mapping network.
        mapping_lr_mult: learning-rate multiplier of the mapping network (StyleGAN: 0.01).
        channels: feature channels per level, from the constant (``start_size``) to ``image_size``;
            ``len(channels) - 1`` upsamplings.
        noise: per-pixel noise inputs (off: the synthesis is deterministic given ``w``).
    """

    z_dim: int = 512
    w_dim: int = 512
    embedding_dim: int = 512
    embed_features: int = 0
    mapping_layers: int = 4
    mapping_lr_mult: float = 0.01
    channels: list[int] = field(default_factory=lambda: [512, 512, 512, 256, 128])
    noise: bool = True

    def validate(self, path: str = "model") -> None:
        from common.config import ConfigError

        if min(self.z_dim, self.w_dim, self.embedding_dim, self.mapping_layers) < 1 or self.embed_features < 0:
            raise ConfigError(f"{path}: z_dim, w_dim, embedding_dim and mapping_layers must be >= 1, embed_features >= 0")
        if not self.channels or any(int(c) < 1 for c in self.channels):
            raise ConfigError(f"{path}.channels: need a non-empty list of positive integers, got {self.channels}")
        if not 0 < self.mapping_lr_mult <= 1:
            raise ConfigError(f"{path}.mapping_lr_mult must be in (0, 1]")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GeneratorConfig":
        from common.config import from_dict

        return from_dict(cls, dict(d), "model")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DiscriminatorConfig:
    """Architecture of :class:`Discriminator`.

    Attributes:
        channels: feature channels per level, from ``image_size`` down to ``start_size`` (the same
            number of levels as the generator's).
        cmap_dim: width of the final feature ``h`` and of the identity projection.
        mbstd_group: minibatch-std group size (the largest divisor of the batch up to this).
    """

    channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512, 512])
    cmap_dim: int = 512
    mbstd_group: int = 4

    def validate(self, path: str = "discriminator") -> None:
        from common.config import ConfigError

        if not self.channels or any(int(c) < 1 for c in self.channels):
            raise ConfigError(f"{path}.channels: need a non-empty list of positive integers, got {self.channels}")
        if self.cmap_dim < 1 or self.mbstd_group < 1:
            raise ConfigError(f"{path}: cmap_dim and mbstd_group must be >= 1")


# ----------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (0.2) with StyleGAN's sqrt(2) gain."""
    return F.leaky_relu(x, 0.2) * SQRT2


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class EqLinear(nn.Module):
    """Fully connected layer with equalised learning rate (and an lr multiplier)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mult: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mult)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale = lr_mult / math.sqrt(in_features)
        self.lr_mult = lr_mult
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mult)
        return lrelu(x) if self.activation else x


class EqConv2d(nn.Module):
    """Conv with equalised learning rate, optional 2x average-pool downsampling after it."""

    def __init__(self, cin: int, cout: int, k: int, bias: bool = True, activation: bool = False, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.pad = k // 2
        self.activation, self.down = activation, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)
        if self.down:
            x = F.avg_pool2d(x, 2)
        return lrelu(x) if self.activation else x


class ModulatedConv(nn.Module):
    """Modulated (and optionally demodulated) conv: ``style = affine(w)`` scales the input channels,
    the output is scaled by ``1 / sqrt(sum (weight * style)^2)`` per output channel."""

    def __init__(self, cin: int, cout: int, k: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.affine = EqLinear(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.pad = k // 2
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # (B, cin)
        weight = self.weight * self.scale
        x = x * s[:, :, None, None].to(x.dtype)
        x = F.conv2d(x, weight.to(x.dtype), padding=self.pad)
        if self.demodulate:
            d = (s.float().square() @ weight.float().square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # (B, cout)
            x = x * d[:, :, None, None].to(x.dtype)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (after an optional 2x upsample) + noise + bias + leaky ReLU."""

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, up: bool, noise: bool):
        super().__init__()
        self.conv = ModulatedConv(cin, cout, 3, w_dim)
        self.bias = nn.Parameter(torch.zeros(cout))
        self.up, self.resolution = up, resolution
        self.noise_strength = nn.Parameter(torch.zeros(())) if noise else None

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv(x, w)
        if self.noise_strength is not None:
            if noise is None:
                noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype)
        return lrelu(x + self.bias.to(x.dtype)[None, :, None, None])


class ToRGB(nn.Module):
    def __init__(self, cin: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv(cin, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias.to(x.dtype)[None, :, None, None]


# ----------------------------------------------------------------------------------------------
# generator
# ----------------------------------------------------------------------------------------------


class MappingNetwork(nn.Module):
    """``(z, e) -> w``."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        ef = cfg.embed_features or cfg.w_dim
        self.embed = EqLinear(cfg.embedding_dim, ef)
        dims = [cfg.z_dim + ef] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList(EqLinear(a, b, lr_mult=cfg.mapping_lr_mult, activation=True)
                                    for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        x = torch.cat([normalize_2nd_moment(z.float()), normalize_2nd_moment(self.embed(e.float()))], dim=1)
        for layer in self.layers:
            x = layer(x)
        return x


class SynthesisNetwork(nn.Module):
    """``w -> image`` (see the module docstring)."""

    def __init__(self, cfg: GeneratorConfig, image_size: int):
        super().__init__()
        ch = [int(c) for c in cfg.channels]
        self.start = _levels_start(image_size, len(ch), "model.channels")
        self.const = nn.Parameter(torch.randn(ch[0], self.start, self.start))
        self.layers = nn.ModuleList()
        self.torgb = nn.ModuleList()
        res = self.start
        self.layers.append(SynthesisLayer(ch[0], ch[0], cfg.w_dim, res, up=False, noise=cfg.noise))
        self.torgb.append(ToRGB(ch[0], cfg.w_dim))
        for i in range(1, len(ch)):
            res *= 2
            self.layers.append(SynthesisLayer(ch[i - 1], ch[i], cfg.w_dim, res, up=True, noise=cfg.noise))
            self.layers.append(SynthesisLayer(ch[i], ch[i], cfg.w_dim, res, up=False, noise=cfg.noise))
            self.torgb.append(ToRGB(ch[i], cfg.w_dim))

    def noise_shapes(self) -> list[tuple[int, int]]:
        """(H, W) of each layer's noise input, in layer order (empty without noise inputs)."""
        return [(m.resolution, m.resolution) for m in self.layers if m.noise_strength is not None]

    def forward(self, w: torch.Tensor, noise: list[torch.Tensor] | None = None, channels_last: bool = False) -> torch.Tensor:
        B = w.shape[0]
        x = self.const[None].expand(B, -1, -1, -1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        noise_it = iter(noise) if noise is not None else None
        img = None
        li = 0
        for level, torgb in enumerate(self.torgb):
            for _ in range(1 if level == 0 else 2):
                layer = self.layers[li]
                n = next(noise_it) if (noise_it is not None and layer.noise_strength is not None) else None
                x = layer(x, w, n)
                li += 1
            y = torgb(x, w)
            img = y if img is None else F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + y
        return img


class Generator(nn.Module):
    """Mapping + synthesis: ``G(z, e) -> (B, 3, S, S)`` (about ``[-1, 1]``, unclamped)."""

    def __init__(self, cfg: GeneratorConfig, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.image_size = int(image_size)
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg, self.image_size)

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    @property
    def embedding_dim(self) -> int:
        return self.cfg.embedding_dim

    def forward(self, z: torch.Tensor, e: torch.Tensor, noise: list[torch.Tensor] | None = None,
                truncation: float | torch.Tensor = 1.0, w_center: torch.Tensor | None = None,
                channels_last: bool = False) -> torch.Tensor:
        w = self.mapping(z, e)
        if w_center is not None:
            psi = torch.as_tensor(truncation, dtype=w.dtype, device=w.device).reshape(-1, 1)
            w = w_center.to(w.dtype) + psi * (w - w_center.to(w.dtype))
        return self.synthesis(w, noise, channels_last=channels_last)


# ----------------------------------------------------------------------------------------------
# discriminator
# ----------------------------------------------------------------------------------------------


class DBlock(nn.Module):
    """Residual discriminator block: conv3x3, conv3x3 + 2x down, 1x1 skip + down, sum / sqrt 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqConv2d(cin, cin, 3, activation=True)
        self.conv1 = EqConv2d(cin, cout, 3, activation=True, down=True)
        self.skip = EqConv2d(cin, cout, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) / SQRT2


def minibatch_std(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append the mean over features of the per-group standard deviation as one channel."""
    B, C, H, W = x.shape
    G = max(g for g in range(1, min(group, B) + 1) if B % g == 0)
    y = x.float().reshape(G, B // G, C, H, W)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B // G,)
    y = y.repeat(G).reshape(B, 1, 1, 1).expand(B, 1, H, W).to(x.dtype)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """``D(x, e) -> (B,)`` logits (see the module docstring)."""

    def __init__(self, cfg: DiscriminatorConfig, image_size: int, embedding_dim: int):
        super().__init__()
        self.cfg = cfg
        ch = [int(c) for c in cfg.channels]
        self.start = _levels_start(image_size, len(ch), "discriminator.channels")
        self.image_size = int(image_size)
        self.from_rgb = EqConv2d(3, ch[0], 1, activation=True)
        self.blocks = nn.ModuleList(DBlock(a, b) for a, b in zip(ch[:-1], ch[1:]))
        self.conv = EqConv2d(ch[-1] + 1, ch[-1], 3, activation=True)
        self.fc = EqLinear(ch[-1] * self.start * self.start, cfg.cmap_dim, activation=True)
        self.out = EqLinear(cfg.cmap_dim, 1)
        self.embed = EqLinear(embedding_dim, cfg.cmap_dim)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"discriminator built for {self.image_size} px, got {tuple(x.shape[-2:])}")
        h = self.from_rgb(x)
        for b in self.blocks:
            h = b(h)
        h = self.conv(minibatch_std(h, self.cfg.mbstd_group))
        h = self.fc(h.flatten(1).float())
        proj = self.embed(e.float())
        return self.out(h).squeeze(1) + (h * proj).sum(dim=1) / math.sqrt(h.shape[1])
