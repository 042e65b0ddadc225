"""python -m training.evaluate: run dirs of ours and arcface_torch checkpoints, LFW pairs / pair lists /
.bin sets in one run, the field's table, and errors that name the bad file."""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.training.test_training_utils import make_fake_lfw


# ----------------------------------------------------------------------------------------------
# arcface_torch's iResNet, written out independently of training/backbones.py (its module tree and
# names, as in insightface/recognition/arcface_torch/backbones/iresnet.py)
# ----------------------------------------------------------------------------------------------


class _RefBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class _RefIResNet(nn.Module):
    fc_scale = 7 * 7

    def __init__(self, layers, num_features=512, cells=7 * 7):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0], 2)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * cells, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def _make_layer(self, planes, blocks, stride):
        down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-05))
        layers = [_RefBlock(self.inplanes, planes, stride, down)]
        self.inplanes = planes
        layers += [_RefBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _arcface_r18_pth(path: Path, embedding: int = 64, input_size: int = 32, prefix: str = "module.") -> _RefIResNet:
    torch.manual_seed(0)
    ref = _RefIResNet([2, 2, 2, 2], embedding, cells=(input_size // 16) ** 2)
    with torch.no_grad():  # non-trivial BN statistics, so a wrong mapping shows
        for m in ref.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save({prefix + k: v for k, v in ref.state_dict().items()}, path)
    return ref.eval()


def test_arcface_torch_state_dict_loads_and_embeds_like_the_reference(tmp_path):
    from training.evaluate import load_model

    pth = tmp_path / "backbone.pth"
    ref = _arcface_r18_pth(pth, embedding=64, input_size=32)
    lm = load_model(pth, network="r18")
    assert lm.source == "arcface_torch" and lm.embedding_size == 64 and lm.input_size == (32, 32)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(lm.model(x), ref(x), atol=1e-5)
    # arcface_torch's training checkpoint wraps the backbone under state_dict_backbone
    ck = tmp_path / "checkpoint_gpu_0.pt"
    torch.save({"state_dict_backbone": ref.state_dict(), "epoch": 3}, ck)
    with torch.no_grad():
        assert torch.allclose(load_model(ck, network="r18").model(x), ref(x), atol=1e-5)


def test_arcface_torch_layout_errors_name_the_file(tmp_path):
    from training.evaluate import EvaluateInputError, load_model

    pth = tmp_path / "backbone.pth"
    _arcface_r18_pth(pth, embedding=32, input_size=32)
    with pytest.raises(EvaluateInputError, match=r"backbone\.pth: not a run dir of ours.*--network"):
        load_model(pth)
    with pytest.raises(EvaluateInputError, match=r"cannot load .*backbone\.pth into IResNet: .*missing key"):
        load_model(pth, network="r34")  # deeper net: layer keys the r18 file lacks
    with pytest.raises(EvaluateInputError, match=r"backbone\.pth: not an arcface_torch mbf state dict"):
        load_model(pth, network="mbf")
    with pytest.raises(EvaluateInputError, match=r"--network 'r7'"):
        load_model(pth, network="r7")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(EvaluateInputError, match=r"junk\.pth: cannot be read as a torch checkpoint"):
        load_model(junk, network="r50")
    with pytest.raises(EvaluateInputError, match=r"nope: no such model"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(EvaluateInputError, match=r"empty_run: a run dir needs backbone\.pt"):
        load_model(tmp_path / "empty_run")


def _run_dir(tmp_path: Path, input_size: int = 24) -> Path:
    from training.config import ModelConfig
    from training.module import build_backbone, save_backbone

    mc = ModelConfig(backbone="tiny", embedding_size=16, input_size=input_size, backbone_kwargs={"width": 8})
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_backbone(build_backbone(mc), mc, run)
    return run


def _jpeg(rng: np.random.Generator, size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_evaluate_cli_on_pairs_pair_list_and_bin_in_one_run(tmp_path, capsys):
    from common.people import write_pair_list
    from training.evaluate import main
    from training.verification import verify_lfw

    run = _run_dir(tmp_path)
    lfw = make_fake_lfw(tmp_path / "lfw", n_folds=3, people_per_fold=6, pairs_per_fold=4, size=24)
    # a pair list over the same images, 2 folds
    plist = lfw / "extra_pairs.txt"
    write_pair_list(plist, [("F1_Person_00", 1, "F1_Person_00", 2, True, 1), ("F1_Person_00", 1, "F1_Person_03", 1, False, 1),
                            ("F2_Person_01", 1, "F2_Person_01", 3, True, 2), ("F2_Person_02", 1, "F2_Person_04", 1, False, 2),
                            ("F2_Person_00", 2, "F2_Person_05", 1, False, 2)], comment="test list")
    rng = np.random.default_rng(0)
    binp = tmp_path / "toy.bin"
    binp.write_bytes(pickle.dumps(([_jpeg(rng) for _ in range(40)], [i % 2 == 0 for i in range(20)]), protocol=2))
    out = tmp_path / "out"
    rc = main([str(run), "--pairs", str(lfw), f"f23={lfw}@2,3", f"list={plist}", "--bin", str(binp), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert list(res) == ["lfw", "f23", "list", "toy"]
    assert res["lfw"]["num_pairs"] == 24 and res["lfw"]["num_folds"] == 3
    assert res["f23"]["num_pairs"] == 16 and res["f23"]["num_folds"] == 2
    assert (res["list"]["num_genuine"], res["list"]["num_impostors"], res["list"]["num_folds"]) == (2, 3, 2)
    assert res["toy"]["num_pairs"] == 20 and res["toy"]["num_folds"] == 10
    for name in ("lfw", "f23", "list", "toy"):
        assert (out / f"{name}_roc.png").is_file() and (out / f"{name}_hist.png").is_file()
        r = res[name]
        assert set(r["tar_at_far"]) == {"0.0001", "0.001", "0.01", "0.1"}
        assert r["tar_at_far"]["0.0001"] is None  # fewer than 10,000 impostors: not measurable
    assert (out / "roc.png").is_file()
    md = (out / "results.md").read_text()
    assert "| lfw | 24 (12 / 12) | 3 |" in md and "TAR@FAR=1e-04" in md and "| toy | 20 (10 / 10) | 10 |" in md
    assert "| f23 |" in printed
    # the same figures as the library function on the same set
    from training.module import load_backbone

    lib = verify_lfw(load_backbone(run), lfw, batch_size=128)
    assert res["lfw"]["accuracy"] == pytest.approx(lib["accuracy"]) and res["lfw"]["eer"] == pytest.approx(lib["eer"])
    lib23 = verify_lfw(load_backbone(run), lfw, folds=[2, 3])
    assert res["f23"]["auc"] == pytest.approx(lib23["auc"])


def test_evaluate_cli_errors_name_the_bad_file(tmp_path, capsys):
    from training.evaluate import main

    run = _run_dir(tmp_path)
    lfw = make_fake_lfw(tmp_path / "lfw", n_folds=2, people_per_fold=4, pairs_per_fold=2, size=24)
    elsewhere = tmp_path / "lists" / "ext.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text((lfw / "pairs.txt").read_text())
    assert main([str(run), "--pairs", str(elsewhere), "--out", str(tmp_path / "o")]) == 2
    assert "no images/ folder for ext.txt" in capsys.readouterr().err
    assert main([str(run), "--pairs", str(elsewhere), "--image-root", str(lfw), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "results.json").read_text())["ext"]["num_pairs"] == 8
    assert main([str(run), "--pairs", str(tmp_path / "missing")]) == 2
    assert "missing: no such pairs folder or file" in capsys.readouterr().err
    bad = lfw / "bad_pairs.txt"
    bad.write_text("2\t1\nF1_Person_00\t1\tx\n")
    assert main([str(run), "--pairs", str(bad)]) == 2
    assert "bad_pairs.txt" in capsys.readouterr().err
    binp = tmp_path / "broken.bin"
    binp.write_bytes(pickle.dumps(([b"x"] * 3, [True, False]), protocol=2))
    assert main([str(run), "--bin", str(binp)]) == 2
    assert "broken.bin" in capsys.readouterr().err
    assert main([str(run), "--pairs", f"{lfw}@1,9", "--out", str(tmp_path / "o")]) == 2
    assert "folds [1, 9]" in capsys.readouterr().err
    (lfw / "images" / "F1_Person_00" / "F1_Person_00_0002.jpg").unlink()
    assert main([str(run), "--pairs", str(lfw), "--out", str(tmp_path / "o")]) == 2
    assert "F1_Person_00_0002.jpg" in capsys.readouterr().err


def test_pair_list_roundtrip_and_errors(tmp_path):
    from common.people import read_pair_list, read_pairs, write_pair_list

    lfw = make_fake_lfw(tmp_path / "lfw", n_folds=2, people_per_fold=4, pairs_per_fold=2, size=16)
    p = write_pair_list(lfw / "l.txt", [("F1_Person_00", 1, "F1_Person_00", 3, True, 1),
                                        ("F1_Person_00", 2, "F2_Person_01", 1, False, 2)])
    got = read_pairs(p)
    assert [(Path(a).name, Path(b).name, s, f) for a, b, s, f in got] == [
        ("F1_Person_00_0001.jpg", "F1_Person_00_0003.jpg", True, 0),
        ("F1_Person_00_0002.jpg", "F2_Person_01_0001.jpg", False, 1)]
    assert len(read_pairs(lfw / "pairs.txt")) == 8  # LFW format still read by the same entry point
    bad = lfw / "b.txt"
    bad.write_text("#synthface-pairs v1\nA\t1\tB\t2\t1\t1\n")
    with pytest.raises(ValueError, match=r"b\.txt:2: .*same=1 needs one name"):
        read_pair_list(bad, check_files=False)
    bad.write_text("#synthface-pairs v1\nA\t1\tA\t2\t1\n")
    with pytest.raises(ValueError, match=r"b\.txt:2: .*5 fields"):
        read_pair_list(bad, check_files=False)
    bad.write_text("#synthface-pairs v1\nA\t1\tA\t9\t1\t1\n")
    with pytest.raises(FileNotFoundError, match=r"A_0009\.jpg"):
        read_pair_list(bad, image_root=lfw)
