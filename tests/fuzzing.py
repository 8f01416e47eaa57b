"""Hypothesis settings for the property tests of hostile input (manifests, archives).

``PLAT_FUZZ_PROFILE=long`` runs many more examples. The settings are applied per
test (``@fuzz_settings(...)``), never loaded globally, so other modules' profiles
are left alone.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("PLAT_FUZZ_PROFILE", "") == "long"


def fuzz_settings(name: str, *, fast: int, long: int) -> settings:
    """The registered profile ``plat-fuzz-<name>``: ``fast`` examples, or ``long`` ones
    with PLAT_FUZZ_PROFILE=long; no deadline (the machine is shared)."""
    profile = f"plat-fuzz-{name}-{'long' if LONG else 'fast'}"
    settings.register_profile(
        profile,
        max_examples=long if LONG else fast,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=not LONG,
        print_blob=True,
    )
    return settings.get_profile(profile)
