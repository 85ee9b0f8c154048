"""Forward values and gradients against PyTorch (torch.nn.functional, gradients through autograd),
over seeded random configurations, float32 and float64.

PyTorch pads symmetrically only, so numconv's resolved (before, after) padding is applied to the
torch input with F.pad and torch convolves with padding=0. Pooling configurations use symmetric
padding, which is all torch's pools accept.
"""
import math

import numpy as np
import pytest

import numconv as nc
from kernel_helpers import (FLOATS, ConvCase, assert_close, random_conv_case,
                            random_pool_case)

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.torch

# float32 sums differ in order between the two libraries (and torch may use other algorithms).
FACTOR = {np.float32: 10.0, np.float64: 1.0}


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(True)


def _np(t):
    return t.detach().numpy()


# ------------------------------------------------------------------------------------ convolution

NC_CONV = {
    1: (nc.conv1d, nc.convolve1d, nc.conv1d_backward_input, nc.conv1d_backward_weight,
        nc.conv1d_backward_bias),
    2: (nc.conv2d, nc.convolve2d, nc.conv2d_backward_input, nc.conv2d_backward_weight,
        nc.conv2d_backward_bias),
}


def torch_conv(case, x, w, b, dy, flip):
    """y and (dx, dw, db) from torch, numconv's padding applied with F.pad."""
    g = case.geometry
    xt, wt, bt = _t(x), _t(w), _t(b)
    if case.nd == 2:
        (pt, pb), (pl, pr) = g.pads
        wk = wt.flip((-2, -1)) if flip else wt
        y = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wk, bt, stride=g.stride, dilation=g.dilation,
                     groups=g.groups)
    else:
        pl, pr = g.pads[1]
        wk = wt.flip((-1,)) if flip else wt
        y = F.conv1d(F.pad(xt, (pl, pr)), wk, bt, stride=g.stride[1], dilation=g.dilation[1],
                     groups=g.groups)
    y.backward(torch.from_numpy(dy))
    return _np(y), _np(xt.grad), _np(wt.grad), _np(bt.grad)


def check_conv_against_torch(case, dtype, seed):
    rng = np.random.default_rng(seed)
    x, w, b = case.arrays(rng, dtype)
    correlate, convolve, bwd_x, bwd_w, bwd_b = NC_CONV[case.nd]
    for flip, fwd in ((False, correlate), (True, convolve)):
        y = fwd(x, w, b, **case.kwargs)
        dy = rng.standard_normal(y.shape).astype(dtype)
        want = torch_conv(case, x, w, b, dy, flip)
        got = (y, bwd_x(dy, w, x.shape, **case.kwargs, flip=flip),
               bwd_w(dy, x, case.kernel_size, **case.kwargs, flip=flip), bwd_b(dy))
        for name, a, e in zip(("y", "dx", "dw", "db"), got, want):
            assert_close(a, e, dtype, factor=FACTOR[dtype],
                         err_msg=f"{name} flip={flip}: {case} seed={seed}")


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("dtype,seed", [(np.float64, s) for s in range(30)]
                         + [(np.float32, s) for s in range(300, 330)])
def test_conv_matches_torch_random(nd, dtype, seed):
    case = random_conv_case(np.random.default_rng(seed), nd, max_size=12, max_kernel=4,
                            max_channels=4, max_batch=3)
    check_conv_against_torch(case, dtype, seed)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", [
    ConvCase(2, (4, 8, 20, 20), (16, 8, 3, 3), dict(padding=1)),
    ConvCase(2, (2, 6, 17, 23), (6, 1, 3, 3), dict(padding="same", groups=6, stride=2)),
    ConvCase(2, (3, 4, 16, 16), (8, 2, 4, 4), dict(padding=((2, 1), (1, 2)), groups=2)),
    ConvCase(1, (4, 24, 300), (5, 24, 7), dict(padding=3, dilation=2)),
], ids=str)
def test_conv_matches_torch_larger(case, dtype):
    check_conv_against_torch(case, dtype, seed=1)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("nd", [1, 2])
