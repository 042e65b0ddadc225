"""Tests for morphable.loaders: tiny synthetic models written in each external format."""
from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import types

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch

from morphable.loaders import (
    load_bfm,
    load_flame,
    load_ict,
    load_model,
    locate_landmarks,
    read_obj,
)
from morphable.model import LANDMARK_NAMES, MorphableModel

OFFSET = np.array([0.02, -0.03, 0.05])  # the synthetic face is not centred: loaders must re-centre it


# --------------------------------------------------------------------------------------------------
# Synthetic face-like meshes (metres, +y up, +z towards the viewer; nose tip at OFFSET)
# --------------------------------------------------------------------------------------------------
def face_z(x, y, s=1.0):
    """Height field: a dome with a nose (tip at (0, 0)), eye sockets at (+-31.5 s, 35 s) mm and lips
    with a lip line at y = -34 s mm."""
    base = 0.075 * np.sqrt(np.clip(1 - (x / 0.095) ** 2 - ((y + 0.01) / 0.14) ** 2, 0.0, None))
    sy = np.where(y < 0, 0.008 * s, 0.024 * s)
    nose = 0.024 * np.exp(-(x / (0.009 * s)) ** 2 - (y / sy) ** 2)
    ex, ey = 0.0315 * s, 0.035 * s
    eyes = -0.009 * (np.exp(-((x - ex) / 0.013) ** 2 - ((y - ey) / 0.010) ** 2)
                     + np.exp(-((x + ex) / 0.013) ** 2 - ((y - ey) / 0.010) ** 2))
    ym = -0.034 * s
    wx = np.exp(-(x / (0.026 * s)) ** 4)
    lips = 0.005 * np.exp(-((y - ym) / 0.009) ** 2) * wx - 0.005 * np.exp(-((y - ym) / 0.0022) ** 2) * wx
    return base + nose + eyes + lips


def grid_face(step_x=0.014, step_y=0.01, s=1.0):
    """(V, 3) vertices, (Q, 4) counter-clockwise quads, vertex index function idx(x_mm, y_mm)."""
    xs = np.round(np.arange(-0.07, 0.07 + 1e-9, step_x), 9)
    ys = np.round(np.arange(-0.09, 0.07 + 1e-9, step_y), 9)
    X, Y = np.meshgrid(xs, ys, indexing="xy")
    V = np.stack([X.ravel(), Y.ravel(), face_z(X, Y, s).ravel()], 1) + OFFSET
    nx, ny = len(xs), len(ys)

    def gi(i, j):
        return j * nx + i

    quads = np.array([[gi(i, j), gi(i + 1, j), gi(i + 1, j + 1), gi(i, j + 1)]
                      for j in range(ny - 1) for i in range(nx - 1)], dtype=np.int64)

    def idx(x_mm, y_mm):
        return gi(int(np.argmin(np.abs(xs - x_mm / 1000))), int(np.argmin(np.abs(ys - y_mm / 1000))))

    return V, quads, idx


def fan(quads):
    return np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], axis=0)


def tri_faces(quads):
    """Triangles in the per-polygon fan order a reader produces: (a,b,c), (a,c,d) for each quad."""
    return np.stack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], 1).reshape(-1, 3)


def uv_sphere(center, r, n_lat=6, n_lon=10):
    """Closed sphere, outward counter-clockwise; vertex 0 is the front (+z) pole."""
    verts = [center + np.array([0.0, 0.0, r])]
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * np.pi * j / n_lon
            verts.append(center + r * np.array([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)]))
    verts.append(center + np.array([0.0, 0.0, -r]))
    ring = lambda i, j: 1 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    faces = [[0, ring(1, j), ring(1, j + 1)] for j in range(n_lon)]
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            faces += [[ring(i, j), ring(i + 1, j), ring(i + 1, j + 1)],
                      [ring(i, j), ring(i + 1, j + 1), ring(i, j + 1)]]
    last = len(verts) - 1
    faces += [[ring(n_lat - 1, j + 1), ring(n_lat - 1, j), last] for j in range(n_lon)]
    return np.array(verts), np.array(faces, dtype=np.int64)


def face_with_eyeballs():
    """Coarse face + two eyeball spheres behind it (FLAME-like). Returns V, F, pupils, eye mask."""
    V, quads, idx = grid_face()
    F = [fan(quads)]
    verts = [V]
    pupils, eye = [], np.zeros(0, dtype=bool)
    n = len(V)
    for sx in (-1, 1):
        cx, cy = sx * 0.031, 0.034
        c = np.array([cx, cy, face_z(cx, cy) - 0.013]) + OFFSET
        sv, sf = uv_sphere(c, 0.012)
        verts.append(sv)
        F.append(sf + n)
        pupils.append(n)
        n += len(sv)
    V = np.concatenate(verts)
    eye = np.zeros(len(V), dtype=bool)
    eye[len(verts[0]):] = True
    return V, np.concatenate(F), pupils, eye


def landmark_dict(idx):
    """Explicit landmarks on grid_face(): eye_left is an average of two vertices."""
    return {
        "eye_left": [idx(-28, 30), idx(-28, 40)],
        "eye_right": idx(28, 40),
        "nose_tip": idx(0, 0),
        "mouth_left": idx(-28, -30),
        "mouth_right": idx(28, -30),
    }


def expected_offset(mean_m, lm):
    el = mean_m[np.atleast_1d(lm["eye_left"])].mean(0)
    er = mean_m[np.atleast_1d(lm["eye_right"])].mean(0)
    return 0.5 * (el + er)


