"""Training configuration (YAML) as typed dataclasses: the schema of ``python -m training.train``.

A config file has five sections::

    name: my-run                      # optional, used in logs
    model:    {backbone, embedding_size, input_size, backbone_kwargs, head, margins, init_backbone}
    sources:  {<name>: {type: folder|rec|rendered|engine|stream, path | source/preset/num_ids/..., augment, subset}}
    phases:   [{name, steps | epochs, weights: {<source>: w | [start, end] | {start, end}}, ramp,
                lr: {base, schedule, warmup_steps, ...}, optimizer: {name, weight_decay, ...},
                freeze: [prefix, ...], reinit_head}]
    eval:     {pairs: [{root, pairs, folds}], bins: [...], batch_size, flip, at_phase_end}
    trainer:  {precision, accelerator, devices, strategy, batch_size, num_workers, ...}

:func:`load_config` reads YAML, applies ``key.path=value`` overrides and validates everything
(:func:`common.config.from_dict`); errors are :class:`ConfigError` naming the offending key
(``phases[1].weights.synth: ...``). The curriculum built from ``phases``: :mod:`training.curriculum`.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from common.config import REPO_ROOT, ConfigError, apply_overrides, config_to_dict, from_dict, resolve_path
from common.config import convert as _convert
from common.config import join_key as _join
from common.config import key_error as _err
from common.config import suggest as _suggest
from common.config import type_name as _type_name
from common.people import PairsPeopleConfig

from .contrastive import LOSSES, ContrastiveConfig

__all__ = [
    "ModelConfig",
    "SourceConfig",
    "LRConfig",
    "OptimizerConfig",
    "PhaseConfig",
    "DomainMixupConfig",
    "PairSetConfig",
    "EvalConfig",
    "TrainerConfig",
    "TrainConfig",
    "load_config",
    "parse_config",
]

SOURCE_TYPES = ("folder", "rec", "rendered", "engine", "stream")
MAP_TYPES = ("folder", "rec", "rendered")
PRECISIONS = ("32", "32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64", "64-true")
SCHEDULES = ("cosine", "step", "poly", "constant", "linear")
OPTIMIZERS = ("sgd", "adamw", "adam")
RAMPS = ("linear", "cosine", "step")


# ----------------------------------------------------------------------------------------------
# schema
# ----------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Backbone + margin head.

    ``input_size``: side in pixels every source is resized to; ``backbone_kwargs`` go to
    ``create_backbone`` (e.g. ``width`` of ``tiny``); ``margins`` to ``create_head`` (``s``, ``m``,
    ``h`` ...); ``init_backbone``: backbone weights to start from (a ``backbone.pt`` of a previous
    run or an arcface_torch ``.pth``).
    """

    backbone: str = "iresnet50"
    embedding_size: int = 512
    input_size: int = 112
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    head: str = "arcface"
    margins: dict[str, Any] = field(default_factory=dict)
    init_backbone: str | None = None
    init_strict: bool = True

    def validate(self, path: str) -> None:
        if self.embedding_size <= 0:
            raise _err(path, "embedding_size", f"must be > 0, got {self.embedding_size}")
        if self.input_size < 16:
            raise _err(path, "input_size", f"must be >= 16, got {self.input_size}")
        try:
            from . import backbones as _bb

            known = set(_bb.list_backbones()) | set(getattr(_bb, "_ALIASES", {}))
            if self.backbone.lower() not in known:
                raise _err(path, "backbone", f"unknown backbone {self.backbone!r}"
                           f"{_suggest(self.backbone.lower(), sorted(known))}; available: "
                           f"{', '.join(_bb.list_backbones())}")
        except ImportError:  # pragma: no cover
            pass
        try:
            from . import heads as _hd

            if self.head.lower() not in _hd.list_heads():
                raise _err(path, "head", f"unknown head {self.head!r}{_suggest(self.head.lower(), _hd.list_heads())}; "
                           f"available: {', '.join(_hd.list_heads())}")
        except ImportError:  # pragma: no cover
            pass


