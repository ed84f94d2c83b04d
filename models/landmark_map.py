"""Landmark maps: the rotatespade generator's conditioning (``--label_nc 5``).

The 68 iBUG landmarks are drawn as curves, one channel per facial part (jaw, brows, nose,
eyes, mouth), either blurred into heatmaps of width ``--heatmap_size`` or, with
``--no_gaussian_landmark``, as hard 1-px lines.

``label_mask`` is the region that ``--label_mask`` blanks in the generator's input render.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# (channel, first, last, closed) per curve of the iBUG 68-point layout.
_CURVES = (
    (0, 0, 16, False),                        # jaw line
    (1, 17, 21, False), (1, 22, 26, False),   # brows
    (2, 27, 30, False), (2, 31, 35, False),   # nose bridge, nostrils
    (3, 36, 41, True), (3, 42, 47, True),     # eyes
    (4, 48, 59, True), (4, 60, 67, True),     # outer and inner lips
)
NUM_PARTS = 5


def landmark_map(landmarks, size: int, label_nc: int = NUM_PARTS, heatmap_size: float = 3.0,
                 gaussian: bool = True) -> torch.Tensor:
    """(B, 68, 2) pixel landmarks (tensor or array) -> (B, label_nc, size, size) float map in
    [0, 1] on the landmarks' device. ``label_nc`` 1 merges all parts into one channel.

    The curves are drawn on the host (OpenCV, anti-aliased). The blur, the costly part, runs
    where the landmarks are: OpenCV on the CPU, :func:`gaussian_blur` (the same blur in
    PyTorch, equal to float rounding) on a GPU, which spares training a host-side blur of
    every pair's two maps."""
    if label_nc not in (1, NUM_PARTS):
        raise ValueError(f"--label_nc must be {NUM_PARTS} (one channel per facial part) or 1, "
                         f"got {label_nc}")
    device = landmarks.device if isinstance(landmarks, torch.Tensor) else "cpu"
    pts = torch.as_tensor(landmarks).detach().float().cpu().numpy()
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (B, 68, 2), got {tuple(pts.shape)}")
    out = np.zeros((len(pts), label_nc, size, size), np.float32)
    shift = 4  # sub-pixel drawing precision
    for b, p in enumerate(np.round((pts - 0.5) * (1 << shift)).astype(np.int32)):
        for channel, lo, hi, closed in _CURVES:
            c = channel if label_nc == NUM_PARTS else 0
            cv2.polylines(out[b, c], [p[lo:hi + 1]], closed, 1.0, 1, cv2.LINE_AA, shift)
    blur = gaussian and heatmap_size > 0
    on_cpu = torch.device(device).type == "cpu"
    if blur and on_cpu:  # OpenCV's blur is the faster one here
        for image in out:
            for c, channel in enumerate(image):
                blurred = cv2.GaussianBlur(channel, (0, 0), heatmap_size)
                image[c] = blurred / max(float(blurred.max()), 1e-6)
    maps = torch.from_numpy(out).to(device)
    if blur and not on_cpu:
        maps = gaussian_blur(maps, heatmap_size)
        maps = maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return maps


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) float images blurred as ``cv2.GaussianBlur(image, (0, 0), sigma)`` blurs a
    float image: the same kernel (``cv2.getGaussianKernel``, 2 * round(4 sigma) + 1 taps)
    and border (BORDER_REFLECT_101), as a separable convolution on the images' device."""
    B, C, H, W = images.shape
    ksize = int(round(sigma * 4 * 2 + 1)) | 1  # OpenCV's size for float images
    half = ksize // 2
    kernel = torch.from_numpy(cv2.getGaussianKernel(ksize, sigma).astype(np.float32))
    kernel = kernel.to(images.device).view(1, 1, ksize)
    x = images.reshape(B * C, H, W)
    for dim, n in ((2, W), (1, H)):
        # reflect-101 indices that stay valid when the kernel is wider than the image
        idx = torch.from_numpy(np.pad(np.arange(n), half, mode="reflect")).to(images.device)
        x = x.index_select(dim, idx).movedim(dim, -1)
        rows = x.shape[:-1]
        x = F.conv1d(x.reshape(-1, 1, x.shape[-1]), kernel).view(*rows, n).movedim(-1, dim)
    return x.reshape(B, C, H, W)


# The curves the original's --label_mask cut out of the render: the chin (jaw points 7-9)
# and the lower nose (31-35), where the rendered mesh is least reliable.
_MASK_CURVES = ((7, 9), (31, 35))


def label_mask(landmarks, size: int, radius: float) -> torch.Tensor:
    """(B, 68, 2) pixel landmarks -> (B, 1, size, size) bool: pixels closer than ``radius``
    px to the chin or lower-nose curve (``--label_mask``; radius = 3 * --heatmap_size, the
    support of the original's Gaussian curve heatmaps)."""
    device = landmarks.device if isinstance(landmarks, torch.Tensor) else "cpu"
    pts = torch.as_tensor(landmarks).detach().float().cpu().numpy()
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (B, 68, 2), got {tuple(pts.shape)}")
    out = np.zeros((len(pts), 1, size, size), bool)
    shift = 4
    for b, p in enumerate(np.round((pts - 0.5) * (1 << shift)).astype(np.int32)):
        curves = np.full((size, size), 255, np.uint8)
        for lo, hi in _MASK_CURVES:
            cv2.polylines(curves, [p[lo:hi + 1]], False, 0, 1, cv2.LINE_8, shift)
        dist = cv2.distanceTransform(curves, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        out[b, 0] = dist < radius
    return torch.from_numpy(out).to(device)
