"""Gradients, in float64: central finite differences for every op; adjoint identities; the course's
backprop identities (the input gradient is a full convolution with the rotated filter, the filter
gradient a correlation of the input with dy); translation equivariance of convolution and the
circular-shift invariance of global pooling.
"""
import math

import numpy as np
import pytest

import numconv as nc
from numconv import config
from kernel_helpers import (ConvCase, assert_close, away_from_zero, distinct_values,
                            random_conv_case, random_pool_case)

CONV = {
    (1, False): nc.conv1d, (1, True): nc.convolve1d,
    (2, False): nc.conv2d, (2, True): nc.convolve2d,
}
BWD = {
    1: (nc.conv1d_backward_input, nc.conv1d_backward_weight, nc.conv1d_backward_bias),
    2: (nc.conv2d_backward_input, nc.conv2d_backward_weight, nc.conv2d_backward_bias),
}


# --------------------------------------------------------------------------- finite differences

def numerical_gradient(loss, a, eps=config.GRADCHECK_EPS):
    """d loss / d a by central differences, perturbing `a` (C-contiguous) in place."""
    flat = a.reshape(-1)
    assert np.shares_memory(flat, a)
    grad = np.empty(flat.size)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = loss()
        flat[i] = old - eps
        down = loss()
        flat[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad.reshape(a.shape)


def assert_gradient(analytic, numeric, err_msg=""):
    scale = max(1.0, float(np.max(np.abs(numeric))))
    np.testing.assert_allclose(analytic, numeric, rtol=config.GRADCHECK_RTOL,
                               atol=config.GRADCHECK_ATOL * scale, err_msg=err_msg)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_conv_gradients_match_finite_differences(seed, nd, flip):
    rng = np.random.default_rng(seed)
    case = random_conv_case(rng, nd, max_size=5)
    x, w, b = case.arrays(rng, np.float64)
    fwd = CONV[(nd, flip)]
    bwd_x, bwd_w, bwd_b = BWD[nd]
    y = fwd(x, w, b, **case.kwargs)
    g = rng.standard_normal(y.shape)

    def loss():
        return float(np.vdot(fwd(x, w, b, **case.kwargs), g))

    msg = f"{case} flip={flip}"
    assert_gradient(bwd_x(g, w, x.shape, **case.kwargs, flip=flip), numerical_gradient(loss, x),
                    "dx " + msg)
    assert_gradient(bwd_w(g, x, case.kernel_size, **case.kwargs, flip=flip),
                    numerical_gradient(loss, w), "dw " + msg)
    assert_gradient(bwd_b(g), numerical_gradient(loss, b), "db " + msg)


POOLS = {
    1: (nc.max_pool1d, nc.max_pool1d_backward, nc.avg_pool1d, nc.avg_pool1d_backward,
        nc.lp_pool1d, nc.lp_pool1d_backward),
    2: (nc.max_pool2d, nc.max_pool2d_backward, nc.avg_pool2d, nc.avg_pool2d_backward,
        nc.lp_pool2d, nc.lp_pool2d_backward),
}


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("seed", range(8))
def test_pool_gradients_match_finite_differences(seed, nd):
    rng = np.random.default_rng(seed)
    case = random_pool_case(rng, nd, max_size=6)
    mx, mx_bwd, avg, avg_bwd, lp, lp_bwd = POOLS[nd]
    k, window = case.kernel_size, case.window()
    g = rng.standard_normal(case.out_shape)
    msg = str(case)

    # max: distinct values 1e-2 apart, so a perturbation of 1e-6 never changes a winner
    x = distinct_values(rng, case.x_shape)
    _, idx = mx(x, k, **case.kwargs, return_indices=True)
    numeric = numerical_gradient(lambda: float(np.vdot(mx(x, k, **case.kwargs), g)), x)
    assert_gradient(mx_bwd(g, idx, x.shape, *window), numeric, "max " + msg)

    x = rng.standard_normal(case.x_shape)
    for cip in (True, False):
        numeric = numerical_gradient(
            lambda: float(np.vdot(avg(x, k, **case.kwargs, count_include_pad=cip), g)), x)
        assert_gradient(avg_bwd(g, x.shape, *window, count_include_pad=cip), numeric,
                        f"avg cip={cip} {msg}")

    # Lp: |x| >= 0.3, away from the kink of |x| at 0; p = inf is max pooling (distinct values)
    for p in (1.0, 1.5, 2.0, 3.0, math.inf):
        x = distinct_values(rng, case.x_shape) if math.isinf(p) else away_from_zero(rng,
                                                                                    case.x_shape)
        y = lp(x, p, k, **case.kwargs)
        numeric = numerical_gradient(lambda: float(np.vdot(lp(x, p, k, **case.kwargs), g)), x)
        assert_gradient(lp_bwd(g, x, y, p, *window), numeric, f"lp p={p} {msg}")


@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 3), (2, 2, 5), (1, 1, 1, 1)])
def test_global_pool_gradients_match_finite_differences(shape, kind):
    rng = np.random.default_rng(0)
    x = distinct_values(rng, shape)
    g = rng.standard_normal(shape[:2])
    _, idx = nc.global_pool(x, kind, return_indices=True)
    numeric = numerical_gradient(lambda: float(np.vdot(nc.global_pool(x, kind), g)), x)
    assert_gradient(nc.global_pool_backward(g, idx, shape, kind), numeric)