@dataclass
class SourceConfig:
    """One training source.

    ``type``:

    * ``folder`` (ImageFolder ``<root>/<identity>/<img>``), ``rec`` (insightface ``train.rec`` dir) and
      ``rendered`` (a dataset dir written by the engine): read with ``engine.formats.open_dataset``
      from ``path``; subset options ``identities`` / ``people_file`` (keep only these names),
      ``exclude_identities`` / ``exclude_people_file``, ``min_images_per_id``, ``max_ids`` (the first
      ones in ``id_order``: ``sorted`` (dataset order) or ``random`` (by ``seed``)) and
      ``images_per_id`` (cap, first images in file order);
    * ``stream`` (rendered on the fly with ``engine.stream.RenderStream`` from
      ``engine.sources.create_source(source, preset=..., size=..., **source_kwargs)``): ``num_ids``,
      ``per_id``, ``fixed_variations``, ``seed``; ``epoch_size`` (images per epoch) if phases use
      ``epochs`` and ``per_id`` is not set; ``cache: true`` (needs ``fixed_variations``) renders the
      ``num_ids * per_id`` images once, up front, and keeps them in memory (slow CPU renderers);
    * ``engine``: same as ``stream`` when ``source`` is given, else like ``rendered`` (``path``).

    ``augment``: the per-source augmentation dict (see :func:`training.augment.build_augment`).
    """

    type: str
    path: str | None = None
    source: str | None = None
    preset: str | None = None
    source_kwargs: dict[str, Any] = field(default_factory=dict)
    num_ids: int | None = None
    per_id: int | None = None
    fixed_variations: bool = False
    seed: int = 0
    render_batch_size: int = 64
    epoch_size: int | None = None
    cache: bool = False
    max_ids: int | None = None
    min_images_per_id: int = 1
    identities: list[str] | None = None
    people_file: str | None = None
    exclude_identities: list[str] | None = None
    exclude_people_file: str | None = None
    identities_from_pairs: PairsPeopleConfig | None = None
    exclude_from_pairs: PairsPeopleConfig | None = None
    images_per_id: int | None = None
    id_order: str = "sorted"
    augment: dict[str, Any] | None = None
    soft_labels: bool = False  # identity mixup: mixed identities train their two parents' classes (SynFace)

    @property
    def is_stream(self) -> bool:
        return self.type == "stream" or (self.type == "engine" and self.source is not None)

    def validate(self, path: str) -> None:
        if self.type not in SOURCE_TYPES:
            raise _err(path, "type", f"must be one of {', '.join(SOURCE_TYPES)}, got {self.type!r}"
                       + _suggest(self.type, SOURCE_TYPES))
        if self.is_stream:
            if not self.source:
                raise _err(path, "source", f"required for type {self.type!r} (an engine source name such as "
                           "'morphable', or 'module:Class')")
            if self.num_ids is None:
                raise _err(path, "num_ids", f"required for an on-the-fly source (type {self.type!r})")
            if self.num_ids <= 0:
                raise _err(path, "num_ids", f"must be > 0, got {self.num_ids}")
            if self.per_id is not None and self.per_id <= 0:
                raise _err(path, "per_id", f"must be > 0, got {self.per_id}")
            if self.cache and not self.fixed_variations:
                raise _err(path, "cache", "needs fixed_variations: true (otherwise every epoch renders new images)")
            for k in ("max_ids", "identities", "people_file", "exclude_identities", "exclude_people_file",
                      "images_per_id", "identities_from_pairs", "exclude_from_pairs"):
                if getattr(self, k) is not None:
                    raise _err(path, k, f"only applies to folder/rec/rendered sources, not {self.type!r}")
        else:
            if not self.path:
                raise _err(path, "path", f"required for type {self.type!r}")
            if self.cache:
                raise _err(path, "cache", "only applies to on-the-fly sources (type stream/engine with source)")
        if self.soft_labels and self.type in ("folder", "rec"):
            raise _err(path, "soft_labels", f"needs a rendered dataset (its metadata.parquet holds the id_mix_* columns) "
                       f"or an on-the-fly source, not type {self.type!r}")
        if self.render_batch_size <= 0:
            raise _err(path, "render_batch_size", "must be > 0")
        if self.epoch_size is not None and self.epoch_size <= 0:
            raise _err(path, "epoch_size", f"must be > 0, got {self.epoch_size}")
        if self.max_ids is not None and self.max_ids <= 0:
            raise _err(path, "max_ids", f"must be > 0, got {self.max_ids}")
        if self.min_images_per_id < 1:
            raise _err(path, "min_images_per_id", f"must be >= 1, got {self.min_images_per_id}")
        if self.images_per_id is not None and self.images_per_id <= 0:
            raise _err(path, "images_per_id", f"must be > 0, got {self.images_per_id}")
        if self.id_order not in ("sorted", "random"):
            raise _err(path, "id_order", f"must be 'sorted' or 'random', got {self.id_order!r}")
        if self.augment is not None:
            from .augment import validate_augment_config

            try:
                validate_augment_config(self.augment)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{_join(path, 'augment')}.{e}") from None


