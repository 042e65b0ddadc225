"""The engine renders datasets from a diffusion checkpoint: CLI, resume after an interruption, errors."""
from __future__ import annotations

import json

import pytest
import torch

from engine import render as R
from tests.learned_helpers import interrupted_render, render_args, session_run, tree

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return session_run("diffusion", tmp_path_factory)


def _args(run, out, *extra):
    return render_args("diffusion", run, out, *extra)


def test_cli_render_and_resume_is_byte_identical(tmp_path, run, monkeypatch, capsys):
    from learned.diffusion.source import DiffusionSource

    full = tmp_path / "full"
    assert R.main(_args(run, full)) == 0
    desc = json.loads((full / "dataset.json").read_text())
    assert desc["source"]["name"] == "diffusion" and desc["source"]["config"]["checkpoint_sha256"]
    assert desc["separability"]["space"].startswith("FR encoder")
    import pyarrow.parquet as pq

    meta = pq.read_table(full / "metadata.parquet").to_pydict()
    assert len(meta["identity"]) == 10 and set(meta["guidance"]) == {2.0} and "noise_seed" in meta
    assert (full / "train.rec").is_file() and (full / "contact_sheet.png").is_file()

    # interrupted after the first of 3 blocks (the source fails on its second render call) ...
    part = tmp_path / "part"
    interrupted_render(monkeypatch, DiffusionSource, _args(run, part))
    assert (part / ".journal" / "shard-0-of-1.jsonl").read_text().count("\n") == 1
    # ... the same command resumes and gives the same bytes as the uninterrupted run
    assert R.main(_args(run, part)) == 0
    assert "resuming shard 0/1: 1 of 3 blocks already done" in capsys.readouterr().out
    assert tree(part) == tree(full)
    # another checkpoint (other weights) is another dataset: refused in the same dir
    other = tmp_path / "ck2"
    import shutil

    shutil.copytree(run["checkpoint"], other)
    sd = torch.load(other / "ema.pt", weights_only=True)
    k0 = next(iter(sd))
    sd[k0] = sd[k0] + 1.0
    torch.save(sd, other / "ema.pt")
    argv = _args(run, full)
    argv[argv.index("--checkpoint") + 1] = str(other)
    assert R.main(argv) == 2
    assert "checkpoint_sha256" in capsys.readouterr().err


def test_render_workers_build_the_source_from_the_checkpoint(tmp_path, run):
    out = tmp_path / "rw"
    R.render_dataset(ids=2, per_id=2, source="diffusion", checkpoint=str(run["checkpoint"]), size=16,
                         out=out, block_ids=1, render_workers=1, progress=False, fsync=False, log=None)
    assert (out / ".journal" / "complete.json").is_file()
    ref = tmp_path / "main"
    R.render_dataset(ids=2, per_id=2, source="diffusion", checkpoint=str(run["checkpoint"]), size=16,
                     out=ref, block_ids=1, render_workers=0, workers=0, progress=False, fsync=False, log=None)
    assert tree(out) == tree(ref)


def test_morphable_rejects_a_checkpoint(tmp_path, run, capsys):
    assert R.main(["--ids", "1", "--checkpoint", str(run["checkpoint"]), "--out", str(tmp_path / "m"), "--no-progress"]) == 2
    assert "takes no --checkpoint" in capsys.readouterr().err


def test_checkpoint_in_a_render_config(tmp_path, run):
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"ids: 2\nper_id: 1\nsource: diffusion\ncheckpoint: {run['checkpoint']}\nsize: 16\n"
                   f"overrides: {{guidance: 1.0, steps: 3}}\n")
    kwargs, _ = R.resolve_args(["--config", str(cfg)])
    assert kwargs["checkpoint"] == str(run["checkpoint"]) and kwargs["overrides"] == {"guidance": 1.0, "steps": 3}
