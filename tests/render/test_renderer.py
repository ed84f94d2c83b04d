"""The renderer (render/renderer.py) on real fitted photos.

The built-in example photos (astronaut, Grace Hopper) are fitted with MediaPipe and aligned
to a 256 crop once per module; a few LFW photos join them when ../shared/data/lfw exists
(those checks skip otherwise). Tests of real faces skip without mediapipe. Measured values
are printed with ``pytest -s``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fitted_faces import CROP, LFW, LFW_NAMES, NOSE_TIP, batch_of

from face3d.pose import euler_to_matrix, matrix_to_euler, similarity_align
from face3d.topology import load_topology
from render.rasterizer import interpolate, rasterize
from render.renderer import (
    FaceMesh,
    render_textured,
    rotate_vertices,
    rotated_view,
    sample_target_poses,
    training_pair,
)
from render.settings import RenderSettings
from util.op_count import OpCounter

_batch = batch_of


def _psnr(a, b, mask):
    """PSNR (dB) in the [-1, 1] range (peak-to-peak 2) over the pixels of ``mask``."""
    m = mask.bool().expand_as(a)
    mse = ((a - b)[m] ** 2).mean().item()
    return 10 * math.log10(4.0 / max(mse, 1e-20))


# ---------------------------------------------------------------------------- identity
def _check_identity(face, mesh):
    pix = render_textured(face.image, face.vertices, face.vertices, mesh)
    vert = render_textured(face.image, face.vertices, face.vertices, mesh, per_vertex=True)
    p_pix = _psnr(pix.image, face.image, pix.mask)
    p_vert = _psnr(vert.image, face.image, vert.mask)
    print(f"\n{face.name}: identity PSNR per-pixel {p_pix:.1f} dB, per-vertex {p_vert:.1f} dB, "
          f"mask {int(pix.mask.sum())} px, hidden {int(pix.hidden.sum())} px")
    assert pix.mask.sum() > 0.15 * CROP * CROP
    assert p_pix >= 35.0
    assert p_vert < p_pix - 5.0
    assert pix.hidden.sum() == 0 and vert.hidden.sum() == 0
    assert pix.filled.sum() == 0


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_identity_render_reproduces_example(faces, mesh, name):
    _check_identity(faces[name], mesh)


def test_identity_render_reproduces_lfw(faces, mesh):
    lfw = [f for n, f in faces.items() if n in LFW_NAMES]
    if not lfw:
        pytest.skip(f"LFW photos not found under {LFW}")
    for face in lfw:
        _check_identity(face, mesh)


def _reference_render(src_image, src_v, dst_v, mesh, per_vertex=False, symmetric_fill=False):
    """The straightforward dense version of render_textured (every pixel, the rasteriser's
    own interpolate, grid_sample on the full grid), which the renderer must reproduce."""
    B, _, H, W = src_image.shape
    tri = mesh.triangles
    dst, src = rasterize(dst_v, tri, H, W), rasterize(src_v, tri, H, W)
    tol = (0.03 * (src_v[..., 0].amax(1) - src_v[..., 0].amin(1))).clamp(min=1.0)
    b = torch.arange(B)[:, None, None]

    def visible(p):  # seen at any pixel of the 2x2 bilinear footprint
        x0 = (p[..., 0] - 0.5).floor().long()
        y0 = (p[..., 1] - 0.5).floor().long()
        seen = torch.zeros(p.shape[:-1], dtype=torch.bool)
        for iy in ((y0).clamp(0, H - 1), (y0 + 1).clamp(0, H - 1)):
            for ix in ((x0).clamp(0, W - 1), (x0 + 1).clamp(0, W - 1)):
                seen |= src.mask[b, iy, ix] & (p[..., 2] <= src.depth[b, iy, ix] + tol[b])
        return seen | outside(p)

    def outside(p):  # nothing in the photo hides what lies beyond it
        return (p[..., 0] < 0) | (p[..., 0] > W) | (p[..., 1] < 0) | (p[..., 1] > H)

    def sample(xy):
        grid = torch.stack([xy[..., 0] / W * 2 - 1, xy[..., 1] / H * 2 - 1], -1)
        return F.grid_sample(src_image, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)

    point = interpolate(dst, tri, src_v)
    hidden = dst.mask & ~visible(point)
    if per_vertex:
        colours = sample(src_v[:, None, :, :2])[:, :, 0].transpose(1, 2)
        image = interpolate(dst, tri, colours).permute(0, 3, 1, 2)
    else:
        image = sample(point[..., :2])
    filled = torch.zeros_like(hidden)
    if symmetric_fill:
        twin = interpolate(dst, tri, src_v[:, mesh.mirror])
        filled = hidden & visible(twin) & ~outside(twin)
        image = torch.where(filled[:, None], sample(twin[..., :2]), image)
    m = dst.mask[:, None].float()
    return image * m, m, hidden[:, None].float(), filled[:, None].float()


def test_render_matches_dense_reference(faces, mesh):
    b = _batch([faces["astronaut"], faces["grace_hopper"]])
    dst = rotate_vertices(b["vertices"], b["rotation"], b["scale"], b["translation"],
                          torch.tensor([50.0, -35.0]), b["pitch"] + 5)
    for per_vertex in (False, True):
        for sym in (False, True):
            r = render_textured(b["image"], b["vertices"], dst, mesh, per_vertex=per_vertex,
                                symmetric_fill=sym)
            ref = _reference_render(b["image"], b["vertices"], dst, mesh, per_vertex, sym)
            for name, got, want in zip(("image", "mask", "hidden", "filled"),
                                       (r.image, r.mask, r.hidden, r.filled), ref):
                assert torch.equal(got, want), (per_vertex, sym, name)
            assert r.hidden.sum() > 0 and (r.filled.sum() > 0) == sym


# ---------------------------------------------------------------------------- pose control
@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_rotate_round_trip(faces, mesh, name):
    face = faces[name]
    roll = torch.tensor([face.fit.roll], dtype=torch.float32)
    worst = 0.0
    for dyaw, dpitch in [(-60, 0), (-45, 10), (-20, -15), (15, 5), (30, 0), (60, -10)]:
        yaw_b, pitch_b = face.yaw + dyaw, face.pitch + dpitch
        verts_b = rotate_vertices(*face.pose, yaw_b, pitch_b)
        rot_b = euler_to_matrix(yaw_b, pitch_b, roll)
        back = rotate_vertices(verts_b, rot_b, face.scale, face.translation, face.yaw,
                               face.pitch)
        err = (back - face.vertices).abs().amax().item()
        lmk = (back[:, mesh.landmarks68, :2] - face.vertices[:, mesh.landmarks68, :2])
        worst = max(worst, err)
        assert err < 0.1, (dyaw, dpitch, err)
        assert lmk.abs().amax().item() < 0.1
        assert (verts_b - face.vertices).abs().amax() > 5.0  # it did turn
    print(f"\n{name}: worst round-trip error {worst:.2e} px")


def test_rotate_keeps_roll_scale_translation(faces):
    canonical = load_topology()["canonical"]
    for face in faces.values():
        for yaw, pitch in [(-50.0, 0.0), (0.0, 0.0), (30.0, 10.0), (60.0, -20.0)]:
            v = rotate_vertices(*face.pose, torch.tensor([yaw]), torch.tensor([pitch]))
            R, s, t = similarity_align(canonical, v[0].double().numpy())
            y, p, r = matrix_to_euler(R)
            assert abs(y - yaw) < 0.05 and abs(p - pitch) < 0.05, (face.name, y, p)
            assert abs(r - face.fit.roll) < 0.05, (face.name, r, face.fit.roll)
            assert abs(s / face.fit.scale - 1) < 1e-4
            np.testing.assert_allclose(t, face.fit.translation, atol=0.02)


def test_rotate_current_pose_is_identity(faces):
    for face in faces.values():
        v = rotate_vertices(*face.pose, face.yaw, face.pitch)
        assert (v - face.vertices).abs().amax() < 1e-3, face.name


def test_positive_yaw_moves_nose_right(astronaut):
    f = astronaut
    def nose_offset(yaw):  # noqa: E306
        v = rotate_vertices(*f.pose, torch.tensor([yaw]), f.pitch)
        return (v[0, NOSE_TIP, 0] - f.translation[0, 0]).item()

    front, right, left = nose_offset(0.0), nose_offset(30.0), nose_offset(-30.0)
    assert abs(front) < 5
    assert right > front + 10 and right > 10  # toward the image's right
    assert left < front - 10 and left < -10


def test_rotate_is_batched_per_sample(faces):
    b = _batch([faces["astronaut"], faces["grace_hopper"]])
    yaw, pitch = torch.tensor([40.0, -25.0]), torch.tensor([5.0, -5.0])
    both = rotate_vertices(b["vertices"], b["rotation"], b["scale"], b["translation"], yaw,
                           pitch)
    for i, name in enumerate(["astronaut", "grace_hopper"]):
        one = rotate_vertices(*faces[name].pose, yaw[i:i + 1], pitch[i:i + 1])
        torch.testing.assert_close(both[i:i + 1], one, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- target poses
def test_sample_target_poses_is_seeded():
    yaw, pitch = torch.linspace(-80, 80, 64), torch.linspace(-20, 20, 64)
    def run(seed, **kw):  # noqa: E306
        return sample_target_poses(yaw, pitch, torch.Generator().manual_seed(seed), **kw)

    a, b, c = run(1, pose_noise=True), run(1, pose_noise=True), run(2, pose_noise=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


@pytest.mark.parametrize("large_pose, lo, hi", [(False, 20.0, 55.0), (True, 55.0, 60.0)])
def test_sample_target_poses_ranges(large_pose, lo, hi):
    g = torch.Generator().manual_seed(0)
    n = 4000
    yaw = (torch.rand(n, generator=g) * 180 - 90)
    yaw[:4] = torch.tensor([-90.0, 90.0, -89.0, 0.0])
    pitch = torch.rand(n, generator=g) * 60 - 30
    t_yaw, t_pitch = sample_target_poses(yaw, pitch, g, large_pose=large_pose)
    offset = (t_yaw - yaw).abs()
    assert offset.min() >= lo - 1e-3 and offset.max() <= hi + 1e-3
    assert t_yaw.abs().max() <= 90.0
    assert (t_yaw > yaw).any() and (t_yaw < yaw).any()  # both sides are drawn
    assert torch.equal(t_pitch, pitch)  # pitch changes only with pose_noise
    t_yaw2, t_pitch2 = sample_target_poses(yaw, pitch, g, large_pose=large_pose,
                                           pose_noise=True, pitch_noise=10.0)
    dp = (t_pitch2 - pitch).abs()
    assert dp.max() <= 10.0 + 1e-4 and dp.mean() > 2.0
    assert ((t_yaw2 - yaw).abs() >= lo - 1e-3).all() and t_yaw2.abs().max() <= 90.0


# --------------------------------------------------------------------------- training pair
def _pair(face, mesh, yaw_b, pitch_b=None, **kw):
    pitch_b = face.pitch if pitch_b is None else pitch_b
    return training_pair(face.image, *face.pose, yaw_b, pitch_b, mesh, RenderSettings(**kw))


def test_training_pair_is_pure(astronaut, mesh):
    g = torch.Generator().manual_seed(3)
    yaw_b, pitch_b = sample_target_poses(astronaut.yaw, astronaut.pitch, g, pose_noise=True)
    a = _pair(astronaut, mesh, yaw_b, pitch_b)
    b = _pair(astronaut, mesh, yaw_b, pitch_b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(a["real"], astronaut.image)


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_training_pair_artifacts_only_where_hidden(faces, mesh, name):
    face = faces[name]
    p = _pair(face, mesh, face.yaw + 45.0)
    mask, hid = p["mask"][0, 0].bool(), p["hidden_b"][0, 0].bool()
    vis = mask & ~hid
    diff = (p["input"] - p["real"]).abs().mean(1)[0]
    d_vis, d_hid = diff[vis].mean().item(), diff[hid].mean().item()
    print(f"\n{name} 45 deg: mean |input - real| visible {d_vis:.4f} ({int(vis.sum())} px), "
          f"hidden_b {d_hid:.4f} ({int(hid.sum())} px)")
    assert hid.sum() > 0.1 * mask.sum()
    assert not (hid & ~mask).any()
    # What remains where b saw the surface is the blur of resampling a foreshortened texture
    # twice (largest on the finely wrinkled, JPEG-noisy Grace Hopper: about 0.05).
    assert d_vis < 0.06
    assert d_hid > 4 * d_vis


def test_training_pair_no_turn_has_no_hidden(faces, mesh):
    for face in faces.values():
        p = _pair(face, mesh, face.yaw)
        hidden, area = p["hidden_b"].sum().item(), p["mask"].sum().item()
        psnr = _psnr(p["input"], p["real"], p["mask"])
        print(f"\n{face.name}: no turn: hidden_b {hidden:.0f} of {area:.0f} px, "
              f"input vs real {psnr:.1f} dB")
        assert hidden <= 1e-3 * area, (face.name, hidden, area)
        assert area > 0.1 * CROP * CROP and psnr > 35.0


def test_training_pair_masks_and_background(astronaut, mesh):
    f = astronaut
    raw_a = rasterize(f.vertices, mesh.triangles, CROP, CROP).mask[:, None].float()
    k = 19
    p = _pair(f, mesh, f.yaw + 30.0, erode_kernel=k)
    # Eroded by exactly the kernel: a pixel stays iff its whole k x k window is face.
    reference = -F.max_pool2d(-raw_a, k, stride=1, padding=k // 2)
    assert torch.equal(p["mask"], reference)
    assert torch.equal(p["mask"] * raw_a, p["mask"])
    ys, xs = torch.nonzero(raw_a[0, 0], as_tuple=True)
    ye, xe = torch.nonzero(p["mask"][0, 0], as_tuple=True)
    r = k // 2
    assert ye.min() - ys.min() >= r and ys.max() - ye.max() >= r
    assert xe.min() - xs.min() >= r and xs.max() - xe.max() >= r
    assert torch.equal(_pair(f, mesh, f.yaw + 30.0, erode_kernel=1)["mask"], raw_a)
    raw_b = rasterize(p["vertices_b"], mesh.triangles, CROP, CROP).mask[:, None].float()
    assert torch.equal(p["mask_b"], -F.max_pool2d(-raw_b, k, stride=1, padding=k // 2))

    # 'avg': outside the eroded masks, the face's mean colour (over its raw mask at a).
    mean = f.image[0][:, raw_a[0, 0].bool()].mean(1)
    out_a = ~p["mask"][0, 0].bool()
    out_b = ~p["mask_b"][0, 0].bool()
    torch.testing.assert_close(p["input"][0][:, out_a],
                               mean[:, None].expand(3, int(out_a.sum())), atol=1e-5, rtol=0)
    torch.testing.assert_close(p["rotated"][0][:, out_b],
                               mean[:, None].expand(3, int(out_b.sum())), atol=1e-5, rtol=0)
    g = _pair(f, mesh, f.yaw + 30.0, erode_kernel=k, background="grey")
    assert (g["input"][0][:, out_a] == 0).all() and (g["rotated"][0][:, out_b] == 0).all()
    inside = p["mask"].bool().expand_as(p["input"])
    # Inside the face the background only reaches texels re-textured right at b's
    # silhouette (the bilinear footprint), so the two agree almost everywhere.
    differ = (g["input"] - p["input"]).abs()[inside] > 1e-6
    assert differ.float().mean() < 0.05  # measured 0.03 on the astronaut at +30 degrees
    with pytest.raises(ValueError):
        _pair(f, mesh, f.yaw + 30.0, background="white")

    assert p["landmarks_a"].shape == (1, 68, 2) and p["landmarks_b"].shape == (1, 68, 2)
    torch.testing.assert_close(p["landmarks_a"], torch.from_numpy(f.fit.landmarks68)[None])


def test_training_pair_batch_shapes(faces, mesh):
    b = _batch([faces["astronaut"], faces["grace_hopper"]])
    yaw_b, pitch_b = sample_target_poses(b["yaw"], b["pitch"], torch.Generator().manual_seed(0))
    p = training_pair(b["image"], b["vertices"], b["rotation"], b["scale"], b["translation"],
                      yaw_b, pitch_b, mesh)
    assert p["landmarks_a"].shape == (2, 68, 2) and p["landmarks_b"].shape == (2, 68, 2)
    for k in ("input", "real", "rotated"):
        assert p[k].shape == (2, 3, CROP, CROP)
    for k in ("mask", "hidden_b", "mask_b"):
        assert p[k].shape == (2, 1, CROP, CROP)
    assert p["vertices_b"].shape == b["vertices"].shape


# ---------------------------------------------------------------------------- symmetry fill
def test_symmetric_fill_off_by_default(astronaut, mesh):
    f = astronaut
    v = rotated_view(f.image, *f.pose, torch.tensor([60.0]), f.pitch, mesh)
    assert v["hidden"].sum() > 0 and v["filled"].sum() == 0
    r = render_textured(f.image, f.vertices, v["vertices"], mesh)
    assert r.hidden.sum() > 0 and r.filled.sum() == 0
    p = _pair(f, mesh, torch.tensor([60.0]))
    assert p["hidden_b"].sum() > 0
    with_fill = _pair(f, mesh, torch.tensor([60.0]), symmetric_fill=True)
    assert not torch.equal(with_fill["input"], p["input"])


def test_symmetric_fill_fills_hidden_pixels(faces, mesh):
    for name in ("astronaut", "grace_hopper"):
        f = faces[name]
        for yaw in (60.0, -60.0):
            v = rotated_view(f.image, *f.pose, torch.tensor([yaw]), f.pitch, mesh,
                             settings=RenderSettings(erode_kernel=0, symmetric_fill=True))
            plain = rotated_view(f.image, *f.pose, torch.tensor([yaw]), f.pitch, mesh)
            filled, hidden = v["filled"].bool(), v["hidden"].bool()
            # A near-frontal photo hides both sides alike, so only some pixels can be fixed.
            assert filled.sum() > 20 and hidden.sum() > 200, (name, yaw)
            assert not (filled & ~hidden).any()
            assert torch.equal(v["hidden"], plain["hidden"])
            unfilled = ~filled.expand_as(v["image"])
            assert torch.equal(v["image"][unfilled], plain["image"][unfilled])
            assert not torch.equal(v["image"], plain["image"])


def _turned_source(face, mesh, yaw):
    """The photo's face rendered at ``yaw`` (a non-frontal source photo) and its pose."""
    roll = torch.tensor([face.fit.roll], dtype=torch.float32)
    yaw = torch.tensor([yaw])
    v = rotated_view(face.image, *face.pose, yaw, face.pitch, mesh,
                     settings=RenderSettings(erode_kernel=0, background="grey"))
    rotation = euler_to_matrix(yaw, face.pitch, roll)
    return v["image"], v["vertices"], rotation