@dataclass
class LRConfig:
    """Learning-rate schedule of a phase (per optimizer step, restarted at each phase).

    ``schedule``: ``cosine`` (to ``min_lr``), ``linear`` (to ``min_lr``), ``poly`` (``power``),
    ``step`` (multiply by ``gamma`` at each of ``milestones``: steps if >= 1, fractions of the phase
    if < 1) or ``constant``; linear warm-up over ``warmup_steps`` (or ``warmup_fraction`` of the phase)
    from ``warmup_start_factor * base``. A plain number is accepted as ``{base: number}``.
    """

    base: float = 0.1
    schedule: str = "cosine"
    warmup_steps: int = 0
    warmup_fraction: float = 0.0
    warmup_start_factor: float = 0.0
    min_lr: float = 0.0
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    power: float = 2.0

    @staticmethod
    def _coerce(value: Any) -> Any:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return {"base": value}
        return value

    def validate(self, path: str) -> None:
        if not self.base > 0:
            raise _err(path, "base", f"must be > 0, got {self.base}")
        if self.schedule not in SCHEDULES:
            raise _err(path, "schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
                       + _suggest(self.schedule, SCHEDULES))
        if self.warmup_steps < 0:
            raise _err(path, "warmup_steps", "must be >= 0")
        if not 0 <= self.warmup_fraction < 1:
            raise _err(path, "warmup_fraction", "must be in [0, 1)")
        if self.warmup_steps and self.warmup_fraction:
            raise _err(path, "warmup_fraction", "give either warmup_steps or warmup_fraction, not both")
        if not 0 <= self.warmup_start_factor <= 1:
            raise _err(path, "warmup_start_factor", "must be in [0, 1]")
        if self.min_lr < 0 or self.min_lr > self.base:
            raise _err(path, "min_lr", f"must be in [0, base={self.base}], got {self.min_lr}")
        if any(m <= 0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise _err(path, "milestones", f"must be positive and increasing, got {self.milestones}")
        if self.schedule == "step" and not self.milestones:
            raise _err(path, "milestones", "required for schedule 'step'")

    def factor(self, step: int, total: int) -> float:
        """LR multiplier (of ``base``) at local step ``step`` of a phase of ``total`` steps."""
        total = max(int(total), 1)
        warm = self.warmup_steps or int(round(self.warmup_fraction * total))
        if warm > 0 and step < warm:
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * (step / warm)
        floor = self.min_lr / self.base
        t = (step - warm) / max(total - warm, 1)
        t = min(max(t, 0.0), 1.0)
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.schedule == "linear":
            return floor + (1.0 - floor) * (1.0 - t)
        if self.schedule == "poly":
            return floor + (1.0 - floor) * (1.0 - t) ** self.power
        # step
        ms = [m * total if m < 1 else m for m in self.milestones]
        return self.gamma ** sum(1 for m in ms if step >= m)


@dataclass
class OptimizerConfig:
    """``name``: sgd | adamw | adam. ``head_lr_mult`` scales the head's lr (e.g. 10 for a fresh head at
    fine-tune); ``no_decay_bias_bn`` exempts biases and norm weights from weight decay."""

    name: str = "sgd"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    head_lr_mult: float = 1.0
    head_weight_decay: float | None = None
    no_decay_bias_bn: bool = False

    def validate(self, path: str) -> None:
        if self.name.lower() not in OPTIMIZERS:
            raise _err(path, "name", f"must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}"
                       + _suggest(self.name.lower(), OPTIMIZERS))
        self.name = self.name.lower()
        if self.weight_decay < 0:
            raise _err(path, "weight_decay", "must be >= 0")
        if not 0 <= self.momentum < 1:
            raise _err(path, "momentum", "must be in [0, 1)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise _err(path, "betas", f"must be two numbers in [0, 1), got {self.betas}")
        if self.head_lr_mult <= 0:
            raise _err(path, "head_lr_mult", "must be > 0")
        if self.nesterov and self.name != "sgd":
            raise _err(path, "nesterov", "only applies to sgd")


@dataclass
class DomainMixupConfig:
    """A phase's ``domain_mixup`` (SynFace): each sample of ``sources[0]`` in a batch is, with
    probability ``p``, replaced by the pixel mix ``lam x_a + (1 - lam) x_b`` with a sample of
    ``sources[1]`` of the same batch (``lam ~ U[lam[0], lam[1]]``), labelled ``lam`` on its class and
    ``1 - lam`` on the other's (both in the phase's class space) and trained with the soft-label margin
    loss (:func:`training.heads.soft_margin_loss`). Implementation: :mod:`training.mixup`."""

    sources: list[str] = field(default_factory=list)
    lam: list[float] = field(default_factory=lambda: [0.2, 0.8])
    p: float = 0.5

    def validate(self, path: str) -> None:
        if len(self.sources) != 2 or self.sources[0] == self.sources[1]:
            raise _err(path, "sources", f"need two different source names [a, b], got {self.sources}")
        if len(self.lam) != 2 or not (0.0 <= float(self.lam[0]) <= float(self.lam[1]) <= 1.0):
            raise _err(path, "lam", f"need [lo, hi] with 0 <= lo <= hi <= 1, got {self.lam}")
        if not 0.0 <= float(self.p) <= 1.0:
            raise _err(path, "p", f"must be in [0, 1], got {self.p}")


@dataclass
class PhaseTemplate:
    """A phase without its ``name`` and with optional ``weights``: the benchmark's ``pretrain`` /
    ``finetune`` / ``authentic`` templates (:mod:`training.benchmark`). Each arm turns one into a
    :class:`PhaseConfig` with :meth:`phase`, giving the name and, unless the template sets them, the
    weights. The other fields are those of :class:`PhaseConfig`, with its defaults."""

    weights: dict[str, Any] | None = None
    steps: int | None = None
    epochs: float | None = None
    ramp: str = "linear"
    lr: LRConfig = field(default_factory=LRConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    freeze: list[str] = field(default_factory=list)
    freeze_bn: bool = True
    reinit_head: bool = False
    head_init: str = "random"
    head_init_images: int = 4
    domain_mixup: DomainMixupConfig | None = None
    # issue 17: ``loss: contrastive`` trains without labels (training.contrastive); ``margin`` is the default
    loss: str = "margin"
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)

    def phase(self, name: str, weights: dict[str, Any], path: str = "") -> dict[str, Any]:
        """The phase config (a mapping, checked as a :class:`PhaseConfig`; errors name ``path``) of
        the arm ``name`` whose sources are weighted ``weights`` unless the template sets its own."""
        d = config_to_dict(self)
        d["weights"] = copy.deepcopy(self.weights) if self.weights is not None else dict(weights)
        d["name"] = name
        from_dict(PhaseConfig, d, path or name)
        return d


@dataclass
class PhaseConfig(PhaseTemplate):
    """One curriculum phase.

    ``weights``: per-source sampling weight, either a number (constant over the phase), a
    ``[start, end]`` list or a ``{start, end}`` mapping (``ramp``: linear/cosine interpolation from
    the first to the last step of the phase; ``step`` jumps at the middle). Weights are normalised
    over the sources at every step; sources not listed get 0.
    ``freeze``: module-name prefixes (``backbone.conv1``, ``backbone.layer1``, ``backbone`` ...; the
    ``backbone.`` prefix may be omitted) whose parameters are frozen (and BatchNorm put in eval
    mode if ``freeze_bn``). ``loss``: ``margin`` (the head + cross-entropy on labels) or ``contrastive``
    (labels unused: two augmented views, momentum encoder and queue, options in ``contrastive``; see
    :mod:`training.contrastive`). ``reinit_head``: start a new head (fresh class centres) for the classes
    of the sources active from this phase on (until the next ``reinit_head``). ``head_init``:
    ``random`` or ``mean`` (weight imprinting: each new class centre starts at the mean normalised
    embedding of up to ``head_init_images`` of its images; applies where a new head is created).
    """

    name: str = ""  # required: validate() refuses an empty name (set by the curriculum or the benchmark arm)
    weights: dict[str, Any] = field(default_factory=dict)  # required: validate() refuses no weights
    # steps, epochs, ramp, lr, optimizer, freeze, freeze_bn, reinit_head, head_init, head_init_images:
    # inherited from PhaseTemplate (same fields, same defaults)
    # parsed from ``weights`` by validate()
    _start: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    _end: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def validate(self, path: str) -> None:
        if not self.name or not isinstance(self.name, str):
            raise _err(path, "name", "must be a non-empty string")
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError(f"{path}: give exactly one of 'steps' or 'epochs'")
        if self.steps is not None and self.steps <= 0:
            raise _err(path, "steps", f"must be > 0, got {self.steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise _err(path, "epochs", f"must be > 0, got {self.epochs}")
        if self.ramp not in RAMPS:
            raise _err(path, "ramp", f"must be one of {', '.join(RAMPS)}, got {self.ramp!r}")
        if not self.weights:
            raise _err(path, "weights", "must name at least one source")
        self._start, self._end = {}, {}
        for src, w in self.weights.items():
            p = f"{_join(path, 'weights')}.{src}"
            if isinstance(w, Mapping):
                unknown = set(w) - {"start", "end"}
                if unknown:
                    raise ConfigError(f"{p}: unknown key {sorted(unknown)[0]!r}; use {{start, end}}")
                if "start" not in w:
                    raise ConfigError(f"{p}.start: required key is missing")
                s = _convert(float, w["start"], f"{p}.start")
                e = _convert(float, w["end"], f"{p}.end") if w.get("end") is not None else s
            elif isinstance(w, (list, tuple)):
                if len(w) not in (1, 2):
                    raise ConfigError(f"{p}: expected [start, end], got {w!r}")
                s = _convert(float, w[0], f"{p}[0]")
                e = _convert(float, w[-1], f"{p}[{len(w) - 1}]")
            else:
                s = e = _convert(float, w, p)
            if s < 0 or e < 0 or not (math.isfinite(s) and math.isfinite(e)):
                raise ConfigError(f"{p}: weights must be finite and >= 0, got start={s}, end={e}")
            self._start[src], self._end[src] = s, e
        if sum(self._start.values()) <= 0:
            raise _err(path, "weights", "all start weights are 0; at least one source needs a positive weight")
        if sum(self._end.values()) <= 0:
            raise _err(path, "weights", "all end weights are 0; at least one source needs a positive weight")
        if self.head_init not in ("random", "mean"):
            raise _err(path, "head_init", f"must be 'random' or 'mean', got {self.head_init!r}")
        if self.head_init_images <= 0:
            raise _err(path, "head_init_images", "must be > 0")
        if self.domain_mixup is not None:
            for j, src in enumerate(self.domain_mixup.sources):
                if self._start.get(src, 0.0) <= 0 and self._end.get(src, 0.0) <= 0:
                    raise ConfigError(f"{_join(path, 'domain_mixup')}.sources[{j}]: {src!r} has no positive weight in "
                                      f"this phase (weights: {', '.join(self.weights)})")
        if self.loss not in LOSSES:
            raise _err(path, "loss", f"must be one of {', '.join(LOSSES)}, got {self.loss!r}" + _suggest(self.loss, LOSSES))
        for i, pref in enumerate(self.freeze):
            if not isinstance(pref, str) or not pref.strip(". "):
                raise ConfigError(f"{_join(path, 'freeze')}[{i}]: must be a module-name prefix, got {pref!r}")

    @property
    def start_weights(self) -> dict[str, float]:
        return dict(self._start)

    @property
    def end_weights(self) -> dict[str, float]:
        return dict(self._end)

    def active_sources(self) -> list[str]:
        return [s for s in self._start if self._start[s] > 0 or self._end[s] > 0]


@dataclass
class PairSetConfig:
    """An LFW-style verification set: images under ``<root>/images/<Name>/<Name>_NNNN.jpg`` and a
    ``pairs.txt`` (default ``<root>/pairs.txt``); ``folds``: 1-based fold numbers to evaluate on
    (default all; accuracy is k-fold over the kept folds); ``pairs_per_fold``: quick-check cap."""

    root: str
    pairs: str | None = None
    name: str | None = None
    folds: list[int] | None = None
    pairs_per_fold: int | None = None

    def validate(self, path: str) -> None:
        if self.folds is not None:
            if len(self.folds) < 2:
                raise _err(path, "folds", f"need at least 2 folds for k-fold accuracy, got {self.folds}")
            if any(f < 1 for f in self.folds):
                raise _err(path, "folds", f"fold numbers are 1-based, got {self.folds}")
        if self.pairs_per_fold is not None and self.pairs_per_fold <= 0:
            raise _err(path, "pairs_per_fold", "must be > 0")


@dataclass
class EvalConfig:
    """Verification run at phase ends (``at_phase_end``), every ``trainer.val_every`` steps, and at the end."""

    pairs: list[PairSetConfig] = field(default_factory=list)
    bins: list[str] = field(default_factory=list)
    batch_size: int = 128
    flip: bool = True
    at_phase_end: bool = True
    max_bin_pairs: int | None = None

    @staticmethod
    def _coerce(value: Any) -> Any:
        if isinstance(value, Mapping) and isinstance(value.get("pairs"), Mapping):
            value = dict(value)
            value["pairs"] = [value["pairs"]]
        return value

    def validate(self, path: str) -> None:
        if self.batch_size <= 0:
            raise _err(path, "batch_size", "must be > 0")
        names = set()
        for i, p in enumerate(self.pairs):
            n = p.name or Path(p.root).name or f"pairs{i}"
            if n in names:
                raise ConfigError(f"{_join(path, 'pairs')}[{i}].name: duplicate eval set name {n!r}")
            names.add(n)


@dataclass
class TrainerConfig:
    """Lightning trainer and loader settings. ``batch_size`` is per device (the global batch is
    ``batch_size x devices x num_nodes``); ``sync_batchnorm``: with more than one process, batch-norm
    statistics over the global batch (so that N processes train like one with the global batch);
    ``ckpt_every_steps``:
    atomic ``last.ckpt`` every N steps (0: only at phase ends); ``val_every``: verification every N
    steps (0: only at phase ends); ``out``: run directory (``--out`` overrides)."""

    precision: str = "32"
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    find_unused_parameters: bool = False
    sync_batchnorm: bool = True
    channels_last: bool = False
    compile: bool = False
    batch_size: int = 128
    num_workers: int = 4
    prefetch_factor: int = 2
    log_every: int = 50
    val_every: int = 0
    ckpt_every_steps: int = 1000
    out: str = "runs/default"
    seed: int = 0
    grad_clip: float = 0.0
    matmul_precision: str | None = "high"
    progress_bar: bool = False
    tensorboard: bool = True

    def validate(self, path: str) -> None:
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise _err(path, "precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
                       + _suggest(self.precision, PRECISIONS))
        for k in ("batch_size", "log_every", "num_nodes"):
            if getattr(self, k) <= 0:
                raise _err(path, k, f"must be > 0, got {getattr(self, k)}")
        for k in ("num_workers", "val_every", "ckpt_every_steps"):
            if getattr(self, k) < 0:
                raise _err(path, k, f"must be >= 0, got {getattr(self, k)}")
        if self.prefetch_factor <= 0:
            raise _err(path, "prefetch_factor", "must be > 0")
        if self.grad_clip < 0:
            raise _err(path, "grad_clip", "must be >= 0")
        if self.strategy not in ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "single_device",
                                 "fsdp", "deepspeed", "ddp_notebook"):
            raise _err(path, "strategy", f"unsupported strategy {self.strategy!r} (use auto or ddp)")
        if self.matmul_precision not in (None, "highest", "high", "medium"):
            raise _err(path, "matmul_precision", "must be highest, high, medium or null")

    @property
    def world_size_hint(self) -> int:
        """Devices x nodes if known from the config (``auto`` counts as the visible GPUs or 1)."""
        d = self.devices
        if isinstance(d, list):
            n = len(d)
        elif isinstance(d, int):
            n = d if d > 0 else _visible_gpus()
        elif d == "auto" or d == "-1":
            n = _visible_gpus() if self.accelerator in ("auto", "gpu", "cuda") else 1
        else:
            try:
                n = int(d)
            except ValueError:
                n = len([x for x in str(d).split(",") if x.strip()])
        return max(n, 1) * self.num_nodes


def _visible_gpus() -> int:
    try:
        import torch

        return max(torch.cuda.device_count(), 1)
    except Exception:  # pragma: no cover
        return 1


@dataclass
class TrainConfig:
    """The whole training config (see the module docstring)."""

    sources: dict[str, SourceConfig]
    phases: list[PhaseConfig]
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def validate(self, path: str) -> None:
        if not self.sources:
            raise _err(path, "sources", "at least one source is required")
        if not self.phases:
            raise _err(path, "phases", "at least one phase is required")
        seen = set()
        for i, ph in enumerate(self.phases):
            if ph.name in seen:
                raise ConfigError(f"{_join(path, 'phases')}[{i}].name: duplicate phase name {ph.name!r}")
            seen.add(ph.name)
            for src in ph.weights:
                if src not in self.sources:
                    raise ConfigError(f"{_join(path, 'phases')}[{i}].weights.{src}: unknown source "
                                      f"{src!r}{_suggest(src, list(self.sources))}; defined sources: "
                                      f"{', '.join(self.sources)}")

        for n, sc in self.sources.items():
            dev = str(sc.source_kwargs.get("device", "cpu"))
            if sc.is_stream and dev.startswith("cuda") and self.trainer.num_workers > 0 and n in self.used_sources():
                raise ConfigError(f"{_join(path, 'trainer')}.num_workers: must be 0 when sources.{n} renders on "
                                  f"{dev} (CUDA cannot be used in forked DataLoader workers); or render on cpu")

    def used_sources(self) -> list[str]:
        """Sources with a positive weight in some phase, in config order."""
        used = {s for ph in self.phases for s in ph.active_sources()}
        return [s for s in self.sources if s in used]


# ----------------------------------------------------------------------------------------------
# loading, overrides, paths
# ----------------------------------------------------------------------------------------------


def resolve_paths(cfg: TrainConfig, base_dirs: Sequence[Path]) -> TrainConfig:
    """Resolve every input path of ``cfg`` in place (see :func:`resolve_path`)."""
    cfg.model.init_backbone = resolve_path(cfg.model.init_backbone, base_dirs)
    for s in cfg.sources.values():
        for k in ("path", "people_file", "exclude_people_file"):
            setattr(s, k, resolve_path(getattr(s, k), base_dirs))
        for pp in (s.identities_from_pairs, s.exclude_from_pairs):
            if pp is not None:
                pp.pairs = resolve_path(pp.pairs, base_dirs)
    for p in cfg.eval.pairs:
        p.root = resolve_path(p.root, base_dirs)
        p.pairs = resolve_path(p.pairs, base_dirs)
    cfg.eval.bins = [resolve_path(b, base_dirs) for b in cfg.eval.bins]
    return cfg


def parse_config(data: Mapping[str, Any], overrides: Sequence[str] = (), base_dir: str | os.PathLike | None = None,
                 resolve: bool = True) -> TrainConfig:
    """Validate a raw mapping (e.g. from YAML) into a :class:`TrainConfig`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {_type_name(data)}")
    data = apply_overrides(dict(data), overrides)
    cfg = from_dict(TrainConfig, data, "")
    if resolve:
        bases = [Path(base_dir)] if base_dir is not None else []
        resolve_paths(cfg, bases + [REPO_ROOT])
    return cfg


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read and validate a YAML training config; relative paths resolve against the working
    directory, then the config's directory, then the repository root."""
    from common.cli import load_yaml

    return parse_config(load_yaml(path), overrides, base_dir=Path(path).parent)
