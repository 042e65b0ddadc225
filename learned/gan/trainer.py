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
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from common.config import ConfigError, config_to_dict
from engine.interface import generator

from .. import trainer_common
from ..config import DataConfig, LoopConfig
from ..trainer_common import LearnedModule, adam_kwargs, lr_factor
from ..trainer_common import resolve_paths  # noqa: F401  (learned.train's trainer interface)
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
        trainer_common.validate_kind_and_encoder(self, "gan")
        S, gl, dl = self.data.image_size, len(self.model.channels), len(self.discriminator.channels)
        if gl != dl:
            raise ConfigError(f"discriminator.channels: {dl} levels, the generator (model.channels) has {gl}")
        if S % 2 ** (gl - 1) or S // 2 ** (gl - 1) < 2:
            raise ConfigError(f"model.channels: {gl} levels do not fit data.image_size {S} (image_size / 2**(levels-1) "
                              f"must be an integer >= 2: 5 levels for 64 px (4x4 start) or 112 px (7x7 start))")


CONFIG_CLASS = GANTrainConfig


# ----------------------------------------------------------------------------------------------
# Lightning module
# ----------------------------------------------------------------------------------------------


class GANModule(LearnedModule):
    """Trains :class:`GANGenerator` (``self.G``) against :class:`Discriminator` (``self.D``) and keeps
    the generator's EMA (``self.G_ema``). ``encoder``: the frozen FR encoder of the identity loss
    (kept out of the state dict)."""

    ddp_unused_parameters = True  # the G step leaves D's parameters out of its loss, the D step G's

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

    # -- device setup
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self._channels_last:
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)

    def on_fit_start(self) -> None:
        if self.encoder is not None:
            self.encoder.to(self.device)

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
            # means over the data-parallel ranks (a collective: every rank logs the same steps)
            vals = torch.tensor([stats["d_loss"], stats["g_loss"], stats.get("id_cos", float("nan"))],
                                dtype=torch.float64)
            if self.trainer.world_size > 1:
                vals = self.all_gather(vals.to(self.device)).view(-1, 3).mean(0)
            d, g, c = vals.tolist()
            self.loss_log.append((step, d, g, c))
        return {"loss": torch.tensor(stats["g_loss"]), **stats}

    def update_ema(self) -> None:
        trainer_common.update_ema(self.G_ema, self.G, int(self.global_step), self.cfg.train.ema_decay)

    def configure_optimizers(self):
        t, gl = self.cfg.train, self.cfg.gan
        kw = adam_kwargs(t, self.device)
        b1, b2 = t.betas
        opt_g = torch.optim.AdamW(self.G.parameters(), lr=t.lr, betas=(b1, b2), weight_decay=t.weight_decay, **kw)
        c = gl.r1_every / (gl.r1_every + 1) if gl.r1_gamma > 0 else 1.0  # lazy regularisation (StyleGAN2)
        opt_d = torch.optim.AdamW(self.D.parameters(), lr=t.lr * c, betas=(b1 ** c, b2 ** c),
                                  weight_decay=t.weight_decay, **kw)
        return ([opt_g, opt_d], [{"scheduler": torch.optim.lr_scheduler.LambdaLR(o, lr_factor(t)), "interval": "step",
                                  "name": f"lr_{n}"} for o, n in ((opt_g, "g"), (opt_d, "d"))])


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


class GANExporter(trainer_common.Exporter):
    """Exports the generator (EMA and raw) with :func:`checkpoint_config`; the sample grid has
    ``sample.grid_variations`` columns (column ``k``: the same ``z`` in every row)."""

    def checkpoint(self, pl_module: GANModule, step: int) -> tuple[dict[str, Any], dict[str, torch.nn.Module]]:
        cfgd = checkpoint_config(self.cfg, pl_module.G, self.encoder_spec, self.data_info, step)
        return cfgd, {"ema": pl_module.G_ema, "raw": pl_module.G}

    def grid_columns(self) -> int:
        return self.cfg.sample.grid_variations

    def sample_grid(self, pl_module: GANModule, cond: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        s = self.cfg.sample
        gens = [generator(self.cfg.seed, "grid", k) for _ in range(rows) for k in range(cols)]  # column k: one z
        return pl_module.G_ema.sample(cond, gens, truncation=s.truncation, noise_mode=s.noise_mode,
                                      truncation_samples=s.truncation_samples)


def describe_losses(outputs: Any) -> str:
    """The progress line's ``d X g Y [id_cos Z]`` of a training step's outputs."""
    o = outputs if isinstance(outputs, dict) else {}
    idc = f" id_cos {o['id_cos']:.3f}" if "id_cos" in o else ""
    return f"d {o.get('d_loss', float('nan')):.4f} g {o.get('g_loss', float('nan')):.4f}{idc}"


# ----------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------


def _mean(v: list[float]) -> float | None:
    v = [x for x in v if x == x]
    return float(sum(v) / len(v)) if v else None


def loss_metrics(loss_log: list[tuple[int, float, float, float]]) -> dict[str, Any]:
    """Mean D loss, G loss and identity cosine of the first and the last fifth of the logged steps."""
    k = max(1, len(loss_log) // 5)
    col = lambda i, part: _mean([r[i] for r in part])  # noqa: E731
    return {"d_loss_first": col(1, loss_log[:k]), "d_loss_last": col(1, loss_log[-k:]),
            "g_loss_first": col(2, loss_log[:k]), "g_loss_last": col(2, loss_log[-k:]),
            "id_cos_first": col(3, loss_log[:k]), "id_cos_last": col(3, loss_log[-k:])}


def run_training(cfg: GANTrainConfig, out_dir: str | os.PathLike | None = None, *, fresh: bool = False,
                 printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) ``cfg`` into ``out_dir`` (default ``cfg.out``); returns the metrics dict. The
    FR encoder stays loaded for the identity loss (``gan.identity_weight`` > 0); a run dir of another
    kind is refused."""
    return trainer_common.run_training(
        cfg, out_dir, fresh=fresh, printer=printer, build_module=GANModule, keep_encoder=cfg.gan.identity_weight > 0,
        exporter=GANExporter, describe=describe_losses, loss_metrics=loss_metrics, check_kind=True)
