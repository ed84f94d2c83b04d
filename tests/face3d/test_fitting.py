"""Fitting one photo: landmarks, pose conventions, mirror and rotation consistency, fit files
and the mesh topology. Real photos: the built-in examples and, when present, LFW (150 px
here; tolerances stated for 250 px photos are scaled by width / 250)."""

from __future__ import annotations

import itertools
import os
from collections import Counter

import cv2
import numpy as np
import pytest

from face3d.derive_topology import IBUG_MIRROR, border_loops
from face3d.fit import Fit, FitFileError, load_fit
from face3d.fitter import NoFaceError, fit_from_points
from face3d.pose import euler_to_matrix
from face3d.topology import NUM_VERTICES, load_topology

MIRROR68 = np.array(IBUG_MIRROR)


def wrap(deg):
    """Angle difference in (-180, 180]."""
    return -((-np.asarray(deg) + 180.0) % 360.0 - 180.0)


def rotate_ccw(rgb: np.ndarray, deg: float) -> np.ndarray:
    """The photo turned ``deg`` degrees counter-clockwise about its centre, canvas enlarged so
    nothing is cropped (black corners)."""
    h, w = rgb.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), deg, 1.0)  # + = counter-clockwise
    c, s = abs(M[0, 0]), abs(M[0, 1])
    nw, nh = round(h * s + w * c), round(h * c + w * s)
    M[:, 2] += ((nw - w) / 2, (nh - h) / 2)
    return cv2.warpAffine(rgb, M, (nw, nh), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


@pytest.fixture(scope="module")
def lfw10(lfw_sample):
    from face3d.imageio import read_image

    return {p.name: read_image(p) for p in lfw_sample(10, seed=0)}


@pytest.fixture(scope="module")
def lfw_photos(request):
    """``lfw_photos(n, seed)``: name -> RGB of a seeded LFW sample; {} without LFW (tests
    that also use the example photos still run)."""
    from face3d.imageio import read_image

    try:
        sample = request.getfixturevalue("lfw_sample")
    except pytest.skip.Exception:
        return lambda n, seed: {}
    return lambda n, seed: {p.name: read_image(p) for p in sample(n, seed)}


@pytest.fixture(scope="module")
def fits(fitter, example_photos):
    """Memoised fits: ``fits(name, rgb)``."""
    cache = {}

    def get(name, rgb):
        if name not in cache:
            cache[name] = fitter.fit(rgb)
        return cache[name]

    return get


# ---------------------------------------------------------------- landmarks on the face


def _check_landmarks_on_face(fit: Fit, rgb: np.ndarray, name: str):
    h, w = rgb.shape[:2]
    lm = fit.landmarks68
    assert lm.shape == (68, 2) and lm.dtype == np.float32, name
    assert fit.image_size == (h, w), name
    assert np.isfinite(lm).all(), name
    assert (lm >= 0).all() and (lm[:, 0] <= w).all() and (lm[:, 1] <= h).all(), name
    v = fit.vertices
    assert v.shape == (NUM_VERTICES, 3) and fit.iris.shape == (10, 3), name
    lo, hi = v[:, :2].min(0) - 1e-3, v[:, :2].max(0) + 1e-3
    assert ((lm >= lo) & (lm <= hi)).all(), f"{name}: landmarks outside the mesh's box"
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    nose, mouth = lm[30], lm[48:68].mean(0)
    # y grows down: eyes above the nose tip above the mouth
    assert max(eye_l[1], eye_r[1]) < nose[1] < mouth[1], name
    assert eye_l[0] < eye_r[0], f"{name}: image-left eye is not left of the image-right eye"
    assert lm[0, 0] < nose[0] < lm[16, 0], f"{name}: nose tip not between the jaw ends"
    assert lm[48, 0] < lm[54, 0], name
    # the 5 alignment points are the documented reductions of the 68
    np.testing.assert_allclose(fit.landmarks5[:2], [eye_l, eye_r], atol=1e-4)
    np.testing.assert_allclose(fit.landmarks5[2:], lm[[30, 48, 54]], atol=1e-4)
    # the face is a sensible size: eye centres 5-60 % of the photo width apart
    assert 0.05 * w < np.linalg.norm(eye_r - eye_l) < 0.6 * w, name
    assert fit.num_faces >= 1 and 0 < fit.residual < 0.25, name


def test_landmarks_fall_on_the_face_examples(fits, example_photos):
    for name, rgb in example_photos.items():
        _check_landmarks_on_face(fits(name, rgb), rgb, name)


def test_landmarks_fall_on_the_face_lfw(fits, lfw10):
    for name, rgb in lfw10.items():
        _check_landmarks_on_face(fits(name, rgb), rgb, name)


# The astronaut's eye centres (skimage.data.astronaut(), 512 x 512), annotated by hand on an
# 8x enlargement of the photo with a 5-px grid: each pupil's centre, which is also midway
# between that eye's corners, to about 2 px. Read off the photo, not the fitter's output.
ASTRONAUT_EYES = np.array([(203.0, 101.0), (246.0, 103.0)])  # image-left eye first


def test_astronaut_eye_centres(fits, example_photos):
    """The 5-point eye centres (means of each eye's six 68-point landmarks) fall on the
    hand-annotated pupils, and on the iris centres of MediaPipe's iris model (points 468
    and 473 of refine_landmarks): a separate network, so an independent estimate."""
    fit = fits("astronaut.png", example_photos["astronaut.png"])
    eyes = fit.landmarks5[:2]
    assert np.linalg.norm(eyes - ASTRONAUT_EYES, axis=1).max() < 4, eyes
    iris_centres = fit.iris[[0, 5], :2]
    assert np.linalg.norm(eyes - iris_centres, axis=1).max() < 3, (eyes, iris_centres)


def test_pixel_centre_convention(fitter, example_photos):
    """Pixel (i, j) is centred at (j + 0.5, i + 0.5): a photo enlarged k times by pixel
    repetition must give landmarks k times larger, with no offset (MediaPipe itself puts
    centres at integers, which would show as an offset of (k - 1) / 2 px)."""
    offsets = []
    for rgb in example_photos.values():
        small = cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        big = np.repeat(np.repeat(small, 3, 0), 3, 1)
        a, b = fitter.fit(small), fitter.fit(big)
        offsets.append((b.vertices[:, :2] - 3 * a.vertices[:, :2]).mean(0))
    offset = np.mean(offsets, 0)
    print(f"\nmean landmark offset of a 3x pixel-repeated photo: {np.round(offset, 2)} px")
    assert np.abs(offset).max() < 0.5, offset  # the wrong convention gives ~1.0


# ---------------------------------------------------------------- mirror consistency


def _mirror_check(fitter, rgb, fit):
    h, w = rgb.shape[:2]
    m = fitter.fit(np.ascontiguousarray(rgb[:, ::-1]))
    back = m.landmarks68[MIRROR68].astype(np.float64)
    back[:, 0] = w - back[:, 0]
    err = np.linalg.norm(back - fit.landmarks68, axis=1).mean()
    return err, fit.yaw + m.yaw, fit.pitch - m.pitch, fit.roll + m.roll


def test_mirrored_photo_mirrors_pose_and_landmarks(fitter, fits, example_photos, lfw_photos):
    rows, widths = [], []
    photos = {**example_photos, **lfw_photos(8, seed=1)}
    for name, rgb in photos.items():
        rows.append(_mirror_check(fitter, rgb, fits(name, rgb)))
        widths.append(rgb.shape[1])
    r = np.array(rows)
    scale = np.array(widths) / 250.0  # tolerances are for 250 px photos
    lines = [f"  {n[:28]:28s} {e:5.2f} px  yaw+yaw_m {y:+5.1f}  dpitch {p:+5.1f}  "
             f"roll+roll_m {ro:+5.1f}" for n, (e, y, p, ro) in zip(photos, r)]
    print("\nmirror consistency:\n" + "\n".join(lines)
          + (f"\n  LFW mean {r[2:, 0].mean():.2f} px (width {widths[-1]} px)"
             if len(r) > 2 else ""))
    err = r[:, 0] / scale  # in 250-px units
    assert err.mean() < 1.5, err  # landmarks mirror within 1.5 px at 250 px on average
    assert err.max() < 2.5, err  # and no photo far off
    yaw, pitch, roll = np.abs(r[:, 1]), np.abs(r[:, 2]), np.abs(r[:, 3])
    assert np.median(yaw) < 1.5 and yaw.max() < 5.0, r[:, 1]  # opposite yaw
    assert np.median(pitch) < 2.0 and pitch.max() < 6.0, r[:, 2]  # same pitch
    assert np.median(roll) < 1.5 and roll.max() < 3.0, r[:, 3]  # opposite roll


# ---------------------------------------------------------------- in-plane rotation


ANGLES = (20, -20, 45, -45, 90, -90, 180)


def test_in_plane_rotation_changes_roll(fitter, fits, example_photos, lfw_photos):
    """Turning the photo by theta counter-clockwise changes roll by -theta (roll > 0 is
    clockwise); 180 degrees goes through the upside-down check."""
    photos = {**example_photos, **lfw_photos(4, seed=2)}
    errs, lines = [], []
    for name, rgb in photos.items():
        base = fits(name, rgb)
        row = []
        for theta in ANGLES:
            fit = fitter.fit(rotate_ccw(rgb, theta))
            row.append(float(wrap(fit.roll - base.roll + theta)))
        errs.append(row)
        lines.append(f"  {name[:28]:28s} " + " ".join(f"{t:+4d}:{e:+5.1f}"
                                                      for t, e in zip(ANGLES, row)))
    e = np.abs(np.array(errs))
    print("\nroll error after rotating by theta (deg):\n" + "\n".join(lines)
          + f"\n  mean |error| {e.mean():.2f}, max {e.max():.2f}, "
          f"within 3 deg: {(e < 3).mean():.0%}")
    # the sign convention and the upside-down case: never near a sign flip or 180 off
    assert e.max() < 10.0, e
    assert np.median(e) < 1.0 and (e < 3.0).mean() >= 0.9, e
    assert e[:, ANGLES.index(180)].max() < 0.5  # upside-down: the recheck fits the original


def test_upside_down_photo_maps_back_exactly(fitter, fits, example_photos):
    for name, rgb in example_photos.items():
        h, w = rgb.shape[:2]
        base = fits(name, rgb)
        up = fitter.fit(np.ascontiguousarray(rgb[::-1, ::-1]))
        expect = np.array((w, h)) - base.landmarks68
        np.testing.assert_allclose(up.landmarks68, expect, atol=1e-3, err_msg=name)
        assert abs(wrap(up.roll - base.roll - 180)) < 1e-3


# ---------------------------------------------------------------- pose conventions


def _posed(yaw, pitch, roll, scale=80.0, t=(120.0, 110.0, 30.0)):
    canon = load_topology()["canonical"].astype(np.float64)
    R = euler_to_matrix(yaw, pitch, roll)
    verts = scale * canon @ R.T + np.asarray(t)
    iris = np.zeros((10, 3))
    return np.concatenate([verts, iris]), R


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (30, -10, 5), (-45, 20, -30),
                                             (10, 35, 170), (-80, 0, 60)])
