"""Render cost of the hair mesh: the same wild batch with and without ``identity.hair_mesh``,
alternated in one process (render only, 1 thread, images/s per core).

    python benchmarks/hair_cost.py --ids 4 --per-id 16 --repeats 3
"""
import argparse
import time

import torch

from morphable import MorphableSource


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="wild")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--ids", type=int, default=4)
    ap.add_argument("--per-id", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    srcs = {on: MorphableSource(preset=a.preset, size=a.size, overrides={"identity": {"hair_mesh": on}}) for on in (False, True)}
    ids = srcs[True].sample_identities(a.ids, seed=0)
    rows = torch.arange(a.ids).repeat_interleave(a.per_id)
    ks = torch.arange(a.per_id).repeat(a.ids)
    times = {False: [], True: []}
    for on in (False, True):
        srcs[on].render(ids, rows, ks, seed=0)  # warm-up
    for _ in range(a.repeats):
        for on in (False, True):
            t = time.perf_counter()
            srcs[on].render(ids, rows, ks, seed=0)
            times[on].append(time.perf_counter() - t)
    n = rows.numel()
    for on in (False, True):
        print(f"hair_mesh={on}: {n / min(times[on]):.1f} img/s per core (best of {a.repeats}, batch {n})")
    print(f"cost ratio: {min(times[True]) / min(times[False]):.3f}")


if __name__ == "__main__":
    main()
