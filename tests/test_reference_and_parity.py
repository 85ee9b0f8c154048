"""The CPU kernels against the reference loops (the definition of every op), and both against the
course's worked example and SciPy.

Sweeps draw their configurations from seeded generators (see kernel_helpers.py): odd and even
sizes, strides above the kernel, dilation, groups (depthwise included), every padding form
including asymmetric pairs and 'same'/'full', batch 1 and single channels, ceil_mode and
count_include_pad. float64 is compared within 1e-10 (relative), float32 within 1e-4.

The CPU convolution once wrote past its im2col buffer when a whole run of output columns read only
left padding; the tests below pin that case (`_valid_range` must stay inside its run).
"""
import math

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

import numconv as nc
from kernel_helpers import (FLOATS, CONV_KERNELS, ConvCase, PoolCase, assert_close,
                            conv_kernel, numpy_conv2d, numpy_conv2d_backward_input,
                            numpy_conv2d_backward_weight, random_conv_case, random_pool_case)

DEVICES = ("cpu", "reference")

# ------------------------------------------------------------------------------- worked example

IMAGE = np.array([[3, 3, 2, 1, 0],
                  [0, 0, 1, 3, 1],
                  [3, 1, 2, 2, 3],
                  [2, 0, 0, 2, 2],
                  [2, 0, 0, 0, 1]], dtype=np.float64)
KERNEL = np.array([[0, 1, 2],
                   [2, 2, 0],
                   [0, 1, 2]], dtype=np.float64)
CORRELATION = np.array([[12, 12, 17],
                        [10, 17, 19],
                        [9, 6, 14]], dtype=np.float64)
# The same image convolved: the kernel rotated by 180 degrees, [[2,1,0],[0,2,2],[2,1,0]];
# e.g. the top-left entry is 3*2 + 3*1 + 1*2 + 3*2 + 1*1 = 18.
CONVOLUTION = np.array([[18, 20, 19],
                        [10, 9, 17],
                        [11, 8, 14]], dtype=np.float64)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("device", DEVICES)
def test_worked_example_correlation(device, dtype):
    y = nc.conv2d(IMAGE[None, None].astype(dtype), KERNEL[None, None].astype(dtype), device=device)
    assert y.shape == (1, 1, 3, 3) and y.dtype == dtype
    np.testing.assert_array_equal(y[0, 0], CORRELATION)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("device", DEVICES)
def test_worked_example_true_convolution_flips_the_kernel(device, dtype):
    x = IMAGE[None, None].astype(dtype)
    y = nc.convolve2d(x, KERNEL[None, None].astype(dtype), device=device)
    np.testing.assert_array_equal(y[0, 0], CONVOLUTION)
    flipped = np.ascontiguousarray(KERNEL[::-1, ::-1])
    np.testing.assert_array_equal(flipped, [[2, 1, 0], [0, 2, 2], [2, 1, 0]])
    np.testing.assert_array_equal(nc.conv2d(x, flipped[None, None].astype(dtype), device=device),
                                  y)
    assert not np.array_equal(CONVOLUTION, CORRELATION)


@pytest.mark.parametrize("device", DEVICES)
def test_worked_example_1d(device):
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[1.0, 0.0, -1.0]]])
    np.testing.assert_array_equal(nc.conv1d(x, w, device=device)[0, 0], [-2.0, -2.0])
    np.testing.assert_array_equal(nc.convolve1d(x, w, device=device)[0, 0], [2.0, 2.0])


def test_worked_example_bias_stride_and_padding():
    x, w = IMAGE[None, None], KERNEL[None, None]
    y = nc.conv2d(x, w, np.array([0.5]), stride=2, padding=1)
    full = scipy.signal.correlate2d(np.pad(IMAGE, 1), KERNEL, mode="valid")
    np.testing.assert_array_equal(y[0, 0], full[::2, ::2] + 0.5)


# ------------------------------------------------------------------------- conv: CPU vs reference

CONV_FNS = {
    (1, False): (nc.conv1d, nc.conv1d_backward_input, nc.conv1d_backward_weight,
                 nc.conv1d_backward_bias),
    (1, True): (nc.convolve1d, nc.conv1d_backward_input, nc.conv1d_backward_weight,
                nc.conv1d_backward_bias),
    (2, False): (nc.conv2d, nc.conv2d_backward_input, nc.conv2d_backward_weight,
                 nc.conv2d_backward_bias),
    (2, True): (nc.convolve2d, nc.conv2d_backward_input, nc.conv2d_backward_weight,
                nc.conv2d_backward_bias),
}


