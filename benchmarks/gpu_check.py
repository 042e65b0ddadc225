"""The one GPU check (issue 18): everything only a GPU can show, in at most ~9 minutes on one H100/H200.

    python benchmarks/gpu_check.py --out runs/gpu_check            # on a CUDA machine
    python benchmarks/gpu_check.py --out /tmp/gpu_check --quick    # the same code on CPU at tiny sizes (CI)

Sections, each run in its own process (its own peak memory; a crash, hang or CUDA error there cannot
take the others down) with a time cap, inside a total budget (``--budget``, 540 s; time a section
leaves unused goes to the later ones):

* ``tests``: the GPU tests (``pytest -m gpu``; skipped without CUDA, as in CI);
* ``render``: render-only img/s of the morphable source, ``wild`` 112 px, batch 64 and 256;
* ``engine``: ``engine.render`` end to end (render on the device, uint8 to the host, JPEG in the
  encode pool), 112 px ``wild``, 20,000 images, img/s;
* ``trainer``: ``training.benchmark_throughput``: iResNet-50 bf16 channels_last, raw fwd+bwd vs the
  real trainer from disk (the engine section's images) and on the fly;
* ``learned``: diffusion and GAN training and sampling img/s at 64 and 112 px
  (``benchmarks/learned_throughput.py``);
* ``trainer_compiled``: the trainer section with ``torch.compile`` (last: compilation is the slowest
  and least predictable part).

Before the sections, a setup step builds or loads the default morphable model (outside the budget:
its one-time build takes ~1.5 min on 2 cores; point ``SYNTHFACE_CACHE`` at a carried copy to skip it).
After every section ``gpu_check.json`` and ``gpu_check.md`` are rewritten, so a run killed midway keeps
what it measured. ``--quick`` runs every section on the CPU at tiny sizes (tests run by CI, so the
check cannot rot); ``--sections`` picks some.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("tests", "render", "engine", "trainer", "learned", "trainer_compiled")
#: Seconds each section may take (the total is the default budget); unused time carries forward. The
#: compiled trainer (torch.compile of iResNet-50, several compilations) is the riskiest: it runs last.
CAPS = {"tests": 110, "render": 50, "engine": 90, "trainer": 100, "learned": 70, "trainer_compiled": 120}
TARGETS = {"render_img_s": 20000.0, "engine_img_s": 10000.0, "trainer_fraction": 0.90}


# -- sizes ----------------------------------------------------------------------------------------

def plan(quick: bool) -> dict[str, Any]:
    """What each section runs: the GPU sizes, or tiny CPU sizes with ``quick``."""
    if quick:
        return {"device": "cpu", "size": 32, "render_batches": [4, 8], "render_repeats": 1,
                "engine": {"ids": 3, "per_id": 4, "block_ids": 1},
                "trainer": {"backbone": "tiny", "backbone_kwargs": '{"width": 8}', "embedding": 64, "batch": 8,
                            "steps": 2, "warmup": 1, "precision": "32", "channels_last": True,
                            "ids": 4, "per_id": 4, "workers": 0, "prefetch": True},
                "learned": {"configs": ["configs/learned/diffusion_tiny_cpu.yaml", "configs/learned/gan_tiny_cpu.yaml"],
                            "args": ["--iters", "1", "--batch", "2", "--sample-batch", "2", "--steps", "2",
                                     "--embedding-dim", "32"]}}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return {"device": "cuda", "size": 112, "render_batches": [64, 256], "render_repeats": 5,
            "engine": {"ids": 400, "per_id": 50, "block_ids": 8},
            "trainer": {"backbone": "iresnet50", "backbone_kwargs": None, "embedding": 512, "batch": 256,
                        "steps": 30, "warmup": 8, "precision": "bf16-mixed", "channels_last": True,
                        "ids": 2000, "per_id": 10, "workers": max(1, min(12, cpus - 2)),
                        "prefetch": True},
            "learned": {"configs": ["configs/learned/diffusion_lfw64.yaml", "configs/learned/diffusion_lfw112.yaml",
                                    "configs/learned/gan_lfw64.yaml", "configs/learned/gan_lfw112.yaml"],
                        "args": ["--iters", "5"]}}


# -- sections (each runs in a child process) --------------------------------------------------------

def _peak() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        import resource

        return {"peak_host_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    return {"peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
            "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def section_tests(p: dict, out: Path, quick: bool) -> dict[str, Any]:
    tests = ["tests/test_gpu.py", "tests/training/test_gpu_datapath.py", "tests/engine/test_prefetch_paths.py"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *tests]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = (r.stdout + r.stderr).strip().splitlines()[-15:]
    import re

    counts = {w: int(n) for n, w in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail[-1] if tail else "")}
    ok = r.returncode in (0, 5) and not counts.get("failed") and not counts.get("error") and not counts.get("errors")
    return {"ok": ok, "returncode": r.returncode, "counts": counts, "tail": tail}


def section_render(p: dict, out: Path, quick: bool) -> dict[str, Any]:
    import torch

    from morphable import MorphableSource

    res: dict[str, Any] = {}
    for batch in p["render_batches"]:
        if p["device"] == "cuda":
            torch.cuda.reset_peak_memory_stats()
        src = MorphableSource(preset="wild", size=p["size"], device=p["device"], overrides={"max_batch": batch})
        n_ids = max(1, batch // 8)
        ids = src.sample_identities(n_ids, seed=0)
        rows = torch.arange(n_ids).repeat_interleave(batch // n_ids)
        ks = torch.arange(batch // n_ids).repeat(n_ids)
        src.render(ids, rows, ks, seed=0)  # warm-up (kernels, caches)
        times = []
        for r in range(p["render_repeats"]):
            _sync(p["device"])
            t = time.perf_counter()
            src.render(ids, rows, ks + (r + 1) * 1000, seed=0)
            _sync(p["device"])
            times.append(time.perf_counter() - t)
        res[f"batch_{batch}"] = {"img_s_best": len(rows) / min(times), "img_s_median": len(rows) / sorted(times)[len(times) // 2],
                                 "images": len(rows), **_peak()}
    return res


def section_engine(p: dict, out: Path, quick: bool) -> dict[str, Any]:
    import torch

    from engine.render import render_dataset

    e = p["engine"]
    if p["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ds = out / "engine_ds"
    t = time.perf_counter()
    s = render_dataset(ids=e["ids"], per_id=e["per_id"], size=p["size"], preset="wild", device=p["device"],
                       out=str(ds), block_ids=e["block_ids"], format="imagefolder", progress=False, log=None,
                       fsync=False, overrides={"max_batch": e["block_ids"] * e["per_id"]})
    wall = time.perf_counter() - t
    n = int(s["images_rendered"])
    return {"images": n, "wall_s": wall, "img_s": n / wall, "complete": bool(s["complete"]), "workers": s.get("workers"),
            "render_workers": s.get("render_workers"), "time_s": s.get("time_s"), "dataset": str(ds), **_peak()}


def section_trainer(p: dict, out: Path, quick: bool, compiled: bool = False) -> dict[str, Any]:
    import torch

    from training.benchmark_throughput import build_parser, run

    t = p["trainer"]
    ds = out / "engine_ds"
    res: dict[str, Any] = {}
    # quick: torch.compile needs a C++ toolchain and minutes on a CPU; the flag path is the same code
    for comp in ([True] if compiled and not quick else [False]):
        if p["device"] == "cuda":
            torch.cuda.reset_peak_memory_stats()
        argv = ["--device", p["device"], "--backbone", t["backbone"], "--embedding", str(t["embedding"]),
                "--size", str(p["size"]), "--batch", str(t["batch"]), "--steps", str(t["steps"]),
                "--warmup", str(t["warmup"]), "--precision", t["precision"], "--ids", str(t["ids"]),
                "--per-id", str(t["per_id"]), "--workers", str(t["workers"]), "--work", str(out / "trainer_work")]
        if t["backbone_kwargs"]:
            argv += ["--backbone-kwargs", t["backbone_kwargs"]]
        if t["channels_last"]:
            argv.append("--channels-last")
        if comp:
            argv.append("--compile")
        if t.get("prefetch"):
            argv.append("--prefetch")
        if (ds / "dataset.json").exists():
            argv += ["--data", str(ds)]
        r = run(build_parser().parse_args(argv))
        res["compiled" if comp else "eager"] = {**r, **_peak()}
    return res


def section_learned(p: dict, out: Path, quick: bool) -> dict[str, Any]:
    L = p["learned"]
    js = out / "learned_throughput.json"
    cmd = [sys.executable, str(ROOT / "benchmarks/learned_throughput.py"), "--device", p["device"], "--json", str(js),
           *L["args"]]
    for c in L["configs"]:
        cmd += ["--config", str(ROOT / c)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"learned_throughput failed ({r.returncode}): {(r.stdout + r.stderr)[-2000:]}")
    return {"results": json.loads(js.read_text()), "stdout": r.stdout.strip().splitlines()[-8:]}


def section_trainer_compiled(p: dict, out: Path, quick: bool) -> dict[str, Any]:
    return section_trainer(p, out, quick, compiled=True)


RUNNERS = {"tests": section_tests, "render": section_render, "engine": section_engine, "trainer": section_trainer,
           "learned": section_learned, "trainer_compiled": section_trainer_compiled}


# -- driver ---------------------------------------------------------------------------------------

def _child(name: str, out: Path, quick: bool) -> int:
    """Run one section and write ``sections/<name>.json`` (``ok`` false with the error if it raises)."""
    import traceback

    p = plan(quick)
    t = time.perf_counter()
    try:
        if os.environ.get("SYNTHFACE_GPU_CHECK_FAIL") == name:  # fault injection for the robustness test
            raise RuntimeError(f"injected failure in section {name}")
        if os.environ.get("SYNTHFACE_GPU_CHECK_HANG") == name:  # a hung section (a stuck kernel, a deadlock)
            time.sleep(3600)
        if quick:
            import torch

            torch.set_num_threads(1)
        res = {"ok": True, **RUNNERS[name](p, out, quick)}
    except Exception as e:  # reported, never fatal for the other sections
        res = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    res["seconds"] = time.perf_counter() - t
    (out / "sections").mkdir(parents=True, exist_ok=True)
    (out / "sections" / f"{name}.json").write_text(json.dumps(res, indent=2, default=str))
    return 0


def _environment(quick: bool) -> dict[str, Any]:
    import platform

    import torch

    env = {"torch": torch.__version__, "python": platform.python_version(), "quick": quick,
           "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip() or None
    except OSError:
        env["commit"] = None
    return env


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures and the issue-18 targets they meet (None where a section is missing)."""
    sec = report["sections"]
    head: dict[str, Any] = {}
    r = sec.get("render", {})
    if r.get("ok"):
        head["render_img_s"] = max(v["img_s_best"] for k, v in r.items() if k.startswith("batch_"))
    e = sec.get("engine", {})
    if e.get("ok"):
        head["engine_img_s"] = e["img_s"]
    for name in ("trainer", "trainer_compiled"):
        tr = sec.get(name, {})
        if tr.get("ok"):
            for mode in ("eager", "compiled"):
                for kind in ("disk", "stream"):
                    if mode in tr and kind in tr[mode]:
                        head[f"trainer_{kind}_{mode}_fraction"] = tr[mode][kind]["fraction_of_raw"]
    met: dict[str, bool] = {}
    if report["environment"].get("quick"):
        return {"headline": head, "targets_met": met}  # CPU smoke sizes: the GPU targets do not apply
    if "render_img_s" in head:
        met["render >= 20,000 img/s"] = head["render_img_s"] >= TARGETS["render_img_s"]
    if "engine_img_s" in head:
        met["engine >= 10,000 img/s"] = head["engine_img_s"] >= TARGETS["engine_img_s"]
    for k, v in head.items():
        if k.endswith("_fraction"):
            met[f"{k} >= 90%"] = v >= TARGETS["trainer_fraction"]
    return {"headline": head, "targets_met": met}


