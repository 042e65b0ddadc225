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
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as L
import torch
import torch.nn.functional as F

from engine.interface import generator
from training.curriculum import ConfigError, config_to_dict

from ..config import DataConfig, LoopConfig, config_changes, tristate
from ..resume import EMAUpdate, StepBatchSampler, rng_state, set_rng_state
from .model import DiffusionModel
from .sampling import SOLVERS
from .schedule import ScheduleConfig
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
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def validate(self, path: str = "") -> None:
        if self.kind != "diffusion":
            raise ConfigError(f"kind: expected 'diffusion', got {self.kind!r}")
        if self.encoder in (None, ""):
            raise ConfigError("encoder: required: a training/ backbone run dir, 'ARCH:PATH' of an arcface_torch .pth, "
                              "or a mapping {arch, checkpoint, embedding_size, input_size}")


CONFIG_CLASS = DiffusionTrainConfig


def resolve_paths(cfg: DiffusionTrainConfig, base_dirs: list[Path]) -> DiffusionTrainConfig:
    from training.curriculum import resolve_path

    cfg.data.path = resolve_path(cfg.data.path, base_dirs)
    if cfg.data.exclude_from_pairs is not None:
        cfg.data.exclude_from_pairs.pairs = resolve_path(cfg.data.exclude_from_pairs.pairs, base_dirs)
    cfg.data.exclude_people_file = resolve_path(cfg.data.exclude_people_file, base_dirs)
    enc = cfg.encoder
    if isinstance(enc, str):
        if ":" in enc and not os.path.exists(enc):
            arch, _, p = enc.partition(":")
            cfg.encoder = f"{arch}:{resolve_path(p, base_dirs)}"
        else:
            cfg.encoder = resolve_path(enc, base_dirs)
    elif isinstance(enc, dict):
        enc = dict(enc)
        for k in ("path", "checkpoint"):
            if enc.get(k):
                enc[k] = resolve_path(enc[k], base_dirs)
        cfg.encoder = enc
    return cfg


# ----------------------------------------------------------------------------------------------
# Lightning module
# ----------------------------------------------------------------------------------------------