def smooth_field(V, rng, amp):
    """A smooth random (V, 3) displacement (identity/expression-like)."""
    a = rng.normal(size=(3, 3))
    return amp * np.tanh(V @ a * 20)


def normals_z_near(model, vertex, k=10):
    v = model.mean.numpy()
    f = model.faces.numpy()
    cent = v[f].mean(1)
    near = np.argsort(np.linalg.norm(cent - v[vertex], axis=1))[:k]
    tri = v[f[near]]
    return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]


# --------------------------------------------------------------------------------------------------
# OBJ
# --------------------------------------------------------------------------------------------------
def test_read_obj_triangulates_polygons(tmp_path):
    p = tmp_path / "m.obj"
    p.write_text(
        "# test\nmtllib x.mtl\no thing\n"
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0.5 1.5 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvt 0.5 1\n"
        "vn 0 0 1\ns off\nusemtl skin\n"
        "f 1/1/1 2/2/1 3/3/1 4/4/1\n"         # quad, v/vt/vn
        "f -5/1 -4/2 -3/3\n"                  # triangle, negative (relative) indices, v/vt
        "f 1//1 2//1 3//1 5//1 4//1\n"        # pentagon, v//vn (no uv)
    )
    m = read_obj(p)
    assert m.vertices.shape == (5, 3) and m.uv.shape == (5, 2)
    assert m.num_polygons == 3
    np.testing.assert_array_equal(m.faces, [[0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 1, 2], [0, 2, 4], [0, 4, 3]])
    np.testing.assert_array_equal(m.face_polygon, [0, 0, 1, 2, 2, 2])
    assert m.faces_uv is None  # the pentagon has no vt: uv triangles would be incomplete

    p.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nf 1/1 2/2 3/3\n")
    np.testing.assert_array_equal(read_obj(p).faces_uv, [[0, 1, 2]])


@pytest.mark.parametrize("body, match", [
    ("v 0 0 0\nv 1 0 0\nv 1 1 0\nf 1 2 4\n", "vertex 4"),
    ("v 0 0 0\nv 1 0 abc\nv 1 1 0\nf 1 2 3\n", "non-numeric"),
    ("v 0 0 0\nv 1 0 0\nf 1 2\n", "fewer than 3"),
    ("v 0 0\n", "3 coordinates"),
    ("f 1 2 3\n", "vertex 1"),
    ("", "no vertices"),
])
def test_read_obj_errors(tmp_path, body, match):
    p = tmp_path / "bad.obj"
    p.write_text(body)
    with pytest.raises(ValueError, match=match) as e:
        read_obj(p)
    assert "bad.obj" in str(e.value)


# --------------------------------------------------------------------------------------------------
# ICT-FaceKit
# --------------------------------------------------------------------------------------------------
def write_obj(path, verts, quads, uv=None):
    lines = [f"v {x:.9f} {y:.9f} {z:.9f}" for x, y, z in verts]
    if uv is not None:
        lines += [f"vt {u:.6f} {v:.6f}" for u, v in uv]
    lines.append("vn 0 0 1")
    for q in quads + 1:
        lines.append("f " + " ".join(f"{i}/{i}/1" if uv is not None else f"{i}//1" for i in q))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def ict_folder(tmp_path):
    rng = np.random.default_rng(0)
    V, quads, idx = grid_face()
    uv = (V[:, :2] - V[:, :2].min(0)) / np.ptp(V[:, :2], axis=0)
    d = tmp_path / "FaceXModel"
    d.mkdir()
    neutral_cm = V * 100
    write_obj(d / "generic_neutral_mesh.obj", neutral_cm, quads, uv)
    ids = [smooth_field(V, rng, 0.004) * 100 for _ in range(3)]
    exprs = {"jawOpen": smooth_field(V, rng, 0.01) * 100, "browDown_L": smooth_field(V, rng, 0.003) * 100}
    for i, dlt in enumerate(ids):
        write_obj(d / f"identity{i:03d}.obj", neutral_cm + dlt, quads, uv)
    for k, dlt in exprs.items():
        write_obj(d / f"{k}.obj", neutral_cm + dlt, quads, uv)
    return types.SimpleNamespace(dir=d, V=V, quads=quads, idx=idx, ids=ids, exprs=exprs, uv=uv)


