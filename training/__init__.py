"""training: FR backbones, margin heads, curriculum configs, the Lightning trainer, verification
benchmarks, ``python -m training.evaluate`` (any model, the field's table) and the
pretrain-on-synthetic / fine-tune-on-authentic benchmark (seeds, extended pairs, paired comparisons).

Public API::

    from training import create_backbone, create_head, load_config, run_training, verify_lfw

Modules: ``config`` (the YAML schema, ``load_config``), ``curriculum`` (phases -> step ranges, weights,
class spaces), ``data``, ``module`` / ``train`` (the Lightning trainer, ``python -m training.train``),
``verification``, ``benchmark`` (``python -m training.benchmark``), ``backbones``, ``heads``, ``augment``,
``contrastive`` (``loss: contrastive`` phases: InfoNCE, momentum encoder, queue).
Lightning-heavy modules load lazily.
"""
from common.errors import ConfigError

from .augment import build_augment
from .backbones import create_backbone, list_backbones, load_arcface_torch, register_backbone
from .config import TrainConfig, load_config, parse_config
from .contrastive import ContrastiveConfig, MoCoState, info_nce_loss
from .curriculum import Curriculum
from .heads import create_head, list_heads, soft_margin_loss
from .verification import evaluate_pairs, read_bin, read_lfw_pairs, verify_bin, verify_lfw

_LAZY = {
    "FaceRecognitionModule": "module", "save_backbone": "module", "load_backbone": "module",
    "MixedBatchStream": "data", "MixedDataModule": "data", "build_sources": "data",
    "run_training": "train", "Evaluator": "train",
    "run_benchmark": "benchmark", "load_benchmark_config": "benchmark",
    "raw_throughput": "benchmark_throughput", "trainer_throughput": "benchmark_throughput",
    "evaluate_sets": "evaluate", "load_model": "evaluate", "EvalSet": "evaluate",
    "paired_comparison": "compare", "extended_pairs": "pairsets",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")


__all__ = sorted([
    "ConfigError", "ContrastiveConfig", "Curriculum", "MoCoState", "TrainConfig", "info_nce_loss", "build_augment", "create_backbone", "create_head", "evaluate_pairs",
    "list_backbones", "list_heads", "soft_margin_loss", "load_arcface_torch", "load_config", "parse_config", "read_bin", "read_lfw_pairs",
    "register_backbone", "verify_bin", "verify_lfw", *_LAZY,
])
