"""Per-image photometric degradations (blur, noise, JPEG, low resolution, colour jitter, gray).

Parameters are sampled by the caller, one row per image, so each image depends only on its own
parameters; the ops are batched kornia/torch calls on the images' device (no loop over images): the
colour jitter is one 3 x 3 map per image, the JPEG round trip (:func:`jpeg`) a batched baseline codec.
"""
from __future__ import annotations

import math
from functools import lru_cache

import kornia
import torch
import torch.nn.functional as F


def gaussian_blur(img: torch.Tensor, sigma: torch.Tensor, min_sigma: float = 0.0, own_kernel: bool = False) -> torch.Tensor:
    """Blur each of the (B, C, H, W) images with its own gaussian ``sigma`` (B,) in pixels (one kernel
    size, from the largest sigma); images with ``sigma <= min_sigma`` are returned unchanged. With
    ``own_kernel`` each image's kernel spans 3 sd of its own sigma (one blur per kernel size), so an
    image's result does not depend on the rest of its batch."""
    on = sigma > min_sigma
    if not bool(on.any()):
        return img
    out = img.clone()
    k = 2 * torch.ceil(3 * sigma) + 1 if own_kernel else torch.where(on, 2 * math.ceil(3 * float(sigma[on].max())) + 1, 0)
    for size in k[on].unique().tolist():
        sel = on & (k == size)
        out[sel] = kornia.filters.gaussian_blur2d(img[sel], (int(size), int(size)),
                                                  sigma[sel].clamp_min(1e-3).to(img)[:, None].expand(-1, 2))
    return out


@lru_cache(maxsize=1024)
def _resample_operator(n: int, m: int, device: str) -> torch.Tensor:
    """(n, n) matrix of the 1-D round trip of :func:`lowres`: a length-``n`` signal downsampled to
    ``m`` (bilinear, antialiased) and upsampled back (bilinear), both ``align_corners=False`` (the
    operators of ``F.interpolate`` applied to the unit impulses)."""
    eye = torch.eye(n, dtype=torch.float64)[None, None]  # column j: the impulse at j (rows resampled only)
    down = F.interpolate(eye, size=(m, n), mode="bilinear", align_corners=False, antialias=True)
    up = F.interpolate(down, size=(n, n), mode="bilinear", align_corners=False)
    return up[0, 0].float().to(device)  # [output i, input j]


def lowres(img: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Low resolution: each of the (B, C, H, W) images downsampled by its ``scale`` (B,) (to
    ``max(4, round(H * s))`` x ``max(4, round(W * s))``, antialiased bilinear) and upsampled back
    (bilinear). Both resamplings are separable and linear, so each image's round trip is two small
    matrices, ``Ay @ x @ Ax^T``: one batched matmul, a matrix per distinct size (cached)."""
    B, C, H, W = img.shape
    if B == 0:
        return img
    s = scale.detach().double().cpu()
    hs = (H * s).round().clamp_min(4).long()
    ws = (W * s).round().clamp_min(4).long()
    dev = str(img.device)
    pairs, inv = torch.unique(torch.stack([hs, ws], 1), dim=0, return_inverse=True)
    ay = torch.stack([_resample_operator(H, int(h), dev) for h in pairs[:, 0].tolist()])[inv.to(img.device)]
    ax = torch.stack([_resample_operator(W, int(w), dev) for w in pairs[:, 1].tolist()])[inv.to(img.device)]
    return ay.to(img.dtype)[:, None] @ img @ ax.to(img.dtype).transpose(1, 2)[:, None]


_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def hue_matrix(hue: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) RGB -> RGB matrices rotating the hue by ``hue`` (B,) radians: a rotation of the
    chroma plane (I, Q) of YIQ, luma kept (the classic linear hue shift; cheaper than HSV)."""
    c, s = torch.cos(hue), torch.sin(hue)
    one, zero = torch.ones_like(hue), torch.zeros_like(hue)
    rot = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, c, -s], -1),
                       torch.stack([zero, s, c], -1)], -2)
    T = _RGB2YIQ.to(hue)
    return torch.linalg.inv(T) @ rot @ T


