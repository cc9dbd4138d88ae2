"""Shared pytest set-up: hypothesis profiles for the property tests, and
torch's thread count restored after every test (training sets it).

``ci`` (the default): 200 examples, the same ones on every run (derandomized),
so the suite stays quick and never flakes. ``thorough``: 5,000 random
examples, for a change to the layer:

    .venv/bin/python -m pytest -q tests/test_quantize_property.py --hypothesis-profile=thorough
"""

import pytest
import torch
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=200, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=5000, **_COMMON)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
