"""The photometric degradations of morphable.degrade: the batched JPEG round trip against a real
codec (Pillow's libjpeg), and the fused colour jitter against its step-by-step definition."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from morphable.degrade import apply_degradations, hue_matrix, jpeg, jpeg_tables


def _photo_like(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) smooth colour images with edges and a little texture, at 8-bit levels."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2.5) ** 2 < (size / 4) ** 2).float()
    img = img * 0.7 + 0.25 * disc + 0.03 * torch.rand(n, 3, size, size, generator=g)
    return (img.clamp(0, 1) * 255).round() / 255


def _pillow_jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for im in img:
        buf = io.BytesIO()
        Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=quality)
        out.append(torch.from_numpy(np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))).permute(2, 0, 1))
    return torch.stack(out).float() / 255


@pytest.mark.parametrize("quality", [30, 60, 90])
def test_jpeg_round_trip_matches_libjpeg(quality):
    """Within a grey level of Pillow's codec, and losing as much of the image as it does (kornia's
    differentiable codec, which this replaced: 1.0-1.7 grey levels off, losing 5-9% less)."""
    x = _photo_like(6)
    ours, ref = jpeg(x, torch.full((6,), float(quality))), _pillow_jpeg(x, quality)
    assert ours.shape == x.shape and float(ours.min()) >= 0 and float(ours.max()) <= 1
    assert float((ours - ref).abs().mean()) < 1.2 / 255
    err, err_ref = float((ours - x).abs().mean()), float((ref - x).abs().mean())
    assert 0.97 * err_ref < err < 1.03 * err_ref, (err, err_ref)


def test_jpeg_per_image_quality_any_size_and_batch_independent():
    x = _photo_like(4, size=50, seed=1)  # not a multiple of 16: padded and cropped back
    q = torch.tensor([20.0, 40.0, 70.0, 95.0])
    out = jpeg(x, q)
    assert out.shape == x.shape
    errs = (out - x).abs().mean((1, 2, 3))
    assert bool((errs[:-1] > errs[1:]).all()), errs  # lower quality, larger error
    for i in range(4):  # an image's result does not depend on the rest of its batch
        assert torch.equal(jpeg(x[i:i + 1], q[i:i + 1]), out[i:i + 1])
    assert jpeg(x[:0], q[:0]).shape == (0, 3, 50, 50)


def test_jpeg_tables_follow_libjpeg_scaling():
    qy, qc = jpeg_tables(torch.tensor([50.0, 100.0, 1.0, 75.0]))
    assert qy[0, 0, 0] == 16 and qc[0, 0, 0] == 17  # quality 50: the baseline tables
    assert torch.equal(qy[1], torch.ones(8, 8)) and torch.equal(qc[1], torch.ones(8, 8))  # 100: all ones
    assert float(qy[2].max()) == 255  # quality 1: clipped to 8 bits
    assert qy[3, 0, 0] == 8  # 75: scale 50%, (16 * 50 + 50) // 100


def test_colour_jitter_is_the_step_by_step_definition():
    """The jitter is applied as one 3 x 3 map per image; it equals brightness, contrast about the mean,
    saturation about the luma, hue (after a clip) and the gray mix applied one after another."""
    B = 12
    g = torch.Generator().manual_seed(0)
    img = torch.rand(B, 3, 24, 24, generator=g)
    p = {"blur": torch.zeros(B), "lowres": torch.ones(B), "jpeg": torch.zeros(B),
         "brightness": torch.randn(B, generator=g) * 0.08, "contrast": 1 + torch.randn(B, generator=g) * 0.12,
         "saturation": 1 + torch.randn(B, generator=g) * 0.15,
         "hue": torch.where(torch.arange(B) % 2 == 0, torch.randn(B, generator=g) * 0.05, torch.zeros(B)),
         "gray": (torch.arange(B) % 3 == 0).float(), "noise": torch.rand(B, generator=g) * 0.02}
    noise = torch.randn(B, 3, 24, 24, generator=g)
    w = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    col = lambda k: p[k][:, None, None, None]  # noqa: E731
    ref = img + col("brightness")
    mean = ref.mean((1, 2, 3), keepdim=True)
    ref = (ref - mean) * col("contrast") + mean
    luma = (ref * w).sum(1, keepdim=True)
    ref = luma + (ref - luma) * col("saturation")
    on = p["hue"] != 0
    ref[on] = torch.einsum("bij,bjhw->bihw", hue_matrix(p["hue"][on]), ref[on].clamp(0, 1))
    luma = (ref * w).sum(1, keepdim=True)
    ref = ref * (1 - col("gray")) + luma * col("gray")
    ref = (ref + noise * col("noise")).clamp(0, 1)
    assert torch.allclose(apply_degradations(img, p, noise), ref, atol=2e-6)
