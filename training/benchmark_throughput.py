"""Training input throughput: img/s of the real trainer against raw fwd+bwd of the same backbone.

    python -m training.benchmark_throughput                                   # CPU, tiny backbone, 32 px
    python -m training.benchmark_throughput --device cuda --backbone iresnet50 --size 112 --batch 256 \\
        --precision bf16-mixed --channels-last [--compile] --steps 40

*raw*: the backbone + head forward, backward and SGD step on random tensors already on the device
(the ceiling no input pipeline can beat). *trainer*: the real :class:`training.module.FaceRecognitionModule`
under the Lightning trainer of ``training.train`` (``build_trainer``), fed by
:class:`training.data.MixedDataModule` from **disk** (an ImageFolder the engine renders first, or
``--data``: decoded in ``--workers`` DataLoader processes, pinned, prefetched to the device,
augmented there) and **on the fly** (the morphable source rendering on the training device, batches
built ahead in a background thread). Both time the steps after ``--warmup`` (device synchronised) and
report img/s and the ratio trainer / raw. ``--json PATH`` writes the figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    import contextlib

    return contextlib.nullcontext()


def raw_throughput(backbone: str, backbone_kwargs: dict, size: int, batch: int, classes: int, device: str,
                   precision: str = "32", channels_last: bool = False, compile: bool = False, steps: int = 10,
                   warmup: int = 3, embedding_size: int = 512) -> dict[str, Any]:
    """img/s of fwd + bwd + SGD step of ``backbone`` + an ArcFace head on random device tensors."""
    from training import create_backbone, create_head

    dev = torch.device(device)
    torch.manual_seed(0)
    net = create_backbone(backbone, embedding_size, input_size=size, **backbone_kwargs).to(dev)
    head = create_head("arcface", embedding_size, classes).to(dev)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    fwd = torch.compile(net) if compile else net
    opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=dev)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(dev)
            t0 = time.perf_counter()
        with _autocast(dev, precision):
            emb = fwd(x)
        loss = F.cross_entropy(head(emb.float(), y), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(dev)
    dt = time.perf_counter() - t0
    return {"img_s": steps * batch / dt, "seconds": dt, "steps": steps, "batch": batch}


class _StepTimer:
    """Lightning callback: wall time from the end of step ``warmup - 1`` to the end of the last step."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        import lightning.pytorch as L

        class CB(L.Callback):
            def on_train_batch_end(cb, trainer, pl_module, outputs, batch, batch_idx):  # noqa: N805
                if batch_idx == warmup - 1 or batch_idx == trainer.max_steps - 1:
                    _sync(device)
                    self.marks[batch_idx] = time.perf_counter()

        self.marks: dict[int, float] = {}
        self.callback = CB()


