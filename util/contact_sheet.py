"""A contact sheet of one photo turned through a range of yaws, to eyeball the renderer.

    python -m util.contact_sheet --img PATH --out sheet.png     (no --img: the astronaut)

Fits the photo with MediaPipe, aligns it to a ``--crop_size`` crop and turns it to each of
``--yaws`` (its pitch and roll kept) with the photo's texture. Rows:

1. the whole-image renders (``--render_scope image``: head, hair, neck and background
   turn with the face; smeared texture where the photo did not see the surface); the
   first column is the aligned input with its fitted pose;
2. what the generator is told about them: grey = seen in the photo, red = hidden in the
   photo, yellow = hidden but its mirror point was seen (what the symmetry fill repairs),
   blue = stretched (revealed behind the turning head, or from outside the crop); the
   first column shows the fitted mesh;
3. the whole-image renders with the symmetry-aware fill;
4. the face-only renders (``--render_scope face``, the original's) for comparison.

Runs offline on the CPU (or ``--device cuda``).
"""

from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np
import torch

from face3d.cli import ArgumentParser, OutputFolderError, output_folder
from face3d.fileio import atomic_write
from util.checkpoint import inside_pretrained
from util.visualizer import to_uint8

DEFAULT_YAWS = "-60,-45,-30,-15,0,15,30,45,60"
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# RGB colours of row 2
_SEEN = (110, 110, 110)
_HIDDEN = (230, 40, 40)
_FILLED = (250, 220, 40)
_STRETCHED = (60, 120, 230)


def _label(tile: np.ndarray, text: str, row: int = 0) -> None:
    """Small white text on a dark box at the tile's top-left, line ``row`` (in place)."""
    scale = max(0.35, tile.shape[0] / 640)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), base = cv2.getTextSize(text, font, scale, 1)
    (_, line_h), line_base = cv2.getTextSize("Ag", font, scale, 1)  # one height per line
    y = 3 + (row + 1) * (line_h + line_base + 3)
    cv2.rectangle(tile, (1, y - h - 3), (min(tile.shape[1] - 1, w + 6), y + base - 1),
                  (0, 0, 0), -1)
    cv2.putText(tile, text, (4, y - 1), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _mask_tile(coverage, hidden, filled, stretched) -> np.ndarray:
    """(1, H, W) float masks -> (H, W, 3) uint8 picture of seen / hidden / fillable /
    stretched."""
    m, h, f, s = (t[0].bool().cpu().numpy() for t in (coverage, hidden, filled, stretched))
    out = np.zeros((*m.shape, 3), np.uint8)
    out[m] = _SEEN
    out[s] = _STRETCHED
    out[h] = _HIDDEN
    out[f] = _FILLED
    return out


def contact_sheet(rgb: np.ndarray, yaws, crop_size: int = 256, device: str = "cpu",
                  fitter=None) -> np.ndarray:
    """The sheet (H, W, 3) uint8 RGB for a photo (HxWx3 uint8 RGB)."""
    from face3d.align import align
    from face3d.draw import draw_fit
    from face3d.fitter import MediaPipeFitter
    from models.inference import face_tensors, rotate
    from render.renderer import FaceMesh
    from render.settings import RenderSettings
    from render.whole_image import FACE_DEPTH

    if fitter is None:
        with MediaPipeFitter() as fitter:
            fit = fitter.fit(rgb)
    else:
        fit = fitter.fit(rgb)
    crop, fit, _ = align(rgb, fit, crop_size)
    face = face_tensors(crop, fit, device)
    poses = [(float(y), None) for y in yaws]  # None: the photo's own pitch
    mesh = FaceMesh.mediapipe(device=device)
    whole = RenderSettings(erode_kernel=0, background="grey", render_scope="image",
                           face_depth=FACE_DEPTH)
    plain = rotate(face, poses, mesh, whole)
    fill = rotate(face, poses, mesh, whole.replace(symmetric_fill=True))
    face_only = rotate(face, poses, mesh, whole.replace(render_scope="face"))

    rows = [[crop.copy()], [draw_fit(crop, fit)], [np.full_like(crop, 40)],
            [np.full_like(crop, 40)]]
    _label(rows[0][0], f"input yaw {fit.yaw:+.0f} pitch {fit.pitch:+.0f}")
    _label(rows[1][0], "fitted mesh")
    for i, text in enumerate(["rows:", "1 whole image", "2 grey seen", "  red hidden",
                              "  yellow mirror-fillable", "  blue stretched",
                              "3 symmetry fill"]):
        _label(rows[2][0], text, i)
    _label(rows[3][0], "4 face only (original)")
    plain_u8, fill_u8 = to_uint8(plain["image"]), to_uint8(fill["image"])
    face_u8 = to_uint8(face_only["image"])
    for i, y in enumerate(yaws):
        hidden_px = int(plain["hidden"][i].sum())
        filled_px = int(fill["filled"][i].sum())
        stretched = float(plain["stretched"][i].mean())
        tiles = [np.ascontiguousarray(plain_u8[i]),
                 _mask_tile(plain["coverage"][i], plain["hidden"][i], fill["filled"][i],
                            plain["stretched"][i]),
                 np.ascontiguousarray(fill_u8[i]), np.ascontiguousarray(face_u8[i])]
        _label(tiles[0], f"yaw {float(y):+g}")
        _label(tiles[1], f"hidden {hidden_px} px")
        _label(tiles[1], f"stretched {100 * stretched:.0f}%", 1)
        _label(tiles[2], f"filled {filled_px} px")
        _label(tiles[3], "face only")
        for row, tile in zip(rows, tiles):
            row.append(tile)
    gap = np.full((crop_size, 2, 3), 255, np.uint8)

    def join(tiles):
        out = [tiles[0]]
        for t in tiles[1:]:
            out += [gap, t]
        return np.concatenate(out, 1)

    lines = [join(r) for r in rows]
    hgap = np.full((2, lines[0].shape[1], 3), 255, np.uint8)
    out = [lines[0]]
    for line in lines[1:]:
        out += [hgap, line]
    return np.concatenate(out, 0)


def _parse_yaws(text: str) -> list[float]:
    try:
        yaws = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--yaws: not a comma-separated list of numbers: "
                                         f"{text!r}") from None
    if not yaws or any(abs(y) > 90 for y in yaws):
        raise argparse.ArgumentTypeError("--yaws: give 1 or more angles within [-90, 90]")
    return yaws


