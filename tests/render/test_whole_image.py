"""Whole-image rendering (render/whole_image.py, ``--render_scope image``) on real fits.

What a user relies on: a rotated render is a whole photo (every pixel from the photo, none
the flat fill), the photo at its own pose comes back, the background stays put, the head
turns back exactly, the masks say what is seen, hidden and stretched, and odd photos get a
documented result. Measured values are printed with ``pytest -s``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fitted_faces import CROP, LFW_NAMES, Face

from face3d.topology import load_topology
from render import whole_image
from render.renderer import FaceMesh, rotate_vertices, rotated_view, training_pair
from render.settings import RenderSettings

IMAGE = RenderSettings(erode_kernel=0, render_scope="image", face_depth=whole_image.FACE_DEPTH)


def _psnr(a, b):
    mse = ((a - b) ** 2).mean().item()
    return 10 * math.log10(4.0 / max(mse, 1e-20))  # [-1, 1] images: peak-to-peak 2


def _view(face, yaw, settings=IMAGE, pitch=None, mesh=None):
    yaw = torch.tensor([float(yaw)])
    pitch = face.pitch if pitch is None else torch.tensor([float(pitch)])
    return rotated_view(face.image, *face.pose, yaw, pitch, mesh or FaceMesh.mediapipe(),
                        settings)


def _static_pixels(face, yaw):
    """(1, 1, H, W) bool: pixels drawn at ``yaw`` by triangles whose three corners are all
    static anchors."""
    from render.rasterizer import rasterize

    mesh = FaceMesh.mediapipe().whole_image()
    topo = mesh.whole
    src = whole_image.extend_vertices(whole_image.flatten(face.vertices, face.translation),
                                      face.rotation, face.scale, face.translation, CROP)
    dst = whole_image.rotate_whole(src, face.rotation, face.scale, face.translation,
                                   torch.tensor([yaw]), face.pitch)
    frags = rasterize(dst, mesh.triangles, CROP, CROP)
    still = torch.as_tensor(topo.weights == 0)[mesh.triangles].all(1)
    return (still[frags.face_ids.clamp_min(0)] & frags.mask)[:, None]


def _static_ids():
    topo = whole_image.mediapipe_topology()
    return torch.as_tensor(np.flatnonzero(topo.weights == 0))


# ------------------------------------------------------------------------------ topology
def test_topology_is_fixed_and_wound_like_the_face():
    topo = whole_image.mediapipe_topology()
    t = load_topology()
    n_rings = len(whole_image.HEAD_RINGS) + len(whole_image.BAND_RINGS) + 1
    assert topo.rings.shape == (n_rings, len(t["face_oval"]))
    assert topo.num_vertices == 468 + topo.rings.size
    assert len(topo.triangles) == 2 * topo.rings.size
    # every vertex is used and every triangle is proper
    used = np.unique(np.concatenate([t["triangles"].ravel(), topo.triangles.ravel()]))
    assert used.size == topo.num_vertices
    assert (np.sort(topo.triangles, 1)[:, :-1] != np.sort(topo.triangles, 1)[:, 1:]).all()
    # mirror is an involution; band and static anchors are their own mirror
    assert (topo.mirror[topo.mirror] == np.arange(topo.num_vertices)).all()
    band = topo.rings[len(whole_image.HEAD_RINGS):].ravel()
    assert (topo.mirror[band] == band).all()
    # motion weights: the face and head follow fully, then fall to 0 ring by ring
    ring_w = [topo.weights[r].max() for r in topo.rings]
    assert ring_w == sorted(ring_w, reverse=True) and ring_w[-1] == 0 and ring_w[0] == 1
    assert (topo.weights[:468] == 1).all()


def test_every_photo_gets_the_same_topology_and_no_fold(faces):
    topo = whole_image.mediapipe_topology()
    for face in faces.values():
        src = whole_image.extend_vertices(face.vertices, face.rotation, face.scale,
                                          face.translation, CROP)
        assert src.shape == (1, topo.num_vertices, 3) and src.dtype == torch.float32
        assert torch.isfinite(src).all()
        assert torch.equal(src[:, :468], face.vertices)  # the face is unchanged
        assert whole_image.check_source(src, CROP) == [""], face.name
        areas = whole_image.signed_areas(src, torch.as_tensor(topo.triangles))
        assert (areas < 0).all(), f"{face.name}: ring triangles must face the camera"


def test_flatten_keeps_the_picture_and_scales_depth(astronaut):
    f = astronaut
    flat = whole_image.flatten(f.vertices, f.translation)
    assert torch.equal(flat[..., :2], f.vertices[..., :2])
    dz, dz0 = flat[..., 2] - f.translation[:, 2], f.vertices[..., 2] - f.translation[:, 2]
    assert torch.allclose(dz, whole_image.FACE_DEPTH * dz0, atol=1e-4)


def test_head_anchors_lie_behind_the_face_outline(astronaut):
    """The head has volume: head anchors recede from the oval toward the silhouette, and
    the band lies behind the head."""
    f = astronaut
    topo = whole_image.mediapipe_topology()
    src = whole_image.extend_vertices(f.vertices, f.rotation, f.scale, f.translation, CROP)[0]
    z = [src[r, 2].mean().item() for r in topo.rings]
    oval_z = src[topo.oval, 2].mean().item()
    print(f"\nmean ring depths (oval {oval_z:.1f}): " + ", ".join(f"{v:.1f}" for v in z))
    assert oval_z < z[0] < z[1] < z[2] < z[3]
    # the head silhouette is wider than the face: the ears and hair are inside it
    sil = src[topo.rings[len(whole_image.HEAD_RINGS) - 1], 0]
    oval = src[topo.oval, 0]
    assert (sil.max() - sil.min()) > 1.1 * (oval.max() - oval.min())


# --------------------------------------------------------------------------- rendering
@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_own_pose_reproduces_the_whole_crop(faces, name):
    f = faces[name]
    v = _view(f, float(f.yaw), pitch=float(f.pitch))
    p = _psnr(v["image"], f.image)
    print(f"\n{name}: whole-crop PSNR at the photo's own pose {p:.1f} dB")
    assert p >= 35.0
    assert v["coverage"].min() == 1
    assert v["hidden"].sum() == 0 and v["stretched"].sum() == 0


def test_lfw_own_pose_reproduces_the_whole_crop(faces):
    lfw = [f for n, f in faces.items() if n in LFW_NAMES]
    if not lfw:
        pytest.skip("LFW photos not found under ../shared/data/lfw")
    for f in lfw:
        assert _psnr(_view(f, float(f.yaw), pitch=float(f.pitch))["image"], f.image) >= 35.0


@pytest.mark.parametrize("yaw", [-30.0, 30.0])
def test_turned_render_is_all_photo_with_stretched_band(faces, yaw):
    """At +-30 degrees every pixel is covered by the mesh (texture from the photo, not the
    flat fill) and the stretched mask marks the revealed band on the side the head turns
    away from; the face-only render leaves most of the crop to the fill."""
    for name in ("astronaut", "grace_hopper"):
        f = faces[name]
        v = _view(f, yaw)
        assert v["coverage"].min() == 1, name
        face_only = _view(f, yaw, RenderSettings(erode_kernel=0))
        assert face_only["coverage"].mean() < 0.6
        stretched = v["stretched"][0, 0]
        frac = stretched.mean().item()
        half = CROP // 2
        left, right = stretched[:, :half].mean().item(), stretched[:, half:].mean().item()
        print(f"\n{name} yaw {yaw:+.0f}: stretched {frac:.3f} (left {left:.3f}, right "
              f"{right:.3f}), hidden {v['hidden'].mean().item():.3f}")
        assert 0.02 < frac < 0.6
        # turning toward the image's right (yaw > 0) reveals what was behind the head's
        # left side (image left), and vice versa
        assert (left > right) if yaw > 0 else (right > left)
        # most of the face keeps its texture: only its steep side (the cheek turning
        # toward the camera) is magnified past the factor
        face = v["mask"][0, 0]
        assert (stretched * face).sum() < 0.35 * face.sum()


def test_background_anchors_do_not_move(astronaut):
    f = astronaut
    src = whole_image.extend_vertices(f.vertices, f.rotation, f.scale, f.translation, CROP)
    for yaw, pitch in [(40.0, 0.0), (-60.0, 15.0)]:
        dst = whole_image.rotate_whole(src, f.rotation, f.scale, f.translation,
                                       torch.tensor([yaw]), torch.tensor([pitch]))
        ids = _static_ids()
        assert torch.equal(dst[:, ids], src[:, ids])
    # and the photo's pixels there are the render's, exactly (copied, not resampled)
    v = _view(f, 45.0)
    static = _static_pixels(f, 45.0)
    assert static.float().mean() > 0.1
    assert torch.equal(v["image"][static.expand_as(v["image"])],
                         f.image[static.expand_as(f.image)])


def test_face_and_head_turn_like_the_face_mesh(astronaut):
    """Face vertices move exactly as ``rotate_vertices`` moves them (same rigid turn)."""
    f = astronaut
    src = whole_image.extend_vertices(f.vertices, f.rotation, f.scale, f.translation, CROP)
    yaw, pitch = torch.tensor([35.0]), torch.tensor([-10.0])
    dst = whole_image.rotate_whole(src, f.rotation, f.scale, f.translation, yaw, pitch)
    want = rotate_vertices(f.vertices, f.rotation, f.scale, f.translation, yaw, pitch)
    assert (dst[:, :468] - want).abs().max() < 1e-3


@pytest.mark.parametrize("turn", [25.0, -50.0])
def test_turning_there_and_back_returns_every_anchor(astronaut, turn):
    """Rotate by theta, then treat the rotated mesh as a source at its new pose and rotate
    back: every anchor (band anchors included: they move by a fraction of the shift of a
    head anchor, which returns) returns within 0.1 px."""
    from face3d.pose import euler_to_matrix

    f = astronaut
    src = whole_image.extend_vertices(f.vertices, f.rotation, f.scale, f.translation, CROP)
    roll = torch.rad2deg(torch.atan2(f.rotation[:, 1, 0], f.rotation[:, 0, 0]))
    yaw_b, pitch_b = f.yaw + turn, f.pitch + 10.0
    there = whole_image.rotate_whole(src, f.rotation, f.scale, f.translation, yaw_b, pitch_b)
    rot_b = euler_to_matrix(yaw_b.double(), pitch_b.double(), roll.double()).float()
    back = whole_image.rotate_whole(there, rot_b, f.scale, f.translation, f.yaw, f.pitch)
    err = (back - src)[..., :2].norm(dim=-1).max().item()
    print(f"\nturn {turn:+.0f} and back: max anchor error {err:.2e} px")
    assert err < 0.1
    moved = (there - src)[..., :2].norm(dim=-1)
    assert moved.max() > 10  # it did turn


def test_symmetric_fill_still_works_on_the_face(astronaut):
    """A source turned to -25 degrees (the astronaut's whole-image render there) turned to
    +45: the far cheek was hidden, and the fill repairs most of it from the other side."""
    from face3d.pose import euler_to_matrix

    a = astronaut
    turned = _view(a, -25.0)
    roll = torch.tensor([a.fit.roll], dtype=torch.float32)
    f = Face.__new__(Face)
    f.__dict__.update(a.__dict__, image=turned["image"], vertices=turned["vertices"],
                      rotation=euler_to_matrix(torch.tensor([-25.0]), a.pitch, roll),
                      yaw=torch.tensor([-25.0]))
    plain = _view(f, 45.0)
    filled = _view(f, 45.0, IMAGE.replace(symmetric_fill=True))
    print(f"\nsource -25 -> +45: {int(filled['filled'].sum())} of "
          f"{int(plain['hidden'].sum())} hidden px filled")
    assert plain["hidden"].sum() > 1000
    assert filled["filled"].sum() > 0.5 * plain["hidden"].sum()
    assert (filled["filled"] <= filled["hidden"]).all()
    # nothing outside the hidden pixels changes
    same = (filled["filled"] == 0).expand_as(plain["image"])
    assert torch.equal(plain["image"][same], filled["image"][same])


def test_face_scope_is_unchanged_by_the_option(astronaut):
    """'face' is the original's render: the face on the background fill."""
    f = astronaut
    v = _view(f, 30.0, RenderSettings(erode_kernel=0))
    assert v["stretched"].sum() == 0
    assert torch.equal(v["coverage"], v["mask"])


def test_bfm_like_mesh_without_oval_refuses_image_scope(astronaut):
    f = astronaut
    plain = FaceMesh(FaceMesh.mediapipe().triangles)
    with pytest.raises(ValueError, match="render_scope face"):
        _view(f, 20.0, mesh=plain)


# ------------------------------------------------------------------------- training pair
def test_training_pair_whole_image(faces):
    f = faces["grace_hopper"]
    s = RenderSettings(render_scope="image", face_depth=whole_image.FACE_DEPTH)
    same = training_pair(f.image, *f.pose, f.yaw, f.pitch, FaceMesh.mediapipe(), s)
    assert _psnr(same["input"], f.image) >= 35.0
    assert same["hidden_b"].sum() == 0 and same["stretched"].sum() == 0
    p = training_pair(f.image, *f.pose, f.yaw + 40.0, f.pitch, FaceMesh.mediapipe(), s)
    assert p["input"].shape == f.image.shape
    assert p["rotated"].shape == f.image.shape
    # the damage is where the masks say: the error is several times larger there
    err = (p["input"] - f.image).abs().mean(1, keepdim=True)
    marked = (p["hidden_b"] + p["stretched"]) > 0
    inside, outside = err[marked].mean().item(), err[~marked].mean().item()
    print(f"\nwhole-image pair +40: {marked.float().mean().item():.3f} of pixels marked; "
          f"mean error there {inside:.3f}, elsewhere {outside:.4f}")
    assert 0.02 < marked.float().mean() < 0.6
    assert inside > 4 * outside
    # the static background is returned as it was
    static = _static_pixels(f, float(f.yaw) + 40.0).expand_as(f.image)
    assert torch.equal(p["input"][static], f.image[static])


# ------------------------------------------------------------------------ odd photos
def _moved(face, shift=(0.0, 0.0), zoom=1.0):
    """The same face, its fit shifted and zoomed about the crop's centre."""
    c = torch.tensor([CROP / 2, CROP / 2, 0.0])
    v = (face.vertices - c) * zoom + c + torch.tensor([*shift, 0.0])
    t = (face.translation - c) * zoom + c + torch.tensor([*shift, 0.0])
    out = Face.__new__(Face)
    out.__dict__.update(face.__dict__, vertices=v, translation=t, scale=face.scale * zoom)
    return out


def test_face_near_the_crop_border_is_covered(astronaut):
    """Documented: a face near the border (here 90 px up and left) still gets a mesh that
    covers the whole crop; its head anchors beyond the crop take the crop's edge pixels."""
    f = _moved(astronaut, shift=(-90.0, -90.0))
    src = whole_image.extend_vertices(f.vertices, f.rotation, f.scale, f.translation, CROP)
    assert whole_image.check_source(src, CROP) == [""]
    v = _view(f, 30.0)
    assert v["coverage"].min() == 1 and torch.isfinite(v["image"]).all()


def test_face_filling_the_crop_is_covered(astronaut):
    """Documented: a face zoomed to fill the crop (2.5x) has its head silhouette beyond the
    crop; the render still covers every pixel and turns without folds."""
    f = _moved(astronaut, zoom=2.5)
    src = whole_image.extend_vertices(f.vertices, f.rotation, f.scale, f.translation, CROP)
    assert whole_image.check_source(src, CROP) == [""]
    v = _view(f, -30.0)
    assert v["coverage"].min() == 1 and torch.isfinite(v["image"]).all()


def test_a_second_face_in_the_background_stays_put(astronaut):
    """Documented: only the fitted (largest) face turns; another face in the crop is
    background: where it lies beyond the band it is not moved at all."""
    f = astronaut
    image = f.image.clone()
    small = torch.nn.functional.interpolate(f.image, size=(48, 48), mode="area")
    image[..., 200:248, 4:52] = small  # a second, smaller face in the bottom-left corner
    two = Face.__new__(Face)
    two.__dict__.update(f.__dict__, image=image)
    v = _view(two, 35.0)
    static = _static_pixels(two, 35.0)
    corner = static[..., 200:248, 4:52]
    assert corner.float().mean() > 0.5  # most of the second face is background
    got, want = v["image"][..., 200:248, 4:52], image[..., 200:248, 4:52]
    assert torch.equal(got[corner.expand_as(got)], want[corner.expand_as(want)])


def test_profile_source_is_reported_not_rendered_wrong(astronaut):
    """A source turned beyond what the mesh can hold (here the astronaut's fit turned to 80
    degrees) folds: ``check_source`` names it, so callers report the photo."""
    f = astronaut
    v80 = rotate_vertices(f.vertices, f.rotation, f.scale, f.translation, torch.tensor([80.0]),
                          f.pitch)
    from face3d.pose import euler_to_matrix

    roll = torch.rad2deg(torch.atan2(f.rotation[:, 1, 0], f.rotation[:, 0, 0]))
    r80 = euler_to_matrix(torch.tensor([80.0]), f.pitch, roll)
    src = whole_image.extend_vertices(v80, r80, f.scale, f.translation, CROP)
    msg = whole_image.check_source(src, CROP)[0]
    assert "folds" in msg and "--render_scope face" in msg


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_give_the_same_triangle_ids(astronaut):
    from render.rasterizer import rasterize

    f = astronaut
    mesh = FaceMesh.mediapipe().whole_image()
    src = whole_image.extend_vertices(f.vertices, f.rotation, f.scale, f.translation, CROP)
    dst = whole_image.rotate_whole(src, f.rotation, f.scale, f.translation,
                                   torch.tensor([30.0]), f.pitch)
    cpu = rasterize(dst, mesh.triangles, CROP, CROP)
    gpu = rasterize(dst.cuda(), mesh.triangles.cuda(), CROP, CROP)
    assert torch.equal(cpu.face_ids, gpu.face_ids.cpu())


def test_face_depth_is_a_render_setting(astronaut):
    """The whole-image depth is recorded with a run (RenderSettings.face_depth): settings
    saved before the field existed mean 0.8, the value they were trained with; the command
    line's default is the calibrated FACE_DEPTH; and the setting reaches the render."""
    from options.test_options import TestOptions

    assert RenderSettings.from_dict({"render_scope": "image"}).face_depth == 0.8
    assert RenderSettings.from_options(TestOptions().parse([])).face_depth == \
        whole_image.FACE_DEPTH
    with pytest.raises(ValueError, match="face_depth must be > 0"):
        RenderSettings(face_depth=0.0)
    a = _view(astronaut, 30.0)
    b = _view(astronaut, 30.0, IMAGE.replace(face_depth=0.8))
    assert not torch.equal(a["vertices"], b["vertices"])
