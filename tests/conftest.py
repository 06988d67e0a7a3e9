"""Shared pytest configuration. One section per concern; add new fixtures in a section of their own."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

# --- property-based tests (tests/test_properties.py, tests/random_aes.py) ------------------------------
#
# "fast" is the default (CI): derandomized, so every run tries the same examples and a red build can
# be reproduced locally; 50 examples per property, 550 in all. "long" explores: 400 examples
# per property, fresh ones each run (HYPOTHESIS_PROFILE=long python -m pytest -m properties).
# A model is built, traced and converted per example (about 0.1 s): no deadline, and generation may
# be slow. One failure per test is shrunk and reported: errors raised inside fx-generated code carry
# a new file name per GraphModule, which hypothesis would count as that many distinct bugs. "fast"
# skips the explain phase (a coverage trace of the failing example), which doubled a failing test's time.

_SLOW_EXAMPLES = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "fast",
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    print_blob=True,
    report_multiple_bugs=False,
    suppress_health_check=_SLOW_EXAMPLES,
)
settings.register_profile(
    "long",
    max_examples=400,
    deadline=None,
    print_blob=True,
    report_multiple_bugs=False,
    suppress_health_check=_SLOW_EXAMPLES,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "properties: property-based tests over random autoencoders (select with -m properties)"
    )


# --- a trained autoencoder on real data (tests/digits.py) --------------------------------------------------


@pytest.fixture(scope="session")
def trained() -> tuple[torch.nn.Module, torch.Tensor]:
    """A small MLP AE trained on 400 of scikit-learn's digits (logits out), and those digits."""
    pytest.importorskip("sklearn")
    from tests.digits import digits, trained_ae

    data = digits()
    return trained_ae(data), data
