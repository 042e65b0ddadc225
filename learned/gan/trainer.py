"""``kind: gan`` trainer: Lightning module (manual optimisation, two optimisers), config schema, run loop.

One training step (``train.batch_size`` real images ``x`` with their condition embeddings ``e``):

1. **Discriminator**: ``softplus(D(A(G(z, e)), e)) + softplus(-D(A(x), e))`` with DiffAugment ``A``
   (``gan.augment``) on both; every ``gan.r1_every`` steps plus the lazy R1 penalty
   ``r1_every * gamma / 2 * E ||grad_x D(A(x), e)||^2`` (Adam lr and betas of D adjusted for the lazy
   interval as in StyleGAN2).
2. **Generator**: ``softplus(-D(A(G(z', e)), e)) + gan.identity_weight * (1 - cos(F(G(z', e)), e))``
   with ``F`` the frozen FR encoder (IDnet-style identity loss; gradients flow through ``F`` into ``G``).
3. EMA of the generator (``train.ema_decay``, warmed up as ``min(decay, (1 + step) / (10 + step))``).

``trainer.global_step`` counts generator steps (= batches): the discriminator's optimiser is stepped
directly. On CUDA: bf16 autocast (``train.precision: auto``), channels_last, fused Adam.

The run directory is the diffusion trainer's (see :mod:`learned.diffusion.trainer`): ``train_config.json``,
atomic ``last.ckpt`` (generator, EMA, discriminator, optimisers: resume after ``kill -9`` by rerunning),
``checkpoint/`` (config.json + ema.pt + model.pt of the *generator*, what :class:`learned.gan.source.GANSource`
loads), ``samples/step-NNNNNNN.png`` grids (rows = identities, columns = latents: column ``k`` uses the
same ``z`` in every row), ``logs/`` (CSV), ``cache/`` (encoder embeddings), ``metrics.json``.
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

from engine.interface import generator
from training.curriculum import ConfigError, config_to_dict

from ..config import DataConfig, LoopConfig, config_changes, tristate
from ..resume import EMAUpdate, StepBatchSampler, rng_state, set_rng_state
from .augment import diff_augment, parse_policy
from .losses import d_logistic, g_nonsaturating, identity_loss, r1_penalty
from .model import NOISE_MODES, GANGenerator
from .networks import Discriminator, DiscriminatorConfig, GeneratorConfig

log = logging.getLogger(__name__)


@dataclass
class GANLossConfig:
    """``r1_gamma``: R1 weight (0 = off); ``r1_every``: lazy interval (steps); ``identity_weight``:
    weight of the identity loss (0 = off); ``augment``: DiffAugment policy (``""`` = none)."""

    r1_gamma: float = 1.0
    r1_every: int = 16
    identity_weight: float = 1.0
    augment: str = "color,translation,cutout"

    def validate(self, path: str = "gan") -> None:
        if self.r1_gamma < 0 or self.identity_weight < 0:
            raise ConfigError(f"{path}: r1_gamma and identity_weight must be >= 0")
        if self.r1_every < 1:
            raise ConfigError(f"{path}.r1_every must be >= 1")
        try:
            parse_policy(self.augment)
        except ValueError as e:
            raise ConfigError(f"{path}.augment: {e}") from None


@dataclass
class GANSampleConfig:
    """Sampling defaults saved with the checkpoint (a source may override them) and the sample grid.
    ``truncation``: psi toward the identity's mean w (1 = none); ``truncation_samples``: latents
    averaged for that mean; ``noise_mode``: random, const or none."""

    truncation: float = 1.0
    truncation_samples: int = 256
    noise_mode: str = "random"
    grid_identities: int = 4
    grid_variations: int = 6

    def validate(self, path: str = "sample") -> None:
        if not 0.0 <= self.truncation <= 1.0:
            raise ConfigError(f"{path}.truncation must be in [0, 1]")
        if self.truncation_samples < 1:
            raise ConfigError(f"{path}.truncation_samples must be >= 1")
        if self.noise_mode not in NOISE_MODES:
            raise ConfigError(f"{path}.noise_mode: use one of {', '.join(NOISE_MODES)}, got {self.noise_mode!r}")
        if self.grid_identities < 0 or self.grid_variations < 1:
            raise ConfigError(f"{path}: grid_identities must be >= 0 and grid_variations >= 1")


@dataclass
class GANLoopConfig(LoopConfig):
    """:class:`~learned.config.LoopConfig` with GAN defaults (StyleGAN2: lr 0.0025, Adam betas (0, 0.99),
    no warm-up, no clipping). ``lr`` is the generator's and the discriminator's; ``grad_clip`` > 0
    clips both. ``compile`` is not supported (R1 needs double backward through D)."""

    batch_size: int = 64
    lr: float = 2.5e-3
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    warmup_steps: int = 0
    grad_clip: float = 0.0
    ema_decay: float = 0.999

    def validate(self, path: str = "train") -> None:
        super().validate(path)
        if self.compile:
            raise ConfigError(f"{path}.compile: not supported by kind gan (the R1 penalty differentiates through D twice)")
        if self.precision not in ("auto", "32-true", "32", "bf16-mixed", "bf16-true"):
            raise ConfigError(f"{path}.precision: use auto, 32-true, bf16-mixed or bf16-true for kind gan "
                              f"(fp16 would need loss scaling for two optimisers), got {self.precision!r}")
        if self.grad_clip < 0:
            raise ConfigError(f"{path}.grad_clip must be >= 0")


@dataclass
class GANTrainConfig:
    """A ``kind: gan`` training config (YAML). ``encoder``: spec of the frozen FR encoder (see
    :mod:`learned.encoder`), used for the condition embeddings and the identity loss;
    ``allow_random_encoder``: accept an untrained seeded encoder (tests only). ``model.embedding_dim``
    is set from the encoder."""

    kind: str = "gan"
    name: str = "gan"
    seed: int = 0
    out: str = "runs/learned/gan"
    encoder: Any = None
    allow_random_encoder: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    gan: GANLossConfig = field(default_factory=GANLossConfig)
    sample: GANSampleConfig = field(default_factory=GANSampleConfig)
    train: GANLoopConfig = field(default_factory=GANLoopConfig)

    def validate(self, path: str = "") -> None:
        if self.kind != "gan":
            raise ConfigError(f"kind: expected 'gan', got {self.kind!r}")
        if self.encoder in (None, ""):
            raise ConfigError("encoder: required: a training/ backbone run dir, 'ARCH:PATH' of an arcface_torch .pth, "
                              "or a mapping {arch, checkpoint, embedding_size, input_size}")
        S, gl, dl = self.data.image_size, len(self.model.channels), len(self.discriminator.channels)
        if gl != dl:
            raise ConfigError(f"discriminator.channels: {dl} levels, the generator (model.channels) has {gl}")
        if S % 2 ** (gl - 1) or S // 2 ** (gl - 1) < 2:
            raise ConfigError(f"model.channels: {gl} levels do not fit data.image_size {S} (image_size / 2**(levels-1) "
                              f"must be an integer >= 2: 5 levels for 64 px (4x4 start) or 112 px (7x7 start))")


CONFIG_CLASS = GANTrainConfig


def resolve_paths(cfg: GANTrainConfig, base_dirs: list[Path]) -> GANTrainConfig:
    """Same path rules as the diffusion trainer (data path and encoder spec)."""
    from ..diffusion.trainer import resolve_paths as _resolve

    return _resolve(cfg, base_dirs)


# ----------------------------------------------------------------------------------------------
# Lightning module
# ----------------------------------------------------------------------------------------------


class GANModule(L.LightningModule):
    """Trains :class:`GANGenerator` (``self.G``) against :class:`Discriminator` (``self.D``) and keeps
    the generator's EMA (``self.G_ema``). ``encoder``: the frozen FR encoder of the identity loss
    (kept out of the state dict)."""

    def __init__(self, cfg: GANTrainConfig, encoder: torch.nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        S = cfg.data.image_size
        self.G = GANGenerator(cfg.model, S)
        self.D = Discriminator(cfg.discriminator, S, cfg.model.embedding_dim)
        self.G_ema = copy.deepcopy(self.G)  # train mode like G (no mode-dependent layers): no Lightning warning
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        self.__dict__["encoder"] = encoder
        if encoder is None and cfg.gan.identity_weight > 0:
            raise ValueError("gan.identity_weight > 0 needs the FR encoder")
        self.automatic_optimization = False
        self.policy = parse_policy(cfg.gan.augment)
        self.loss_log: list[tuple[int, float, float, float]] = []
        self._channels_last = False

    # -- device setup
    def setup(self, stage: str) -> None:
        cuda = self.device.type == "cuda" or (torch.cuda.is_available() and self.cfg.train.accelerator in ("auto", "gpu", "cuda"))
        self._channels_last = tristate(self.cfg.train.channels_last, cuda)
        if self._channels_last:
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)

    def on_fit_start(self) -> None:
        if self.encoder is not None:
            self.encoder.to(self.device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x = batch["image"].float().div_(127.5).sub_(1.0)
        p = self.cfg.data.flip
        if p > 0:
            flip = torch.rand(x.shape[0], device=x.device) < p
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return {"x": x, "cond": batch["embedding"].float(), "label": batch["label"]}

    # -- losses (also used by the unit tests)
    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.policy) if self.policy else x

    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        z = torch.randn(cond.shape[0], self.cfg.model.z_dim, device=cond.device)
        return self.G(z, cond, channels_last=self._channels_last)

    def d_loss(self, x: torch.Tensor, cond: torch.Tensor, r1: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        """Discriminator loss on reals ``x`` and fresh fakes (+ the lazy R1 term when ``r1``)."""
        with torch.no_grad():
            fake = self.generate(cond)
        fake_logits = self.D(self.augment(fake), cond)
        gl = self.cfg.gan
        if r1 and gl.r1_gamma > 0:
            pen, real_logits = r1_penalty(lambda t: self.D(self.augment(t), cond), x)
            reg = pen * (gl.r1_gamma / 2 * gl.r1_every)
        else:
            real_logits = self.D(self.augment(x), cond)
            pen, reg = None, 0.0
        loss = d_logistic(real_logits, fake_logits)
        stats = {"d_loss": float(loss.detach()), "real_logit": float(real_logits.detach().float().mean()),
                 "fake_logit": float(fake_logits.detach().float().mean())}
        if pen is not None:
            stats["r1"] = float(pen.detach())
        return loss + reg, stats

    def g_loss(self, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Non-saturating adversarial loss + weighted identity loss on fresh fakes."""
        fake = self.generate(cond)
        adv = g_nonsaturating(self.D(self.augment(fake), cond))
        loss, stats = adv, {"g_loss": float(adv.detach())}
        w = self.cfg.gan.identity_weight
        if w > 0:
            idl, cos = identity_loss(self.encoder, fake, cond)
            loss = loss + w * idl
            stats["id_loss"], stats["id_cos"] = float(idl.detach()), float(cos.mean())
        return loss, stats

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        x, cond = batch["x"], batch["cond"]
        step = int(self.global_step)
        clip = self.cfg.train.grad_clip

        # discriminator (stepped directly: global_step counts generator steps)
        self.toggle_optimizer(opt_d)
        d_total, stats = self.d_loss(x, cond, r1=step % self.cfg.gan.r1_every == 0)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_total)
        if clip > 0:
            self.clip_gradients(opt_d, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt_d.optimizer.step()
        self.untoggle_optimizer(opt_d)

        # generator
        self.toggle_optimizer(opt_g)
        g_total, gstats = self.g_loss(cond)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_total)
        if clip > 0:
            self.clip_gradients(opt_g, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        sched_g.step()
        sched_d.step()
        stats.update(gstats)
        stats["lr"] = float(opt_g.param_groups[0]["lr"])

        for k, v in stats.items():
            self.log(f"train/{k}", v, prog_bar=k in ("d_loss", "g_loss", "id_cos"), on_step=True, on_epoch=False)
        if step % max(1, self.cfg.train.log_every) == 0:
            self.loss_log.append((step, stats["d_loss"], stats["g_loss"], stats.get("id_cos", float("nan"))))
        return {"loss": torch.tensor(stats["g_loss"]), **stats}

    @torch.no_grad()
    def update_ema(self) -> None:
        step = int(self.global_step)
        d = min(self.cfg.train.ema_decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(self.G_ema.parameters()), [p.detach() for p in self.G.parameters()], 1.0 - d)
        for eb, b in zip(self.G_ema.buffers(), self.G.buffers()):
            eb.copy_(b)


    def configure_optimizers(self):
        t, gl = self.cfg.train, self.cfg.gan
        cuda = self.device.type == "cuda"
        kw = {"fused": True} if tristate(t.fused_adam, cuda) and cuda else {}
        b1, b2 = t.betas
        opt_g = torch.optim.AdamW(self.G.parameters(), lr=t.lr, betas=(b1, b2), weight_decay=t.weight_decay, **kw)
        c = gl.r1_every / (gl.r1_every + 1) if gl.r1_gamma > 0 else 1.0  # lazy regularisation (StyleGAN2)
        opt_d = torch.optim.AdamW(self.D.parameters(), lr=t.lr * c, betas=(b1 ** c, b2 ** c),
                                  weight_decay=t.weight_decay, **kw)
        total, warm = t.steps, max(0, t.warmup_steps)

        def factor(s: int) -> float:
            w = min(1.0, (s + 1) / warm) if warm else 1.0
            if t.lr_schedule == "cosine":
                w *= 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total))))
            return w

        return ([opt_g, opt_d], [{"scheduler": torch.optim.lr_scheduler.LambdaLR(o, factor), "interval": "step",
                                  "name": f"lr_{n}"} for o, n in ((opt_g, "g"), (opt_d, "d"))])

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


