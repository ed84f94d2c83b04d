"""The built-in ``example`` photos: public-domain portraits that ship inside registry packages
(scikit-image's astronaut, Eileen Collins; matplotlib's Grace Hopper), so demos and tests need
no committed images and no download."""

from __future__ import annotations

import os

import numpy as np

from face3d.fileio import atomic_write


def example_images() -> dict[str, np.ndarray]:
    """name -> HxWx3 uint8 RGB photo."""
    import matplotlib
    import skimage.data
    from PIL import Image

    hopper = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    with Image.open(hopper) as im:
        hopper_rgb = np.asarray(im.convert("RGB"))
    return {"astronaut.png": skimage.data.astronaut(), "grace_hopper.jpg": hopper_rgb}


def materialize_examples(folder: str) -> list[str]:
    """Write the example photos into ``folder`` (once) plus ``file_list.txt``; returns the
    relative names."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    names = []
    for name, rgb in example_images().items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            # The temp file has no extension to tell PIL the format: name it.
            fmt = Image.registered_extensions()[os.path.splitext(name)[1].lower()]
            with atomic_write(path, "wb") as f:
                Image.fromarray(rgb).save(f, format=fmt, quality=95)
        names.append(name)
    with atomic_write(os.path.join(folder, "file_list.txt")) as f:
        f.write("".join(n + "\n" for n in names))
    return names
