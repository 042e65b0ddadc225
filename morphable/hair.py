"""Hair as geometry: a per-identity hair mesh (a cap over the cranium plus a hanging curtain) with
one fixed topology for every style, so that a batch of identities rasterizes as one mesh.

The mesh lives in the head's rest frame (metres, eye midpoint at the origin, y up, face towards +z):

* the **cap** is a latitude/longitude grid of directions ``d(theta, phi)`` around the cranium centre
  :data:`CENTRE` (``theta`` from the crown, ``phi`` around the vertical, 0 at the face). Each grid
  point sits at the head surface along its direction (the identity's own *support vertex*, fixed on
  the mean head once) plus the style's thickness where the scalp carries hair, and sinks below the
  skin elsewhere, so the hair emerges from the scalp at the hairline (the same hairline as the painted
  scalp hair of :func:`~morphable.appearance.scalp_hair`);
* the **curtain** hangs from the cap's ring at :data:`RING_THETA`: rows drop straight down by the
  style's length and flare outwards; where a style has no curtain (or in front of the face) its rows
  collapse onto the ring and rasterize to nothing. It is double-sided (both windings) so that its
  inner side shows at grazing views.

Styles (:data:`STYLES`) set thickness, curl (radial noise), fringe, curtain length and opening, bun
and ponytail; their probabilities depend on the identity's gender, age and ancestry estimates.
Everything is batched tensor work: no per-identity Python loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Polar angle (radians from the crown) down to which a fringe covers the front of the head.
FRINGE_THETA = 1.0
#: Hair styles, in the order of the ``hair_style`` index.
STYLES = ("bald", "buzz", "short", "receding", "fringe", "medium", "bob", "long", "ponytail", "bun", "curly", "afro")
#: Style prior for a female-read (first row) and male-read (second row) face, before ancestry weighting.
_PRIOR = torch.tensor([
    # bald  buzz  short rec.  fringe medium bob  long  pony  bun   curly afro
    [0.00, 0.01, 0.05, 0.00, 0.09, 0.11, 0.17, 0.28, 0.11, 0.09, 0.07, 0.02],
    [0.07, 0.13, 0.28, 0.11, 0.08, 0.13, 0.01, 0.04, 0.03, 0.01, 0.06, 0.05],
])
#: Per style: cap thickness range lo/hi (m), curl, fringe, curtain length lo/hi (m), curtain opening
#: (half-angle of the gap in front of the face, radians), ponytail, bun, ears covered.
_STYLE = {
    "bald": (0.0, 0.0, 0.0, 0, 0.0, 0.0, math.pi, 0, 0, 0),
    "buzz": (0.001, 0.003, 0.0, 0, 0.0, 0.0, math.pi, 0, 0, 0),
    "short": (0.006, 0.014, 0.2, 0, 0.0, 0.0, math.pi, 0, 0, 0),
    "receding": (0.004, 0.010, 0.1, 0, 0.0, 0.0, math.pi, 0, 0, 0),
    "fringe": (0.010, 0.018, 0.2, 1, 0.0, 0.03, 1.25, 0, 0, 1),
    "medium": (0.013, 0.024, 0.5, 0, 0.03, 0.07, 1.15, 0, 0, 1),
    "bob": (0.011, 0.018, 0.1, 0, 0.08, 0.13, 0.95, 0, 0, 1),
    "long": (0.008, 0.016, 0.2, 0, 0.16, 0.30, 0.95, 0, 0, 1),
    "ponytail": (0.004, 0.008, 0.0, 0, 0.14, 0.24, 2.6, 1, 0, 0),
    "bun": (0.004, 0.008, 0.0, 0, 0.0, 0.0, math.pi, 0, 1, 0),
    "curly": (0.022, 0.035, 1.0, 0, 0.03, 0.09, 1.05, 0, 0, 1),
    "afro": (0.040, 0.060, 1.0, 0, 0.0, 0.0, math.pi, 0, 0, 1),
}
#: Cranium centre (rest frame, metres) the cap directions start from.
CENTRE = (0.0, 0.005, -0.085)
#: How deep (m) the cap's grid points next to the hair's edge sink under the skin (those further away
#: sink deep into the skull). Shallow, the edge crosses the skin between grid points, where the hair's
#: coverage says (a smooth hairline); at 3 mm it crossed half a grid step further out than at 45% of the
#: radius, onto the forehead, and cost `wild` 0.02 of mean detection score (BENCHMARKS.md, session 13).
HAIR_EDGE_SINK = 0.012
RING_THETA = 1.72  # radians from the crown: the cap ring the curtain hangs from (a little below ear top)


def sample_style(gender: torch.Tensor, age: torch.Tensor, african: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(N,) style index (into :data:`STYLES`) by inverse-CDF of ``u`` (N,) uniforms under a prior
    mixed between the female and male rows by ``gender`` (0 female .. 1 male); curly and afro weigh
    more with ``african`` ancestry, bald and receding with ``age`` (anny units, ~0.45 = 20 y,
    0.95 = 80 y)."""
    g = gender.clamp(0, 1)[:, None]
    p = (1 - g) * _PRIOR[0].to(g) + g * _PRIOR[1].to(g)
    afr = african.clamp(0, 1)
    old = ((age - 0.55) / 0.35).clamp(0, 1)
    w = torch.ones_like(p)
    w[:, STYLES.index("curly")] = 0.4 + 2.0 * afr
    w[:, STYLES.index("afro")] = 0.1 + 4.0 * afr
    w[:, STYLES.index("bald")] = 0.3 + 2.5 * old
    w[:, STYLES.index("receding")] = 0.3 + 2.5 * old
    w[:, STYLES.index("long")] = 1.2 - 0.6 * old
    p = p * w
    c = (p / p.sum(1, keepdim=True)).cumsum(1)
    return (u[:, None] > c).sum(1).clamp_max(len(STYLES) - 1)