def test_same_padding_matches_torch_same(nd, dtype):
    """torch's padding='same' (stride 1) also puts the odd extra pixel after: even kernels and
    dilation agree with numconv's 'same' without any F.pad."""
    rng = np.random.default_rng(42)
    for k, d in ((2, 1), (4, 1), (3, 2), (2, 3), (5, 1)):
        x = rng.standard_normal((2, 3) + (9,) * nd).astype(dtype)
        w = rng.standard_normal((2, 3) + (k,) * nd).astype(dtype)
        conv = F.conv2d if nd == 2 else F.conv1d
        want = conv(torch.from_numpy(x), torch.from_numpy(w), padding="same", dilation=d)
        y = NC_CONV[nd][0](x, w, padding="same", dilation=d)
        assert_close(y, _np(want), dtype, factor=FACTOR[dtype], err_msg=f"k={k} d={d}")


# ---------------------------------------------------------------------------------------- pooling

NC_POOL = {
    1: dict(max=nc.max_pool1d, max_bwd=nc.max_pool1d_backward, avg=nc.avg_pool1d,
            avg_bwd=nc.avg_pool1d_backward, lp=nc.lp_pool1d, lp_bwd=nc.lp_pool1d_backward),
    2: dict(max=nc.max_pool2d, max_bwd=nc.max_pool2d_backward, avg=nc.avg_pool2d,
            avg_bwd=nc.avg_pool2d_backward, lp=nc.lp_pool2d, lp_bwd=nc.lp_pool2d_backward),
}
TORCH_POOL = {1: (F.max_pool1d, F.avg_pool1d, F.lp_pool1d),
              2: (F.max_pool2d, F.avg_pool2d, F.lp_pool2d)}


def _torch_window(case):
    k = case.kwargs
    kernel, stride = case.kernel_size, k["stride"]
    if case.nd == 1:        # torch's lp_pool1d multiplies by kernel_size: give it an int
        kernel = kernel if isinstance(kernel, int) else kernel[0]
    return kernel, stride, k["padding"], k["ceil_mode"]


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("dtype,seed", [(np.float64, s) for s in range(30)]
                         + [(np.float32, s) for s in range(500, 520)])
def test_max_and_avg_pool_match_torch_random(nd, dtype, seed):
    rng = np.random.default_rng(seed)
    case = random_pool_case(rng, nd, max_size=10, max_kernel=4, symmetric=True)
    f = NC_POOL[nd]
    t_max, t_avg, _ = TORCH_POOL[nd]
    kernel, stride, padding, ceil_mode = _torch_window(case)
    x = rng.standard_normal(case.x_shape).astype(dtype)
    dy = rng.standard_normal(case.out_shape).astype(dtype)
    msg = f"{case} seed={seed}"

    xt = _t(x)
    yt, it = t_max(xt, kernel, stride, padding, 1, ceil_mode, return_indices=True)
    yt.backward(torch.from_numpy(dy))
    y, idx = f["max"](x, kernel, stride, padding, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, _np(yt), err_msg=msg)
    np.testing.assert_array_equal(idx, it.numpy(), err_msg=msg)   # both flat ih * W + iw
    assert_close(f["max_bwd"](dy, idx, x.shape, kernel, stride, padding, ceil_mode), _np(xt.grad),
                 dtype, err_msg=msg)

    for cip in (True, False):
        xt = _t(x)
        yt = t_avg(xt, kernel, stride, padding, ceil_mode, count_include_pad=cip)
        yt.backward(torch.from_numpy(dy))
        y = f["avg"](x, kernel, stride, padding, ceil_mode, count_include_pad=cip)
        assert_close(y, _np(yt), dtype, factor=FACTOR[dtype], err_msg=f"cip={cip} {msg}")
        dx = f["avg_bwd"](dy, x.shape, kernel, stride, padding, ceil_mode, count_include_pad=cip)
        assert_close(dx, _np(xt.grad), dtype, factor=FACTOR[dtype], err_msg=f"cip={cip} {msg}")


