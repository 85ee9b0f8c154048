"""Fixtures shared by the test files."""
import numba
import pytest


@pytest.fixture
def restore_threads():
    """Put Numba's thread count back after a test that changes it."""
    n = numba.get_num_threads()
    yield
    numba.set_num_threads(n)