def style_index(column: torch.Tensor) -> torch.Tensor:
    """(...,) int64 style index (into :data:`STYLES`) from the ``hair_style`` appearance column
    (...,), which stores index / number of styles."""
    return (column * len(STYLES)).long().clamp(0, len(STYLES) - 1)


def style_table(style: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-identity style constants for (N,) style indices: each value (N,)."""
    t = torch.tensor([_STYLE[s] for s in STYLES], dtype=torch.float32, device=style.device)[style]
    keys = ("thick_lo", "thick_hi", "curl", "fringe", "len_lo", "len_hi", "opening", "ponytail", "bun", "ears")
    return {k: t[:, i] for i, k in enumerate(keys)}


@dataclass
class HairRig:
    """Fixed topology and anchors of the hair mesh for one head model.

    Attributes:
        support: (Nc,) head vertex whose distance along each cap direction gives the head surface there.
        dirs: (Nc, 3) unit cap directions; theta/phi (Nc,) their angles.
        faces: (F, 3) hair triangles indexed into the hair vertices (cap then curtain), outward first,
            then the curtain's reversed copies.
        num_outward: the first ``num_outward`` faces are the outward ones (for normals).
        coords: (H, 2) per hair vertex (phi / pi in [-1, 1], t in [0, 1] from the crown down to the
            curtain's end) for shading.
        n_phi, n_theta, n_hang: grid sizes; ring: the cap row (theta index) the curtain hangs from.
    """

    support: torch.Tensor
    dirs: torch.Tensor
    theta: torch.Tensor
    phi: torch.Tensor
    faces: torch.Tensor
    num_outward: int
    coords: torch.Tensor
    n_phi: int
    n_theta: int
    n_hang: int
    ring: int

    @property
    def num_vertices(self) -> int:
        return self.n_phi * (self.n_theta + self.n_hang + 1)

    def to(self, device) -> "HairRig":
        return HairRig(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})


def _grid_faces(n_phi: int, rows: int, offset: int) -> torch.Tensor:
    """(2 * n_phi * (rows - 1), 3) triangles of a ``rows x n_phi`` grid wrapped in phi."""
    i = torch.arange(n_phi)
    j = torch.arange(rows - 1)
    J, I = torch.meshgrid(j, i, indexing="ij")
    a = J * n_phi + I
    b = J * n_phi + (I + 1) % n_phi
    c = (J + 1) * n_phi + (I + 1) % n_phi
    d = (J + 1) * n_phi + I
    return torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)]) + offset


def build_rig(mean: torch.Tensor, head_vertices: torch.Tensor, n_phi: int = 96, n_theta: int = 45, n_hang: int = 10,
              theta_max: float = 2.25) -> HairRig:
    """The :class:`HairRig` of a head whose rest mean is ``mean`` (V, 3); ``head_vertices`` (V,) bool
    marks the vertices that may carry the hair (the outer skin of the head and neck)."""
    c = torch.tensor(CENTRE, dtype=mean.dtype)
    th = torch.linspace(0.0, theta_max, n_theta, dtype=mean.dtype)
    ph = -math.pi + 2 * math.pi * torch.arange(n_phi, dtype=mean.dtype) / n_phi
    T, P = torch.meshgrid(th, ph, indexing="ij")
    dirs = torch.stack([T.sin() * P.sin(), T.cos(), T.sin() * P.cos()], -1).reshape(-1, 3)
    rel = mean - c
    r = rel.norm(dim=-1).clamp_min(1e-6)
    cosang = (dirs @ (rel / r[:, None]).T)  # (Nc, V)
    cosang = torch.where(head_vertices[None], cosang, torch.full_like(cosang, -2.0))
    near = cosang > math.cos(math.radians(5.0))
    score = torch.where(near, r[None].expand_as(cosang), -1.0 + cosang)  # outermost within the cone, else closest
    support = score.argmax(1)
    cap = _grid_faces(n_phi, n_theta, 0)
    ring = int(torch.argmin((th - RING_THETA).abs()))
    cur = _grid_faces(n_phi, n_hang + 1, n_theta * n_phi)
    # orient: the cap's outward is away from the centre, the curtain's away from the vertical axis
    ref_cap = dirs
    ref_cur = torch.cat([dirs.view(n_theta, n_phi, 3)[ring][None].expand(n_hang + 1, -1, -1)
                         - torch.tensor([0.0, 1.0, 0.0]) * torch.arange(n_hang + 1, dtype=mean.dtype)[:, None, None] * 0.1]
                        ).reshape(-1, 3)
    ref = torch.cat([ref_cap, ref_cur])

    def orient(f: torch.Tensor, horizontal: bool) -> torch.Tensor:
        a, b, cc = ref[f[:, 0]], ref[f[:, 1]], ref[f[:, 2]]
        n = torch.cross(b - a, cc - a, dim=-1)
        out = (a + b + cc) / 3
        if horizontal:
            out = out * torch.tensor([1.0, 0.0, 1.0], dtype=out.dtype)
        flip = (n * out).sum(-1) < 0
        return torch.where(flip[:, None], f[:, [0, 2, 1]], f)

    cap, cur = orient(cap, False), orient(cur, True)
    faces = torch.cat([cap, cur, cur[:, [0, 2, 1]]])
    t_cap = (th / th[ring]).clamp_max(1.0) * 0.5
    t_cur = 0.5 + 0.5 * torch.arange(n_hang + 1, dtype=mean.dtype) / n_hang
    coords = torch.cat([torch.stack([P / math.pi, t_cap[:, None].expand_as(P)], -1).reshape(-1, 2),
                        torch.stack([ph[None].expand(n_hang + 1, -1) / math.pi, t_cur[:, None].expand(-1, n_phi)], -1).reshape(-1, 2)])
    return HairRig(support=support, dirs=dirs.float(), theta=T.reshape(-1).float(), phi=P.reshape(-1).float(),
                   faces=faces, num_outward=cap.shape[0] + cur.shape[0], coords=coords.float(),
                   n_phi=n_phi, n_theta=n_theta, n_hang=n_hang, ring=ring)


def _wave(phi: torch.Tensor, theta: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """(N, Nc) smooth noise in about [-1, 1] over the cap for per-identity ``seed`` (N, 1) phases."""
    return 0.5 * (torch.sin(5 * phi + 3 * theta + seed) * torch.sin(4 * theta - 2 * phi + 1.7 * seed)
                  + torch.sin(11 * phi - 7 * theta + 2.3 * seed) * 0.6)


def _grid_pool(x: torch.Tensor, rig: HairRig, pool) -> torch.Tensor:
    """(N, Nc) ``pool`` (avg_pool2d or max_pool2d) of ``x`` (N, Nc) over each cap grid point's 3 x 3
    neighbours: wrapped around the head in phi, clamped at the crown and the bottom row in theta."""
    g = x.view(x.shape[0], 1, rig.n_theta, rig.n_phi)
    g = torch.nn.functional.pad(torch.cat([g[..., -1:], g, g[..., :1]], -1), (0, 0, 1, 1), mode="replicate")
    return pool(g, 3, stride=1).view(x.shape[0], -1)


def hair_vertices(rig: HairRig, rest: torch.Tensor, coverage: torch.Tensor, style: torch.Tensor,
                  length: torch.Tensor, thickness: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """(N, H, 3) hair mesh vertices of ``N`` identities in their rest frame.

    Args:
        rest: (N, V, 3) the identities' head vertices (identity shape, expression applied).
        coverage: (N, Nc) scalp-hair coverage in [0, 1] at the cap's support points (the painted
            hairline of :func:`~morphable.appearance.scalp_hair` at full density: thin hair is a
            matter of colour, not of where the hair grows).
        style: (N,) style index; length, thickness: (N,) uniforms in [0, 1] within the style's ranges.
        phase: (N,) per-identity noise phase (curl pattern).
    """
    N, dev = rest.shape[0], rest.device
    st = style_table(style)
    c = torch.tensor(CENTRE, device=dev, dtype=rest.dtype)
    dirs = rig.dirs.to(rest.dtype)
    R = ((rest[:, rig.support] - c) * dirs[None]).sum(-1)  # (N, Nc) head surface along each direction
    # each direction's support is one mesh vertex, so R steps where the support changes: smoothed over
    # the neighbouring grid points (never sinking under the surface by more than a millimetre)
    R = torch.maximum(_grid_pool(R, rig, torch.nn.functional.avg_pool2d), R - 0.001)
    theta, phi = rig.theta[None], rig.phi[None]
    # the coverage is read at the support vertices too: smoothed the same way
    cov = _grid_pool(coverage, rig, torch.nn.functional.avg_pool2d)
    # fringe: hair over the forehead, ending above the brows. Down to theta 1.15 it lay on the brows
    # like a helmet's edge, and a real-face detector missed 29% of such `wild` faces at |yaw| <= 30
    # without occluders (BENCHMARKS.md, "Realism, session 11")
    front = (phi.abs() < 0.9).float()
    # soft over a grid step or two, so that the fringe's edge is a line between grid points, not a staircase
    soft = ((0.95 - phi.abs()) / 0.12).clamp(0, 1) * ((FRINGE_THETA + 0.03 - theta) / 0.1).clamp(0, 1)
    fr = st["fringe"][:, None] * soft
    cov = torch.maximum(cov, fr)
    # styles with a curtain cover the sides and back of the head down to the ring it hangs from
    curtain = (st["len_hi"] > 0).float()[:, None] * ((phi.abs() - st["opening"][:, None] + 0.2) / 0.35).clamp(0, 1)
    cov = torch.maximum(cov, curtain * (theta <= RING_THETA + 0.05).float())
    thick = st["thick_lo"] + (st["thick_hi"] - st["thick_lo"]) * thickness  # (N,)
    curl = st["curl"][:, None] * _wave(phi, theta, phase[:, None])
    h = thick[:, None] * (1 + 0.35 * curl)
    h = h * (1 - 0.6 * st["fringe"][:, None] * front * (theta > 0.8).float())  # a fringe lies flat on the brow
    # bun: a knot high at the back; ponytail: a small gathered knot lower at the back
    back = (phi.abs() - math.pi).abs()
    h = h + st["bun"][:, None] * 0.045 * torch.exp(-((back / 0.45) ** 2 + ((theta - 0.75) / 0.35) ** 2))
    h = h + st["ponytail"][:, None] * 0.02 * torch.exp(-((back / 0.3) ** 2 + ((theta - 1.55) / 0.2) ** 2))
    # volume tapers where the coverage ends (the hairline) and sinks deep into the skull past it
    # (deep: along rays that graze the nose or the ears the support lies far out)
    t = ((cov - 0.2) / 0.6).clamp(0, 1)
    has = t * t * (3 - 2 * t) * (thick[:, None] > 0)
    # grid points next to the hair sink just under the skin, so that the hair's edge crosses the skin
    # between grid points where ``has`` says (a smooth line, not the grid's staircase)
    near = _grid_pool(has, rig, torch.nn.functional.max_pool2d)
    sink = torch.where(near > 0, torch.full_like(R, HAIR_EDGE_SINK), 0.45 * R)
    r = R + has * (h + 0.002) - (1 - has) * sink
    cap = c + dirs[None] * r[..., None]  # (N, Nc, 3)
    # curtain: from the ring, straight down with an outward flare; collapsed where absent
    nphi, nth, nh = rig.n_phi, rig.n_theta, rig.n_hang
    ring = cap.view(N, nth, nphi, 3)[:, rig.ring]  # (N, n_phi, 3)
    ring_phi = rig.phi.view(nth, nphi)[rig.ring][None]  # (1, n_phi)
    L = (st["len_lo"] + (st["len_hi"] - st["len_lo"]) * length)[:, None]  # (N, 1)
    open_ = st["opening"][:, None]
    # soft edge of the opening: the curtain shortens towards the face
    side = ((ring_phi.abs() - open_) / 0.35).clamp(0, 1)
    pony = st["ponytail"][:, None] > 0
    Lp = torch.where(pony, L * ((ring_phi.abs() - 2.75) / 0.2).clamp(0, 1), L * side)  # (N, n_phi)
    k = torch.arange(nh + 1, device=dev, dtype=rest.dtype) / nh  # (nh+1,)
    drop = Lp[:, None, :] * k[None, :, None]  # (N, nh+1, n_phi)
    radial = torch.stack([ring_phi.sin(), torch.zeros_like(ring_phi), ring_phi.cos()], -1)  # (1, n_phi, 3)
    wig = 0.35 * st["curl"][:, None, None] * torch.sin(k[None, :, None] * 9 + ring_phi[:, None] * 7 + phase[:, None, None])
    flare = (0.3 * drop + 0.004 * (drop > 0) + 0.006 * wig * (drop > 0)) * (1 - 0.7 * pony.float()[..., None])
    # where the curtain is absent its rows coincide with the ring: zero-area triangles, never drawn
    cur = ring[:, None] + radial[:, None] * flare[..., None] - torch.tensor([0.0, 1.0, 0.0], device=dev) * drop[..., None]
    return torch.cat([cap, cur.reshape(N, -1, 3)], 1)


#: Hair's two highlights (Kajiya-Kay, with Marschner's shifts as in Scheuermann's hair shading):
#: weight relative to the key light and exponent of the primary lobe (reflected at the fibre's
#: surface: the light's colour, narrow, shifted towards the root) and of the secondary lobe
#: (transmitted through the fibre and back: the hair's colour, broader, shifted towards the tip).
HAIR_HIGHLIGHTS = ((0.1, 150.0), (0.4, 24.0))
#: Tangent shift (along the normal) of the primary / secondary lobe, and of one strand's noise.
HAIR_SHIFTS = (-0.12, 0.10, 0.06)


def strand_tangent(normal: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(P, 3) unit strand direction at ``P`` hair points: the head's down direction ``-up`` (P, 3)
    projected onto the surface of unit normal ``normal`` (P, 3). Strands run from the crown down the
    cap's meridians and hang down the curtain, so this is their direction everywhere but at the crown
    itself (where the projection vanishes and the highlight with it)."""
    t = -up + (up * normal).sum(-1, keepdim=True) * normal
    return torch.nn.functional.normalize(t, dim=-1, eps=1e-6)


def hair_highlights(tangent: torch.Tensor, normal: torch.Tensor, half: torch.Tensor, strand: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Primary and secondary highlight (each (P,), in [0, 1]) of ``P`` hair points: Kajiya-Kay's
    ``sin(tangent, half) ** exponent`` with each lobe's tangent tilted along ``normal`` by its shift
    (:data:`HAIR_SHIFTS`) plus ``strand`` (P,) in [-1, 1] times the strand shift, so that the
    highlight band breaks up along the strands instead of gliding over a smooth shell.

    Args:
        tangent: (P, 3) unit strand directions (:func:`strand_tangent`); normal: (P, 3) unit normals;
        half: (P, 3) unit half vectors between the light and the viewer; strand: (P,) strand noise.
    """
    out = []
    for (_, exponent), shift in zip(HAIR_HIGHLIGHTS, HAIR_SHIFTS[:2]):
        t = torch.nn.functional.normalize(tangent + (shift + HAIR_SHIFTS[2] * strand)[:, None] * normal, dim=-1)
        c = (t * half).sum(-1)
        out.append((1 - c * c).clamp_min(0) ** (0.5 * exponent))
    return out[0], out[1]
