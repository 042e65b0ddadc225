"""LightningModule for face-recognition training (backbone + margin head) and its callbacks.

:class:`FaceRecognitionModule` trains one curriculum phase per ``Trainer.fit`` (see
:mod:`training.train`): :meth:`~FaceRecognitionModule.enter_phase` sets the head for the phase's
class space (a fresh head when the phase starts a new head segment, i.e. ``reinit_head``), freezes
the phase's ``freeze`` prefixes, and ``configure_optimizers`` builds that phase's optimizer and
per-step LR schedule. Mixed-precision friendly (the head runs in float32; use Lightning's
``precision="bf16-mixed"``), optional ``channels_last`` and ``torch.compile`` of the backbone (kept
out of the ``state_dict`` so checkpoints stay plain).

Batches come from :class:`training.data.MixedBatchStream` as uint8 images; each source's
augmentation runs on the device in ``on_after_batch_transfer``, then images are normalised to
``[-1, 1]``.

Callbacks: :class:`AtomicCheckpoint` (``last.ckpt`` every N steps and at the end, written to a temp
file, fsynced and ``os.replace``-d, so a ``kill -9`` never leaves a torn checkpoint),
:class:`ProgressPrinter`, :class:`PeriodicEval`.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoint import AtomicCheckpoint
from common.config import ConfigError, config_to_dict
from common.io import atomic_torch_save, atomic_write_text
from common.progress import ProgressPrinter as _ProgressPrinter

from .augment import build_augment
from .backbones import create_backbone, load_arcface_torch
from .config import ModelConfig, OptimizerConfig, TrainConfig
from .contrastive import MoCoState
from .curriculum import Curriculum
from .heads import create_head, soft_margin_loss

log = logging.getLogger(__name__)

__all__ = [
    "FaceRecognitionModule",
    "AtomicCheckpoint",
    "ProgressPrinter",
    "PeriodicEval",
    "build_backbone",
    "save_backbone",
    "load_backbone",
    "atomic_torch_save",
    "atomic_write_text",
    "resolve_freeze",
]


# ----------------------------------------------------------------------------------------------
# backbone build / save / load
# ----------------------------------------------------------------------------------------------


def build_backbone(model_cfg: ModelConfig) -> nn.Module:
    """The backbone of ``model_cfg`` (weights from ``init_backbone`` if set)."""
    bb = create_backbone(model_cfg.backbone, model_cfg.embedding_size, input_size=model_cfg.input_size,
                         **model_cfg.backbone_kwargs)
    if model_cfg.init_backbone:
        rep = load_arcface_torch(bb, model_cfg.init_backbone, strict=model_cfg.init_strict)
        log.info("loaded backbone weights from %s (%s)", model_cfg.init_backbone, rep)
    return bb


def model_config_dict(model_cfg: ModelConfig) -> dict[str, Any]:
    return {
        "backbone": model_cfg.backbone,
        "embedding_size": model_cfg.embedding_size,
        "input_size": model_cfg.input_size,
        "backbone_kwargs": dict(model_cfg.backbone_kwargs),
        "input": "RGB float (B, 3, H, W), (x / 255 - 0.5) / 0.5 in [-1, 1], ArcFace-aligned",
        "output": "embedding (B, embedding_size), not L2-normalised",
        "weights": "backbone.pt",
        "format": "synthface-backbone-v1",
    }


def save_backbone(backbone: nn.Module, model_cfg: ModelConfig, out_dir: str | os.PathLike,
                  extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``backbone.pt`` (plain state_dict, ``torch.load(weights_only=True)``-loadable) and
    ``model_config.json`` next to it; returns the ``.pt`` path."""
    out = Path(out_dir)
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
    path = atomic_torch_save(sd, out / "backbone.pt")
    meta = model_config_dict(model_cfg)
    if extra:
        meta.update(extra)
    atomic_write_text(out / "model_config.json", json.dumps(meta, indent=2))
    return path


