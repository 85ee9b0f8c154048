"""Every CUDA kernel against the reference, under the CUDA simulator (see conftest.py): through the
ops API (device='cuda' against device='reference', same validation and arguments), through the
launchers with device arrays, and run twice for bit-identical results.

Block sizes are patched small (conftest.py), so every launch spans several blocks and ends in a
partial one, the tiled forward several tiles in both directions, the weight gradient several
segments. Shapes are tiny: the simulator runs each thread as Python.
"""
import numpy as np
import pytest
from numba import cuda

import numconv as nc
from numconv import config
from numconv.kernels import reference
from numconv.kernels import cuda as gpu
from kernel_helpers import (ConvCase, PoolCase, assert_bitwise_equal, assert_close,
                            away_from_zero, random_conv_case, random_pool_case)

FLOATS = (np.float32, np.float64)


def test_simulator_is_on():
    from numba.cuda.core import config as cuda_config
    assert cuda_config.ENABLE_CUDASIM, "these tests must run under NUMBA_ENABLE_CUDASIM=1"
    assert nc.ops._device.cuda_unavailable_reason() is None


# ---------------------------------------------------------------------------------- convolution

CONV_CASES = [
    ConvCase(2, (2, 3, 7, 6), (4, 3, 3, 3), dict(stride=1, padding=0)),
    ConvCase(2, (2, 3, 7, 6), (4, 3, 3, 3), dict(stride=2, padding=1)),
    ConvCase(2, (1, 2, 6, 5), (2, 2, 2, 2), dict(stride=3)),                    # stride > kernel
    ConvCase(2, (2, 2, 6, 5), (3, 2, 2, 3), dict(stride=(2, 1), padding="same")),
    ConvCase(2, (1, 1, 5, 4), (2, 1, 3, 3), dict(padding="full")),
    ConvCase(2, (2, 2, 7, 7), (2, 2, 3, 2), dict(dilation=(2, 3), padding=2)),
    ConvCase(2, (2, 4, 5, 6), (6, 2, 3, 3), dict(padding=1, groups=2)),
    ConvCase(2, (1, 3, 5, 5), (6, 1, 3, 3), dict(padding=1, groups=3)),        # depthwise x2
    ConvCase(2, (2, 2, 6, 5), (2, 2, 3, 3), dict(stride=2, padding=((1, 0), (0, 2)))),
    ConvCase(2, (1, 5, 4, 4), (7, 5, 1, 1), {}),                               # 1x1, R < O
    ConvCase(1, (2, 3, 9), (4, 3, 3), dict(stride=2, padding=((2, 1),), dilation=2)),
]


def _conv_all(case, x, w, b, dy, device, flip=False):
    fwd = {(1, False): nc.conv1d, (1, True): nc.convolve1d, (2, False): nc.conv2d,
           (2, True): nc.convolve2d}[case.nd, flip]
    bx = nc.conv1d_backward_input if case.nd == 1 else nc.conv2d_backward_input
    bw = nc.conv1d_backward_weight if case.nd == 1 else nc.conv2d_backward_weight
    bb = nc.conv1d_backward_bias if case.nd == 1 else nc.conv2d_backward_bias
    k = case.kwargs
    return {"y": fwd(x, w, b, device=device, **k),
            "dx": bx(dy, w, x.shape, flip=flip, device=device, **k),
            "dw": bw(dy, x, case.kernel_size, flip=flip, device=device, **k),
            "db": bb(dy, device=device)}


# Every case in float64 with the default (tiled) forward; a few in float32 and with the direct one.
CONV_RUNS = ([(case, np.float64, "tiled") for case in CONV_CASES]
             + [(CONV_CASES[i], np.float32, "tiled") for i in (1, 6, 10)]
             + [(CONV_CASES[i], dtype, "direct") for i in (1, 5, 7, 10) for dtype in FLOATS])


@pytest.mark.parametrize("case, dtype, forward", CONV_RUNS,
                         ids=[f"{c}-{np.dtype(d).name}-{f}" for c, d, f in CONV_RUNS])
def test_conv_against_reference(case, dtype, forward, monkeypatch):
    monkeypatch.setattr(config, "CUDA_CONV_FORWARD", forward)
    rng = np.random.default_rng(0)
    x, w, b = case.arrays(rng, dtype)
    dy = rng.standard_normal(case.geometry.out_shape).astype(dtype)
    flip = case.nd == 2 and case.kwargs.get("groups", 1) == 1
    got = _conv_all(case, x, w, b, dy, "cuda", flip)
    want = _conv_all(case, x, w, b, dy, "reference", flip)
    for name in got:
        assert got[name].dtype == dtype, name
        assert_close(got[name], want[name], dtype, err_msg=f"{name}, {case}")


