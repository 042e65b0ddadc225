"""``kind: diffusion`` trainer: Lightning module, config schema and the run loop.

Training objective: v-prediction MSE at ``t ~ U(0, 1)`` under the cosine schedule, the identity
condition replaced by the learned null embedding for a fraction ``diffusion.cond_drop`` of each batch
(Contextual Partial Dropout, p = 0.25 as in IDiff-Face; it also trains the unconditional branch that
classifier-free guidance needs). EMA of the weights (``train.ema_decay``, warmed up as
``min(decay, (1 + step) / (10 + step))``). On CUDA: bf16 autocast, channels_last, fused AdamW.

Run directory (``--out``)::

    train_config.json    resolved config (a rerun must match it, apart from RESUMABLE_CHANGES)
    last.ckpt            Lightning training state, written atomically every checkpoint_every steps
    checkpoint/          config.json + ema.pt + model.pt (what sources load; see learned.checkpoint)
    samples/step-NNNNNNN.png   sample grids (rows = identities, columns = noises)
    logs/                CSV logs (loss, lr)
    cache/               encoder embeddings of the training images
    metrics.json         final summary
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from common.config import ConfigError, config_to_dict
from common.progress import describe_loss
from engine.interface import generator

from .. import trainer_common
from ..config import DataConfig, LoopConfig
from ..trainer_common import LearnedModule, adam_kwargs, lr_factor
from ..trainer_common import resolve_paths  # noqa: F401  (learned.train's trainer interface)
from .model import DiffusionModel
from .sampling import SOLVERS
from .schedule import ScheduleConfig
from .style import StyleConfig
from .unet import UNetConfig

log = logging.getLogger(__name__)


@dataclass
class ConditionConfig:
    """``cond_drop``: probability that an image's identity condition is replaced by the null
    embedding during training (Contextual Partial Dropout)."""

    cond_drop: float = 0.25

    def validate(self, path: str = "diffusion") -> None:
        if not 0.0 <= self.cond_drop < 1.0:
            raise ConfigError(f"{path}.cond_drop must be in [0, 1)")


@dataclass
class SampleConfig:
    """Sampling defaults saved with the checkpoint (a source may override them), and the sample grid."""

    solver: str = "dpmpp2m"
    steps: int = 25
    guidance: float = 2.0
    eta: float = 0.0
    clip: bool = True
    grid_identities: int = 4
    grid_noises: int = 6

    def validate(self, path: str = "sample") -> None:
        if self.solver not in SOLVERS:
            raise ConfigError(f"{path}.solver: use one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.steps < 1:
            raise ConfigError(f"{path}.steps must be >= 1")
        if self.guidance < 0:
            raise ConfigError(f"{path}.guidance must be >= 0")


@dataclass
class DiffusionTrainConfig:
    """A ``kind: diffusion`` training config (YAML). ``encoder``: spec of the frozen FR encoder (see
    :mod:`learned.encoder`); ``allow_random_encoder``: accept an untrained seeded encoder (tests only).
    ``model.embedding_dim`` is set from the encoder."""

    kind: str = "diffusion"
    name: str = "diffusion"
    seed: int = 0
    out: str = "runs/learned/diffusion"
    encoder: Any = None
    allow_random_encoder: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    diffusion: ConditionConfig = field(default_factory=ConditionConfig)
    style: StyleConfig = field(default_factory=StyleConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def validate(self, path: str = "") -> None:
        trainer_common.validate_kind_and_encoder(self, "diffusion")
        self.style.check_image_size(self.data.image_size)


CONFIG_CLASS = DiffusionTrainConfig


# ----------------------------------------------------------------------------------------------
# Lightning module
# ----------------------------------------------------------------------------------------------


class DiffusionModule(LearnedModule):
    """Trains :class:`DiffusionModel` (``self.model``) and keeps its EMA (``self.ema``)."""

    def __init__(self, cfg: DiffusionTrainConfig):
        super().__init__()
        self.cfg = cfg
        self.model = DiffusionModel(cfg.model, cfg.schedule, cfg.data.image_size, cfg.style)
        self.ema = copy.deepcopy(self.model)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.loss_log: list[tuple[int, float]] = []
        self._compiled = None

    # -- device setup
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.cfg.train.compile and self._compiled is None:
            self.__dict__["_compiled"] = torch.compile(self.model)

    def _net(self):
        return self._compiled if self._compiled is not None else self.model

    def diffusion_loss(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        t = torch.rand(B, device=x.device)
        eps = torch.randn_like(x)
        z, v = self.model.schedule.add_noise(x, t, eps)
        drop = torch.rand(B, device=x.device) < self.cfg.diffusion.cond_drop
        if not self.cfg.style.enabled:
            pred = self._net()(z, t, cond, drop=drop)
        else:
            st = self.cfg.style
            src = x
            if st.flip > 0:
                fl = torch.rand(B, device=x.device) < st.flip
                src = torch.where(fl[:, None, None, None], x.flip(-1), x)
            style = self.model.style_of(src)
            style_drop = torch.rand(B, device=x.device) < st.drop
            pred = self._net()(z, t, cond, drop=drop, style=style, style_drop=style_drop)
        return F.mse_loss(pred.float(), v.float())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch["x"], batch["cond"])
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        if self.global_step % max(1, self.cfg.train.log_every) == 0:
            self.loss_log.append((int(self.global_step), self.global_mean(loss)))
        return loss

    def update_ema(self) -> None:
        trainer_common.update_ema(self.ema, self.model, int(self.global_step), self.cfg.train.ema_decay)

    def configure_optimizers(self):
        t = self.cfg.train
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            (no_decay if p.ndim <= 1 or n.endswith("null_embedding") else decay).append(p)
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), **adam_kwargs(t, self.device))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(t))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1, "name": "lr"}}


# ----------------------------------------------------------------------------------------------
# callbacks
# ----------------------------------------------------------------------------------------------


def checkpoint_config(cfg: DiffusionTrainConfig, model: DiffusionModel, encoder_spec: dict, data_info: dict,
                      step: int) -> dict[str, Any]:
    """The ``config.json`` of an exported diffusion checkpoint."""
    return {
        **model.config_dict(),
        "encoder": encoder_spec,
        "allow_random_encoder": bool(cfg.allow_random_encoder),
        "sample": config_to_dict(cfg.sample),
        "conditioning": {"cond_drop": cfg.diffusion.cond_drop, "condition": cfg.data.condition,
                         "embedding": "flip-averaged, L2-normalised encoder embedding"},
        "aligned": True,
        "data": data_info,
        "train": {"step": int(step), "name": cfg.name, "seed": cfg.seed, "batch_size": cfg.train.batch_size,
                  "lr": cfg.train.lr, "ema_decay": cfg.train.ema_decay},
    }


class Exporter(trainer_common.Exporter):
    """Exports the diffusion model (EMA and raw) with :func:`checkpoint_config`; the sample grid has
    ``sample.grid_noises`` columns (noise ``k`` of row ``i`` seeded by ``(seed, "grid", i, k)``)."""

    def checkpoint(self, pl_module: DiffusionModule, step: int) -> tuple[dict[str, Any], dict[str, torch.nn.Module]]:
        cfgd = checkpoint_config(self.cfg, pl_module.model, self.encoder_spec, self.data_info, step)
        return cfgd, {"ema": pl_module.ema, "raw": pl_module.model}

    def grid_columns(self) -> int:
        return self.cfg.sample.grid_noises

    def sample_grid(self, pl_module: DiffusionModule, cond: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        s = self.cfg.sample
        gens = [generator(self.cfg.seed, "grid", i, k) for i in range(rows) for k in range(cols)]
        ema = pl_module.ema
        was = ema.training
        ema.eval()
        imgs = ema.sample(cond, gens, steps=s.steps, solver=s.solver, guidance=s.guidance, eta=s.eta, clip=s.clip)
        ema.train(was)
        return imgs


# ----------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------


def loss_metrics(loss_log: list[tuple[int, float]]) -> dict[str, Any]:
    """Mean loss of the first and the last fifth of the logged steps."""
    losses = [v for _, v in loss_log]
    k = max(1, len(losses) // 5)
    return {"loss_first": float(sum(losses[:k]) / k) if losses else None,
            "loss_last": float(sum(losses[-k:]) / k) if losses else None}


def run_training(cfg: DiffusionTrainConfig, out_dir: str | os.PathLike | None = None, *, fresh: bool = False,
                 printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) ``cfg`` into ``out_dir`` (default ``cfg.out``); returns the metrics dict."""
    return trainer_common.run_training(
        cfg, out_dir, fresh=fresh, printer=printer, build_module=lambda cfg, encoder: DiffusionModule(cfg),
        keep_encoder=False, exporter=Exporter, describe=describe_loss, loss_metrics=loss_metrics,
        gradient_clip_val=cfg.train.grad_clip or None)