def load_backbone(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a backbone saved by :func:`save_backbone`: ``path`` is the run dir, ``backbone.pt`` or
    ``model_config.json``. Returns the model in eval mode."""
    p = Path(path)
    d = p if p.is_dir() else p.parent
    meta = json.loads((d / "model_config.json").read_text())
    weights = p if p.is_file() and p.suffix == ".pt" else d / meta.get("weights", "backbone.pt")
    model = create_backbone(meta["backbone"], meta["embedding_size"], input_size=meta["input_size"],
                            **meta.get("backbone_kwargs", {}))
    sd = torch.load(weights, map_location=map_location, weights_only=True)
    model.load_state_dict(sd)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# freezing
# ----------------------------------------------------------------------------------------------


def resolve_freeze(model: nn.Module, prefixes: list[str], where: str = "freeze") -> tuple[set[str], list[nn.Module]]:
    """Parameter names and BatchNorm modules under ``prefixes`` (``backbone.`` may be omitted).

    Raises :class:`ConfigError` naming ``where[i]`` for a prefix that matches nothing."""
    names = [n for n, _ in model.named_parameters()]
    frozen: set[str] = set()
    bns: list[nn.Module] = []
    mods = dict(model.named_modules())
    for i, pref in enumerate(prefixes):
        pref = pref.strip(".")
        hit = False
        for cand in (pref, f"backbone.{pref}"):
            m = [n for n in names if n == cand or n.startswith(cand + ".")]
            if m:
                frozen.update(m)
                bns += [mod for mn, mod in mods.items() if (mn == cand or mn.startswith(cand + "."))
                        and isinstance(mod, nn.modules.batchnorm._BatchNorm)]
                hit = True
                break
        if not hit:
            tops = sorted({".".join(n.split(".")[:2]) for n in names})
            raise ConfigError(f"{where}[{i}]: prefix {pref!r} matches no parameter; module prefixes include: "
                              f"{', '.join(tops[:12])}{' ...' if len(tops) > 12 else ''}")
    return frozen, bns


# ----------------------------------------------------------------------------------------------
# module
# ----------------------------------------------------------------------------------------------


class FaceRecognitionModule(L.LightningModule):
    """Backbone + margin head trained with cross-entropy on mixed-source batches.

    Args:
        cfg: the :class:`TrainConfig` (model, sources' augmentation, phases, trainer flags).
        curriculum: the resolved :class:`Curriculum` (phases, class spaces).
    """

    def __init__(self, cfg: TrainConfig, curriculum: Curriculum):
        super().__init__()
        self.cfg = cfg
        self.curriculum = curriculum
        self.model_cfg = cfg.model
        self.backbone = build_backbone(cfg.model)
        self.head: nn.Module | None = None
        self.segment: int | None = None
        self.phase_index: int = -1
        self.source_names = list(curriculum.source_names)
        self.augment = nn.ModuleDict({n: build_augment(cfg.sources[n].augment) for n in self.source_names})
        self.channels_last = cfg.trainer.channels_last
        self.compile_backbone = cfg.trainer.compile
        self._compiled = None
        self._frozen_bn: list[nn.Module] = []
        self.frozen_params: set[str] = set()
        self.loss_log: list[tuple[int, float]] = []
        self.fit_start_step: int | None = None
        self._t_last: float | None = None
        self.contrastive: MoCoState | None = None  # phase state of a ``loss: contrastive`` phase

    # -- phases
    @property
    def phase(self):
        return self.curriculum.phases[self.phase_index]

    @property
    def num_classes(self) -> int:
        return int(self.head.num_classes) if self.head is not None else 0

    def _new_head(self, num_classes: int) -> nn.Module:
        head = create_head(self.model_cfg.head, self.model_cfg.embedding_size, num_classes, **self.model_cfg.margins)
        p = next(self.backbone.parameters())
        return head.to(p.device)

    def enter_phase(self, index: int) -> None:
        """Prepare for phase ``index``: head for its segment's class space (new at a new segment),
        freezing. Call before ``Trainer.fit`` of that phase."""
        ph = self.curriculum.phases[index]
        n = self.curriculum.num_classes(ph.segment)
        if self.head is None or self.segment != ph.segment:
            if self.head is not None:
                log.info("phase %s: new head with %d classes (was %d)", ph.name, n, self.num_classes)
            self.head = self._new_head(n)
            self.segment = ph.segment
        elif self.num_classes != n:
            raise RuntimeError(f"phase {ph.name}: head has {self.num_classes} classes, segment needs {n}")
        self.phase_index = index
        # a contrastive phase gets a fresh momentum encoder + queue (from the backbone as it is now);
        # any other phase drops them (phase state, not carried over)
        self.contrastive = (MoCoState(self.backbone, self.model_cfg.embedding_size, ph.config.contrastive,
                                      seed=self.cfg.trainer.seed + 1000 * index)
                            if ph.config.loss == "contrastive" else None)
        self.apply_freeze(ph.config.freeze, ph.config.freeze_bn, where=f"phases[{index}].freeze")

    def apply_freeze(self, prefixes: list[str], freeze_bn: bool = True, where: str = "freeze") -> None:
        frozen, bns = resolve_freeze(self, list(prefixes), where)
        for n, p in self.named_parameters():
            p.requires_grad_(n not in frozen)
        self.frozen_params = frozen
        self._frozen_bn = bns if freeze_bn else []
        if self.contrastive is not None:  # labels unused: the margin head rests, the key encoder is EMA-only
            self.contrastive.freeze_keys()
            if self.head is not None:
                self.head.requires_grad_(False)

    @torch.no_grad()
    def imprint_head(self, sources: Mapping[str, Any], max_per_id: int = 4, batch_size: int = 128,
                     device: str | torch.device = "cpu", flip: bool = True) -> int:
        """Weight imprinting: set each class centre of the current head to the normalised mean
        embedding of up to ``max_per_id`` images of that class (classes without images keep their
        random init). Returns the number of classes imprinted."""
        from .data import to_uint8_batch

        offsets = self.curriculum.label_offsets(self.segment)
        C, D = self.num_classes, self.model_cfg.embedding_size
        acc = torch.zeros(C, D, dtype=torch.float64)
        cnt = torch.zeros(C, dtype=torch.float64)
        bb = self.backbone
        was_training = bb.training
        orig_device = next(bb.parameters()).device
        bb.eval().to(device)
        S = self.model_cfg.input_size
        try:
            for k, name in enumerate(self.source_names):
                if offsets[k] < 0:
                    continue
                src = sources[name]
                items = _imprint_items(src, max_per_id)
                for a in range(0, len(items), batch_size):
                    chunk = items[a:a + batch_size]
                    if src.addressable:
                        x, y = src.fetch(chunk)
                    else:
                        x, y = src.pull(len(chunk))
                    x = to_uint8_batch(x, S).to(device).float().div_(127.5).sub_(1.0)
                    e = bb(x)
                    if flip:
                        e = e + bb(x.flip(-1))
                    e = F.normalize(e.float(), dim=1).double().cpu()
                    lab = torch.as_tensor(np.asarray(y), dtype=torch.long) + int(offsets[k])
                    acc.index_add_(0, lab, e)
                    cnt.index_add_(0, lab, torch.ones(len(lab), dtype=torch.float64))
        finally:
            bb.train(was_training)
            bb.to(orig_device)
        have = cnt > 0
        w = self.head.weight
        new = F.normalize(acc[have] / cnt[have, None], dim=1) * w.detach().norm(dim=1).mean().double()
        w.data[have.to(w.device)] = new.to(w.device, w.dtype)
        return int(have.sum())

    def phase_state(self) -> dict[str, Any]:
        return {"phase": self.phase_index, "segment": self.segment, "num_classes": self.num_classes}

    def save_phase_state(self, path: str | os.PathLike) -> Path:
        """Module weights + phase bookkeeping (``final.pt`` at the end of a phase)."""
        sd = {k: v.detach().cpu() for k, v in self.state_dict().items() if not k.startswith("contrastive.")}
        return atomic_torch_save({"state_dict": sd, **self.phase_state(), "loss_log": self.loss_log}, path)

    def load_phase_state(self, path: str | os.PathLike) -> None:
        """Restore weights saved by :meth:`save_phase_state` (head resized to the saved class count)."""
        obj = torch.load(path, map_location="cpu", weights_only=True)
        self._adopt_state(obj)
        self.load_state_dict(obj["state_dict"])
        self.loss_log = [tuple(x) for x in obj.get("loss_log", [])]

    def _adopt_state(self, info: Mapping[str, Any]) -> None:
        n, seg, p = int(info["num_classes"]), info.get("segment"), int(info.get("phase", self.phase_index))
        if self.head is None or self.num_classes != n:
            self.head = self._new_head(n)
        self.segment = seg
        if p >= 0 and p != self.phase_index:
            self.phase_index = p
            ph = self.curriculum.phases[p]
            self.apply_freeze(ph.config.freeze, ph.config.freeze_bn, where=f"phases[{p}].freeze")

    # -- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compile_backbone:
            if self._compiled is None:
                object.__setattr__(self, "_compiled", torch.compile(self.backbone))
            return self._compiled(x)
        return self.backbone(x)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self._trainer
        return self.prepare_batch(batch, train=trainer is not None and trainer.training)

    def prepare_batch(self, batch: Any, train: bool = True) -> Any:
        """uint8 images -> per-source augmentation (``train``) -> float in ``[-1, 1]`` (channels_last
        if enabled). Samples of source ``k`` are the ``counts[k]`` consecutive rows (or, without
        ``counts``, the rows where ``source == k``)."""
        if not isinstance(batch, dict) or "image" not in batch:
            return batch
        x = batch["image"]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32, copy=True)
        if train and self.contrastive is not None:  # contrastive phase: two views; the sources' augment unused
            x, x2 = self.contrastive.views(x)
            x2 = x2.sub_(0.5).div_(0.5)
            batch["image2"] = x2.contiguous(memory_format=torch.channels_last) if self.channels_last else x2
        elif train:
            counts = batch.get("counts")
            if counts is None:
                src = batch["source"]
                for k, name in enumerate(self.source_names):
                    m = src == k
                    if m.any() and self.augment[name].enabled:
                        x[m] = self.augment[name](x[m])
            else:
                a = 0
                for k, n in enumerate(counts):
                    if n and self.augment[self.source_names[k]].enabled:
                        x[a:a + n] = self.augment[self.source_names[k]](x[a:a + n])
                    a += n
        if train and "step" in batch:
            x = self._domain_mixup(x, batch)
        x = x.sub_(0.5).div_(0.5)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batch["image"] = x
        return batch

    def _domain_mixup(self, x: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The phase's ``domain_mixup`` (:func:`training.mixup.domain_mixup`) on augmented images in
        [0, 1]; sets the batch's soft targets ``label_b`` / ``lam``."""
        dm = self.curriculum.phase_at(int(batch["step"])).config.domain_mixup
        if dm is None:
            return x
        from .mixup import domain_mixup

        y = batch["label"]
        yb = batch.get("label_b", y)
        lam = batch.get("lam", torch.ones(y.shape[0], device=y.device))
        a, b = (self.source_names.index(n) for n in dm.sources)
        x, y, yb, lam = domain_mixup(x, y, yb, lam, batch["source"], a, b, dm.lam, dm.p, self.cfg.trainer.seed,
                                     int(batch["step"]))
        batch["label_b"], batch["lam"] = yb, lam
        return x

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.contrastive is not None:
            return self._contrastive_step(batch)
        x, y = batch["image"], batch["label"]
        emb = self._train_forward(x)
        if "lam" in batch:  # soft targets (identity / domain mixup): SynFace's two-term margin loss
            loss, logits = soft_margin_loss(self.head, emb.float(), y, batch["label_b"], batch["lam"])
        else:
            logits = self.head(emb.float(), y)  # float32 head (cosines are too coarse in bf16)
            loss = F.cross_entropy(logits, y)
        bs = int(y.shape[0])
        gstep = self.phase.start + self.global_step
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=bs)
        every = max(1, self.cfg.trainer.log_every)
        if self.global_step % every == 0:
            with torch.no_grad():
                acc = (logits.argmax(1) == y).float().mean()
            self.log("train/acc", acc, on_step=True, batch_size=bs)
            self.log("train/global_step", float(gstep), on_step=True, batch_size=bs)
            self.log("train/phase", float(self.phase_index), on_step=True, batch_size=bs)
            counts = batch.get("counts")
            if counts is not None:
                for n, c in zip(self.source_names, counts):
                    self.log(f"data/frac_{n}", c / max(bs, 1), on_step=True, batch_size=bs)
            # the loss of the global batch (the mean over ranks; equal per-rank batches): the curve of
            # N processes is that of one process with the global batch
            gl = self.all_gather(loss.detach()).mean() if self.trainer.world_size > 1 else loss.detach()
            self.loss_log.append((int(gstep), float(gl)))
        return loss

    def _contrastive_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """InfoNCE of view 1 (query: backbone + projection) against view 2 (momentum encoder) and the
        queue; labels unused. The batch's keys (gathered over ranks) then enter the queue."""
        moco = self.contrastive
        q = moco.query(self._train_forward(batch["image"]))
        k = moco.keys(batch["image2"], self.backbone)
        loss, acc = moco.loss(q, k)
        if self.trainer.world_size > 1:
            k = self.all_gather(k).reshape(-1, k.shape[-1])
        moco.push(k)
        bs = int(q.shape[0])
        gstep = self.phase.start + self.global_step
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=bs)
        if self.global_step % max(1, self.cfg.trainer.log_every) == 0:
            self.log("train/acc", acc, on_step=True, batch_size=bs)
            self.log("train/global_step", float(gstep), on_step=True, batch_size=bs)
            self.log("train/phase", float(self.phase_index), on_step=True, batch_size=bs)
            gl = self.all_gather(loss.detach()).mean() if self.trainer.world_size > 1 else loss.detach()
            self.loss_log.append((int(gstep), float(gl)))
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        for m in self._frozen_bn:
            m.eval()

    def on_train_start(self) -> None:
        self.fit_start_step = int(self.global_step)

    # -- optimisation
    def _param_groups(self, ocfg: OptimizerConfig, lr: float) -> list[dict[str, Any]]:
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for n, p in self.named_parameters():
            if not p.requires_grad:
                continue
            is_head = n.startswith("head.")
            no_wd = ocfg.no_decay_bias_bn and (p.ndim <= 1)
            groups.setdefault((is_head, no_wd), []).append(p)
        out = []
        for (is_head, no_wd), params in groups.items():
            wd = 0.0 if no_wd else (ocfg.head_weight_decay if is_head and ocfg.head_weight_decay is not None
                                    else ocfg.weight_decay)
            g_lr = lr * (ocfg.head_lr_mult if is_head else 1.0)
            out.append({"params": params, "lr": g_lr, "initial_lr": g_lr, "weight_decay": wd,
                        "name": ("head" if is_head else "backbone") + ("_nowd" if no_wd else "")})
        if not out:
            raise ConfigError(f"phases[{self.phase_index}].freeze: every parameter is frozen; nothing to train")
        return out

    def configure_optimizers(self):
        ph = self.phase
        ocfg, lcfg = ph.config.optimizer, ph.config.lr
        groups = self._param_groups(ocfg, lcfg.base)
        if ocfg.name == "sgd":
            opt = torch.optim.SGD(groups, lr=lcfg.base, momentum=ocfg.momentum, nesterov=ocfg.nesterov,
                                  weight_decay=ocfg.weight_decay)
        elif ocfg.name == "adamw":
            opt = torch.optim.AdamW(groups, lr=lcfg.base, betas=tuple(ocfg.betas), eps=ocfg.eps,
                                    weight_decay=ocfg.weight_decay)
        else:
            opt = torch.optim.Adam(groups, lr=lcfg.base, betas=tuple(ocfg.betas), eps=ocfg.eps,
                                   weight_decay=ocfg.weight_decay)
        total = ph.steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lcfg.factor(s, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1,
                                                   "name": "lr"}}

    # -- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["synthface"] = {**self.phase_state(), "phase_name": self.phase.name,
                                   "global_step": self.phase.start + int(self._trainer.global_step)
                                   if self._trainer is not None else None,
                                   "loss_log": list(self.loss_log),
                                   "config": config_to_dict(self.cfg)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("synthface")
        if not info:
            return
        if info.get("phase") is not None and int(info["phase"]) != self.phase_index:
            raise RuntimeError(f"checkpoint belongs to phase {info.get('phase_name')} (#{info['phase']}) but the "
                               f"module is in phase #{self.phase_index}")
        self._adopt_state(info)
        self.loss_log = [tuple(x) for x in info.get("loss_log", [])]