def test_fit_from_points_recovers_pose(yaw, pitch, roll):
    pts, R = _posed(yaw, pitch, roll, scale=73.5, t=(101.0, 93.0, -7.0))
    fit = fit_from_points(pts, (250, 250), num_faces=2, fitter_version="x")
    np.testing.assert_allclose([fit.yaw, fit.pitch, fit.roll], [yaw, pitch, roll], atol=1e-3)
    np.testing.assert_allclose(fit.rotation, R, atol=1e-5)
    assert fit.scale == pytest.approx(73.5, rel=1e-6)
    np.testing.assert_allclose(fit.translation, (101.0, 93.0, -7.0), atol=1e-3)
    assert fit.residual < 1e-6 and fit.num_faces == 2 and fit.fitter_version == "x"
    np.testing.assert_allclose(fit.vertices, pts[:NUM_VERTICES], atol=1e-3)


def test_pose_sign_conventions_on_the_posed_mesh():
    topo = load_topology()
    nose = topo["landmarks68"][30]

    def lm(yaw=0, pitch=0, roll=0):
        return _posed(yaw, pitch, roll, t=(0, 0, 0))[0][:NUM_VERTICES]

    front = lm()
    assert front[nose, 2] < front[:, 2].mean()  # the nose tip is nearest the camera
    # yaw > 0: the face turns toward the image's right, the nose tip moves right
    assert lm(yaw=30)[nose, 0] > front[nose, 0] + 10
    assert lm(yaw=-30)[nose, 0] < front[nose, 0] - 10
    # pitch > 0: the face tilts up, the nose tip moves up (smaller y)
    assert lm(pitch=20)[nose, 1] < front[nose, 1] - 5
    # roll > 0: clockwise in the image, so the image-right eye goes down
    l68 = topo["landmarks68"]
    tilted = lm(roll=15)
    assert tilted[l68[42:48], 1].mean() > tilted[l68[36:42], 1].mean() + 5