#: the baseline JPEG quantization tables (ITU-T T.81, Annex K), luma and chroma, [row, col] in the
#: 8 x 8 block of DCT frequencies
_JPEG_QY = torch.tensor([[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
                         [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
                         [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
                         [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)
_JPEG_QC = torch.full((8, 8), 99.0)
_JPEG_QC[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]], dtype=torch.float32)
#: JFIF's full-range RGB <-> YCbCr (chroma centred on 0 here)
_RGB2YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC2RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def _dct8() -> torch.Tensor:
    """(8, 8) the orthonormal DCT-II basis, [frequency, sample]."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.float()


_DCT8 = _dct8()


def jpeg_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 8, 8) luma and chroma quantization tables of each image's JPEG ``quality`` (B,) in [1, 100],
    scaled as libjpeg's ``jpeg_set_quality`` scales the baseline tables (a fractional quality scales
    like the integer below it would not: the scale is floored, the quality is not)."""
    q = quality.clamp(1, 100)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q).floor()[:, None, None]
    return tuple(((t.to(q)[None] * scale + 50) / 100).floor().clamp(1, 255) for t in (_JPEG_QY, _JPEG_QC))


def _jpeg_plane(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(N, H, W) planes (H, W multiples of 8, level-shifted to centre on 0) through the DCT of their
    8 x 8 blocks, quantized by each plane's ``table`` (N, 8, 8) with round-to-nearest, dequantized and
    transformed back."""
    N, H, W = x.shape
    d = _DCT8.to(x)
    blocks = x.view(N, H // 8, 8, W // 8, 8).transpose(2, 3)  # (N, H/8, W/8, 8, 8)
    t = table[:, None, None]
    coef = torch.round(d @ blocks @ d.T / t) * t
    return (d.T @ coef @ d).transpose(2, 3).reshape(N, H, W)


def jpeg(img: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """A baseline JPEG round trip of each (B, 3, H, W) sRGB image in [0, 1] at its own ``quality`` (B,):
    JFIF YCbCr, 4:2:0 chroma (2 x 2 means), the 8 x 8 DCT quantized by :func:`jpeg_tables` with hard
    rounding, the decoder's 8-bit samples and its bilinear ("fancy") chroma upsampling. Batched tensor
    ops; the edges are padded by replication to whole 16 px macroblocks. Against Pillow's libjpeg on
    rendered faces (8-bit in and out) the mean absolute difference is 0.003-0.004 (1 grey level) at
    quality 30-90, and the error it adds to the image is libjpeg's (BENCHMARKS.md, "Speed, session 24")."""
    B, _, H, W = img.shape
    if B == 0:
        return img
    hp, wp = -H % 16, -W % 16
    x = F.pad(img, (0, wp, 0, hp), mode="replicate") if hp or wp else img
    ycc = torch.einsum("ij,bjhw->bihw", _RGB2YCC.to(img) * 255, x)  # Y in [0, 255], chroma centred on 0
    qy, qc = jpeg_tables(quality.to(img))
    Hp, Wp = x.shape[-2:]
    y = _jpeg_plane(ycc[:, 0] - 128, qy) + 128
    chroma = F.avg_pool2d(ycc[:, 1:], 2).reshape(B * 2, Hp // 2, Wp // 2)
    chroma = _jpeg_plane(chroma, qc.repeat_interleave(2, 0)).view(B, 2, Hp // 2, Wp // 2)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    ycc = torch.cat([y[:, None].round().clamp(0, 255), (chroma + 128).round().clamp(0, 255) - 128], 1)
    out = torch.einsum("ij,bjhw->bihw", _YCC2RGB.to(img) / 255, ycc)
    return out[:, :, :H, :W].clamp(0, 1)


def apply_degradations(img: torch.Tensor, p: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
    """Degrade sRGB images.

    Args:
        img: (B, 3, H, W) sRGB in [0, 1].
        p: per-image parameters, each (B,): ``blur`` (sigma px at this size, 0 = off), ``lowres``
            (scale, 1 = off), ``brightness``, ``contrast``, ``saturation``, ``hue`` (identity values
            0, 1, 1, 0 = off), ``gray`` (0/1), ``noise`` (std), ``jpeg`` (quality, 0 = off).
        noise: (B, 3, H, W) standard-normal noise drawn from each image's stream (rows whose
            ``noise`` std is 0 may hold anything, e.g. zeros).

    Returns:
        (B, 3, H, W) degraded images in [0, 1].
    """
    B, _, H, W = img.shape
    out = img
    out = gaussian_blur(out, p["blur"])
    low = p["lowres"] < 1.0
    if bool(low.any()):
        out = out.clone()
        out[low] = lowres(out[low], p["lowres"][low])
    # colour jitter and gray: per-image affine maps of the colour, applied as one 3 x 3 matrix and an
    # offset per image: brightness b, contrast c about the image's mean m (after b), saturation s
    # about the luma, then (after a clip to [0, 1], images with a hue shift only) the hue rotation
    # and the gray mix g
    eye3 = torch.eye(3, dtype=img.dtype, device=img.device).expand(B, 3, 3)
    luma = torch.tensor([[0.299, 0.587, 0.114]]).to(img).expand(3, 3)  # each row: the luma weights
    b, c = p["brightness"].to(img), p["contrast"].to(img)
    s, g = p["saturation"].to(img)[:, None, None], p["gray"].to(img)[:, None, None]
    sat = s * eye3 + (1 - s) * luma  # (B, 3, 3)
    gray = (1 - g) * eye3 + g * luma
    m = out.mean(dim=(1, 2, 3)) + b
    shift = (sat @ ((1 - c) * m + c * b)[:, None, None].expand(B, 3, 1))[..., 0]  # (B, 3): offset after saturation
    hue = p["hue"].to(img)
    hon = hue != 0
    # the images without a hue shift: one map, x -> gray @ sat @ (c x) + gray @ shift
    mat = torch.where(hon[:, None, None], sat * c[:, None, None], gray @ sat * c[:, None, None])
    off = torch.where(hon[:, None], shift, (gray @ shift[..., None])[..., 0])
    out = torch.einsum("bij,bjhw->bihw", mat, out) + off[:, :, None, None]
    if bool(hon.any()):  # hue rotation on the images that have one, after a clip to [0, 1]
        out = out.clone()
        out[hon] = torch.einsum("bij,bjhw->bihw", gray[hon] @ hue_matrix(hue[hon]), out[hon].clamp(0, 1))
    out = out + noise * p["noise"].to(img)[:, None, None, None]
    out = out.clamp(0, 1)
    q = p["jpeg"]
    jon = q > 0
    if bool(jon.any()):
        out = out.clone()
        out[jon] = jpeg(out[jon], q[jon].to(img))
    return out
