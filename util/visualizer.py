"""Training logs: every scalar and image grid goes to one tensorboardX writer; image grids
also go to an HTML page (``<run>/web/index.html``) and the loss lines to ``loss_log.txt``."""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from util.html import HTMLPage


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).numpy()


class Visualizer:
    def __init__(self, opt, run_dir: str):
        from tensorboardX import SummaryWriter

        self.opt = opt
        self.run_dir = run_dir
        self.writer = SummaryWriter(os.path.join(run_dir, "logs"))
        self.web_dir = os.path.join(run_dir, "web")
        self.log_path = os.path.join(run_dir, "loss_log.txt")
        self.shown: list[tuple[int, int, list[str]]] = []  # (epoch, iteration, image files)
        with open(self.log_path, "a") as f:
            f.write(f"================ Training ({time.strftime('%c')}) ================\n")

    def scalars(self, values: dict[str, float], iteration: int):
        for k, v in values.items():
            self.writer.add_scalar(k, v, iteration)

    def loss_line(self, epoch: int, iteration: int, values: dict[str, float]) -> str:
        line = f"(epoch {epoch}, iter {iteration}) " + " ".join(
            f"{k}: {v:.3f}" for k, v in values.items())
        with open(self.log_path, "a") as f:
            f.write(line + "\n")
        return line

    def images(self, visuals: dict[str, torch.Tensor], epoch: int, iteration: int):
        """One grid per visual in tensorboard; one row per display step on the HTML page.
        ``visuals``: name -> (B, 3, H, W) images in [-1, 1]."""
        n = min(4, next(iter(visuals.values())).shape[0])
        files = []
        img_dir = os.path.join(self.web_dir, "images")
        os.makedirs(img_dir, exist_ok=True)
        for name, t in visuals.items():
            grid = make_grid(t[:n].detach().float().cpu().clamp(-1, 1), nrow=n,
                             normalize=True, value_range=(-1, 1))
            self.writer.add_image(name, grid, iteration)
            path = os.path.join(img_dir, f"iter{iteration:08d}_{name}.png")
            Image.fromarray(to_uint8(t[:n]).reshape(-1, t.shape[-1], 3)).save(path)
            files.append(path)
        self.shown.append((epoch, iteration, files))
        if not self.opt.no_html:
            self.write_html(list(visuals))

    def write_html(self, names: list[str]):
        page = HTMLPage(self.web_dir, f"Experiment {self.opt.name}", refresh=60)
        page.text("Each column stacks the first photos of the batch; newest step first.")
        rows = [[(f, f"{names[i]} (epoch {e}, iter {it})") for i, f in enumerate(files)]
                for e, it, files in reversed(self.shown)]
        page.table(names, rows, width=160)
        page.save()

    def close(self):
        self.writer.close()
