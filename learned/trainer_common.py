"""What the ``kind: diffusion`` and ``kind: gan`` trainers share: path resolution, the Lightning module
plumbing (batch decoding, EMA update, learning-rate schedule, ``last.ckpt`` extras), the exporter
callback, and the run loop (run directory, resume, config check, data, Trainer).

Each trainer supplies what differs: its config, its Lightning module, how the exported checkpoint's
config and weights are made, how a sample grid is drawn, what the progress line prints and which loss
summaries go into ``metrics.json``. See :mod:`learned.diffusion.trainer` for the run directory.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as L
import torch

from common.config import ConfigError, config_to_dict, resolve_path
from common.io import atomic_write_text
from common.progress import ProgressPrinter

from .config import LoopConfig, config_changes, tristate
from engine.interface import derive_seed

from .resume import EMAUpdate, StepBatchSampler, rng_state, set_rng_state


def resolve_paths(cfg, base_dirs: list[Path]):
    """Make the data paths and the encoder spec's paths absolute (cwd, config dir, repo root)."""

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


def validate_kind_and_encoder(cfg, kind: str) -> None:
    """The checks every learned training config makes: its ``kind``, and an ``encoder`` given."""
    if cfg.kind != kind:
        raise ConfigError(f"kind: expected {kind!r}, got {cfg.kind!r}")
    if cfg.encoder in (None, ""):
        raise ConfigError("encoder: required: a training/ backbone run dir, 'ARCH:PATH' of an arcface_torch .pth, "
                          "or a mapping {arch, checkpoint, embedding_size, input_size}")


# ----------------------------------------------------------------------------------------------
# Lightning module plumbing
# ----------------------------------------------------------------------------------------------


