"""kornia batch augmentation: every op keeps shape/range, configs validate, per-source application."""
from __future__ import annotations

import pytest
import torch

from training.augment import AUGMENT_DEFAULTS, build_augment, validate_augment_config



pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("op", list(AUGMENT_DEFAULTS))
@pytest.mark.parametrize("size", [32, 56])
def test_each_op_keeps_shape_and_range(op, size):
    torch.manual_seed(0)
    aug = build_augment({op: 1.0})
    x = torch.rand(6, 3, size, size)
    y = aug(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(y).all()
    if op != "grayscale":  # grayscale of random colour is a change too, but all ops at p=1 must do something
        assert not torch.equal(y, x), op
    assert aug(torch.rand(0, 3, size, size)).shape == (0, 3, size, size)


def test_identity_and_disabled():
    x = torch.rand(4, 3, 16, 16)
    for cfg in (None, {}, {"flip": 0.0}, {"jpeg": False, "blur": None}, {"preset": "none"}):
        aug = build_augment(cfg)
        assert not aug.enabled and torch.equal(aug(x), x)


def test_flip_is_exact_and_grayscale_is_gray():
    x = torch.rand(5, 3, 8, 8)
    assert torch.equal(build_augment({"flip": 1.0})(x), x.flip(-1))
    g = build_augment({"grayscale": 1.0})(x)
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])


def test_lowres_loses_detail():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    y = build_augment({"lowres": {"p": 1.0, "scale": [0.25, 0.25]}})(x)
    hf = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert hf(y) < 0.5 * hf(x)


def test_preset_and_overrides():
    aug = build_augment({"preset": "synthetic", "jpeg": {"p": 0.5, "quality": [50, 60]}, "noise": False})
    assert "noise" not in aug.config and aug.config["jpeg"]["quality"] == [50, 60]
    assert list(aug.ops) == [k for k in AUGMENT_DEFAULTS if k in aug.config]  # fixed order


@pytest.mark.parametrize("cfg, match", [
    ({"flp": 0.5}, r"^flp: unknown augmentation \(did you mean 'flip'\?\)"),
    ({"crop": {"scale": [0.5, 1.2]}}, r"^crop\.scale: must be within"),
    ({"jpeg": {"quality": [90, 30]}}, r"^jpeg\.quality: min > max"),
    ({"blur": {"kernel_size": 4}}, r"^blur\.kernel_size: must be an odd integer"),
    ({"color": "yes"}, r"^color: expected a probability"),
    ({"preset": "heavy"}, r"^preset: unknown augmentation preset"),
])
def test_invalid_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        validate_augment_config(cfg)


def test_augmentation_is_applied_per_source(tmp_path):
    """The module augments each source's rows with that source's pipeline only."""
    from training.config import parse_config
    from training.curriculum import Curriculum
    from training.module import FaceRecognitionModule

    raw = {
        "model": {"backbone": "tiny", "embedding_size": 8, "input_size": 16},
        "sources": {"flipped": {"type": "folder", "path": "/x", "augment": {"flip": 1.0}},
                    "plain": {"type": "folder", "path": "/y"},
                    "gray": {"type": "folder", "path": "/z", "augment": {"grayscale": 1.0}}},
        "phases": [{"name": "p", "steps": 1, "weights": {"flipped": 1, "plain": 1, "gray": 1}}],
        "trainer": {"batch_size": 9},
    }
    cfg = parse_config(raw, resolve=False)
    cur = Curriculum(cfg, {"flipped": 2, "plain": 2, "gray": 2}, {"flipped": 2, "plain": 2, "gray": 2})
    m = FaceRecognitionModule(cfg, cur)
    img = torch.randint(0, 256, (9, 3, 16, 16), dtype=torch.uint8)
    counts = [3, 4, 2]
    src = torch.tensor([0] * 3 + [1] * 4 + [2] * 2)
    ref = img.float() / 255 * 2 - 1
    for batch in ({"image": img.clone(), "source": src, "counts": counts},
                  {"image": img.clone(), "source": src}):  # contiguous blocks, or masks without counts
        out = m.prepare_batch(batch, train=True)["image"]
        assert torch.allclose(out[:3], ref[:3].flip(-1), atol=1e-6)
        assert torch.allclose(out[3:7], ref[3:7], atol=1e-6)
        g = out[7:]
        assert torch.allclose(g[:, 0], g[:, 1], atol=1e-5) and not torch.allclose(g, ref[7:])
    ev = m.prepare_batch({"image": img.clone(), "source": src, "counts": counts}, train=False)["image"]
    assert torch.allclose(ev, ref, atol=1e-6)  # no augmentation outside training
