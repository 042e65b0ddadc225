"""Ambient occlusion of a mesh's vertices, by depth maps from many directions.

A vertex is lit by the ambient (sky-like) light only from the directions in which nothing of the
mesh lies in front of it: eye sockets, the corners of the nose and mouth, under the chin and behind
the ears are darker in every photograph, whatever the light. We render the mesh orthographically
along ``n`` directions spread over the sphere (one batched :func:`~morphable.raster.rasterize` call),
and a vertex sees a direction when its depth along it is not behind the depth map there (a small
bias). Its occlusion is the cosine-weighted fraction of the directions above its tangent plane that
it sees. Computed once per model (on its mean shape); the renderer interpolates it per pixel and
scales the ambient light with it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .raster import rasterize


def sphere_directions(n: int) -> torch.Tensor:
    """(n, 3) unit vectors spread evenly over the sphere (a Fibonacci lattice)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * i / n
    r = (1 - y * y).clamp_min(0).sqrt()
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([r * phi.cos(), y, r * phi.sin()], -1).float()


def ambient_occlusion(verts: torch.Tensor, faces: torch.Tensor, normals: torch.Tensor, n: int = 48, res: int = 160,
                      bias: float = 0.003) -> torch.Tensor:
    """(V,) ambient visibility in [0, 1] (1 = fully open) of the vertices ``verts`` (V, 3) of a mesh
    with ``faces`` (F, 3) and unit vertex ``normals`` (V, 3), from ``n`` directions at ``res`` px
    depth maps; ``bias`` in scene units (metres) against self-occlusion."""
    dirs = sphere_directions(n).to(verts)
    up = torch.tensor([0.0, 1.0, 0.0], device=verts.device).expand(n, 3)
    alt = torch.where(dirs[:, 1:2].abs() > 0.9, torch.tensor([1.0, 0.0, 0.0], device=verts.device).expand(n, 3), up)
    x = F.normalize(torch.cross(alt, dirs, dim=-1), dim=-1)
    y = torch.cross(dirs, x, dim=-1)
    R = torch.stack([x, y, dirs], 1)  # (n, 3, 3): rows are the view frame's axes, z towards the viewer
    centre = verts.mean(0)
    local = (verts - centre) @ R.transpose(1, 2)  # (n, V, 3)
    extent = float((verts - centre).norm(dim=-1).max()) * 1.05
    scale = res / (2 * extent)
    far = 2 * extent
    scr = torch.stack([local[..., 0] * scale + res / 2, -local[..., 1] * scale + res / 2, far - local[..., 2]], -1)
    frag = rasterize(scr.contiguous(), faces, res, res, cull_backfaces=False, barycentrics=False)
    dmap = torch.where(frag.mask, frag.depth, torch.full_like(frag.depth, 1e9))
    px = (scr[..., 0] - 0.5).round().long().clamp(0, res - 1)
    py = (scr[..., 1] - 0.5).round().long().clamp(0, res - 1)
    b = torch.arange(n, device=verts.device)[:, None].expand_as(px)
    # the nearest surface over a 3x3 texel neighbourhood: a vertex on a silhouette is not hidden by itself
    seen = torch.zeros_like(px, dtype=torch.bool)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            d = dmap[b, (py + oy).clamp(0, res - 1), (px + ox).clamp(0, res - 1)]
            seen |= scr[..., 2] <= d + bias
    cos = (normals[None] * dirs[:, None]).sum(-1).clamp_min(0)  # (n, V)
    return ((seen.float() * cos).sum(0) / cos.sum(0).clamp_min(1e-6)).clamp(0, 1)


def model_occlusion(model) -> torch.Tensor:
    """(V,) ambient visibility of a :class:`~morphable.model.MorphableModel`'s mean shape (CPU)."""
    from .raster import vertex_normals

    mean, faces = model.mean.cpu().float(), model.faces.cpu()
    normals = F.normalize(vertex_normals(mean[None], faces)[0], dim=-1)
    return ambient_occlusion(mean, faces, normals)
