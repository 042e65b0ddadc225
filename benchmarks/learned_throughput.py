"""Training and sampling throughput of the generator of a ``kind: diffusion`` or ``kind: gan`` config.

    python benchmarks/learned_throughput.py                                   # lfw64 + lfw112 configs
    python benchmarks/learned_throughput.py --config configs/learned/diffusion_tiny_cpu.yaml --batch 8 --iters 2
    python benchmarks/learned_throughput.py --config configs/learned/gan_tiny_cpu.yaml --iters 4

Training: the trainer's own step (``DiffusionModule.diffusion_loss``: cosine v-prediction with
Contextual Partial Dropout, then backward, AdamW step and the EMA update) on random images and
random unit conditions, with the run's device settings (bf16 autocast + channels_last + fused AdamW
on CUDA; ``--compile`` for ``torch.compile``); no data loading. TFLOP/s counts the FLOPs of one step
(forward + backward) with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions,
attention; elementwise ops are not counted). Sampling: the default solver (from the config's
``sample`` section or ``--solver``/``--steps``) with classifier-free guidance (2 network passes per
step), images/s including the per-image noise generators. Prints one line per config and writes
``--json`` if given.

GAN configs: one training step is the trainer's own (``GANModule.d_loss``: D on DiffAugmented reals
and fakes, with the lazy R1 pass on steps ``i % gan.r1_every == 0``, then ``GANModule.g_loss``: the
non-saturating loss plus the identity loss through a randomly initialised encoder of the real size
(``--encoder-arch``, default iresnet50 at 112 px; the tiny configs use their own), both optimiser steps
and the EMA update). TFLOP/s counts one step without R1. Sampling: ``GANGenerator.sample`` (one
forward pass per image, the config's truncation and noise mode), including the per-image generators.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.interface import generator  # noqa: E402
from learned.train import parse_config  # noqa: E402

DEFAULT_CONFIGS = [ROOT / "configs/learned/diffusion_lfw64.yaml", ROOT / "configs/learned/diffusion_lfw112.yaml",
                   ROOT / "configs/learned/gan_lfw64.yaml", ROOT / "configs/learned/gan_lfw112.yaml"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_config(path: Path, device: torch.device, batch: int | None, iters: int, sample_batch: int | None,
                 solver: str | None, steps: int | None, guidance: float | None, compile_: bool,
                 embedding_dim: int, overrides: list[str], encoder_arch: str = "iresnet50") -> dict:
    import yaml

    from learned.config import tristate
    from learned.diffusion.trainer import DiffusionModule

    data = yaml.safe_load(Path(path).read_text())
    data["encoder"] = data.get("encoder") or "unused"
    data.setdefault("data", {})["path"] = data["data"].get("path") or "unused"
    cfg = parse_config(data, overrides, resolve=False)
    if cfg.kind == "gan":
        return bench_gan(cfg, path, device, batch, iters, sample_batch, embedding_dim, encoder_arch)
    cfg.model.embedding_dim = embedding_dim
    cfg.train.compile = compile_
    cuda = device.type == "cuda"
    S, B = cfg.data.image_size, batch or cfg.train.batch_size
    torch.manual_seed(0)
    module = DiffusionModule(cfg).to(device)
    cl = tristate(cfg.train.channels_last, cuda)
    if cl:
        module.model.to(memory_format=torch.channels_last)
    if compile_:
        module.__dict__["_compiled"] = torch.compile(module.model)
    opt = module.configure_optimizers()["optimizer"]
    params = sum(p.numel() for p in module.model.parameters())
    x = torch.rand(B, 3, S, S, device=device) * 2 - 1
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    cond = torch.nn.functional.normalize(torch.randn(B, embedding_dim, device=device), dim=-1)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    def step():
        with amp:
            loss = module.diffusion_loss(x, cond)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), cfg.train.grad_clip or 1e9)
        opt.step()
        opt.zero_grad(set_to_none=True)
        module.update_ema()
        return loss

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        with amp:
            loss = module.diffusion_loss(x, cond)
        loss.backward()
    opt.zero_grad(set_to_none=True)
    flops = fc.get_total_flops()
    for _ in range(2 if not compile_ else 3):  # warm-up (cudnn autotune, compile)
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    train_ips = B * iters / dt
    tflops = flops * iters / dt / 1e12

    s = cfg.sample
    sb = sample_batch or B
    st, sv, g = steps or s.steps, solver or s.solver, s.guidance if guidance is None else guidance
    ema = module.ema.eval()
    c = cond[:1].expand(sb, -1).contiguous() if sb > B else cond[:sb]
    gens = lambda r: [generator(0, "bench", r, i) for i in range(sb)]  # noqa: E731
    ema.sample(c, gens(0), steps=min(st, 2), solver=sv, guidance=g)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    reps = 2
    for r in range(reps):
        ema.sample(c, gens(r + 1), steps=st, solver=sv, guidance=g)
    _sync(device)
    sample_ips = sb * reps / (time.perf_counter() - t0)
    return {"config": str(path), "device": torch.cuda.get_device_name(device) if cuda else f"cpu x{torch.get_num_threads()}",
            "image_size": S, "params_m": round(params / 1e6, 2), "train_batch": B, "train_img_s": round(train_ips, 1),
            "train_tflops": round(tflops, 3), "gflop_per_img": round(flops / B / 1e9, 3),
            "precision": "bf16-autocast" if cuda else "fp32", "channels_last": cl, "compile": compile_,
            "sample_batch": sb, "solver": sv, "steps": st, "guidance": g, "sample_img_s": round(sample_ips, 2)}


def bench_gan(cfg, path: Path, device: torch.device, batch: int | None, iters: int, sample_batch: int | None,
              embedding_dim: int, encoder_arch: str) -> dict:
    """GAN training and sampling throughput (see the module docstring)."""
    from learned.config import tristate
    from learned.encoder import load_encoder
    from learned.gan.trainer import GANModule

    cuda = device.type == "cuda"
    enc_spec = cfg.encoder if (cfg.allow_random_encoder and isinstance(cfg.encoder, dict)) else \
        {"arch": encoder_arch, "embedding_size": embedding_dim, "input_size": 112, "random_init_seed": 0}
    encoder = load_encoder(enc_spec, device=device, allow_random=True) if cfg.gan.identity_weight > 0 else None
    cfg.model.embedding_dim = encoder.embedding_size if encoder is not None else embedding_dim
    S, B = cfg.data.image_size, batch or cfg.train.batch_size
    torch.manual_seed(0)
    module = GANModule(cfg, encoder).to(device)
    cl = tristate(cfg.train.channels_last, cuda)
    module._channels_last = cl
    if cl:
        for m in (module.G, module.D, module.G_ema):
            m.to(memory_format=torch.channels_last)
    t = cfg.train
    kw = {"fused": True} if tristate(t.fused_adam, cuda) and cuda else {}
    opt_g = torch.optim.AdamW(module.G.parameters(), lr=t.lr, betas=tuple(t.betas), **kw)
    opt_d = torch.optim.AdamW(module.D.parameters(), lr=t.lr, betas=tuple(t.betas), **kw)
    g_params = sum(p.numel() for p in module.G.parameters())
    d_params = sum(p.numel() for p in module.D.parameters())
    x = torch.rand(B, 3, S, S, device=device) * 2 - 1
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    cond = torch.nn.functional.normalize(torch.randn(B, cfg.model.embedding_dim, device=device), dim=-1)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    def set_grad(m, on):
        for p in m.parameters():
            p.requires_grad_(on)

    def step(i: int) -> None:
        set_grad(module.G, False)
        with amp:
            d_total, _ = module.d_loss(x, cond, r1=i % cfg.gan.r1_every == 0)
        d_total.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        set_grad(module.G, True)
        set_grad(module.D, False)
        with amp:
            g_total, _ = module.g_loss(cond)
        g_total.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        set_grad(module.D, True)
        module.update_ema()

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(1)
    flops = fc.get_total_flops()
    for i in range(2):  # warm-up (cudnn autotune), one with R1
        step(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(iters):
        step(i)
    _sync(device)
    dt = time.perf_counter() - t0
    s = cfg.sample
    sb = sample_batch or B
    c = cond[:1].expand(sb, -1).contiguous() if sb > B else cond[:sb]
    gens = lambda r: [generator(0, "bench", r, i) for i in range(sb)]  # noqa: E731
    G = module.G_ema
    smp = dict(truncation=s.truncation, noise_mode=s.noise_mode, truncation_samples=s.truncation_samples)
    G.sample(c, gens(0), **smp)  # warm-up
    _sync(device)
    reps = 3
    t0 = time.perf_counter()
    for r in range(reps):
        G.sample(c, gens(r + 1), **smp)
    _sync(device)
    sample_ips = sb * reps / (time.perf_counter() - t0)
    return {"config": str(path), "kind": "gan",
            "device": torch.cuda.get_device_name(device) if cuda else f"cpu x{torch.get_num_threads()}",
            "image_size": S, "params_m": round(g_params / 1e6, 2), "d_params_m": round(d_params / 1e6, 2),
            "encoder": enc_spec.get("arch") if encoder is not None else None, "train_batch": B,
            "train_img_s": round(B * iters / dt, 1), "train_tflops": round(flops * iters / dt / 1e12, 3),
            "gflop_per_img": round(flops / B / 1e9, 3), "r1_every": cfg.gan.r1_every,
            "precision": "bf16-autocast" if cuda else "fp32", "channels_last": cl, "compile": False,
            "sample_batch": sb, "truncation": s.truncation, "noise_mode": s.noise_mode, "sample_img_s": round(sample_ips, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", default=None, help="kind: diffusion or gan YAML (repeatable) [diffusion + gan, lfw64 + lfw112]")
    ap.add_argument("--override", "-o", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--batch", type=int, default=None, help="training batch [config's train.batch_size]")
    ap.add_argument("--iters", type=int, default=10, help="timed training steps")
    ap.add_argument("--sample-batch", type=int, default=None, help="images per sampling call [= training batch]")
    ap.add_argument("--solver", default=None)
    ap.add_argument("--steps", type=int, default=None, help="sampling steps [config's sample.steps]")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--embedding-dim", type=int, default=512, help="condition size (the encoder's; random here)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (diffusion only)")
    ap.add_argument("--encoder-arch", default="iresnet50", help="GAN identity-loss encoder (random weights) [iresnet50]")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)
    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = []
    for path in a.config or DEFAULT_CONFIGS:
        r = bench_config(Path(path), dev, a.batch, a.iters, a.sample_batch, a.solver, a.steps, a.guidance, a.compile,
                         a.embedding_dim, a.override, a.encoder_arch)
        results.append(r)
        how = (f"one pass, truncation {r['truncation']}, noise {r['noise_mode']}" if r.get("kind") == "gan"
               else f"{r['solver']}, {r['steps']} steps, guidance {r['guidance']}")
        params = f"{r['params_m']}M params" + (f" (D {r['d_params_m']}M, identity loss through {r['encoder']})"
                                               if r.get("kind") == "gan" else "")
        print(f"{Path(r['config']).name}: {r['image_size']}px {params} on {r['device']} ({r['precision']}): "
              f"train {r['train_img_s']} img/s at batch {r['train_batch']} ({r['train_tflops']} TFLOP/s, "
              f"{r['gflop_per_img']} GFLOP/img); sample {r['sample_img_s']} img/s ({how}, batch {r['sample_batch']})",
              flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