def check_conv_cpu_vs_reference(case, dtype, seed):
    rng = np.random.default_rng(seed)
    x, w, b = case.arrays(rng, dtype)
    msg = f"{case} {np.dtype(dtype).name} seed={seed}"
    for flip in (False, True):
        fwd, bwd_x, bwd_w, bwd_b = CONV_FNS[(case.nd, flip)]
        out = {}
        for device in DEVICES:
            y = fwd(x, w, b, **case.kwargs, device=device)
            y0 = fwd(x, w, None, **case.kwargs, device=device)
            assert y.dtype == dtype and y.shape == case.geometry.out_shape
            dy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(dtype)
            dx = bwd_x(dy, w, x.shape, **case.kwargs, flip=flip, device=device)
            dw = bwd_w(dy, x, case.kernel_size, **case.kwargs, flip=flip, device=device)
            db = bwd_b(dy, device=device)
            assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
            assert dx.dtype == dw.dtype == db.dtype == dtype
            out[device] = (y, y0, dx, dw, db)
        for name, got, want in zip(("y", "y (no bias)", "dx", "dw", "db"), out["cpu"],
                                   out["reference"]):
            assert_close(got, want, err_msg=f"{name} flip={flip}: {msg}")
        for method in CONV_KERNELS:          # both CPU kernels, whichever 'auto' picks
            with conv_kernel(method):
                y = fwd(x, w, b, **case.kwargs, device="cpu")
                y0 = fwd(x, w, None, **case.kwargs, device="cpu")
                dx = bwd_x(dy, w, x.shape, **case.kwargs, flip=flip, device="cpu")
                dw = bwd_w(dy, x, case.kernel_size, **case.kwargs, flip=flip, device="cpu")
            for name, got, want in zip(("y", "y (no bias)", "dx", "dw"), (y, y0, dx, dw),
                                       out["reference"]):
                assert_close(got, want, err_msg=f"{name} ({method}) flip={flip}: {msg}")


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("dtype,seed", [(np.float64, s) for s in range(40)]
                         + [(np.float32, s) for s in range(1000, 1015)])
def test_conv_cpu_matches_reference_random(nd, dtype, seed):
    case = random_conv_case(np.random.default_rng(seed), nd)
    check_conv_cpu_vs_reference(case, dtype, seed)


