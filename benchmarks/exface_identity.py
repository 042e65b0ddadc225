"""Identity consistency of the GAN source's variations, plain vs ``variation.mode=disentangled`` (issue 17).

    python benchmarks/exface_identity.py --checkpoint runs/learned/gan_lfw32_cpu/checkpoint --ids 64 --per-id 8 \\
        [--encoder RUN_DIR] [--override variation.candidates=128 ...] [--out report.json]

Same identities, same seed; for each mode: the mean encoder cosine of every variation to its identity's
reference image (:mod:`learned.gan.disentangle`), the mean genuine cosine (pairs of variations of one
identity), the mean impostor cosine (variations of different identities) and the time to sample the
identities (the boundary fits) and render. The encoder is the checkpoint's unless ``--encoder`` is given.
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


def measure(checkpoint: str, ids: int, per_id: int, seed: int, overrides: dict, encoder: str | None) -> dict:
    from learned.gan.source import GANSource

    ov = dict(overrides)
    if encoder:
        ov["encoder"] = encoder
    src = GANSource(checkpoint, overrides=ov)
    t0 = time.time()
    table = src.sample_identities(ids, seed)
    t1 = time.time()
    rows, var = torch.arange(ids).repeat_interleave(per_id), torch.arange(per_id).repeat(ids)
    rb = src.render(table, rows, var, seed)
    t2 = time.time()
    enc = src.encoder()
    e = enc.embed(rb.images * 2 - 1)
    ref = src._latent_images(table.params["embedding"], [(seed, "exface-reference", r) for r in range(ids)])
    cos_ref = (e * ref[rows]).sum(1)
    sim = e @ e.t()
    same = rows[:, None] == rows[None, :]
    off = ~torch.eye(len(rows), dtype=torch.bool)
    out = {"mode": src.cfg.variation.mode, "ids": ids, "per_id": per_id, "seed": seed,
           "cos_to_reference": float(cos_ref.mean()), "cos_to_reference_std_over_ids": float(cos_ref.view(ids, per_id).mean(1).std()),
           "genuine_cos": float(sim[same & off].mean()), "impostor_cos": float(sim[~same].mean()),
           "sample_identities_s": round(t1 - t0, 1), "render_s": round(t2 - t1, 1)}
    if "variation" in table.report:
        out["boundaries"] = {k: v for k, v in table.report["variation"].items() if k.startswith("mean_")}
        out["mean_shift"] = float(rb.factors["exface_shift"].mean())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--ids", type=int, default=64)
    ap.add_argument("--per-id", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", default=None, help="encoder spec (default: the checkpoint's)")
    ap.add_argument("--override", action="append", default=[], help="variation.KEY=VALUE for the disentangled mode")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    import yaml

    dis = {"variation.mode": "disentangled"}
    for kv in a.override:
        k, _, v = kv.partition("=")
        dis[k] = yaml.safe_load(v)
    res = [measure(a.checkpoint, a.ids, a.per_id, a.seed, {}, a.encoder),
           measure(a.checkpoint, a.ids, a.per_id, a.seed, dis, a.encoder)]
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        open(a.out, "w").write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