@pytest.mark.parametrize("seed", range(4))
def test_conv_random_configurations(seed):
    rng = np.random.default_rng([seed, 5])
    case = random_conv_case(rng, nd=2, max_size=6)
    x, w, b = case.arrays(rng, np.float64, bias=bool(seed % 2))
    dy = rng.standard_normal(case.geometry.out_shape)
    got = _conv_all(case, x, w, b, dy, "cuda")
    want = _conv_all(case, x, w, b, dy, "reference")
    for name in got:
        assert_close(got[name], want[name], np.float64, err_msg=f"{name}, {case}")


def test_conv_weight_gradient_in_one_segment(monkeypatch):
    """With a segment covering every output position the partial sums are skipped."""
    monkeypatch.setattr(config, "CUDA_WGRAD_SEGMENT", 10_000)
    case = CONV_CASES[1]
    rng = np.random.default_rng(1)
    x, _, _ = case.arrays(rng, np.float64)
    dy = rng.standard_normal(case.geometry.out_shape)
    got = nc.conv2d_backward_weight(dy, x, (3, 3), device="cuda", **case.kwargs)
    want = nc.conv2d_backward_weight(dy, x, (3, 3), device="reference", **case.kwargs)
    assert_close(got, want, np.float64)


# -------------------------------------------------------------------------------------- pooling

POOL_CASES = [
    PoolCase(2, (2, 3, 7, 6), 2),
    PoolCase(2, (2, 2, 7, 6), (3, 2), dict(stride=1, padding=1)),
    PoolCase(2, (1, 2, 7, 6), 3, dict(stride=2, padding=1, ceil_mode=True)),
    PoolCase(2, (2, 1, 7, 6), 2, dict(stride=3, ceil_mode=True)),             # stride > kernel
    PoolCase(2, (1, 2, 5, 6), (3, 3), dict(stride=2, padding=((1, 0), (1, 1)))),
    PoolCase(1, (2, 3, 9), 3, dict(stride=2, padding=1)),
]


def _pool_all(case, x, dy, device):
    nd = case.nd
    mx, mx_b = (nc.max_pool1d, nc.max_pool1d_backward) if nd == 1 else (nc.max_pool2d,
                                                                          nc.max_pool2d_backward)
    av, av_b = (nc.avg_pool1d, nc.avg_pool1d_backward) if nd == 1 else (nc.avg_pool2d,
                                                                          nc.avg_pool2d_backward)
    lp, lp_b = (nc.lp_pool1d, nc.lp_pool1d_backward) if nd == 1 else (nc.lp_pool2d,
                                                                        nc.lp_pool2d_backward)
    win = case.window()
    out = {}
    y, idx = mx(x, *win, return_indices=True, device=device)
    out["max y"], out["max idx"] = y, idx
    out["max dx"] = mx_b(dy, idx, x.shape, *win, device=device)
    for cip in (True, False):
        out[f"avg y {cip}"] = av(x, *win, count_include_pad=cip, device=device)
        out[f"avg dx {cip}"] = av_b(dy, x.shape, *win, count_include_pad=cip, device=device)
    for p in (1.0, 2.0, 3.0):
        y = lp(x, p, *win, device=device)
        out[f"lp{p:g} y"] = y
        out[f"lp{p:g} dx"] = lp_b(dy, x, y, p, *win, device=device)
    return out


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool_against_reference(case, dtype):
    rng = np.random.default_rng(2)
    x = away_from_zero(rng, case.x_shape, dtype=dtype)
    dy = rng.standard_normal(case.out_shape).astype(dtype)
    got = _pool_all(case, x, dy, "cuda")
    want = _pool_all(case, x, dy, "reference")
    for name in got:
        if "idx" in name:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name}, {case}")
        else:
            assert_close(got[name], want[name], dtype, err_msg=f"{name}, {case}")


@pytest.mark.parametrize("seed", range(4))
def test_pool_random_configurations(seed):
    rng = np.random.default_rng([seed, 7])
    case = random_pool_case(rng, nd=2, max_size=6)
    x = away_from_zero(rng, case.x_shape)
    dy = rng.standard_normal(case.out_shape)
    got = _pool_all(case, x, dy, "cuda")
    want = _pool_all(case, x, dy, "reference")
    for name in got:
        assert_close(got[name], want[name], np.float64, err_msg=f"{name}, {case}")