EDGE_CONV_CASES = [
    # stride larger than the kernel: some inputs are never read, their dx must be exactly 0
    ConvCase(2, (1, 1, 7, 7), (1, 1, 2, 2), dict(stride=3)),
    ConvCase(2, (2, 2, 8, 5), (3, 2, 1, 2), dict(stride=(4, 3), padding=((1, 0), (0, 2)))),
    # depthwise with dilation and 'same'; depthwise with a channel multiplier
    ConvCase(2, (2, 4, 7, 6), (4, 1, 3, 3), dict(dilation=2, groups=4, padding="same")),
    ConvCase(2, (1, 3, 5, 5), (6, 1, 3, 3), dict(stride=2, groups=3, padding=((2, 0), (0, 1)))),
    # 'same' with stride 2 and even kernels (TensorFlow's split: the extra row/column after)
    ConvCase(2, (2, 3, 6, 7), (2, 3, 4, 2), dict(stride=2, padding="same")),
    ConvCase(2, (1, 2, 5, 9), (2, 1, 2, 3), dict(stride=(3, 2), dilation=(1, 3), groups=2,
                                                 padding="same")),
    # 'full' with dilation
    ConvCase(2, (1, 1, 3, 4), (1, 1, 2, 3), dict(dilation=(2, 1), padding="full")),
    # one input and output row, one-row kernel, but not a conv1d: top padding (the one output
    # row reads only padding) or a vertical stride past a second input row (found in review:
    # these went to the conv1d kernels, wrong forward and gradients, a crash in dx)
    ConvCase(2, (2, 3, 1, 6), (40, 3, 1, 3), dict(stride=(2, 1), padding=((1, 0), (0, 0)))),
    ConvCase(2, (2, 3, 2, 6), (40, 3, 1, 3), dict(stride=(2, 1))),
    # the kernel covers the whole input: a 1x1 output ('auto' runs it as a Linear layer)
    ConvCase(2, (1, 2, 4, 5), (3, 2, 4, 5), dict()),
    ConvCase(2, (3, 4, 5, 5), (7, 4, 5, 5), dict(stride=2)),
    ConvCase(1, (2, 3, 6), (4, 3, 6), dict()),
    ConvCase(2, (2, 2, 3, 1), (3, 2, 2, 1), dict(dilation=2)),          # dilated: not whole
    # 1x1 kernels with stride
    ConvCase(2, (2, 3, 5, 5), (4, 3, 1, 1), dict(stride=2)),
    # a kernel wider than the input plus its right padding, rows reading only padding
    ConvCase(2, (2, 1, 2, 3), (1, 1, 3, 3), dict(padding=((3, 0), (0, 3)), dilation=2)),
    ConvCase(2, (1, 2, 1, 4), (2, 2, 3, 1), dict(padding=((2, 0), (0, 0)))),
    # 1D: stride above the kernel, asymmetric padding, groups
    ConvCase(1, (2, 4, 9), (4, 2, 2), dict(stride=3, padding=((2, 1),), groups=2)),
    ConvCase(1, (1, 3, 6), (3, 1, 3), dict(padding="full", dilation=2, groups=3)),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", EDGE_CONV_CASES, ids=str)
def test_conv_cpu_matches_reference_edge_cases(case, dtype):
    check_conv_cpu_vs_reference(case, dtype, seed=7)


# ------------------------------------------------------------ the CPU im2col overrun (numconv bug)
# numconv/kernels/cpu/conv.py, _valid_range(start, step, size, count) returns a start index `a`
# larger than `count` when start + (count - 1) * step < 0 (a whole run of output columns reads left
# padding, by more than the run's length): _valid_range(-2, 1, 1, 1) == (2, 2). _im2col_tile then
# zero-fills col[r, q:q + a], past the run of length `run` it owns, and at the end of a tile past
# the tile's buffer (for the weight gradient's transposed buffer, for every row). Seen through the
# public API: conv2d / conv2d_backward_weight of a 1x1 (or 1-wide) input with a 5x5 kernel and
# padding='same', or any input whose tile of columns ends one column into an output row with
# padding >= 2, e.g. conv2d_backward_weight(dy, x float32 (4, 16, 27, 27), (5, 5),
# padding='same'), which aborts the interpreter now and then ("malloc(): unsorted double linked
# list corrupted", "corrupted size vs. prev_size"). The fix: clamp `a` (and `b`) to `count`.
# Fixed by clamping; these tests keep it fixed.


def test_valid_range_stays_inside_the_run():
    from numconv.kernels.cpu.conv import _valid_range
    bad = []
    for start in range(-7, 8):
        for step in (1, 2, 3):
            for size in (1, 2, 5):
                for count in (1, 2, 3, 6):
                    a, b = _valid_range(start, step, size, count)
                    inside = [q for q in range(count) if 0 <= start + q * step < size]
                    ok = 0 <= a <= b <= count and (list(range(a, b)) == inside)
                    if not ok:
                        bad.append(((start, step, size, count), (a, b), inside))
    assert not bad, f"{len(bad)} bad ranges, e.g. {bad[:3]}"


@pytest.mark.parametrize("layout", ["rows", "transposed"])
def test_im2col_tile_writes_only_its_own_columns(layout):
    """A batch of two 1x1 inputs, a 5x5 kernel, padding='same': two columns of 25 rows, one
    output row (a run of one column) per image. The buffer handed to _im2col_tile is a view of a
    larger one whose extra columns hold NaN sentinels."""
    from numconv.kernels.cpu.conv import _im2col_tile
    x = np.array([3.0, 7.0]).reshape(2, 1, 1, 1)
    R, m_cols, extra = 25, 2, 8
    if layout == "rows":            # the forward pass's (R, m) buffer
        big = np.full((R, m_cols + extra), np.nan)
        col = big[:, :m_cols]
    else:                           # the weight gradient's (m, R) buffer, written through .T
        big = np.full((m_cols + extra, R), np.nan)
        col = big[:m_cols].T
    assert not col.flags.c_contiguous
    # args: col, x, c0, KH, KW, sh, sw, pt, pl, dh, dw, OW, P, j0
    _im2col_tile(col, x, 0, 5, 5, 1, 1, 2, 2, 1, 1, 1, 1, 0)
    want = np.zeros((R, m_cols))
    want[12] = [3.0, 7.0]           # only the centre tap reads the input
    np.testing.assert_array_equal(col, want)
    sentinels = big[:, m_cols:] if layout == "rows" else big[m_cols:]
    assert np.isnan(sentinels).all(), "im2col wrote past the columns of its tile"


@pytest.mark.slow
def test_im2col_overrun_through_the_public_api_with_boundscheck(tmp_path):
    """Deterministic through the public API only with Numba's bounds checking (a fresh compile,
    about 30 s, hence slow)."""
    import os
    import subprocess
    import sys
    # every CPU kernel ('auto' would pick the direct one for this shape); the values are checked
    # too, since an IndexError inside a parallel loop may stop its task without being raised
    code = (
        "import numpy as np, numconv as nc\n"
        "from numconv import config\n"
        "got = {}\n"
        "for kernel in ('im2col', 'direct', 'taps'):\n"
        "    config.CPU_CONV_KERNEL = kernel\n"
        "    x = np.ones((1, 1, 1, 1)); w = np.ones((1, 1, 5, 5))\n"
        "    y = nc.conv2d(x, w, padding='same')\n"
        "    assert y[0, 0, 0, 0] == 1.0, kernel\n"
        "    dw = nc.conv2d_backward_weight(np.ones((1, 1, 1, 1)), x, (5, 5), padding='same')\n"
        "    assert dw.sum() == 1.0, kernel\n"
        "    dx = nc.conv2d_backward_input(np.ones((1, 1, 1, 1)), w, x.shape, padding='same')\n"
        "    assert dx.sum() == 1.0, kernel\n"
        "    # asymmetric padding and dilation: rows of padding skipped above and below\n"
        "    x = np.arange(24.0).reshape(2, 1, 3, 4); w = np.arange(15.0).reshape(1, 1, 3, 5)\n"
        "    pad = dict(padding=((1, 3), (2, 2)), dilation=(2, 1))\n"
        "    y = nc.conv2d(x, w, **pad)\n"
        "    dx = nc.conv2d_backward_input(np.ones(y.shape), w, x.shape, **pad)\n"
        "    got[kernel] = (y, dx)\n"
        "for kernel in ('direct', 'taps'):\n"
        "    for a, b in zip(got['im2col'], got[kernel]):\n"
        "        np.testing.assert_array_equal(a, b)\n")
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_conv_stride_above_kernel_leaves_unread_inputs_without_gradient():
    x = np.random.default_rng(0).standard_normal((1, 1, 7, 7))
    w = np.ones((1, 1, 2, 2))
    dy = np.ones((1, 1, 2, 2))
    dx = nc.conv2d_backward_input(dy, w, x.shape, stride=3)
    read = np.zeros((7, 7), dtype=bool)
    for i in range(2):
        for j in range(2):
            read[3 * i:3 * i + 2, 3 * j:3 * j + 2] = True
    np.testing.assert_array_equal(dx[0, 0][~read], 0.0)
    np.testing.assert_array_equal(dx[0, 0][read], 1.0)


# Shapes that span many of the CPU kernels' tiles of columns (and, for the weight gradient, several
# fixed segments of tiles), against a vectorised NumPy oracle; the loop reference would be slow.
MULTI_TILE_CASES = [
    ConvCase(2, (4, 8, 20, 20), (16, 8, 3, 3), dict(padding=1)),
    ConvCase(2, (3, 32, 12, 13), (6, 32, 4, 4), dict(padding="same")),             # 64-col tiles
    ConvCase(2, (2, 16, 15, 11), (8, 8, 5, 5), dict(padding=2, groups=2)),          # pad 2, tiles
    ConvCase(2, (5, 6, 16, 9), (6, 1, 3, 5), dict(stride=(2, 1), dilation=(1, 2), groups=6,
                                                 padding=((2, 1), (4, 3)))),
    ConvCase(2, (2, 1, 64, 48), (2, 1, 1, 1), dict()),                             # 4096-col tiles
    ConvCase(1, (4, 24, 300), (5, 24, 7), dict(padding=3)),
    # conv1d with more maps than the direct kernels take: shifted products over channels-last rows
    # (blocks of rows that split images; padding, dilation, a batch of one)
    ConvCase(1, (5, 30, 21), (100, 30, 4), dict()),
    ConvCase(1, (3, 8, 30), (40, 8, 5), dict(padding=((3, 1),), dilation=2)),
    ConvCase(1, (1, 6, 300), (48, 6, 3), dict(padding="same")),
    ConvCase(1, (16, 4, 200), (40, 4, 5), dict(padding="same")),      # dw: 3 row segments
    # the direct kernels' images side by side: groups of 2, of 4 with a ragged last group, 6 per
    # task with two groups of channels
    ConvCase(2, (20, 3, 9, 8), (5, 3, 3, 2), dict(padding=((1, 0), (2, 1)), dilation=(1, 2))),
    ConvCase(2, (37, 2, 6, 7), (4, 2, 5, 5), dict(padding=2)),
    ConvCase(2, (24, 4, 6, 6), (6, 2, 3, 3), dict(groups=2)),
    # the direct weight gradient's maps three at a time (16 maps as 3+3+3+3+2+2: LeNet-5's C3;
    # 7 as 3+2+2 over rows of 5 + 1 taps)
    ConvCase(2, (3, 6, 14, 14), (16, 6, 5, 5), dict()),
    ConvCase(2, (4, 1, 12, 12), (7, 1, 5, 6), dict(padding=1)),
    # LeNet-5's C5: the kernel covers the 5x5 input, a Linear layer of 400 inputs
    ConvCase(2, (6, 16, 5, 5), (120, 16, 5, 5), dict()),
    # the direct forward kernel's row blocks: a batch of one cut into 8 blocks of rows, and blocks
    # capped by the accumulator budget (CPU_DIRECT_ACC_BYTES) with dilated rows spanning two
    ConvCase(2, (1, 2, 70, 40), (3, 2, 3, 3), dict(padding=1, dilation=(2, 1))),
    ConvCase(2, (2, 1, 150, 200), (4, 1, 5, 3), dict(padding=((3, 1), (0, 2)), dilation=2)),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", MULTI_TILE_CASES, ids=str)
def test_conv_cpu_matches_numpy_oracle_across_tiles(case, dtype, monkeypatch):
    # the tile counts above are at 256 KB of im2col a tile (the default's 1 MB takes fewer)
    monkeypatch.setattr(nc.config, "CPU_TILE_BYTES", 256 * 1024)
    rng = np.random.default_rng(3)
    x, w, b = case.arrays(rng, dtype)
    g = case.geometry
    x4 = x if case.nd == 2 else x[:, :, None, :]
    w4 = w if case.nd == 2 else w[:, :, None, :]
    args = (g.stride, g.pads, g.dilation, g.groups)
    fwd, bwd_x, bwd_w, bwd_b = CONV_FNS[(case.nd, False)]
    want_y = numpy_conv2d(x4.astype(np.float64), w4.astype(np.float64), *args) + b[:, None, None]
    dy = rng.standard_normal(g.out_shape).astype(dtype)
    dy4 = dy if case.nd == 2 else dy[:, :, None, :]
    want_dx = numpy_conv2d_backward_input(dy4.astype(np.float64), w4.astype(np.float64),
                                          x4.shape, *args)
    want_dw = numpy_conv2d_backward_weight(dy4.astype(np.float64), x4.astype(np.float64),
                                           (g.KH, g.KW), *args)
    for method in CONV_KERNELS:
        with conv_kernel(method):
            y = fwd(x, w, b, **case.kwargs)
            dx = bwd_x(dy, w, x.shape, **case.kwargs)
            dw = bwd_w(dy, x, case.kernel_size, **case.kwargs)
        assert_close(y, want_y.reshape(y.shape), dtype, err_msg=method)
        assert_close(dx, want_dx.reshape(x.shape), dtype, err_msg=method)
        # dw sums N*OH*OW products: float32's error grows with that count
        assert_close(dw, want_dw.reshape(w.shape), dtype, factor=10 if dtype == np.float32 else 1,
                     err_msg=method)
    assert_close(bwd_b(dy), dy.astype(np.float64).sum(axis=tuple({0} | set(range(2, dy.ndim)))),
                 dtype, factor=10 if dtype == np.float32 else 1)


def test_numpy_oracle_agrees_with_reference():
    """The oracle above is itself checked against the reference on small random configurations."""
    for seed in range(10):
        rng = np.random.default_rng(seed)
        case = random_conv_case(rng, 2)
        x, w, _ = case.arrays(rng, np.float64)
        g = case.geometry
        args = (g.stride, g.pads, g.dilation, g.groups)
        y = nc.conv2d(x, w, **case.kwargs, device="reference")
        assert_close(numpy_conv2d(x, w, *args), y)
        dy = rng.standard_normal(y.shape)
        assert_close(numpy_conv2d_backward_input(dy, w, x.shape, *args),
                     nc.conv2d_backward_input(dy, w, x.shape, **case.kwargs, device="reference"))
        assert_close(numpy_conv2d_backward_weight(dy, x, w.shape[2:], *args),
                     nc.conv2d_backward_weight(dy, x, w.shape[2:], **case.kwargs,
                                               device="reference"))


# ----------------------------------------------------------------------- pools: CPU vs reference

POOL_FNS = {
    1: dict(max=nc.max_pool1d, max_bwd=nc.max_pool1d_backward, avg=nc.avg_pool1d,
            avg_bwd=nc.avg_pool1d_backward, lp=nc.lp_pool1d, lp_bwd=nc.lp_pool1d_backward),
    2: dict(max=nc.max_pool2d, max_bwd=nc.max_pool2d_backward, avg=nc.avg_pool2d,
            avg_bwd=nc.avg_pool2d_backward, lp=nc.lp_pool2d, lp_bwd=nc.lp_pool2d_backward),
}


def check_pools_cpu_vs_reference(case, dtype, seed, ps=(1.0, 2.0, 3.0, math.inf)):
    rng = np.random.default_rng(seed)
    f = POOL_FNS[case.nd]
    x = rng.standard_normal(case.x_shape).astype(dtype)
    dy = rng.standard_normal(case.out_shape).astype(dtype)
    window = case.window()
    msg = f"{case} {np.dtype(dtype).name} seed={seed}"

    res = {d: f["max"](x, case.kernel_size, **case.kwargs, return_indices=True, device=d)
           for d in DEVICES}
    (y, idx), (y_ref, idx_ref) = res["cpu"], res["reference"]
    assert y.shape == case.out_shape and y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref, err_msg=f"max y: {msg}")      # max selects: exact
    np.testing.assert_array_equal(idx, idx_ref, err_msg=f"max idx: {msg}")
    np.testing.assert_array_equal(np.take_along_axis(x.reshape(x.shape[:2] + (-1,)),
                                                     idx.reshape(idx.shape[:2] + (-1,)), axis=2),
                                  y.reshape(y.shape[:2] + (-1,)))
    dxs = [f["max_bwd"](dy, idx, x.shape, *window, device=d) for d in DEVICES]
    assert dxs[0].shape == x.shape and dxs[0].dtype == dtype
    assert_close(dxs[0], dxs[1], err_msg=f"max dx: {msg}")

    for cip in (True, False):
        ys = [f["avg"](x, case.kernel_size, **case.kwargs, count_include_pad=cip, device=d)
              for d in DEVICES]
        assert_close(ys[0], ys[1], err_msg=f"avg y cip={cip}: {msg}")
        dxs = [f["avg_bwd"](dy, x.shape, *window, count_include_pad=cip, device=d)
               for d in DEVICES]
        assert_close(dxs[0], dxs[1], err_msg=f"avg dx cip={cip}: {msg}")

    for p in ps:
        ys = [f["lp"](x, p, case.kernel_size, **case.kwargs, device=d) for d in DEVICES]
        assert_close(ys[0], ys[1], err_msg=f"lp p={p} y: {msg}")
        dxs = [f["lp_bwd"](dy, x, ys[0], p, *window, device=d) for d in DEVICES]
        assert_close(dxs[0], dxs[1], err_msg=f"lp p={p} dx: {msg}")


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("dtype,seed", [(np.float64, s) for s in range(40)]
                         + [(np.float32, s) for s in range(2000, 2015)])
def test_pools_cpu_match_reference_random(nd, dtype, seed):
    rng = np.random.default_rng(seed)
    case = random_pool_case(rng, nd)
    check_pools_cpu_vs_reference(case, dtype, seed, ps=(1.0, 2.0, float(rng.uniform(1, 4)),
                                                         math.inf))


EDGE_POOL_CASES = [
    PoolCase(2, (1, 1, 7, 7), 2, dict(stride=3)),                         # stride > kernel
    PoolCase(2, (1, 1, 7, 7), 2, dict(stride=3, ceil_mode=True)),
    PoolCase(2, (2, 3, 5, 6), 3, dict(stride=2, padding=1, ceil_mode=True)),   # overhanging
    PoolCase(2, (1, 2, 6, 5), (2, 3), dict(stride=(2, 2), padding=(1, 1), ceil_mode=True)),
    PoolCase(2, (1, 2, 5, 7), (3, 4), dict(stride=(2, 3), padding="same")),    # asymmetric same
    PoolCase(2, (2, 1, 4, 4), 4, dict(padding=((2, 1), (0, 2)))),
    PoolCase(2, (1, 1, 1, 1), 1, dict()),
    PoolCase(2, (1, 1, 1, 3), (1, 2), dict(stride=1, padding=(0, 1), ceil_mode=True)),
    PoolCase(1, (2, 2, 9), 4, dict(stride=3, padding=2, ceil_mode=True)),
    PoolCase(1, (1, 1, 5), 2, dict(stride=4, ceil_mode=True)),
    PoolCase(1, (1, 3, 8), 3, dict(stride=2, padding="same")),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", EDGE_POOL_CASES, ids=str)
def test_pools_cpu_match_reference_edge_cases(case, dtype):
    check_pools_cpu_vs_reference(case, dtype, seed=11, ps=(1.0, 2.0, 2.5, math.inf))


def _ceil_grid():
    """Every small 1D window geometry whose ceil_mode output differs from the floor one."""
    for n in range(1, 8):
        for k in range(1, 5):
            for s in range(1, 4):
                for pl in range(k // 2 + 1):
                    for pr in range(k // 2 + 1):
                        kw = dict(stride=s, padding=((pl, pr),))
                        try:
                            floor = nc.pool_geometry(1, (1, 1, n), k, **kw).OW
                        except ValueError:
                            continue
                        if nc.pool_geometry(1, (1, 1, n), k, **kw, ceil_mode=True).OW != floor:
                            yield PoolCase(1, (1, 2, n), k, dict(**kw, ceil_mode=True))


def test_ceil_mode_grid_cpu_matches_reference():
    cases = list(_ceil_grid())
    assert len(cases) > 40
    for i, case in enumerate(cases):
        check_pools_cpu_vs_reference(case, np.float64, seed=i, ps=(1.0, 2.5, math.inf))


def test_max_pool_ties_go_to_the_first_position_in_row_major_order():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5.0       # three equal maxima in window (0, 0)
    for device in DEVICES:
        y, idx = nc.max_pool2d(x, 2, return_indices=True, device=device)
        assert idx[0, 0, 0, 0] == 1            # (0, 1) comes first in row-major order
        np.testing.assert_array_equal(idx[0, 0], [[1, 2], [8, 10]])   # all-zero windows: first
        dx = nc.max_pool2d_backward(np.ones_like(y), idx, x.shape, 2, device=device)
        assert dx.sum() == 4 and dx[0, 0, 0, 1] == 1 and dx[0, 0, 1, 1] == 0


@pytest.mark.parametrize("dtype", FLOATS)
def test_max_pool_fast_paths_give_the_general_kernels_bits(dtype):
    """Max pooling without padding has fast paths on the CPU (windows all inside: no clipping;
    windows disjoint: each task owns a band of rows and puts gradients on the winners; 2x2
    windows at stride 2 written out over flat arrays, those tiling x exactly writing each
    element once), which the launchers pick.
    They must give exactly the general kernels' outputs, winners and gradients, ties and NaN
    included, and ignore a winner index outside its own window as the gather does."""
    from numconv.kernels.cpu import pool as cpu_pool
    rng = np.random.default_rng(9)
    for (H, W), (kh, kw), (sh, sw) in [((28, 28), (2, 2), (2, 2)), ((10, 9), (2, 3), (3, 3)),
                                       ((11, 13), (3, 3), (2, 2)), ((7, 8), (3, 2), (3, 2)),
                                       ((6, 6), (1, 1), (2, 1)), ((5, 9), (2, 2), (2, 4)),
                                       ((8, 6), (2, 2), (2, 2)), ((7, 9), (2, 2), (2, 2)),
                                       ((6, 8), (2, 2), (3, 2))]:
        x = rng.integers(-3, 3, (2, 3, H, W)).astype(dtype)     # many ties
        x[0, 0, 0, :3] = np.nan
        OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
        y, idx = np.empty((2, 3, OH, OW), dtype), np.empty((2, 3, OH, OW), np.int64)
        y2, idx2 = np.empty_like(y), np.empty_like(idx)
        cpu_pool._max_forward(y, idx, x, kh, kw, sh, sw, 0, 0)
        for fast in (cpu_pool._max_forward_interior, cpu_pool.maxpool2d_forward):
            y2[...], idx2[...] = 0, -1
            fast(y2, idx2, x, kh, kw, sh, sw, *((0, 0) if fast is cpu_pool.maxpool2d_forward
                                               else ()))
            np.testing.assert_array_equal(y, y2)
            np.testing.assert_array_equal(idx, idx2)
        if sh < kh or sw < kw:
            continue
        dy = rng.standard_normal(y.shape).astype(dtype)
        dy[0, 1, 0, 0] = np.inf                          # its window's other entries stay 0
        bad = idx.copy()
        bad[1, 2, 0, 0] = (H - 1) * W + W - 1            # inside x, outside window (0, 0)
        for winners in (idx, bad):
            dx, dx2 = np.full(x.shape, 7, dtype), np.full(x.shape, 7, dtype)
            cpu_pool._max_backward(dx, dy, winners, kh, kw, sh, sw, 0, 0)
            cpu_pool._max_backward_disjoint(dx2, dy, winners, kh, kw, sh, sw)
            np.testing.assert_array_equal(dx, dx2)
            dx2[...] = 7
            cpu_pool.maxpool2d_backward(dx2, dy, winners, kh, kw, sh, sw, 0, 0)
            np.testing.assert_array_equal(dx, dx2)


def test_global_max_ties_go_to_the_first_position():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 2, 0] = x[0, 0, 1, 2] = 1.0
    for device in DEVICES:
        _, idx = nc.global_pool(x, "max", return_indices=True, device=device)
        assert idx[0, 0] == 5


def test_max_pool_padding_never_wins():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3) - 100       # every input below 0
    for device in DEVICES:
        y = nc.max_pool2d(x, 3, stride=1, padding=1, device=device)
        assert (y < -100).all()
        np.testing.assert_array_equal(y[0, 0], [[-101, -101, -102], [-101, -101, -102],
                                                [-104, -104, -105]])


def test_avg_pool_divisors_follow_count_include_pad():
    x = np.ones((1, 1, 3, 3))
    for device in DEVICES:
        # padding counts in the divisor: a corner window holds 4 ones among 9 positions
        y = nc.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True, device=device)
        np.testing.assert_allclose(y[0, 0], [[4 / 9, 6 / 9, 4 / 9], [6 / 9, 1, 6 / 9],
                                             [4 / 9, 6 / 9, 4 / 9]])
        y = nc.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False, device=device)
        np.testing.assert_allclose(y[0, 0], np.ones((3, 3)))
        # ceil_mode: the last window hangs past the padded input; it divides by its clipped size
        y = nc.avg_pool1d(np.ones((1, 1, 5)), 2, stride=2, ceil_mode=True, device=device)
        np.testing.assert_allclose(y[0, 0], [1.0, 1.0, 1.0])