def test_ict_load(ict_folder):
    t = ict_folder
    lm = landmark_dict(t.idx)
    m = load_ict(t.dir, landmarks=lm)
    V = len(t.V)
    assert m.num_vertices == V and m.num_shape == 3 and m.num_expression == 2
    assert m.expression_kind == "blendshape" and m.expression_labels == ["browDown_L", "jawOpen"]  # sorted
    torch.testing.assert_close(m.shape_std, torch.ones(3))
    torch.testing.assert_close(m.expression_std, torch.ones(2))
    # quads are fan-triangulated in polygon order, winding kept (counter-clockwise seen from +z)
    np.testing.assert_array_equal(m.faces.numpy(), tri_faces(t.quads))
    np.testing.assert_array_equal(m.faces_uv.numpy(), tri_faces(t.quads))
    np.testing.assert_allclose(m.uv.numpy(), t.uv, atol=1e-6)
    assert m.meta["winding_flipped"] is False and m.meta["landmark_source"] == "user"
    assert (normals_z_near(m, t.idx(0, 0)) > 0).all()
    # centimetres -> metres, re-centred on the eye midpoint
    off = expected_offset(t.V, lm)
    np.testing.assert_allclose(m.mean.numpy(), t.V - off, atol=2e-7)
    a, b = t.idx(-70, -90), t.idx(70, 70)
    np.testing.assert_allclose(m.mean[b] - m.mean[a], t.V[b] - t.V[a], atol=1e-6)  # a 14 x 16 cm face
    # vertices(coeffs) = neutral + sum shape * delta + sum expr * delta (in metres)
    cs = torch.tensor([[0.5, -1.0, 2.0]])
    ce = torch.tensor([[0.3, 0.8]])
    want = t.V - off + 0.01 * (0.5 * t.ids[0] - 1.0 * t.ids[1] + 2.0 * t.ids[2]
                               + 0.3 * t.exprs["browDown_L"] + 0.8 * t.exprs["jawOpen"])
    np.testing.assert_allclose(m.vertices(cs, ce)[0].numpy(), want, atol=1e-6)
    # landmarks: eye_left averaged over two vertices, the eye midpoint is the origin
    assert m.landmark_vertices.shape == (5, 2) and m.landmark_weights.shape == (5, 2)
    pts = m.landmark_points(m.mean[None])[0]
    np.testing.assert_allclose(pts[0].numpy(), m.mean[lm["eye_left"]].mean(0).numpy(), atol=1e-7)
    np.testing.assert_allclose(pts[2].numpy(), m.mean[lm["nose_tip"]].numpy(), atol=1e-7)
    np.testing.assert_allclose(((pts[0] + pts[1]) / 2).numpy(), 0, atol=1e-7)
    assert m.regions.keys() == {"skin"} and bool(m.regions["skin"].all())


def test_ict_expression_order_from_config_and_heuristic_landmarks(ict_folder):
    t = ict_folder
    (t.dir / "vertex_indices.json").write_text(json.dumps({"expressions": ["jawOpen", "browDown_L"]}))
    m = load_model(t.dir)  # sniffed as ICT; no landmarks -> heuristic on the coarse mesh
    assert m.name == "ict" and m.expression_labels == ["jawOpen", "browDown_L"]
    np.testing.assert_allclose(m.expression_basis[0].numpy(), t.exprs["jawOpen"] / 100, atol=1e-6)
    assert m.meta["landmark_source"] == "heuristic"
    assert int(m.landmarks[2]) == t.idx(0, 0)  # nose tip
    pts = m.landmark_points(m.mean[None])[0].numpy()
    assert pts[0, 0] < 0 < pts[1, 0] and pts[3, 0] < 0 < pts[4, 0]
    assert pts[0, 1] > pts[2, 1] > pts[3, 1]


