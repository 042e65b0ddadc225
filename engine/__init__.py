"""engine: identity sources -> datasets (ImageFolder / RecordIO + metadata), and on-the-fly streams.

Public API::

    from engine import create_source, render_dataset, open_dataset, RenderStream
    src = create_source("morphable", preset="wild", size=112)

Real-face judge (optional extra ``judge``: dlib): ``python -m engine.judge DATASET --real DIR`` or
``engine.judge_dataset(...)`` (see :mod:`engine.judge`). Real-vs-synthetic attribute report (same extra):
``python -m engine.attributes DATASET --real DIR`` or ``engine.attribute_report(...)`` (:mod:`engine.attributes`).
Feature detail learnt from real faces for the morphable source (same extra): ``python -m engine.detail_fit
--real DIR --out FILE`` (:mod:`engine.detail_fit`), rendered with ``-o identity.detail_model=FILE``.

Kept light on purpose: worker processes import this package, so heavy modules load lazily.
"""
from .contact_sheet import contact_sheet
from .formats import CorruptRecordError, FaceImageDataset, ImageFolderDataset, RecDataset, open_dataset
from .interface import Identities, IdentitySampler, RenderBatch, derive_seed, generator, separability_report
from .mixup import MixupConfig, sample_with_mixup
from .sources import SourceError, SourceSpec, create_source, known_sources, register_source
from .stream import RenderStream


def __getattr__(name):
    if name in ("render_dataset", "RenderError", "DiskFullError"):
        from . import render

        return getattr(render, name)
    if name in ("judge_dataset", "judge_arrays"):  # the real-face judge needs the optional extra (dlib) only when run
        from . import judge

        return getattr(judge, name)
    if name == "attribute_report":
        from . import attributes

        return attributes.attribute_report
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "CorruptRecordError", "DiskFullError", "MixupConfig", "sample_with_mixup", "attribute_report", "FaceImageDataset", "Identities", "IdentitySampler", "ImageFolderDataset",
    "RecDataset", "RenderBatch", "RenderError", "RenderStream", "SourceError", "SourceSpec", "contact_sheet", "create_source",
    "derive_seed", "generator", "judge_arrays", "judge_dataset", "known_sources", "open_dataset", "register_source",
    "render_dataset", "separability_report",
]
