"""Batch face augmentation with kornia, configured per training source from a dict.

``build_augment(cfg)`` returns an ``nn.Module`` mapping float ``(B, 3, H, W)`` RGB in ``[0, 1]`` to
the same shape/range, on whatever device the batch is (run it on the GPU after the host->device
transfer). Each entry of ``cfg`` enables one operation and is either a probability (``flip: 0.5``),
``true`` (default probability), ``false``/``null`` (off) or a mapping with ``p`` and parameters.
Operations always run in this order (geometry, photometry, degradations)::

    flip:      {p: 0.5}                                          horizontal flip
    crop:      {p: 0.5, scale: [0.85, 1.0], ratio: [0.9, 1.1]}   random resized crop back to (H, W)
    affine:    {p: 0.5, degrees: 10, translate: [0.05, 0.05], scale: [0.9, 1.1], shear: 0,
                padding_mode: border}
    color:     {p: 0.8, brightness: 0.2, contrast: 0.2, saturation: 0.2, hue: 0.02}
    grayscale: {p: 0.1}
    blur:      {p: 0.2, sigma: [0.2, 1.5], kernel_size: null}    gaussian blur (kernel from sigma)
    lowres:    {p: 0.2, scale: [0.25, 0.75], levels: 8}          down-sample then up-sample back
    jpeg:      {p: 0.2, quality: [30, 90]}                       differentiable JPEG (kornia RandomJPEG)
    noise:     {p: 0.1, std: 0.02}                               additive gaussian noise

Randomness comes from torch's global RNG of the batch's device (seed it with
``lightning.seed_everything``). ``build_augment(None)`` or ``{}`` is the identity.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import kornia.augmentation as K

__all__ = ["FaceAugment", "RandomLowResolution", "RandomResizedCropAnySize", "build_augment",
           "validate_augment_config", "AUGMENT_DEFAULTS", "PRESETS"]

#: default parameters of each operation (``p`` = probability per image)
AUGMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "flip": {"p": 0.5},
    "crop": {"p": 0.5, "scale": (0.85, 1.0), "ratio": (0.9, 1.1)},
    "affine": {"p": 0.5, "degrees": 10.0, "translate": (0.05, 0.05), "scale": (0.9, 1.1), "shear": 0.0,
               "padding_mode": "border"},
    "color": {"p": 0.8, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02},
    "grayscale": {"p": 0.1},
    "blur": {"p": 0.2, "sigma": (0.2, 1.5), "kernel_size": None},
    "lowres": {"p": 0.2, "scale": (0.25, 0.75), "levels": 8},
    "jpeg": {"p": 0.2, "quality": (30.0, 90.0)},
    "noise": {"p": 0.1, "std": 0.02},
}
ORDER = tuple(AUGMENT_DEFAULTS)

#: named presets usable as ``augment: {preset: NAME, ...overrides}``
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "flip": {"flip": 0.5},
    # real, already-degraded photos: mild
    "authentic": {"flip": 0.5, "crop": {"p": 0.3, "scale": [0.9, 1.0]}, "color": {"p": 0.3}},
    # clean renders: push them towards in-the-wild statistics
    "synthetic": {"flip": 0.5, "crop": {"p": 0.5}, "color": {"p": 0.8}, "grayscale": 0.1, "blur": 0.2,
                  "lowres": 0.2, "jpeg": 0.3, "noise": 0.1},
    # the two views of a contrastive phase (USynthFace-style strong augmentation; training.contrastive)
    "contrastive": {"flip": 0.5, "crop": {"p": 0.8, "scale": [0.6, 1.0], "ratio": [0.85, 1.15]},
                    "affine": {"p": 0.5, "degrees": 15.0}, "color": {"p": 0.8, "brightness": 0.4, "contrast": 0.4,
                                                                   "saturation": 0.4, "hue": 0.1},
                    "grayscale": 0.2, "blur": 0.4, "lowres": 0.3, "noise": 0.2},
}


def _range(v: Any, key: str, symmetric: bool = False, lo: float | None = None) -> tuple[float, float]:
    if isinstance(v, bool):
        raise ValueError(f"{key}: expected a number or [min, max], got {v!r}")
    if isinstance(v, (int, float)):
        v = float(v)
        r = (-v, v) if symmetric else (v, v)
    elif isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                               for x in v):
        r = (float(v[0]), float(v[1]))
    else:
        raise ValueError(f"{key}: expected a number or [min, max], got {v!r}")
    if r[0] > r[1]:
        raise ValueError(f"{key}: min > max in {list(r)}")
    if lo is not None and r[0] < lo:
        raise ValueError(f"{key}: values must be >= {lo}, got {list(r)}")
    return r


def _normalise(cfg: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Validated ``{op: params}`` for the enabled ops (defaults filled in); raises ValueError whose
    message starts with the offending key."""
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        raise TypeError(f"augment: expected a mapping, got {type(cfg).__name__}")
    cfg = dict(cfg)
    if "preset" in cfg:
        name = cfg.pop("preset")
        if name not in PRESETS:
            raise ValueError(f"preset: unknown augmentation preset {name!r}; available: {', '.join(PRESETS)}")
        cfg = {**PRESETS[name], **cfg}
    out: dict[str, dict[str, Any]] = {}
    for key, val in cfg.items():
        if key not in AUGMENT_DEFAULTS:
            import difflib

            close = difflib.get_close_matches(str(key), list(AUGMENT_DEFAULTS) + ["preset"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{key}: unknown augmentation{hint}; available: {', '.join(AUGMENT_DEFAULTS)}, preset")
        if val is None or val is False:
            continue
        params = dict(AUGMENT_DEFAULTS[key])
        if val is True:
            pass
        elif isinstance(val, (int, float)):
            params["p"] = float(val)
        elif isinstance(val, Mapping):
            for k, v in val.items():
                if k not in params:
                    raise ValueError(f"{key}.{k}: unknown parameter; allowed: {', '.join(params)}")
                params[k] = v
        else:
            raise ValueError(f"{key}: expected a probability, true/false or a mapping, got {val!r}")
        p = params["p"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{key}.p: probability must be in [0, 1], got {p!r}")
        params["p"] = float(p)
        if params["p"] == 0.0:
            continue
        _check_params(key, params)
        out[key] = params
    return out


def _check_params(key: str, prm: dict[str, Any]) -> None:
    if key == "crop":
        s = _range(prm["scale"], f"{key}.scale", lo=0.01)
        if s[1] > 1.0:
            raise ValueError(f"{key}.scale: must be within (0, 1], got {list(s)}")
        _range(prm["ratio"], f"{key}.ratio", lo=0.01)
    elif key == "affine":
        _range(prm["degrees"], f"{key}.degrees", symmetric=True)
        if prm["translate"] is not None:
            t = _range(prm["translate"], f"{key}.translate", lo=0.0)
            if t[1] > 1:
                raise ValueError(f"{key}.translate: fractions must be in [0, 1]")
        if prm["scale"] is not None:
            _range(prm["scale"], f"{key}.scale", lo=0.01)
        _range(prm["shear"], f"{key}.shear", symmetric=True)
        if prm["padding_mode"] not in ("zeros", "border", "reflection"):
            raise ValueError(f"{key}.padding_mode: must be zeros, border or reflection, got {prm['padding_mode']!r}")
    elif key == "color":
        for k in ("brightness", "contrast", "saturation"):
            v = prm[k]
            if isinstance(v, bool) or not isinstance(v, (int, float, list, tuple)):
                raise ValueError(f"{key}.{k}: expected a number or [min, max], got {v!r}")
            if isinstance(v, (int, float)) and v < 0:
                raise ValueError(f"{key}.{k}: must be >= 0, got {v}")
        h = prm["hue"]
        if isinstance(h, (int, float)) and not 0 <= h <= 0.5:
            raise ValueError(f"{key}.hue: must be in [0, 0.5], got {h}")
    elif key == "blur":
        _range(prm["sigma"], f"{key}.sigma", lo=1e-3)
        k = prm["kernel_size"]
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0):
            raise ValueError(f"{key}.kernel_size: must be an odd integer >= 3 or null, got {k!r}")
    elif key == "lowres":
        s = _range(prm["scale"], f"{key}.scale", lo=0.01)
        if s[1] > 1.0:
            raise ValueError(f"{key}.scale: must be within (0, 1], got {list(s)}")
        lv = prm["levels"]
        if isinstance(lv, bool) or not isinstance(lv, int) or lv < 1:
            raise ValueError(f"{key}.levels: must be an integer >= 1, got {lv!r}")
    elif key == "jpeg":
        q = _range(prm["quality"], f"{key}.quality", lo=1.0)
        if q[1] > 100:
            raise ValueError(f"{key}.quality: must be within [1, 100], got {list(q)}")
    elif key == "noise":
        s = prm["std"]
        if isinstance(s, bool) or not isinstance(s, (int, float, list, tuple)):
            raise ValueError(f"{key}.std: expected a number, got {s!r}")
        _range(s, f"{key}.std", lo=0.0)


def validate_augment_config(cfg: Mapping[str, Any] | None) -> None:
    """Raise ``ValueError("<key>: message")`` if ``cfg`` is not a valid augmentation config."""
    _normalise(cfg)


class RandomResizedCropAnySize(nn.Module):
    """``kornia.augmentation.RandomResizedCrop`` whose output size is the input size (built per size)."""

    def __init__(self, p: float, scale: tuple[float, float], ratio: tuple[float, float]):
        super().__init__()
        self.p, self.scale, self.ratio = p, tuple(scale), tuple(ratio)
        self._ops: dict[tuple[int, int], nn.Module] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        op = self._ops.get(hw)
        if op is None:
            op = self._ops[hw] = K.RandomResizedCrop(hw, scale=self.scale, ratio=self.ratio, p=self.p,
                                                     cropping_mode="resample")
        return op(x)

    def extra_repr(self) -> str:
        return f"p={self.p}, scale={self.scale}, ratio={self.ratio}"


class RandomLowResolution(nn.Module):
    """Down-sample a random subset of images by a factor in ``scale`` (antialiased bilinear), then
    up-sample back (bilinear): the look of a small, up-scaled face. Factors are drawn from
    ``levels`` evenly spaced values (one resize pair per level and batch)."""

    def __init__(self, p: float, scale: tuple[float, float] = (0.25, 0.75), levels: int = 8):
        super().__init__()
        self.p = float(p)
        lo, hi = scale
        self.register_buffer("factors", torch.linspace(lo, hi, levels) if levels > 1 and hi > lo
                             else torch.tensor([lo]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if B == 0:
            return x
        sel = torch.rand(B, device=x.device) < self.p
        lvl = torch.randint(len(self.factors), (B,), device=x.device)
        lvl = torch.where(sel, lvl, torch.full_like(lvl, -1)).tolist()
        if all(v < 0 for v in lvl):
            return x
        out = x.clone()
        factors = self.factors.tolist()
        for li, f in enumerate(factors):
            idx = [i for i, v in enumerate(lvl) if v == li]
            if not idx:
                continue
            ii = torch.tensor(idx, device=x.device)
            h, w = max(2, int(round(H * f))), max(2, int(round(W * f)))
            if (h, w) == (H, W):
                continue
            small = F.interpolate(x[ii], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            out[ii] = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
        return out

    def extra_repr(self) -> str:
        f = self.factors.tolist()
        return f"p={self.p}, scale=({f[0]:.3g}, {f[-1]:.3g}), levels={len(f)}"


class RandomJPEGAnySize(nn.Module):
    """kornia ``RandomJPEG`` (differentiable JPEG) for any image size: pads to a multiple of 16
    (replicate) and crops back, and runs in float32."""

    def __init__(self, p: float, quality: tuple[float, float]):
        super().__init__()
        self.p, self.quality = float(p), tuple(quality)
        self.op = K.RandomJPEG(jpeg_quality=self.quality, p=self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        ph, pw = (-H) % 16, (-W) % 16
        y = x.float()
        if ph or pw:
            y = F.pad(y, (0, pw, 0, ph), mode="replicate")
        y = self.op(y.clamp(0.0, 1.0))
        return y[..., :H, :W].to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, quality={self.quality}"


def _make_op(key: str, prm: dict[str, Any]) -> nn.Module:
    p = prm["p"]
    if key == "flip":
        return K.RandomHorizontalFlip(p=p)
    if key == "crop":
        return RandomResizedCropAnySize(p, _range(prm["scale"], "scale"), _range(prm["ratio"], "ratio"))
    if key == "affine":
        return K.RandomAffine(
            degrees=_range(prm["degrees"], "degrees", symmetric=True),
            translate=_range(prm["translate"], "translate") if prm["translate"] is not None else None,
            scale=_range(prm["scale"], "scale") if prm["scale"] is not None else None,
            shear=_range(prm["shear"], "shear", symmetric=True) if prm["shear"] else None,
            padding_mode=prm["padding_mode"], p=p)
    if key == "color":
        def cv(v):
            return tuple(v) if isinstance(v, (list, tuple)) else float(v)

        return K.ColorJitter(brightness=cv(prm["brightness"]), contrast=cv(prm["contrast"]),
                             saturation=cv(prm["saturation"]), hue=cv(prm["hue"]), p=p)
    if key == "grayscale":
        return K.RandomGrayscale(p=p)
    if key == "blur":
        sig = _range(prm["sigma"], "sigma")
        ks = prm["kernel_size"] or max(3, 2 * int(math.ceil(2.5 * sig[1])) + 1)
        return K.RandomGaussianBlur((ks, ks), sig, p=p)
    if key == "lowres":
        return RandomLowResolution(p, _range(prm["scale"], "scale"), int(prm["levels"]))
    if key == "jpeg":
        return RandomJPEGAnySize(p, _range(prm["quality"], "quality"))
    if key == "noise":
        std = prm["std"]
        std = float(std[1]) if isinstance(std, (list, tuple)) else float(std)
        return K.RandomGaussianNoise(mean=0.0, std=std, p=p)
    raise KeyError(key)  # pragma: no cover


class FaceAugment(nn.Module):
    """A sequence of batch augmentations (see the module docstring). ``forward`` takes float
    ``(B, 3, H, W)`` in ``[0, 1]`` and returns the augmented batch clamped to ``[0, 1]``; no
    gradients are tracked. ``config`` holds the normalised settings."""

    def __init__(self, cfg: Mapping[str, Any] | None = None):
        super().__init__()
        self.config = _normalise(cfg)
        self.ops = nn.ModuleDict({k: _make_op(k, self.config[k]) for k in ORDER if k in self.config})

    @property
    def enabled(self) -> bool:
        return len(self.ops) > 0

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(x.shape)}")
        if not self.ops or x.shape[0] == 0:
            return x
        dtype = x.dtype
        y = x.float()
        for op in self.ops.values():
            y = op(y)
        return y.clamp_(0.0, 1.0).to(dtype)


def build_augment(cfg: Mapping[str, Any] | None) -> FaceAugment:
    """Build the augmentation module for one source from its config dict (``None``: identity)."""
    return FaceAugment(cfg)
