"""The BLAS product on strided views that the taps kernels call inside @njit code."""
import numpy as np
import pytest
from numba import njit

from numconv.kernels.cpu._gemm import gemm


@njit(cache=True)
def _gemm(a, b, c, beta):
    gemm(a, b, c, beta)


def _operand(rng, rows, cols, dtype, transposed):
    """A (rows, cols) view with a leading dimension longer than its width, or the transpose of
    such a view: never a contiguous array."""
    if transposed:
        return rng.standard_normal((cols + 2, rows + 3)).astype(dtype)[1:cols + 1, 2:rows + 2].T
    return rng.standard_normal((rows + 3, cols + 4)).astype(dtype)[2:rows + 2, 3:cols + 3]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("shape", [(5, 7, 9), (1, 4, 3), (4, 1, 6), (3, 5, 1), (1, 1, 1),
                                   (6, 0, 4), (0, 3, 2)])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_gemm_on_strided_and_transposed_views_matches_numpy(dtype, ta, tb, shape, beta):
    M, K, N = shape
    rng = np.random.default_rng(M * 100 + K * 10 + N)
    a, b = _operand(rng, M, K, dtype, ta), _operand(rng, K, N, dtype, tb)
    whole = rng.standard_normal((M + 2, N + 5)).astype(dtype)
    c = whole[1:M + 1, 2:N + 2]
    before = whole.copy()
    want = a.astype(np.float64) @ b.astype(np.float64) + beta * c
    _gemm(a, b, c, beta)
    np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    outside = np.ones(whole.shape, bool)
    outside[1:M + 1, 2:N + 2] = False
    assert np.array_equal(whole[outside], before[outside])     # nothing written outside c


def test_gemm_beta_zero_ignores_what_c_held():
    """beta 0 overwrites c, NaNs included (the taps kernels' first product lands on np.empty)."""
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 4), np.float32)
    c = np.full((2, 4), np.nan, np.float32)
    _gemm(a, b, c, 0.0)
    assert np.array_equal(c, np.full((2, 4), 3, np.float32))


def test_gemm_refuses_operands_that_do_not_chain():
    with pytest.raises(ValueError, match="do not chain"):
        _gemm(np.ones((2, 3)), np.ones((4, 5)), np.ones((2, 5)), 0.0)
    with pytest.raises(ValueError, match="do not chain"):
        _gemm(np.ones((2, 3)), np.ones((3, 5)), np.ones((2, 4)), 0.0)
