"""Backbones (registry, arcface_torch compatibility) and margin heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.backbones import (
    LoadReport,
    create_backbone,
    feature_map_size,
    list_backbones,
    load_arcface_torch,
    register_backbone,
)
from training.heads import AdaFace, ArcFace, CosFace, create_head, list_heads

# cheap enough to really run on CPU; the rest are checked on the meta device (shapes only)
LIGHT = {"tiny", "mobilefacenet", "mbf", "iresnet18"}


# ----------------------------------------------------------------------------------------------
# backbones
# ----------------------------------------------------------------------------------------------


def test_registry_contents():
    names = list_backbones()
    for n in ("iresnet18", "iresnet50", "iresnet100", "mobilefacenet", "tiny"):
        assert n in names
    with pytest.raises(KeyError, match="available"):
        create_backbone("nope")


@pytest.mark.parametrize("name", list_backbones())
def test_forward_shape_112(name):
    x = torch.randn(2, 3, 112, 112)
    if name in LIGHT:
        torch.manual_seed(0)
        model = create_backbone(name, embedding_size=128).eval()
        with torch.no_grad():
            y = model(x)
        assert torch.isfinite(y).all()
    else:
        with torch.device("meta"):
            model = create_backbone(name, embedding_size=128).eval()
            y = model(x.to("meta"))
    assert tuple(y.shape) == (2, 128)
    assert model.embedding_size == 128
    assert tuple(model.input_size) == (112, 112)


def test_other_input_sizes():
    assert feature_map_size(112) == (7, 7)
    assert feature_map_size(64) == (4, 4)
    assert feature_map_size(56) == (4, 4)
    tiny = create_backbone("tiny", embedding_size=64).eval()
    for s in (56, 64, 112):
        with torch.no_grad():
            assert tiny(torch.randn(2, 3, s, s)).shape == (2, 64)
    mfn = create_backbone("mobilefacenet", embedding_size=64, input_size=64).eval()
    with torch.no_grad():
        assert mfn(torch.randn(2, 3, 64, 64)).shape == (2, 64)
    with torch.device("meta"):
        r50 = create_backbone("iresnet50", input_size=(128, 96))
        assert r50.fc.in_features == 512 * 8 * 6
        assert r50(torch.empty(2, 3, 128, 96)).shape == (2, 512)
        with pytest.raises(ValueError, match="input_size"):
            r50(torch.empty(2, 3, 112, 112))


def test_register_backbone_and_aliases():
    @register_backbone("unit_test_net_xyz")
    def _net(embedding_size=512, **kw):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(embedding_size))

    assert "unit_test_net_xyz" in list_backbones()
    assert create_backbone("unit_test_net_xyz", 7)(torch.randn(2, 3, 4, 4)).shape == (2, 7)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("unit_test_net_xyz")(_net)
    with torch.device("meta"):
        assert type(create_backbone("r50")).__name__ == "IResNet"


def _expected_iresnet_keys(layers):
    """arcface_torch iresnet.py state_dict keys, written out from its layout."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight", *(f"bn1.{b}" for b in bn), "prelu.weight"]
    for s, n in enumerate(layers, start=1):
        for i in range(n):
            p = f"layer{s}.{i}."
            keys += [*(p + f"bn1.{b}" for b in bn), p + "conv1.weight", *(p + f"bn2.{b}" for b in bn),
                     p + "prelu.weight", p + "conv2.weight", *(p + f"bn3.{b}" for b in bn)]
            if i == 0:
                keys += [p + "downsample.0.weight", *(p + f"downsample.1.{b}" for b in bn)]
    keys += [*(f"bn2.{b}" for b in bn), "fc.weight", "fc.bias", *(f"features.{b}" for b in bn)]
    return keys


def test_iresnet50_matches_arcface_torch_layout():
    with torch.device("meta"):
        model = create_backbone("iresnet50", embedding_size=512)
    sd = model.state_dict()
    assert list(sd) == _expected_iresnet_keys([3, 4, 14, 3])
    shapes = {
        "conv1.weight": (64, 3, 3, 3),
        "prelu.weight": (64,),
        "layer1.0.bn1.weight": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer3.13.prelu.weight": (256,),
        "layer4.2.bn3.running_var": (512,),
        "bn2.weight": (512,),
        "fc.weight": (512, 512 * 7 * 7),
        "fc.bias": (512,),
        "features.running_mean": (512,),
    }
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    assert "layer3.14.bn1.weight" not in sd
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 43.6e6) < 0.1e6, n_params
    assert not model.features.weight.requires_grad  # frozen as in arcface_torch
    with torch.device("meta"):
        r100 = create_backbone("iresnet100")
    assert list(r100.state_dict()) == _expected_iresnet_keys([3, 13, 30, 3])


def test_mobilefacenet_size():
    m = create_backbone("mobilefacenet", embedding_size=128)
    n = sum(p.numel() for p in m.parameters())
    assert 0.9e6 < n < 1.1e6, n  # paper: 0.99M