def to_markdown(report: dict[str, Any]) -> str:
    env, sec = report["environment"], report["sections"]
    lines = [f"# gpu_check ({'quick, CPU' if env.get('quick') else env.get('gpu', 'no GPU')})", "",
             f"commit {env.get('commit')}, torch {env.get('torch')}, {env.get('cpus')} CPUs, budget {report['budget_s']} s, "
             f"sections {report['total_s']:.0f} s (+ setup {report.get('setup', {}).get('seconds', 0):.0f} s: default model)", "", "| section | status | seconds | figures |", "|---|---|---|---|"]
    for name in report["order"]:
        s = sec.get(name)
        if s is None:
            lines.append(f"| {name} | not run | | |")
            continue
        status = "ok" if s.get("ok") else ("timeout" if s.get("timeout") else "FAILED")
        figs = ""
        if name == "tests" and "counts" in s:
            figs = ", ".join(f"{v} {k}" for k, v in s["counts"].items())
        elif name == "render" and s.get("ok"):
            figs = "; ".join(f"{k.replace('_', ' ')}: {v['img_s_best']:.0f} img/s" for k, v in s.items() if k.startswith("batch_"))
        elif name == "engine" and s.get("ok"):
            figs = (f"{s['images']} images, {s['img_s']:.0f} img/s end to end ({s.get('render_workers')} render workers, "
                    f"{s.get('workers')} encode workers)")
        elif name.startswith("trainer") and s.get("ok"):
            parts = []
            for mode in ("eager", "compiled"):
                if mode in s:
                    m = s[mode]
                    parts.append(f"{mode}: raw {m['raw']['img_s']:.0f}" + "".join(
                        f", {k} {m[k]['img_s']:.0f} ({100 * m[k]['fraction_of_raw']:.0f}%)" for k in ("disk", "stream") if k in m))
            figs = "; ".join(parts) + " img/s"
        elif name == "learned" and s.get("ok"):
            figs = "; ".join(s.get("stdout", []))[:600]
        if not s.get("ok"):
            figs = (s.get("error") or "")[:300]
        lines.append(f"| {name} | {status} | {s.get('seconds', 0):.0f} | {figs} |")
    summ = report.get("summary", {})
    if summ.get("targets_met"):
        lines += ["", "Targets (issue 18):", ""] + [f"- {k}: {'met' if v else 'NOT met'}" for k, v in summ["targets_met"].items()]
    elif env.get("quick"):
        lines += ["", "Targets: not applicable (quick: CPU at tiny sizes)."]
    peaks = {n: _peaks(s) for n, s in sec.items()}
    lines += ["", "Peak memory (GiB): " + ", ".join(f"{n}: {v:.2f}" for n, v in peaks.items() if v is not None)]
    return "\n".join(lines) + "\n"


