"""ImageFolder / RecordIO writers and readers (engine.formats)."""
from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import formats as F

MAGIC = 0xCED7230A


def _images(n, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _decode(b: bytes) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).copy()).permute(2, 0, 1)


def test_jpeg_encoding_is_deterministic():
    im = _images(1)[0]
    assert F.encode_jpeg(im) == F.encode_jpeg(im.copy())
    assert F.encode_jpeg(im)[:2] == b"\xff\xd8"


def test_layout_widths_sort_numerically():
    assert F.image_relpath(7, 3, num_ids=10, per_id=5) == "images/000007/003.jpg"
    assert F.image_relpath(7, 3, num_ids=12_345_678, per_id=1500) == "images/00000007/0003.jpg"
    names = [F.image_relpath(i, 0, 1000, 10).split("/")[1] for i in range(1000)]
    assert sorted(names) == names


def test_imagefolder_and_rec_round_trip(tmp_path):
    n_ids, per = 3, 4
    imgs = _images(n_ids * per)
    labels = [i // per for i in range(n_ids * per)]
    rel = [F.image_relpath(i // per, i % per, n_ids, per) for i in range(n_ids * per)]
    framed, _, _ = F.encode_and_write_chunk(imgs, str(tmp_path), rel, [i + 1 for i in range(len(imgs))], labels)
    jpegs = [F.encode_jpeg(im) for im in imgs]
    # ImageFolder
    ds = F.open_dataset(tmp_path / "images")
    assert isinstance(ds, F.ImageFolderDataset)
    assert len(ds) == 12 and ds.num_classes == 3 and ds.classes == ["000000", "000001", "000002"]
    assert ds.labels.tolist() == labels and ds.labels.dtype == torch.long
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and y == labels[i]
        assert torch.equal(x, _decode(jpegs[i]))
    assert not list(tmp_path.rglob(".*tmp*"))
    # rec via the high-level writer
    rdir = tmp_path / "rec"
    F.write_rec_dataset(rdir, jpegs, labels, 16, 16)
    rds = F.open_dataset(rdir)
    assert isinstance(rds, F.RecDataset)
    assert len(rds) == 12 and rds.num_classes == 3 and rds.labels.tolist() == labels
    for i in range(len(rds)):
        assert torch.equal(rds[i][0], ds[i][0]) and rds[i][1] == labels[i]
    assert (rdir / "property").read_text() == "3,16,16\n"
    # the worker's framed records are exactly the writer's image records
    data = (rdir / "train.rec").read_bytes()
    assert data.startswith(framed)
    # prefix / .rec path forms
    assert len(F.open_dataset(rdir / "train")) == 12
    assert len(F.open_dataset(rdir / "train.rec")) == 12
    # picklable for DataLoader workers (descriptor reopened per process)
    clone = pickle.loads(pickle.dumps(rds))
    assert torch.equal(clone[5][0], rds[5][0])


def test_rec_header_and_identity_records(tmp_path):
    per = [2, 3, 1]
    labels = [c for c, n in enumerate(per) for _ in range(n)]
    jpegs = [F.encode_jpeg(im) for im in _images(len(labels))]
    F.write_rec_dataset(tmp_path, jpegs, labels, 16, 16)
    idx = F.read_idx(tmp_path / "train.idx")
    n = len(labels)
    assert list(idx) == list(range(1, n + 1)) + [0] + [n + 1 + c for c in range(3)]
    recs = dict(F.iter_records(tmp_path / "train.rec"))
    assert sorted(recs) == sorted(idx.values())
    # record 0: flag 2, label (first identity key, end)
    flag, label, rid, id2, rest = F.unpack_irheader(recs[idx[0]])
    assert (flag, rid, id2, rest) == (2, 0, 0, b"") and label.tolist() == [n + 1, n + 4]
    raw = recs[idx[0]]
    assert struct.unpack("<IfQQ", raw[:24]) == (2, 0.0, 0, 0)
    # identity records: image key ranges
    starts = [1, 3, 6]
    for c in range(3):
        flag, label, rid, _, _ = F.unpack_irheader(recs[idx[n + 1 + c]])
        assert flag == 2 and rid == n + 1 + c and label.tolist() == [starts[c], starts[c] + per[c]]
    # image records: flag 0, float label, id = key, JPEG after the 24-byte header
    for key in range(1, n + 1):
        flag, label, rid, _, rest = F.unpack_irheader(recs[idx[key]])
        assert flag == 0 and label == float(labels[key - 1]) and rid == key and rest == jpegs[key - 1]
    # records start on 4-byte boundaries, lrecord = length (cflag 0)
    with open(tmp_path / "train.rec", "rb") as f:
        for off in idx.values():
            assert off % 4 == 0
            f.seek(off)
            magic, lrec = struct.unpack("<II", f.read(8))
            assert magic == MAGIC and lrec >> 29 == 0


def test_frame_record_splits_magic_like_dmlc():
    m = struct.pack("<I", MAGIC)
    payload = b"abcd" + m + b"xy"
    framed = F.frame_record(payload)
    expect = m + struct.pack("<I", (1 << 29) | 4) + b"abcd" + m + struct.pack("<I", (3 << 29) | 2) + b"xy\0\0"
    assert framed == expect
    # unaligned magic is not split; magic at the very end (not < lower_align) neither
    assert F.frame_record(b"a" + m + b"bcd")[4:8] == struct.pack("<I", 8)
    for p in [payload, m, m + m, b"", b"abc", b"ab" + m + b"cd" + m, m * 3 + b"z"]:
        f = F.frame_record(p)
        assert len(f) % 4 == 0
        got, end = F.read_record_at(lambda n, o: f[o:o + n], 0)
        assert got == p and end == len(f)


def _mx_record(payload: bytes) -> bytes:
    """Framing written independently of engine.formats (payloads here never contain the magic)."""
    pad = (4 - len(payload) % 4) % 4
    return struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * pad


def test_reads_mxnet_float_label_rec(tmp_path):
    """im2rec-style file: keys from 0, flag 0 with float labels, no header record, no property."""
    jpegs = [F.encode_jpeg(im) for im in _images(5)]
    labels = [3.0, 0.0, 1.0, 3.0, 2.0]
    rec, idx = bytearray(), []
    for i, (j, lab) in enumerate(zip(jpegs, labels)):
        idx.append(f"{i}\t{len(rec)}\n")
        rec += _mx_record(struct.pack("IfQQ", 0, lab, i, 0) + j)
    (tmp_path / "data.rec").write_bytes(bytes(rec))
    (tmp_path / "data.idx").write_text("".join(idx))
    ds = F.open_dataset(tmp_path / "data")
    assert ds.labels.tolist() == [3, 0, 1, 3, 2] and ds.num_classes == 4
    assert torch.equal(ds[4][0], _decode(jpegs[4])) and ds[4][1] == 2


def test_reads_insightface_face2rec2_rec(tmp_path):
    """Old insightface layout: images 1..N with label vectors [label, aligned], header record 0 and
    identity records written *after* the images."""
    per = [2, 2, 1]
    labels = [c for c, n in enumerate(per) for _ in range(n)]
    jpegs = [F.encode_jpeg(im) for im in _images(len(labels), seed=1)]
    rec, idx = bytearray(), []
    for i, (j, lab) in enumerate(zip(jpegs, labels), start=1):
        idx.append(f"{i}\t{len(rec)}\n")
        rec += _mx_record(struct.pack("IfQQ", 2, 0.0, i, 0) + np.array([lab, 1.0], np.float32).tobytes() + j)
    n = len(labels)
    idx.append(f"0\t{len(rec)}\n")
    rec += _mx_record(struct.pack("IfQQ", 2, 0.0, 0, 0) + np.array([n + 1, n + 4], np.float32).tobytes())
    start = 1
    for c, k in enumerate(per):
        idx.append(f"{n + 1 + c}\t{len(rec)}\n")
        rec += _mx_record(struct.pack("IfQQ", 2, 0.0, n + 1 + c, 0) + np.array([start, start + k], np.float32).tobytes())
        start += k
    (tmp_path / "train.rec").write_bytes(bytes(rec))
    (tmp_path / "train.idx").write_text("".join(idx))
    ds = F.open_dataset(tmp_path)
    assert len(ds) == n and ds.labels.tolist() == labels and ds.num_classes == 3
    assert all(torch.equal(ds[i][0], _decode(jpegs[i])) for i in range(n))


def test_generic_imagefolder_any_names_and_extensions(tmp_path):
    for cls, names in {"b": ["x.png", "y.JPG"], "a10": ["1.jpeg"], "a2": ["z.bmp", "notes.txt"], ".hidden": ["q.png"], "empty": []}.items():
        d = tmp_path / cls
        d.mkdir()
        for name in names:
            if name.endswith(".txt"):
                (d / name).write_text("hi")
            else:
                Image.fromarray(_images(1, 8)[0]).save(d / name)
    ds = F.open_dataset(tmp_path)
    assert ds.classes == ["a10", "a2", "b"] and ds.num_classes == 3
    assert ds.labels.tolist() == [0, 1, 2, 2]
    assert ds[1][0].shape == (3, 8, 8)


def test_lfw_dev_opens():
    root = Path("/work/shared/data/lfw-dev/images")
    if not root.is_dir():
        pytest.skip("lfw-dev not present")
    ds = F.open_dataset(root)
    assert ds.num_classes == len(ds.classes) > 100 and ds.classes == sorted(ds.classes)
    x, y = ds[0]
    assert x.dtype == torch.uint8 and x.shape[0] == 3 and y == 0


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        F.open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        F.open_dataset(tmp_path / "empty")
    # corrupt records
    jpegs = [F.encode_jpeg(im) for im in _images(3)]
    F.write_rec_dataset(tmp_path / "r", jpegs, [0, 1, 1], 16, 16)
    data = bytearray((tmp_path / "r" / "train.rec").read_bytes())
    idx = F.read_idx(tmp_path / "r" / "train.idx")
    data[idx[2]] ^= 0xFF  # break the magic of image 2
    (tmp_path / "r" / "train.rec").write_bytes(bytes(data))
    ds = F.open_dataset(tmp_path / "r")
    ds[0]
    with pytest.raises(F.CorruptRecordError, match="magic"):
        ds[1]
    (tmp_path / "r" / "train.idx").write_text("1\t999999\n")
    with pytest.raises(F.CorruptRecordError):
        F.open_dataset(tmp_path / "r")
    (tmp_path / "r" / "train.idx").write_text("garbage\n")
    with pytest.raises(F.CorruptRecordError):
        F.open_dataset(tmp_path / "r")
    # undecodable image file
    d = tmp_path / "bad" / "c0"
    d.mkdir(parents=True)
    (d / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(F.CorruptRecordError, match="cannot decode"):
        F.open_dataset(tmp_path / "bad")[0]


def test_atomic_write_leaves_no_tmp_on_error(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    F.atomic_write_bytes(target, b"old")

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        F.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