def test_symmetric_fill_repairs_most_of_a_turned_source(astronaut, mesh):
    f = astronaut
    image, verts, rotation = _turned_source(f, mesh, -25.0)
    v = rotated_view(image, verts, rotation, f.scale, f.translation, torch.tensor([45.0]),
                     f.pitch, mesh, settings=RenderSettings(erode_kernel=0, symmetric_fill=True))
    filled, hidden = v["filled"].sum().item(), v["hidden"].sum().item()
    print(f"\nsource yaw -25 -> +45: {filled:.0f} of {hidden:.0f} hidden px filled")
    assert hidden > 1000 and filled > 0.5 * hidden


def test_symmetric_fill_copies_the_mirror_point(astronaut, mesh):
    """A left-right symmetric texture (random per-vertex colours averaged with their mirror
    vertex) on the face turned to yaw -20 is turned to +45 and +60: the filled pixels must
    match the texture's ground truth, which the smeared texture does not."""
    f = astronaut
    g = torch.Generator().manual_seed(0)
    colours = torch.rand(468, 3, generator=g) * 2 - 1
    colours = ((colours + colours[mesh.mirror]) / 2)[None]
    src_verts = rotate_vertices(*f.pose, torch.tensor([-20.0]), f.pitch)
    src = rasterize(src_verts, mesh.triangles, CROP, CROP)
    image = interpolate(src, mesh.triangles, colours).permute(0, 3, 1, 2)
    for yaw in (45.0, 60.0):
        dst = rotate_vertices(*f.pose, torch.tensor([yaw]), f.pitch)
        truth = interpolate(rasterize(dst, mesh.triangles, CROP, CROP), mesh.triangles,
                            colours).permute(0, 3, 1, 2)
        fill = render_textured(image, src_verts, dst, mesh, symmetric_fill=True)
        smear = render_textured(image, src_verts, dst, mesh)
        m = fill.filled.bool().expand_as(image)
        e_fill = (fill.image - truth)[m].abs().mean().item()
        e_smear = (smear.image - truth)[m].abs().mean().item()
        print(f"\nsynthetic symmetric texture, yaw -20 -> {yaw:+.0f}: filled "
              f"{int(fill.filled.sum())} of {int(fill.hidden.sum())} hidden px; mean error "
              f"fill {e_fill:.4f}, smeared {e_smear:.4f}")
        assert fill.filled.sum() > 300
        assert e_fill < 0.05 and e_fill < 0.3 * e_smear


