"""Evaluation metrics: pure functions of arrays (no models, no files).

Images are HxWx3 arrays, either uint8 (0..255) or float in [0, 1]; they are compared in
[0, 1] units (so L1 is a fraction of the full range and PSNR uses a peak of 1). A ``mask``
is an HxW (or HxWx1) array, non-zero inside the region to score.

Verification follows the LFW protocol: a pair is called "same person" when the descriptor
distance is below a threshold. ``accuracy_at`` uses a fixed threshold (dlib's documented
0.6); ``cv_accuracy`` picks the best threshold on 9 folds and scores the 10th, as in LFW's
"unrestricted" protocol. ``roc_auc`` needs no threshold.
"""

from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------- summaries


def summarise(values, percentile: float = 90.0) -> dict:
    """n (finite values), mean, median and the ``percentile``-th percentile of the finite
    values (NaN marks a missing measurement); None where there is no value."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"n": 0, "mean": None, "median": None, f"p{percentile:g}": None}
    return {"n": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)),
            f"p{percentile:g}": float(np.percentile(a, percentile))}


# ------------------------------------------------------------------------------- pose


def yaw_errors(fitted_yaws, requested_yaws) -> np.ndarray:
    """|fitted - requested| in degrees; NaN where the output held no face (fitted is None
    or NaN). The requested yaw is absolute: the photo's own yaw is replaced, not added to."""
    fitted = np.array([np.nan if v is None else v for v in np.ravel(fitted_yaws)], np.float64)
    requested = np.broadcast_to(np.asarray(requested_yaws, np.float64), fitted.shape)
    return np.abs(fitted - requested)


def pose_summary(fitted_yaws, requested_yaw: float) -> dict:
    """For the outputs of one requested yaw: how many, the fraction in which a face is still
    found, and the mean / median / 90th percentile of |yaw error| over those found."""
    err = yaw_errors(fitted_yaws, requested_yaw)
    found = np.isfinite(err)
    s = summarise(err)
    fitted = np.array([np.nan if v is None else v for v in np.ravel(fitted_yaws)], np.float64)
    return {"requested_yaw": float(requested_yaw), "n": int(err.size),
            "found_fraction": float(found.mean()) if err.size else None,
            "mean_abs_error": s["mean"], "median_abs_error": s["median"],
            "p90_abs_error": s["p90"],
            "mean_fitted_yaw": float(np.nanmean(fitted)) if found.any() else None}


def yaw_error_summary(fitted_yaws, requested_yaws) -> dict:
    """Over outputs of any requested yaws: the fraction in which a face is still found and
    the mean and 90th percentile of |yaw error| over those found."""
    err = yaw_errors(fitted_yaws, requested_yaws)
    s = summarise(err)
    return {"found_fraction": float(np.isfinite(err).mean()) if err.size else None,
            "mean_abs_error": s["mean"], "p90_abs_error": s["p90"]}


# ------------------------------------------------------------------------------ images


def to_unit(image) -> np.ndarray:
    """uint8 (0..255) or float ([0, 1]) image -> float64 in [0, 1]."""
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return a.astype(np.float64)


def _mask(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape[:2], dtype=bool)
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    if m.shape != tuple(shape[:2]):
        raise ValueError(f"mask {m.shape} does not match the image {shape[:2]}")
    return m > 0


def l1(a, b, mask=None) -> float:
    """Mean absolute difference over the pixels of ``mask`` (all channels), [0, 1] units.
    NaN for an empty mask."""
    x, y = to_unit(a), to_unit(b)
    m = _mask(mask, x.shape)
    if not m.any():
        return float("nan")
    return float(np.abs(x - y)[m].mean())