def test_load_arcface_torch_roundtrip(tmp_path):
    torch.manual_seed(0)
    src = create_backbone("iresnet18", embedding_size=64, input_size=32)
    for p in src.parameters():  # make every tensor distinguishable from a fresh init
        p.data.uniform_(-1, 1)
    src.bn2.running_mean.uniform_()
    path = tmp_path / "backbone.pth"
    torch.save(src.state_dict(), path)
    dst = create_backbone("iresnet18", embedding_size=64, input_size=32)
    report = load_arcface_torch(dst, path)
    assert isinstance(report, LoadReport) and report.ok
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    src.eval(), dst.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(src(x), dst(x))

    # DDP-prefixed checkpoint through create_backbone(checkpoint=...)
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "ddp.pth")
    m2 = create_backbone("r18", embedding_size=64, input_size=32, checkpoint=tmp_path / "ddp.pth")
    assert torch.equal(m2.fc.weight, src.fc.weight)

    # missing / unexpected / mismatched keys are reported clearly
    bad = dict(src.state_dict())
    del bad["layer1.0.conv1.weight"]
    bad["extra.weight"] = torch.zeros(1)
    bad["fc.weight"] = torch.zeros(64, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError) as ei:
        load_arcface_torch(create_backbone("iresnet18", embedding_size=64, input_size=32), tmp_path / "bad.pth")
    msg = str(ei.value)
    assert "layer1.0.conv1.weight" in msg and "extra.weight" in msg and "fc.weight" in msg
    m3 = create_backbone("iresnet18", embedding_size=64, input_size=32)
    rep = load_arcface_torch(m3, tmp_path / "bad.pth", strict=False)
    assert rep.missing == ["layer1.0.conv1.weight"] and rep.unexpected == ["extra.weight"]
    assert rep.mismatched == {"fc.weight": ((64, 3), (64, 512 * 2 * 2))}
    assert torch.equal(m3.layer2[0].conv1.weight, src.layer2[0].conv1.weight)  # matching keys still loaded


@pytest.mark.parametrize("name,size", [("tiny", 64), ("mobilefacenet", 64), ("iresnet18", 32)])
def test_channels_last_and_bf16_autocast(name, size):
    torch.manual_seed(0)
    model = create_backbone(name, embedding_size=32, input_size=size).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        y = model_cl(x.contiguous(memory_format=torch.channels_last))
        assert torch.allclose(ref, y, atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = model_cl(x.contiguous(memory_format=torch.channels_last))
    assert yb.shape == (2, 32) and torch.isfinite(yb.float()).all()
    # training step under autocast
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, size, size).contiguous(memory_format=torch.channels_last))
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ----------------------------------------------------------------------------------------------
# heads
# ----------------------------------------------------------------------------------------------


def _emb_at_angle(w: torch.Tensor, theta: float) -> torch.Tensor:
    """A unit vector at angle ``theta`` from ``w`` (in the plane of w and a fixed orthogonal)."""
    u = F.normalize(w, dim=0)
    r = torch.zeros_like(u)
    r[0] = 1.0
    v = F.normalize(r - (r @ u) * u, dim=0)
    return math.cos(theta) * u + math.sin(theta) * v


@pytest.mark.parametrize("name", ["arcface", "cosface", "adaface", "normface"])
def test_head_shapes_and_margin(name):
    torch.manual_seed(0)
    assert name in list_heads()
    head = create_head(name, 16, 10)
    emb = torch.randn(6, 16) * 5
    labels = torch.tensor([0, 3, 9, 9, 2, -1])
    logits = head(emb, labels)
    assert logits.shape == (6, 10) and logits.dtype == torch.float32
    plain = head.s * head.cosine(emb)
    assert torch.allclose(head(emb), plain)
    rows = torch.arange(5)
    tgt, ref = logits[rows, labels[:5]], plain[rows, labels[:5]]
    if name == "normface":
        assert torch.allclose(tgt, ref)
    else:
        assert (tgt < ref - 1e-3).all()  # the margin lowers the target logit
    mask = torch.ones_like(logits, dtype=torch.bool)
    mask[rows, labels[:5]] = False
    if name != "adaface":  # adaface clamps all cosines to [-1 + 1e-3, 1 - 1e-3]
        assert torch.allclose(logits[mask], plain[mask], atol=1e-5)
        assert torch.allclose(logits[5], plain[5])  # label -1: no margin