def trainer_throughput(sources: dict[str, dict], backbone: str, backbone_kwargs: dict, size: int, batch: int,
                       device: str, precision: str = "32", channels_last: bool = False, compile: bool = False,
                       steps: int = 10, warmup: int = 3, workers: int = 0, out: str | Path | None = None,
                       embedding_size: int = 512, prefetch_to_device: bool | None = None) -> dict[str, Any]:
    """img/s of the real trainer (module, data module, Lightning trainer of ``training.train``) over
    ``sources`` (one phase, equal weights). ``prefetch_to_device``: the data module's background
    batch prefetcher (default: on CUDA; ``True`` on the CPU runs its CPU stand-in)."""
    from .config import parse_config
    from .curriculum import Curriculum
    from .data import MixedDataModule, build_sources
    from .module import FaceRecognitionModule
    from .train import build_trainer

    import lightning.pytorch as L

    for pat in (".*does not have many workers.*", ".*IterableDataset.*__len__.*", ".*overridden `on_after_batch_transfer`.*",
                ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*", ".*GPU available but not used.*"):
        warnings.filterwarnings("ignore", pat)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
    dev = torch.device(device)
    total = warmup + steps
    raw = {
        "name": "throughput",
        "model": {"backbone": backbone, "embedding_size": embedding_size, "input_size": size,
                  "backbone_kwargs": backbone_kwargs, "head": "arcface"},
        "sources": sources,
        "phases": [{"name": "main", "steps": total, "weights": {n: 1.0 for n in sources},
                    "lr": {"base": 0.01, "warmup_steps": 0}, "optimizer": {"name": "sgd", "momentum": 0.9}}],
        "trainer": {"accelerator": "gpu" if dev.type == "cuda" else "cpu", "devices": 1, "precision": precision,
                    "channels_last": channels_last, "compile": compile, "batch_size": batch, "num_workers": workers,
                    "log_every": max(total, 1), "ckpt_every_steps": 0, "tensorboard": False,
                    "out": str(out or tempfile.mkdtemp(prefix="synthface-tp-")), "seed": 0},
    }
    cfg = parse_config(raw, resolve=False)
    srcs = build_sources(cfg)
    curr = Curriculum(cfg, {n: s.num_classes for n, s in srcs.items()}, {n: s.epoch_size for n, s in srcs.items()})
    module = FaceRecognitionModule(cfg, curr)
    module.enter_phase(0)
    timer = _StepTimer(warmup, dev)
    trainer = build_trainer(cfg, total, Path(raw["trainer"]["out"]), [timer.callback])
    dm = MixedDataModule(srcs, curr, 0, num_workers=workers, prefetch_factor=cfg.trainer.prefetch_factor,
                         seed=0, image_size=size, prefetch_to_device=prefetch_to_device)
    L.seed_everything(0, verbose=False)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    wall = time.perf_counter() - t0
    if int(trainer.global_step) != total or len(timer.marks) < 2:
        raise RuntimeError(f"the trainer ran {trainer.global_step} of {total} steps")
    dt = timer.marks[total - 1] - timer.marks[warmup - 1]
    return {"img_s": steps * batch / dt, "seconds": dt, "steps": steps, "batch": batch, "wall_s": wall}


def render_disk_dataset(out: Path, ids: int, per_id: int, size: int, device: str) -> Path:
    """A small morphable ImageFolder for the disk input (rendered once; reused if complete)."""
    from engine.render import render_dataset

    s = render_dataset(ids=ids, per_id=per_id, size=size, preset="wild", out=str(out), device=device, progress=False,
                       log=None, fsync=False)
    if not s["complete"]:
        raise RuntimeError(f"rendering the benchmark dataset at {out} did not complete")
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Raw, disk and on-the-fly figures for the arguments of :func:`build_parser`."""
    bk = json.loads(a.backbone_kwargs) if a.backbone_kwargs else ({"width": 16} if a.backbone == "tiny" else {})
    common = dict(backbone=a.backbone, backbone_kwargs=bk, size=a.size, batch=a.batch, device=a.device,
                  precision=a.precision, channels_last=a.channels_last, compile=a.compile, steps=a.steps,
                  warmup=a.warmup, embedding_size=a.embedding)
    tr_kw = dict(common, prefetch_to_device=True if a.prefetch else None)
    res: dict[str, Any] = {"config": {k: v for k, v in common.items()}, "device_name": (
        torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"), "threads": torch.get_num_threads()}
    res["raw"] = raw_throughput(classes=a.ids, **common)
    inputs = [x.strip() for x in a.inputs.split(",") if x.strip()]
    work = Path(a.work or tempfile.mkdtemp(prefix="synthface-tp-"))
    for kind in inputs:
        if kind == "disk":
            data = Path(a.data) if a.data else render_disk_dataset(work / f"disk-{a.size}", a.ids, a.per_id, a.size,
                                                                   a.device)
            src = {"disk": {"type": "folder", "path": str(data), "augment": {"flip": 0.5}}}
            r = trainer_throughput(src, workers=a.workers, out=work / "run-disk", **tr_kw)
        elif kind == "stream":
            src = {"synth": {"type": "stream", "source": "morphable", "preset": "wild", "num_ids": a.ids,
                             "per_id": a.per_id, "render_batch_size": a.batch, "augment": {"flip": 0.5},
                             "source_kwargs": {"device": a.device, "overrides": {"max_batch": a.batch}}}}
            r = trainer_throughput(src, workers=0 if a.device.startswith("cuda") else a.workers,
                                   out=work / "run-stream", **tr_kw)
        else:
            raise ValueError(f"unknown input {kind!r} (use disk, stream)")
        r["fraction_of_raw"] = r["img_s"] / res["raw"]["img_s"]
        res[kind] = r
    return res


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.benchmark_throughput", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--backbone-kwargs", default=None, help="JSON dict (default: {\"width\": 16} for tiny)")
    ap.add_argument("--embedding", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", default="32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--inputs", default="disk,stream", help="comma list of disk, stream")
    ap.add_argument("--data", default=None, help="an ImageFolder / rendered dataset for the disk input "
                    "(default: render one with the engine)")
    ap.add_argument("--ids", type=int, default=16, help="identities of the rendered / streamed data")
    ap.add_argument("--per-id", type=int, default=4)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader processes for the disk input")
    ap.add_argument("--prefetch", action="store_true", help="use the background batch prefetcher on the CPU too "
                    "(always on with CUDA)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU, a per-core "
                    "figure that a shared machine cannot spoil; torch's default with CUDA)")
    ap.add_argument("--json", default=None, help="write the figures here")
    return ap


def format_report(res: dict[str, Any]) -> str:
    c = res["config"]
    lines = [f"throughput: {c['backbone']} {c['size']}px batch {c['batch']} {c['precision']} "
             f"channels_last={c['channels_last']} compile={c['compile']} on {res['device_name']}",
             f"  raw fwd+bwd (random tensors on the device): {res['raw']['img_s']:.1f} img/s"]
    for k in ("disk", "stream"):
        if k in res:
            lines.append(f"  trainer, {'from disk' if k == 'disk' else 'on the fly'}: {res[k]['img_s']:.1f} img/s "
                         f"= {100 * res[k]['fraction_of_raw']:.1f}% of raw")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    threads = a.threads or (None if a.device.startswith("cuda") else 1)
    if threads:
        torch.set_num_threads(threads)
    res = run(a)
    print(format_report(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
