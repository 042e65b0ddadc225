"""engine.render: determinism across workers/render workers/shards, crash recovery, metadata, clear errors."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import formats as F
from engine import journal as J
from engine import metadata as M
from engine import render as R
from tests.fake_source import FakeSource

ROOT = Path(__file__).resolve().parents[2]
FAKE = "tests.fake_source:FakeSource"
CFG = dict(ids=5, per_id=3, source=FAKE, size=32, block_ids=2, format="both", seed=3)


def tree(root: Path) -> dict[str, bytes]:
    """All dataset files (bytes) except the run summary and bookkeeping journals."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != "summary.json" and not rel.startswith(".journal/"):
            out[rel] = p.read_bytes()
    return out


def render(out, **kw):
    """Render in the main process unless a test asks for render workers (monkeypatches reach only it)."""
    args = {**CFG, "out": str(out), "workers": 0, "render_workers": 0, "progress": False, "log": None, **kw}
    return R.render_dataset(**args)


class ThreadSpy(FakeSource):
    """Logs torch's intra-op thread count during ``render`` as a metadata factor."""

    def render(self, identities, rows, variations, seed):
        rb = super().render(identities, rows, variations, seed)
        rb.factors["torch_threads"] = torch.full((len(rb),), torch.get_num_threads(), dtype=torch.long)
        return rb


class Unpicklable(FakeSource):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.hook = lambda: None  # a lambda cannot be pickled


def _boom(_pid):
    raise RuntimeError("this source cannot be loaded here")


class FailsInWorker(FakeSource):
    """Pickles fine, but unpickling (in a render worker) fails."""

    def __reduce__(self):
        return _boom, (os.getpid(),)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ds"
    s = render(out)
    assert s["complete"] and s["images_rendered"] == 15
    return out, tree(out)


