"""engine.sources registry, the fake source's conformance, and contact sheets."""
from __future__ import annotations

import pytest
import torch

from engine import sources as S
from engine.contact_sheet import contact_sheet
from tests.fake_source import FakeSource, check_conformance


def test_unknown_source_lists_known():
    with pytest.raises(ValueError, match="unknown source 'nope'; known sources: .*morphable"):
        S.create_source("nope")


def test_register_and_create():
    S.register_source("fake-test", "tests.fake_source:FakeSource")
    try:
        assert "fake-test" in S.known_sources()
        src = S.create_source("fake-test", preset="frontal", size=16)
        assert isinstance(src, FakeSource) and src.config()["preset"] == "frontal" and src.image_size == 16
    finally:
        S.unregister_source("fake-test")
    assert "fake-test" not in S.known_sources()
    assert isinstance(S.create_source("tests.fake_source:FakeSource", size=16), FakeSource)
    with pytest.raises(S.SourceError, match="cannot import"):
        S.create_source("no_such_module_xyz:Thing")
    with pytest.raises(S.SourceError, match="not an IdentitySampler"):
        S.create_source("tests.fake_source:check_conformance")
    with pytest.raises(ValueError):
        S.register_source("x", "no-colon")
    assert S._REGISTRY["morphable"] == "morphable:MorphableSource"


def test_create_source_owns_the_checkpoint_errors(tmp_path):
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"x")
    with pytest.raises(S.SourceError, match="takes no --checkpoint"):
        S.create_source("tests.fake_source:FakeSource", checkpoint=str(ck))
    with pytest.raises(S.SourceError, match="checkpoint not found: /does/not/exist"):
        S.create_source("diffusion", checkpoint="/does/not/exist")
    with pytest.raises(S.SourceError, match="takes no keyword 'colour'"):
        S.create_source("tests.fake_source:FakeSource", colour="red")


def test_diffusion_source_import_paths():
    """DiffusionSource lives in learned.diffusion.source; the older paths resolve to the same class."""
    import pickle

    import learned
    import learned.source
    from learned.diffusion.source import DiffusionConfig, DiffusionSource

    assert S.resolve_source_class("diffusion") is DiffusionSource
    assert learned.DiffusionSource is DiffusionSource and learned.source.DiffusionSource is DiffusionSource
    assert learned.source.DiffusionConfig is DiffusionConfig
    assert pickle.loads(pickle.dumps(DiffusionSource)) is DiffusionSource
    spec = S.SourceSpec("diffusion", {"checkpoint": "/x", "size": 16})
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_source_spec_is_one_picklable_value():
    import dataclasses
    import pickle

    spec = S.SourceSpec("tests.fake_source:FakeSource", {"size": 24})
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    a, b = spec.create(), pickle.loads(pickle.dumps(spec)).create()
    ids = a.sample_identities(2, seed=1)
    rows, var = torch.tensor([0, 1]), torch.tensor([0, 0])
    assert torch.equal(a.render(ids, rows, var, seed=1).images, b.render(ids, rows, var, seed=1).images)


def test_fake_source_conformance():
    check_conformance(FakeSource(size=16))
    check_conformance(FakeSource(preset="frontal", size=16, aligned=False))
    with pytest.raises(ValueError, match="unknown preset"):
        FakeSource(preset="nope")
    with pytest.raises(ValueError, match="unknown override"):
        FakeSource(overrides={"bogus": 1})
    assert "delay" not in FakeSource(overrides={"delay": 0.5}).config()


def test_contact_sheet_layout():
    imgs = torch.arange(6 * 3 * 4 * 5, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(6, 3, 4, 5)
    sheet = contact_sheet(imgs, nrow=3, margin=2)
    assert sheet.size == (2 + 3 * 7, 2 + 2 * 6) and sheet.mode == "RGB"
    import numpy as np

    a = np.asarray(sheet)
    assert (a[2:6, 2:7] == imgs[0].permute(1, 2, 0).numpy()).all()
    assert (a[8:12, 9:14] == imgs[4].permute(1, 2, 0).numpy()).all()
    assert (a[0] == 255).all()
    f = contact_sheet(imgs.float() / 255, nrow=3, margin=2)
    assert np.array_equal(np.asarray(f), a)
    with pytest.raises(ValueError):
        contact_sheet(imgs[0], nrow=2)