def check_out(path: str) -> None:
    """An --out that cannot be written is refused before the (slow) fitting and rendering."""
    if inside_pretrained(path):
        raise OutputFolderError(f"--out {path}: inside pretrained/, the shipped model's folder")
    if os.path.isdir(path):
        raise OutputFolderError(f"--out {path}: is a folder; give an image file name, e.g. "
                                f"{os.path.join(path, 'sheet.png')}")
    if os.path.splitext(path)[1].lower() not in IMAGE_TYPES:
        raise OutputFolderError(f"--out {path}: give an image file name ending in one of "
                                f"{', '.join(IMAGE_TYPES)}")
    output_folder(os.path.dirname(os.path.abspath(path)), "--out's folder")


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m util.contact_sheet",
                        description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--img", help="photo to turn (default: the built-in astronaut)")
    ap.add_argument("--out", default="sheet.png",
                    help="image to write (.png, .jpg ...; its folder is created)")
    ap.add_argument("--crop_size", type=int, default=256, help="aligned crop size (px)")
    ap.add_argument("--yaws", type=_parse_yaws, default=_parse_yaws(DEFAULT_YAWS),
                    help="comma-separated target yaws in degrees, in [-90, 90] "
                         f"(default: {DEFAULT_YAWS})")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                    help="where to render: auto is cuda when available, else cpu")
    args = ap.parse_args(argv)
    if args.crop_size < 32:
        ap.error("--crop_size must be at least 32")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")

    try:
        check_out(args.out)
    except OutputFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from face3d.fitter import NoFaceError

    if args.img:
        from data.photos import find_photos
        from face3d.imageio import read_image

        try:  # a folder: its first photo
            rgb = read_image(find_photos(img=[args.img])[0].path)
        except (ValueError, OSError) as e:  # unreadable, not an image, an empty folder
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        from face3d.examples import example_images

        rgb = example_images()["astronaut.png"]
    try:
        sheet = contact_sheet(rgb, args.yaws, args.crop_size, device)
    except NoFaceError as e:
        print(f"error: {args.img or 'astronaut'}: {e}", file=sys.stderr)
        return 1
    ok, encoded = cv2.imencode(os.path.splitext(args.out)[1], sheet[:, :, ::-1])
    if not ok:
        print(f"error: --out {args.out}: OpenCV could not encode that format", file=sys.stderr)
        return 2
    try:  # whole file or none
        with atomic_write(args.out, "wb") as f:
            f.write(encoded.tobytes())
    except OSError as e:
        print(f"error: --out {args.out}: could not write it ({e.strerror or e})",
              file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
