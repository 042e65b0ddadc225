"""The identity screen's kernels on this machine (issue 16): matrix-product throughput by dtype, the
passes over one product (comparison + nonzero vs row minimum) and the screen tile's size.

    python benchmarks/screen_kernels.py [--dim 163] [--threads 2]

Prints one JSON line: GFLOP/s of ``torch.mm`` (float32, bf16, int8 ``_int_mm``) for a 4096 x 8192
product, milliseconds of the passes over it, and GFLOP/s of product + row minimum for several
(rows, tile) shapes over 200,000 columns (what :func:`engine.separation.close_pairs` does per block).
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def _ms(f, reps: int = 5) -> float:
    f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=163, help="columns of the screen operands (161 dims + 2)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, M, D = 4096, 8192, args.dim
    x, y = torch.randn(B, D), torch.randn(M, D)
    gflop = 2 * B * M * D / 1e9
    out: dict = {"dim": D, "threads": args.threads, "product_gflops": {}}
    for name, a, b in (("float32", x, y), ("bfloat16", x.bfloat16(), y.bfloat16())):
        out["product_gflops"][name] = round(gflop / _ms(lambda: torch.mm(a, b.T)) * 1e3, 1)
    Dp = (D + 7) // 8 * 8  # int8 products want K a multiple of 8
    xi = torch.randint(-127, 128, (B, Dp), dtype=torch.int8)
    yi = torch.randint(-127, 128, (M, Dp), dtype=torch.int8)
    try:
        out["product_gflops"]["int8"] = round(2 * B * M * Dp / 1e9 / _ms(lambda: torch._int_mm(xi, yi.T)) * 1e3, 1)
    except (RuntimeError, AttributeError) as e:
        out["product_gflops"]["int8"] = f"unavailable ({type(e).__name__})"
    g = torch.mm(x.bfloat16(), y.bfloat16().T)
    r = torch.randn(B).bfloat16()
    keep = g < (r[:, None] - 100)
    out["passes_ms"] = {"product_bf16": round(_ms(lambda: torch.mm(x.bfloat16(), y.bfloat16().T)), 1),
                        "compare_to_row_bound": round(_ms(lambda: g < r[:, None]), 1),
                        "nonzero": round(_ms(lambda: keep.nonzero(as_tuple=True)), 1),
                        "row_minimum": round(_ms(lambda: g.amin(1) <= 0), 1)}
    Y = torch.randn(200_000, D).bfloat16()
    shapes = {}
    for rows, tile in ((4096, 8192), (4096, 4096), (4096, 2048), (4096, 1024), (2048, 2048), (2048, 1024)):
        xr = torch.randn(rows, D).bfloat16()

        def screen():
            for s in range(0, Y.shape[0], tile):
                (torch.mm(xr, Y[s: s + tile].T).amin(1) <= 0).nonzero()
        shapes[f"{rows}x{tile}"] = round(2 * rows * Y.shape[0] * D / 1e9 / _ms(screen, reps=2) * 1e3, 1)
    out["product_and_row_minimum_gflops"] = shapes
    print(json.dumps(out))


if __name__ == "__main__":
    main()
