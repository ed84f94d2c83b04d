"""How a face is rendered for the generator: one value, built once from the options and
passed whole to every renderer call (training pairs, test-time views, evaluation)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

BACKGROUNDS = ("avg", "grey")
RENDER_SCOPES = ("image", "face")


@dataclass(frozen=True)
class RenderSettings:
    """Render settings of one run; a checkpoint records them so inference renders the
    generator's input the way it was trained.

    erode_kernel:   erode the rendered face mask by this many pixels (odd; 0 = none) so the
                    blurry mesh border does not leak into the input;
    background:     fill outside the face: its mean colour ('avg', the original's avg_BG)
                    or mid-grey ('grey');
    symmetric_fill: colour texels hidden in the source view from their mirror-symmetric
                    point when that one was visible;
    render_scope:   'image' rotates the whole crop (face, head, hair, neck, background:
                    ``render.whole_image``); 'face' the face mesh alone on the background
                    fill, as the original did. The dataclass default is 'face' so that
                    settings saved before the option existed mean what they meant; the
                    command line's default is 'image'.
    face_depth:     with 'image', the face's depth about its centre is scaled by this
                    (``render.whole_image.FACE_DEPTH`` is the calibrated value, the command
                    line's default). The dataclass default is 0.8, the value before
                    2026-12-02, so that settings saved before the field existed render as
                    they were trained.
    """

    erode_kernel: int = 19
    background: str = "avg"
    symmetric_fill: bool = False
    render_scope: str = "face"
    face_depth: float = 0.8

    def __post_init__(self):
        if not self.face_depth > 0:
            raise ValueError(f"face_depth must be > 0, got {self.face_depth}")
        if self.erode_kernel < 0:
            raise ValueError(f"erode_kernel must be >= 0, got {self.erode_kernel}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; choose one of: "
                             f"{', '.join(BACKGROUNDS)}")
        if self.render_scope not in RENDER_SCOPES:
            raise ValueError(f"unknown render_scope {self.render_scope!r}; choose one of: "
                             f"{', '.join(RENDER_SCOPES)}")

    @classmethod
    def from_options(cls, opt) -> RenderSettings:
        """The settings named by a run's options (``--erode_kernel`` ...); every field is a
        flag of the same name."""
        return cls(**{f.name: getattr(opt, f.name) for f in dataclasses.fields(cls)
                      if hasattr(opt, f.name)})

    @classmethod
    def from_dict(cls, d: dict) -> RenderSettings:
        """From ``as_dict()`` (e.g. saved with a model); unknown keys are ignored so that a
        file written by a newer version with more fields still loads."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> RenderSettings:
        return dataclasses.replace(self, **changes)
