"""Identity sampling at scale (issue 16): time, peak memory and separability of
``MorphableSource.sample_identities(N)`` (candidate stream + blockwise exact rejection).

    python benchmarks/identity_scale.py --ids 100000 [--preset wild] [--threads 2] [--check-sequential 20000]

Prints one JSON line: wall and CPU seconds (the machine is shared: CPU seconds / threads is the
time on free cores), the load average, the candidate stream's cost per candidate, peak RSS, the achieved minimum distance (exact,
over all N) against the threshold, rejections. ``--check-sequential M`` also runs the pre-issue-16
one-at-a-time algorithm (tests/engine/test_identity_scale.py's oracle) on the first M identities and
checks the tensors are bit-identical.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", type=int, default=100_000)
    ap.add_argument("--preset", default="wild")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check-sequential", type=int, default=0, metavar="M")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from morphable import MorphableSource

    src = MorphableSource(preset=args.preset, size=112)
    t0 = time.time()
    cand = src._candidates(args.seed, 0, min(args.ids, 20000))
    t_cand = (time.time() - t0) / cand[0].shape[0]
    t0, c0 = time.time(), _cpu()
    ids = src.sample_identities(args.ids, args.seed)
    total, cpu = time.time() - t0, _cpu() - c0
    rep = ids.report
    out = {"ids": args.ids, "preset": args.preset, "threads": args.threads, "seconds": round(total, 1), "cpu_seconds": round(cpu, 1),
           "loadavg": [round(x, 1) for x in os.getloadavg()],
           "candidate_ms_each": round(t_cand * 1e3, 3), "min_distance_required": rep["min_distance_required"],
           "achieved_min_distance": rep["achieved_min_distance"], "rejected": rep["rejected"],
           "report_sample_size": rep.get("sample_size", rep["n"]),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if args.check_sequential:
        from tests.engine.test_identity_scale import _reference_candidates, _reference_reject

        m = args.check_sequential

        def c(start, count):
            s, a, _, _ = _reference_candidates(src, args.seed, start, count)
            return src._embedding(s, a)
        acc, buf, _ = _reference_reject(c, m, rep["min_distance_required"], 50, chunk=1024)
        ref = _reference_candidates(src, args.seed, 0, max(acc) + 1)
        sel = torch.tensor(acc)
        out["sequential_identical_first"] = m
        out["sequential_identical"] = bool(torch.equal(ids.params["shape"][:m], ref[0][sel])
                                           and torch.equal(ids.params["appearance"][:m], ref[1][sel])
                                           and torch.equal(ids.params["noise_offset"][:m], ref[2][sel])
                                           and torch.equal(ids.embedding[:m], buf.float()))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
