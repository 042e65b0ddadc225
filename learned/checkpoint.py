"""Learned-generator checkpoints: weights with a ``config.json`` beside them that rebuilds the model.

A checkpoint is a directory::

    config.json   {"format": "synthface-learned-checkpoint", "version": 1, "kind": "diffusion",
                   "image_size": 64, "embedding_dim": 512, "encoder": {spec}, "model": {...},
                   ... kind-specific keys (e.g. "schedule", "sample") ..., "data": {...},
                   "train": {"step": N, ...}, "weights": {"ema": "ema.pt", "raw": "model.pt"}}
    ema.pt        plain state_dict of the EMA weights (what sources sample with)
    model.pt      plain state_dict of the raw (trained) weights
    condition_stats.pt  (optional) mean and covariance of the training condition embeddings,
                  listed as "condition_stats" in config.json (``identity.mode=fitted`` samples them)

Weights are read with ``torch.load(weights_only=True)``. The model class comes from the *kind*
registry: ``register_kind("gan", "learned.gan.model:build_model")`` maps a kind to a builder
``build_model(config: dict) -> nn.Module`` that rebuilds the network from ``config.json`` alone.
:func:`load_checkpoint` raises :class:`CheckpointError` for a missing path, a directory that is not a
learned checkpoint (e.g. a Lightning ``last.ckpt`` or a training run dir), a checkpoint of another
kind than the caller expects, or weights that do not match the config.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

FORMAT = "synthface-learned-checkpoint"
VERSION = 1
CONFIG_NAME = "config.json"
WEIGHT_FILES = {"ema": "ema.pt", "raw": "model.pt"}
CONDITION_STATS = "condition_stats.pt"

#: kind -> "module:function" building the network from a checkpoint's config dict.
_KINDS: dict[str, str] = {
    "diffusion": "learned.diffusion.model:build_model",
    "gan": "learned.gan.model:build_model",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, not a learned checkpoint, wrong kind, or weights
    that do not match its config."""


def register_kind(kind: str, builder: str) -> None:
    """Register ``kind`` -> ``"module:function"`` (``function(config: dict) -> nn.Module``)."""
    if ":" not in builder:
        raise ValueError(f"builder must be 'module:function', got {builder!r}")
    _KINDS[kind] = builder


def known_kinds() -> list[str]:
    return sorted(_KINDS)


