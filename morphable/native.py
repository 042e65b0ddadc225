"""Optional compiled CPU kernels for the renderer's hot loops.

The pure-torch code of :mod:`morphable.raster` is the reference and runs on CPU and CUDA. On CPU its
vectorised per-triangle and per-pixel passes are bound by memory traffic and Python overhead; the same
arithmetic as plain C loops (``native.c`` beside this module) is several times faster. This module
compiles them once per machine with the system C compiler (``cc``/``gcc``/``clang``; no torch headers,
no ninja), caches the shared library under ``$SYNTHFACE_CACHE/native/`` (default
``~/.cache/synthface/native``) and calls it through :mod:`ctypes`: rasterization (culling, boxes,
z-buffer, barycentrics, depth), attribute interpolation at listed pixels, vertex normals, bilinear
texture lookup, silhouette anti-aliasing and the per-pixel lighting (:mod:`morphable.shading`).

Each C function evaluates the float32 expressions of its torch counterpart in the same order
(``-ffp-contract=off``: no fused multiply-adds; the torch code spells out the operations whose
order matters), so both paths give bit-identical images (``tests/morphable/test_native.py``). Set
``SYNTHFACE_NATIVE=0`` to disable the kernels; if no compiler is found or compilation fails,
:func:`library` returns ``None`` with one warning and the torch path is used.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from common.io import atomic_path

# the kernels live in native.c beside this file; the cache key below hashes this text
_SOURCE = Path(__file__).with_name("native.c").read_text(encoding="utf-8")

_LOCK = threading.Lock()
_LIB: object = None  # None: not tried yet; False: unavailable; else the loaded ctypes library
_FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared"]
_P, _I = ctypes.c_void_p, ctypes.c_int64


def _cache_dir() -> Path:
    return Path(os.environ.get("SYNTHFACE_CACHE", Path.home() / ".cache" / "synthface")) / "native"


def _compile() -> Path:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    digest = hashlib.sha256((_SOURCE + " ".join(_FLAGS) + cc).encode()).hexdigest()[:16]
    out = _cache_dir() / f"raster-{digest}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # atomic: concurrent workers may race to build the same file
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, atomic_path(out, fsync=False, suffix=".so") as lib:
        src = Path(tmp) / "raster.c"
        src.write_text(_SOURCE)
        res = subprocess.run([cc, *_FLAGS, str(src), "-o", str(lib)], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{cc} failed: {res.stderr.strip()[:500]}")
    return out


def enabled() -> bool:
    """True if ``SYNTHFACE_NATIVE`` does not disable the native kernels."""
    return os.environ.get("SYNTHFACE_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def library():
    """The compiled kernels (a ctypes library), or ``None`` when disabled or unavailable (warns once)."""
    global _LIB
    if not enabled():
        return None
    if _LIB is None:
        with _LOCK:
            if _LIB is None:
                try:
                    lib = ctypes.CDLL(str(_compile()))
                    lib.rasterize.restype = None
                    lib.rasterize.argtypes = [_P, _I, _I, _P, _I, _I, _I, ctypes.c_int, ctypes.c_float, ctypes.c_int,
                                              _P, _P, _P, _P]
                    lib.interpolate_at.restype = None
                    lib.interpolate_at.argtypes = [_P, _I, _P, _P, _I, _P, ctypes.c_int, _I, _I, _P, _P]
                    lib.vertex_normals.restype = None
                    lib.vertex_normals.argtypes = [_P, _I, _I, _P, _I, _P]
                    lib.sample_texture.restype = None
                    lib.sample_texture.argtypes = [_P, _I, _I, _I, _P, _P, _I, _P]
                    lib.edge_aa.restype = None
                    lib.edge_aa.argtypes = [_P, _P, _I, _I, _I, _I, _P]
                    lib.light_pixels.restype = None
                    lib.light_pixels.argtypes = [_I] + [_P] * 10 + [ctypes.c_int] + [_P] * 4
                    _LIB = lib
                except (OSError, RuntimeError) as e:
                    warnings.warn(f"synthface: native rasterizer unavailable ({e}); using the torch path",
                                  RuntimeWarning, stacklevel=2)
                    _LIB = False
    return _LIB or None


def _check_index(idx: torch.Tensor, n: int, what: str) -> None:
    """The C loops trust their indices: check them here (an IndexError, as torch indexing would give)."""
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"{what} index out of range: [{int(idx.min())}, {int(idx.max())}] for {n} entries")


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the native kernels can serve these tensors (CPU, float32 where floating) right now."""
    return (all(t.device.type == "cpu" and (not t.is_floating_point() or t.dtype == torch.float32) for t in tensors)
            and library() is not None)


