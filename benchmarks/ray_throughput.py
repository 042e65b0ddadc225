"""Ray rendering throughput (issue 16): the local engine and ``--ray local`` back to back, same
config and number of workers, plus ``--ray local`` with one worker; checks the outputs are
byte-identical.

    python benchmarks/ray_throughput.py [--ids 40] [--per-id 10] [--workers 2] [--out /tmp/ray_bench]

Prints one JSON line: images/s of each run (from summary.json: images over the pipeline time, i.e.
wall minus setup and finalize; Ray's runtime start-up and actor set-up are inside it, as the local
pool's process start-up is, less what overlaps the set-up), wall seconds of the whole call, the
ratios of both, and whether the files are identical.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "summary.json" and ".journal" not in p.parts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", type=int, default=40)
    ap.add_argument("--per-id", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-ids", type=int, default=8, help="identities per block (default: the engine's default)")
    ap.add_argument("--out", default="/tmp/ray_bench")
    args = ap.parse_args()
    from engine.render import render_dataset

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    kw = dict(ids=args.ids, per_id=args.per_id, preset="wild", format="both", block_ids=args.block_ids, seed=0,
              progress=False, log=None)
    runs = {}
    for name, extra in (("local", dict(render_workers=args.workers)),
                        ("ray", dict(render_workers=args.workers, ray="local")),
                        ("ray_1worker", dict(render_workers=1, ray="local"))):
        t0 = time.time()
        s = render_dataset(out=str(out / name), **kw, **extra)
        runs[name] = {"images_per_s": s["images_per_s"], "wall_s": round(time.time() - t0, 1),
                      "render_workers": s["render_workers"]}
    same = _tree(out / "local") == _tree(out / "ray") == _tree(out / "ray_1worker")
    r = {k: v["images_per_s"] for k, v in runs.items()}
    w = {k: v["wall_s"] for k, v in runs.items()}
    print(json.dumps({"images": args.ids * args.per_id, "block_ids": args.block_ids, "runs": runs, "identical_bytes": same,
                      "ray_vs_local": round(r["ray"] / r["local"], 3),
                      "ray_vs_1worker": round(r["ray"] / r["ray_1worker"], 3),
                      "ray_vs_local_wall": round(w["local"] / w["ray"], 3),
                      "ray_vs_1worker_wall": round(w["ray_1worker"] / w["ray"], 3),
                      "loadavg_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