@pytest.mark.parametrize("op", ["conv", "convolve", "max", "avg", "lp"])
def test_reference_gradients_match_finite_differences(op):
    """The reference kernels are the definition: their gradients are their forward's derivatives."""
    rng = np.random.default_rng(1)
    ref = dict(device="reference")
    if op in ("conv", "convolve"):
        flip = op == "convolve"
        kw = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
        x, w, b = rng.standard_normal((1, 2, 4, 3)), rng.standard_normal((2, 1, 2, 2)), None
        fwd = CONV[(2, flip)]
        g = rng.standard_normal(fwd(x, w, **kw, **ref).shape)

        def loss():
            return float(np.vdot(fwd(x, w, **kw, **ref), g))

        assert_gradient(nc.conv2d_backward_input(g, w, x.shape, **kw, flip=flip, **ref),
                        numerical_gradient(loss, x))
        assert_gradient(nc.conv2d_backward_weight(g, x, (2, 2), **kw, flip=flip, **ref),
                        numerical_gradient(loss, w))
        return
    kw = dict(stride=2, padding=((1, 0), (1, 1)), ceil_mode=True)
    shape = (1, 2, 4, 5)
    g = rng.standard_normal(nc.pool_geometry(2, shape, 3, **kw).out_shape)
    if op == "max":
        x = distinct_values(rng, shape)
        _, idx = nc.max_pool2d(x, 3, **kw, return_indices=True, **ref)
        numeric = numerical_gradient(lambda: float(np.vdot(nc.max_pool2d(x, 3, **kw, **ref), g)),
                                     x)
        assert_gradient(nc.max_pool2d_backward(g, idx, shape, 3, **kw, **ref), numeric)
    elif op == "avg":
        x = rng.standard_normal(shape)
        for cip in (True, False):
            numeric = numerical_gradient(
                lambda: float(np.vdot(nc.avg_pool2d(x, 3, **kw, count_include_pad=cip, **ref), g)),
                x)
            assert_gradient(nc.avg_pool2d_backward(g, shape, 3, **kw, count_include_pad=cip,
                                                   **ref), numeric)
    else:
        x = away_from_zero(rng, shape)
        y = nc.lp_pool2d(x, 2.5, 3, **kw, **ref)
        numeric = numerical_gradient(
            lambda: float(np.vdot(nc.lp_pool2d(x, 2.5, 3, **kw, **ref), g)), x)
        assert_gradient(nc.lp_pool2d_backward(g, x, y, 2.5, 3, **kw, **ref), numeric)


