"""What both learned trainers (``kind: diffusion`` and ``kind: gan``) and their engine sources must do
alike: resume a run (and refuse another config), resume to exactly the uninterrupted run, and the
engine CLI's errors about a checkpoint."""
from __future__ import annotations

import shutil

import pytest
import torch

from engine import render as R
from learned.checkpoint import load_checkpoint
from tests.learned_helpers import kind_config, make_face_folder, session_run

pytestmark = pytest.mark.usefixtures("one_thread")
KINDS = ["diffusion", "gan"]


@pytest.fixture
def run(kind, tmp_path_factory):
    return session_run(kind, tmp_path_factory)


# kind: (steps of the session run, a config change that cannot be resumed, the key it changes)
RESUME = {"diffusion": (40, "train.lr=0.1", "train.lr"), "gan": (30, "gan.r1_gamma=2.0", "gan.r1_gamma")}


@pytest.mark.parametrize("kind", KINDS)
def test_resume_continues_and_refuses_another_config(tmp_path, run, kind):
    from learned.train import run_training
    from common.config import ConfigError

    steps, change, key = RESUME[kind]
    out = tmp_path / "run"
    shutil.copytree(run["out"], out)
    lines = []
    m = run_training(kind_config(kind, run["data"], f"train.steps={steps + 3}"), out, printer=lines.append)
    assert any("resuming" in ln for ln in lines) and m["global_step"] == steps + 3
    assert load_checkpoint(out / "checkpoint").config["train"]["step"] == steps + 3
    with pytest.raises(ConfigError, match=f"different config.*{key}"):
        run_training(kind_config(kind, run["data"], f"train.steps={steps + 5}", change), out, printer=lines.append)
    (out / ".last.ckpt.tmp").write_bytes(b"torn")  # a torn write of an interrupted save does not matter
    assert run_training(kind_config(kind, run["data"], f"train.steps={steps + 5}"), out,
                        printer=lines.append)["global_step"] == steps + 5
    if kind == "gan":
        # a diffusion config pointed at a GAN run dir is refused (and vice versa, by the kind check)
        with pytest.raises(ConfigError, match="different config"):
            run_training(kind_config("diffusion", run["data"], "train.steps=36"), out, printer=lines.append)


# kind: (steps before the stop, prefix of the EMA weights in the training state)
UNINTERRUPTED = {"diffusion": (3, "ema."), "gan": (4, "G_ema.")}  # gan: an R1 step comes next


@pytest.mark.parametrize("kind", KINDS)
def test_resume_is_the_uninterrupted_run(tmp_path, kind):
    """Stopping after 3 (gan: 4) steps and resuming to 6 gives the weights *and* the EMA of an
    uninterrupted 6-step run: optimisers, EMA (updated before the checkpoint is written), global RNG
    (timesteps, noise, condition dropout, latents, augmentation, flips) and the data order (not
    restarted at the first batches) resume."""
    from learned.train import run_training

    stop, prefix = UNINTERRUPTED[kind]
    data = make_face_folder(tmp_path / "faces", ids=4, per_id=3, singletons=1, size=16)
    ov = ("train.batch_size=4", f"train.checkpoint_every={stop}", "train.sample_every=0")
    for steps, out in ((6, "a"), (stop, "b"), (6, "b")):
        run_training(kind_config(kind, data, f"train.steps={steps}", *ov), tmp_path / out, printer=lambda s: None)
    a, b = (torch.load(tmp_path / r / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"] for r in "ab")
    assert set(a) == set(b) and any(k.startswith(prefix) for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the exported EMA is the one of the training state (the step's EMA update came first)
    ema = torch.load(tmp_path / "b" / "checkpoint" / "ema.pt", weights_only=True)
    for k, v in ema.items():
        assert torch.equal(v, b[prefix + k]), k


@pytest.mark.parametrize("kind, extra, msg", [
    *((k, e, m) for k in KINDS for e, m in [(["--checkpoint", "/does/not/exist"], "checkpoint not found"),
                                            ([], "needs a checkpoint"),
                                            (["--size", "112"], "generates 16 px images")]),
    ("gan", ["--override", "noise_mode=fresh"], "unknown noise_mode"),
])
def test_cli_errors(tmp_path, run, capsys, kind, extra, msg):
    argv = ["--source", kind, "--ids", "2", "--out", str(tmp_path / "x"), "--no-progress", "--render-workers", "0"]
    if "--checkpoint" not in extra and msg != "needs a checkpoint":
        argv += ["--checkpoint", str(run["checkpoint"])]
    if "--size" not in extra:
        argv += ["--size", "16"]
    assert R.main(argv + extra) == 2
    assert msg in capsys.readouterr().err
