"""A batched triangle rasterizer in pure torch (CPU and CUDA, same code, no system GL).

Z-buffering is a ``scatter_reduce(amin)`` over packed int64 keys ``(quantised depth << 20) | face``,
so the nearest face wins deterministically (ties broken by face index). Candidate pixels are
enumerated per triangle over its bounding box; triangles are bucketed by bounding-box size so that a
few large triangles do not force a large candidate grid on the many small ones.

Conventions: pixel ``(x, y)`` has its centre at ``(x + 0.5, y + 0.5)``; ``x`` to the right, ``y``
down. Depth is the positive distance along the camera axis.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import native as _native

_FACE_BITS = 20
_FACE_MASK = (1 << _FACE_BITS) - 1
_DEPTH_SCALE = 2.0**20  # depth quantum ~1e-6 scene units
_EMPTY = torch.iinfo(torch.int64).max
_LADDER = (1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024, 1448, 2048, 4096, 8192)


@dataclass
class Fragments:
    """Per-pixel rasterization result for a batch of ``B`` images of ``H x W`` pixels.

    Attributes:
        face: (B, H, W) int64 index of the visible face, -1 where nothing is visible.
        bary: (B, H, W, 3) float perspective-correct barycentric weights of that face's corners
            (zeros where ``face`` is -1).
        depth: (B, H, W) float depth of the visible surface (0 where nothing is visible).
    """

    face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: True where a face is visible."""
        return self.face >= 0