def test_symmetric_fill_needs_mirror(astronaut):
    f = astronaut
    bare = FaceMesh(FaceMesh.mediapipe().triangles)
    with pytest.raises(ValueError, match="mirror"):
        render_textured(f.image, f.vertices, f.vertices, bare, symmetric_fill=True)


def test_face_mesh_to_moves_every_part_once():
    """FaceMesh.to keeps the mesh where it is asked to be (the meta device stands in for a
    GPU here) and returns the same object when it is already there, so the rasteriser's
    per-mesh checks are not redone on every call."""
    mesh = FaceMesh.mediapipe()
    assert mesh.to("cpu") is mesh and mesh.to(torch.device("cpu")) is mesh
    moved = mesh.to("meta")
    for part in (moved.triangles, moved.mirror, moved.landmarks68):
        assert part.device.type == "meta"
    assert moved.to("meta") is moved
    assert moved.triangles.shape == mesh.triangles.shape
    bare = FaceMesh(mesh.triangles).to("meta")
    assert bare.mirror is None and bare.landmarks68 is None


# ------------------------------------------------------------------------- batch, devices
def _three(faces):
    names = ["astronaut", "grace_hopper"]
    names.append(next((n for n in LFW_NAMES if n in faces), "astronaut"))
    return [faces[n] for n in names]


