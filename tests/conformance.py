"""The identity-sampler contract, checked on any source: ``check_conformance(source)``.

One helper for every source (the fake test source, the morphable source, the learned sources), so
that they are held to the same rules: JSON config with ``size``; deterministic, prefix-stable,
seed-dependent identities with a JSON separability report that honours its own threshold; images
float32 in [0, 1] of the configured size, landmarks inside the image, per-image factors; rendering
deterministic and independent of the batch; variations and identities differ.
"""
from __future__ import annotations

import json

import torch

from engine.interface import IdentitySampler


def check_conformance(source: IdentitySampler, n: int = 5, k: int = 3, seed: int = 0, atol: float = 1e-5) -> None:
    """Assert the :class:`IdentitySampler` contract on ``source`` (raises ``AssertionError``).
    ``atol``: tolerance of the batch-independence check (floating-point batching effects)."""
    cfg = source.config()
    json.dumps(cfg)  # JSON-serialisable
    assert "size" in cfg, "config() must contain 'size'"
    size = source.image_size

    ids = source.sample_identities(n, seed)
    assert len(ids) == n and ids.embedding.shape[0] == n
    for name, t in {**ids.params, **ids.meta}.items():
        assert t.shape[0] == n, f"identity tensor {name!r} must have leading dim {n}"
    json.dumps(ids.report, default=float)
    req, got = ids.report.get("min_distance_required"), ids.report.get("achieved_min_distance")
    if req is not None and got is not None:
        assert got >= req - 1e-6, f"separability report: achieved {got} < required {req}"
    again = source.sample_identities(n, seed)
    assert torch.equal(ids.embedding, again.embedding), "sample_identities must be deterministic"
    prefix = source.sample_identities(n - 2, seed)
    assert torch.equal(prefix.embedding, ids.embedding[: n - 2]), "sample_identities must be prefix-stable"
    other = source.sample_identities(n, seed + 1)
    assert not torch.equal(other.embedding, ids.embedding), "seed must change identities"

    rows = torch.arange(n).repeat_interleave(k)
    var = torch.arange(k).repeat(n)
    rb = source.render(ids, rows, var, seed)
    b = n * k
    assert rb.images.shape == (b, 3, size, size) and rb.images.dtype == torch.float32
    assert float(rb.images.min()) >= 0.0 and float(rb.images.max()) <= 1.0
    assert torch.equal(rb.identity.cpu(), rows) and torch.equal(rb.variation.cpu(), var)
    assert rb.landmarks.shape == (b, 5, 2) and rb.landmarks.dtype == torch.float32
    assert float(rb.landmarks.min()) >= -size and float(rb.landmarks.max()) <= 2 * size, "landmarks far outside the image"
    for name, t in rb.factors.items():
        assert t.shape[0] == b, f"factor {name!r} must have leading dim {b}"
        assert t.dim() in (1, 2), f"factor {name!r} must be (B,) or (B, k)"
    rb2 = source.render(ids, rows, var, seed)
    assert torch.equal(rb.images, rb2.images), "render must be deterministic"
    sub = torch.tensor([b - 1, 1])
    rb3 = source.render(ids, rows[sub], var[sub], seed)
    assert torch.allclose(rb3.images, rb.images[sub], atol=atol), "an image must not depend on its batch"
    assert not torch.allclose(rb.images[0], rb.images[1]), "variations must differ"
    assert not torch.allclose(rb.images[0], rb.images[k]), "identities must differ"