# -------------------------------------------------------------------------------------- adjoints

def _assert_same_inner_product(a, b, terms, err_msg=""):
    """a == b up to float64 rounding of a sum whose terms have absolute sum `terms`."""
    assert abs(a - b) <= 1e-12 * max(1.0, terms), f"{a} != {b}. {err_msg}"


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("seed", range(40))
def test_conv_adjoint_identities(seed, nd, flip):
    """<conv(x, w), g> = <x, dx(g)> = <w, dw(g)>, and the bias's share is <b, db(g)>."""
    rng = np.random.default_rng(seed)
    case = random_conv_case(rng, nd, max_size=9, max_kernel=4, max_channels=3)
    x, w, b = case.arrays(rng, np.float64)
    fwd = CONV[(nd, flip)]
    bwd_x, bwd_w, bwd_b = BWD[nd]
    y = fwd(x, w, **case.kwargs)
    g = rng.standard_normal(y.shape)
    lhs = np.vdot(y, g)
    terms = np.abs(y).sum() * np.abs(g).max() * w[0].size * 4
    dx = bwd_x(g, w, x.shape, **case.kwargs, flip=flip)
    dw = bwd_w(g, x, case.kernel_size, **case.kwargs, flip=flip)
    _assert_same_inner_product(lhs, np.vdot(x, dx), terms, f"<x, dx> {case}")
    _assert_same_inner_product(lhs, np.vdot(w, dw), terms, f"<w, dw> {case}")
    with_bias = fwd(x, w, b, **case.kwargs)
    _assert_same_inner_product(np.vdot(with_bias - y, g), np.vdot(b, bwd_b(g)), terms,
                               f"<b, db> {case}")


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("seed", range(20))
def test_pool_adjoint_and_homogeneity_identities(seed, nd):
    """avg pooling is linear: <avg(x), g> = <x, avg_bwd(g)>. Max and Lp pooling are positively
    homogeneous of degree 1, so (Euler) <x, J^T g> = <J x, g> = <y, g>."""
    rng = np.random.default_rng(seed)
    case = random_pool_case(rng, nd)
    mx, mx_bwd, avg, avg_bwd, lp, lp_bwd = POOLS[nd]
    k, window = case.kernel_size, case.window()
    x = rng.standard_normal(case.x_shape)
    g = rng.standard_normal(case.out_shape)
    terms = np.abs(x).sum() * np.abs(g).max() * 16
    for cip in (True, False):
        y = avg(x, k, **case.kwargs, count_include_pad=cip)
        _assert_same_inner_product(np.vdot(y, g), np.vdot(x, avg_bwd(g, x.shape, *window,
                                                                    count_include_pad=cip)),
                                   terms, f"avg {case}")
    y, idx = mx(x, k, **case.kwargs, return_indices=True)
    _assert_same_inner_product(np.vdot(y, g), np.vdot(x, mx_bwd(g, idx, x.shape, *window)),
                               terms, f"max {case}")
    for p in (1.0, 2.0, 3.5, math.inf):
        y = lp(x, p, k, **case.kwargs)
        _assert_same_inner_product(np.vdot(y, g), np.vdot(x, lp_bwd(g, x, y, p, *window)),
                                   terms * 10, f"lp p={p} {case}")


# ------------------------------------------------------------------- the course's backprop rules

def rot180(w):
    return w[..., ::-1, ::-1]