class DiffusionModule(L.LightningModule):
    """Trains :class:`DiffusionModel` (``self.model``) and keeps its EMA (``self.ema``)."""

    def __init__(self, cfg: DiffusionTrainConfig):
        super().__init__()
        self.cfg = cfg
        self.model = DiffusionModel(cfg.model, cfg.schedule, cfg.data.image_size)
        self.ema = copy.deepcopy(self.model)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.loss_log: list[tuple[int, float]] = []
        self._compiled = None

    # -- device setup
    def setup(self, stage: str) -> None:
        cuda = self.device.type == "cuda" or (torch.cuda.is_available() and self.cfg.train.accelerator in ("auto", "gpu", "cuda"))
        self._channels_last = tristate(self.cfg.train.channels_last, cuda)
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.cfg.train.compile and self._compiled is None:
            self.__dict__["_compiled"] = torch.compile(self.model)

    def _net(self):
        return self._compiled if self._compiled is not None else self.model

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x = batch["image"].float().div_(127.5).sub_(1.0)
        p = self.cfg.data.flip
        if p > 0:
            flip = torch.rand(x.shape[0], device=x.device) < p
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if getattr(self, "_channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        return {"x": x, "cond": batch["embedding"].float(), "label": batch["label"]}

    def diffusion_loss(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        t = torch.rand(B, device=x.device)
        eps = torch.randn_like(x)
        z, v = self.model.schedule.add_noise(x, t, eps)
        drop = torch.rand(B, device=x.device) < self.cfg.diffusion.cond_drop
        pred = self._net()(z, t, cond, drop=drop)
        return F.mse_loss(pred.float(), v.float())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch["x"], batch["cond"])
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        if self.global_step % max(1, self.cfg.train.log_every) == 0:
            self.loss_log.append((int(self.global_step), float(loss.detach())))
        return loss

    @torch.no_grad()
    def update_ema(self) -> None:
        step = int(self.global_step)
        d = min(self.cfg.train.ema_decay, (1 + step) / (10 + step))
        ema_p = [p for p in self.ema.parameters()]
        src_p = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(ema_p, src_p, 1.0 - d)
        for eb, b in zip(self.ema.buffers(), self.model.buffers()):
            eb.copy_(b)


    def configure_optimizers(self):
        t = self.cfg.train
        cuda = self.device.type == "cuda"
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            (no_decay if p.ndim <= 1 or n.endswith("null_embedding") else decay).append(p)
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        kw = {"fused": True} if tristate(t.fused_adam, cuda) and cuda else {}
        opt = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), **kw)
        total, warm = t.steps, max(0, t.warmup_steps)

        def factor(s: int) -> float:
            w = min(1.0, (s + 1) / warm) if warm else 1.0
            if t.lr_schedule == "cosine":
                w *= 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total))))
            return w

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1, "name": "lr"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["synthface"] = {"loss_log": list(self.loss_log), "config": config_to_dict(self.cfg),
                                   "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("synthface") or {}
        self.loss_log = [tuple(x) for x in info.get("loss_log", [])]
        set_rng_state(info.get("rng"))


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


class Exporter(L.Callback):
    """Export ``<out>/checkpoint`` (config.json + ema.pt + model.pt) every ``every`` steps and at
    the end, and write a sample grid every ``sample_every`` steps and at the end."""

    def __init__(self, out: Path, cfg: DiffusionTrainConfig, encoder_spec: dict, data_info: dict,
                 grid_cond: torch.Tensor, printer: Callable[[str], None] = print):
        super().__init__()
        self.out, self.cfg, self.encoder_spec, self.data_info = out, cfg, encoder_spec, data_info
        self.grid_cond = grid_cond
        self.printer = printer
        self._exported: int | None = None
        self._sampled: int | None = None

    def export(self, trainer, pl_module: DiffusionModule) -> None:
        from ..checkpoint import save_checkpoint

        step = int(trainer.global_step)
        if self._exported == step or not trainer.is_global_zero:
            return
        cfgd = checkpoint_config(self.cfg, pl_module.model, self.encoder_spec, self.data_info, step)
        save_checkpoint(self.out / "checkpoint", cfgd, {"ema": pl_module.ema, "raw": pl_module.model})
        self._exported = step

    def grid(self, trainer, pl_module: DiffusionModule) -> Path | None:
        from engine.contact_sheet import contact_sheet, save_png

        step = int(trainer.global_step)
        if self._sampled == step or not trainer.is_global_zero or self.grid_cond.numel() == 0:
            return None
        s = self.cfg.sample
        G, K = self.grid_cond.shape[0], s.grid_noises
        cond = self.grid_cond.to(pl_module.device).repeat_interleave(K, 0)
        gens = [generator(self.cfg.seed, "grid", i, k) for i in range(G) for k in range(K)]
        ema = pl_module.ema
        was = ema.training
        ema.eval()
        imgs = ema.sample(cond, gens, steps=s.steps, solver=s.solver, guidance=s.guidance, eta=s.eta, clip=s.clip)
        ema.train(was)
        path = self.out / "samples" / f"step-{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(contact_sheet((imgs.float().cpu() + 1) / 2, nrow=K), path)
        self._sampled = step
        return path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        t = self.cfg.train
        if t.checkpoint_every > 0 and step % t.checkpoint_every == 0:
            self.export(trainer, pl_module)
        if t.sample_every > 0 and step % t.sample_every == 0:
            self.grid(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.export(trainer, pl_module)
        self.grid(trainer, pl_module)


class ProgressLine(L.Callback):
    """One printed line every ``every`` steps: step, loss, lr, images/s."""

    def __init__(self, every: int, batch_size: int, total: int, printer: Callable[[str], None] = print):
        super().__init__()
        self.every, self.batch_size, self.total, self.printer = max(1, every), batch_size, total, printer
        self._t0, self._s0 = 0.0, 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0, self._s0 = time.perf_counter(), int(trainer.global_step)
        self.printer(f"learned.train: step {self._s0}/{self.total}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if step % self.every and step != self.total:
            return
        dt = max(time.perf_counter() - self._t0, 1e-9)
        ips = (step - self._s0) * self.batch_size * trainer.world_size / dt
        loss = float(outputs["loss"]) if isinstance(outputs, dict) and "loss" in outputs else float("nan")
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.printer(f"learned.train: step {step}/{self.total} loss {loss:.4f} lr {lr:.3g} {ips:.1f} img/s")


# ----------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------


def run_training(cfg: DiffusionTrainConfig, out_dir: str | os.PathLike | None = None, *, fresh: bool = False,
                 printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) ``cfg`` into ``out_dir`` (default ``cfg.out``); returns the metrics dict."""
    from lightning.pytorch.loggers import CSVLogger

    from training.module import AtomicCheckpoint, atomic_write_text

    from ..data import FaceTrainSet, batch_identity, cached_embeddings
    from ..encoder import load_encoder

    for pat in (".*does not have many workers.*", ".*resuming from a checkpoint that ended before the epoch ended.*",
                ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*", ".*overridden `on_after_batch_transfer`.*",
                ".*GPU available but not used.*", ".*precision.*is not supported.*",
                ".*smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", pat)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    t_start = time.time()
    out = Path(out_dir or cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "last.ckpt"
    cfg_path = out / "train_config.json"
    if fresh:
        for p in (ckpt, cfg_path, out / "metrics.json"):
            p.unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoint", ignore_errors=True)

    cuda_wanted = cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = "cuda" if cuda_wanted else "cpu"
    encoder = load_encoder(cfg.encoder, device=device, allow_random=cfg.allow_random_encoder)
    if cfg.model.embedding_dim != encoder.embedding_size:
        cfg.model.embedding_dim = encoder.embedding_size
    cfgd = config_to_dict(cfg)
    cfgd["encoder_resolved"] = encoder.spec
    if cfg_path.is_file() and ckpt.is_file():
        old = json.loads(cfg_path.read_text())
        diff = config_changes(old, cfgd)
        if diff:
            raise ConfigError(f"{out} holds a run with a different config ({', '.join(diff[:6])}); "
                              "use another --out, or --fresh to start over")
    atomic_write_text(cfg_path, json.dumps(cfgd, indent=2, default=str))

    data = FaceTrainSet(cfg.data.path, cfg.data.image_size, cfg.data.format, cfg.data.max_images,
                        exclude_people=cfg.data.excluded_people())
    printer(f"learned.train: {len(data)} images of {data.num_identities} identities from {data.path} "
            + (f"({data.excluded_people} people excluded) " if data.excluded_people else "")
            + f"at {cfg.data.image_size} px, encoder {encoder.spec}")
    emb = cached_embeddings(data, encoder, out / "cache", cfg.data.embed_batch_size, log=printer)
    data.attach_embeddings(emb, cfg.data.condition)
    if cfg.data.preload:
        data.preload()
    encoder_spec = dict(encoder.spec)
    del encoder
    if device == "cuda":
        torch.cuda.empty_cache()
    data_info = {"path": data.path, "format": data.source.kind, "num_images": len(data),
                 "num_identities": data.num_identities, "fingerprint": data.fingerprint()["content"]}
    grid_idx = data.first_of_each_identity(cfg.sample.grid_identities)
    grid_cond = data.embeddings[grid_idx] if grid_idx else torch.zeros(0, encoder_spec.get("embedding_size", 1))

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = DiffusionModule(cfg)
    sampler = StepBatchSampler(len(data), cfg.train.batch_size, cfg.seed)
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=sampler, collate_fn=batch_identity, num_workers=0 if cfg.data.preload else cfg.data.workers,
        generator=torch.Generator().manual_seed(cfg.seed),  # worker seeds; the global RNG stays untouched
        pin_memory=device == "cuda", persistent_workers=False if cfg.data.preload else cfg.data.workers > 0)
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16-mixed" if device == "cuda" else "32-true"
    callbacks = [EMAUpdate(), AtomicCheckpoint(out, cfg.train.checkpoint_every),
                 Exporter(out, cfg, encoder_spec, data_info, grid_cond, printer),
                 ProgressLine(cfg.train.log_every, cfg.train.batch_size, cfg.train.steps, printer)]
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=cfg.train.devices, precision=precision,
        max_steps=cfg.train.steps, max_epochs=-1, logger=[CSVLogger(save_dir=str(out), name="logs")],
        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=cfg.train.progress_bar,
        enable_model_summary=False, log_every_n_steps=max(1, cfg.train.log_every),
        gradient_clip_val=cfg.train.grad_clip or None, num_sanity_val_steps=0, limit_val_batches=0,
        default_root_dir=str(out), benchmark=True if device == "cuda" else None,
    )
    sampler.start_step = lambda: int(trainer.global_step)  # batch s of the run, also after a resume
    resume = str(ckpt) if ckpt.is_file() else None
    if resume:
        printer(f"learned.train: resuming from {ckpt}")
    trainer.fit(module, train_dataloaders=loader, ckpt_path=resume)
    losses = [v for _, v in module.loss_log]
    k = max(1, len(losses) // 5)
    metrics = {
        "kind": "diffusion", "name": cfg.name, "global_step": int(trainer.global_step), "steps": cfg.train.steps,
        "loss_first": float(sum(losses[:k]) / k) if losses else None,
        "loss_last": float(sum(losses[-k:]) / k) if losses else None,
        "loss_log": module.loss_log, "checkpoint": str(out / "checkpoint"),
        "samples": sorted(str(p) for p in (out / "samples").glob("*.png")),
        "device": device, "precision": precision, "wall_s": round(time.time() - t_start, 2),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
    printer(f"learned.train: done, step {metrics['global_step']}/{cfg.train.steps} -> {out / 'checkpoint'}")
    return metrics
