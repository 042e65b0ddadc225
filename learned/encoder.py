"""The frozen face-recognition encoder that learned sources are conditioned on and evaluated with.

An encoder is named in a config by a *spec*, one of:

- a path to a backbone trained by ``training/`` (its run directory, ``backbone.pt`` or
  ``model_config.json``: the config beside the weights rebuilds it);
- ``"ARCH:PATH"`` or ``{"arch": ARCH, "checkpoint": PATH, "embedding_size": 512, "input_size": 112}``:
  an insightface ``arcface_torch`` state dict a user brings (``iresnet50:/models/ms1mv3_r50.pth``),
  read with ``torch.load(weights_only=True)`` and loaded strictly;
- ``{"arch": ARCH, "embedding_size": D, "input_size": S, "random_init_seed": K}``: an *untrained*
  backbone with seeded weights. Only for tests and plumbing: it carries no identity information,
  and :func:`load_encoder` refuses it unless ``allow_random=True``.

:class:`FREncoder` takes images of any size in ``[-1, 1]``, resizes them to the backbone's input
size and returns L2-normalised embeddings. Its parameters are frozen and it stays in eval mode.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn


class EncoderError(ValueError):
    """An encoder spec that cannot be resolved (missing file, unknown arch, bad keys)."""


class FREncoder(nn.Module):
    """A frozen FR backbone: ``(B, 3, H, W)`` in ``[-1, 1]`` -> ``(B, D)`` unit embeddings.

    Attributes:
        embedding_size: ``D``.
        input_size: ``(H, W)`` the backbone expects; other sizes are resized bilinearly (antialiased).
        spec: the JSON-serialisable spec that rebuilds this encoder (saved beside learned weights).
    """

    def __init__(self, backbone: nn.Module, input_size: tuple[int, int], embedding_size: int,
                 spec: Mapping[str, Any], flip: bool = False):
        super().__init__()
        self.backbone = backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.embedding_size = int(embedding_size)
        self.spec = dict(spec)
        self.flip = bool(flip)

    def train(self, mode: bool = True) -> "FREncoder":  # always eval: BatchNorm statistics stay fixed
        return super().train(False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Resize ``(B, 3, H, W)`` images in ``[-1, 1]`` to the backbone's input size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"encoder expects (B, 3, H, W) images, got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != self.input_size:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False,
                                   antialias=images.shape[-1] > self.input_size[1])
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of ``images`` (B, 3, H, W) in ``[-1, 1]``; differentiable in the
        images (used as an identity loss), not in the encoder's weights."""
        x = self.prepare(images)
        dtype = next(self.backbone.parameters()).dtype
        e = self.backbone(x.to(dtype)).float()
        if self.flip:
            e = e + self.backbone(x.flip(-1).to(dtype)).float()
        return F.normalize(e, dim=-1)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """:meth:`forward` in batches without gradients, on the encoder's device; returns CPU float."""
        device = next(self.backbone.parameters()).device
        out = [self(images[s : s + batch_size].to(device)).cpu() for s in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.embedding_size)


def _normalise_spec(spec: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    s = os.fspath(spec)
    if not s:
        raise EncoderError("encoder spec is empty: give a training run dir / backbone.pt, or 'ARCH:PATH'")
    if ":" in s and not os.path.exists(s):
        arch, _, path = s.partition(":")
        if arch and "/" not in arch and "\\" not in arch:
            return {"arch": arch, "checkpoint": path}
    return {"path": s}


def load_encoder(spec: str | os.PathLike | Mapping[str, Any], device: str | torch.device = "cpu",
                 allow_random: bool = False, flip: bool = False) -> FREncoder:
    """Build the frozen :class:`FREncoder` named by ``spec`` (see the module docstring).

    Raises :class:`EncoderError` for a missing file, an unknown architecture or a checkpoint whose
    keys or shapes do not match the architecture.
    """
    from training.backbones import create_backbone, list_backbones, load_arcface_torch

    s = _normalise_spec(spec)
    unknown = set(s) - {"path", "arch", "checkpoint", "embedding_size", "input_size", "random_init_seed",
                        "backbone_kwargs"}
    if unknown:
        raise EncoderError(f"unknown encoder spec key(s) {sorted(unknown)}; expected path, or arch + checkpoint "
                           "[+ embedding_size, input_size, backbone_kwargs]")
    if "path" in s:
        from training.module import load_backbone

        p = Path(s["path"]).expanduser()
        if not p.exists():
            raise EncoderError(f"encoder not found: {p}")
        meta_path = (p if p.is_dir() else p.parent) / "model_config.json"
        if not meta_path.is_file():
            raise EncoderError(f"encoder {p}: no model_config.json beside it; for an arcface_torch .pth say "
                               f"'ARCH:{p}' (e.g. 'iresnet50:{p}')")
        try:
            model = load_backbone(p)
        except FileNotFoundError as e:
            raise EncoderError(f"encoder weights not found: {e.filename}") from None
        except (KeyError, RuntimeError) as e:
            raise EncoderError(f"cannot rebuild encoder from {meta_path}: {e}") from e
        insz, emb = model.input_size, int(model.embedding_size)
        resolved = {"path": str(p.resolve())}
    else:
        arch = s.get("arch")
        if not arch:
            raise EncoderError(f"encoder spec {s} needs 'arch' (one of {', '.join(list_backbones())})")
        emb = int(s.get("embedding_size", 512))
        insz = s.get("input_size", 112)
        seeded = not s.get("checkpoint") and "random_init_seed" in s
        try:
            with torch.random.fork_rng(devices=[], enabled=seeded):  # seeded init, global RNG untouched
                if seeded:
                    torch.manual_seed(int(s["random_init_seed"]))
                model = create_backbone(arch, emb, input_size=insz, **s.get("backbone_kwargs", {}))
        except KeyError as e:
            raise EncoderError(str(e.args[0])) from None
        if s.get("checkpoint"):
            ck = Path(s["checkpoint"]).expanduser()
            if not ck.is_file():
                raise EncoderError(f"encoder checkpoint not found: {ck}")
            try:
                load_arcface_torch(model, ck, strict=True)
            except (RuntimeError, ValueError) as e:
                raise EncoderError(str(e)) from None
            resolved = {"arch": arch, "checkpoint": str(ck.resolve()), "embedding_size": emb, "input_size": insz}
        elif seeded:
            if not allow_random:
                raise EncoderError("encoder spec has no checkpoint (random weights carry no identity); "
                                   "pass allow_random=True only for tests")
            resolved = {"arch": arch, "embedding_size": emb, "input_size": insz,
                        "random_init_seed": int(s["random_init_seed"])}
        else:
            raise EncoderError(f"encoder spec {s} has no checkpoint: give 'checkpoint' (an arcface_torch .pth)")
        if s.get("backbone_kwargs"):
            resolved["backbone_kwargs"] = dict(s["backbone_kwargs"])
    size = (insz, insz) if isinstance(insz, int) else tuple(insz)
    enc = FREncoder(model, size, emb, resolved, flip=flip)
    return enc.to(device)