def checkpoint_config(cfg: GANTrainConfig, model: GANGenerator, encoder_spec: dict, data_info: dict,
                      step: int) -> dict[str, Any]:
    """The ``config.json`` of an exported GAN checkpoint (generator only)."""
    s = cfg.sample
    return {
        **model.config_dict(),
        "encoder": encoder_spec,
        "allow_random_encoder": bool(cfg.allow_random_encoder),
        "sample": {"truncation": s.truncation, "truncation_samples": s.truncation_samples, "noise_mode": s.noise_mode},
        "conditioning": {"condition": cfg.data.condition, "embedding": "flip-averaged, L2-normalised encoder embedding"},
        "gan": config_to_dict(cfg.gan),
        "discriminator": config_to_dict(cfg.discriminator),
        "aligned": True,
        "data": data_info,
        "train": {"step": int(step), "name": cfg.name, "seed": cfg.seed, "batch_size": cfg.train.batch_size,
                  "lr": cfg.train.lr, "ema_decay": cfg.train.ema_decay},
    }


class GANExporter(L.Callback):
    """Export ``<out>/checkpoint`` (config.json + ema.pt + model.pt of the generator) every
    ``checkpoint_every`` steps and at the end; a sample grid every ``sample_every`` steps and at the end."""

    def __init__(self, out: Path, cfg: GANTrainConfig, encoder_spec: dict, data_info: dict, grid_cond: torch.Tensor):
        super().__init__()
        self.out, self.cfg, self.encoder_spec, self.data_info = out, cfg, encoder_spec, data_info
        self.grid_cond = grid_cond
        self._exported: int | None = None
        self._sampled: int | None = None

    def export(self, trainer, pl_module: GANModule) -> None:
        from ..checkpoint import save_checkpoint

        step = int(trainer.global_step)
        if self._exported == step or not trainer.is_global_zero:
            return
        cfgd = checkpoint_config(self.cfg, pl_module.G, self.encoder_spec, self.data_info, step)
        save_checkpoint(self.out / "checkpoint", cfgd, {"ema": pl_module.G_ema, "raw": pl_module.G})
        self._exported = step

    def grid(self, trainer, pl_module: GANModule) -> Path | None:
        from engine.contact_sheet import contact_sheet, save_png

        step = int(trainer.global_step)
        if self._sampled == step or not trainer.is_global_zero or self.grid_cond.numel() == 0:
            return None
        s = self.cfg.sample
        G, K = self.grid_cond.shape[0], s.grid_variations
        cond = self.grid_cond.to(pl_module.device).repeat_interleave(K, 0)
        gens = [generator(self.cfg.seed, "grid", k) for _ in range(G) for k in range(K)]  # column k: one z
        imgs = pl_module.G_ema.sample(cond, gens, truncation=s.truncation, noise_mode=s.noise_mode,
                                      truncation_samples=s.truncation_samples)
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


