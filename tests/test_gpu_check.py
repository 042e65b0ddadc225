"""``benchmarks/gpu_check.py --quick``: the GPU check's code run on the CPU at tiny sizes, so it cannot rot
before a GPU runs it (issue 18); and its robustness (a failing or overrunning section leaves the rest)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--out", str(out), "--quick", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_gpu_check_quick_runs_every_section(tmp_path):
    p = _run(tmp_path / "gc")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rep = json.loads((tmp_path / "gc" / "gpu_check.json").read_text())
    sec = rep["sections"]
    assert list(sec) == ["tests", "render", "engine", "trainer", "learned", "trainer_compiled"]
    assert all(s["ok"] for s in sec.values())
    assert sec["tests"]["counts"].get("failed", 0) == 0
    assert {"batch_4", "batch_8"} <= set(sec["render"]) and sec["render"]["batch_8"]["img_s_best"] > 0
    assert sec["engine"]["complete"] and sec["engine"]["images"] == 12 and sec["engine"]["img_s"] > 0
    eager = sec["trainer"]["eager"]
    assert eager["raw"]["img_s"] > 0 and 0 < eager["disk"]["fraction_of_raw"] and 0 < eager["stream"]["fraction_of_raw"]
    assert len(sec["learned"]["results"]) == 2
    assert rep["environment"]["quick"] and rep["summary"]["targets_met"] == {}
    md = (tmp_path / "gc" / "gpu_check.md").read_text()
    assert "| engine | ok |" in md and "not applicable" in md


def test_gpu_check_survives_a_failing_and_an_overrunning_section(tmp_path):
    out = tmp_path / "gc"
    p = _run(out, "--sections", "render,engine", "--budget", "20",
             env={"SYNTHFACE_GPU_CHECK_FAIL": "render", "SYNTHFACE_GPU_CHECK_HANG": "engine"})
    assert p.returncode == 1
    sec = json.loads((out / "gpu_check.json").read_text())["sections"]
    assert not sec["render"]["ok"] and "injected failure" in sec["render"]["error"]
    assert not sec["engine"]["ok"] and sec["engine"].get("timeout")  # killed at its cap: reported, not hung
    assert "| render | FAILED |" in (out / "gpu_check.md").read_text()
