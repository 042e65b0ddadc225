"""Render throughput of the morphable source (images/s), batch of `--ids` identities x `--per-id`.

    python benchmarks/render_throughput.py --size 112 --ids 8 --per-id 8 --repeats 3 [--device cuda] [--threads 1]

``--threads 1`` measures img/s per core (the render workers of ``engine.render`` are single-threaded).
``--stages`` also prints where the time goes: seconds per render stage over the timed repeats (the
texture bake runs inside ``albedo``, the shadow maps inside ``light``). ``-o KEY=VALUE`` overrides the
source's config, e.g. ``-o identity.detail_model=runs/detail.npz`` (the learnt detail's cost).
"""
import argparse
import time

import torch

from common.cli import add_override
from common.config import apply_overrides
from common.memory import keep_freed_memory
from morphable import MorphableSource

#: MorphableSource's render stages, in order; (nested) ones run inside the stage above them
STAGES = ("_batch", "_geometry", "_rasterize", "_albedo", "_bake", "_light", "_shadow", "_background", "_composite",
          "_mean_shades", "_learnt_detail", "_occluders", "_degrade")
NESTED = {"_bake": "_albedo", "_shadow": "_light"}


def time_stages(src: MorphableSource, device: str) -> dict[str, float]:
    """Wrap ``src``'s stage methods (on this instance only) with timers; returns the live dict of
    seconds per stage (synchronised on CUDA)."""
    acc = {n: 0.0 for n in STAGES}

    def timed(name, fn):
        def run(*args, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            if device == "cuda":
                torch.cuda.synchronize()
            acc[name] += time.perf_counter() - t
            return out
        return run

    for n in STAGES:
        setattr(src, n, timed(n, getattr(src, n)))
    return acc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="wild")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--ids", type=int, default=8)
    ap.add_argument("--per-id", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--supersample", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--stages", action="store_true", help="also print the seconds spent in each render stage")
    add_override(ap, help="morphable source override, e.g. identity.detail_model=runs/detail.npz")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    keep_freed_memory()  # as engine.render's render workers do
    over = apply_overrides({}, a.override)
    if a.supersample:
        over["supersample"] = a.supersample
    src = MorphableSource(preset=a.preset, size=a.size, device=a.device, overrides=over)
    ids = src.sample_identities(a.ids, seed=0)
    rows = torch.arange(a.ids).repeat_interleave(a.per_id)
    ks = torch.arange(a.per_id).repeat(a.ids)
    src.render(ids, rows, ks, seed=0)  # warm-up
    stages = time_stages(src, a.device) if a.stages else None
    times = []
    for r in range(a.repeats):
        if a.device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        src.render(ids, rows, ks + (r + 1) * a.per_id, seed=0)
        if a.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    n = len(rows)
    best = min(times)
    print(f"preset={a.preset} size={a.size} ss={src.cfg.supersample} batch={n} threads={torch.get_num_threads()} "
          f"device={a.device}: best {n / best:.1f} img/s, median {n / sorted(times)[len(times) // 2]:.1f} img/s")
    if stages is not None:
        total = sum(times)
        for name, sec in stages.items():
            inside = f" (inside {NESTED[name][1:]})" if name in NESTED else ""
            print(f"  {name[1:]:13s} {sec:7.3f} s {100 * sec / total:5.1f}%{inside}")


if __name__ == "__main__":
    main()
