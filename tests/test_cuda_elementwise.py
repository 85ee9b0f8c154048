"""The per-element functions the CUDA kernels are built from (numconv.kernels.elementwise), compiled
for the CPU with numba.njit and run as plain Python, against the reference: the same source
serves both devices, so it is checked on both (the GPU side in test_cuda_sim.py / test_cuda_ptx.py).
"""
import numpy as np
import pytest
from numba import njit

import numconv as nc
from numconv.kernels import elementwise, reference
from kernel_helpers import assert_close, away_from_zero, random_conv_case, random_pool_case

CPU = elementwise.compile_for(njit)
PY = {name: getattr(elementwise, name) for name in elementwise.__all__}


def _each(shape):
    return np.ndindex(*shape)


@pytest.mark.parametrize("impl", ["njit", "python"])
@pytest.mark.parametrize("seed", range(3))
def test_conv_elements_match_the_reference(seed, impl):
    f = CPU if impl == "njit" else PY
    rng = np.random.default_rng([seed, 11])
    case = random_conv_case(rng, nd=2, max_size=6)
    g = case.geometry
    x, w, b = case.arrays(rng, np.float64)
    dy = rng.standard_normal((g.N, g.O, g.OH, g.OW))
    opts = g.kernel_args()

    y, want = np.empty_like(dy), np.empty_like(dy)
    for n, o, i, j in _each(y.shape):
        y[n, o, i, j] = f["conv_output"](x, w, b, True, n, o, i, j, *opts)
    reference.conv2d_forward(want, x, w, b, *opts)
    assert_close(y, want, err_msg=str(case))

    dx, want = np.empty_like(x), np.empty_like(x)
    for n, c, ih, iw in _each(dx.shape):
        dx[n, c, ih, iw] = f["conv_input_grad"](dy, w, n, c, ih, iw, *opts)
    reference.conv2d_backward_input(want, dy, w, *opts)
    assert_close(dx, want, err_msg=str(case))

    total = g.N * g.OH * g.OW
    dwt, halves, want = np.empty_like(w), np.empty_like(w), np.empty_like(w)
    for o, c, m, k in _each(w.shape):
        dwt[o, c, m, k] = f["conv_weight_grad"](dy, x, o, c, m, k, 0, total, *opts)
        halves[o, c, m, k] = (f["conv_weight_grad"](dy, x, o, c, m, k, 0, total // 2, *opts)
                              + f["conv_weight_grad"](dy, x, o, c, m, k, total // 2, total, *opts))
    reference.conv2d_backward_weight(want, dy, x, *opts)
    assert_close(dwt, want, err_msg=str(case))
    assert_close(halves, want, err_msg=str(case))


@pytest.mark.parametrize("impl", ["njit", "python"])
@pytest.mark.parametrize("seed", range(3))
def test_pool_elements_match_the_reference(seed, impl):
    f = CPU if impl == "njit" else PY
    rng = np.random.default_rng([seed, 13])
    case = random_pool_case(rng, nd=2, max_size=6)
    g = case.geometry
    x = away_from_zero(rng, case.x_shape)
    dy = rng.standard_normal((g.N, g.C, g.OH, g.OW))
    win = g.window_args()
    pb, pr = g.pads[0][1], g.pads[1][1]

    y, idx = np.empty_like(dy), np.empty(dy.shape, np.int64)
    for n, c, i, j in _each(y.shape):
        y[n, c, i, j], idx[n, c, i, j] = f["max_window"](x, n, c, i, j, *win)
    ry, ridx = np.empty_like(dy), np.empty(dy.shape, np.int64)
    reference.maxpool2d_forward(ry, ridx, x, *win)
    assert_close(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    dx, rdx = np.empty_like(x), np.empty_like(x)
    for n, c, ih, iw in _each(x.shape):
        dx[n, c, ih, iw] = f["max_gather"](dy, idx, n, c, ih, iw, g.W, *win)
    reference.maxpool2d_backward(rdx, dy, idx, *win)
    assert_close(dx, rdx)

    for cip in (True, False):
        for n, c, i, j in _each(y.shape):
            y[n, c, i, j] = f["avg_window"](x, n, c, i, j, *win, pb, pr, cip)
        reference.avgpool2d_forward(ry, x, *win, pb, pr, cip)
        assert_close(y, ry)
        for n, c, ih, iw in _each(x.shape):
            dx[n, c, ih, iw] = f["avg_gather"](dy, n, c, ih, iw, g.H, g.W, *win, pb, pr, cip)
        reference.avgpool2d_backward(rdx, dy, *win, pb, pr, cip)
        assert_close(dx, rdx)

    for p in (1.0, 2.0, 3.0):
        for n, c, i, j in _each(y.shape):
            y[n, c, i, j] = f["lp_window"](x, n, c, i, j, p, *win)
        reference.lppool2d_forward(ry, x, p, *win)
        assert_close(y, ry)
        for n, c, ih, iw in _each(x.shape):
            dx[n, c, ih, iw] = f["lp_gather"](dy, x, y, n, c, ih, iw, p, *win)
        reference.lppool2d_backward(rdx, dy, x, y, p, *win)
        assert_close(dx, rdx)


@pytest.mark.parametrize("kind", nc.GLOBAL_KINDS)
def test_global_elements_match_the_reference(kind):
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 3, 4, 5))
    dy = rng.standard_normal((2, 3))
    code = elementwise.GLOBAL_KINDS[kind]
    y, idx = np.empty((2, 3)), np.zeros((2, 3), np.int64)
    for n, c in _each(y.shape):
        y[n, c], idx[n, c] = CPU["global_reduce"](x, n, c, code)
    ry, ridx = np.empty((2, 3)), np.zeros((2, 3), np.int64)
    reference.global_pool2d_forward(ry, ridx, x, kind)
    assert_close(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    dx, rdx = np.empty_like(x), np.empty_like(x)
    for n, c, ih, iw in _each(x.shape):
        dx[n, c, ih, iw] = CPU["global_spread"](dy, idx, n, c, ih, iw, 4, 5, code)
    reference.global_pool2d_backward(rdx, dy, idx, kind)
    assert_close(dx, rdx)


def test_float32_elements_stay_float32():
    """Accumulators start at the data's own zero: float32 data is summed in float32."""
    x = np.ones((1, 1, 3, 3), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    conv_output = elementwise.compile_for(njit)["conv_output"]        # fresh: no other types
    assert conv_output.py_func is not elementwise.conv_output          # a compiled twin
    conv_output(x, w, w[0, 0, 0], False, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1)
    (sig,) = conv_output.nopython_signatures
    assert str(sig.return_type) == "float32"


@pytest.mark.parametrize("start, step, size, count", [(-3, 2, 5, 6), (0, 1, 4, 4), (-7, 3, 2, 3),
                                                      (5, 1, 4, 3), (2, 3, 9, 4), (-1, 1, 1, 1)])
def test_valid_range(start, step, size, count):
    a, b = CPU["valid_range"](start, step, size, count)
    want = [q for q in range(count) if 0 <= start + q * step < size]
    assert list(range(a, b)) == want