def _edge(ax, ay, bx, by, px, py):
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def rasterize(
    verts: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    cull_backfaces: bool = True,
    near: float = 1e-3,
    max_candidates: int = 8_000_000,
    barycentrics: bool = True,
    native: bool = True,
) -> Fragments:
    """Rasterize ``B`` meshes sharing one topology.

    Args:
        verts: (B, V, 3) screen-space vertices: pixel ``x``, pixel ``y`` (down), depth ``z > 0``.
        faces: (F, 3) int64 triangles; front faces are counter-clockwise as seen by the camera
            (i.e. clockwise in the y-down pixel frame).
        height, width: output size in pixels.
        cull_backfaces: drop triangles facing away from the camera.
        near: triangles with a corner closer than this are dropped.
        max_candidates: bound on (triangle, pixel) candidates processed at once (memory).
        barycentrics: compute exact barycentrics and depth per pixel; if False, ``bary`` is empty
            and ``depth`` is the z-buffer's quantised depth (enough for shadow maps).

    Returns:
        :class:`Fragments` with (B, H, W) face ids, perspective-correct barycentrics and depth.
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (B, V, 3), got {tuple(verts.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(faces.shape)}")
    if faces.shape[0] > _FACE_MASK:
        raise ValueError(f"at most {_FACE_MASK} faces are supported, got {faces.shape[0]}")
    B, device = verts.shape[0], verts.device
    if native and _native.usable(verts):
        # the same float32 arithmetic as below, as compiled loops (bit-identical output)
        face, bary, depth = _native.rasterize(verts, faces, height, width, cull_backfaces, near, barycentrics)
        return Fragments(face=face, bary=bary, depth=depth)
    faces = faces.to(device)
    tri = verts[:, faces]  # (B, F, 3, 3)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    # Signed area in the y-down pixel frame: counter-clockwise in a y-up frame is negative here.
    area = _edge(x[..., 0], y[..., 0], x[..., 1], y[..., 1], x[..., 2], y[..., 2])
    keep = (z.min(-1).values > near) & (area.abs() > 1e-12)
    if cull_backfaces:
        keep &= area < 0
    xmin = torch.floor(x.min(-1).values - 0.5).clamp(0, width - 1)
    xmax = torch.ceil(x.max(-1).values - 0.5).clamp(0, width - 1)
    ymin = torch.floor(y.min(-1).values - 0.5).clamp(0, height - 1)
    ymax = torch.ceil(y.max(-1).values - 0.5).clamp(0, height - 1)
    # the pixel centres within the triangle's bounds (the box above, less its conservative margin):
    # only these are tested, and a triangle between pixel centres is dropped
    tight = (torch.ceil(x.min(-1).values - 0.5).clamp(0, width - 1), torch.floor(x.max(-1).values - 0.5).clamp(0, width - 1),
             torch.ceil(y.min(-1).values - 0.5).clamp(0, height - 1), torch.floor(y.max(-1).values - 0.5).clamp(0, height - 1))
    keep &= (tight[0] <= tight[1]) & (tight[2] <= tight[3])
    keep &= (x.max(-1).values >= 0) & (x.min(-1).values <= width)
    keep &= (y.max(-1).values >= 0) & (y.min(-1).values <= height)
    zbuf = torch.full((B * height * width + 1,), _EMPTY, dtype=torch.int64, device=device)
    bidx_all, fidx_all = torch.nonzero(keep, as_tuple=True)
    _zbuffer_torch(tri, bidx_all, fidx_all, xmin, ymin, xmax, ymax, tight, zbuf, height, width, max_candidates)

    zbuf = zbuf[:-1].view(B, height, width)
    hit = zbuf != _EMPTY
    face = torch.where(hit, zbuf & _FACE_MASK, torch.full_like(zbuf, -1))
    if not barycentrics:  # depth straight from the z-buffer keys (quantised to 2^-20)
        depth = torch.where(hit, (zbuf >> _FACE_BITS).to(verts.dtype) / _DEPTH_SCALE, torch.zeros((), dtype=verts.dtype))
        return Fragments(face=face, bary=torch.zeros(0, device=device), depth=depth)
    # Exact perspective-correct barycentrics for the winning faces, at covered pixels only.
    bi, yi, xi = hit.nonzero(as_tuple=True)
    t = tri[bi, face[bi, yi, xi]]  # (P, 3, 3)
    py = yi.to(verts.dtype) + 0.5
    px = xi.to(verts.dtype) + 0.5
    w0 = _edge(t[:, 1, 0], t[:, 1, 1], t[:, 2, 0], t[:, 2, 1], px, py)
    w1 = _edge(t[:, 2, 0], t[:, 2, 1], t[:, 0, 0], t[:, 0, 1], px, py)
    w2 = _edge(t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1], px, py)
    ws = torch.stack([w0, w1, w2], -1)
    ws = ws / ws.sum(-1, keepdim=True)
    persp = ws / t[..., 2].clamp_min(near)
    denom = persp.sum(-1, keepdim=True)
    bary = torch.zeros(B, height, width, 3, dtype=verts.dtype, device=device)
    depth = torch.zeros(B, height, width, dtype=verts.dtype, device=device)
    bary[bi, yi, xi] = persp / denom
    depth[bi, yi, xi] = 1.0 / denom.squeeze(-1)
    return Fragments(face=face, bary=bary, depth=depth)


def _zbuffer_torch(tri, bidx_all, fidx_all, xmin, ymin, xmax, ymax, tight, zbuf, H, W, max_candidates):
    """The vectorised z-buffer pass (any device): candidates enumerated per triangle over its box."""
    # Bucket triangles by bounding-box width and height (rounded up to a ~sqrt(2) ladder), so each
    # bucket evaluates a kx x ky candidate grid close to its triangles' boxes.
    ladder = torch.tensor(_LADDER, device=xmin.device, dtype=xmin.dtype)
    w = (xmax - xmin + 1)[bidx_all, fidx_all]
    h = (ymax - ymin + 1)[bidx_all, fidx_all]
    kx = torch.bucketize(w, ladder)
    ky = torch.bucketize(h, ladder)
    code = kx * len(_LADDER) + ky
    order = torch.argsort(code, stable=True)
    codes, counts = torch.unique_consecutive(code[order], return_counts=True)
    start = 0
    for c, n in zip(codes.tolist(), counts.tolist()):
        sel = order[start : start + n]
        start += n
        bx, by = _LADDER[min(c // len(_LADDER), len(_LADDER) - 1)], _LADDER[min(c % len(_LADDER), len(_LADDER) - 1)]
        _raster_bucket(tri, bidx_all[sel], fidx_all[sel], xmin, ymin, tight, (int(bx), int(by)), zbuf,
                       H, W, max_candidates)



def _raster_bucket(tri, bidx, fidx, xmin, ymin, tight, k, zbuf, H, W, max_candidates):
    """Z-test every pixel centre of the kx x ky box (``k``) at each triangle's bounding-box corner
    that lies within the triangle's bounds ``tight`` (x lo, x hi, y lo, y hi), each (B, F).

    The three edge functions and 1/depth are affine in the pixel position, so per triangle we build
    their 4 x 3 coefficient matrix once and evaluate all candidates with three broadcast ops."""
    device, dtype = tri.device, tri.dtype
    kx, ky = k
    oy, ox = torch.meshgrid(torch.arange(ky, device=device), torch.arange(kx, device=device), indexing="ij")
    offs = torch.stack([ox.reshape(-1), oy.reshape(-1)], 0).to(dtype)  # (2, kx*ky)
    step = max(1, max_candidates // (kx * ky))
    dump = zbuf.numel() - 1  # the extra last slot receives every rejected candidate
    for s in range(0, bidx.numel(), step):
        b, f = bidx[s : s + step], fidx[s : s + step]
        t = tri[b, f]  # (n, 3, 3)
        x, y, z = t[..., 0], t[..., 1], t[..., 2]
        x0, y0 = xmin[b, f], ymin[b, f]
        # edge i is opposite corner i: w_i(p) = A_i * px + B_i * py + C_i (pixel centres, box origin)
        xa, ya = x - (x0 + 0.5)[:, None], y - (y0 + 0.5)[:, None]
        j, l = [1, 2, 0], [2, 0, 1]
        A = -(ya[:, l] - ya[:, j])
        Bc = xa[:, l] - xa[:, j]
        C = -(xa[:, l] - xa[:, j]) * ya[:, j] + (ya[:, l] - ya[:, j]) * xa[:, j]
        area = C.sum(-1, keepdim=True)
        inv_area = 1.0 / area
        iz = 1.0 / z  # (n, 3)
        # 1/depth = sum_i w_i / (area z_i)
        coef_w = torch.stack([A, Bc, C], -1)  # (n, 3 edges, 3)
        sgn = torch.sign(area)[..., None]
        coef = torch.cat([coef_w * sgn, (coef_w * (iz * inv_area)[..., None]).sum(1, keepdim=True)], 1)  # (n, 4, 3)
        vals = coef[..., 0:1] * offs[0] + coef[..., 1:2] * offs[1] + coef[..., 2:3]  # (n, 4, kx*ky)
        inside = (vals[:, :3] >= 0).all(1)
        px = x0[:, None] + offs[0]
        py = y0[:, None] + offs[1]
        inside &= (px >= tight[0][b, f][:, None]) & (px <= tight[1][b, f][:, None])
        inside &= (py >= tight[2][b, f][:, None]) & (py <= tight[3][b, f][:, None])
        depth = 1.0 / vals[:, 3].clamp_min(1e-12)
        key = ((depth * _DEPTH_SCALE).clamp(0, float((1 << 42) - 1)).to(torch.int64) << _FACE_BITS) | f[:, None]
        pix = (b[:, None] * H + py.to(torch.int64)) * W + px.to(torch.int64)
        pix = torch.where(inside, pix, torch.full_like(pix, dump))
        zbuf.scatter_reduce_(0, pix.reshape(-1), key.reshape(-1), reduce="amin")


def interpolate_at(fragments: Fragments, pixels: tuple[torch.Tensor, torch.Tensor, torch.Tensor], faces: torch.Tensor,
                   attrs: torch.Tensor, native: bool = True) -> torch.Tensor:
    """Interpolate per-vertex attributes at the listed (covered) pixels only.

    Args:
        fragments: output of :func:`rasterize` for ``B`` images.
        pixels: ``(b, y, x)`` index tensors of ``P`` pixels, usually ``fragments.mask.nonzero(as_tuple=True)``.
        faces: (F, 3) corner indices into ``attrs``.
        attrs: (B, N, C) batched or (N, C) shared attributes.
        native: use the compiled CPU kernel when available (bit-identical).

    Returns:
        (P, C) attributes; the same values as ``interpolate(...)[pixels]`` at a fraction of the cost.
    """
    b, y, x = pixels
    if native and _native.usable(attrs, fragments.bary):
        return _native.interpolate_at(fragments.face, fragments.bary, pixels, faces, attrs)
    corners = faces.to(b.device)[fragments.face[b, y, x].clamp_min(0)]  # (P, 3)
    vals = attrs[corners] if attrs.ndim == 2 else attrs[b[:, None], corners]  # (P, 3, C)
    out = (vals * fragments.bary[b, y, x][..., None].to(vals.dtype)).sum(-2)
    return out * fragments.mask[b, y, x][:, None]


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor, native: bool = True) -> torch.Tensor:
    """(B, V, 3) area-weighted vertex normals of ``B`` meshes (``verts`` (B, V, 3), ``faces`` (F, 3)),
    not normalised: the sum of the adjacent faces' edge cross products."""
    if native and _native.usable(verts):
        return _native.vertex_normals(verts, faces)
    faces = faces.to(verts.device)
    tri = verts[:, faces]
    a, b = tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]
    # the cross product spelled out (torch.cross may fuse multiply-adds; this matches the C kernel)
    fn = torch.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1], a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                      a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], -1)
    # Sum each vertex's face normals in ascending face order through a padded vertex -> faces table:
    # deterministic on CUDA (index_add_ uses atomics there) and the C kernel's summation order.
    adj = vertex_face_table(faces, verts.shape[1])  # (V, K), F = padding
    fn = torch.cat([fn, torch.zeros_like(fn[:, :1])], 1)
    acc = torch.zeros_like(verts)
    for k in range(adj.shape[1]):
        acc = acc + fn[:, adj[:, k]]
    return acc


