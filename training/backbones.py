"""Face-recognition backbones with a small timm-style registry.

Every backbone maps aligned face crops to identity embeddings:

* input:  ``(B, 3, H, W)`` float, RGB, normalised to ``[-1, 1]`` (``(x / 255 - 0.5) / 0.5``),
  ``H = W = 112`` by default (the ArcFace alignment template);
* output: ``(B, embedding_size)`` float, **not** L2-normalised (heads and verification normalise).

Registered models (see :func:`list_backbones`):

* ``iresnet18/34/50/100/200``: insightface ``arcface_torch`` iResNet, layer-for-layer and with the
  same ``state_dict`` key names, so released ``backbone.pth`` checkpoints load with
  :func:`load_arcface_torch`. The fc layer's input size depends on the input resolution, so pass
  ``input_size`` (int or ``(H, W)``, default 112) when training at another size.
* ``mobilefacenet``: the standard MobileFaceNet (Chen et al. 2018, ~1M parameters; ``scale=1``),
  in arcface_torch's layout (``mbf`` is arcface_torch's default ``scale=2`` variant).
* ``tiny``: a few conv layers with global pooling, for CPU tests; any input size works.

All models work with ``channels_last`` memory format and under ``torch.autocast`` (bf16/fp16);
they contain no dtype-specific code. The short arcface_torch names (``r18``, ``r50``, ``r100``,
``mbf`` ...) are accepted as aliases by :func:`create_backbone`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "create_backbone",
    "list_backbones",
    "register_backbone",
    "load_arcface_torch",
    "LoadReport",
    "IBasicBlock",
    "IResNet",
    "MobileFaceNet",
    "TinyFaceNet",
    "feature_map_size",
]

# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {
    "r18": "iresnet18",
    "r34": "iresnet34",
    "r50": "iresnet50",
    "r100": "iresnet100",
    "r200": "iresnet200",
    "mobilefacenet_s1": "mobilefacenet",
}


def register_backbone(name: str | Callable[..., nn.Module] | None = None, *, overwrite: bool = False):
    """Register a backbone factory ``fn(embedding_size=512, **kw) -> nn.Module``.

    Usable as ``@register_backbone``, ``@register_backbone()`` or ``@register_backbone("name")``;
    without a name the function's ``__name__`` is used. Re-registering a name raises
    ``ValueError`` unless ``overwrite=True``.
    """

    def deco(fn: Callable[..., nn.Module], key: str | None = None) -> Callable[..., nn.Module]:
        key = (key or fn.__name__).lower()
        if key in _BACKBONES and not overwrite:
            raise ValueError(f"backbone {key!r} is already registered (pass overwrite=True)")
        _BACKBONES[key] = fn
        return fn

    if callable(name):
        return deco(name)
    return lambda fn: deco(fn, name)


def list_backbones() -> list[str]:
    """Names of all registered backbones (sorted; aliases not included)."""
    return sorted(_BACKBONES)


def create_backbone(name: str, embedding_size: int = 512, *, checkpoint: str | os.PathLike | None = None,
                    **kw) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: registered name (case-insensitive) or arcface_torch alias (``r50``, ``mbf`` ...).
        embedding_size: output dimension ``D``.
        checkpoint: optional arcface_torch-style ``.pth`` state_dict loaded strictly with
            :func:`load_arcface_torch`.
        **kw: model options, e.g. ``input_size=112`` (int or ``(H, W)``), ``dropout``, ``width``.

    Returns:
        ``nn.Module`` mapping ``(B, 3, H, W)`` in ``[-1, 1]`` to ``(B, embedding_size)``. The module
        has ``embedding_size`` and ``input_size`` (``(H, W)``) attributes.
    """
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    model = _BACKBONES[key](embedding_size=embedding_size, **kw)
    if checkpoint is not None:
        load_arcface_torch(model, checkpoint, strict=True)
    return model


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"input_size must be an int or (H, W), got {size!r}")
    return size  # type: ignore[return-value]


def feature_map_size(input_size: int | Sequence[int], num_stride2: int = 4) -> tuple[int, int]:
    """Spatial size after ``num_stride2`` 3x3/stride-2/pad-1 convs: ``ceil(n / 2)`` each time.

    112 -> 7, 64 -> 4, 56 -> 4 (56/28/14/7/4), 128 -> 8.
    """
    h, w = _pair(input_size)
    for _ in range(num_stride2):
        h, w = (h + 1) // 2, (w + 1) // 2
    if h < 1 or w < 1:
        raise ValueError(f"input_size {input_size!r} is too small")
    return h, w


