"""Training logs: every scalar and image grid goes to one tensorboardX writer (``<run>/logs``,
which ``tensorboard --logdir <run>/logs`` serves); image grids also go to an HTML page
(``<run>/web/index.html``) and the loss lines to ``loss_log.txt``."""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict

import numpy as np
import torch
from PIL import Image

from face3d.fileio import atomic_write
from util.html import HTMLPage

_IMAGE_NAME = re.compile(r"epoch(\d+)_iter(\d+)_(.+)\.png$")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).numpy()


def image_row(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (H, B*W + 2*(B-1), 3) uint8, side by side with 2-px gaps
    (what torchvision's make_grid would give, without importing torchvision)."""
    x = to_uint8(images)
    gap = np.full((x.shape[1], 2, 3), 255, np.uint8)
    parts = []
    for i, im in enumerate(x):
        parts += ([gap] if i else []) + [im]
    return np.concatenate(parts, 1)


class Visualizer:
    def __init__(self, opt, run_dir: str):
        from tensorboardX import SummaryWriter

        self.opt = opt
        self.run_dir = run_dir
        self.writer = SummaryWriter(os.path.join(run_dir, "logs"))
        self.web_dir = os.path.join(run_dir, "web")
        self.log_path = os.path.join(run_dir, "loss_log.txt")
        # (epoch, iteration, {visual: image file}) of every display step, also those of
        # earlier runs of this experiment (--continue_train keeps the page's history).
        self.shown: list[tuple[int, int, dict[str, str]]] = self._earlier_images()
        with open(self.log_path, "a") as f:
            f.write(f"================ Training ({time.strftime('%c')}) ================\n")

    def _earlier_images(self):
        img_dir = os.path.join(self.web_dir, "images")
        steps = defaultdict(dict)
        if os.path.isdir(img_dir):
            for fname in sorted(os.listdir(img_dir)):
                m = _IMAGE_NAME.match(fname)
                if m:
                    steps[(int(m[1]), int(m[2]))][m[3]] = os.path.join(img_dir, fname)
        return [(e, it, files) for (e, it), files in sorted(steps.items(), key=lambda k: k[0][1])]

    def scalars(self, values: dict[str, float], iteration: int):
        for k, v in values.items():
            self.writer.add_scalar(k, v, iteration)

    def loss_line(self, epoch: int, iteration: int, values: dict[str, float]) -> str:
        """Append one line to loss_log.txt (flushed as it is written: a killed run loses at
        most the line in flight)."""
        line = f"(epoch {epoch}, iter {iteration}) " + " ".join(
            f"{k}: {v:.3f}" for k, v in values.items())
        with open(self.log_path, "a") as f:
            f.write(line + "\n")
        return line

    def images(self, visuals: dict[str, torch.Tensor], epoch: int, iteration: int):
        """One grid per visual in tensorboard; one row per display step on the HTML page.
        ``visuals``: name -> (B, 3, H, W) images in [-1, 1]."""
        n = min(4, next(iter(visuals.values())).shape[0])
        files = {}
        img_dir = os.path.join(self.web_dir, "images")
        os.makedirs(img_dir, exist_ok=True)
        for name, t in visuals.items():
            row = image_row(t[:n])
            self.writer.add_image(f"images/{name}", row, iteration, dataformats="HWC")
            path = os.path.join(img_dir, f"epoch{epoch:03d}_iter{iteration:08d}_{name}.png")
            # On the page the photos of a batch are stacked in one column per visual. Written
            # atomically: a run killed mid-write leaves no half PNG on the page.
            with atomic_write(path, "wb") as f:
                Image.fromarray(to_uint8(t[:n]).reshape(-1, t.shape[-1], 3)).save(f, "PNG")
            files[name] = path
        self.shown = [s for s in self.shown if s[1] != iteration] + [(epoch, iteration, files)]
        if not self.opt.no_html:
            self.write_html(list(visuals))

    def write_html(self, names: list[str]):
        page = HTMLPage(self.web_dir, f"Experiment {self.opt.name}", refresh=60)
        page.text("Each column stacks the first photos of the batch; newest step first.")
        rows = [[(files.get(n), f"{n} (epoch {e}, iter {it})") for n in names]
                for e, it, files in reversed(self.shown)]
        page.table(names, rows, width=160)
        page.save()

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()