def test_ceil_mode_grid_matches_torch():
    """Every small 1D geometry (symmetric padding) where ceil_mode adds a window, max and avg."""
    rng = np.random.default_rng(0)
    n_cases = 0
    for n in range(1, 9):
        for k in range(1, 5):
            for s in range(1, 5):
                for p in range(k // 2 + 1):
                    try:
                        floor = nc.pool_geometry(1, (1, 1, n), k, s, p).OW
                    except ValueError:
                        continue
                    ceil = nc.pool_geometry(1, (1, 1, n), k, s, p, True).OW
                    if ceil == floor:
                        continue
                    n_cases += 1
                    x = rng.standard_normal((2, 2, n))
                    dy = rng.standard_normal((2, 2, ceil))
                    xt = _t(x)
                    yt, it = F.max_pool1d(xt, k, s, p, 1, True, return_indices=True)
                    yt.backward(torch.from_numpy(dy))
                    y, idx = nc.max_pool1d(x, k, s, p, True, return_indices=True)
                    np.testing.assert_array_equal(y, _np(yt))
                    np.testing.assert_array_equal(idx, it.numpy())
                    assert_close(nc.max_pool1d_backward(dy, idx, x.shape, k, s, p, True),
                                 _np(xt.grad))
                    for cip in (True, False):
                        xt = _t(x)
                        yt = F.avg_pool1d(xt, k, s, p, True, count_include_pad=cip)
                        yt.backward(torch.from_numpy(dy))
                        msg = f"n={n} k={k} s={s} p={p} cip={cip}"
                        assert_close(nc.avg_pool1d(x, k, s, p, True, cip), _np(yt), err_msg=msg)
                        assert_close(nc.avg_pool1d_backward(dy, x.shape, k, s, p, True, cip),
                                     _np(xt.grad), err_msg=msg)
    assert n_cases > 30


# torch's lp_pool has no padding and, with ceil_mode, scales a window that hangs past the input by
# kernel_size / (its clipped size) (it is avg_pool * kernel_size), so it is no Lp norm there; it
# also sums x^p without |.|. Hence: no padding, ceil_mode off, non-negative inputs.
@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("dtype,seed", [(np.float64, s) for s in range(15)]
                         + [(np.float32, s) for s in range(700, 710)])
def test_lp_pool_matches_torch_random(nd, dtype, seed):
    rng = np.random.default_rng(seed)
    case = random_pool_case(rng, nd, max_size=10, max_kernel=4, allow_padding=False)
    f = NC_POOL[nd]
    kernel, stride, _, _ = _torch_window(case)
    x = (0.1 + rng.random(case.x_shape)).astype(dtype)           # positive: no kink at 0
    # the shape without ceil_mode
    y_shape = nc.pool_geometry(nd, x.shape, kernel, stride).out_shape
    dy = rng.standard_normal(y_shape).astype(dtype)
    for p in (1.0, 2.0, 3.0, float(rng.uniform(1.2, 4.0)), math.inf):
        xt = _t(x)
        yt = TORCH_POOL[nd][2](xt, p, kernel, stride)
        yt.backward(torch.from_numpy(dy))
        y = f["lp"](x, p, kernel, stride)
        msg = f"p={p} {case} seed={seed}"
        assert_close(y, _np(yt), dtype, factor=FACTOR[dtype], err_msg=msg)
        dx = f["lp_bwd"](dy, x, y, p, kernel, stride)
        assert_close(dx, _np(xt.grad), dtype, factor=FACTOR[dtype] * 10, err_msg=msg)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(2, 3, 6, 5), (3, 2, 11), (1, 1, 1, 1)])
@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
def test_global_pool_matches_torch(kind, shape, dtype):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape[:2]).astype(dtype)
    xt = _t(x)
    flat = xt.flatten(2)
    yt = {"max": lambda: flat.max(-1).values, "avg": lambda: flat.mean(-1),
          "sum": lambda: flat.sum(-1)}[kind]()
    yt.backward(torch.from_numpy(dy))
    y, idx = nc.global_pool(x, kind, return_indices=True)
    assert_close(y, _np(yt), dtype, factor=FACTOR[dtype])
    assert_close(nc.global_pool_backward(dy, idx, shape, kind), _np(xt.grad), dtype,
                 factor=FACTOR[dtype])
