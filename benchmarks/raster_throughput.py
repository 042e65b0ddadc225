"""Rasterizer throughput: the default model's mesh, 64 random identities/poses, ArcFace-aligned 112 px.

    python benchmarks/raster_throughput.py [--threads 1] [--batch 64] [--size 112] [--device cpu]

On CPU it times both paths in one run: the native C kernel (default) and the pure-torch rasterizer
(``native=False``, the code CUDA runs), and checks they agree bit for bit.
"""
import argparse
import time

import torch

from morphable import load_default_model, rasterize
from morphable.camera import Camera, apply_affine, euler_to_matrix, similarity_transform, template


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = load_default_model().to(a.device)
    g = torch.Generator().manual_seed(0)
    B = a.batch
    v = m.vertices(torch.randn(B, m.num_shape, generator=g).to(a.device))
    R = euler_to_matrix(*(torch.randn(B, generator=g) * s for s in (30.0, 10.0, 5.0))).to(a.device)
    v = v @ R.transpose(1, 2)
    cam = Camera.from_35mm(torch.full((B,), 1.0, device=a.device), torch.full((B,), 50.0, device=a.device), a.size)
    lm = cam.project(m.landmark_points(v))
    M = similarity_transform(lm[..., :2], template(a.size).to(a.device))
    pv = cam.project(v)
    scr = torch.cat([apply_affine(M, pv[..., :2]), pv[..., 2:]], -1)
    paths = [("native", True), ("torch", False)] if a.device == "cpu" else [("torch", False)]
    out = {}
    for name, native in paths:
        rasterize(scr, m.faces, a.size, a.size, native=native)
        ts = []
        for _ in range(a.repeats):
            if a.device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fr = rasterize(scr, m.faces, a.size, a.size, native=native)
            if a.device == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        out[name] = fr
        print(f"rasterize [{name}] {B} x {a.size}px, {m.faces.shape[0]} faces, threads={a.threads}, device={a.device}: "
              f"best {B / min(ts):.1f} img/s ({min(ts) * 1000:.0f} ms/batch), coverage {float(fr.mask.float().mean()):.2f}")
    if len(out) == 2:
        same = all(torch.equal(getattr(out["native"], k), getattr(out["torch"], k)) for k in ("face", "bary", "depth"))
        print(f"native and torch outputs bit-identical: {same}")

if __name__ == "__main__":
    main()
