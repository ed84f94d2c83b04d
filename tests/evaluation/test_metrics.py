"""util/metrics.py and util/identity.py: image metrics, AUC on hand-made scores, LFW-style
verification accuracy, pose errors, identity descriptors (skipped without dlib)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.verification import VerificationEvaluator
from util import metrics

# --------------------------------------------------------------------------- pure metrics


def test_image_metrics_of_identical_images():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    mask = np.zeros((48, 48), bool)
    mask[10:30, 12:40] = True
    for m in (None, mask):
        assert metrics.psnr(img, img, m) == math.inf
        assert metrics.ssim(img, img, m) == pytest.approx(1.0)
        assert metrics.l1(img, img, m) == 0.0
    assert math.isnan(metrics.psnr(img, img, np.zeros((48, 48))))


def test_image_metrics_known_values():
    a = np.zeros((32, 32, 3))
    b = np.full((32, 32, 3), 0.1)
    assert metrics.l1(a, b) == pytest.approx(0.1)
    assert metrics.psnr(a, b) == pytest.approx(20.0)  # mse 0.01, peak 1
    # the mask picks the region: outside it the images may differ arbitrarily
    c = b.copy()
    c[:, :16] = 1.0
    mask = np.zeros((32, 32), bool)
    mask[:, 16:] = True
    assert metrics.psnr(a, c, mask) == pytest.approx(20.0)
    assert metrics.psnr(a, c) < 20.0
    u8 = (b * 255).round().astype(np.uint8)
    assert metrics.l1(np.zeros_like(u8), u8) == pytest.approx(26 / 255)
    noisy = np.clip(b + np.random.default_rng(1).normal(0, 0.2, b.shape), 0, 1)
    assert metrics.ssim(b, noisy) < 0.5


def test_roc_auc_hand_made():
    # positives 0.9, 0.4 vs negatives 0.5, 0.1: 3 of 4 orderings right
    assert metrics.roc_auc([0.9, 0.4, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.75)
    # a tie counts half: 0.5 vs (0.5, 0.2) -> (0.5 + 1) / 2
    assert metrics.roc_auc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.75)
    assert metrics.roc_auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert metrics.roc_auc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    assert metrics.roc_auc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5
    assert math.isnan(metrics.roc_auc([1, 2], [1, 1]))
    with pytest.raises(ValueError):
        metrics.roc_auc([1, 2, 3], [1, 0])


def test_auc_matches_pairwise_count_and_ranks_match_scipy():
    from scipy.stats import rankdata

    rng = np.random.default_rng(3)
    s = rng.integers(0, 20, 200).astype(float)  # many ties
    y = rng.random(200) < 0.4
    np.testing.assert_allclose(metrics.average_ranks(s), rankdata(s))
    pos, neg = s[y], s[~y]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum())
    assert metrics.roc_auc(s, y) == pytest.approx(brute / (len(pos) * len(neg)))


def test_verification_accuracy():
    same = np.array([0.2, 0.3, 0.35, 0.4, 0.5] * 4)
    diff = np.array([0.7, 0.8, 0.9, 0.65, 1.0] * 4)
    d = np.concatenate([same, diff])
    y = np.array([True] * 20 + [False] * 20)
    assert metrics.accuracy_at(d, y, 0.6) == 1.0
    t, acc = metrics.best_threshold(d, y)
    assert acc == 1.0 and 0.5 < t < 0.65
    cv = metrics.cv_accuracy(d, y)
    assert cv["mean"] == 1.0 and cv["folds"] == 10
    folds = metrics.stratified_folds(y)
    assert all(y[folds == k].sum() == 2 for k in range(10))
    s = metrics.verification_summary(d, y)
    for key in s:  # the fields the verification evaluator documents
        assert key in VerificationEvaluator.__doc__, key
    assert s["auc"] == 1.0 and s["pairs"] == 40
    # one same pair far away: 39 / 40 at 0.6, AUC just below 1
    d2 = d.copy()
    d2[0] = 0.95
    assert metrics.accuracy_at(d2, y, 0.6) == pytest.approx(39 / 40)
    assert 0.95 < metrics.roc_auc(-d2, y) < 1.0


def test_pose_summary_counts_missing_faces():
    s = metrics.pose_summary([10.0, None, 20.0, float("nan"), 30.0], 20.0)
    assert s["n"] == 5 and s["found_fraction"] == pytest.approx(0.6)
    assert s["mean_abs_error"] == pytest.approx(20 / 3)
    assert s["p90_abs_error"] == pytest.approx(10.0)
    assert s["mean_fitted_yaw"] == pytest.approx(20.0)
    none = metrics.pose_summary([None, None], 0.0)
    assert none["found_fraction"] == 0.0 and none["mean_abs_error"] is None
    np.testing.assert_allclose(metrics.yaw_errors([-50.0, 5.0], [-60.0, 0.0]), [10.0, 5.0])


# --------------------------------------------------------------------------- identity + pose


@pytest.fixture(scope="module")
def describer():
    from util.identity import load_describer

    d, message = load_describer()
    if d is None:
        pytest.skip(message)
    return d


@pytest.fixture(scope="module")
def example_fits(fitter, example_photos):
    return {name: fitter.fit(rgb) for name, rgb in example_photos.items()}


def test_identity_distances(describer, fitter, example_photos, example_fits):
    astro = example_photos["astronaut.png"]
    hopper = example_photos["grace_hopper.jpg"]
    d_astro = describer.describe(astro, example_fits["astronaut.png"].landmarks68)
    d_hopper = describer.describe(hopper, example_fits["grace_hopper.jpg"].landmarks68)
    assert d_astro.shape == (128,)
    assert metrics.descriptor_distance(d_astro, d_astro) == pytest.approx(0.0, abs=1e-9)
    # the same photo described again (also through dlib's own detector) barely moves
    again = describer.describe(astro.copy(), example_fits["astronaut.png"].landmarks68)
    assert metrics.descriptor_distance(d_astro, again) < 1e-6
    assert metrics.descriptor_distance(d_astro, describer.describe(astro)) < 0.2
    assert metrics.descriptor_distance(d_astro, d_hopper) > 0.6
    mirrored = np.ascontiguousarray(astro[:, ::-1])
    d_mirror = describer.describe(mirrored, fitter.fit(mirrored).landmarks68)
    assert metrics.descriptor_distance(d_astro, d_mirror) < 0.4
    assert metrics.descriptor_distance(d_astro, None) != metrics.descriptor_distance(
        d_astro, None)  # NaN: missing
    assert describer.describe(np.zeros((64, 64, 3), np.uint8)) is None


def test_identity_across_lfw_people(describer, fitter, lfw_paths):
    """Two photos of one LFW person are closer than 0.6, two people further apart."""
    from face3d.imageio import read_image

    by_person = {}
    for p in lfw_paths:
        by_person.setdefault(p.parent.name, []).append(p)
    person = next(n for n in sorted(by_person) if len(by_person[n]) >= 4)
    other = next(n for n in sorted(by_person, reverse=True) if n[0] != person[0])

    def desc(path):
        rgb = read_image(path)
        return describer.describe(rgb, fitter.fit(rgb).landmarks68)

    a, b = desc(by_person[person][0]), desc(by_person[person][1])
    c = desc(by_person[other][0])
    assert metrics.descriptor_distance(a, b) < 0.6
    assert metrics.descriptor_distance(a, c) > 0.6


def test_pose_error_of_a_photo_against_itself(fitter, example_photos, example_fits):
    """Re-fitting a photo gives its own yaw exactly; its aligned crop and its render at its
    own pose give the yaw back within the fitter's error (a few degrees)."""
    from face3d.align import align
    from models.inference import face_tensors, rotate
    from render.renderer import FaceMesh
    from render.settings import RenderSettings
    from util.visualizer import to_uint8

    rgb = example_photos["astronaut.png"]
    fit = example_fits["astronaut.png"]
    again = fitter.fit(rgb)
    assert metrics.pose_summary([again.yaw], fit.yaw)["mean_abs_error"] == pytest.approx(0.0)
    crop, fit_c, _ = align(rgb, fit, 256)
    assert metrics.pose_summary([fitter.fit(crop).yaw], fit_c.yaw)["mean_abs_error"] < 3.0
    view = rotate(face_tensors(crop, fit_c, "cpu"), [(fit_c.yaw, None)], FaceMesh.mediapipe(),
                  RenderSettings(erode_kernel=0))
    render = np.ascontiguousarray(to_uint8(view["image"])[0])
    assert metrics.pose_summary([fitter.fit(render).yaw], fit_c.yaw)["mean_abs_error"] < 5.0
    # image metrics of the photo against itself
    assert metrics.psnr(crop, crop) == math.inf and metrics.ssim(crop, crop) == 1.0