class GANProgressLine(L.Callback):
    """One printed line every ``every`` steps: step, D and G losses, identity cosine, lr, images/s."""

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
        o = outputs if isinstance(outputs, dict) else {}
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        idc = f" id_cos {o['id_cos']:.3f}" if "id_cos" in o else ""
        self.printer(f"learned.train: step {step}/{self.total} d {o.get('d_loss', float('nan')):.4f} "
                     f"g {o.get('g_loss', float('nan')):.4f}{idc} lr {lr:.3g} {ips:.1f} img/s")


# ----------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------


def _mean(v: list[float]) -> float | None:
    v = [x for x in v if x == x]
    return float(sum(v) / len(v)) if v else None


def run_training(cfg: GANTrainConfig, out_dir: str | os.PathLike | None = None, *, fresh: bool = False,
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
    cfg.model.embedding_dim = encoder.embedding_size
    cfgd = config_to_dict(cfg)
    cfgd["encoder_resolved"] = encoder.spec
    if cfg_path.is_file() and ckpt.is_file():
        old = json.loads(cfg_path.read_text())
        if old.get("kind", "diffusion") != "gan":
            raise ConfigError(f"{out} holds a {old.get('kind', 'diffusion')!r} run, not a 'gan' one; use another --out")
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
    if cfg.gan.identity_weight <= 0:
        encoder = None
        if device == "cuda":
            torch.cuda.empty_cache()

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = GANModule(cfg, encoder)
    sampler = StepBatchSampler(len(data), cfg.train.batch_size, cfg.seed)
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=sampler, collate_fn=batch_identity, num_workers=0 if cfg.data.preload else cfg.data.workers,
        generator=torch.Generator().manual_seed(cfg.seed),  # worker seeds; the global RNG stays untouched
        pin_memory=device == "cuda", persistent_workers=False if cfg.data.preload else cfg.data.workers > 0)
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16-mixed" if device == "cuda" else "32-true"
    callbacks = [EMAUpdate(), AtomicCheckpoint(out, cfg.train.checkpoint_every),
                 GANExporter(out, cfg, encoder_spec, data_info, grid_cond),
                 GANProgressLine(cfg.train.log_every, cfg.train.batch_size, cfg.train.steps, printer)]
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=cfg.train.devices, precision=precision,
        max_steps=cfg.train.steps, max_epochs=-1, logger=[CSVLogger(save_dir=str(out), name="logs")],
        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=cfg.train.progress_bar,
        enable_model_summary=False, log_every_n_steps=max(1, cfg.train.log_every),
        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(out),
        benchmark=True if device == "cuda" else None,
    )
    sampler.start_step = lambda: int(trainer.global_step)  # batch s of the run, also after a resume
    resume = str(ckpt) if ckpt.is_file() else None
    if resume:
        printer(f"learned.train: resuming from {ckpt}")
    trainer.fit(module, train_dataloaders=loader, ckpt_path=resume)
    lg = module.loss_log
    k = max(1, len(lg) // 5)
    col = lambda i, part: _mean([r[i] for r in part])  # noqa: E731
    metrics = {
        "kind": "gan", "name": cfg.name, "global_step": int(trainer.global_step), "steps": cfg.train.steps,
        "d_loss_first": col(1, lg[:k]), "d_loss_last": col(1, lg[-k:]),
        "g_loss_first": col(2, lg[:k]), "g_loss_last": col(2, lg[-k:]),
        "id_cos_first": col(3, lg[:k]), "id_cos_last": col(3, lg[-k:]),
        "loss_log": lg, "checkpoint": str(out / "checkpoint"),
        "samples": sorted(str(p) for p in (out / "samples").glob("*.png")),
        "device": device, "precision": precision, "wall_s": round(time.time() - t_start, 2),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
    printer(f"learned.train: done, step {metrics['global_step']}/{cfg.train.steps} -> {out / 'checkpoint'}")
    return metrics