@pytest.mark.parametrize("seed", range(10))
def test_input_gradient_is_full_convolution_with_rotated_filter(seed):
    """Stride 1, no padding, one group: dx = conv2d(dy, rot180(w)^T, 'full'), i.e. the full true
    convolution of dy with the (channel-transposed) filter; with dilation d, the same with d."""
    rng = np.random.default_rng(seed)
    N, C, O = (int(v) for v in rng.integers(1, 4, size=3))
    H, W = (int(v) for v in rng.integers(4, 9, size=2))
    KH, KW = (int(v) for v in rng.integers(1, 4, size=2))
    d = int(rng.integers(1, 3))
    if (KH - 1) * d + 1 > H or (KW - 1) * d + 1 > W:
        d = 1
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C, KH, KW))
    dy = rng.standard_normal(nc.conv2d(x, w, dilation=d).shape)
    dx = nc.conv2d_backward_input(dy, w, x.shape, padding=0, dilation=d)
    wT = np.ascontiguousarray(w.transpose(1, 0, 2, 3))               # (C, O, KH, KW)
    assert_close(dx, nc.conv2d(dy, np.ascontiguousarray(rot180(wT)), padding="full", dilation=d))
    assert_close(dx, nc.convolve2d(dy, wT, padding="full", dilation=d))


@pytest.mark.parametrize("seed", range(10))
def test_filter_gradient_is_correlation_of_input_with_dy(seed):
    """Stride 1, no padding: dw[o, c] = sum over n of correlate(x[n, c], dy[n, o]), both as a
    conv2d of x^T with dy^T as the kernel and as a direct NumPy loop over the filter taps."""
    rng = np.random.default_rng(seed)
    N, C, O = (int(v) for v in rng.integers(1, 4, size=3))
    H, W = (int(v) for v in rng.integers(3, 8, size=2))
    KH, KW = (int(v) for v in rng.integers(1, 4, size=2))
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C, KH, KW))
    dy = rng.standard_normal(nc.conv2d(x, w).shape)
    dw = nc.conv2d_backward_weight(dy, x, (KH, KW))
    xT = np.ascontiguousarray(x.transpose(1, 0, 2, 3))               # (C, N, H, W)
    dyT = np.ascontiguousarray(dy.transpose(1, 0, 2, 3))             # (O, N, OH, OW)
    assert_close(dw, nc.conv2d(xT, dyT).transpose(1, 0, 2, 3))
    OH, OW = dy.shape[2:]
    direct = np.empty_like(w)
    for m in range(KH):
        for k in range(KW):
            direct[:, :, m, k] = np.einsum("noij,ncij->oc", dy, x[:, :, m:m + OH, k:k + OW])
    assert_close(dw, direct)
    assert_close(nc.conv2d_backward_bias(dy), dy.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("seed", range(20))
def test_backprop_rules_with_stride_padding_and_dilation(seed):
    """The general form: dx is the full true convolution of dy *spread out by the stride* (s - 1
    zeros between entries, and zeros after to reach the padded size), cropped by the padding; dw is
    the correlation of the padded input with dy, the forward's stride acting as dilation and its
    dilation as stride."""
    rng = np.random.default_rng(seed)
    while True:
        case = random_conv_case(rng, 2, max_size=9, max_kernel=3)
        g = case.geometry
        if g.groups == 1:
            break
    (sh, sw), (dh, dw_), ((pt, pb), (pl, pr)) = g.stride, g.dilation, g.pads
    eh, ew = (g.KH - 1) * dh + 1, (g.KW - 1) * dw_ + 1
    Hp, Wp = g.H + pt + pb, g.W + pl + pr
    up_shape = (g.N, g.O, Hp - eh + 1, Wp - ew + 1)
    x, w, _ = case.arrays(rng, np.float64)
    dy = rng.standard_normal(g.out_shape)

    up = np.zeros(up_shape)
    up[:, :, ::sh, ::sw][:, :, :g.OH, :g.OW] = dy
    assert (up != 0).sum() == (dy != 0).sum()
    wT = np.ascontiguousarray(w.transpose(1, 0, 2, 3))
    dxp = nc.convolve2d(up, wT, padding="full", dilation=(dh, dw_))
    assert dxp.shape == (g.N, g.C, Hp, Wp)
    assert_close(nc.conv2d_backward_input(dy, w, x.shape, **case.kwargs),
                 dxp[:, :, pt:pt + g.H, pl:pl + g.W], err_msg=str(case))

    xT = np.ascontiguousarray(x.transpose(1, 0, 2, 3))
    dyT = np.ascontiguousarray(dy.transpose(1, 0, 2, 3))
    corr = nc.conv2d(xT, dyT, padding=g.pads, stride=(dh, dw_), dilation=(sh, sw))
    assert corr.shape[2] >= g.KH and corr.shape[3] >= g.KW
    assert_close(nc.conv2d_backward_weight(dy, x, case.kernel_size, **case.kwargs),
                 corr[:, :, :g.KH, :g.KW].transpose(1, 0, 2, 3), err_msg=str(case))


@pytest.mark.parametrize("seed", range(5))
def test_backprop_rules_1d(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 9))
    w = rng.standard_normal((4, 3, 3))
    dy = rng.standard_normal(nc.conv1d(x, w).shape)
    wT = np.ascontiguousarray(w.transpose(1, 0, 2))
    assert_close(nc.conv1d_backward_input(dy, w, x.shape),
                 nc.conv1d(dy, np.ascontiguousarray(wT[..., ::-1]), padding="full"))
    xT = np.ascontiguousarray(x.transpose(1, 0, 2))
    dyT = np.ascontiguousarray(dy.transpose(1, 0, 2))
    assert_close(nc.conv1d_backward_weight(dy, x, 3), nc.conv1d(xT, dyT).transpose(1, 0, 2))