def vertex_face_table(faces: torch.Tensor, num_verts: int) -> torch.Tensor:
    """(V, K) int64: the faces around each vertex in ascending order, padded with ``F`` (an index past
    the last face); ``K`` is the largest vertex valence."""
    F_ = faces.shape[0]
    v = faces.reshape(-1)
    f = torch.arange(F_, device=faces.device).repeat_interleave(3)
    order = torch.argsort(v * F_ + f)
    v, f = v[order], f[order]
    counts = torch.bincount(v, minlength=num_verts)
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(v.numel(), device=faces.device) - start[v]
    K = int(counts.max()) if counts.numel() else 0
    table = torch.full((num_verts, max(K, 1)), F_, dtype=torch.int64, device=faces.device)
    table[v, slot] = f
    return table


def edge_antialias(img: torch.Tensor, mask: torch.Tensor, native: bool = True) -> torch.Tensor:
    """Silhouette anti-aliasing without supersampling.

    Args:
        img: (B, H, W, C) float images (channels last).
        mask: (B, H, W) bool coverage (``Fragments.mask``).

    Returns:
        (B, H, W, C): pixels whose 3x3 neighbourhood (in bounds) mixes covered and uncovered pixels
        become ``0.5 * pixel + 0.5 * neighbourhood mean``; the others are unchanged.
    """
    if native and _native.usable(img):
        return _native.edge_antialias(img, mask)
    import torch.nn.functional as F

    B, H, W, C = img.shape
    m = mask[:, None].to(img.dtype)
    edge = ((F.max_pool2d(m, 3, 1, 1) + F.max_pool2d(-m, 3, 1, 1)) > 0)[:, 0]  # max - min over the window
    pad = F.pad(img.permute(0, 3, 1, 2), (1, 1, 1, 1))  # zeros outside: adding 0.0 leaves a sum unchanged
    ones = F.pad(torch.ones(1, 1, H, W, dtype=img.dtype, device=img.device), (1, 1, 1, 1))
    s = torch.zeros_like(pad[..., 1:-1, 1:-1])
    n = torch.zeros_like(ones[..., 1:-1, 1:-1])
    for dy in range(3):  # the C kernel's summation order: rows, then columns
        for dx in range(3):
            s = s + pad[..., dy : dy + H, dx : dx + W]
            n = n + ones[..., dy : dy + H, dx : dx + W]
    soft = (s / n).permute(0, 2, 3, 1)
    return torch.where(edge[..., None], 0.5 * img + 0.5 * soft, img).contiguous()  # same layout as native


def interpolate(fragments: Fragments, faces: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel.

    Args:
        fragments: output of :func:`rasterize` for ``B`` images.
        faces: (F, 3) corner indices into ``attrs`` (vertex faces, or texture-coordinate faces).
        attrs: (B, N, C) batched or (N, C) shared attributes.

    Returns:
        (B, H, W, C) interpolated attributes (zeros where nothing is visible).
    """
    face = fragments.face.clamp_min(0)
    B, H, W = face.shape
    corners = faces.to(face.device)[face]  # (B, H, W, 3)
    if attrs.ndim == 2:
        vals = attrs[corners]  # (B, H, W, 3, C)
    else:
        bi = torch.arange(B, device=face.device)[:, None, None, None].expand_as(corners)
        vals = attrs[bi, corners]
    out = (vals * fragments.bary[..., None].to(vals.dtype)).sum(-2)
    return out * fragments.mask[..., None]
