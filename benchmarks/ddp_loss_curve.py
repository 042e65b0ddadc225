"""DDP of the FR trainer (issue 16): the loss curve of one process with global batch 8 next to two
CPU processes over gloo with 4 each (torchrun), same seed and data (the config of
tests/training/test_training_ddp.py: tiny backbone, 6 people x 4 images, 9 steps, no augmentation).

    python benchmarks/ddp_loss_curve.py [--out /tmp/ddp_curve] [--steps 9]

Prints one JSON line: both curves (global-batch loss per step) and the largest difference.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/ddp_curve")
    ap.add_argument("--steps", type=int, default=9)
    args = ap.parse_args()
    import yaml

    from tests.training.test_training_ddp import _config, _free_port

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    curves = {}
    for world in (1, 2):
        cfg = out / f"w{world}.yaml"
        cfg.write_text(yaml.safe_dump(_config(out, world, steps=args.steps)))
        run = out / f"run{world}"
        train = ["-m", "training.train", "--config", str(cfg), "--out", str(run), "--threads", "1"]
        cmd = [sys.executable, *train] if world == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()), *train]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        curves[world] = torch.load(run / "phases" / "00-main" / "final.pt", weights_only=False)["loss_log"]
    diff = max(abs(a - b) for (_, a), (_, b) in zip(curves[1], curves[2]))
    print(json.dumps({"one_process": curves[1], "two_processes": curves[2], "max_abs_diff": diff}))


if __name__ == "__main__":
    main()
