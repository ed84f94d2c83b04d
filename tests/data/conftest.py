"""The data tests share the synthetic fits and fake fitter of tests/face3d (fit_samples.py)
and its hypothesis profile."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "face3d"))
