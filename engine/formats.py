"""On-disk dataset formats: DigiFace-style ImageFolder and insightface/MXNet RecordIO (no MXNet needed).

Writing
-------
* **ImageFolder** (``images/`` inside a synthface dataset dir)::

      DIR/<identity>/<k>.jpg      e.g. DIR/000042/007.jpg

  ``<identity>`` is zero-padded to ``id_width(num_ids)`` digits (at least 6) and ``<k>`` to
  ``k_width(per_id)`` digits (at least 3), so that *sorted* directory / file order equals numeric
  order and a generic ImageFolder reader assigns label ``i`` to identity ``i``. Every file is written
  atomically (:func:`atomic_write_bytes`, i.e. :func:`common.io.atomic_write`: hidden temp name in
  the same directory, fsync, ``os.replace``), so a crash never leaves a half-written ``.jpg``;
  leftover ``.<name>.tmp-*`` files are hidden and removed by :func:`remove_stale_tmp`.

* **RecordIO** (``train.rec`` + ``train.idx`` + ``property``), byte-compatible with MXNet's
  ``MXIndexedRecordIO`` and insightface's ``MXFaceDataset``:

  - every record is ``uint32 magic 0xced7230a``, ``uint32 lrecord = cflag << 29 | length``, the
    payload, zero padding to a multiple of 4 bytes. Payloads that contain the magic at a 4-aligned
    position are split into parts (cflag 1/2/3) exactly like dmlc-core's ``RecordIOWriter``;
  - a payload is an ``IRHeader`` ``struct.pack('<IfQQ', flag, label, id, id2)`` (24 bytes), then for
    ``flag > 0`` ``flag`` float32 labels, then the JPEG bytes;
  - ``train.idx`` lines are ``key\\toffset\\n`` (offset of the record's magic in ``train.rec``);
  - ``property`` is ``num_classes,H,W``.

  synthface writes the insightface layout: keys ``1..N`` are the images (flag 0, float label = class),
  key ``0`` is the header record (flag 2, label ``(N + 1, N + 1 + C)``) and keys ``N+1..N+C`` are the
  identity records (flag 2, label ``(first_key, end_key)`` of that identity's images). In the file
  the images come first, then record 0, then the identity records (the order of insightface's
  ``face2rec2.py``); ``train.idx`` lists keys in file order.

Reading
-------
:func:`open_dataset` autodetects an ImageFolder root (any image extension, any class-dir names,
sorted -> labels ``0..C-1``), a synthface dataset dir (``train.rec`` preferred, else ``images/``),
a rec dir (``train.rec`` + ``train.idx``) or a rec prefix/path (``X`` or ``X.rec`` with ``X.idx``),
and returns a :class:`FaceImageDataset` (a torch ``Dataset`` of ``(uint8 (3,H,W), int label)``).
Rec readers accept both this writer's files and mxnet/insightface ones (flag 0 + float label, or
flag > 0 + label vector whose first entry is the class).
"""
from __future__ import annotations

import errno
import io
import os
import struct
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from common.io import atomic_write as atomic_write_bytes  # noqa: F401  (engine.formats' name for it)
from common.io import fsync_dir

# --------------------------------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------------------------------

#: Fixed JPEG settings: same pixels -> same bytes (Pillow's libjpeg, no optimisation, 4:4:4).
JPEG_QUALITY = 95
JPEG_SETTINGS = {"quality": JPEG_QUALITY, "subsampling": 0, "optimize": False, "progressive": False}

IMAGES_DIR = "images"
REC_NAME, IDX_NAME, PROPERTY_NAME = "train.rec", "train.idx", "property"

RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
IR_FORMAT = "<IfQQ"  # identical layout to mxnet's native 'IfQQ' on little-endian machines
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


class CorruptRecordError(ValueError):
    """A RecordIO file (or index) is not in MXNet's format or is truncated."""


# --------------------------------------------------------------------------------------------------
# atomic files (the writer is common.io's; see the imports)
# --------------------------------------------------------------------------------------------------


