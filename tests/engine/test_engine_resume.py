"""kill -9 a real ``python -m engine.render`` mid-run, rerun it, compare every byte."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import render as R

ROOT = Path(__file__).resolve().parents[2]
FAKE = "tests.fake_source:FakeSource"


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "summary.json" and not p.relative_to(root).as_posix().startswith(".journal/")
    }


def _journal_lines(out: Path) -> int:
    j = out / ".journal" / "shard-0-of-1.jsonl"
    return j.read_bytes().count(b"\n") if j.exists() else 0


@pytest.mark.parametrize(
    "yaml_extra, first_flags, resume_flags, resume_rw",
    [
        # killed while 2 render worker processes render (and write) blocks; rerun of the same command
        ("render_workers: 2\n", [], [], 2),
        # killed while the main process renders (encoding in a --workers pool), resumed with the CPU
        # default (render workers): the count is not part of the dataset config
        ("", ["--render-workers", "0"], [], R.DEFAULT_RENDER_WORKERS),
    ],
    ids=["render-workers-2", "main-then-default"],
)
def test_kill9_then_resume_is_byte_identical(tmp_path, yaml_extra, first_flags, resume_flags, resume_rw):
    out = tmp_path / "killed"
    cfg = tmp_path / "cfg.yaml"
    # 4 blocks; the fake source sleeps per render call (delay is not part of its config). At most 2
    # processes render at once, so the kill (0.3 s after the first block is journaled) lands mid-run.
    cfg.write_text(
        f"ids: 7\nper_id: 3\nsource: {FAKE}\nsize: 32\nblock_ids: 2\nformat: both\nseed: 5\nworkers: 1\n"
        f"{yaml_extra}out: {out}\noverrides:\n  delay: 0.7\n"
    )
    cmd = [sys.executable, "-m", "engine.render", "--config", str(cfg), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd + first_flags, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _journal_lines(out) < 1:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no block finished in time"
            time.sleep(0.02)
        time.sleep(0.3)  # somewhere inside the next block(s)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the render process and its worker pool
        proc.wait()
    done = _journal_lines(out)
    assert 1 <= done < 4, "the kill must land mid-run"
    assert not (out / "metadata.parquet").exists() and not (out / ".journal" / "complete.json").exists()

    p = subprocess.run(cmd + resume_flags, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"resuming shard 0/1: {done} of 4 blocks already done" in p.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["render_workers"] == resume_rw and summary["blocks_resumed"] == done

    ref = tmp_path / "ref"
    R.render_dataset(ids=7, per_id=3, source=FAKE, size=32, block_ids=2, format="both", seed=5, workers=0,
                     render_workers=0, out=str(ref), progress=False, log=None)
    got, want = tree(out), tree(ref)
    assert sorted(got) == sorted(want)
    assert got == want
    assert not [n for n in got if ".tmp-" in n]
