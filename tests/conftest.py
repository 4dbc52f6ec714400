import numpy as np
import pytest

DTYPES = [np.float32, np.float64]

# Tolerances for comparing a fast backend with the reference in each dtype.
TOL = {
    np.float32: dict(rtol=1e-4, atol=1e-5),
    np.float64: dict(rtol=1e-10, atol=1e-12),
}


@pytest.fixture
def rng():
    return np.random.RandomState(0)
