"""Hypothesis profiles for the protocol suite.

``ci`` (the default) keeps the whole suite well under a minute on a shared
2-core machine; ``thorough`` is for hunting: ``HYPOTHESIS_PROFILE=thorough``;
``noshrink`` reports the first failure found without minimising it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,  # the machine is noisy; a deadline would flake
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)
settings.register_profile(
    "thorough",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Find failures quickly, without shrinking them (for debugging a red run).
settings.register_profile(
    "noshrink",
    parent=settings.get_profile("ci"),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