def test_batched_equals_per_sample(faces, mesh):
    three = _three(faces)
    b = _batch(three)
    yaw_b = torch.tensor([45.0, -50.0, 25.0])
    pitch_b = b["pitch"] + torch.tensor([0.0, 10.0, -10.0])
    args = (b["image"], b["vertices"], b["rotation"], b["scale"], b["translation"])
    pair = training_pair(*args, yaw_b, pitch_b, mesh, settings=RenderSettings(symmetric_fill=True))
    view = rotated_view(*args, yaw_b, pitch_b, mesh,
                        settings=RenderSettings(erode_kernel=5, symmetric_fill=True))
    for i, f in enumerate(three):
        one = training_pair(f.image, *f.pose, yaw_b[i:i + 1], pitch_b[i:i + 1], mesh,
                            settings=RenderSettings(symmetric_fill=True))
        for k in one:
            assert torch.equal(pair[k][i:i + 1], one[k]), (f.name, k)
        one = rotated_view(f.image, *f.pose, yaw_b[i:i + 1], pitch_b[i:i + 1], mesh,
                           settings=RenderSettings(erode_kernel=5, symmetric_fill=True))
        for k in one:
            assert torch.equal(view[k][i:i + 1], one[k]), (f.name, k)


# ------------------------------------------------------------- strategies and CUDA graphs
def synthetic_pair_args(batch=3, size=128):
    """Training-pair arguments without mediapipe (the GPU box has none): the canonical mesh
    at three poses in a 128 crop, a noise texture, and three target yaws."""
    canonical = torch.from_numpy(load_topology()["canonical"]).float()
    image = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    yaw = torch.tensor([10.0, -20.0, 5.0])[:batch]
    pitch = torch.tensor([0.0, 8.0, -6.0])[:batch]
    rotation = euler_to_matrix(yaw, pitch, torch.zeros(batch))
    scale = torch.full((batch,), 0.3 * size)
    translation = torch.tensor([size / 2, size / 2, 0.0]).repeat(batch, 1)
    vertices = scale[:, None, None] * canonical @ rotation.transpose(1, 2) + translation[:, None]
    return [image, vertices, rotation, scale, translation,
            torch.tensor([45.0, -50.0, 25.0])[:batch], pitch]


