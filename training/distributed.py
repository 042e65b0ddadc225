"""Data-parallel training pieces: batch-norm over the global batch on any backend.

``torch.nn.SyncBatchNorm`` runs only on CUDA. :class:`GlobalBatchNorm` computes the batch statistics
of the global batch with one differentiable ``all_reduce`` (sum, count, sum of squares) per layer, so
it also runs on CPU over gloo: N processes with per-process batch ``b`` then normalise exactly like one
process with batch ``N * b`` (up to float summation order). :class:`GlobalBatchNormSync` is the
Lightning ``LayerSync`` plugin that swaps it in (on CUDA the trainer uses the fused
``torch.nn.SyncBatchNorm`` instead).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["GlobalBatchNorm", "GlobalBatchNormSync"]


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the batch of all processes.

    Input (B, C, ...) as any ``BatchNormNd``; outside training, or without an initialised process
    group of more than one process, it is plain batch norm. Running statistics follow
    ``BatchNormNd`` (unbiased variance, ``momentum`` or the cumulative average when it is None).
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (B, C, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        C = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_full((1,), x.numel() // C)])
        tot = all_reduce(local)  # differentiable sum over ranks
        n = tot[-1]
        mean = tot[:C] / n
        var = (tot[C: 2 * C] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        shape = (1, C) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every ``BatchNormNd`` (not already global) replaced, parameters and buffers kept."""
        out = module
        if isinstance(module, _BatchNorm) and not isinstance(module, (cls, nn.SyncBatchNorm)):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            if module.affine:
                with torch.no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            if module.track_running_stats:
                out.running_mean, out.running_var = module.running_mean, module.running_var
                out.num_batches_tracked = module.num_batches_tracked
            out.train(module.training)
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert(child))
        return out


class GlobalBatchNormSync(LayerSync):
    """Lightning plugin: :class:`GlobalBatchNorm` for every batch-norm layer (works over gloo/CPU)."""

    def apply(self, model: nn.Module) -> nn.Module:
        return GlobalBatchNorm.convert(model)

    def revert(self, model: nn.Module) -> nn.Module:
        # the converted layers keep the BatchNorm state-dict keys and act as plain batch norm without a
        # process group: nothing to undo for saving or single-process use
        return model