class LearnedModule(L.LightningModule):
    """Base of the trainers' Lightning modules (``self.cfg``: the run config, ``self.loss_log``: the
    logged losses): decodes batches, decides channels_last in :meth:`setup` (subclasses convert their
    networks after ``super().setup``) and keeps the loss log and the global RNG in ``last.ckpt``."""

    _channels_last = False
    #: under DDP, steps that leave some parameters out of the loss (the GAN's alternating G / D steps)
    ddp_unused_parameters = False

    def setup(self, stage: str) -> None:
        cuda = self.device.type == "cuda" or (torch.cuda.is_available() and self.cfg.train.accelerator in ("auto", "gpu", "cuda"))
        self._channels_last = tristate(self.cfg.train.channels_last, cuda)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x = batch["image"].float().div_(127.5).sub_(1.0)
        p = self.cfg.data.flip
        if p > 0:
            flip = torch.rand(x.shape[0], device=x.device) < p
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return {"x": x, "cond": batch["embedding"].float(), "label": batch["label"]}

    def on_train_start(self) -> None:
        # data-parallel ranks draw their own noise / timesteps / flips: rank r > 0 of a fresh run
        # reseeds its global RNG (rank 0 keeps the single-process stream); a resumed run restores each
        # rank's saved state instead
        if self.trainer.world_size > 1 and self.trainer.global_rank > 0 and not self._resumed:
            torch.manual_seed(derive_seed(self.cfg.seed, "learned-rank", self.trainer.global_rank))

    def global_mean(self, value: torch.Tensor) -> float:
        """``value`` averaged over the data-parallel ranks (a collective: every rank calls it)."""
        v = value.detach()
        return float(self.all_gather(v).mean() if self.trainer.world_size > 1 else v)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # every rank's RNG state (rank 0 writes the file): the collective runs on all ranks
        states = [rng_state()]
        if self.trainer.world_size > 1:
            import torch.distributed as dist

            states = [None] * self.trainer.world_size
            dist.all_gather_object(states, rng_state())
        checkpoint["synthface"] = {"loss_log": list(self.loss_log), "config": config_to_dict(self.cfg),
                                   "rng": states[0], "rng_ranks": states}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("synthface") or {}
        self.loss_log = [tuple(x) for x in info.get("loss_log", [])]
        ranks = info.get("rng_ranks") or [info.get("rng")]
        rank = self.trainer.global_rank if self._trainer is not None else 0
        set_rng_state(ranks[rank] if rank < len(ranks) else None)
        self._resumed = True

    _resumed = False


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """One EMA update of ``ema`` toward ``model`` with the decay warmed up as
    ``min(decay, (1 + step) / (10 + step))``; buffers are copied."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)


def adam_kwargs(t: LoopConfig, device: torch.device) -> dict[str, Any]:
    """``fused=True`` where ``train.fused_adam`` asks for it and the module is on CUDA."""
    cuda = device.type == "cuda"
    return {"fused": True} if tristate(t.fused_adam, cuda) and cuda else {}


def lr_factor(t: LoopConfig) -> Callable[[int], float]:
    """The learning-rate multiplier of step ``s``: linear warm-up over ``train.warmup_steps``, then
    cosine decay to 0 at ``train.steps`` when ``train.lr_schedule`` is ``cosine``."""
    total, warm = t.steps, max(0, t.warmup_steps)

    def factor(s: int) -> float:
        w = min(1.0, (s + 1) / warm) if warm else 1.0
        if t.lr_schedule == "cosine":
            w *= 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total))))
        return w

    return factor


# ----------------------------------------------------------------------------------------------
# callbacks
# ----------------------------------------------------------------------------------------------


class Exporter(L.Callback):
    """Export ``<out>/checkpoint`` (config.json + ema.pt + model.pt) every ``checkpoint_every`` steps
    and at the end, and write a sample grid ``<out>/samples/step-NNNNNNN.png`` (rows = the
    identities of ``grid_cond``) every ``sample_every`` steps and at the end.

    Subclasses supply :meth:`checkpoint` (the config dict and the weights to save) and
    :meth:`sample_grid` (the grid's images, row-major)."""

    def __init__(self, out: Path, cfg, encoder_spec: dict, data_info: dict, grid_cond: torch.Tensor,
                 cond_stats: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.out, self.cfg, self.encoder_spec, self.data_info = out, cfg, encoder_spec, data_info
        self.grid_cond = grid_cond
        self.cond_stats = cond_stats  # saved beside the weights (identity.mode=fitted)
        self._exported: int | None = None
        self._sampled: int | None = None

    def checkpoint(self, pl_module, step: int) -> tuple[dict[str, Any], dict[str, torch.nn.Module]]:
        """``(config.json dict, {"ema": ..., "raw": ...})`` of the checkpoint at ``step``."""
        raise NotImplementedError

    def sample_grid(self, pl_module, cond: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """The ``rows * cols`` grid images in [-1, 1] for ``cond`` (each identity repeated ``cols`` times)."""
        raise NotImplementedError

    def grid_columns(self) -> int:
        raise NotImplementedError

    def export(self, trainer, pl_module) -> None:
        from .checkpoint import save_checkpoint

        step = int(trainer.global_step)
        if self._exported == step or not trainer.is_global_zero:
            return
        cfgd, models = self.checkpoint(pl_module, step)
        save_checkpoint(self.out / "checkpoint", cfgd, models, cond_stats=self.cond_stats)
        self._exported = step

    def grid(self, trainer, pl_module) -> Path | None:
        from engine.contact_sheet import contact_sheet, save_png

        step = int(trainer.global_step)
        if self._sampled == step or not trainer.is_global_zero or self.grid_cond.numel() == 0:
            return None
        G, K = self.grid_cond.shape[0], self.grid_columns()
        cond = self.grid_cond.to(pl_module.device).repeat_interleave(K, 0)
        imgs = self.sample_grid(pl_module, cond, G, K)
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


# ----------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------


def quiet_lightning() -> None:
    """Silence the Lightning warnings and info lines that say nothing about a learned run."""
    for pat in (".*does not have many workers.*", ".*resuming from a checkpoint that ended before the epoch ended.*",
                ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*", ".*overridden `on_after_batch_transfer`.*",
                ".*GPU available but not used.*", ".*precision.*is not supported.*",
                ".*smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", pat)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_training(cfg, out_dir: str | os.PathLike | None, *, fresh: bool, printer: Callable[[str], None],
                 build_module: Callable[[Any, Any], L.LightningModule], keep_encoder: bool,
                 exporter: Callable[..., Exporter], describe: Callable[[Any], str],
                 loss_metrics: Callable[[list], dict[str, Any]], check_kind: bool = False,
                 gradient_clip_val: float | None = None) -> dict[str, Any]:
    """Train (or resume) ``cfg`` into ``out_dir`` (default ``cfg.out``); returns the metrics dict.

    ``build_module(cfg, encoder)``: the Lightning module (``encoder`` is the frozen FR encoder when
    ``keep_encoder``, else None: it is released once the embeddings are cached);
    ``exporter(out, cfg, encoder_spec, data_info, grid_cond, cond_stats)``: the :class:`Exporter`;
    ``describe``: the progress line's loss text; ``loss_metrics(loss_log)``: the loss summaries of
    ``metrics.json``; ``check_kind``: refuse a run dir of another kind with its own message (else the
    config check refuses it); ``gradient_clip_val``: Lightning's (automatic optimisation only)."""
    from lightning.pytorch.loggers import CSVLogger

    from common.checkpoint import AtomicCheckpoint

    from .checkpoint import condition_stats
    from .data import FaceTrainSet, batch_identity, cached_embeddings
    from .encoder import load_encoder

    quiet_lightning()
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
    cfg.model.embedding_dim = encoder.embedding_size
    cfgd = config_to_dict(cfg)
    cfgd["encoder_resolved"] = encoder.spec
    if cfg_path.is_file() and ckpt.is_file():
        old = json.loads(cfg_path.read_text())
        if check_kind and old.get("kind", "diffusion") != cfg.kind:
            raise ConfigError(f"{out} holds a {old.get('kind', 'diffusion')!r} run, not a {cfg.kind!r} one; "
                              "use another --out")
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
    data_info = {"path": data.path, "format": data.source.kind, "num_images": len(data),
                 "num_identities": data.num_identities, "fingerprint": data.fingerprint()["content"]}
    grid_idx = data.first_of_each_identity(cfg.sample.grid_identities)
    grid_cond = data.embeddings[grid_idx] if grid_idx else torch.zeros(0, encoder.embedding_size)
    if not keep_encoder:
        encoder = None
        if device == "cuda":
            torch.cuda.empty_cache()

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(cfg, encoder)
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16-mixed" if device == "cuda" else "32-true"
    callbacks = [EMAUpdate(), AtomicCheckpoint(out, cfg.train.checkpoint_every),
                 exporter(out, cfg, encoder_spec, data_info, grid_cond,
                          condition_stats(data.embeddings) if len(data) >= 2 else None),
                 ProgressPrinter(cfg.train.log_every, printer, total=cfg.train.steps, batch_size=cfg.train.batch_size,
                                 label="learned.train: ", describe=describe)]
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=cfg.train.devices, num_nodes=cfg.train.num_nodes,
        strategy=("ddp_find_unused_parameters_true" if cfg.train.strategy == "ddp" and module.ddp_unused_parameters
                  else cfg.train.strategy), precision=precision,
        max_steps=cfg.train.steps, max_epochs=-1, logger=[CSVLogger(save_dir=str(out), name="logs")],
        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=cfg.train.progress_bar,
        enable_model_summary=False, log_every_n_steps=max(1, cfg.train.log_every),
        gradient_clip_val=gradient_clip_val, num_sanity_val_steps=0, limit_val_batches=0,
        default_root_dir=str(out), benchmark=True if device == "cuda" else None,
        use_distributed_sampler=False,  # the rank-aware StepBatchSampler below
    )
    # batch_size is per process: the global batch of step s is split over the ranks (world size known
    # from the launcher's environment once the Trainer exists)
    sampler = StepBatchSampler(len(data), cfg.train.batch_size, cfg.seed, rank=trainer.global_rank,
                               world_size=trainer.world_size)
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=sampler, collate_fn=batch_identity, num_workers=0 if cfg.data.preload else cfg.data.workers,
        generator=torch.Generator().manual_seed(cfg.seed),  # worker seeds; the global RNG stays untouched
        pin_memory=device == "cuda", persistent_workers=False if cfg.data.preload else cfg.data.workers > 0)
    sampler.start_step = lambda: int(trainer.global_step)  # batch s of the run, also after a resume
    resume = str(ckpt) if ckpt.is_file() else None
    if resume:
        printer(f"learned.train: resuming from {ckpt}")
    trainer.fit(module, train_dataloaders=loader, ckpt_path=resume)
    metrics = {
        "kind": cfg.kind, "name": cfg.name, "global_step": int(trainer.global_step), "steps": cfg.train.steps,
        **loss_metrics(module.loss_log),
        "loss_log": module.loss_log, "checkpoint": str(out / "checkpoint"),
        "samples": sorted(str(p) for p in (out / "samples").glob("*.png")),
        "device": device, "precision": precision, "wall_s": round(time.time() - t_start, 2),
    }
    if trainer.is_global_zero:  # one writer under DDP
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
        printer(f"learned.train: done, step {metrics['global_step']}/{cfg.train.steps} -> {out / 'checkpoint'}")
    return metrics