def test_course_example_gradients():
    """The worked example's 5x5 image and 3x3 kernel, dy = ones: dx counts, for each pixel, the
    kernel entries that touched it; dw sums the image's 3x3 windows."""
    image = np.array([[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2],
                      [2, 0, 0, 0, 1]], dtype=np.float64)[None, None]
    kernel = np.array([[0, 1, 2], [2, 2, 0], [0, 1, 2]], dtype=np.float64)[None, None]
    dy = np.ones((1, 1, 3, 3))
    dx = nc.conv2d_backward_input(dy, kernel, image.shape)
    want = np.zeros((5, 5))
    for i in range(3):
        for j in range(3):
            want[i:i + 3, j:j + 3] += kernel[0, 0]
    np.testing.assert_array_equal(dx[0, 0], want)
    dw = nc.conv2d_backward_weight(dy, image, (3, 3))
    np.testing.assert_array_equal(dw[0, 0], [[image[0, 0, m:m + 3, k:k + 3].sum() for k in range(3)]
                                             for m in range(3)])


# ------------------------------------------------------------------------ translation equivariance

def circular_correlation(x, w, stride=1, dilation=1):
    """Correlation with periodic boundaries: wrap-pad by the kernel extent - 1, then 'valid'."""
    eh, ew = ((s - 1) * dilation + 1 for s in w.shape[2:])
    xw = np.pad(x, ((0, 0), (0, 0), (0, eh - 1), (0, ew - 1)), mode="wrap")
    return nc.conv2d(xw, w, stride=stride, dilation=dilation)


@pytest.mark.parametrize("seed", range(8))
def test_circular_convolution_commutes_with_rolls(seed):
    rng = np.random.default_rng(seed)
    H, W = (int(v) for v in rng.integers(3, 9, size=2))
    x = rng.standard_normal((2, 2, H, W))
    w = rng.standard_normal((3, 2, int(rng.integers(1, 4)), int(rng.integers(1, 4))))
    d = int(rng.integers(1, 3))
    y = circular_correlation(x, w, dilation=d)
    assert y.shape == (2, 3, H, W)
    for shift in ((1, 0), (0, 2), (H - 1, 3), (2, W + 1)):
        assert_close(circular_correlation(np.roll(x, shift, axis=(2, 3)), w, dilation=d),
                     np.roll(y, shift, axis=(2, 3)), err_msg=f"shift {shift}")