def test_max_pool_ties_go_to_the_first_position():
    x = np.random.default_rng(3).integers(0, 2, size=(2, 2, 6, 5)).astype(np.float32)
    _, got = nc.max_pool2d(x, 3, stride=1, padding=1, return_indices=True, device="cuda")
    _, want = nc.max_pool2d(x, 3, stride=1, padding=1, return_indices=True, device="reference")
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 7)])
@pytest.mark.parametrize("kind", nc.GLOBAL_KINDS)
def test_global_pool_against_reference(kind, shape, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape[:2]).astype(dtype)
    out = {}
    for device in ("cuda", "reference"):
        y, idx = nc.global_pool(x, kind, return_indices=True, device=device)
        dx = nc.global_pool_backward(dy, idx, shape, kind, device=device)
        out[device] = (y, idx, dx)
    (y, idx, dx), (ry, ridx, rdx) = out["cuda"], out["reference"]
    assert_close(y, ry, dtype)
    assert_close(dx, rdx, dtype)
    if kind == "max":
        np.testing.assert_array_equal(idx, ridx)


# ------------------------------------------------------------------- launchers and device arrays

def test_launchers_keep_device_arrays_on_the_device():
    """Inputs and outputs given as device arrays are used in place: the output is written on the
    device and nothing is copied into host arrays."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    opts = (1, 1, 1, 1, 1, 1, 1)
    want = np.empty((2, 4, 6, 5), np.float32)
    reference.conv2d_forward(want, x, w, b, *opts)
    d_y = cuda.device_array(want.shape, dtype=np.float32)
    gpu.conv2d_forward(d_y, cuda.to_device(x), cuda.to_device(w), cuda.to_device(b), *opts)
    assert_close(d_y.copy_to_host(), want, np.float32)

    # a pooling chain on the device: conv output -> max pool -> its gradient
    d_p = cuda.device_array((2, 4, 3, 3), dtype=np.float32)
    d_idx = cuda.device_array((2, 4, 3, 3), dtype=np.int64)
    gpu.maxpool2d_forward(d_p, d_idx, d_y, 2, 2, 2, 2, 0, 0)
    p, idx = np.empty((2, 4, 3, 3), np.float32), np.empty((2, 4, 3, 3), np.int64)
    reference.maxpool2d_forward(p, idx, want, 2, 2, 2, 2, 0, 0)
    assert_close(d_p.copy_to_host(), p, np.float32)
    np.testing.assert_array_equal(d_idx.copy_to_host(), idx)


def test_every_launcher_runs_twice_to_the_same_bits():
    rng = np.random.default_rng(6)
    case = CONV_CASES[8]
    x, w, b = case.arrays(rng, np.float32)
    dy = rng.standard_normal(case.geometry.out_shape).astype(np.float32)
    first = _conv_all(case, x, w, b, dy, "cuda")
    second = _conv_all(case, x, w, b, dy, "cuda")
    for name in first:
        assert_bitwise_equal(first[name], second[name], name)
    pcase = POOL_CASES[2]
    x = away_from_zero(rng, pcase.x_shape, dtype=np.float32)
    dy = rng.standard_normal(pcase.out_shape).astype(np.float32)
    first = _pool_all(pcase, x, dy, "cuda")
    second = _pool_all(pcase, x, dy, "cuda")
    for name in first:
        assert_bitwise_equal(first[name], second[name], name)


# ------------------------------------------------------- conv1d followed by max over positions

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("opts", [dict(), dict(stride=2, padding=1, dilation=2)])
def test_conv1d_max_backward_against_reference(opts, dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 4, 9)).astype(dtype)
    w = rng.standard_normal((5, 4, 3)).astype(dtype)
    _, idx = nc.global_pool(nc.conv1d(x, w, device="reference", **opts), "max",
                            return_indices=True, device="reference")
    dm = rng.standard_normal(idx.shape).astype(dtype)
    dm[1, 2] = 0
    got = nc.conv1d_max_backward(dm, idx, x, w, device="cuda", **opts)
    want = nc.conv1d_max_backward(dm, idx, x, w, device="reference", **opts)
    for g, r in zip(got, want):
        assert_close(g, r, dtype)
    again = nc.conv1d_max_backward(dm, idx, x, w, device="cuda", **opts)
    for g, a in zip(got, again):
        assert_bitwise_equal(np.ascontiguousarray(g), np.ascontiguousarray(a))
