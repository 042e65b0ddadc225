"""The engine renders datasets from a GAN checkpoint: CLI, formats, metadata, shards, resume, streaming, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine import render as R
from tests.learned_helpers import interrupted_render, render_args, session_run, tree

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return session_run("gan", tmp_path_factory)


def _args(run, out, *extra):
    return render_args("gan", run, out, *extra)


def test_cli_render_resume_and_shards_are_byte_identical(tmp_path, run, monkeypatch, capsys):
    from learned.gan.source import GANSource

    full = tmp_path / "full"
    assert R.main(_args(run, full, "--override", "truncation=0.9")) == 0
    desc = json.loads((full / "dataset.json").read_text())
    assert desc["source"]["name"] == "gan" and desc["source"]["config"]["checkpoint_sha256"]
    assert desc["source"]["config"]["truncation"] == 0.9 and desc["separability"]["space"].startswith("FR encoder")
    import pyarrow.parquet as pq

    meta = pq.read_table(full / "metadata.parquet").to_pydict()
    assert len(meta["identity"]) == 10 and meta["truncation"] == pytest.approx([0.9] * 10)
    assert len(set(meta["noise_seed"])) == 10
    assert (full / "train.rec").is_file() and (full / "contact_sheet.png").is_file()

    # interrupted after the first of 3 blocks, then the same command resumes to the same bytes
    part = tmp_path / "part"
    interrupted_render(monkeypatch, GANSource, _args(run, part, "--override", "truncation=0.9"))
    assert R.main(_args(run, part, "--override", "truncation=0.9")) == 0
    assert "resuming shard 0/1: 1 of 3 blocks already done" in capsys.readouterr().out
    assert tree(part) == tree(full)

    # two shards into one dir, then merge: the same dataset
    sharded = tmp_path / "sharded"
    for k in range(2):
        assert R.main(_args(run, sharded, "--override", "truncation=0.9", "--shard", f"{k}/2")) == 0
    if not (sharded / "dataset.json").is_file():
        assert R.main(_args(run, sharded, "--override", "truncation=0.9", "--merge")) == 0
    assert tree(sharded) == tree(full)

    # other sampling settings are another dataset: refused in the same dir
    assert R.main(_args(run, full, "--override", "truncation=0.5")) == 2
    assert "truncation" in capsys.readouterr().err


def test_stream_matches_the_disk_images(tmp_path, run):
    from engine import create_source
    from engine.stream import RenderStream

    out = tmp_path / "disk"
    R.render_dataset(ids=3, per_id=2, source="gan", checkpoint=str(run["checkpoint"]), size=16, out=out, block_ids=2,
                     render_workers=0, workers=0, progress=False, fsync=False, log=None, format="imagefolder")
    src = create_source("gan", checkpoint=str(run["checkpoint"]), size=16)
    ds = RenderStream(src, num_ids=3, per_id=2, fixed_variations=True, shuffle=False, batch_size=4, seed=0)
    items = list(ds)
    assert [int(lb) for _, lb in items] == [0, 0, 1, 1, 2, 2]  # identity-major, slots k = 0, 1
    stream = torch.stack([img for img, _ in items])
    rows, ks = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 0, 1, 0, 1])
    direct = src.render(src.sample_identities(3, 0), rows, ks, 0).images
    torch.testing.assert_close(stream, direct, atol=1e-5, rtol=0)  # same images as a direct render
    for i, (r, k) in enumerate(zip(rows.tolist(), ks.tolist())):  # and as the JPEGs on disk
        disk = torch.from_numpy(np.array(Image.open(out / "images" / f"{r:06d}" / f"{k:03d}.jpg").convert("RGB")))
        assert float((disk.permute(2, 0, 1).float() / 255 - stream[i]).abs().mean()) < 0.03


def test_diffusion_source_refuses_a_gan_checkpoint(tmp_path, run, capsys):
    argv = ["--source", "diffusion", "--checkpoint", str(run["checkpoint"]), "--size", "16", "--ids", "2",
            "--out", str(tmp_path / "d"), "--no-progress", "--render-workers", "0"]
    assert R.main(argv) == 2
    err = capsys.readouterr().err
    assert "is a 'gan' checkpoint, not a 'diffusion' one" in err and "--source gan" in err