def remove_stale_tmp(root: str | os.PathLike) -> int:
    """Remove leftover ``.<name>.tmp-<pid>`` files under ``root`` (after a crash). Returns count."""
    n = 0
    root = Path(root)
    if not root.exists():
        return 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f.startswith(".") and ".tmp-" in f:
                try:
                    os.unlink(os.path.join(dirpath, f))
                    n += 1
                except OSError:
                    pass
    return n


# --------------------------------------------------------------------------------------------------
# ImageFolder layout
# --------------------------------------------------------------------------------------------------


def id_width(num_ids: int) -> int:
    """Zero-padding width of identity directory names (>= 6 digits, enough for ``num_ids - 1``)."""
    return max(6, len(str(max(int(num_ids) - 1, 0))))


def k_width(per_id: int) -> int:
    """Zero-padding width of per-identity file names (>= 3 digits, enough for ``per_id - 1``)."""
    return max(3, len(str(max(int(per_id) - 1, 0))))


def image_relpath(identity: int, k: int, num_ids: int, per_id: int, ext: str = ".jpg") -> str:
    """Relative path ``images/<identity>/<k>.jpg`` (POSIX separators) of an ImageFolder image."""
    return f"{IMAGES_DIR}/{identity:0{id_width(num_ids)}d}/{k:0{k_width(per_id)}d}{ext}"


# --------------------------------------------------------------------------------------------------
# image encoding
# --------------------------------------------------------------------------------------------------


