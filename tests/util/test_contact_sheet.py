"""The contact sheet shows, per yaw, the whole-image render, its masks, the symmetry fill
and the face-only render."""

from __future__ import annotations

import numpy as np

from util import contact_sheet as cs


def test_sheet_rows_and_masks(fitter, example_photos):
    size, yaws = 96, [-30.0, 30.0]
    sheet = cs.contact_sheet(example_photos["astronaut.png"], yaws, size, fitter=fitter)
    assert sheet.shape == (4 * size + 3 * 2, 3 * size + 2 * 2, 3) and sheet.dtype == np.uint8

    def tile(row, col):
        y, x = row * (size + 2), col * (size + 2)
        return sheet[y:y + size, x:x + size]

    for col in (1, 2):
        masks = tile(1, col).reshape(-1, 3)
        colours = {tuple(c) for c in masks}
        assert cs._STRETCHED in colours and cs._SEEN in colours  # revealed band, seen rest
        # the whole-image render covers the crop; the face-only one leaves the grey fill
        # (mid-grey: 127 or 128 after rounding) around the face
        corner = tile(3, col)[-8:, -8:].reshape(-1, 3)  # (labels sit top-left)
        assert (np.abs(corner.astype(int) - 128) <= 1).all()
        assert np.abs(tile(0, col)[-8:, -8:].astype(int) - 128).max() > 2
