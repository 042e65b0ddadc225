"""Learned generators behind the identity-sampler interface: the shared base :class:`LearnedSource`.

The sources themselves: :class:`~learned.diffusion.source.DiffusionSource` (``--source diffusion``,
:mod:`learned.diffusion.source`) and :class:`~learned.gan.source.GANSource` (``--source gan``,
:mod:`learned.gan.source`). ``from learned.source import DiffusionSource`` still works (resolved on use).

**Identities** live in the FR encoder's embedding space (unit vectors, the space the generator is
conditioned on). ``identity.mode``:

- ``random`` (default): candidate ``i`` is a uniformly random unit vector drawn from
  ``generator(seed, "learned-identity", i)`` (so the stream is prefix-stable);
- ``fitted``: candidate ``i`` is ``normalize(mean + L z_i)``, ``z_i`` the same standard normal as
  in ``random`` mode and ``mean``, ``L L^T = cov`` the Gaussian fit of the training conditions saved
  with the checkpoint (``condition_stats.pt``): conditions from the region of the sphere the generator
  was trained on. Under an encoder whose face embeddings fill a narrow cone (a small or weak one),
  uniformly random conditions lie far outside it and the images do not land near them; this mode
  keeps them in distribution, and usually needs a smaller ``identity.min_distance`` (the error of an
  unreachable one names the distances the stream reaches).
- ``morphable``: candidate ``i`` is the ``i``-th identity of ``morphable.MorphableSource`` (preset
  ``identity.morphable_preset``, frontal by default) rendered once (variation 0, 112 px, aligned)
  and embedded with the checkpoint's encoder (flip-averaged, as in training): the graphics-plus-
  learned path. Needs the encoder named in the checkpoint (or ``overrides={"encoder": SPEC}``).

A candidate closer than ``identity.min_distance`` (Euclidean, between unit vectors:
``d = sqrt(2 - 2 cos)``; the default 1.1 means cosine similarity below 0.395) to an accepted one is
rejected: the same sequential rule and :func:`~engine.interface.separability_report` as the
morphable source, in the encoder's space.

**Landmarks**: the generators are trained on ArcFace-aligned crops (lfw-dev is aligned to the 5-point
template), so each image is labelled with the template points scaled to the image size; the source
only produces aligned images (``aligned=False`` is an error).

A source plugs in by subclassing :class:`LearnedSource` (``name``, ``kind``, ``config_class``, ``_generate``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from common.align import ARCFACE_TEMPLATE, template
from common.config import ConfigError, from_dict, join_key, nest_dotted
from engine.interface import (Identities, IdentitySampler, RenderBatch, check_render_args, derive_seed, generator,
                              reject_close, separability_report)

from engine.mixup import MixupConfig, sample_with_mixup

from .checkpoint import load_checkpoint, load_condition_stats

#: ArcFace 5-point template for a 112x112 aligned crop (left eye, right eye, nose, mouth corners).
ARCFACE_112 = ARCFACE_TEMPLATE


IDENTITY_MODES = ("random", "fitted", "morphable")


@dataclass
class IdentityConfig:
    """How identities are drawn and kept apart (see the module docstring)."""

    mode: str = "random"
    min_distance: float = 1.1
    max_tries: int = 50
    morphable_preset: str = "frontal"
    mixup: MixupConfig = field(default_factory=MixupConfig)  # identity mixup (engine.mixup); fraction 0 = off

    def validate(self, path: str = "identity") -> None:
        if self.mode not in IDENTITY_MODES:
            raise ConfigError(f"{join_key(path, 'mode')}: must be 'random', 'fitted' or 'morphable', got {self.mode!r}")
        if self.mixup.enabled and self.mode == "morphable":
            raise ConfigError(f"{join_key(path, 'mixup')}: identity mixup needs identity.mode 'random' or 'fitted' "
                              f"(embedding vectors), not 'morphable'")


@dataclass
class LearnedConfig:
    """Settings (``overrides`` keys) every learned source has. ``max_batch``: images per generator
    call. ``resize``: resample to a ``size`` other than the checkpoint's (else an error).
    ``weights``: ``ema`` or ``raw``. ``encoder``: encoder spec for the morphable identity mode
    (default: the checkpoint's)."""

    max_batch: int = 64
    resize: bool = False
    weights: str = "ema"
    encoder: Any = None
    identity: IdentityConfig = field(default_factory=IdentityConfig)

    def validate(self, path: str = "") -> None:
        if self.weights not in ("ema", "raw"):
            raise ConfigError(f"{join_key(path, 'weights')}: must be 'ema' or 'raw', got {self.weights!r}")


#: Presets: ``default``/``wild`` use the checkpoint's sampling settings (the variation is what the
#: training faces show); ``consistent`` raises the guidance 1.5x (tighter identity, less variety).
PRESETS: dict[str, dict[str, Any]] = {"default": {}, "wild": {}, "consistent": {"guidance_mult": 1.5}}


class LearnedSource(IdentitySampler):
    """Base of the learned sources: checkpoint loading, identities in the encoder space, labels.

    Subclasses set ``name``, ``kind`` (the checkpoint kind they accept) and ``config_class`` (a
    :class:`LearnedConfig` subclass with their own override keys) and implement :meth:`_generate`
    ``(cond (B, D), generators, params) -> (B, 3, S, S) in [-1, 1]``, where ``params`` is
    :meth:`sampling` (resolved per-source sampling settings, also put into :meth:`config`) and
    ``generators[b]`` is image ``b``'s own generator (every random draw of image ``b`` must come from
    it); :meth:`_factors` adds per-image metadata columns; :meth:`_chunk_inputs` adds per-image inputs
    of a chunk (e.g. the diffusion source's styles) to ``params`` and their factors.
    """

    name = "learned"
    kind = "abstract"
    config_class: type[LearnedConfig] = LearnedConfig

    def __init__(self, checkpoint: str | None = None, preset: str = "default", size: int | None = None,
                 aligned: bool = True, device: str = "cpu", overrides: Mapping[str, Any] | None = None):
        if checkpoint is None or str(checkpoint) == "":
            raise ValueError(f"the {self.name} source needs a checkpoint: --checkpoint PATH (a run's checkpoint/ dir "
                             f"written by python -m learned.train)")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} for source {self.name!r} (known: {', '.join(PRESETS)})")
        if not aligned:
            raise ValueError(f"the {self.name} source generates ArcFace-aligned crops only (it was trained on "
                             "aligned faces); drop --unaligned")
        # overrides: nested or dotted keys ({"identity.mode": ...}, as engine.render --override gives)
        self.cfg = from_dict(self.config_class, nest_dotted(dict(overrides or {}), "overrides"), "overrides")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        self.preset = preset
        self.ckpt = load_checkpoint(checkpoint, kind=self.kind, weights=self.cfg.weights, map_location=self.device)
        self.model = self.ckpt.model
        self.native_size = int(self.ckpt.config["image_size"])
        self.size = self.native_size if size is None else int(size)
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        if self.size != self.native_size and not self.cfg.resize:
            raise ValueError(f"checkpoint {self.ckpt.path} generates {self.native_size} px images, not {self.size}: "
                             f"pass --size {self.native_size} (or override resize=true to resample)")
        self.embedding_dim = int(self.ckpt.config.get("embedding_dim") or self.ckpt.config["model"]["embedding_dim"])
        self._encoder = None
        self._cond_stats = load_condition_stats(self.ckpt.path) if self.cfg.identity.mode == "fitted" else None

    # -- config -----------------------------------------------------------------------------------
    def sampling(self) -> dict[str, Any]:
        """Resolved sampling settings passed to :meth:`_generate` (none in the base class)."""
        return {}

    def _overridden(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` (checkpoint defaults, then the preset) with each override that is set
        (not None) in :attr:`cfg` winning."""
        return {k: v if getattr(self.cfg, k) is None else getattr(self.cfg, k) for k, v in settings.items()}

    def config(self) -> dict[str, Any]:
        c = asdict(self.cfg)
        c.pop("encoder", None)
        if not self.cfg.identity.mixup.enabled:  # off: the config of before identity mixup
            c["identity"].pop("mixup", None)
        return {"source": self.name, "kind": self.kind, "preset": self.preset, "size": self.size, "aligned": True,
                "checkpoint": str(self.ckpt.path.resolve()), "checkpoint_sha256": self.ckpt.sha256,
                "checkpoint_step": self.ckpt.config.get("train", {}).get("step"), "native_size": self.native_size,
                **({"condition_stats_sha256": self._cond_stats["sha256"]} if self._cond_stats else {}),
                "encoder": self.encoder_spec(), **c, **self.sampling()}

    def encoder_spec(self) -> Any:
        return self.cfg.encoder if self.cfg.encoder is not None else self.ckpt.config.get("encoder")

    # -- identities -------------------------------------------------------------------------------
    def encoder(self):
        """The frozen FR encoder (loaded on first use; only the morphable identity mode needs it)."""
        if self._encoder is None:
            from .encoder import EncoderError, load_encoder

            spec = self.encoder_spec()
            try:
                self._encoder = load_encoder(spec, device=self.device, flip=True,
                                             allow_random=bool(self.ckpt.config.get("allow_random_encoder", False)))
            except EncoderError as e:
                raise ValueError(f"the checkpoint's encoder cannot be loaded ({e}); pass overrides "
                                 "encoder=SPEC to point at it") from None
            if self._encoder.embedding_size != self.embedding_dim:
                raise ValueError(f"encoder {spec} gives {self._encoder.embedding_size}-d embeddings, the checkpoint "
                                 f"is conditioned on {self.embedding_dim}-d ones")
        return self._encoder

    def _normal_candidates(self, seed: int) -> Callable[[int, int], torch.Tensor]:
        """Candidate ``i``: a standard normal (D,) from ``generator(seed, "learned-identity", i)``,
        normalised (``random`` mode) or first mapped through the fit of the training conditions,
        ``mean + L z`` with ``L L^T = cov`` (``fitted`` mode)."""
        D = self.embedding_dim
        if self._cond_stats is not None:
            mean, cov = self._cond_stats["mean"].double(), self._cond_stats["cov"].double()
            # Cholesky of the covariance, with a jitter of 1e-6 of its mean variance (rank-deficient fits)
            jitter = 1e-6 * float(cov.diagonal().mean().clamp_min(1e-12))
            L = torch.linalg.cholesky(cov + jitter * torch.eye(cov.shape[0], dtype=cov.dtype))

        def cand(start: int, count: int) -> torch.Tensor:
            z = torch.cat([torch.randn(D, generator=generator(seed, "learned-identity", i))
                           for i in range(start, start + count)]).view(count, D).double()
            return F.normalize(z if self._cond_stats is None else mean + z @ L.T, dim=-1)
        return cand

    def _morphable_candidates(self, seed: int, meta_out: dict) -> Callable[[int, int], torch.Tensor]:
        from morphable import MorphableSource

        msrc = MorphableSource(preset=self.cfg.identity.morphable_preset, size=112, aligned=True, device=str(self.device))
        enc = self.encoder()
        state: dict[str, Any] = {"ids": None}

        def cand(start: int, count: int) -> torch.Tensor:
            need = start + count
            have = 0 if state["ids"] is None else len(state["ids"])
            if have < need:
                state["ids"] = msrc.sample_identities(max(need, 2 * have), seed)
            ids = state["ids"]
            rows = torch.arange(start, start + count)
            rb = msrc.render(ids, rows, torch.zeros(count, dtype=torch.long), seed)
            e = enc.embed(rb.images * 2 - 1)
            meta_out["ids"] = ids
            return e.double()
        return cand

    def sample_identities(self, n: int, seed: int) -> Identities:
        """``n`` separable identities (unit embeddings), prefix-stable (see the module docstring)."""
        if int(n) < 1:
            raise ValueError(f"number of identities must be >= 1, got {n}")
        n, ic = int(n), self.cfg.identity
        if ic.mixup.enabled:
            return sample_with_mixup(self, n, seed, ic.mixup, float(ic.min_distance), int(ic.max_tries),
                                     space=f"FR encoder embedding ({self.embedding_dim}-d unit vectors, Euclidean)")
        meta_src: dict[str, Any] = {}
        if ic.mode in ("random", "fitted"):
            res = reject_close(self._normal_candidates(seed), n, float(ic.min_distance), int(ic.max_tries))
        else:  # each candidate is a render: small blocks
            res = reject_close(self._morphable_candidates(seed, meta_src), n, float(ic.min_distance), int(ic.max_tries),
                               block=32, first_block=min(32, max(8, n)))
        E = res.embedding.float()
        meta: dict[str, torch.Tensor] = {}
        params = {"embedding": E.clone()}
        if ic.mode == "morphable":
            ids = meta_src["ids"]
            sel = res.index
            meta = {k: v[sel] for k, v in ids.meta.items()}
            params["morphable_index"] = sel.float()
        space = f"FR encoder embedding ({self.embedding_dim}-d unit vectors, Euclidean)"
        rep = separability_report(E, space=space, min_distance=float(ic.min_distance), achieved_min_distance=res.min_distance)
        rep.update(candidates=n + res.rejected, rejected=res.rejected, mode=ic.mode)
        return Identities(params=params, embedding=E, seed=int(seed), report=rep, meta=meta)

    # -- identity mixup (engine.mixup) ---------------------------------------------------------------
    def identity_candidates(self, seed: int, start: int, count: int) -> Identities:
        """Candidates ``start .. start+count`` of the ``random``/``fitted`` stream, unfiltered."""
        E = self._normal_candidates(seed)(start, count).float()
        return Identities(params={"embedding": E.clone()}, embedding=E, seed=int(seed))

    def mix_identities(self, a: Identities, b: Identities, lam: torch.Tensor) -> Identities:
        """Mixed conditions: ``normalize(lam e_a + (1 - lam) e_b)`` (the generator is conditioned on unit vectors)."""
        w = lam.to(torch.float64).reshape(-1, 1)
        E = F.normalize(w * a.embedding.double() + (1 - w) * b.embedding.double(), dim=-1).float()
        return Identities(params={"embedding": E.clone()}, embedding=E, seed=a.seed)

    # -- rendering --------------------------------------------------------------------------------
    def _generate(self, cond: torch.Tensor, gens: list[torch.Generator], params: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def render(self, identities: Identities, rows: torch.Tensor, variations: torch.Tensor, seed: int) -> RenderBatch:
        rows, variations = check_render_args(identities, rows, variations)
        if "embedding" not in identities.params or identities.params["embedding"].shape[1] != self.embedding_dim:
            raise ValueError(f"identities were not sampled by a {self.embedding_dim}-d learned source")
        params = self.sampling()
        mb = max(1, int(self.cfg.max_batch))
        out, chunk_factors = [], []
        for s in range(0, rows.numel(), mb):
            r, k = rows[s : s + mb], variations[s : s + mb]
            gens = [generator(seed, "learned-noise", int(a), int(b)) for a, b in zip(r, k)]
            cond = identities.params["embedding"][r].to(self.device)
            inputs, fac = self._chunk_inputs(identities, r, k, seed)
            out.append(self._generate(cond, gens, {**params, **inputs} if inputs else params).float())
            chunk_factors.append(fac)
        x = torch.cat(out)
        img = ((x + 1) / 2).clamp(0, 1)
        if img.shape[-1] != self.size:
            img = F.interpolate(img, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                antialias=img.shape[-1] > self.size).clamp(0, 1)
        B = rows.numel()
        lm = template(self.size).expand(B, 5, 2).clone()
        seeds = torch.tensor([derive_seed(seed, "learned-noise", int(a), int(b)) for a, b in zip(rows, variations)],
                             dtype=torch.int64)
        factors = {"noise_seed": seeds, **self._factors(params, B),
                   **{n: torch.cat([f[n] for f in chunk_factors]) for n in (chunk_factors[0] if chunk_factors else {})}}
        return RenderBatch(images=img.float(), identity=rows.to(img.device), variation=variations.to(img.device),
                           landmarks=lm.to(img.device), factors={k: v.to(img.device) for k, v in factors.items()})

    def _factors(self, params: dict[str, Any], B: int) -> dict[str, torch.Tensor]:
        return {}

    def _chunk_inputs(self, identities: Identities, rows: torch.Tensor, variations: torch.Tensor,
                      seed: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Per-image inputs of one chunk for :meth:`_generate` (merged into ``params``) and their
        per-image factors; each image's must depend on its own (seed, row, variation) only."""
        return {}, {}


def __getattr__(name: str):
    # the diffusion source moved to learned.diffusion.source (which imports this module); resolved on use
    if name in ("DiffusionSource", "DiffusionConfig"):
        from .diffusion import source as _diffusion_source

        return getattr(_diffusion_source, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
