"""Identities at scale (issue 16): the batched candidate stream and the blockwise exact rejection give
the bits of the one-at-a-time reference algorithms they replaced."""
from __future__ import annotations

import math

import pytest
import torch

from engine.interface import generator
from morphable.appearance import sample_appearance

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_candidates(src, seed: int, start: int, n: int):
    """The pre-issue-16 candidate stream, one candidate and one draw at a time (kept here as the oracle)."""
    from morphable.source import _GLOBAL_COMPONENTS

    shape, app, off, sem = [], [], [], []
    W = src.model.regions.get("semantic_weights")
    for c in range(start, start + n):
        g = generator(seed, "identity", c)
        z = torch.zeros(src.model.num_shape)
        z[: src.num_shape] = torch.randn(src.num_shape, generator=g) * src.cfg.identity.shape_scale
        z[_GLOBAL_COMPONENTS: src.num_shape] *= src.cfg.identity.detail_scale
        if W is not None:
            side, jit = torch.rand(1, generator=g), torch.randn(1, generator=g)
            c_ = float(src.cfg.identity.gender_contrast)
            if c_ > 0:
                w = W[: z.shape[0], 0].cpu().clone()
                w[src.num_shape:] = 0
                gen = float(torch.dot(z, w) + W[-1, 0])
                target = (0.1 if float(side) < 0.5 else 0.9) + 0.07 * float(jit)
                z = z + c_ * (target - gen) * w / w.dot(w).clamp_min(1e-12)
            z = src._shrink_proportions(z[None])[0]
            s = torch.cat([z, torch.ones(1)]) @ W.cpu()
        else:
            z = src._shrink_proportions(z[None])[0]
            s = torch.tensor([0.5, 0.6, 1 / 3, 1 / 3, 1 / 3])
        a = sample_appearance(s[None], g)[0]
        o = (torch.rand(3, generator=g) - 0.5) * 200.0
        shape.append(z), app.append(a), off.append(o), sem.append(s)
    return torch.stack(shape), torch.stack(app), torch.stack(off), torch.stack(sem)


@pytest.fixture(scope="module")
def morph():
    from morphable import MorphableSource

    return MorphableSource(preset="wild", size=112)


def test_batched_candidates_are_bit_identical_to_one_at_a_time(morph):
    for start, n in ((0, 300), (12345, 57)):
        new = morph._candidates(3, start, n)
        ref = _reference_candidates(morph, 3, start, n)
        for a, b in zip(new, ref):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert torch.equal(a, b)


def _reference_reject(candidates, n: int, min_distance: float, max_tries: int, chunk: int = 64):
    """The pre-issue-16 sequential rejection (one candidate at a time against all accepted)."""
    acc: list[int] = []
    buf = None
    c, rejected = 0, 0
    while len(acc) < n:
        e = candidates(c, chunk).double()
        if buf is None:
            buf = torch.empty(n, e.shape[1], dtype=torch.float64)
        for i in range(e.shape[0]):
            k = len(acc)
            if k >= n:
                break
            dist = float(((buf[:k] - e[i]) ** 2).sum(1).sqrt().min()) if k else math.inf
            if dist < min_distance:
                rejected += 1
                if rejected > max_tries * n:
                    raise ValueError("too many rejections")
                continue
            buf[k] = e[i]
            acc.append(c + i)
        c += e.shape[0]
    return acc, buf, rejected


def _stream(dim: int, scale: float = 1.0, dtype=torch.float64):
    def cand(start: int, count: int) -> torch.Tensor:
        return torch.stack([torch.randn(dim, generator=generator(7, "s", i), dtype=torch.float64) * scale
                            for i in range(start, start + count)]).to(dtype)
    return cand


def _brute_min(x: torch.Tensor) -> float:
    d = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    d.fill_diagonal_(math.inf)
    return float(d.min())


@pytest.mark.parametrize("bf16", [False, True], ids=["f32-screen", "bf16-screen"])
@pytest.mark.parametrize("dim,md,block,first", [(3, 0.5, 97, 13), (6, 1.2, 50, 50), (40, 8.0, 64, 16), (157, 0.0, 128, 32)])
def test_blockwise_rejection_equals_sequential_rule(dim, md, block, first, bf16, monkeypatch):
    from engine import separation
    from engine.separation import reject_close

    if bf16:  # the screen of large problems, forced on these small ones
        monkeypatch.setattr(separation, "_BF16_MIN_WORK", 0)

    n = 400
    ref_acc, ref_buf, ref_rej = _reference_reject(_stream(dim), n, md, 50)
    res = reject_close(_stream(dim), n, md, 50, block=block, first_block=first)
    assert res.index.tolist() == ref_acc
    assert res.rejected == ref_rej
    assert torch.equal(res.embedding, ref_buf)
    assert res.min_distance == pytest.approx(_brute_min(ref_buf), rel=1e-12, abs=0)
    assert res.min_distance >= md
    if md > 0.5:  # these settings do reject: the blockwise path had conflicts to settle
        assert ref_rej > 0


def test_prefix_stable_and_float32_stream():
    from engine.separation import reject_close

    a = reject_close(_stream(5, dtype=torch.float32), 300, 0.9, 50, block=70, first_block=70)
    b = reject_close(_stream(5, dtype=torch.float32), 120, 0.9, 50, block=33, first_block=8)
    assert a.embedding.dtype == torch.float32
    assert a.index[:120].tolist() == b.index.tolist()


def test_rejection_limit_names_reachable_distances():
    from engine.separation import reject_close

    with pytest.raises(ValueError, match=r"could not find 200 identities at min_distance 3.0: .* lower identity.min_distance"):
        reject_close(_stream(2), 200, 3.0, 2, block=64)


def test_exact_min_distance_and_report_on_a_sample():
    from engine.interface import REPORT_SAMPLE, separability_report
    from engine.separation import exact_min_distance

    x = _stream(8)(0, 900).float()
    assert exact_min_distance(x) == pytest.approx(_brute_min(x), rel=1e-12, abs=0)
    assert exact_min_distance(x[:1]) is None
    small = separability_report(x, "t", 0.1)
    assert "sample_size" not in small and small["n"] == 900
    big = _stream(4)(0, REPORT_SAMPLE + 300).float()
    rep = separability_report(big, "t", 0.0)
    assert rep["sample_size"] == REPORT_SAMPLE and rep["n"] == REPORT_SAMPLE + 300
    assert rep["achieved_min_distance"] == pytest.approx(_brute_min(big), rel=1e-12, abs=0)


def test_morphable_identities_equal_the_sequential_algorithm(morph):
    """The identities (every parameter tensor, bit for bit) of the batched sampler and of the old
    one-at-a-time candidates + sequential rule agree, also with a threshold that rejects."""
    from morphable import MorphableSource

    src = MorphableSource(preset="wild", size=112, overrides={"identity": {"min_distance": 1.25}})
    n = 100
    ids = src.sample_identities(n, seed=4)

    def cand(start, count):
        s, a, _, _ = _reference_candidates(src, 4, start, count)
        return src._embedding(s, a)

    acc, buf, rej = _reference_reject(cand, n, 1.25, 50)
    assert rej > 0 and ids.report["rejected"] == rej
    ref = _reference_candidates(src, 4, 0, max(acc) + 1)
    sel = torch.tensor(acc)
    assert torch.equal(ids.params["shape"], ref[0][sel])
    assert torch.equal(ids.params["appearance"], ref[1][sel])
    assert torch.equal(ids.params["noise_offset"], ref[2][sel])
    assert torch.equal(ids.embedding, buf.float())
    assert ids.report["achieved_min_distance"] >= 1.25