# ----------------------------------------------------------------------------------------------
# callbacks
# ----------------------------------------------------------------------------------------------


class ProgressPrinter(_ProgressPrinter):
    """Print one line every ``every`` steps: phase, global step, loss, lr, images/s."""

    def __init__(self, every: int = 50, printer: Callable[[str], None] = print):
        super().__init__(every, printer, ips_digits=0)

    def opening(self, trainer, pl_module) -> str:
        ph = pl_module.phase
        return (f"[{ph.name}] phase {ph.index + 1}/{len(pl_module.curriculum.phases)}: global steps "
                f"{ph.start}..{ph.end} ({ph.steps} steps), starting at {ph.start + trainer.global_step}, "
                f"{pl_module.num_classes} classes, frozen params: {len(pl_module.frozen_params)}")

    def position(self, trainer, pl_module) -> tuple[str, int, int, int, int]:
        ph, cur = pl_module.phase, pl_module.curriculum
        return f"[{ph.name}] ", ph.start + int(trainer.global_step), cur.total_steps, ph.steps, cur.batch_size


class PeriodicEval(L.Callback):
    """Run ``evaluate(backbone, global_step) -> {metric: value}`` every ``every_n_steps`` on rank 0
    and log the values."""

    def __init__(self, evaluate: Callable[[nn.Module, int], Mapping[str, float]], every_n_steps: int):
        super().__init__()
        self.evaluate = evaluate
        self.every = int(every_n_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if self.every <= 0 or step == 0 or step % self.every:
            return
        if trainer.is_global_zero:
            gstep = pl_module.phase.start + step
            metrics = dict(self.evaluate(pl_module.backbone, gstep))
            pl_module.backbone.train()
            for lg in trainer.loggers:
                lg.log_metrics({f"val/{k}": float(v) for k, v in metrics.items()}, step=step)
        trainer.strategy.barrier("PeriodicEval")


def _imprint_items(src: Any, max_per_id: int) -> list[tuple[int, int]]:
    """Items ``(0, index)`` covering up to ``max_per_id`` images of every class of ``src``."""
    if hasattr(src, "labels") and hasattr(src, "indices"):  # MapSource: first images of each identity
        lab = np.asarray(src.labels)
        order = np.argsort(lab, kind="stable")
        first = np.searchsorted(lab[order], lab[order], side="left")
        rank = np.arange(len(order)) - first
        return [(0, int(i)) for i in np.sort(order[rank < max_per_id])]
    n_ids = int(src.num_classes)
    per = int(getattr(src, "per_id", 1) or 1)
    return [(0, q * n_ids + i) for q in range(min(per, max_per_id)) for i in range(n_ids)]
