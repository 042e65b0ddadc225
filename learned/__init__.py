"""learned: identity-conditioned generators trained by the project (issue 6), served through
``engine.interface.IdentitySampler`` like ``morphable.MorphableSource``.

- :mod:`learned.encoder`: the frozen FR encoder (``load_encoder``) the generators are conditioned on.
- :mod:`learned.diffusion`: pixel-space UNet, cosine v-prediction schedule, DDIM / DPM-Solver++(2M).
- :mod:`learned.gan`: StyleGAN2-style conditional generator, projection discriminator, DiffAugment, R1,
  identity loss; ``GANSource`` in :mod:`learned.gan.source` (registered as ``"gan"``).
- :mod:`learned.data`: face training images with cached encoder embeddings.
- :mod:`learned.checkpoint`: ``save_checkpoint`` / ``load_checkpoint`` (weights + ``config.json``,
  a registry of checkpoint kinds), ``load_condition_stats`` (the fit of the training conditions).
- :mod:`learned.train`: ``python -m learned.train --config configs/learned/NAME.yaml`` (registry of trainers by ``kind``).
- :mod:`learned.source`: ``LearnedSource``, the base of the engine sources; ``DiffusionSource`` in
  :mod:`learned.diffusion.source` (registered in ``engine.sources`` as ``"diffusion"``).
- :mod:`learned.evaluate`: ``python -m learned.evaluate`` on a checkpoint or a face folder (``evaluate``);
  its pieces: :mod:`learned.eval_sets` (embedded image sets), :mod:`learned.eval_metrics` (the metric
  functions), :mod:`learned.eval_report` (figures and ``report.md``).

Submodules are imported on use (Lightning and the networks are not loaded by ``import learned``).
"""

# Public API, imported lazily: ``from learned import load_encoder, DiffusionSource, run_training``.
_LAZY = {
    "FREncoder": ("encoder", "FREncoder"), "EncoderError": ("encoder", "EncoderError"),
    "load_encoder": ("encoder", "load_encoder"),
    "LearnedSource": ("source", "LearnedSource"), "DiffusionSource": ("diffusion.source", "DiffusionSource"),
    "GANSource": ("gan.source", "GANSource"),
    "CheckpointError": ("checkpoint", "CheckpointError"), "load_checkpoint": ("checkpoint", "load_checkpoint"),
    "save_checkpoint": ("checkpoint", "save_checkpoint"),
    "load_condition_stats": ("checkpoint", "load_condition_stats"),
    "load_config": ("train", "load_config"), "run_training": ("train", "run_training"),
    "register_trainer": ("train", "register_trainer"),
    "evaluate_generator": ("evaluate", "evaluate"), "EvaluateError": ("evaluate", "EvaluateError"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{mod}", __name__), attr)
    raise AttributeError(f"module 'learned' has no attribute {name!r}")


__all__ = sorted(_LAZY)