def test_reference_layout(reference):
    out, files = reference
    names = set(files)
    for want in ("dataset.json", "metadata.parquet", "contact_sheet.png", "train.rec", "train.idx", "property",
                 "images/000004/002.jpg"):
        assert want in names
    assert len([n for n in names if n.startswith("images/")]) == 15
    assert not any(".tmp-" in n for n in names) and not (out / ".parts").exists()
    assert files["property"] == b"5,32,32\n"
    desc = json.loads(files["dataset.json"])
    assert desc["source"]["name"] == FAKE and desc["source"]["config"]["size"] == 32
    assert desc["seed"] == 3 and desc["num_images"] == 15 and desc["block_ids"] == 2 and desc["format"] == "both"
    assert desc["separability"]["n"] == 5 and "synthface_version" in desc
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["time_s"]) >= {"render", "encode", "write", "wait", "commit"} and summary["images_per_s"] > 0
    assert summary["render_workers"] == 0 and summary["workers"] == 0
    assert "render_workers" not in desc and "workers" not in desc
    # both formats hold the same pixels and labels
    rec, imf = F.open_dataset(out), F.open_dataset(out, format="imagefolder")
    assert isinstance(rec, F.RecDataset) and isinstance(imf, F.ImageFolderDataset)
    assert rec.labels.tolist() == imf.labels.tolist() == [i // 3 for i in range(15)]
    assert all(torch.equal(rec[i][0], imf[i][0]) for i in range(15))
    sheet = __import__("PIL.Image").Image.open(out / "contact_sheet.png")
    assert sheet.size == (2 + 3 * 34, 2 + 5 * 34)


def test_metadata_columns(reference):
    out, _ = reference
    t = M.read_metadata(out)
    assert t.num_rows == 15
    cols = set(t.column_names)
    assert {"identity", "k", "index", "path", "rec_key"} <= cols
    for name in M.LANDMARK_NAMES:
        assert {f"lm_{name}_x", f"lm_{name}_y"} <= cols
    assert {"pose_0", "pose_1", "pose_2", "light", "expression_0", "expression_1", "blur", "occluded"} <= cols
    assert {"id_age", "id_gender"} <= cols
    d = t.to_pydict()
    assert d["identity"] == [i // 3 for i in range(15)] and d["k"] == [i % 3 for i in range(15)]
    assert d["index"] == list(range(15)) and d["rec_key"] == list(range(1, 16))
    assert d["path"][4] == "images/000001/001.jpg"
    assert json.loads(t.schema.metadata[b"synthface.factors"]) == {"blur": 0, "expression": 2, "light": 0, "occluded": 0, "pose": 3}
    # the values are the source's factors
    from tests.fake_source import FakeSource

    src = FakeSource(size=32)
    ids = src.sample_identities(5, 3)
    rb = src.render(ids, torch.tensor([1]), torch.tensor([1]), 3)
    assert d["pose_0"][4] == pytest.approx(float(rb.factors["pose"][0, 0]))
    assert d["lm_nose_tip_y"][4] == pytest.approx(float(rb.landmarks[0, 2, 1]))
    assert d["id_age"][4] == pytest.approx(float(ids.meta["age"][1]))


@pytest.mark.parametrize("workers, render_workers", [(2, 0), (0, 1), (1, 2)])
def test_workers_and_render_workers_are_byte_identical(reference, tmp_path, workers, render_workers):
    """Every file (images, rec, idx, parquet, sheet, dataset.json) equals the reference, rendered in
    the main process with --workers 0 --render-workers 0."""
    _, ref = reference
    s = render(tmp_path / "w", workers=workers, render_workers=render_workers)
    assert s["complete"] and s["images_rendered"] == 15 and s["render_workers"] == render_workers
    assert s["workers"] == (0 if render_workers else workers)
    if render_workers:
        assert s["time_s"]["render"] > 0 and s["time_s"]["encode"] > 0  # summed over the workers
    assert tree(tmp_path / "w") == ref


def test_shards_are_byte_identical(reference, tmp_path):
    _, ref = reference
    s0 = render(tmp_path / "sh", shard="0/2", workers=1, render_workers=2)
    assert not s0["complete"] and not (tmp_path / "sh" / "train.rec").exists()
    s1 = render(tmp_path / "sh", shard="1/2")
    assert s1["complete"]
    assert tree(tmp_path / "sh") == ref
    # 3 shards of 3 blocks, finished out of order, in different render modes
    for k, rw in ((2, 1), (0, 0), (1, 2)):
        render(tmp_path / "sh3", shard=(k, 3), render_workers=rw, workers=1)
    assert tree(tmp_path / "sh3") == ref


def test_source_instances_and_render_workers(reference, tmp_path):
    _, ref = reference
    notes: list[str] = []
    # a picklable instance is sent to the workers; an unpicklable one renders in the main process
    s = render(tmp_path / "inst", source=FakeSource(size=32), render_workers=2, log=notes.append)
    assert s["render_workers"] == 2 and not [n for n in notes if n.startswith("note:")]
    assert tree(tmp_path / "inst") == ref
    # (other classes: only dataset.json, which names the source class, differs from the reference)
    same = {k: v for k, v in ref.items() if k != "dataset.json"}
    s = render(tmp_path / "unp", source=Unpicklable(size=32), render_workers=2, log=notes.append)
    assert s["render_workers"] == 0 and s["complete"]
    assert any(n.startswith("note:") and "cannot be pickled" in n and "main process" in n for n in notes)
    got = tree(tmp_path / "unp")
    assert json.loads(got.pop("dataset.json"))["source"]["name"] == "tests.engine.test_engine_render:Unpicklable"
    assert got == same
    # a worker that cannot set up its source: a clear error, nothing journaled; rendering in the
    # main process then resumes
    out = tmp_path / "fail"
    with pytest.raises(R.WorkerError, match="could not set up the source .*this source cannot be loaded here.*--render-workers 0"):
        render(out, source=FailsInWorker(size=32), render_workers=1)
    j = out / ".journal" / "shard-0-of-1.jsonl"
    assert not j.exists() or not j.read_text()
    assert render(out, source=FailsInWorker(size=32), render_workers=0)["complete"]
    got = tree(out)
    del got["dataset.json"]
    assert got == same


@pytest.mark.parametrize("render_workers", [0, 2])
def test_cpu_rendering_is_single_threaded(tmp_path, render_workers):
    before = torch.get_num_threads()
    want = 2 if before == 1 else before
    torch.set_num_threads(want)
    try:
        render(tmp_path / "t", source=ThreadSpy(size=32), render_workers=render_workers)
        assert torch.get_num_threads() == want  # the main process gets its thread count back
    finally:
        torch.set_num_threads(before)
    assert set(M.read_metadata(tmp_path / "t").column("torch_threads").to_pylist()) == {1}


def _morphable_cached() -> bool:
    try:
        from morphable.default_model import default_model_path
    except Exception:
        return False
    return default_model_path().exists()


@pytest.mark.skipif(not _morphable_cached(), reason="default morphable model not built (first use takes ~1 min)")
def test_morphable_render_workers_byte_identical(tmp_path):
    """The real default source (torch float kernels): main process vs 2 render workers, same bytes."""
    cfg = dict(ids=3, per_id=2, source="morphable", size=48, block_ids=1, format="both", seed=1)
    render(tmp_path / "rw0", **cfg, render_workers=0)
    render(tmp_path / "rw2", **cfg, render_workers=2)
    a, b = tree(tmp_path / "rw0"), tree(tmp_path / "rw2")
    assert len([n for n in a if n.endswith(".jpg")]) == 6
    assert a == b


def test_manual_merge(reference, tmp_path):
    _, ref = reference
    out = tmp_path / "m"
    render(out, shard="1/2")
    with pytest.raises(R.RenderError, match="cannot merge"):
        render(out, merge=True)
    render(out, shard="0/2")  # merges automatically
    (out / ".journal" / "complete.json").unlink()
    for p in ("train.rec", "train.idx", "metadata.parquet", "contact_sheet.png"):
        (out / p).unlink()
    # parts were removed after the first merge -> rebuild them by re-running the shards
    for p in (out / ".journal").glob("shard-*"):
        p.unlink()
    render(out, shard="0/2")
    assert not (out / "train.rec").exists()
    render(out, shard="1/2")
    assert tree(out) == ref


def test_resume_after_simulated_crash(reference, tmp_path, monkeypatch):
    """Crash right before the 2nd journal line (images + rec bytes of block 1 already written), then
    add debris a kill could leave: a torn journal line, garbage after the rec data, a temp file."""
    _, ref = reference
    out = tmp_path / "c"

    class Crash(Exception):
        pass

    real = J.append_journal
    calls = {"n": 0}

    def crashing(path, entry):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash()
        real(path, entry)

    monkeypatch.setattr(J, "append_journal", crashing)
    with pytest.raises(Crash):
        render(out)
    monkeypatch.setattr(J, "append_journal", real)
    j = out / ".journal" / "shard-0-of-1.jsonl"
    assert len(j.read_text().splitlines()) == 1
    with open(j, "ab") as f:
        f.write(b'{"block": 1, "ima')
    with open(out / "train.rec", "ab") as f:
        f.write(b"\x0a\x23\xd7\xce garbage")
    (out / "images" / "000004").mkdir(parents=True, exist_ok=True)
    (out / "images" / "000004" / ".000.jpg.tmp-12345").write_bytes(b"half")
    s = render(out)
    assert s["blocks_resumed"] == 1 and s["images_rendered"] == 9 and s["complete"]
    assert tree(out) == ref
    # a complete dataset is left alone
    s = render(out)
    assert s["images_rendered"] == 0 and tree(out) == ref


def test_disk_full_is_clean_and_resumable(reference, tmp_path, monkeypatch, capsys):
    _, ref = reference
    out = tmp_path / "full"
    real = F.atomic_write_bytes
    count = {"n": 0}

    def filling(path, data, fsync=True):
        if str(path).endswith(".jpg"):
            count["n"] += 1
            if count["n"] > 8:  # block 0 (6 images) fits, block 1 fails half way
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, fsync=fsync)

    monkeypatch.setattr(F, "atomic_write_bytes", filling)
    argv = ["--ids", "5", "--per-id", "3", "--source", FAKE, "--size", "32", "--block-ids", "2", "--format", "both",
            "--seed", "3", "--workers", "0", "--render-workers", "0", "--out", str(out), "--no-progress"]
    rc = R.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "no space left on device" in err and "rerun" in err and len(err.splitlines()) == 1
    assert len((out / ".journal" / "shard-0-of-1.jsonl").read_text().splitlines()) == 1
    assert not list(out.rglob(".*.tmp-*"))
    monkeypatch.setattr(F, "atomic_write_bytes", real)
    assert R.main(argv) == 0
    assert tree(out) == ref


def _err(argv, capsys) -> tuple[int, str]:
    rc = R.main(argv + ["--no-progress", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--ids", "3", "--source", "nope"], "unknown source 'nope'; known sources: "),  # the list grows with the registry
        (["--ids", "3", "--source", "tests.fake_source:Missing"], "has no attribute 'Missing'"),
        (["--ids", "3", "--source", FAKE, "--preset", "bogus"], "unknown preset 'bogus'"),
        (["--ids", "0", "--source", FAKE], "--ids must be a positive integer"),
        (["--ids", "-4", "--source", FAKE], "--ids must be a positive integer"),
        (["--ids", "3", "--per-id", "0", "--source", FAKE], "--per-id must be a positive integer"),
        (["--ids", "3", "--source", FAKE, "--shard", "3/2"], "bad --shard '3/2'"),
        (["--ids", "3", "--source", FAKE, "--shard", "a/b"], "bad --shard 'a/b'"),
        (["--ids", "3", "--source", FAKE, "--block-ids", "0"], "--block-ids must be a positive integer"),
        (["--ids", "3", "--source", FAKE, "--render-workers", "-1"], "--render-workers must be >= 0 (0 = render in the main process), got -1"),
        (["--source", FAKE], "--ids is required"),
        (["--ids", "3", "--source", FAKE, "--override", "nonsense=1"], "unknown override"),
    ],
)
def test_clear_errors(argv, msg, capsys, tmp_path):
    rc, err = _err(argv + ["--out", str(tmp_path / "o")], capsys)
    assert rc == 2
    assert err.startswith("error: ") and msg in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_refuses_different_config_and_resumes_same(reference, tmp_path, capsys):
    out, ref = reference
    base = ["--ids", "5", "--per-id", "3", "--source", FAKE, "--size", "32", "--block-ids", "2", "--format", "both",
            "--out", str(out)]
    rc, err = _err(base + ["--seed", "4"], capsys)
    assert rc == 2 and "different config" in err and "seed" in err
    rc, err = _err(base + ["--seed", "3", "--format", "rec"], capsys)
    assert rc == 2 and "format" in err
    assert R.main(base + ["--seed", "3", "--no-progress"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert tree(out) == ref
    # a non-empty dir that is not a dataset
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "stuff.txt").write_text("mine")
    rc, err = _err(["--ids", "3", "--source", FAKE, "--out", str(tmp_path / "x")], capsys)
    assert rc == 2 and "not empty" in err


def test_yaml_config_and_flag_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"ids: 7\nper-id: 2\nsource: {FAKE}\npreset: frontal\nsize: 16\noverrides:\n  noise: 0.0\n")
    kw, _ = R.resolve_args(["--config", str(cfg), "--per-id", "4", "--override", "max_yaw=5"])
    assert kw["ids"] == 7 and kw["per_id"] == 4 and kw["preset"] == "frontal" and kw["size"] == 16
    assert kw["render_workers"] is None  # auto: by device
    assert kw["overrides"] == {"noise": 0.0, "max_yaw": 5}
    assert kw["out"] is None and R.default_out(FAKE, "frontal", 7, 4, 0) == "out/FakeSource-frontal-7x4-s0"
    (tmp_path / "bad.yaml").write_text("ids: 3\nbogus: 1\n")
    with pytest.raises(R.RenderError, match="unknown key"):
        R.resolve_args(["--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(R.RenderError, match="cannot read"):
        R.resolve_args(["--config", str(tmp_path / "missing.yaml")])
    (tmp_path / "rw.yaml").write_text("ids: 3\nrender-workers: 3\n")
    assert R.resolve_args(["--config", str(tmp_path / "rw.yaml")])[0]["render_workers"] == 3
    assert R.resolve_args(["--config", str(tmp_path / "rw.yaml"), "--render-workers", "0"])[0]["render_workers"] == 0
    (tmp_path / "rw.yaml").write_text("ids: 3\nrender_workers: two\n")
    with pytest.raises(R.RenderError, match="render_workers: expected an integer"):
        R.resolve_args(["--config", str(tmp_path / "rw.yaml")])
    # one override syntax (common.cli): dotted keys nest into the source overrides, several after one flag
    (tmp_path / "ov.yaml").write_text("ids: 3\noverrides:\n  pose.yaw: {lo: -5, hi: 5}\n  identity: {mode: fitted}\n")
    kw, _ = R.resolve_args(["--config", str(tmp_path / "ov.yaml"), "--override", "pose.yaw.lo=-10", "-o",
                            "identity.min_distance=0.5", "noise=0"])
    assert kw["overrides"] == {"pose": {"yaw": {"lo": -10, "hi": 5}}, "identity": {"mode": "fitted", "min_distance": 0.5},
                               "noise": 0}


def test_help_mentions_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        R.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--ids", "--per-id", "--source", "--preset", "--config", "--out", "--size", "--aligned", "--unaligned",
                 "--format", "--seed", "--shard", "--workers", "--render-workers", "--device", "--block-ids", "--merge"):
        assert flag in text


def test_cli_subprocess_error_has_no_traceback(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "engine.render", "--ids", "2", "--source", FAKE, "--shard", "a/b", "--out", str(tmp_path / "o")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 2
    assert p.stderr.strip() == "error: bad --shard 'a/b': expected K/N with integers 0 <= K < N (e.g. 0/4)"


def test_cli_config_value_error_is_one_line_before_rendering(tmp_path):
    # an inverted range in a render config is refused when the source config loads, not in a render worker
    cfg = tmp_path / "inv.yaml"
    cfg.write_text("ids: 4\nper_id: 2\noverrides: {pose: {yaw: {lo: 30, hi: -30}}}\n")
    p = subprocess.run(
        [sys.executable, "-m", "engine.render", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pose.yaw: lo (30) > hi (-30)" in lines[0], p.stderr
    assert not (tmp_path / "o").exists()


def test_single_formats_match_both(reference, tmp_path):
    _, ref = reference
    render(tmp_path / "rec", format="rec")
    got = tree(tmp_path / "rec")
    assert not any(n.startswith("images/") for n in got)
    for name in ("train.rec", "train.idx", "property", "contact_sheet.png"):
        assert got[name] == ref[name], name
    render(tmp_path / "if", format="imagefolder")
    got = tree(tmp_path / "if")
    assert not (tmp_path / "if" / "train.rec").exists()
    imgs = {n: b for n, b in ref.items() if n.startswith("images/")}
    assert {n: b for n, b in got.items() if n.startswith("images/")} == imgs
    assert got["contact_sheet.png"] == ref["contact_sheet.png"]
    t = M.read_metadata(tmp_path / "if").to_pydict()
    assert t["rec_key"] == [None] * 15 and t["path"][0] == "images/000000/000.jpg"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_unavailable_is_a_clear_error(capsys, tmp_path):
    rc, err = _err(["--ids", "3", "--source", FAKE, "--device", "cuda", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "CUDA is not available" in err