def test_yaw_sign_on_real_photos(fits, lfw_sample):
    """On real photos, positive yaw puts the nose tip nearer the image-right jaw end."""
    from face3d.imageio import read_image

    checked = 0
    for p in lfw_sample(40, seed=3):
        fit = fits(p.name, read_image(p))
        if abs(fit.yaw) < 12:
            continue
        lm = fit.landmarks68
        asym = (lm[30, 0] - lm[0, 0]) - (lm[16, 0] - lm[30, 0])
        assert np.sign(asym) == np.sign(fit.yaw), (p.name, fit.yaw, asym)
        checked += 1
    assert checked >= 3


# ---------------------------------------------------------------- fit files


def test_fit_file_round_trip_is_exact(tmp_path, fits, example_photos):
    fit = fits("astronaut.png", example_photos["astronaut.png"])
    path = tmp_path / "sub" / "a.npz"
    fit.save(path)
    assert sorted(os.listdir(path.parent)) == ["a.npz"]  # no temp files left behind
    got = load_fit(path)
    for k, v in vars(fit).items():
        g = getattr(got, k)
        assert type(g) is type(v), k
        if isinstance(v, np.ndarray):
            assert g.dtype == v.dtype and g.shape == v.shape, k
            assert np.array_equal(g, v), k
        else:
            assert g == v, k
    # overwriting keeps a single file, readable by the user's group like any written file
    fit.save(path)
    assert sorted(os.listdir(path.parent)) == ["a.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_save_failure_leaves_no_temp_file(tmp_path, fits, example_photos, monkeypatch):
    fit = fits("astronaut.png", example_photos["astronaut.png"])

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        fit.save(tmp_path / "b.npz")
    assert os.listdir(tmp_path) == []


def test_load_fit_errors_name_the_file(tmp_path, fits, example_photos):
    fit = fits("astronaut.png", example_photos["astronaut.png"])
    good = tmp_path / "good.npz"
    fit.save(good)
    data = good.read_bytes()
    arrays = fit.to_arrays()
    cases = {"missing.npz": None, "empty.npz": b"", "text.npz": b"not a zip file\n",
             "truncated.npz": data[: len(data) // 2], "garbage.npz": b"PK\x03\x04" + b"x" * 50}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    os.replace(tmp_path / "plain.npy", tmp_path / "plain.npz")
    cases["plain.npz"] = "a bare .npy"
    np.savez(tmp_path / "lacks.npz", **{k: v for k, v in arrays.items() if k != "yaw"})
    cases["lacks.npz"] = "no yaw"
    np.savez(tmp_path / "bad_field.npz", **{**arrays, "scale": np.zeros(3)})
    cases["bad_field.npz"] = "scale of shape (3,)"
    np.savez(tmp_path / "old.npz", **{**arrays, "format_version": np.asarray(1)})
    cases["old.npz"] = "format 1 (raw MediaPipe depth)"
    for name in cases:
        path = str(tmp_path / name)
        with pytest.raises(FitFileError) as exc:
            load_fit(path)
        msg = str(exc.value)
        assert path in msg and "\n" not in msg, (name, msg)
    with pytest.raises(FitFileError, match="yaw"):
        load_fit(tmp_path / "lacks.npz")
    with pytest.raises(FitFileError, match="refit"):
        load_fit(tmp_path / "old.npz")


def test_fitting_is_deterministic(fitter, example_photos):
    rgb = example_photos["grace_hopper.jpg"]
    a, b = fitter.fit(rgb), fitter.fit(rgb.copy())
    for k, v in vars(a).items():
        assert np.array_equal(np.asarray(v), np.asarray(getattr(b, k))), k


def test_no_face_and_tiny_photos_raise(fitter):
    import skimage.data

    with pytest.raises(NoFaceError):
        fitter.fit(skimage.data.coffee())
    with pytest.raises(NoFaceError, match="too small"):
        fitter.fit(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ValueError):
        fitter.fit(np.zeros((64, 64), np.uint8))  # not RGB


# ---------------------------------------------------------------- topology


def test_topology():
    topo = load_topology()
    tri, canon, mirror = topo["triangles"], topo["canonical"], topo["mirror"]
    assert tri.shape == (852, 3) and tri.min() >= 0 and tri.max() < NUM_VERTICES
    assert canon.shape == (NUM_VERTICES, 3)
    assert len({tuple(sorted(t)) for t in tri}) == 852  # no duplicates
    assert (tri[:, 0] != tri[:, 1]).all() and (tri[:, 1] != tri[:, 2]).all()
    assert (tri[:, 0] != tri[:, 2]).all()

    undirected = Counter(tuple(sorted(e)) for t in tri for e in itertools.combinations(t, 2))
    assert max(undirected.values()) <= 2  # a manifold: every edge in at most two triangles
    assert sorted(len(lp) for lp in border_loops(tri)) == [16, 16, 20, 36]
    assert sorted(border_loops(tri)[0]) == sorted(topo["face_oval"])
    # consistent winding: each interior edge is traversed once in each direction
    directed = Counter((t[k], t[(k + 1) % 3]) for t in tri for k in range(3))
    assert max(directed.values()) == 1
    for (a, b), n in undirected.items():
        if n == 2:
            assert directed[(a, b)] == 1 and directed[(b, a)] == 1
    # camera-facing triangles of the frontal mean face have negative signed area (y down)
    a, b, c = (canon[tri[:, k], :2].astype(np.float64) for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (area < 0).mean() > 0.99

    # the mirror pairing: an involution that maps the surface onto itself (MediaPipe's
    # tessellation splits 6 quads with the same diagonal on both sides: 12 triangles differ)
    assert np.array_equal(mirror[mirror], np.arange(NUM_VERTICES))
    mirrored = {tuple(sorted(t)) for t in mirror[tri]}
    assert len(mirrored - {tuple(sorted(t)) for t in tri}) <= 12
    np.testing.assert_allclose(canon[mirror] * [-1, 1, 1], canon, atol=1e-5)
    lmk = topo["landmarks68"]
    assert np.array_equal(mirror[lmk], lmk[MIRROR68])
    assert np.array_equal(MIRROR68[MIRROR68], np.arange(68))
    # the frame: eye centres 1 apart, image-left eye on the left, nose tip nearest
    eyes = canon[lmk[36:42]].mean(0), canon[lmk[42:48]].mean(0)
    assert np.linalg.norm(eyes[1] - eyes[0]) == pytest.approx(1.0, abs=1e-4)
    assert eyes[0][0] < 0 < eyes[1][0]
    assert canon[lmk[30], 2] < canon[lmk[36:48], 2].min()


def test_fill_triangles_close_eyes_and_mouth():
    topo = load_topology()
    if "fill_triangles" not in topo:
        pytest.skip("topology without fill_triangles")
    both = np.concatenate([topo["triangles"], topo["fill_triangles"]])
    loops = border_loops(both)
    assert [len(lp) for lp in loops] == [36]  # only the face outline stays open
    directed = Counter((t[k], t[(k + 1) % 3]) for t in both for k in range(3))
    assert max(directed.values()) == 1  # still consistently wound