def psnr(a, b, mask=None, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio (dB) over the pixels of ``mask``; inf for identical
    images, NaN for an empty mask."""
    x, y = to_unit(a), to_unit(b)
    m = _mask(mask, x.shape)
    if not m.any():
        return float("nan")
    mse = float(((x - y) ** 2)[m].mean())
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(data_range ** 2 / mse)


def ssim(a, b, mask=None, data_range: float = 1.0) -> float:
    """Structural similarity (skimage, 7x7 Gaussian-free window, per channel, averaged).
    With a mask, the SSIM map is averaged over the mask's pixels (the windows still see
    their surroundings); 1 for identical images, NaN for an empty mask."""
    from skimage.metrics import structural_similarity

    x, y = to_unit(a), to_unit(b)
    m = _mask(mask, x.shape)
    if not m.any():
        return float("nan")
    if mask is None:
        return float(structural_similarity(x, y, data_range=data_range, channel_axis=-1))
    _, full = structural_similarity(x, y, data_range=data_range, channel_axis=-1, full=True)
    return float(full.mean(-1)[m].mean())


def image_metrics(output, target, mask=None) -> dict:
    """{'l1', 'psnr', 'ssim'} of ``output`` against ``target`` (in ``mask`` when given)."""
    return {"l1": l1(output, target, mask), "psnr": psnr(output, target, mask),
            "ssim": ssim(output, target, mask)}


# ------------------------------------------------------------------------------ identity


def descriptor_distance(d1, d2) -> float:
    """Euclidean distance of two face descriptors (dlib: same person below 0.6); NaN when
    either is missing."""
    if d1 is None or d2 is None:
        return float("nan")
    return float(np.linalg.norm(np.asarray(d1, np.float64) - np.asarray(d2, np.float64)))


def average_ranks(x) -> np.ndarray:
    """1-based ranks of ``x`` with ties sharing their average rank (like scipy's rankdata)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(x.size, dtype=np.float64)
    # runs of equal values: [start, end) in sorted order
    boundaries = np.flatnonzero(np.diff(xs) != 0) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [x.size]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0  # mean of ranks s+1 .. e
    return ranks


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) for binary
    ``labels``, via the Mann-Whitney U statistic on average ranks (ties count half).
    NaN when either class is empty. For distances pass ``-distance``."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = average_ranks(s)
    u = r[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def accuracy_at(distances, labels, threshold: float) -> float:
    """Fraction of pairs classified right when "same" means distance < ``threshold``."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if d.size == 0:
        return float("nan")
    return float(((d < threshold) == y).mean())


def best_threshold(distances, labels) -> tuple[float, float]:
    """(threshold, accuracy): the threshold maximising ``accuracy_at`` on these pairs,
    taken halfway between consecutive distinct distances (ties: the smallest)."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if d.size == 0:
        return float("nan"), float("nan")
    u = np.unique(d)
    candidates = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1e-6]])
    acc = ((d[None, :] < candidates[:, None]) == y[None, :]).mean(1)
    k = int(np.argmax(acc))
    return float(candidates[k]), float(acc[k])


def stratified_folds(labels, n_folds: int = 10) -> np.ndarray:
    """Fold index per pair: the positives and the negatives are each dealt round-robin in
    their given order, so every fold holds both classes in proportion."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    folds = np.empty(y.size, dtype=np.int64)
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        folds[idx] = np.arange(idx.size) % n_folds
    return folds


def cv_accuracy(distances, labels, n_folds: int = 10, folds=None) -> dict:
    """LFW-style k-fold accuracy: for each fold, the best threshold on the other folds is
    applied to it. Returns mean and std of the fold accuracies and the mean threshold."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    folds = stratified_folds(y, n_folds) if folds is None else np.asarray(folds)
    accs, ths = [], []
    for k in np.unique(folds):
        test = folds == k
        if test.all() or not test.any():
            continue
        t, _ = best_threshold(d[~test], y[~test])
        accs.append(accuracy_at(d[test], y[test], t))
        ths.append(t)
    if not accs:
        return {"mean": float("nan"), "std": float("nan"), "threshold": float("nan"),
                "folds": 0}
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)),
            "threshold": float(np.mean(ths)), "folds": len(accs)}


def verification_summary(distances, labels, threshold: float = 0.6, n_folds: int = 10) -> dict:
    """Everything reported for one verification condition (distances of the pairs)."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    cv = cv_accuracy(d, y, n_folds)
    return {"pairs": int(d.size), "same": int(y.sum()), "different": int((~y).sum()),
            "accuracy_at_threshold": accuracy_at(d, y, threshold), "threshold": threshold,
            "accuracy_cv": cv["mean"], "accuracy_cv_std": cv["std"],
            "cv_threshold": cv["threshold"], "cv_folds": cv["folds"],
            "auc": roc_auc(-d, y),
            "mean_distance_same": float(d[y].mean()) if y.any() else None,
            "mean_distance_different": float(d[~y].mean()) if (~y).any() else None}