def _peaks(x: Any) -> float | None:
    """The largest ``peak_gpu_gib`` (or ``peak_host_rss_gib``) anywhere in a section's result."""
    found: list[float] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, w in v.items():
                if k in ("peak_gpu_gib", "peak_host_rss_gib") and isinstance(w, (int, float)):
                    found.append(float(w))
                else:
                    walk(w)

    walk(x)
    return max(found) if found else None


def _write(out: Path, report: dict[str, Any]) -> None:
    report["summary"] = summarize(report)
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, out / "gpu_check.json")
    (out / "gpu_check.md").write_text(to_markdown(report))


def run_check(out: Path, quick: bool = False, budget: float = 540.0, sections: list[str] | None = None,
              say=print) -> dict[str, Any]:
    """Run the sections in child processes within ``budget`` seconds; returns the report."""
    import torch

    if not quick and not torch.cuda.is_available():
        raise SystemExit("gpu_check needs CUDA (use --quick for the CPU smoke run)")
    out.mkdir(parents=True, exist_ok=True)
    order = list(sections or SECTIONS)
    unknown = [s for s in order if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    t0 = time.perf_counter()
    report: dict[str, Any] = {"environment": _environment(quick), "budget_s": budget, "order": order, "sections": {},
                              "total_s": 0.0}
    # setup, outside the section budget: build (or load) the default morphable model once, so no section
    # pays its one-time build (about 1.5 min on 2 cores; carry $SYNTHFACE_CACHE to skip it)
    ts = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if quick:  # tiny sizes on a shared CPU: one thread per process (no oversubscription)
        env["OMP_NUM_THREADS"] = "1"
    try:
        sp = subprocess.run([sys.executable, "-c", "from morphable import load_default_model; load_default_model()"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        report["setup"] = {"ok": sp.returncode == 0, "seconds": time.perf_counter() - ts,
                           "error": None if sp.returncode == 0 else sp.stderr[-1500:]}
    except subprocess.TimeoutExpired:
        report["setup"] = {"ok": False, "seconds": time.perf_counter() - ts, "error": "model build timed out (300 s)"}
    say(f"gpu_check: setup (default model) {'ok' if report['setup']['ok'] else 'FAILED'} ({report['setup']['seconds']:.0f} s)")
    t0 = time.perf_counter()
    scale = budget / sum(CAPS[s] for s in order)
    carry = 0.0
    for name in order:
        left = budget - (time.perf_counter() - t0)
        cap = min(CAPS[name] * scale + carry, left)
        if cap < 5:
            report["sections"][name] = {"ok": False, "timeout": True, "error": "no time left in the budget", "seconds": 0}
            _write(out, report)
            continue
        say(f"gpu_check: {name} (up to {cap:.0f} s)")
        ts = time.perf_counter()
        res_path = out / "sections" / f"{name}.json"
        if res_path.exists():
            res_path.unlink()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--out", str(out)] + (["--quick"] if quick else [])
        # its own process group: a timeout kills the section with every process it started (encode pools)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=cap)
            if res_path.exists():
                res = json.loads(res_path.read_text())
            else:
                res = {"ok": False, "error": f"section process exited {proc.returncode} without a result: {log[-1500:]}"}
        except subprocess.TimeoutExpired:
            import signal

            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            res = {"ok": False, "timeout": True, "error": f"timed out after {cap:.0f} s"}
        used = time.perf_counter() - ts
        res.setdefault("seconds", used)
        carry = max(0.0, cap - used)
        report["sections"][name] = res
        report["total_s"] = time.perf_counter() - t0
        _write(out, report)
        say(f"gpu_check: {name}: {'ok' if res.get('ok') else 'FAILED: ' + str(res.get('error'))[:200]} ({used:.0f} s)")
    report["total_s"] = time.perf_counter() - t0
    _write(out, report)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md and scratch data")
    ap.add_argument("--quick", action="store_true", help="CPU, tiny sizes: the CI smoke run of the same code")
    ap.add_argument("--budget", type=float, default=None, help=f"total seconds [{sum(CAPS.values())}; quick: 420]")
    ap.add_argument("--sections", default=None, help=f"comma list of {','.join(SECTIONS)} [all]")
    ap.add_argument("--section", default=None, help=argparse.SUPPRESS)  # internal: run one section (child)
    a = ap.parse_args(argv)
    out = Path(a.out)
    if a.section:
        return _child(a.section, out, a.quick)
    budget = a.budget or (420.0 if a.quick else float(sum(CAPS.values())))
    rep = run_check(out, a.quick, budget, a.sections.split(",") if a.sections else None)
    print((out / "gpu_check.md").read_text())
    return 0 if all(s.get("ok") for s in rep["sections"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