def to_uint8_hwc(images) -> np.ndarray:
    """(B,3,H,W) float in [0,1] or uint8 tensor/array -> (B,H,W,3) uint8 numpy (round half to even)."""
    import torch

    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    images = images.detach()
    if images.dtype != torch.uint8:
        images = (images.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def encode_jpeg(image_hwc: np.ndarray) -> bytes:
    """Encode one (H,W,3) uint8 image as JPEG with the fixed :data:`JPEG_SETTINGS`."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_hwc), mode="RGB").save(buf, format="JPEG", **JPEG_SETTINGS)
    return buf.getvalue()


def decode_image(data: bytes):
    """Decode image bytes (any PIL format) -> uint8 tensor (3,H,W) RGB."""
    import torch
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def encode_chunk(images_hwc: np.ndarray, rec_keys: Sequence[int] | None = None,
                 rec_labels: Sequence[int] | None = None) -> tuple[list[bytes], bytes | None]:
    """JPEG-encode (B,H,W,3) uint8 images: ``(jpeg bytes per image, framed RecordIO records or None)``;
    records (key ``rec_keys[i]``, label ``rec_labels[i]``) only when ``rec_keys`` is given."""
    blobs = [encode_jpeg(im) for im in images_hwc]
    framed = None
    if rec_keys is not None:
        labels = rec_labels if rec_labels is not None else [0] * len(blobs)
        framed = b"".join(
            frame_record(image_record_payload(int(lab), int(key), jpeg)) for jpeg, key, lab in zip(blobs, rec_keys, labels)
        )
    return blobs, framed


def write_images(root: str | None, relpaths: Sequence[str], blobs: Sequence[bytes], fsync: bool = True) -> None:
    """Write each encoded image atomically to ``root/relpath`` (directories made, and fsynced with ``fsync``)."""
    made: list[str] = []
    for rel, data in zip(relpaths, blobs):
        path = os.path.join(root or ".", rel)
        d = os.path.dirname(path)
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.append(d)
        atomic_write_bytes(path, data, fsync=fsync)
    if fsync:
        for d in made:
            fsync_dir(d)


def encode_and_write_chunk(
    images_hwc: np.ndarray,
    root: str | None = None,
    relpaths: Sequence[str] | None = None,
    rec_keys: Sequence[int] | None = None,
    rec_labels: Sequence[int] | None = None,
    fsync: bool = True,
) -> tuple[bytes | None, float, float]:
    """Worker task of the render pipeline: JPEG-encode a chunk of (B,H,W,3) uint8 images.

    If ``relpaths`` is given, writes each image atomically to ``root/relpath``. If ``rec_keys`` is
    given, returns the concatenated framed RecordIO image records (key ``rec_keys[i]``, label
    ``rec_labels[i]``), ready to be appended to a ``.rec`` file. Returns
    ``(framed records or None, encode seconds, write seconds)``.
    """
    t0 = time.perf_counter()
    blobs, framed = encode_chunk(images_hwc, rec_keys, rec_labels)
    t1 = time.perf_counter()
    if relpaths is not None:
        write_images(root, relpaths, blobs, fsync)
    t2 = time.perf_counter()
    return framed, t1 - t0, t2 - t1


# --------------------------------------------------------------------------------------------------
# RecordIO
# --------------------------------------------------------------------------------------------------


def pack_irheader(flag: int, label: float | Sequence[float], id: int, id2: int = 0) -> bytes:
    """mxnet.recordio.pack's header: a scalar label -> flag 0; a vector -> flag = len, floats after."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return struct.pack(IR_FORMAT, 0, float(label), int(id), int(id2))
    vec = np.asarray(label, dtype="<f4").reshape(-1)
    return struct.pack(IR_FORMAT, int(vec.size), 0.0, int(id), int(id2)) + vec.tobytes()


def unpack_irheader(payload: bytes) -> tuple[int, float | np.ndarray, int, int, bytes]:
    """Inverse of :func:`pack_irheader`: ``(flag, label, id, id2, rest)`` (label is an array if flag>0)."""
    if len(payload) < IR_SIZE:
        raise CorruptRecordError(f"record of {len(payload)} bytes is shorter than an IRHeader ({IR_SIZE})")
    flag, label, rid, id2 = struct.unpack_from(IR_FORMAT, payload, 0)
    rest = payload[IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise CorruptRecordError(f"record {rid}: label vector of {flag} floats is truncated")
        label = np.frombuffer(rest, dtype="<f4", count=flag).copy()
        rest = rest[4 * flag:]
    return flag, label, rid, id2, rest


def frame_record(payload: bytes) -> bytes:
    """Frame one payload exactly like dmlc-core's ``RecordIOWriter::WriteRecord``."""
    n = len(payload)
    if n >= (1 << 29):
        raise ValueError("RecordIO records must be smaller than 2**29 bytes")
    out = bytearray()
    lower = (n >> 2) << 2
    dptr = 0
    pos = payload.find(_MAGIC_BYTES)
    while 0 <= pos and pos + 4 <= lower:
        if pos % 4 == 0:
            out += _MAGIC_BYTES + struct.pack("<I", ((1 if dptr == 0 else 2) << 29) | (pos - dptr))
            out += payload[dptr:pos]
            dptr = pos + 4
            pos = payload.find(_MAGIC_BYTES, dptr)
        else:
            pos = payload.find(_MAGIC_BYTES, pos + 1)
    out += _MAGIC_BYTES + struct.pack("<I", ((3 if dptr != 0 else 0) << 29) | (n - dptr))
    out += payload[dptr:]
    out += b"\0" * (((n + 3) >> 2 << 2) - n)
    return bytes(out)


def _record_header(read: Callable[[int, int], bytes], offset: int) -> tuple[int, int]:
    """``(cflag, length)`` of the record part whose header is at ``offset``."""
    head = read(8, offset)
    if len(head) != 8:
        raise CorruptRecordError(f"truncated record header at offset {offset}")
    magic, lrec = struct.unpack("<II", head)
    if magic != RECORDIO_MAGIC:
        raise CorruptRecordError(f"bad RecordIO magic 0x{magic:08x} at offset {offset}")
    return lrec >> 29, lrec & ((1 << 29) - 1)


def read_record_at(read: Callable[[int, int], bytes], offset: int) -> tuple[bytes, int]:
    """Read one (possibly multi-part) record at ``offset`` with ``read(n, offset)``.

    Returns ``(payload, offset_after)``; raises :class:`CorruptRecordError` on bad magic / truncation.
    """
    parts: list[bytes] = []
    while True:
        cflag, length = _record_header(read, offset)
        padded = (length + 3) >> 2 << 2
        data = read(length, offset + 8) if length else b""
        if len(data) != length:
            raise CorruptRecordError(f"truncated record at offset {offset} ({len(data)} of {length} bytes)")
        parts.append(data)
        offset += 8 + padded
        if cflag in (0, 3):
            break
        if cflag not in (1, 2):
            raise CorruptRecordError(f"bad RecordIO cflag {cflag} at offset {offset}")
        parts.append(_MAGIC_BYTES)
    return b"".join(parts), offset


def record_offsets(f, start: int, end: int) -> list[int]:
    """Offsets of the records in ``[start, end)`` of an open binary file (or ``BytesIO``) of framed
    records, walking only their headers; raises :class:`CorruptRecordError` when the records do not
    end exactly at ``end``."""
    def read(n: int, off: int) -> bytes:
        f.seek(off)
        return f.read(n)

    offs = []
    pos = start
    while pos < end:
        offs.append(pos)
        while True:
            cflag, length = _record_header(read, pos)
            pos += 8 + ((length + 3) >> 2 << 2)
            if cflag in (0, 3):
                break
    if pos != end:
        raise CorruptRecordError(f"records overrun the journaled range ending at {end}")
    return offs


def append_records(f, records: Sequence[tuple[int, bytes]], pos: int) -> list[tuple[int, int]]:
    """Write framed ``(key, record)`` pairs at offset ``pos`` (the current end) of ``f``, fsync, and
    return their ``(key, offset)`` pairs for the index."""
    tail = []
    for key, framed in records:
        tail.append((key, pos))
        f.write(framed)
        pos += len(framed)
    f.flush()
    os.fsync(f.fileno())
    return tail


def iter_records(path: str | os.PathLike) -> Iterable[tuple[int, bytes]]:
    """Sequentially yield ``(offset, payload)`` of every record in a ``.rec`` file."""
    with open(path, "rb") as f:
        def read(n: int, off: int) -> bytes:
            f.seek(off)
            return f.read(n)

        size = os.fstat(f.fileno()).st_size
        off = 0
        while off < size:
            payload, nxt = read_record_at(read, off)
            yield off, payload
            off = nxt


def image_record_payload(label: int, key: int, jpeg: bytes) -> bytes:
    """Payload of one image record: flag 0, float label, id = key (insightface SeqRecBuilder style)."""
    return pack_irheader(0, float(label), key, 0) + jpeg


def rec_trailer(num_images: int, per_identity: Sequence[int]) -> list[tuple[int, bytes]]:
    """Header record 0 and identity records for ``num_images`` images at keys ``1..num_images``.

    ``per_identity[c]`` is the number of images of class ``c`` (images sorted by class). Returns
    ``[(key, framed_record), ...]`` in file order: record 0 then the identity records.
    """
    first_id = num_images + 1
    end = first_id + len(per_identity)
    out = [(0, frame_record(pack_irheader(2, [float(first_id), float(end)], 0, 0)))]
    start = 1
    for c, n in enumerate(per_identity):
        out.append((first_id + c, frame_record(pack_irheader(2, [float(start), float(start + n)], first_id + c, 0))))
        start += n
    return out


def write_property(directory: str | os.PathLike, num_classes: int, height: int, width: int) -> None:
    atomic_write_bytes(Path(directory) / PROPERTY_NAME, f"{num_classes},{height},{width}\n".encode())


class RecordWriter:
    """Minimal ``MXIndexedRecordIO(idx, rec, 'w')`` replacement (used for tests and small exports).

    ``write_idx(key, payload)`` frames and appends; ``close()`` writes the ``.idx`` file.
    """

    def __init__(self, idx_path: str | os.PathLike, rec_path: str | os.PathLike):
        self.idx_path, self.rec_path = Path(idx_path), Path(rec_path)
        self._f = open(self.rec_path, "wb")
        self._idx: list[tuple[int, int]] = []

    def tell(self) -> int:
        return self._f.tell()

    def write_idx(self, key: int, payload: bytes) -> None:
        self.write_framed(key, frame_record(payload))

    def write_framed(self, key: int, framed: bytes) -> None:
        """Append an already framed record (see :func:`frame_record`) under ``key``."""
        self._idx.append((int(key), self._f.tell()))
        self._f.write(framed)

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        atomic_write_bytes(self.idx_path, "".join(f"{k}\t{o}\n" for k, o in self._idx).encode())

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_rec_dataset(
    directory: str | os.PathLike, jpegs: Sequence[bytes], labels: Sequence[int], height: int, width: int
) -> None:
    """Write a complete insightface rec dataset (images must be sorted by label, labels 0..C-1)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    labels = [int(x) for x in labels]
    if any(b < a for a, b in zip(labels, labels[1:])):
        raise ValueError("write_rec_dataset needs images sorted by label")
    num_classes = (max(labels) + 1) if labels else 0
    counts = [0] * num_classes
    for lab in labels:
        counts[lab] += 1
    with RecordWriter(directory / IDX_NAME, directory / REC_NAME) as w:
        for i, (jpeg, lab) in enumerate(zip(jpegs, labels)):
            w.write_idx(i + 1, image_record_payload(lab, i + 1, jpeg))
        for key, framed in rec_trailer(len(labels), counts):
            w.write_framed(key, framed)
    write_property(directory, num_classes, height, width)


def read_idx(path: str | os.PathLike) -> dict[int, int]:
    """Parse a ``.idx`` file -> ``{key: offset}`` in file order."""
    out: dict[int, int] = {}
    with open(path, "r") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise CorruptRecordError(f"{path}:{lineno}: expected 'key<TAB>offset', got {line!r}")
            try:
                out[int(parts[0])] = int(parts[1])
            except ValueError:
                raise CorruptRecordError(f"{path}:{lineno}: non-integer key/offset {line!r}") from None
    return out


# --------------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------------

try:  # keep this module importable without torch for tooling, but the datasets need it
    import torch
    from torch.utils.data import Dataset as _TorchDataset
except Exception:  # pragma: no cover
    torch = None  # type: ignore
    _TorchDataset = object  # type: ignore


class FaceImageDataset(_TorchDataset):
    """Common base: ``ds[i] -> (uint8 tensor (3,H,W), int label)``.

    Attributes: ``num_classes`` (int), ``labels`` (LongTensor (N,)), ``classes`` (list[str], class
    name of each label), ``root`` (Path), ``kind`` (``"imagefolder"`` or ``"rec"``). An optional
    ``transform`` is applied to the uint8 image tensor.
    """

    kind = "abstract"
    num_classes: int
    labels: "torch.Tensor"
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def read_bytes(self, i: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int):
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for dataset of {n} images")
        try:
            img = decode_image(self.read_bytes(i))
        except CorruptRecordError:
            raise
        except Exception as e:
            raise CorruptRecordError(f"{self.describe_item(i)}: cannot decode image ({e})") from e
        if getattr(self, "transform", None) is not None:
            img = self.transform(img)
        return img, int(self.labels[i])

    def describe_item(self, i: int) -> str:
        return f"{self.root} item {i}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, classes={self.num_classes})"


class ImageFolderDataset(FaceImageDataset):
    """Generic ImageFolder: ``root/<class>/<image>`` with any image extension and class-dir names.

    Class dirs (non-hidden) are sorted by name -> labels ``0..C-1``; files are sorted by name.
    Hidden files/dirs (leading ``.``, e.g. temp files) are ignored. Empty class dirs are skipped.
    """

    kind = "imagefolder"

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS, transform=None):
        self.root = Path(root)
        self.transform = transform
        if not self.root.exists():
            raise FileNotFoundError(f"ImageFolder root {self.root} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"ImageFolder root {self.root} is not a directory")
        exts = tuple(e.lower() for e in extensions)
        classes: list[str] = []
        paths: list[str] = []
        labels: list[int] = []
        with os.scandir(self.root) as it:
            class_dirs = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        for name in class_dirs:
            with os.scandir(self.root / name) as it:
                files = sorted(
                    e.name for e in it
                    if not e.name.startswith(".") and e.name.lower().endswith(exts) and e.is_file()
                )
            if not files:
                continue
            label = len(classes)
            classes.append(name)
            paths.extend(f"{name}/{f}" for f in files)
            labels.extend([label] * len(files))
        if not paths:
            raise ValueError(
                f"no images found in ImageFolder root {self.root} (expected <root>/<class>/<image>"
                f" with extensions {', '.join(exts)})"
            )
        self.classes = classes
        self.paths = paths
        self.num_classes = len(classes)
        self.labels = torch.tensor(labels, dtype=torch.long)

    def read_bytes(self, i: int) -> bytes:
        with open(self.root / self.paths[i], "rb") as f:
            return f.read()

    def describe_item(self, i: int) -> str:
        return str(self.root / self.paths[i])


class RecDataset(FaceImageDataset):
    """insightface/MXNet RecordIO dataset (``train.rec`` + ``train.idx`` [+ ``property``]).

    Like insightface's ``MXFaceDataset``: if record 0 is a header (flag > 0) the images are keys
    ``1..label[0]-1`` and labels come from the identity records (their order = class index); else
    every key is an image and labels are read from each record header (scalar, or the first entry
    of a label vector). Reads use ``os.pread`` on a per-process descriptor (DataLoader-worker safe).
    """

    kind = "rec"

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None, transform=None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self.root = self.rec_path.parent
        self.transform = transform
        for p in (self.rec_path, self.idx_path):
            if not p.exists():
                raise FileNotFoundError(f"RecordIO file {p} does not exist")
        self._fd: int | None = None
        self._pid: int | None = None
        self._size = os.path.getsize(self.rec_path)
        idx = read_idx(self.idx_path)
        if not idx:
            raise ValueError(f"RecordIO index {self.idx_path} is empty")
        for k, off in idx.items():
            if not 0 <= off < self._size:
                raise CorruptRecordError(f"{self.idx_path}: offset {off} of key {k} beyond {self.rec_path} ({self._size} bytes)")
        self._idx = idx
        keys: list[int]
        labels: list[int]
        header0 = self._payload_by_key(0) if 0 in idx else None
        h0 = unpack_irheader(header0) if header0 is not None else None
        if h0 is not None and h0[0] > 0:
            first_id, end = int(h0[1][0]), int(h0[1][1])
            keys = list(range(1, first_id))
            missing = [k for k in keys[:1] + keys[-1:] if k not in idx]
            if missing:
                raise CorruptRecordError(f"{self.idx_path}: header says images are keys 1..{first_id - 1} but key {missing[0]} is missing")
            id_keys = [k for k in range(first_id, end) if k in idx]
            if id_keys and len(id_keys) == end - first_id:
                lab = np.full(len(keys), -1, dtype=np.int64)
                for c, k in enumerate(id_keys):
                    flag, rng, *_ = unpack_irheader(self._payload_by_key(k))
                    if flag < 2:
                        raise CorruptRecordError(f"{self.rec_path}: identity record {k} has no (start, end) label")
                    a, b = int(rng[0]), int(rng[1])
                    lab[a - 1:b - 1] = c
                if (lab < 0).any():
                    labels = self._scan_labels(keys)
                else:
                    labels = lab.tolist()
            else:
                labels = self._scan_labels(keys)
        else:
            keys = list(idx.keys())
            labels = self._scan_labels(keys)
        if not keys:
            raise ValueError(f"RecordIO dataset {self.rec_path} holds no images")
        self.keys = keys
        self.labels = torch.tensor(labels, dtype=torch.long)
        num = int(self.labels.max()) + 1 if len(labels) else 0
        prop = self.rec_path.parent / PROPERTY_NAME
        if prop.exists():
            try:
                num = max(num, int(prop.read_text().strip().split(",")[0]))
            except ValueError:
                pass
        self.num_classes = num
        self.classes = [str(c) for c in range(num)]

    # -- low level
    def _read(self, n: int, off: int) -> bytes:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.rec_path, os.O_RDONLY)
            self._pid = os.getpid()
        return os.pread(self._fd, n, off)

    def _payload_by_key(self, key: int) -> bytes:
        try:
            off = self._idx[key]
        except KeyError:
            raise CorruptRecordError(f"{self.idx_path}: no record with key {key}") from None
        payload, _ = read_record_at(self._read, off)
        return payload

    def _scan_labels(self, keys: list[int]) -> list[int]:
        """Labels from the record headers (reads only the first bytes of each record when possible)."""
        out = []
        for k in keys:
            off = self._idx[k]
            head = self._read(8 + IR_SIZE + 4, off)
            if len(head) < 8 + IR_SIZE:
                payload = self._payload_by_key(k)  # short record: let the full reader report it
                head = b"\0" * 8 + payload[: IR_SIZE + 4]
            else:
                magic, lrec = struct.unpack_from("<II", head, 0)
                if magic != RECORDIO_MAGIC:
                    raise CorruptRecordError(f"bad RecordIO magic 0x{magic:08x} at offset {off} (key {k})")
                if (lrec & ((1 << 29) - 1)) < IR_SIZE + 4 or (lrec >> 29) != 0:
                    head = b"\0" * 8 + self._payload_by_key(k)[: IR_SIZE + 4]
            flag, label = struct.unpack_from("<If", head, 8)
            if flag > 0:
                label = struct.unpack_from("<f", head, 8 + IR_SIZE)[0]
            out.append(int(label))
        return out

    def read_bytes(self, i: int) -> bytes:
        payload = self._payload_by_key(self.keys[i])
        return unpack_irheader(payload)[4]

    def describe_item(self, i: int) -> str:
        return f"{self.rec_path} record {self.keys[i]}"

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_fd"], d["_pid"] = None, None
        return d

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None and getattr(self, "_pid", None) == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass


def open_dataset(path: str | os.PathLike, format: str = "auto", transform=None) -> FaceImageDataset:
    """Open a face dataset for training, autodetecting its format.

    ``path`` may be: a synthface output dir (``train.rec`` used if present, else ``images/``), a dir
    holding ``train.rec`` + ``train.idx``, a rec prefix ``X`` (``X.rec`` + ``X.idx``) or ``X.rec``,
    or an ImageFolder root ``<root>/<class>/<image>``. ``format`` forces ``"rec"`` or
    ``"imagefolder"``.
    """
    p = Path(path)
    if format not in ("auto", "rec", "imagefolder"):
        raise ValueError(f"unknown dataset format {format!r} (use auto, rec or imagefolder)")
    if format in ("auto", "rec"):
        if p.is_dir() and (p / REC_NAME).exists():
            return RecDataset(p / REC_NAME, p / IDX_NAME, transform=transform)
        if p.suffix == ".rec" and p.is_file():
            return RecDataset(p, p.with_suffix(".idx"), transform=transform)
        if not p.exists() and Path(str(p) + ".rec").is_file():
            return RecDataset(Path(str(p) + ".rec"), Path(str(p) + ".idx"), transform=transform)
        if format == "rec":
            raise FileNotFoundError(f"no RecordIO dataset at {p} (expected {p}/{REC_NAME} + {IDX_NAME}, or {p}.rec + {p}.idx)")
    if not p.exists():
        raise FileNotFoundError(f"dataset path {p} does not exist")
    if not p.is_dir():
        raise ValueError(f"cannot open {p} as a dataset (not a directory nor a .rec file)")
    if (p / IMAGES_DIR).is_dir() and ((p / "dataset.json").exists() or not _has_image_subdirs(p)):
        return ImageFolderDataset(p / IMAGES_DIR, transform=transform)
    return ImageFolderDataset(p, transform=transform)


def _has_image_subdirs(p: Path) -> bool:
    with os.scandir(p) as it:
        for e in it:
            if e.is_dir() and not e.name.startswith(".") and e.name != IMAGES_DIR:
                with os.scandir(e.path) as it2:
                    if any(f.name.lower().endswith(IMAGE_EXTENSIONS) for f in it2):
                        return True
    return False


def is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))
