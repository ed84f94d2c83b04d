"""The hypothesis profile of the property-based tests (synthetic fits: fit_samples.py)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# "rr" keeps each property test to a few seconds on 2 busy cores; HYPOTHESIS_PROFILE=thorough
# runs many more examples (e.g. before a release).
_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                       HealthCheck.too_slow])
settings.register_profile("rr", max_examples=60, **_SETTINGS)
settings.register_profile("thorough", max_examples=2000, **_SETTINGS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "rr"))
