"""Reading photos robustly: every odd-but-valid image becomes 8-bit RGB, every bad one a
one-line ``ImageReadError``."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse decompression bombs explicitly with our own message instead of PIL's warning.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = None


class ImageReadError(ValueError):
    """An input file that is not a usable image; the message says why in one line."""


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode (L, LA, P, RGBA, I;16, I, F, CMYK ...) to an HxWx3 uint8 array."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        # 16-bit and float images: use the full range of the data type, not the data's own
        # min/max, so a dark 16-bit photo stays dark.
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        if img.mode == "F" and a.max() <= 1.0:
            hi = 1.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency onto white rather than dropping alpha (which can leave
        # garbage colour in fully transparent pixels).
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    if img.mode != "RGB":  # convert() would copy even an RGB image: 190 MB at 8000x8000
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a photo as an HxWx3 uint8 RGB array, applying its EXIF orientation.

    Raises ``ImageReadError`` with a one-line reason for a missing, empty, truncated
    or non-image file, or one too large to decode.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageReadError(f"file not found: {path}")
    if os.path.isdir(path):
        raise ImageReadError(f"is a directory, not an image: {path}")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"empty file: {path}")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageReadError(f"image too large ({w}x{h} px > {MAX_PIXELS} px): {path}")
            img.load()  # decode now so truncation is reported here
            ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of a huge photo
            return to_rgb8(img)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"not an image (unrecognised format): {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"unreadable or truncated image ({e}): {path}") from None


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")


def list_images(folder: str, exclude: str | None = None) -> list[str]:
    """Image files under ``folder`` (recursive, following symlinks, hidden folders and the
    ``exclude`` folder skipped), as sorted paths relative to ``folder``.

    A folder reached twice through symlinks (a loop such as ``folder/loop -> ..``, or two
    links to one folder) is listed once, at its first path in sorted order."""
    skip = os.path.abspath(exclude) if exclude else None
    seen: set[tuple[int, int]] = set()
    rel = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:  # only when its parent listed it before pruning
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        keep = []
        for d in sorted(dirs):
            path = os.path.join(root, d)
            if d.startswith(".") or os.path.abspath(path) == skip:
                continue
            try:
                st = os.stat(path)
            except OSError:  # a dangling link
                continue
            if (st.st_dev, st.st_ino) not in seen:
                keep.append(d)
        dirs[:] = keep
        rel += [os.path.relpath(os.path.join(root, f), folder) for f in sorted(files)
                if f.lower().endswith(IMAGE_EXTENSIONS)]
    return rel


def write_png(array: np.ndarray, path: str) -> str:
    """An HxWx3 uint8 RGB array as a PNG, whole file or none (a killed run never leaves a
    truncated image); returns ``path``."""
    return _write_whole(path, Image.fromarray(array), format="PNG")


def write_sweep_gif(frames: np.ndarray, path: str, frame_ms: int) -> str:
    """Frames (N, H, W, 3) uint8 of a sweep as a looping GIF that goes there and back,
    whole file or none; returns ``path``."""
    images = [Image.fromarray(a) for a in np.concatenate([frames, frames[-2:0:-1]])]
    return _write_whole(path, images[0], format="GIF", save_all=True,
                        append_images=images[1:], duration=frame_ms, loop=0)


def _write_whole(path: str, image: Image.Image, **save) -> str:
    """``image.save(**save)`` encoded in memory, then written atomically to ``path``."""
    from face3d.fileio import atomic_write

    buffer = io.BytesIO()
    image.save(buffer, **save)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())
    return path
