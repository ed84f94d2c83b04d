"""Test-time options: the base flags plus what test.py needs."""

from __future__ import annotations

from options.base_options import BaseOptions


class TestOptions(BaseOptions):
    """Rotate faces with a trained model (or render only, without one)."""

    is_train = False