# ----------------------------------------------------------------------------------------------
# iResNet (insightface arcface_torch/backbones/iresnet.py)
# ----------------------------------------------------------------------------------------------


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding (no bias)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     groups=groups, bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution (no bias)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class IBasicBlock(nn.Module):
    """Improved residual block: BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN (+ shortcut)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """arcface_torch iResNet.

    Stem conv3x3(3->64, stride 1) - BN - PReLU, four stages of :class:`IBasicBlock` (64, 128, 256,
    512 channels, each starting with stride 2), then BN - flatten - dropout - fc - BatchNorm1d
    (``features``, affine weight frozen at 1 as in arcface_torch).

    Shapes: ``(B, 3, H, W)`` in ``[-1, 1]`` -> ``(B, num_features)``; the fc input is
    ``512 * h * w`` with ``(h, w) = feature_map_size(input_size)`` (7x7 for 112x112).
    """

    def __init__(self, block: type[IBasicBlock], layers: Sequence[int], dropout: float = 0.0,
                 num_features: int = 512, zero_init_residual: bool = False, groups: int = 1,
                 width_per_group: int = 64, replace_stride_with_dilation: Sequence[bool] | None = None,
                 input_size: int | Sequence[int] = 112):
        super().__init__()
        self.input_size = _pair(input_size)
        self.embedding_size = num_features
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation should be None or a 3-element tuple, "
                             f"got {replace_stride_with_dilation}")
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=2)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2])
        n_down = 4 - sum(bool(d) for d in replace_stride_with_dilation)
        fh, fw = feature_map_size(self.input_size, n_down)
        self.fc_scale = fh * fw
        self.bn2 = nn.BatchNorm2d(512 * block.expansion, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * block.expansion * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block: type[IBasicBlock], planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion, eps=1e-05),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                        previous_dilation)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                dilation=self.dilation))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.prelu(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.bn2(x)
        x = torch.flatten(x, 1)
        if x.shape[1] != self.fc.in_features:
            raise ValueError(
                f"{type(self).__name__} was built for input_size={self.input_size} (fc expects "
                f"{self.fc.in_features} features) but got {x.shape[1]} features; build it with "
                "input_size=(H, W) matching your images")
        x = self.dropout(x)
        x = self.fc(x)
        x = self.features(x)
        return x


def _iresnet(layers: Sequence[int], embedding_size: int, **kw) -> IResNet:
    return IResNet(IBasicBlock, layers, num_features=embedding_size, **kw)


@register_backbone("iresnet18")
def iresnet18(embedding_size: int = 512, **kw) -> IResNet:
    """iResNet-18, layers [2, 2, 2, 2] (~24M params at 112 px / 512-d)."""
    return _iresnet([2, 2, 2, 2], embedding_size, **kw)


@register_backbone("iresnet34")
def iresnet34(embedding_size: int = 512, **kw) -> IResNet:
    """iResNet-34, layers [3, 4, 6, 3]."""
    return _iresnet([3, 4, 6, 3], embedding_size, **kw)


@register_backbone("iresnet50")
def iresnet50(embedding_size: int = 512, **kw) -> IResNet:
    """iResNet-50, layers [3, 4, 14, 3] (~43.6M params at 112 px / 512-d)."""
    return _iresnet([3, 4, 14, 3], embedding_size, **kw)


@register_backbone("iresnet100")
def iresnet100(embedding_size: int = 512, **kw) -> IResNet:
    """iResNet-100, layers [3, 13, 30, 3] (~65M params at 112 px / 512-d)."""
    return _iresnet([3, 13, 30, 3], embedding_size, **kw)


@register_backbone("iresnet200")
def iresnet200(embedding_size: int = 512, **kw) -> IResNet:
    """iResNet-200, layers [6, 26, 60, 6]."""
    return _iresnet([6, 26, 60, 6], embedding_size, **kw)


# ----------------------------------------------------------------------------------------------
# MobileFaceNet (arcface_torch/backbones/mobilefacenet.py layout)
# ----------------------------------------------------------------------------------------------


class _ConvBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, groups=groups, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(num_features=out_c),
            nn.PReLU(num_parameters=out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _LinearBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(num_features=out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _DepthWise(nn.Module):
    """Inverted-residual bottleneck: 1x1 expand (to ``groups`` ch) - depthwise kxk - 1x1 linear."""

    def __init__(self, in_c: int, out_c: int, residual: bool = False, kernel=(3, 3), stride=(2, 2),
                 padding=(1, 1), groups: int = 1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            _ConvBlock(in_c, out_c=groups, kernel=(1, 1), padding=(0, 0), stride=(1, 1)),
            _ConvBlock(groups, groups, groups=groups, kernel=kernel, padding=padding, stride=stride),
            _LinearBlock(groups, out_c, kernel=(1, 1), padding=(0, 0), stride=(1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class _Residual(nn.Module):
    def __init__(self, c: int, num_block: int, groups: int, kernel=(3, 3), stride=(1, 1), padding=(1, 1)):
        super().__init__()
        self.layers = nn.Sequential(*[_DepthWise(c, c, True, kernel, stride, padding, groups)
                                      for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _GDC(nn.Module):
    """Global depthwise conv (kernel = final feature map) - flatten - linear - BatchNorm1d."""

    def __init__(self, embedding_size: int, kernel: tuple[int, int] = (7, 7)):
        super().__init__()
        self.layers = nn.Sequential(
            _LinearBlock(512, 512, groups=512, kernel=kernel, stride=(1, 1), padding=(0, 0)),
            nn.Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet in arcface_torch's layout (same state_dict keys as its ``get_mbf``).

    ``scale=1, blocks=(1, 4, 6, 2)`` is the original paper's network (~1.0M params with a 128-d,
    ~1.2M with a 512-d embedding); arcface_torch's ``mbf`` uses ``scale=2``. The global depthwise
    conv kernel equals the final feature map (7x7 at 112 px; ``feature_map_size(input_size)``).
    """

    def __init__(self, num_features: int = 512, blocks: Sequence[int] = (1, 4, 6, 2), scale: int = 1,
                 input_size: int | Sequence[int] = 112):
        super().__init__()
        self.scale = scale
        self.input_size = _pair(input_size)
        self.embedding_size = num_features
        c1, c2 = 64 * scale, 128 * scale
        self.layers = nn.ModuleList()
        self.layers.append(_ConvBlock(3, c1, kernel=(3, 3), stride=(2, 2), padding=(1, 1)))
        if blocks[0] == 1:
            self.layers.append(_ConvBlock(c1, c1, kernel=(3, 3), stride=(1, 1), padding=(1, 1), groups=64))
        else:
            self.layers.append(_Residual(c1, num_block=blocks[0], groups=128, kernel=(3, 3), stride=(1, 1),
                                         padding=(1, 1)))
        self.layers.extend([
            _DepthWise(c1, c1, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=128),
            _Residual(c1, num_block=blocks[1], groups=128, kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
            _DepthWise(c1, c2, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=256),
            _Residual(c2, num_block=blocks[2], groups=256, kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
            _DepthWise(c2, c2, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=512),
            _Residual(c2, num_block=blocks[3], groups=256, kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
        ])
        self.conv_sep = _ConvBlock(c2, 512, kernel=(1, 1), stride=(1, 1), padding=(0, 0))
        self.features = _GDC(num_features, kernel=feature_map_size(self.input_size))
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for func in self.layers:
            x = func(x)
        x = self.conv_sep(x)
        k = self.features.layers[0].layers[0].kernel_size
        if tuple(x.shape[-2:]) != tuple(k):
            raise ValueError(f"MobileFaceNet was built for input_size={self.input_size} (final map {k}) "
                             f"but got a {tuple(x.shape[-2:])} map; build it with input_size=(H, W)")
        return self.features(x)


@register_backbone("mobilefacenet")
def mobilefacenet(embedding_size: int = 512, **kw) -> MobileFaceNet:
    """Standard MobileFaceNet (scale 1, blocks (1, 4, 6, 2)); ~1.2M params with 512-d output."""
    kw.setdefault("scale", 1)
    return MobileFaceNet(num_features=embedding_size, **kw)


@register_backbone("mbf")
def mbf(embedding_size: int = 512, **kw) -> MobileFaceNet:
    """arcface_torch's ``mbf`` (MobileFaceNet with ``scale=2``)."""
    kw.setdefault("scale", 2)
    return MobileFaceNet(num_features=embedding_size, **kw)


# ----------------------------------------------------------------------------------------------
# tiny CPU test model
# ----------------------------------------------------------------------------------------------


class TinyFaceNet(nn.Module):
    """A few stride-2 conv-BN-PReLU layers, global average pooling, linear, BatchNorm1d.

    For fast CPU tests and smoke runs; any input size >= 16 px works (112, 64, 56, 32 ...).
    ``width`` sets the first layer's channels (doubled each layer).
    """

    def __init__(self, embedding_size: int = 512, width: int = 16, depth: int = 4,
                 input_size: int | Sequence[int] = 112):
        super().__init__()
        self.input_size = _pair(input_size)
        self.embedding_size = embedding_size
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(depth):
            c_out = width * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.PReLU(c_out)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        x = torch.flatten(self.pool(x), 1)
        return self.features(self.fc(x))


@register_backbone("tiny")
def tiny(embedding_size: int = 512, **kw) -> TinyFaceNet:
    """Tiny CPU test model (~100k params at width 16 / 128-d)."""
    return TinyFaceNet(embedding_size=embedding_size, **kw)


# ----------------------------------------------------------------------------------------------
# arcface_torch checkpoint loading
# ----------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What :func:`load_arcface_torch` matched: keys absent from the checkpoint (``missing``),
    checkpoint keys the model lacks (``unexpected``) and keys whose shapes differ
    (``mismatched``: ``key -> (checkpoint_shape, model_shape)``)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        if self.ok:
            return "all keys matched"

        def _fmt(keys: Sequence[str], n: int = 10) -> str:
            s = ", ".join(keys[:n])
            return s + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s) (in model, not in checkpoint): {_fmt(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s) (in checkpoint, not in model): "
                         f"{_fmt(self.unexpected)}")
        if self.mismatched:
            items = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, (a, b) in self.mismatched.items()]
            parts.append(f"{len(items)} shape mismatch(es): {_fmt(items)}")
        return "; ".join(parts)


_NESTED_KEYS = ("state_dict_backbone", "state_dict", "model", "backbone")
_PREFIXES = ("module.", "backbone.", "_orig_mod.")


def _extract_state_dict(obj) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for k in _NESTED_KEYS:
            if k in obj and isinstance(obj[k], Mapping):
                return _extract_state_dict(obj[k])
    raise ValueError("checkpoint is not a state_dict (a mapping of tensors) nor a dict holding one under "
                     f"one of {_NESTED_KEYS}; got {type(obj).__name__}"
                     + (f" with keys {list(obj)[:10]}" if isinstance(obj, Mapping) else ""))


def load_arcface_torch(model: nn.Module, path: str | os.PathLike, strict: bool = True,
                       map_location: str | torch.device = "cpu") -> LoadReport:
    """Load an insightface ``arcface_torch`` checkpoint (e.g. ``backbone.pth``) into ``model``.

    The file is read with ``torch.load(..., weights_only=True)``. Accepted contents: a plain
    state_dict, or a dict holding one under ``state_dict_backbone`` (arcface_torch's
    ``checkpoint_gpu_*.pt``), ``state_dict``, ``model`` or ``backbone``; ``module.`` /
    ``backbone.`` / ``_orig_mod.`` prefixes (DDP, Lightning, torch.compile) are stripped.
    ``num_batches_tracked`` buffers absent from old checkpoints are tolerated.

    Matching tensors are always copied. With ``strict=True`` (default) any missing, unexpected or
    shape-mismatched key raises ``RuntimeError`` listing them *before* anything is copied;
    with ``strict=False`` the matching keys are loaded and the :class:`LoadReport` tells what was
    skipped. A fc shape mismatch usually means a different ``input_size`` or ``embedding_size``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = torch.load(path, map_location=map_location, weights_only=True)
    sd = _extract_state_dict(obj)
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}

    own = model.state_dict()
    report = LoadReport()
    report.missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    report.unexpected = [k for k in sd if k not in own]
    for k, v in sd.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            report.mismatched[k] = (tuple(v.shape), tuple(own[k].shape))
    if strict and not report.ok:
        raise RuntimeError(f"cannot load {path} into {type(model).__name__}: {report}")
    loadable = {k: v for k, v in sd.items() if k in own and k not in report.mismatched}
    model.load_state_dict(loadable, strict=False)
    return report
