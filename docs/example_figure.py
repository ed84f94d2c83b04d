"""The README's picture, made from a test.py results folder (real outputs, nothing drawn):
one row per photo, the aligned photo then its outputs at each yaw of the manifest; in
generator mode a second row holds the renders the generator was given.

    bash experiments/v100_test.sh && python docs/example_figure.py      # the main job
    python docs/example_figure.py --results results/NAME --out docs/example_renders.png
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from face3d.fileio import atomic_write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GAP = 4  # white pixels between tiles


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def figure(results: Path) -> np.ndarray:
    with open(results / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{results / 'manifest.csv'} lists no outputs")
    photos: dict[str, list[dict]] = {}
    for r in rows:
        photos.setdefault(r["input"], []).append(r)
    lines = []
    for views in photos.values():
        views.sort(key=lambda r: float(r["yaw"]))
        outputs = [_read(results / r["output"]) for r in views]
        aligned = results / Path(views[0]["output"]).parent / "aligned.png"
        first = _read(aligned) if aligned.exists() else np.full_like(outputs[0], 255)
        lines.append([first, *outputs])
        renders = [results / r["output"].replace(".png", "_render.png") for r in views]
        if all(p.exists() for p in renders):  # generator mode: what G was given
            lines.append([np.full_like(first, 255), *map(_read, renders)])
    size = lines[0][0].shape[0]
    width = max(len(line) for line in lines) * (size + GAP) - GAP
    canvas = np.full((len(lines) * (size + GAP) - GAP, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        for j, tile in enumerate(line):
            y, x = i * (size + GAP), j * (size + GAP)
            canvas[y:y + size, x:x + size] = tile[:size, :size]
    return canvas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="docs/example_figure.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(REPO / "results" / "rotatespade_example"),
                    help="a test.py results folder (holding manifest.csv)")
    ap.add_argument("--out", default=str(REPO / "docs" / "example_renders.png"),
                    help="the PNG to write")
    args = ap.parse_args(argv)
    try:
        canvas = figure(Path(args.results))
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with atomic_write(args.out, "wb") as f:
        Image.fromarray(canvas).save(f, format="PNG", optimize=True)
    print(f"wrote {args.out} ({canvas.shape[1]}x{canvas.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
