"""ExFaceGAN-style disentangled variations of the GAN source (``variation.mode=disentangled``): the
variations keep their reference's identity better than plain ones, determinism by seed, metadata
columns, the batched boundary fit, and config errors that name the key."""
from __future__ import annotations

import json

import pytest
import torch

from engine import render as R
from learned.gan.disentangle import fit_boundaries, label_candidates, shift_to_side, signed_distance
from tests.learned_helpers import render_args, session_run

pytestmark = pytest.mark.usefixtures("one_thread")

DIS = {"variation": {"mode": "disentangled", "candidates": 64}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return session_run("gan", tmp_path_factory)


def _source(run, overrides=None):
    from learned.gan.source import GANSource

    return GANSource(str(run["checkpoint"]), size=16, overrides=overrides or {})


def _cos_to_reference(run, overrides, n=12, per=6, seed=0):
    """(n*per,) encoder cosine of each rendered variation to its identity's reference image."""
    src = _source(run, overrides)
    ids = src.sample_identities(n, seed)
    rows, var = torch.arange(n).repeat_interleave(per), torch.arange(per).repeat(n)
    rb = src.render(ids, rows, var, seed)
    e = src.encoder().embed(rb.images * 2 - 1)
    ref = src._latent_images(ids.params["embedding"], [(seed, "exface-reference", r) for r in range(n)])
    return (e * ref[rows]).sum(1), ids, rb


def test_disentangled_variations_keep_the_reference_identity_better(run):
    c_plain, ids_p, _ = _cos_to_reference(run, {})
    c_dis, ids_d, rb = _cos_to_reference(run, DIS)
    assert torch.equal(ids_p.embedding, ids_d.embedding)  # same identities, only the latents differ
    # the untrained tiny encoder puts everything in a narrow cone: compare the distances 1 - cos
    d_plain, d_dis = (1 - c_plain).mean().item(), (1 - c_dis).mean().item()
    assert d_dis < 0.8 * d_plain, (d_dis, d_plain)
    per_id = (1 - c_dis).view(12, 6).mean(1) < (1 - c_plain).view(12, 6).mean(1)
    assert per_id.sum() >= 9, per_id
    # every variation ends at least `margin` inside its boundary
    assert (rb.factors["exface_distance"] >= 1.0 - 1e-4).all() and (rb.factors["exface_shift"] >= 0).all()
    assert (rb.factors["exface_shift"] > 0).any()


def test_disentangled_sampling_is_deterministic_by_seed(run):
    a, b, c = _source(run, DIS), _source(run, DIS), _source(run, DIS)
    ia, ib, ic = a.sample_identities(4, 3), b.sample_identities(4, 3), c.sample_identities(4, 4)
    assert torch.equal(ia.params["exface_w"], ib.params["exface_w"]) and torch.equal(ia.meta["exface_gap"], ib.meta["exface_gap"])
    assert not torch.equal(ia.params["exface_w"], ic.params["exface_w"])
    rows, var = torch.tensor([0, 1, 3, 3]), torch.tensor([0, 2, 1, 5])
    ra, rb = a.render(ia, rows, var, 3), b.render(ib, rows, var, 3)
    assert torch.equal(ra.images, rb.images)
    # an image does not depend on its batch
    r1 = a.render(ia, rows[2:3], var[2:3], 3)
    assert torch.allclose(r1.images[0], ra.images[2], atol=1e-6)


def test_render_cli_writes_the_exface_columns(tmp_path, run):
    import pyarrow.parquet as pq

    out = tmp_path / "dis"
    args = render_args("gan", run, out, "--override", "variation.mode=disentangled", "--override",
                       "variation.candidates=16", "--override", "variation.margin=0.5")
    assert R.main(args) == 0
    meta = pq.read_table(out / "metadata.parquet").to_pydict()
    for col in ("id_exface_threshold", "id_exface_fit_accuracy", "id_exface_gap", "id_exface_accepted",
                "id_exface_cos_all", "id_exface_cos_accepted", "exface_shift", "exface_distance"):
        assert col in meta and len(meta[col]) == 10, col
    assert all(0 <= v <= 1 for v in meta["id_exface_accepted"]) and min(meta["exface_distance"]) >= 0.5 - 1e-4
    desc = json.loads((out / "dataset.json").read_text())
    assert desc["source"]["config"]["variation"]["mode"] == "disentangled"
    assert desc["separability"]["variation"]["identities"] == 5
    # plain mode: no new columns, and the source config as before the option existed
    plain = tmp_path / "plain"
    assert R.main(render_args("gan", run, plain)) == 0
    assert "variation" not in json.loads((plain / "dataset.json").read_text())["source"]["config"]
    assert not any("exface" in c for c in pq.read_table(plain / "metadata.parquet").column_names)


def test_batched_boundary_fit_separates_and_shift_moves_to_the_side():
    g = torch.Generator().manual_seed(0)
    N, M, d = 3, 200, 5
    z = torch.randn(N, M, d, generator=g)
    true_w = torch.eye(d)[:N] * 3  # identity r's label depends on coordinate r
    y = (torch.einsum("nmd,nd->nm", z, true_w) + 0.5 > 0)
    w, b = fit_boundaries(z, y, steps=400, lr=0.5, l2=1e-3)
    assert w.shape == (N, d) and b.shape == (N,)
    cosw = torch.nn.functional.cosine_similarity(w, true_w.double(), dim=1)
    assert (cosw > 0.95).all(), cosw
    assert (((signed_distance(z.double(), w[:, None], b[:, None]) >= 0) == y).double().mean(1) > 0.95).all()
    # one identity's fit does not depend on the others in the batch
    w1, b1 = fit_boundaries(z[1:2], y[1:2], steps=400, lr=0.5, l2=1e-3)
    assert torch.allclose(w1[0], w[1]) and torch.allclose(b1[0], b[1])
    zz = torch.randn(N, d, generator=g)
    moved, shift = shift_to_side(zz, w.float(), b.float(), margin=1.0)
    dist = signed_distance(moved.double(), w, b)
    assert (dist >= 1.0 - 1e-5).all() and (shift >= 0).all()
    before = signed_distance(zz.double(), w, b)
    assert torch.allclose(shift.double(), (1.0 - before).clamp_min(0), atol=1e-5)
    # labels: per-reference median or a fixed threshold
    cos = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    lab, t = label_candidates(cos, None, 0.5)
    assert lab.sum(1).tolist() == [2, 2] and t.tolist() == pytest.approx([0.25, 0.65])
    lab, t = label_candidates(cos, 0.55, 0.5)
    assert lab.sum(1).tolist() == [0, 3]


@pytest.mark.parametrize("ov, msg", [
    ({"variation": {"mode": "exface"}}, r"overrides\.variation\.mode: must be one of plain, disentangled"),
    ({"variation": {"mode": "disentangled", "candidates": 2}}, r"overrides\.variation\.candidates: must be >= 4"),
    ({"variation": {"quantile": 1.0}}, r"overrides\.variation\.quantile: must be in \(0, 1\)"),
    ({"variation": {"margin": -1}}, r"overrides\.variation\.margin: must be >= 0"),
    ({"variation.threshold": 2.0}, r"overrides\.variation\.threshold: a cosine in \[-1, 1\]"),
])
def test_variation_config_errors_name_the_key(run, ov, msg):
    from common.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match=msg):
        _source(run, ov)


def test_plain_source_cannot_render_disentangled_without_boundaries(run):
    ids = _source(run).sample_identities(2, 0)
    with pytest.raises(Exception, match="carry no boundaries"):
        _source(run, DIS).render(ids, torch.tensor([0]), torch.tensor([0]), 0)