def _builder(kind: str) -> Callable[[dict], nn.Module]:
    if kind not in _KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; known kinds: {', '.join(known_kinds())}")
    mod, _, fn = _KINDS[kind].partition(":")
    return getattr(importlib.import_module(mod), fn)


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` returns: the rebuilt ``model`` (eval mode, on ``map_location``),
    its ``config`` (``config.json``), ``kind``, the checkpoint ``path`` (directory), the ``weights``
    variant loaded (``"ema"`` or ``"raw"``) and ``sha256`` of that weights file (first 16 hex)."""

    kind: str
    config: dict[str, Any]
    model: nn.Module
    path: Path
    weights: str
    sha256: str


def checkpoint_dir(path: str | os.PathLike) -> Path:
    """The checkpoint directory of ``path`` (the directory, its ``config.json`` or a weights file)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    return p if p.is_dir() else p.parent


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of the checkpoint at ``path``, checked to be a learned checkpoint."""
    d = checkpoint_dir(path)
    cp = d / CONFIG_NAME
    if not cp.is_file():
        hint = ""
        if Path(path).suffix == ".ckpt":
            hint = f"; {Path(path).name} is a Lightning training state (for resuming), not a generator checkpoint"
        if (d / "checkpoint" / CONFIG_NAME).is_file():
            hint += f"; this looks like a training run dir: use {d / 'checkpoint'}"
        raise CheckpointError(f"{d} is not a synthface learned checkpoint (no {CONFIG_NAME} beside the weights){hint}")
    try:
        cfg = json.loads(cp.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cp} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{cp} is not a synthface learned checkpoint config (format {cfg.get('format') if isinstance(cfg, dict) else None!r}, "
                              f"expected {FORMAT!r})")
    if int(cfg.get("version", 0)) > VERSION:
        raise CheckpointError(f"{cp} has version {cfg.get('version')}, newer than this code reads ({VERSION}); update synthface")
    for key in ("kind", "image_size", "model", "weights"):
        if key not in cfg:
            raise CheckpointError(f"{cp} lacks the required key {key!r}")
    return cfg


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, weights: str = "ema",
                    map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of the checkpoint at ``path`` from its ``config.json`` and load ``weights``
    (``"ema"`` or ``"raw"``; a weights-file ``path`` picks that file). ``kind``: the kind the caller
    needs (e.g. ``"diffusion"``); another kind raises :class:`CheckpointError`."""
    p = Path(path).expanduser()
    cfg = read_config(p)
    d = checkpoint_dir(p)
    ck_kind = str(cfg["kind"])
    if kind is not None and ck_kind != kind:
        raise CheckpointError(f"{d} is a {ck_kind!r} checkpoint, not a {kind!r} one "
                              f"(use --source {ck_kind} for it, or a {kind} checkpoint)")
    files = dict(cfg["weights"])
    if p.is_file() and p.name != CONFIG_NAME:
        wfile, weights = p, next((k for k, v in files.items() if v == p.name), p.stem)
    else:
        if weights not in files:
            raise CheckpointError(f"{d}: no {weights!r} weights listed in {CONFIG_NAME} (has {', '.join(files)})")
        wfile = d / files[weights]
    if not wfile.is_file():
        raise CheckpointError(f"checkpoint weights not found: {wfile}")
    try:
        model = _builder(ck_kind)(cfg)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{d / CONFIG_NAME} does not describe a valid {ck_kind} model: {e}") from None
    try:
        sd = torch.load(wfile, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files
        raise CheckpointError(f"cannot read weights {wfile}: {type(e).__name__}: {e}") from None
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{wfile} does not hold a state_dict")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][1:4]
        raise CheckpointError(f"weights {wfile} do not match the model described by {d / CONFIG_NAME}: "
                              + " ".join(lines)[:500]) from None
    model.eval().to(map_location)
    for q in model.parameters():
        q.requires_grad_(False)
    return LoadedCheckpoint(ck_kind, cfg, model, d, weights, _sha(wfile))


def condition_stats(cond: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gaussian fit of the (N, D) condition embeddings a generator was trained on: ``mean`` (D,),
    ``cov`` (D, D, unbiased) in float64, and ``count``."""
    x = cond.detach().double().cpu()
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"condition statistics need (N >= 2, D) embeddings, got {tuple(x.shape)}")
    return {"mean": x.mean(0), "cov": torch.cov(x.T).reshape(x.shape[1], x.shape[1]),
            "count": torch.tensor(x.shape[0])}


def load_condition_stats(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The :func:`condition_stats` saved with the checkpoint at ``path``; :class:`CheckpointError`
    if it has none (checkpoints exported before they were saved)."""
    cfg = read_config(path)
    d = checkpoint_dir(path)
    name = cfg.get("condition_stats")
    if not name or not (d / name).is_file():
        raise CheckpointError(f"{d} has no condition statistics ({CONDITION_STATS}: the mean and covariance "
                              "of its training conditions, saved by python -m learned.train since they were "
                              "added); extend its run (python -m learned.train ... --override train.steps=N) or "
                              "retrain to export them, or use identity.mode=random")
    try:
        st = torch.load(d / name, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {d / name}: {type(e).__name__}: {e}") from None
    D = int(cfg.get("embedding_dim") or cfg["model"].get("embedding_dim") or 0)
    if not isinstance(st, Mapping) or not all(isinstance(st.get(k), torch.Tensor) for k in ("mean", "cov")) \
            or tuple(st["mean"].shape) != (D,) or tuple(st["cov"].shape) != (D, D):
        raise CheckpointError(f"{d / name} does not hold a mean ({D},) and covariance ({D}, {D})")
    return {**st, "sha256": _sha(d / name)}


def save_checkpoint(out_dir: str | os.PathLike, config: Mapping[str, Any], weights: Mapping[str, nn.Module | Mapping],
                    cond_stats: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint directory: each ``weights[name]`` (a module or state_dict; names ``ema``,
    ``raw``) to its file, ``cond_stats`` (:func:`condition_stats`) to ``condition_stats.pt``, then
    ``config.json`` (last, atomically: a complete config always lists complete files). ``config``
    needs ``kind``, ``image_size`` and ``model``; ``format``, ``version``, ``weights``,
    ``condition_stats`` and ``synthface_version`` are filled in. Returns the directory."""
    from engine.metadata import synthface_version
    from common.io import atomic_torch_save, atomic_write_text

    out = Path(out_dir)
    for key in ("kind", "image_size", "model"):
        if key not in config:
            raise ValueError(f"checkpoint config needs {key!r}")
    files = {}
    for name, w in weights.items():
        if name not in WEIGHT_FILES:
            raise ValueError(f"weights name must be one of {list(WEIGHT_FILES)}, got {name!r}")
        sd = w.state_dict() if isinstance(w, nn.Module) else w
        sd = {k: v.detach().float().cpu().contiguous().clone() if v.is_floating_point() else v.detach().cpu().clone()
              for k, v in sd.items()}
        atomic_torch_save(sd, out / WEIGHT_FILES[name])
        files[name] = WEIGHT_FILES[name]
    cfg = {"format": FORMAT, "version": VERSION, **dict(config), "weights": files,
           "synthface_version": synthface_version()}
    if cond_stats is not None:
        atomic_torch_save({k: v.detach().cpu() for k, v in cond_stats.items()}, out / CONDITION_STATS)
        cfg["condition_stats"] = CONDITION_STATS
    atomic_write_text(out / CONFIG_NAME, json.dumps(cfg, indent=2, sort_keys=False, default=str))
    return out