def test_arcface_and_cosface_formulas():
    torch.manual_seed(0)
    arc = ArcFace(8, 3, m=0.5, s=64)
    cos_head = CosFace(8, 3, m=0.35, s=30)
    w = arc.weight.detach()[1]
    for theta in (0.3, 1.0, 2.0):
        e = _emb_at_angle(w, theta)[None] * 3
        assert arc(e, torch.tensor([1]))[0, 1].item() == pytest.approx(64 * math.cos(theta + 0.5), abs=1e-3)
    cos_head.weight.data.copy_(arc.weight.data)
    e = _emb_at_angle(w, 1.0)[None]
    assert cos_head(e, torch.tensor([1]))[0, 1].item() == pytest.approx(30 * (math.cos(1.0) - 0.35), abs=1e-3)
    # past pi - m: insightface fallback cos(theta) - sin(pi - m) * m
    theta = 3.0
    e = _emb_at_angle(w, theta)[None]
    expected = 64 * (math.cos(theta) - math.sin(math.pi - 0.5) * 0.5)
    assert arc(e, torch.tensor([1]))[0, 1].item() == pytest.approx(expected, abs=1e-3)


def test_arcface_stable_near_pi():
    torch.manual_seed(0)
    head = ArcFace(8, 4)
    w = head.weight.detach()[2]
    for theta in (math.pi, math.pi - 1e-6, math.pi - 1e-3, 0.0, 1e-6):
        e = (_emb_at_angle(w, theta) * 2)[None].clone().requires_grad_(True)
        logits = head(e, torch.tensor([2]))
        loss = F.cross_entropy(logits, torch.tensor([2]))
        loss.backward()
        assert torch.isfinite(logits).all() and torch.isfinite(loss)
        assert torch.isfinite(e.grad).all() and torch.isfinite(head.weight.grad).all()
        head.weight.grad = None
    # monotone in theta across the fallback boundary
    thetas = torch.linspace(0.0, math.pi, 200)
    vals = torch.stack([head(_emb_at_angle(w, float(t))[None], torch.tensor([2]))[0, 2] for t in thetas])
    assert (vals[1:] <= vals[:-1] + 1e-4).all()


def test_adaface_margin_depends_on_norm():
    torch.manual_seed(0)
    head = AdaFace(8, 4, m=0.4, h=0.333, s=64, t_alpha=0.01)
    assert float(head.batch_mean) == 20 and float(head.batch_std) == 100
    head.train()
    emb = torch.randn(32, 8) * 10
    labels = torch.randint(0, 4, (32,))
    head(emb, labels)
    norms = emb.norm(dim=1)
    assert float(head.batch_mean) == pytest.approx(0.99 * 20 + 0.01 * float(norms.mean()), rel=1e-5)
    assert float(head.batch_std) == pytest.approx(0.99 * 100 + 0.01 * float(norms.std()), rel=1e-5)

    head.eval()
    head.batch_mean.fill_(10.0)
    head.batch_std.fill_(5.0)
    d = _emb_at_angle(head.weight.detach()[1], 1.0)
    e = torch.stack([d * 2.0, d * 10.0, d * 30.0])  # low, average, high quality
    before = head.batch_mean.clone()
    out = head(e, torch.tensor([1, 1, 1]))[:, 1] / 64
    assert torch.equal(head.batch_mean, before)  # eval: statistics frozen
    assert len({round(v, 4) for v in out.tolist()}) == 3  # margin depends on the norm
    z = head.margin_scaler(torch.tensor([2.0, 10.0, 30.0]))
    assert z.tolist() == pytest.approx([-0.333 * 8 / 5.001, 0.0, 1.0], abs=1e-5)  # clipped to [-1, 1]
    expected = [math.cos(1.0 - 0.4 * zi) - (0.4 + 0.4 * zi) for zi in z.tolist()]
    assert out.tolist() == pytest.approx(expected, abs=1e-4)
    assert out[1].item() == pytest.approx(math.cos(1.0) - 0.4, abs=1e-4)  # z = 0: CosFace


def test_reset_classes_and_create_head():
    head = create_head("arcface", 16, 10, m=0.3, s=32)
    assert head.m == 0.3 and head.s == 32
    old = head.weight
    head.reset_classes(25)
    assert head.weight.shape == (25, 16) and head.num_classes == 25 and head.weight is not old
    assert head(torch.randn(3, 16), torch.tensor([0, 24, 5])).shape == (3, 25)
    with pytest.raises(ValueError):
        head(torch.randn(1, 16), torch.tensor([25]))
    with pytest.raises(KeyError):
        create_head("nope", 16, 10)
    ada = create_head("adaface", 16, 10, m=0.4, h=0.333, t_alpha=0.01)
    ada.reset_classes(3)
    assert ada.weight.shape == (3, 16)


def test_heads_under_bf16_autocast():
    head = create_head("arcface", 16, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(torch.randn(4, 16).bfloat16(), torch.tensor([0, 1, 2, 3]))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_tiny_arcface_training_lowers_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1  # 4 separable "identities"
    labels = torch.arange(4).repeat(4)
    model = create_backbone("tiny", embedding_size=32, width=8)
    head = create_head("arcface", 32, 4)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        x = protos[labels] + 0.2 * torch.randn(16, 3, 32, 32, generator=g)
        loss = F.cross_entropy(head(model(x), labels), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.25 * sum(losses[:3]) / 3, losses