def test_circular_convolution_matches_fft():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 7))
    w = rng.standard_normal((3, 2))
    wp = np.zeros_like(x)
    wp[:3, :2] = w
    want = np.real(np.fft.ifft2(np.fft.fft2(x) * np.conj(np.fft.fft2(wp))))
    assert_close(circular_correlation(x[None, None], w[None, None])[0, 0], want)


@pytest.mark.parametrize("stride", [2, 3])
def test_strided_circular_convolution_shifts_by_whole_strides(stride):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((1, 2, 4 * stride, 3 * stride))
    w = rng.standard_normal((2, 2, 3, 2))
    y = circular_correlation(x, w, stride=stride)
    for a, b in ((1, 0), (0, 1), (2, 1)):
        shifted = circular_correlation(np.roll(x, (a * stride, b * stride), axis=(2, 3)), w,
                                       stride=stride)
        assert_close(shifted, np.roll(y, (a, b), axis=(2, 3)))


@pytest.mark.parametrize("seed", range(6))
def test_zero_padded_convolution_is_equivariant_away_from_the_border(seed):
    """An image on a zero canvas, moved: its 'same' convolution moves with it, everywhere, as long
    as the canvas's zero margin covers the kernel; and 'valid' outputs of a cropped input are the
    matching crop of the full input's outputs (stride s: crops by whole strides)."""
    rng = np.random.default_rng(seed)
    H, W = (int(v) for v in rng.integers(2, 7, size=2))
    KH, KW = (int(v) for v in rng.integers(1, 5, size=2))
    M = max(KH, KW) + 3
    x = rng.standard_normal((1, 2, H, W))
    w = rng.standard_normal((2, 2, KH, KW))
    canvas = np.zeros((1, 2, H + 2 * M, W + 2 * M))
    canvas[:, :, M:M + H, M:M + W] = x
    y = nc.conv2d(canvas, w, padding="same")
    for shift in ((1, 0), (-2, 3), (3, -3)):
        moved = np.roll(canvas, shift, axis=(2, 3))          # zeros wrap: a plain translation
        assert_close(nc.conv2d(moved, w, padding="same"), np.roll(y, shift, axis=(2, 3)))

    big = rng.standard_normal((1, 2, 12, 11))
    for s in (1, 2):
        y = nc.conv2d(big, w, stride=s)
        for a, b in ((1, 0), (0, 2), (2, 1)):
            assert_close(nc.conv2d(big[:, :, s * a:, s * b:], w, stride=s),
                         y[:, :, a:, b:][:, :, :y.shape[2] - a, :y.shape[3] - b])


@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 3, 7)])
def test_global_pooling_is_invariant_to_circular_shifts(shape, kind):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape)
    axes = tuple(range(2, len(shape)))
    y, idx = nc.global_pool(x, kind, return_indices=True)
    dy = rng.standard_normal(shape[:2])
    dx = nc.global_pool_backward(dy, idx, shape, kind)
    for shift in ((1, 2), (3, 1), (4, 3)):
        shift = shift[:len(axes)]
        xs = np.roll(x, shift, axis=axes)
        ys, idxs = nc.global_pool(xs, kind, return_indices=True)
        if kind == "max":
            np.testing.assert_array_equal(ys, y)                 # exactly: the same element wins
            # the winner moved with the shift
            coords = np.unravel_index(idx, shape[2:])
            moved = np.ravel_multi_index(tuple((c + s) % n for c, s, n in
                                               zip(coords, shift, shape[2:])), shape[2:])
            np.testing.assert_array_equal(idxs, moved)
        else:
            assert_close(ys, y)
        # and the gradient moves with it too
        assert_close(nc.global_pool_backward(dy, idxs, shape, kind), np.roll(dx, shift, axis=axes))
