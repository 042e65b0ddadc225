"""Identity-conditioned StyleGAN2-style GAN (issue 6): mapping network + modulated/demodulated
convolutions with noise inputs and skip-RGB outputs, residual projection discriminator, non-saturating
loss with lazy R1, DiffAugment, EMA generator and an identity loss through the frozen FR encoder.

Public API: :class:`GeneratorConfig`, :class:`Generator`, :class:`DiscriminatorConfig`,
:class:`Discriminator`, :class:`GANGenerator`, :func:`build_model`, :func:`diff_augment`, and the
ExFaceGAN-style disentangled variations (:class:`VariationConfig`, :func:`fit_boundaries`,
:func:`shift_to_side`; :mod:`learned.gan.disentangle`). The
trainer (Lightning, ``kind: gan``) lives in :mod:`learned.gan.trainer`, the engine source in
:mod:`learned.gan.source`.
"""
from .augment import diff_augment
from .disentangle import VariationConfig, fit_boundaries, shift_to_side
from .model import GANGenerator, build_model, hash_normal
from .networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

__all__ = ["GeneratorConfig", "Generator", "DiscriminatorConfig", "Discriminator", "GANGenerator", "build_model",
           "hash_normal", "diff_augment", "VariationConfig", "fit_boundaries", "shift_to_side"]