def test_ict_errors(ict_folder, tmp_path):
    t = ict_folder
    # a morph target with another vertex count
    V2, q2, _ = grid_face(step_x=0.01)
    write_obj(t.dir / "identity001.obj", V2 * 100, q2)
    with pytest.raises(ValueError, match=r"identity001\.obj.*vertices"):
        load_ict(t.dir)
    write_obj(t.dir / "identity001.obj", t.V * 100, t.quads)
    # a listed expression that does not exist
    (t.dir / "vertex_indices.json").write_text(json.dumps({"expressions": ["jawOpen", "mouthClose"]}))
    with pytest.raises(ValueError, match="mouthClose.obj"):
        load_ict(t.dir)
    (t.dir / "vertex_indices.json").write_text("{not json")
    with pytest.raises(ValueError, match="vertex_indices.json"):
        load_ict(t.dir)
    (t.dir / "vertex_indices.json").unlink()
    # corrupted neutral mesh
    (t.dir / "generic_neutral_mesh.obj").write_bytes(b"v 1 2\x00\x01garbage\n")
    with pytest.raises(ValueError, match="generic_neutral_mesh.obj"):
        load_ict(t.dir)
    # not an ICT folder / missing path
    with pytest.raises(ValueError, match="generic_neutral_mesh"):
        load_ict(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_ict(tmp_path / "nope")


def test_ict_wrong_units_rejected(ict_folder):
    with pytest.raises(ValueError, match="units"):
        load_ict(ict_folder.dir, units="mm")  # a 0.14 mm face is not plausible


def test_ict_official_topology_builtin_landmarks_and_regions(tmp_path):
    from morphable.loaders import ICT_LANDMARKS, ICT_NUM_VERTICES

    rng = np.random.default_rng(3)
    Vg, quads, idx = grid_face()
    # 26719 vertices: the coarse face grid first (with all faces), then random points on the face
    xy = rng.uniform([-0.06, -0.08], [0.06, 0.06], size=(ICT_NUM_VERTICES - len(Vg), 2))
    V = np.concatenate([Vg, np.c_[xy, face_z(xy[:, 0], xy[:, 1])] + OFFSET])
    d = tmp_path / "ict"
    d.mkdir()
    write_obj(d / "identity000.obj", V * 100, quads)
    # random points: the README landmark vertices are meaningless -> warning + heuristic fallback
    write_obj(d / "generic_neutral_mesh.obj", V * 100, quads)
    with pytest.warns(UserWarning, match="ict-multipie68"):
        m = load_ict(d)
    assert m.meta["landmark_source"] == "heuristic"
    # put the README vertices where those landmarks are: the built-in set is used
    design = {"eye_left": (-0.032, 0.035), "eye_right": (0.032, 0.035), "nose_tip": (0.0, 0.0),
              "mouth_left": (-0.025, -0.034), "mouth_right": (0.025, -0.034)}
    for k, (x, y) in design.items():
        for j, i in enumerate(ICT_LANDMARKS[k]):
            dx = 0.003 * np.cos(j) if len(ICT_LANDMARKS[k]) > 1 else 0.0
            V[i] = np.array([x + dx, y, face_z(x + dx, y) + (0.01 if k == "nose_tip" else 0.0)]) + OFFSET
    write_obj(d / "generic_neutral_mesh.obj", V * 100, quads)
    m = load_ict(d)
    assert m.meta["landmark_source"] == "builtin:ict-multipie68"
    assert m.landmark_vertices.shape == (5, 6)
    pts = m.landmark_points(m.mean[None])[0].numpy()
    eye_left_x = -0.032 + 0.003 * np.cos(np.arange(6)).mean()
    np.testing.assert_allclose(pts[2, :2] - pts[0, :2], [-eye_left_x, -0.035], atol=1e-6)
    counts = {k: int(v.sum()) for k, v in m.regions.items()}
    assert counts == {"face": 9409, "skin": 11248, "eye_sockets": 768, "teeth": 4412, "eyes": 3140,
                      "lacrimal_fluid": 408, "eye_blend": 48, "eye_occlusion": 304, "eyelashes": 1368,
                      "mouth_interior": 2046 + 2977}


# --------------------------------------------------------------------------------------------------
# Basel Face Model
# --------------------------------------------------------------------------------------------------
def orthonormal(rows, k, rng):
    q, _ = np.linalg.qr(rng.normal(size=(rows, k)))
    return q


@pytest.fixture
def bfm_data():
    rng = np.random.default_rng(1)
    V, quads, idx = grid_face()
    n = len(V)
    faces = fan(quads)
    data = types.SimpleNamespace(V=V, faces=faces, idx=idx, n=n)
    data.shape_pc = orthonormal(3 * n, 3, rng)
    data.shape_ev = np.array([6.0, 3.0, 1.5])          # mm
    data.tex_mu = rng.uniform(60, 200, size=3 * n)      # 0..255
    data.tex_pc = orthonormal(3 * n, 2, rng)
    data.tex_ev = np.array([40.0, 20.0])
    data.expr_pc = orthonormal(3 * n, 2, rng)
    data.expr_ev = np.array([4.0, 2.0])                 # mm
    data.expr_mu = 0.5 * rng.normal(size=3 * n)         # mm, a small mean deformation
    return data


def write_bfm2009(path, b, unit=1e3, drop=None):
    d = {
        "shapeMU": (b.V.reshape(-1, 1) * unit).astype(np.float32),
        "shapePC": b.shape_pc.astype(np.float32),
        "shapeEV": (b.shape_ev * unit / 1e3).reshape(-1, 1).astype(np.float32),
        "texMU": b.tex_mu.reshape(-1, 1).astype(np.float32),
        "texPC": b.tex_pc.astype(np.float32),
        "texEV": b.tex_ev.reshape(-1, 1).astype(np.float32),
        "tl": (b.faces[:, [0, 2, 1]] + 1).astype(np.int32),  # 1-based and clockwise, like the real file
    }
    if drop:
        d.pop(drop)
    scipy.io.savemat(path, d)


@pytest.mark.parametrize("unit", [1e3, 1e6])  # millimetres, micrometres: both are inferred
def test_bfm2009_mat(tmp_path, bfm_data, unit):
    b = bfm_data
    p = tmp_path / "01_MorphableModel.mat"
    write_bfm2009(p, b, unit=unit)
    lm = landmark_dict(b.idx)
    m = load_bfm(p, landmarks=lm)
    assert m.name == "bfm2009" and m.num_vertices == b.n and m.num_shape == 3
    assert m.meta["units"] == ("mm (auto)" if unit == 1e3 else "um (auto)")
    # no expression model: Ke = 0 and vertices() still works with an empty expression vector
    assert m.num_expression == 0 and tuple(m.expression_basis.shape) == (0, b.n, 3) and m.expression_labels == []
    # the clockwise triangles were flipped to counter-clockwise
    assert m.meta["winding_flipped"] is True
    np.testing.assert_array_equal(m.faces.numpy(), b.faces)
    assert (normals_z_near(m, b.idx(0, 0)) > 0).all()
    torch.testing.assert_close(m.shape_std.double(), torch.from_numpy(b.shape_ev * 1e-3), rtol=1e-5, atol=0)
    off = expected_offset(b.V, lm)
    np.testing.assert_allclose(m.mean.numpy(), b.V - off, atol=1e-6)
    c = np.array([1.0, -0.5, 2.0])
    want = b.V - off + (b.shape_pc @ (b.shape_ev * c)).reshape(-1, 3) * 1e-3
    got = m.vertices(torch.tensor(c, dtype=torch.float32)[None], torch.zeros(1, 0))[0]
    np.testing.assert_allclose(got.numpy(), want, atol=2e-6)
    # colour in [0, 1]
    np.testing.assert_allclose(m.albedo_mean.numpy().ravel(), b.tex_mu / 255, atol=1e-6)
    torch.testing.assert_close(m.albedo_std.double(), torch.from_numpy(b.tex_ev / 255), rtol=1e-5, atol=0)
    assert tuple(m.albedo_basis.shape) == (2, b.n, 3)
    # plain-npz round trip of the converted model (meta is JSON-serialisable)
    m.save(str(tmp_path / "bfm.npz"))
    m2 = load_model(tmp_path / "bfm.npz")
    torch.testing.assert_close(m2.mean, m.mean)
    assert m2.meta["landmark_indices"]["nose_tip"] == [b.idx(0, 0)]


def test_bfm2009_matlab_v73(tmp_path, bfm_data):
    """MATLAB v7.3 .mat = HDF5 with a 512-byte header and column-major (transposed) variables."""
    b = bfm_data
    p = tmp_path / "01_MorphableModel.mat"
    with h5py.File(p, "w", userblock_size=512) as f:
        f["shapeMU"] = (b.V.reshape(1, -1) * 1e6).astype(np.float32)
        f["shapePC"] = b.shape_pc.T.astype(np.float32)
        f["shapeEV"] = (b.shape_ev[None] * 1e3).astype(np.float32)
        f["tl"] = (b.faces[:, [0, 2, 1]] + 1).T.astype(np.float64)  # MATLAB saves doubles
    with open(p, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    m = load_bfm(p, landmarks=landmark_dict(b.idx))
    assert m.meta["units"] == "um (auto)" and m.albedo_mean is None and m.num_expression == 0
    np.testing.assert_array_equal(m.faces.numpy(), b.faces)
    torch.testing.assert_close(m.shape_std.double(), torch.from_numpy(b.shape_ev * 1e-3), rtol=1e-5, atol=0)


def write_bfm2017(path, b, expression=True, cells_shape="3F"):
    with h5py.File(path, "w") as f:
        f["shape/model/mean"] = (b.V.reshape(-1) * 1e3).astype(np.float32)
        f["shape/model/pcaBasis"] = b.shape_pc.astype(np.float32)
        f["shape/model/pcaVariance"] = (b.shape_ev ** 2).astype(np.float32)
        cells = b.faces.T if cells_shape == "3F" else b.faces
        f["shape/representer/cells"] = cells.astype(np.int32)
        f["color/model/mean"] = (b.tex_mu / 255).astype(np.float32)
        f["color/model/pcaBasis"] = b.tex_pc.astype(np.float32)
        f["color/model/pcaVariance"] = ((b.tex_ev / 255) ** 2).astype(np.float32)
        if expression:
            f["expression/model/mean"] = b.expr_mu.astype(np.float32)
            f["expression/model/pcaBasis"] = b.expr_pc.astype(np.float32)
            f["expression/model/pcaVariance"] = (b.expr_ev ** 2).astype(np.float32)


def test_bfm2017_h5(tmp_path, bfm_data):
    b = bfm_data
    p = tmp_path / "model2017-1_bfm_nomouth.h5"
    write_bfm2017(p, b)
    lm = landmark_dict(b.idx)
    m = load_model(p, landmarks=lm)
    assert m.name == "bfm2017" and m.meta["units"] == "mm (auto)" and m.meta["winding_flipped"] is False
    assert m.num_shape == 3 and m.num_expression == 2 and m.expression_kind == "pca"
    assert m.expression_labels == ["pc000", "pc001"]
    torch.testing.assert_close(m.shape_std.double(), torch.from_numpy(b.shape_ev * 1e-3), rtol=1e-5, atol=0)
    torch.testing.assert_close(m.expression_std.double(), torch.from_numpy(b.expr_ev * 1e-3), rtol=1e-5, atol=0)
    mean_mm = b.V.reshape(-1) * 1e3 + b.expr_mu  # the expression mean is a deformation of the face
    mean_m = mean_mm.reshape(-1, 3) * 1e-3
    off = expected_offset(mean_m, lm)
    np.testing.assert_allclose(m.mean.numpy(), mean_m - off, atol=1e-6)
    cs, ce = np.array([-1.0, 0.5, 1.0]), np.array([2.0, -1.0])
    want = mean_m - off + ((b.shape_pc @ (b.shape_ev * cs)) + (b.expr_pc @ (b.expr_ev * ce))).reshape(-1, 3) * 1e-3
    got = m.vertices(torch.tensor(cs, dtype=torch.float32)[None], torch.tensor(ce, dtype=torch.float32)[None])[0]
    np.testing.assert_allclose(got.numpy(), want, atol=2e-6)
    np.testing.assert_allclose(m.albedo_mean.numpy().ravel(), b.tex_mu / 255, atol=1e-6)
    np.testing.assert_array_equal(m.faces.numpy(), b.faces)


def test_bfm2017_without_expression_and_faces_as_F3(tmp_path, bfm_data):
    p = tmp_path / "shape_only.h5"
    write_bfm2017(p, bfm_data, expression=False, cells_shape="F3")
    m = load_bfm(p, landmarks=landmark_dict(bfm_data.idx))
    assert m.num_expression == 0 and m.name == "bfm"
    np.testing.assert_array_equal(m.faces.numpy(), bfm_data.faces)


def test_bfm_errors(tmp_path, bfm_data):
    b = bfm_data
    p = tmp_path / "01_MorphableModel.mat"
    write_bfm2009(p, b, drop="shapePC")
    with pytest.raises(ValueError, match=r"01_MorphableModel\.mat.*'shapePC'"):
        load_bfm(p)
    # inconsistent sizes: a basis for another vertex count
    b2 = types.SimpleNamespace(**vars(b))
    b2.shape_pc = b.shape_pc[:-3]
    write_bfm2009(p, b2)
    with pytest.raises(ValueError, match="shape basis"):
        load_bfm(p)
    # triangle index beyond the vertex count
    b3 = types.SimpleNamespace(**vars(b))
    b3.faces = b.faces.copy()
    b3.faces[0, 0] = b.n + 5
    write_bfm2009(p, b3)
    with pytest.raises(ValueError, match="triangles reference vertex"):
        load_bfm(p)
    # corrupted / truncated files: a MAT header (text, subsystem offset, version, endianness) then
    # garbage, for a v5 file and for one that declares v7.3 (HDF5, read by h5py)
    rng = np.random.default_rng(0)
    for version in (b"\x00\x01", b"\x00\x02"):
        header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + bytes(8) + version + b"IM"
        p.write_bytes(header + rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
        with pytest.raises(ValueError, match="unreadable MATLAB"):
            load_bfm(p)
    h = tmp_path / "model.h5"
    write_bfm2017(h, b)
    h.write_bytes(h.read_bytes()[:600])
    with pytest.raises(ValueError, match=r"model\.h5"):
        load_bfm(h)
    with h5py.File(h, "w") as f:
        f["shape/model/mean"] = np.zeros(3 * b.n, np.float32)
    with pytest.raises(ValueError, match="shape/representer/cells"):
        load_bfm(h)
    # user landmarks: out of range, missing name, mirrored
    write_bfm2009(p, b)
    lm = landmark_dict(b.idx)
    with pytest.raises(ValueError, match="out of range"):
        load_bfm(p, landmarks={**lm, "nose_tip": 10 ** 6})
    with pytest.raises(ValueError, match="missing"):
        load_bfm(p, landmarks={k: v for k, v in lm.items() if k != "mouth_left"})
    with pytest.raises(ValueError, match="eye_left must have smaller x"):
        load_bfm(p, landmarks={**lm, "eye_left": lm["eye_right"], "eye_right": lm["eye_left"]})


# --------------------------------------------------------------------------------------------------
# FLAME
# --------------------------------------------------------------------------------------------------
def fake_chumpy_class():
    """A stand-in for chumpy.ch.Ch registered in sys.modules so pickle records 'chumpy.ch Ch'."""
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    mod.Ch, pkg.ch = Ch, mod
    return pkg, mod, Ch


@pytest.fixture
def flame_data():
    rng = np.random.default_rng(2)
    V, F, pupils, eye = face_with_eyeballs()
    n = len(V)
    sd = np.stack([smooth_field(V, rng, 0.003) for _ in range(5)], axis=-1)  # (V, 3, 3 shape + 2 expr)
    return types.SimpleNamespace(V=V, F=F, pupils=pupils, eye=eye, n=n, shapedirs=sd)


def flame_dict(fd, Ch=None, n_joints=5):
    wrap = (lambda a: Ch(a)) if Ch is not None else (lambda a: a)
    jr = scipy.sparse.csc_matrix(np.eye(n_joints, fd.n))
    return {
        "v_template": fd.V.copy(),
        "shapedirs": wrap(fd.shapedirs),
        "f": fd.F.astype(np.uint32),
        "J_regressor": jr,
        "weights": np.full((fd.n, n_joints), 1.0 / n_joints),
        "posedirs": wrap(np.zeros((fd.n, 3, 36))),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_flame_pickle(path, fd, protocol=2, **kw):
    pkg, mod, Ch = fake_chumpy_class()
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, mod
    try:
        with open(path, "wb") as fh:
            pickle.dump(flame_dict(fd, Ch, **kw), fh, protocol=protocol)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    assert b"chumpy.ch" in path.read_bytes()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_flame_pickle_with_chumpy(tmp_path, flame_data, protocol):
    fd = flame_data
    p = tmp_path / "generic_model.pkl"
    write_flame_pickle(p, fd, protocol=protocol)
    assert "chumpy" not in sys.modules
    m = load_flame(p, num_shape=3)  # no landmarks: heuristic with eyeball meshes
    assert "chumpy" not in sys.modules  # never imported
    assert m.name == "flame" and m.num_vertices == fd.n and m.num_shape == 3 and m.num_expression == 2
    assert m.expression_kind == "pca" and m.meta["units"] == "m"
    torch.testing.assert_close(m.shape_std, torch.ones(3))
    torch.testing.assert_close(m.expression_std, torch.ones(2))
    np.testing.assert_array_equal(m.faces.numpy(), fd.F)
    # landmarks: the pupils are the front poles of the eyeball spheres; regions from the eyeballs
    assert m.meta["landmark_source"] == "heuristic+eyeballs"
    assert m.landmarks.tolist()[:2] == fd.pupils
    np.testing.assert_array_equal(m.regions["eyes"].numpy(), fd.eye)
    np.testing.assert_array_equal(m.regions["skin"].numpy(), ~fd.eye)
    off = 0.5 * (fd.V[fd.pupils[0]] + fd.V[fd.pupils[1]])
    np.testing.assert_allclose(m.mean.numpy(), fd.V - off, atol=1e-7)
    cs, ce = np.array([1.0, -2.0, 0.5]), np.array([1.5, -0.5])
    want = fd.V - off + fd.shapedirs[:, :, :3] @ cs + fd.shapedirs[:, :, 3:] @ ce
    got = m.vertices(torch.tensor(cs, dtype=torch.float32)[None], torch.tensor(ce, dtype=torch.float32)[None])[0]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_flame_npz_and_dispatch(tmp_path, flame_data):
    fd = flame_data
    d = flame_dict(fd)
    d["J_regressor"] = d["J_regressor"].toarray()
    d.pop("bs_style"), d.pop("bs_type")
    p = tmp_path / "flame2023.npz"
    np.savez(p, **d)
    idx = grid_face()[2]
    lm = {"eye_left": fd.pupils[0], "eye_right": fd.pupils[1], "nose_tip": idx(0, 0),
          "mouth_left": idx(-28, -30), "mouth_right": idx(28, -30)}
    m = load_model(p, num_shape=3, landmarks=lm)
    assert m.meta["format"] == "flame-npz" and m.meta["landmark_source"] == "user"
    assert m.num_expression == 2 and m.regions["eyes"].sum() == fd.eye.sum()
    # all shapedirs as identity: Ke = 0
    m0 = load_flame(p, num_shape=5)
    assert m0.num_shape == 5 and m0.num_expression == 0


def py2_array(a, code):
    """Bytes of a Python-2 (protocol 2) pickle of an ndarray: numpy.core.multiarray._reconstruct and
    the raw data as a py2 str, as in the FLAME / SMPL model files."""
    a = np.ascontiguousarray(a, dtype="<" + code)
    raw = a.tobytes()
    shape = b"(" + b"".join(b"J" + struct.pack("<i", d) for d in a.shape) + b"t"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01" + shape
            + b"cnumpy\ndtype\nU\x02" + code.encode()
            + b"\x89\x88\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            + b"\x89T" + struct.pack("<i", len(raw)) + raw + b"tb")


def py2_key(k):
    return b"U" + bytes([len(k)]) + k.encode()


def py2_object(module_name, state_items):
    """copy_reg._reconstructor(cls, object, None) + BUILD(dict), as protocol 0/1 objects pickle."""
    return (b"ccopy_reg\n_reconstructor\n(c" + module_name.encode() + b"\nc__builtin__\nobject\nNtR}("
            + b"".join(py2_key(k) + v for k, v in state_items) + b"ub")


def test_flame_python2_style_pickle(tmp_path, flame_data):
    fd = flame_data
    ch = py2_object("chumpy.ch\nCh", [("x", py2_array(fd.shapedirs, "f8")),
                                      ("_dirty_vars", b"c__builtin__\nset\n]\x85R"), ("_itr", b"N")])
    jr = py2_object("scipy.sparse.csc\ncsc_matrix", [("_shape", b"K\x05J" + struct.pack("<i", fd.n) + b"\x86"),
                                                     ("format", b"U\x03csc")])
    blob = (b"\x80\x02}(" + py2_key("v_template") + py2_array(fd.V, "f8") + py2_key("shapedirs") + ch
            + py2_key("f") + py2_array(fd.F, "u4") + py2_key("J_regressor") + jr
            + py2_key("bs_style") + b"U\x03lbsu.")
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(blob)
    m = load_flame(p, num_shape=3)
    ref = tmp_path / "ref.pkl"
    write_flame_pickle(ref, fd)
    m_ref = load_flame(ref, num_shape=3)
    for k in ("mean", "shape_basis", "expression_basis", "faces"):
        torch.testing.assert_close(getattr(m, k), getattr(m_ref, k))
    # the sparse stand-in's shape is checked against the vertex count
    p.write_bytes(blob.replace(b"J" + struct.pack("<i", fd.n) + b"\x86", b"J" + struct.pack("<i", fd.n + 1) + b"\x86"))
    with pytest.raises(ValueError, match="J_regressor"):
        load_flame(p, num_shape=3)
    # a chumpy expression (not a plain array) cannot be evaluated without chumpy: refused, not guessed
    add = py2_object("chumpy.ch_ops\nadd", [("a", py2_array(fd.shapedirs, "f8")), ("b", py2_array(fd.shapedirs, "f8"))])
    p.write_bytes(blob.replace(ch, add))
    with pytest.raises(ValueError, match=r"'shapedirs' is a chumpy chumpy\.ch_ops\.add expression"):
        load_flame(p, num_shape=3)


def test_flame_forbidden_class_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "generic_model.pkl"
    with open(p, "wb") as fh:
        pickle.dump({"v_template": Evil(), "shapedirs": np.zeros((3, 3, 1)), "f": np.zeros((1, 3))}, fh, protocol=2)
    with pytest.raises(ValueError, match=r"forbidden.*system") as e:
        load_flame(p)
    assert "generic_model.pkl" in str(e.value)
    assert not marker.exists()
    # same through the dispatcher, and for a builtins callable
    p.write_bytes(pickle.dumps({"f": eval}))
    with pytest.raises(ValueError, match=r"forbidden.*eval"):
        load_model(p)


def test_flame_errors(tmp_path, flame_data):
    fd = flame_data
    p = tmp_path / "generic_model.pkl"
    # corrupted (truncated) pickle
    write_flame_pickle(p, fd)
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(ValueError, match="corrupted"):
        load_flame(p, num_shape=3)
    # missing key
    d = flame_dict(fd)
    d.pop("shapedirs")
    p.write_bytes(pickle.dumps(d))
    with pytest.raises(ValueError, match="'shapedirs'"):
        load_flame(p, num_shape=3)
    # mismatched vertex counts
    d = flame_dict(fd)
    d["shapedirs"] = d["shapedirs"][:-1]
    p.write_bytes(pickle.dumps(d))
    with pytest.raises(ValueError, match="shapedirs has .* vertices but v_template has"):
        load_flame(p, num_shape=3)
    d = flame_dict(fd)
    d["weights"] = d["weights"][:-2]
    p.write_bytes(pickle.dumps(d))
    with pytest.raises(ValueError, match="weights"):
        load_flame(p, num_shape=3)
    d = flame_dict(fd)
    d["J_regressor"] = scipy.sparse.csc_matrix(np.eye(5, fd.n + 1))
    p.write_bytes(pickle.dumps(d))
    with pytest.raises(ValueError, match="J_regressor"):
        load_flame(p, num_shape=3)
    # bad face index / too many shape components
    d = flame_dict(fd)
    d["f"] = d["f"].copy()
    d["f"][0, 0] = fd.n
    p.write_bytes(pickle.dumps(d))
    with pytest.raises(ValueError, match="outside"):
        load_flame(p, num_shape=3)
    p.write_bytes(pickle.dumps(flame_dict(fd)))
    with pytest.raises(ValueError, match="num_shape"):
        load_flame(p, num_shape=300)
    # a pickled object array inside an .npz is refused
    z = tmp_path / "f.npz"
    np.savez(z, v_template=fd.V, shapedirs=fd.shapedirs, f=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"f\.npz"):
        load_flame(z, num_shape=3)


# --------------------------------------------------------------------------------------------------
# Landmark heuristic and dispatch
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("s", [0.9, 1.0, 1.15])
def test_landmark_heuristic_on_synthetic_face(s):
    V, quads, _ = grid_face(0.002, 0.0018, s=s)
    lm, info = locate_landmarks(V, fan(quads))
    assert info["lip_line_found"] and not info["eyeballs"]
    assert abs(info["scale"] - s) < 0.06
    P = {k: V[v[0]] - OFFSET for k, v in lm.items()}
    mid = np.abs(V[:, 0] - OFFSET[0]) < 0.006
    assert lm["nose_tip"] == [int(np.flatnonzero(mid)[np.argmax(V[mid, 2])])]
    designed = {"eye_left": (-0.0315 * s, 0.035 * s), "eye_right": (0.0315 * s, 0.035 * s),
                "mouth_left": (-0.025 * s, -0.034 * s), "mouth_right": (0.025 * s, -0.034 * s)}
    for k, xy in designed.items():
        assert np.hypot(*(P[k][:2] - xy)) < 0.004, (k, P[k], xy)


def test_landmark_heuristic_uses_eyeballs():
    V, F, pupils, _ = face_with_eyeballs()
    lm, info = locate_landmarks(V, F)
    assert info["eyeballs"] and [lm["eye_left"][0], lm["eye_right"][0]] == pupils
    assert set(LANDMARK_NAMES) == set(lm)


def test_load_model_dispatch_errors(tmp_path):
    p = tmp_path / "model.xyz"
    p.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="unknown morphable model format"):
        load_model(p)
    with pytest.raises(ValueError, match="unknown model kind"):
        load_model(p, kind="smpl")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pkl")
    z = tmp_path / "other.npz"
    np.savez(z, a=np.zeros(3))
    with pytest.raises(ValueError, match="neither a FLAME"):
        load_model(z)
    with pytest.raises(ValueError, match="directory"):
        load_model(tmp_path)


def test_returns_morphable_model_type(tmp_path, flame_data):
    p = tmp_path / "m.pkl"
    p.write_bytes(pickle.dumps(flame_dict(flame_data)))
    assert isinstance(load_model(p, kind="flame", num_shape=3), MorphableModel)


def test_loaded_model_renders_through_the_source(tmp_path):
    """An external model (no UVs, no regions) renders with the same source and interface."""
    import numpy as np
    import torch

    from morphable import MorphableSource
    from morphable.model import MorphableModel

    # a tiny ellipsoid head with a nose bump, saved and reloaded through the npz path of load_model
    u, v = np.meshgrid(np.linspace(0, np.pi, 24), np.linspace(0, 2 * np.pi, 32), indexing="ij")
    pts = np.stack([0.08 * np.sin(u) * np.sin(v), 0.11 * np.cos(u), 0.09 * np.sin(u) * np.cos(v)], -1).reshape(-1, 3)
    pts[:, 2] += 0.02 * np.exp(-((pts[:, 0] / 0.01) ** 2 + ((pts[:, 1] + 0.02) / 0.015) ** 2)) * (pts[:, 2] > 0)
    faces = []
    for i in range(23):
        for j in range(32):
            a, b, c, d = i * 32 + j, i * 32 + (j + 1) % 32, (i + 1) * 32 + j, (i + 1) * 32 + (j + 1) % 32
            faces += [[a, c, b], [b, c, d]]
    mean = torch.tensor(pts, dtype=torch.float32)
    f = torch.tensor(faces)
    lm = torch.tensor([int(np.argmin(((pts - q) ** 2).sum(1))) for q in
                       [(-0.03, 0.0, 0.085), (0.03, 0.0, 0.085), (0.0, -0.02, 0.11), (-0.025, -0.06, 0.07), (0.025, -0.06, 0.07)]])
    m = MorphableModel(name="ellipsoid", mean=mean, shape_basis=torch.randn(3, len(pts), 3) * 0.002,
                       shape_std=torch.ones(3), expression_basis=torch.zeros(0, len(pts), 3), expression_labels=[],
                       faces=f, landmarks=lm)
    path = tmp_path / "ellipsoid.npz"
    m.save(str(path))
    src = MorphableSource(preset="frontal", size=32, model=str(path))
    ids = src.sample_identities(2, seed=0)
    b = src.render(ids, torch.tensor([0, 1]), torch.tensor([0, 0]), seed=0)
    assert b.images.shape == (2, 3, 32, 32) and torch.isfinite(b.images).all()