def _pair_args(faces_):
    b = _batch(_three(faces_))
    args = [b[k] for k in ("image", "vertices", "rotation", "scale", "translation")]
    return args + [torch.tensor([45.0, -50.0, 25.0]), b["pitch"]]


def test_dense_strategy_renders_identically(faces, mesh, monkeypatch):
    from render import rasterizer

    args = _pair_args(faces)
    compact = training_pair(*args, mesh, settings=RenderSettings(symmetric_fill=True))
    view_c = rotated_view(*args, mesh, per_vertex=True, settings=RenderSettings(erode_kernel=5))
    monkeypatch.setattr(rasterizer, "default_strategy", lambda device: "dense")
    dense = training_pair(*args, mesh, settings=RenderSettings(symmetric_fill=True))
    view_d = rotated_view(*args, mesh, per_vertex=True, settings=RenderSettings(erode_kernel=5))
    for k in compact:
        if compact[k] is not None:
            assert torch.equal(compact[k], dense[k]), k
    for k in view_c:
        assert torch.equal(view_c[k], view_d[k]), k


def test_training_pair_replays_under_a_sizing_plan_without_host_syncs(mesh, monkeypatch):
    """What a CUDA graph needs of the whole pair: fixed sizes and no host sync."""
    from render import rasterizer
    from render.rasterizer import SizingPlan

    monkeypatch.setattr(rasterizer, "default_strategy", lambda device: "dense")
    args = synthetic_pair_args()
    plan = SizingPlan()
    with plan.recording():
        recorded = training_pair(*args, mesh)
    assert len(plan.sizes) == 1  # the views at a and b, in one call
    assert recorded["mask"].mean() > 0.15 and recorded["hidden_b"].sum() > 0  # a real pair
    with OpCounter() as counter, plan.replay():
        replayed = training_pair(*args, mesh)
    assert counter.syncs == 0
    assert not bool(plan.overflowed())
    for k in recorded:
        if recorded[k] is not None:
            assert torch.equal(recorded[k], replayed[k]), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cpu_and_cuda_agree(mesh):
    args = synthetic_pair_args()
    image, vertices = args[:2]
    cpu = training_pair(*args, mesh, settings=RenderSettings(symmetric_fill=True))
    gpu_mesh = FaceMesh.mediapipe(device="cuda")
    gpu = training_pair(*[a.cuda() for a in args], gpu_mesh,
                        settings=RenderSettings(symmetric_fill=True))
    verts_b = cpu["vertices_b"]
    torch.testing.assert_close(gpu["vertices_b"].cpu(), verts_b, atol=1e-3, rtol=0)
    # Same vertices on both devices -> the exact rasteriser gives the same triangle ids.
    fc = rasterize(verts_b, mesh.triangles, CROP, CROP)
    fg = rasterize(verts_b.cuda(), gpu_mesh.triangles, CROP, CROP)
    assert torch.equal(fc.face_ids, fg.face_ids.cpu())
    rc = render_textured(image, vertices, verts_b, mesh, symmetric_fill=True)
    rg = render_textured(image.cuda(), vertices.cuda(), verts_b.cuda(), gpu_mesh,
                         symmetric_fill=True)
    assert torch.equal(rc.mask, rg.mask.cpu())
    assert (rc.hidden != rg.hidden.cpu()).float().mean() < 1e-4
    assert (rc.image - rg.image.cpu()).abs().mean() < 1e-4
    for k in ("input", "rotated", "mask", "mask_b"):
        assert (cpu[k] - gpu[k].cpu()).abs().mean() < 1e-3, k


