"""Shared pytest set-up: hypothesis profiles for the property tests.

``ci`` (the default): 200 examples, the same ones on every run (derandomized),
so the suite stays quick and never flakes. ``thorough``: 5,000 random
examples, for a change to the layer:

    .venv/bin/python -m pytest -q tests/test_quantize_property.py --hypothesis-profile=thorough
"""

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=200, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=5000, **_COMMON)
settings.load_profile("ci")