def rasterize(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, cull_backfaces: bool, near: float,
              barycentrics: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Native :func:`morphable.raster.rasterize`: (B, H, W) face ids, (B, H, W, 3) barycentrics (or an
    empty tensor) and (B, H, W) depth, bit-identical to the torch path."""
    lib = library()
    verts = verts.detach().contiguous()
    faces = faces.to(torch.int64).contiguous()
    B, V = verts.shape[:2]
    _check_index(faces, V, "faces")
    n = B * height * width
    zbuf = torch.full((n,), torch.iinfo(torch.int64).max, dtype=torch.int64)
    face = torch.empty(B, height, width, dtype=torch.int64)
    bary = torch.empty(B, height, width, 3, dtype=torch.float32) if barycentrics else torch.zeros(0)
    depth = torch.empty(B, height, width, dtype=torch.float32)
    lib.rasterize(verts.data_ptr(), B, V, faces.data_ptr(), faces.shape[0], height, width, int(cull_backfaces),
                  float(near), int(barycentrics), zbuf.data_ptr(), face.data_ptr(),
                  bary.data_ptr() if barycentrics else None, depth.data_ptr())
    return face, bary, depth


def interpolate_at(face: torch.Tensor, bary: torch.Tensor, pixels: tuple[torch.Tensor, ...], corners: torch.Tensor,
                   attrs: torch.Tensor) -> torch.Tensor:
    """Native :func:`morphable.raster.interpolate_at` -> (P, C), bit-identical to the torch path."""
    lib = library()
    B, H, W = face.shape
    b, y, x = pixels
    flat = ((b * H + y) * W + x).to(torch.int64).contiguous()
    attrs = attrs.detach().contiguous()
    corners = corners.to(torch.int64).contiguous()
    _check_index(corners, attrs.shape[-2], "faces")
    C = attrs.shape[-1]
    out = torch.empty(flat.numel(), C, dtype=torch.float32)
    lib.interpolate_at(flat.data_ptr(), flat.numel(), face.contiguous().data_ptr(), bary.contiguous().data_ptr(), H * W,
                       attrs.data_ptr(), int(attrs.ndim == 3), attrs.shape[-2], C, corners.data_ptr(), out.data_ptr())
    return out


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) area-weighted vertex normals (not normalised), bit-identical to the torch path."""
    lib = library()
    verts = verts.detach().contiguous()
    faces = faces.to(torch.int64).contiguous()
    _check_index(faces, verts.shape[1], "faces")
    out = torch.empty_like(verts)
    lib.vertex_normals(verts.data_ptr(), verts.shape[0], verts.shape[1], faces.data_ptr(), faces.shape[0], out.data_ptr())
    return out


def sample_texture(tex_hwc: torch.Tensor, which: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup in (U, T, T, C) channels-last textures at (P, 2) points -> (P, C)."""
    lib = library()
    tex_hwc = tex_hwc.detach().contiguous()
    which = which.to(torch.int64).contiguous()
    grid = grid.detach().contiguous()
    U, Th, Tw, C = tex_hwc.shape
    _check_index(which, U, "texture")
    out = torch.empty(grid.shape[0], C, dtype=torch.float32)
    lib.sample_texture(tex_hwc.data_ptr(), Th, Tw, C, which.data_ptr(), grid.data_ptr(), grid.shape[0], out.data_ptr())
    return out


def edge_antialias(img_hwc: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Native :func:`morphable.raster.edge_antialias` on (B, H, W, C) images, bit-identical."""
    lib = library()
    img_hwc = img_hwc.detach().contiguous()
    m = mask.to(torch.uint8).contiguous()
    out = torch.empty_like(img_hwc)
    B, H, W, C = img_hwc.shape
    lib.edge_aa(img_hwc.data_ptr(), m.data_ptr(), B, H, W, C, out.data_ptr())
    return out



def light_pixels(normal: torch.Tensor, position: torch.Tensor, occlusion: torch.Tensor, albedo: torch.Tensor,
                 specular: torch.Tensor, shadow: torch.Tensor, ndl_raw: torch.Tensor, flags: torch.Tensor,
                 bsel: torch.Tensor, table: torch.Tensor, any_flash: bool) -> tuple[torch.Tensor, ...]:
    """Native :func:`morphable.shading.light_pixels` (which checks ``table``'s 24 columns and finds
    ``any_flash``) -> ``(lin, lum, shadow, half)``, bit-identical."""
    lib = library()
    P = normal.shape[0]
    args = [t.detach().contiguous() for t in (normal, position, occlusion, albedo, specular, shadow, ndl_raw)]
    flags = flags.to(torch.uint8).contiguous()
    bsel = bsel.to(torch.int64).contiguous()
    table = table.detach().contiguous()
    _check_index(bsel, table.shape[0], "image")
    lin, half = torch.empty(P, 3, dtype=torch.float32), torch.empty(P, 3, dtype=torch.float32)
    lum, shadow_out = torch.empty(P, dtype=torch.float32), torch.empty(P, dtype=torch.float32)
    lib.light_pixels(P, *(t.data_ptr() for t in args), flags.data_ptr(), bsel.data_ptr(), table.data_ptr(),
                     int(any_flash), lin.data_ptr(), lum.data_ptr(), shadow_out.data_ptr(), half.data_ptr())
    return lin, lum, shadow_out, half