def test_cuda_graphed_runs_eagerly_off_cuda_and_checks_its_arguments():
    from render.cuda_graph import CudaGraphed

    fn = CudaGraphed(lambda x, y: {"sum": x + y, "none": None, "pair": (x, y * 2)})
    out = fn(torch.ones(2), torch.full((2,), 3.0))
    assert torch.equal(out["sum"], torch.full((2,), 4.0)) and out["none"] is None
    assert fn.captures == 0
    with pytest.raises(TypeError, match="tensors only"):
        fn(torch.ones(2), 3.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_graph_replays_the_eager_render_and_recaptures_when_it_outgrows():
    from render.cuda_graph import CudaGraphed

    gpu_mesh = FaceMesh.mediapipe(device="cuda")
    args = [a.cuda() for a in synthetic_pair_args()]
    graphed = CudaGraphed(lambda *a: training_pair(*a, gpu_mesh,
                                                   settings=RenderSettings(symmetric_fill=True)))
    eager = training_pair(*args, gpu_mesh, settings=RenderSettings(symmetric_fill=True))
    for _ in range(3):  # recording, then replays
        got = graphed(*args)
        for k in eager:
            if eager[k] is not None:
                assert torch.equal(got[k], eager[k]), k
    assert graphed.captures == 1
    # A much bigger face (same shapes) overflows the plan: re-run eagerly, re-captured.
    big = list(args)
    big[3] = args[3] * 1.8  # scale
    big[1] = (args[1] - args[4][:, None]) * 1.8 + args[4][:, None]
    want = training_pair(*big, gpu_mesh, settings=RenderSettings(symmetric_fill=True))
    got = graphed(*big)
    assert graphed.captures == 2
    for k in want:
        if want[k] is not None:
            assert torch.equal(got[k], want[k]), k
