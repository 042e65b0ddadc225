"""Per-image metadata (Parquet) and the dataset descriptor (``dataset.json``).

``metadata.parquet`` has one row per image, in dataset order (identity-major, then ``k``):

=====================  ======================================================================
column                 meaning
=====================  ======================================================================
``identity``           int64 identity index = class label (row of the identity table)
``k``                  int64 variation index of that identity (``0..per_id-1``)
``index``              int64 global image index ``identity * per_id + k``
``path``               string, ImageFolder path relative to the dataset dir (null if no imagefolder)
``rec_key``            int64, key of the record in ``train.rec`` (``index + 1``; null if no rec)
``lm_<name>_x/_y``     float32 pixel coordinates of the 5 landmarks, ``<name>`` in
                       :data:`LANDMARK_NAMES` order (eye_left, eye_right, nose_tip, mouth_left,
                       mouth_right)
``<factor>``           every scalar factor of ``RenderBatch.factors`` (floats as float32, ints as
                       int64, bools as bool)
``<factor>_<j>``       one column per element ``j`` of a vector factor ``(B, m)``
``id_<meta>``          identity-level metadata (``Identities.meta``), repeated on each image row
=====================  ======================================================================

Factor and meta columns are sorted by name. The Parquet schema metadata key ``synthface.factors``
holds the JSON ``{factor: width}`` (0 = scalar) so vector factors can be regrouped.

``dataset.json`` holds the full resolved configuration (see ``engine.render``).
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .formats import atomic_write_bytes
from .interface import Identities, RenderBatch

LANDMARK_NAMES = ("eye_left", "eye_right", "nose_tip", "mouth_left", "mouth_right")
RESERVED_COLUMNS = ("identity", "k", "index", "path", "rec_key")
METADATA_NAME = "metadata.parquet"
DATASET_JSON = "dataset.json"


def synthface_version() -> str:
    """Installed version of the ``synthface`` distribution, or ``"0+unknown"``."""
    try:
        from importlib.metadata import version

        return version("synthface")
    except Exception:  # PackageNotFoundError and friends
        return "0+unknown"


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bool:
        return t.numpy()
    if t.is_floating_point():
        return t.float().numpy() if t.dtype != torch.float64 else t.numpy()
    return t.long().numpy()


def image_table(
    batch: RenderBatch,
    identities: Identities,
    per_id: int,
    paths: Sequence[str] | None,
    rec_keys: Sequence[int] | None,
) -> pa.Table:
    """Metadata rows of one rendered batch (see the module docstring for the columns)."""
    b = len(batch)
    ident = batch.identity.detach().cpu().long()
    var = batch.variation.detach().cpu().long()
    cols: dict[str, pa.Array] = {
        "identity": pa.array(ident.numpy(), pa.int64()),
        "k": pa.array(var.numpy(), pa.int64()),
        "index": pa.array((ident * per_id + var).numpy(), pa.int64()),
        "path": pa.array(list(paths) if paths is not None else [None] * b, pa.string()),
        "rec_key": pa.array(list(rec_keys) if rec_keys is not None else [None] * b, pa.int64()),
    }
    lm = batch.landmarks.detach().cpu().float().reshape(b, 5, 2).numpy()
    for j, name in enumerate(LANDMARK_NAMES):
        cols[f"lm_{name}_x"] = pa.array(lm[:, j, 0], pa.float32())
        cols[f"lm_{name}_y"] = pa.array(lm[:, j, 1], pa.float32())
    widths: dict[str, int] = {}
    for name in sorted(batch.factors):
        v = _np(batch.factors[name]).reshape(b, -1) if batch.factors[name].dim() > 1 else _np(batch.factors[name])
        if v.ndim == 1:
            widths[name] = 0
            _add(cols, name, v)
        else:
            widths[name] = int(v.shape[1])
            for j in range(v.shape[1]):
                _add(cols, f"{name}_{j}", v[:, j])
    for name in sorted(identities.meta):
        m = identities.meta[name].detach().cpu()[ident]
        m = _np(m)
        if m.ndim == 1:
            _add(cols, f"id_{name}", m)
        else:
            for j in range(m.reshape(b, -1).shape[1]):
                _add(cols, f"id_{name}_{j}", m.reshape(b, -1)[:, j])
    table = pa.table(cols)
    return table.replace_schema_metadata({"synthface.factors": json.dumps(widths, sort_keys=True)})


def _add(cols: dict[str, pa.Array], name: str, values: np.ndarray) -> None:
    if name in cols:
        raise ValueError(f"metadata column {name!r} is defined twice (factor/meta name clashes with another column)")
    cols[name] = pa.array(np.ascontiguousarray(values))


def parquet_bytes(table: pa.Table) -> bytes:
    """Serialise ``table`` with fixed writer options (deterministic bytes for equal tables)."""
    sink = io.BytesIO()
    pq.write_table(table.combine_chunks(), sink, compression="zstd", compression_level=3, row_group_size=1 << 20)
    return sink.getvalue()


def write_parquet(table: pa.Table, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, parquet_bytes(table))


def concat_parquet(paths: Sequence[str | os.PathLike]) -> pa.Table:
    """Concatenate Parquet files in the given order (schema metadata of the first kept)."""
    tables = [pq.read_table(p) for p in paths]
    if not tables:
        raise ValueError("no metadata tables to concatenate")
    meta = tables[0].schema.metadata
    out = pa.concat_tables(tables, promote_options="default")
    return out.replace_schema_metadata(meta)


def read_metadata(path: str | os.PathLike) -> pa.Table:
    """Read ``metadata.parquet`` (or a dataset dir containing it)."""
    p = Path(path)
    if p.is_dir():
        p = p / METADATA_NAME
    return pq.read_table(p)


def to_jsonable(x: Any) -> Any:
    """Convert tensors / numpy scalars / tuples recursively into JSON-able values."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return to_jsonable(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=True) + "\n").encode()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)
