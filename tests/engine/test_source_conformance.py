"""One conformance helper (tests.conformance) run on every source: fake, morphable, diffusion."""
from __future__ import annotations

import pytest

from tests.conformance import check_conformance
from tests.fake_source import FakeSource
from tests.learned_helpers import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fake_source():
    check_conformance(FakeSource(size=16))


def test_morphable_source(default_model):
    from morphable import MorphableSource

    # rendering is exact per image; batched rasterization moves a few edge pixels by < 2e-3
    check_conformance(MorphableSource(preset="frontal", size=32, model=default_model), n=4, k=2, atol=2e-3)
    # half the images with cast shadows: an image without them must not see its batch-mates' shadow pass
    check_conformance(MorphableSource(preset="frontal", size=32, model=default_model,
                                      overrides={"light": {"shadows": 0.5}}), n=4, k=2, atol=2e-3)


def test_diffusion_source(tmp_path_factory):
    from engine import create_source

    run = tiny_run(tmp_path_factory.getbasetemp() / "learned-tiny")
    src = create_source("diffusion", checkpoint=str(run["checkpoint"]), size=16)
    check_conformance(src, atol=1e-4)
    # the same, through DDIM with per-step noise drawn from each image's own generator
    check_conformance(create_source("diffusion", checkpoint=str(run["checkpoint"]), size=16,
                                    overrides={"solver": "ddim", "eta": 1.0, "steps": 4}), atol=1e-4)
