"""Contrastive (USynthFace / MoCo v2) phases: InfoNCE by hand, queue order, momentum formula, config
errors that name the key, and a 2-phase contrastive -> arcface curriculum that runs and resumes."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from common.config import ConfigError
from training.config import parse_config
from training.contrastive import ContrastiveConfig, MoCoState, enqueue, info_nce_logits, info_nce_loss, momentum_update

from tests.training.test_training_utils import make_image_folder, tiny_train_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def test_info_nce_matches_a_hand_computed_case():
    s = 1 / math.sqrt(2)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[s, s], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
    T = 0.5
    # sample 0: pos <q,k> = s; negatives 1, -1, 0.  sample 1: pos 1; negatives 0, 0, -1
    l0 = -math.log(math.exp(s / T) / (math.exp(s / T) + math.exp(1 / T) + math.exp(-1 / T) + math.exp(0)))
    l1 = -math.log(math.exp(1 / T) / (math.exp(1 / T) + 1 + 1 + math.exp(-1 / T)))
    logits = info_nce_logits(q, k, queue, T)
    assert torch.allclose(logits, torch.tensor([[s / T, 2.0, -2.0, 0.0], [2.0, 0.0, 0.0, -2.0]]))
    assert info_nce_loss(q, k, queue, T).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    # a larger temperature flattens the softmax: the easy sample's loss rises
    assert info_nce_loss(q[1:], k[1:], queue, 2.0) > info_nce_loss(q[1:], k[1:], queue, 0.5)
    with pytest.raises(ValueError, match="expected q, k"):
        info_nce_logits(q, k[:, :1], queue, T)


def test_queue_is_a_fifo_ring_buffer():
    queue = torch.zeros(5, 1)
    ptr = torch.zeros((), dtype=torch.long)
    enqueue(queue, ptr, torch.tensor([[1.0], [2.0]]))
    assert queue.flatten().tolist() == [1, 2, 0, 0, 0] and int(ptr) == 2
    enqueue(queue, ptr, torch.tensor([[3.0], [4.0]]))
    assert queue.flatten().tolist() == [1, 2, 3, 4, 0] and int(ptr) == 4
    enqueue(queue, ptr, torch.tensor([[5.0], [6.0]]))  # wraps: 6 overwrites the oldest (1)
    assert queue.flatten().tolist() == [6, 2, 3, 4, 5] and int(ptr) == 1
    enqueue(queue, ptr, torch.arange(7, 14, dtype=torch.float32)[:, None])  # 7 keys > K=5: the last 5 stay
    assert int(ptr) == (1 + 7) % 5 == 3
    assert sorted(queue.flatten().tolist()) == [9, 10, 11, 12, 13] and queue[2].item() == 13  # newest just before ptr


def test_momentum_update_formula():
    torch.manual_seed(0)
    src, tgt = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    src(torch.randn(8, 3))  # move the source's running stats
    before = [p.detach().clone() for p in tgt.parameters()]
    m = 0.9
    momentum_update(tgt, src, m)
    for b, pt, ps in zip(before, tgt.parameters(), src.parameters()):
        assert torch.allclose(pt, m * b + (1 - m) * ps)
    # batch-norm statistics are averaged like the weights; integer counters copied
    assert torch.allclose(tgt[1].running_mean, (1 - m) * src[1].running_mean) and src[1].running_mean.abs().sum() > 0
    assert torch.allclose(tgt[1].running_var, m * 1.0 + (1 - m) * src[1].running_var)
    assert int(tgt[1].num_batches_tracked) == int(src[1].num_batches_tracked) == 1
    momentum_update(tgt, src, 0.0)  # m = 0: a copy
    assert all(torch.equal(a, b) for a, b in zip(tgt.parameters(), src.parameters()))


def test_moco_state_keys_follow_the_backbone_and_queue_fills():
    torch.manual_seed(0)
    bb = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    st = MoCoState(bb, 4, ContrastiveConfig(queue_size=6, proj_dim=3, proj_hidden=0, momentum=0.5, augment="none"), seed=1)
    assert st.queue.shape == (6, 3) and torch.allclose(st.queue.norm(dim=1), torch.ones(6))
    assert not any(p.requires_grad for p in st.key_backbone.parameters()) and all(p.requires_grad for p in st.proj_q.parameters())
    with torch.no_grad():
        bb[1].weight.add_(1.0)
    w0 = st.key_backbone[1].weight.clone()
    x = torch.rand(4, 3, 2, 2)
    k = st.keys(x, bb)
    assert torch.allclose(st.key_backbone[1].weight, 0.5 * w0 + 0.5 * bb[1].weight)
    q = st.query(bb(x))
    loss, acc = st.loss(q, k)
    loss.backward()
    assert st.proj_q[0].weight.grad is not None and st.proj_k[0].weight.grad is None
    st.push(k)
    assert int(st.queue_ptr) == 4 and torch.allclose(st.queue[:4], k)
    # same seed, same queue and head
    st2 = MoCoState(bb, 4, ContrastiveConfig(queue_size=6, proj_dim=3, proj_hidden=0, augment="none"), seed=1)
    assert torch.equal(st2.proj_q[0].weight, MoCoState(bb, 4, st2.cfg, seed=1).proj_q[0].weight)


@pytest.mark.parametrize("phase, msg", [
    ({"loss": "contrastiv"}, r"^phases\[0\]\.loss: must be one of margin, contrastive.*did you mean 'contrastive'"),
    ({"loss": "contrastive", "contrastive": {"temperature": 0}}, r"^phases\[0\]\.contrastive\.temperature: must be > 0"),
    ({"loss": "contrastive", "contrastive": {"momentum": 1.0}}, r"^phases\[0\]\.contrastive\.momentum: must be in \[0, 1\)"),
    ({"loss": "contrastive", "contrastive": {"queue_size": 0}}, r"^phases\[0\]\.contrastive\.queue_size: must be >= 1"),
    ({"loss": "contrastive", "contrastive": {"proj_dim": 0}}, r"^phases\[0\]\.contrastive\.proj_dim: must be >= 1"),
    ({"loss": "contrastive", "contrastive": {"augment": "strong"}},
     r"^phases\[0\]\.contrastive\.augment\.preset: unknown augmentation preset 'strong'"),
    ({"loss": "contrastive", "contrastive": {"augment": {"blurr": 0.5}}}, r"^phases\[0\]\.contrastive\.augment\.blurr: unknown"),
    ({"loss": "contrastive", "contrastive": {"queue": 10}}, r"^phases\[0\]\.contrastive\.queue: unknown key"),
])
def test_contrastive_config_errors_name_the_key(tmp_path, phase, msg):
    raw = tiny_train_dict(tmp_path)
    raw["phases"][0].update(phase)
    with pytest.raises(ConfigError, match=msg):
        parse_config(raw, resolve=False)


def _two_phase(tmp_path, steps0: int = 12):
    synth = make_image_folder(tmp_path / "synth", n_ids=8, per_id=3, size=32, prefix="syn")
    real = make_image_folder(tmp_path / "real", n_ids=5, per_id=3, size=32, seed=1)
    phases = [
        {"name": "ssl", "steps": steps0, "weights": {"synth": 1.0}, "loss": "contrastive",
         "contrastive": {"queue_size": 40, "proj_dim": 16, "proj_hidden": 32, "momentum": 0.99, "temperature": 0.2},
         "lr": {"base": 0.05, "warmup_steps": 2}},
        {"name": "ft", "steps": 6, "weights": {"real": 1.0}, "reinit_head": True, "lr": 0.02},
    ]
    raw = tiny_train_dict(real, out=tmp_path / "run", phases=phases, batch_size=16,
                          extra_sources={"synth": {"type": "folder", "path": str(synth)}})
    raw["trainer"].update(ckpt_every_steps=4, log_every=1)
    return parse_config(raw, resolve=False)


def test_two_phase_contrastive_then_arcface_runs_and_resumes(tmp_path, monkeypatch):
    from training.train import run_training

    cfg = _two_phase(tmp_path)
    out = tmp_path / "run"
    # first attempt: dies at the 7th contrastive step (after the step-4 checkpoint)
    real_push = MoCoState.push
    seen: list[int] = []

    def dying_push(self, k):
        seen.append(int(self.queue_ptr))
        if len(seen) == 7:
            raise RuntimeError("simulated crash")
        real_push(self, k)

    monkeypatch.setattr(MoCoState, "push", dying_push)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, out, printer=lambda s: None)
    ck = torch.load(out / "phases" / "00-ssl" / "last.ckpt", weights_only=False)
    assert ck["global_step"] == 4
    sd = ck["state_dict"]
    assert sd["contrastive.queue"].shape == (40, 16) and int(sd["contrastive.queue_ptr"]) == (4 * 16) % 40
    assert any(k.startswith("contrastive.key_backbone.") for k in sd) and "contrastive.proj_k.0.weight" in sd

    # second attempt: resumes at step 4 with the saved queue (pointer 24), then the supervised phase
    seen.clear()
    resumed_queue: list[torch.Tensor] = []

    def watching_push(self, k):
        if not seen:
            resumed_queue.append(self.queue.detach().clone())
        seen.append(int(self.queue_ptr))
        real_push(self, k)

    monkeypatch.setattr(MoCoState, "push", watching_push)
    m = run_training(cfg, out, printer=lambda s: None)
    assert seen[:3] == [24, 0, 16] and len(seen) == 12 - 4
    assert torch.equal(resumed_queue[0], sd["contrastive.queue"])
    assert m["complete"] and m["global_step"] == 18
    ssl, ft = m["phases"]
    assert ssl["attempts"][-1]["resumed"] and ssl["train"]["loss_first"] > 0
    assert ft["num_classes"] == 5 and ft["reinit_head"]
    # the momentum encoder and queue are phase state: not in the phase's final weights
    fin = torch.load(out / "phases" / "00-ssl" / "final.pt", weights_only=True)
    assert not any(k.startswith("contrastive.") for k in fin["state_dict"])
    ck1 = torch.load(out / "phases" / "01-ft" / "last.ckpt", weights_only=False)
    assert not any(k.startswith("contrastive.") for k in ck1["state_dict"])
    # the fine-tune trained the backbone further (the same backbone keys, new values)
    bb_keys = [k for k in fin["state_dict"] if k.startswith("backbone.")]
    assert bb_keys and not torch.equal(fin["state_dict"][bb_keys[0]], ck1["state_dict"][bb_keys[0]])


def test_benchmark_variant_pretrain_keys_merge_into_the_template():
    from common.config import from_dict
    from training.benchmark import BenchmarkConfig, pretrain_template

    raw = {"lfw": {"root": "/x"}, "synthetic": {"type": "rendered", "path": "/s"}, "sweep": [10],
           "pretrain": {"steps": 50, "lr": {"base": 0.1, "warmup_steps": 5}}, "finetune": {"steps": 5},
           "authentic": {"steps": 5},
           "variants": {"ssl": {"sources": {"synthetic": {"type": "rendered", "path": "/s"}},
                                "pretrain": {"loss": "contrastive", "contrastive": {"queue_size": 64},
                                             "lr": {"base": 0.05}}}}}
    bc = from_dict(BenchmarkConfig, raw, "")
    main, ssl = pretrain_template(bc, ""), pretrain_template(bc, "ssl")
    assert main.loss == "margin" and ssl.loss == "contrastive" and ssl.contrastive.queue_size == 64
    assert ssl.steps == 50 and ssl.lr.base == 0.05 and ssl.lr.warmup_steps == 5  # merged key by key
    raw["variants"]["ssl"]["pretrain"]["contrastive"]["temperature"] = -1
    with pytest.raises(ConfigError, match=r"^variants\.ssl\.pretrain\.contrastive\.temperature: must be > 0"):
        from_dict(BenchmarkConfig, raw, "")