def test_lp_pool_special_cases():
    x = np.array([[[3.0, -4.0, 1.0, 2.0]]])
    for device in DEVICES:
        np.testing.assert_allclose(nc.lp_pool1d(x, 2, 2, device=device)[0, 0],
                                   [5.0, math.sqrt(5.0)])
        np.testing.assert_allclose(nc.lp_pool1d(x, 1, 2, device=device)[0, 0], [7.0, 3.0])
        np.testing.assert_array_equal(nc.lp_pool1d(x, math.inf, 2, device=device)[0, 0],
                                      nc.max_pool1d(x, 2, device=device)[0, 0])
        # a window of zeros has norm 0 and, by convention, gradient 0 (not NaN)
        z = np.zeros((1, 1, 4))
        y = nc.lp_pool1d(z, 2, 2, device=device)
        dx = nc.lp_pool1d_backward(np.ones_like(y), z, y, 2, 2, device=device)
        np.testing.assert_array_equal(dx, 0.0)


# --------------------------------------------------------------------------------- 'same' geometry

@settings(max_examples=150, deadline=None, database=None)
@given(n=st.integers(1, 40), k=st.integers(1, 9), s=st.integers(1, 6), d=st.integers(1, 4))
def test_same_padding_geometry(n, k, s, d):
    """'same' gives ceil(n / stride) outputs for any kernel, stride and dilation, with TensorFlow's
    split of the total padding (the odd one after); pooling's 'same' follows the same rule."""
    extent = (k - 1) * d + 1
    g = nc.conv_geometry(1, (1, 1, n), (1, 1, k), stride=s, padding="same", dilation=d)
    total = max((-(-n // s) - 1) * s + extent - n, 0)
    assert g.OW == -(-n // s)
    assert g.pads[1] == (total // 2, total - total // 2)
    # every output window starts inside the padded input and ends inside it
    assert (g.OW - 1) * s + extent <= n + total
    if k // 2 >= max(g.pads[1]) and d == 1:
        p = nc.pool_geometry(1, (1, 1, n), k, s, "same")
        assert p.OW == g.OW and p.pads[1] == g.pads[1]


# ------------------------------------------------------------------------------------- global pool

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 1, 1, 1), (3, 2, 7), (1, 4, 1), (2, 1, 1, 9)])
@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
def test_global_pool_cpu_matches_reference(kind, shape, dtype):
    rng = np.random.default_rng(len(shape) * 10 + shape[-1])
    x = rng.standard_normal(shape).astype(dtype)
    res = {d: nc.global_pool(x, kind, return_indices=True, device=d) for d in DEVICES}
    (y, idx), (y_ref, idx_ref) = res["cpu"], res["reference"]
    assert y.shape == shape[:2] and y.dtype == dtype
    assert_close(y, y_ref)
    flat = x.reshape(shape[:2] + (-1,)).astype(np.float64)
    want = {"max": flat.max(-1), "avg": flat.mean(-1), "sum": flat.sum(-1)}[kind]
    assert_close(y, want, dtype)
    if kind == "max":
        np.testing.assert_array_equal(idx, idx_ref)
        np.testing.assert_array_equal(idx, flat.argmax(-1))
    dy = rng.standard_normal(shape[:2]).astype(dtype)
    dxs = [nc.global_pool_backward(dy, idx, shape, kind, device=d) for d in DEVICES]
    assert dxs[0].shape == shape and dxs[0].dtype == dtype
    assert_close(dxs[0], dxs[1])


# ---------------------------------------------------------------------------------- SciPy parity
# Single channel, float64. scipy's 'same' centres the output inside the 'full' one; for odd kernels
# that is k // 2 on each side, exactly numconv's 'same'. For even kernels the two differ by one:
# numconv splits the k - 1 padding as TensorFlow does (before = (k-1)//2, the extra one after),
# scipy puts the extra one *before*: scipy 'same' == numconv padding (k // 2, (k - 1) // 2), for
# correlate and convolve alike (test_scipy_same_with_even_kernels pins this mapping).

SCIPY_FNS = {(2, "correlate"): nc.conv2d, (2, "convolve"): nc.convolve2d,
             (1, "correlate"): nc.conv1d, (1, "convolve"): nc.convolve1d}


def _scipy(op, x, w, mode):
    return getattr(scipy.signal, op)(x, w, mode=mode, method="direct")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("op", ["correlate", "convolve"])
@pytest.mark.parametrize("nd", [1, 2])
def test_scipy_parity(nd, op, mode, device):
    rng = np.random.default_rng([nd, len(op), len(mode)])
    for _ in range(6 if device == "cpu" else 2):
        size = tuple(int(v) for v in rng.integers(3, 9 if device == "cpu" else 6, size=nd))
        ks = tuple(int(v) for v in rng.integers(1, min(size) + 1, size=nd))
        if mode == "same":
            ks = tuple(k if k % 2 else k - 1 for k in ks)       # odd kernels (see above)
        x = rng.standard_normal(size)
        w = rng.standard_normal(ks)
        y = SCIPY_FNS[(nd, op)](x[None, None], w[None, None], padding=mode, device=device)
        assert_close(y[0, 0], _scipy(op, x, w, mode), err_msg=f"{size} {ks}")


@pytest.mark.parametrize("op", ["correlate", "convolve"])
@pytest.mark.parametrize("nd", [1, 2])
def test_scipy_same_with_even_kernels(nd, op):
    rng = np.random.default_rng(5)
    fn = SCIPY_FNS[(nd, op)]
    for _ in range(6):
        size = tuple(int(v) for v in rng.integers(4, 10, size=nd))
        ks = tuple(int(v) for v in rng.choice([2, 4, 3], size=nd))
        x = rng.standard_normal(size)
        w = rng.standard_normal(ks)
        want = _scipy(op, x, w, "same")
        scipy_split = tuple((k // 2, (k - 1) // 2) for k in ks)
        assert_close(fn(x[None, None], w[None, None], padding=scipy_split)[0, 0], want)
        tf_split = tuple(((k - 1) // 2, k // 2) for k in ks)
        y = fn(x[None, None], w[None, None], padding="same")[0, 0]
        assert_close(y, fn(x[None, None], w[None, None], padding=tf_split)[0, 0])
        if any(k % 2 == 0 for k in ks):
            assert not np.allclose(y, want)     # the documented difference is real


@pytest.mark.parametrize("mode", ["full", "valid"])
@pytest.mark.parametrize("op", ["correlate", "convolve"])
@pytest.mark.parametrize("nd", [1, 2])
def test_scipy_parity_strided_is_subsampled(nd, op, mode):
    """With stride s, 'valid' and 'full' outputs are scipy's, keeping every s-th position."""
    rng = np.random.default_rng(17)
    for _ in range(5):
        size = tuple(int(v) for v in rng.integers(4, 11, size=nd))
        ks = tuple(int(v) for v in rng.integers(1, 5, size=nd))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=nd))
        x = rng.standard_normal(size)
        w = rng.standard_normal(ks)
        y = SCIPY_FNS[(nd, op)](x[None, None], w[None, None], stride=stride, padding=mode)
        want = _scipy(op, x, w, mode)[tuple(slice(None, None, s) for s in stride)]
        assert_close(y[0, 0], want)


@pytest.mark.parametrize("nd", [1, 2])
def test_multichannel_conv_is_a_sum_of_scipy_correlations(nd):
    rng = np.random.default_rng(23)
    x = rng.standard_normal((2, 3) + (7,) * nd)
    w = rng.standard_normal((4, 3) + (3,) * nd)
    y = SCIPY_FNS[(nd, "correlate")](x, w, padding="same")
    for n in range(2):
        for o in range(4):
            want = sum(_scipy("correlate", x[n, c], w[o, c], "same") for c in range(3))
            assert_close(y[n, o], want)
