"""Determinism (bit-identical repeats and thread counts), non-contiguous inputs, and input
validation: every bad input raises ValueError/TypeError naming the parameter, before any kernel
runs.
"""
import functools
import math

import numba
import numpy as np
import pytest

import numconv as nc
from kernel_helpers import FLOATS, ConvCase, assert_bitwise_equal, assert_close, conv_kernel

# ----------------------------------------------------------------------------- what is exercised
# Each entry maps an op name to a function of a dict of inputs returning its outputs (a tuple), so
# the same list drives the repeat, thread-count and non-contiguity checks.

CONV_KW = dict(stride=1, padding=1)


@pytest.fixture(autouse=True)
def several_tiles(monkeypatch):
    """im2col tiles of 256 KB, so that these small shapes span several of them (the default's
    1 MB would take each in one tile, and the thread-count checks would prove little)."""
    monkeypatch.setattr(nc.config, "CPU_TILE_BYTES", 256 * 1024)

STRIDED_KW = dict(stride=2, padding=((1, 0), (0, 1)), dilation=(1, 2), groups=2)
POOL_KW = dict(stride=2, padding=1, ceil_mode=True)


def _inputs(dtype, seed=0, N=4, C=8, H=20, W=20, O=16):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, 3, 3)).astype(dtype)
    wg = rng.standard_normal((O, C // 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    y = nc.conv2d(x, w, b, **CONV_KW)
    ys = nc.conv2d(x, wg, b, **STRIDED_KW)
    _, pidx = nc.max_pool2d(x, 3, **POOL_KW, return_indices=True)
    _, gidx = nc.global_pool(x, "max", return_indices=True)
    return dict(
        x=x, w=w, wg=wg, b=b, x1=np.ascontiguousarray(x[:, :, 0, :]),
        w1=np.ascontiguousarray(w[:, :, 0, :]),
        w1wide=rng.standard_normal((40, C, 3)).astype(dtype),       # 40 maps: shifted products
        dy1wide=rng.standard_normal((N, 40, W)).astype(dtype),
        dy=rng.standard_normal(y.shape).astype(dtype),
        dys=rng.standard_normal(ys.shape).astype(dtype),
        dy1=rng.standard_normal((N, O, W)).astype(dtype),
        dyp=rng.standard_normal(pidx.shape).astype(dtype), pidx=pidx,
        dyg=rng.standard_normal((N, C)).astype(dtype), gidx=gidx,
        xpos=np.abs(x) + 0.1,
    )


def _forced(op, kernel):
    """With 8 and 16 channels 'auto' picks the direct kernels; this runs `op` by another kernel
    (im2col + BLAS, or one BLAS product per tap)."""
    def run(d):
        with conv_kernel(kernel):
            return OPS[op](d)
    return run


OPS = {
    "conv2d": lambda d: (nc.conv2d(d["x"], d["w"], d["b"], **CONV_KW),),
    "convolve2d": lambda d: (nc.convolve2d(d["x"], d["w"], d["b"], **CONV_KW),),
    "conv2d_strided_grouped": lambda d: (nc.conv2d(d["x"], d["wg"], d["b"], **STRIDED_KW),),
    "conv2d_dx": lambda d: (nc.conv2d_backward_input(d["dy"], d["w"], d["x"].shape, **CONV_KW),),
    "conv2d_dx_strided": lambda d: (nc.conv2d_backward_input(d["dys"], d["wg"], d["x"].shape,
                                                             **STRIDED_KW),),
    "conv2d_dw": lambda d: (nc.conv2d_backward_weight(d["dy"], d["x"], (3, 3), **CONV_KW),),
    "conv2d_dw_strided": lambda d: (nc.conv2d_backward_weight(d["dys"], d["x"], (3, 3),
                                                              **STRIDED_KW),),
    "conv2d_dw_flip": lambda d: (nc.conv2d_backward_weight(d["dy"], d["x"], (3, 3), **CONV_KW,
                                                           flip=True),),
    "conv2d_db": lambda d: (nc.conv2d_backward_bias(d["dy"]),),
    "conv1d": lambda d: (nc.conv1d(d["x1"], d["w1"], d["b"], padding=1),
                         nc.conv1d_backward_input(d["dy1"], d["w1"], d["x1"].shape, padding=1),
                         nc.conv1d_backward_weight(d["dy1"], d["x1"], 3, padding=1),
                         nc.conv1d_backward_bias(d["dy1"])),
    "max_pool2d": lambda d: nc.max_pool2d(d["x"], 3, **POOL_KW, return_indices=True),
    "max_pool2d_backward": lambda d: (nc.max_pool2d_backward(d["dyp"], d["pidx"], d["x"].shape, 3,
                                                             **POOL_KW),),
    "avg_pool2d": lambda d: (nc.avg_pool2d(d["x"], 3, **POOL_KW),
                             nc.avg_pool2d(d["x"], 3, **POOL_KW, count_include_pad=False)),
    "avg_pool2d_backward": lambda d: (
        nc.avg_pool2d_backward(d["dyp"], d["x"].shape, 3, **POOL_KW),
        nc.avg_pool2d_backward(d["dyp"], d["x"].shape, 3, **POOL_KW, count_include_pad=False)),
    "lp_pool2d": lambda d: (nc.lp_pool2d(d["x"], 2.5, 3, **POOL_KW),),
    "lp_pool2d_backward": lambda d: (nc.lp_pool2d_backward(
        d["dyp"], d["xpos"], nc.lp_pool2d(d["xpos"], 2.5, 3, **POOL_KW), 2.5, 3, **POOL_KW),),
    "pool1d": lambda d: (nc.max_pool1d(d["x1"], 3, 2, 1), nc.avg_pool1d(d["x1"], 3, 2, 1),
                         nc.lp_pool1d(d["x1"], 3, 3, 2, 1)),
    "global_pool": lambda d: tuple(nc.global_pool(d["x"], k) for k in ("max", "avg", "sum")),
    "global_pool_backward": lambda d: tuple(nc.global_pool_backward(d["dyg"], d["gidx"],
                                                                    d["x"].shape, k)
                                            for k in ("max", "avg", "sum")),
}
OPS.update({
    "conv1d_wide": lambda d: (nc.conv1d(d["x1"], d["w1wide"], padding=1),
                              nc.conv1d_backward_input(d["dy1wide"], d["w1wide"], d["x1"].shape,
                                                       padding=1),
                              nc.conv1d_backward_weight(d["dy1wide"], d["x1"], 3, padding=1)),
})
OPS.update({f"{op}_{kernel}": _forced(op, kernel) for kernel in ("im2col", "taps")
            for op in ("conv2d", "conv2d_dx", "conv2d_dw", "conv1d", "conv1d_wide")})
OPS.update({f"{op}_blocked": _forced(op, "blocked")
            for op in ("conv2d", "conv2d_dx", "conv2d_strided_grouped", "convolve2d")})


def test_forward_kernel_choice_follows_the_shape_and_the_setting(monkeypatch):
    from numconv import config
    from numconv.kernels.cpu.conv import conv_kernel as pick
    assert pick(6, 1, 5, 5, 1, 1, 1) == "direct"          # LeNet-5 C1
    assert pick(16, 6, 5, 5, 1, 1, 1) == "direct"         # LeNet-5 C3
    assert pick(64, 3, 3, 3, 1, 1, 1) == "direct"         # 64 maps, but only 27 taps each
    assert pick(64, 1, 3, 3, 1, 1, 64) == "direct"        # depthwise: one map per group
    assert pick(64, 64, 3, 3, 1, 1, 1) == "taps"          # ResNet: a BLAS product per tap
    assert pick(256, 96, 5, 5, 1, 1, 1) == "taps"         # AlexNet's conv2
    assert pick(128, 3, 5, 5, 1, 1, 1) == "im2col"        # 3 channels: too short a product
    assert pick(64, 64, 3, 3, 2, 2, 1) == "im2col"        # direct and taps need stride 1
    assert pick(16, 6, 5, 5, 2, 2, 1) == "im2col"
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "im2col")
    assert pick(6, 1, 5, 5, 1, 1, 1) == "im2col"
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "direct")
    assert pick(64, 64, 3, 3, 1, 1, 1) == "direct"
    assert pick(16, 6, 5, 5, 1, 2, 1) == "im2col"
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "taps")
    assert pick(6, 1, 5, 5, 1, 1, 1) == "taps"
    assert pick(16, 6, 5, 5, 2, 1, 1) == "im2col"
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "fast")
    x, w = np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"CPU_CONV_KERNEL is 'fast'.*'auto', 'direct', 'taps'"):
        nc.conv2d(x, w)
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "blocked")      # a forward pass only:
    assert pick(64, 64, 3, 3, 1, 1, 1) == "taps"                   # the gradients pick as auto


def test_weight_gradient_kernel_choice_follows_the_shape_and_the_setting(monkeypatch):
    from numconv import config
    from numconv.kernels.cpu.conv import weight_grad_kernel as pick
    assert pick(16, 16, 3, 3, 1, 1, 1) == "taps"          # CIFAR ResNet 16 -> 16: direct's
    assert pick(32, 32, 3, 3, 1, 1, 1) == "taps"          # shapes, but the taps' products
    assert pick(16, 8, 3, 3, 1, 1, 1) == "taps"
    assert pick(16, 3, 3, 3, 1, 1, 1) == "direct"         # 3 input channels
    assert pick(6, 1, 5, 5, 1, 1, 1) == "direct"          # LeNet-5 C1
    assert pick(8, 16, 3, 3, 1, 1, 1) == "direct"         # 8 maps
    assert pick(64, 1, 3, 3, 1, 1, 64) == "direct"        # depthwise
    assert pick(64, 64, 3, 3, 1, 1, 1) == "taps"          # as the forward pass
    assert pick(16, 16, 3, 3, 2, 2, 1) == "im2col"
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "direct")
    assert pick(16, 16, 3, 3, 1, 1, 1) == "direct"        # forced: as forced


def test_blocked_forward_choice_follows_the_shape_dtype_and_setting(monkeypatch):
    from numconv import config
    from numconv.kernels.cpu.conv import blocked_applies as pick
    f32, f64 = np.float32, np.float64
    # (dtype, O, Cg, KH, KW, sh, sw, groups, OH, OW)
    assert pick(f32, 16, 6, 5, 5, 1, 1, 1, 10, 10)                 # LeNet-5 C3: 150 taps
    assert not pick(f64, 16, 6, 5, 5, 1, 1, 1, 10, 10)             # float64 stays direct
    assert not pick(f32, 6, 1, 5, 5, 1, 1, 1, 28, 28)              # C1: 6 maps fill no lanes
    assert not pick(f32, 16, 3, 3, 3, 1, 1, 1, 32, 32)             # 27 taps
    assert not pick(f32, 20, 6, 5, 5, 1, 1, 1, 10, 10)             # not a multiple of 16
    assert pick(f32, 64, 64, 3, 3, 1, 1, 1, 56, 56)                # ResNet (the taps kernel's
    assert pick(f32, 256, 96, 5, 5, 1, 1, 1, 27, 27)               # shapes), AlexNet conv2
    assert pick(f32, 96, 256, 5, 5, 1, 1, 1, 27, 27)               # and its input gradient
    assert pick(f32, 384, 256, 3, 3, 1, 1, 1, 13, 13)              # 13x13: 169 of 170 output
    assert pick(f32, 512, 512, 3, 3, 1, 1, 1, 7, 7)                # 7x7: 49 of 50
    assert pick(f32, 512, 512, 3, 3, 1, 1, 1, 7, 7, N=32)          # 32 tasks, one an image
    assert not pick(f32, 512, 512, 3, 3, 1, 1, 1, 7, 7, N=1)       # 3 tasks: 49 of 70
    assert not pick(f32, 128, 128, 3, 3, 1, 1, 1, 4, 4)            # 4x4: 16 of 20, under 0.85
    assert not pick(f32, 100, 64, 3, 3, 1, 1, 1, 28, 28)           # not a multiple of 16
    assert not pick(f32, 256, 256, 1, 1, 1, 1, 1, 28, 28)          # 1x1: im2col's product
    assert pick(f32, 96, 3, 11, 11, 4, 4, 1, 55, 55)               # AlexNet conv1 (stride 4)
    assert pick(f32, 64, 3, 7, 7, 2, 2, 1, 112, 112)               # ResNet's stem
    assert pick(f32, 24, 3, 3, 3, 2, 2, 1, 16, 16)                 # 24 of 32 lanes used
    assert not pick(f32, 20, 3, 3, 3, 2, 2, 1, 16, 16)             # 20 of 32: im2col
    assert not pick(f32, 512, 256, 1, 1, 2, 2, 1, 14, 14)          # 1x1: im2col's product
    assert pick(f32, 16, 6, 5, 5, 1, 1, 1, 10, 4)                  # blocks run across rows
    assert not pick(f32, 16, 6, 5, 5, 1, 1, 1, 3, 3)               # 9 pixels: under a block
    assert not pick(f32, 16, 6, 5, 5, 1, 1, 1, 1, 9)               # one row: under a block
    assert pick(f32, 100, 300, 1, 4, 1, 1, 1, 1, 57)               # Kim's conv1d, 1 row
    assert pick(f32, 300, 100, 1, 4, 1, 1, 1, 1, 60)               # and its input gradient
    assert not pick(f32, 100, 20, 1, 5, 1, 1, 1, 1, 56)            # 100 taps
    assert not pick(f32, 20, 300, 1, 4, 1, 1, 1, 1, 57)            # 20 of 32 lanes
    assert not pick(f32, 128, 300, 1, 1, 1, 1, 1, 1, 57)           # 1x1: im2col's product
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "blocked")
    assert pick(f64, 6, 1, 5, 5, 1, 1, 1, 28, 28)
    assert pick(f64, 6, 1, 5, 5, 1, 1, 1, 28, 4) and not pick(f64, 6, 1, 5, 5, 1, 1, 1, 3, 3)
    assert pick(f64, 6, 1, 1, 3, 1, 1, 1, 1, 10) and not pick(f64, 6, 1, 1, 3, 1, 1, 1, 1, 9)
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "direct")
    assert not pick(f32, 16, 6, 5, 5, 1, 1, 1, 10, 10)


def test_blocked_cover_counts_each_tasks_last_block():
    from numconv.kernels.cpu.conv import _blocked_row_blocks, blocked_cover
    assert blocked_cover(10, 10) == 1.0
    assert blocked_cover(27, 27) == 729 / 730
    assert blocked_cover(7, 7, 3) == 49 / 70                       # rows 2, 2, 3: 14, 14, 21
    assert _blocked_row_blocks(1, 1, 7, 7) == 3                    # at least 2 rows a task
    assert _blocked_row_blocks(1, 1, 27, 27) == 8                  # CPU_MIN_TASKS
    assert _blocked_row_blocks(64, 1, 27, 27) == 1
    assert _blocked_row_blocks(1, 1, 3, 4) == 1                    # 12 pixels: one task


def test_blocked_weight_gradient_choice_follows_the_shape_dtype_and_setting(monkeypatch):
    from numconv import config
    from numconv.kernels.cpu.conv import blocked_weight_applies as pick
    f32, f64 = np.float32, np.float64
    # (dtype, O, Cg, KH, KW, sh, sw, groups)
    assert pick(f32, 16, 6, 5, 5, 1, 1, 1)                         # LeNet-5 C3
    assert pick(f32, 96, 3, 11, 11, 4, 4, 1)                       # AlexNet conv1
    assert pick(f32, 256, 96, 5, 5, 1, 1, 1)                       # AlexNet conv2
    assert not pick(f32, 6, 1, 5, 5, 1, 1, 1)                      # C1: 6 of 16 lanes
    assert not pick(f64, 16, 6, 5, 5, 1, 1, 1)
    assert not pick(f32, 64, 64, 3, 3, 1, 1, 1)                    # 3 taps a row: no block
    assert pick(f32, 100, 300, 1, 5, 1, 1, 1)                      # Kim's k5: channel pairs
    assert not pick(f32, 100, 1, 1, 5, 1, 1, 1)                    # one channel, one row
    assert not pick(f32, 32, 8, 5, 5, 1, 1, 2)                     # groups
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "blocked")
    assert pick(f64, 6, 1, 5, 5, 1, 1, 1) and not pick(f64, 6, 1, 5, 4, 1, 1, 1)
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "taps")
    assert not pick(f32, 16, 6, 5, 5, 1, 1, 1)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
@pytest.mark.parametrize("dtype", FLOATS)
def test_blocked_weight_gradient_over_segments_is_thread_count_independent(
        dtype, monkeypatch, restore_threads):
    """The blocked weight gradient with the batch cut into several segments (small
    CPU_BLOCKED_INPUT_BYTES), a partial lane block (20 maps), blocks of taps moved back (a 5x6
    kernel, 7 rows), blocks of channel pairs (kernels of odd height; 3 channels: the last pair
    moved back) and of kernel-row pairs (a 4x5 kernel), a conv1d's one-row kernel, and padding,
    strides and dilation: bit-identical with 1 and 2 threads, equal to the reference."""
    monkeypatch.setattr(nc.config, "CPU_BLOCKED_INPUT_BYTES", 4096)
    rng = np.random.default_rng(9)
    cases = [((9, 6, 14, 14), (16, 6, 5, 5), {}),
             ((5, 3, 17, 19), (20, 3, 7, 6), dict(padding=(2, 1), stride=(1, 2), dilation=(2, 1))),
             ((4, 2, 12, 13), (16, 2, 4, 5), dict(padding=1)),
             ((3, 5, 1, 30), (24, 5, 1, 5), dict(padding=(0, 2)))]
    for x_shape, w_shape, kw in cases:
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        dy = rng.standard_normal(nc.conv2d(x, w, **kw).shape).astype(dtype)
        out = {}
        with conv_kernel("blocked"):
            for n in (1, 2):
                numba.set_num_threads(n)
                out[n] = nc.conv2d_backward_weight(dy, x, w_shape[2:], **kw)
        assert_bitwise_equal(out[1], out[2])
        want = nc.conv2d_backward_weight(dy.astype(np.float64), x.astype(np.float64),
                                         w_shape[2:], **kw, device="reference")
        assert_close(out[1], want, dtype, factor=10 if dtype == np.float32 else 1)


def test_input_gradient_kernel_choice_follows_the_shape_and_the_setting(monkeypatch):
    from numconv import config
    from numconv.kernels.cpu.conv import input_grad_kernel as pick
    # (C, Og, KH, KW, sh, sw, groups, H, OH, OW, pt, dh, dw)
    assert pick(6, 16, 5, 5, 1, 1, 1, 14, 10, 10, 0, 1, 1) == "direct"       # LeNet-5 C3
    assert pick(64, 64, 3, 3, 1, 1, 1, 56, 56, 56, 1, 1, 1) == "taps"        # ResNet
    assert pick(256, 256, 3, 3, 1, 1, 1, 28, 28, 28, 1, 1, 1) == "taps"      # VGG
    assert pick(96, 256, 5, 5, 1, 1, 1, 27, 27, 27, 2, 1, 1) == "im2col"     # AlexNet conv2
    assert pick(300, 100, 1, 4, 1, 1, 1, 1, 1, 57, 0, 1, 1) == "conv1d"      # Kim CNN
    assert pick(64, 64, 3, 3, 2, 2, 1, 56, 28, 28, 1, 1, 1) == "im2col"      # stride 2
    # a full correlation over 3x3 outputs of a 5x5 kernel visits 11 x 7 / 9 ~ 8.6x the positions
    assert pick(64, 64, 5, 5, 1, 1, 1, 7, 3, 3, 0, 1, 1) == "im2col"
    monkeypatch.setattr(config, "CPU_CONV_KERNEL", "taps")
    assert pick(64, 64, 5, 5, 1, 1, 1, 7, 3, 3, 0, 1, 1) == "taps"
    assert pick(96, 256, 5, 5, 1, 1, 1, 27, 27, 27, 2, 1, 1) == "taps"
    assert pick(300, 100, 1, 4, 1, 1, 1, 1, 1, 57, 0, 1, 1) == "taps"


def test_determinism_shapes_span_several_tiles():
    """The shapes above cut the CPU kernels' work into several tiles (else the thread-count test
    would prove little); the large case below spans several weight-gradient segments too."""
    from numconv.kernels.cpu.conv import _tile_cols, _wgrad_chunks
    for itemsize in (4, 8):
        assert 4 * 20 * 20 > _tile_cols(8 * 9, itemsize)                     # >= 2 tiles
        assert _wgrad_chunks(8 * 9, itemsize, 4 * 20 * 20)[2] >= 2            # >= 2 segments
        assert _wgrad_chunks(8 * 9, itemsize, 8 * 32 * 32)[2] >= 2


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_direct_kernels_with_images_side_by_side_are_thread_count_independent(restore_threads):
    """LeNet-5's C3 at batch 32: the direct kernels put 4 images side by side per task."""
    from numconv.kernels.cpu.conv import _direct_tasks
    assert _direct_tasks(32, 1, 10, 16, 14, 4)[0] == 4
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((32, 16, 10, 10)).astype(np.float32)
    out = {}
    for n in (1, 2):
        numba.set_num_threads(n)
        out[n] = (nc.conv2d(x, w), nc.conv2d_backward_input(dy, w, x.shape),
                  nc.conv2d_backward_weight(dy, x, (5, 5)),
                  nc.conv2d_backward_bias(dy[:, :3]))       # 3 maps: 3 segments of images
    for a, b in zip(out[1], out[2]):
        assert_bitwise_equal(a, b)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
@pytest.mark.parametrize("dtype", FLOATS)
def test_blocked_kernel_over_row_blocks_and_partial_lanes_is_thread_count_independent(
        dtype, restore_threads):
    """The register-blocked forward pass where it cuts images into several row blocks (a batch of
    one and of three: at least CPU_MIN_TASKS tasks), runs blocks of 10 pixels on from one row
    into the next (12, 7 and 4 columns: a block over two or three rows) and moves each task's
    last block back, and fills 20 maps into two blocks of 16 lanes, strided, dilated and grouped:
    bit-identical with 1 and 2 threads, and equal to the reference."""
    rng = np.random.default_rng(8)
    cases = [((1, 6, 13, 16), (20, 6, 5, 5), dict(padding=(0, 0))),
             ((2, 5, 9, 9), (16, 5, 3, 3), dict(padding=(0, 0))),
             ((1, 4, 12, 8), (16, 4, 3, 3), dict(padding=(1, 0), dilation=(1, 2))),
             ((3, 4, 11, 14), (32, 2, 3, 3), dict(padding=(1, 0), groups=2)),
             ((2, 3, 23, 27), (24, 3, 5, 5), dict(stride=2, padding=2, dilation=(1, 2)))]
    for x_shape, w_shape, kw in cases:
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        out = {}
        with conv_kernel("blocked"):
            for n in (1, 2):
                numba.set_num_threads(n)
                out[n] = nc.conv2d(x, w, b, **kw)
        assert_bitwise_equal(out[1], out[2])
        want = nc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                         **kw, device="reference")
        assert_close(out[1], want, dtype)


@functools.lru_cache(maxsize=None)
def _transposed_store_caller():
    """An njit function that fills a stack buffer of sums from vals and hands it to
    blocked._store_transposed (compiled once for the module, per dtype)."""
    from numba import njit
    from numba.np.numpy_support import carray
    from numconv.kernels.cpu import blocked
    assert blocked.SUMS == 160                     # (the buffer's size must be a literal)

    @njit
    def store(out, vals, at, lanes):
        accp = blocked._stack_buffer(160, vals.dtype)
        acc = carray(accp, (blocked.PIXELS, blocked.LANES))
        for i in range(blocked.PIXELS):
            for o in range(blocked.LANES):
                acc[i, o] = vals[i, o]
        blocked._store_transposed(accp, out.ctypes.data + at * out.itemsize,
                                  out.shape[1] * out.itemsize, lanes)
    return store


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("lanes", [16, 5, 1])
def test_transposed_block_store_writes_each_lane_run_and_nothing_else(dtype, lanes):
    """blocked._store_transposed on its own: a block of sums in a stack buffer that stays in
    memory (filled by a loop; in the kernel LLVM keeps it in registers), so the buffer's reads
    must not assume more alignment than its elements'. Lane o < lanes lands as PIXELS
    consecutive values at the lane's address, in pixel order; every other element is
    untouched."""
    from numconv.kernels.cpu import blocked
    store = _transposed_store_caller()
    rng = np.random.default_rng(2)
    vals = rng.standard_normal((blocked.PIXELS, blocked.LANES)).astype(dtype)
    out = np.full((blocked.LANES + 1, 16), -7.0, dtype)
    store(out, vals, 3, lanes)
    want = np.full_like(out, -7.0)
    want[:lanes, 3:3 + blocked.PIXELS] = vals[:, :lanes].T
    assert_bitwise_equal(out, want)


@pytest.mark.parametrize("dtype", FLOATS)
def test_blocked_kernel_writes_a_non_contiguous_output_in_place(dtype):
    """The blocked forward pass writes its blocks by address into a C-contiguous output; given
    a strided view (the kernels' y is any (N, O, OH, OW) array) it fills the view, as the
    other kernels do, and leaves the rest of the parent array alone."""
    from numconv.kernels.cpu import conv as cpu_conv
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 12, 11)).astype(dtype)
    w = rng.standard_normal((20, 6, 3, 3)).astype(dtype)
    b = rng.standard_normal(20).astype(dtype)
    parent = np.full((2, 40, 10, 9), 7.0, dtype)
    y = parent[:, ::2]                                                # every other channel
    with conv_kernel("blocked"):
        cpu_conv.conv2d_forward(y, x, w, b, 1, 1, 0, 0, 1, 1, 1)
    want = nc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                     device="reference")
    assert_close(y, want, dtype)
    assert np.all(parent[:, 1::2] == 7.0)
    # and straight into a C-contiguous part of a larger array: the lanes past the 20th map of
    # the last lane block must write nothing (the next image's maps lie there)
    parent = np.full((2, 20, 10, 9), 7.0, dtype)
    with conv_kernel("blocked"):
        cpu_conv.conv2d_forward(parent[:1], x[:1], w, b, 1, 1, 0, 0, 1, 1, 1)
    assert_close(parent[:1], want[:1], dtype)
    assert np.all(parent[1] == 7.0)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
@pytest.mark.parametrize("dtype", FLOATS)
def test_blocked_kernel_on_one_row_conv1d_is_thread_count_independent(dtype, restore_threads):
    """The blocked kernel's one-row form (a conv1d: blocks of 10 along the row) forward and as
    the input gradient: the last block moved back (23 and 57 outputs), partial lanes (20 and 100
    maps), padding, stride and dilation, an input that is a transposed view; bit-identical with
    1 and 2 threads, equal to the reference."""
    rng = np.random.default_rng(11)
    cases = [((3, 8, 27), (20, 8, 5), {}),
             ((2, 30, 60), (100, 30, 4), {}),
             ((2, 6, 40), (16, 6, 3), dict(padding="same", dilation=2)),
             ((2, 6, 41), (24, 6, 3), dict(stride=2, padding=1))]
    for x_shape, w_shape, kw in cases:
        x = rng.standard_normal((x_shape[0], x_shape[2], x_shape[1])).astype(dtype)
        x = x.transpose(0, 2, 1)                                      # not contiguous
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        dy = rng.standard_normal(nc.conv1d(x, w, **kw).shape).astype(dtype)
        out = {}
        with conv_kernel("blocked"):
            for n in (1, 2):
                numba.set_num_threads(n)
                out[n] = (nc.conv1d(x, w, b, **kw), nc.conv1d_backward_input(dy, w, x.shape, **kw))
        for a, c in zip(out[1], out[2]):
            assert_bitwise_equal(a, c)
        f64 = lambda a: a.astype(np.float64)                          # noqa: E731
        want = (nc.conv1d(f64(x), f64(w), f64(b), **kw, device="reference"),
                nc.conv1d_backward_input(f64(dy), f64(w), x.shape, **kw, device="reference"))
        for got, ref in zip(out[1], want):
            assert_close(got, ref, dtype)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_taps_kernels_over_many_blocks_and_segments_are_thread_count_independent(restore_threads):
    """A 40-to-80-channel 3x3 layer 'auto' gives the taps kernels: its forward pass and input
    gradient run in blocks of a few rows, its weight gradient over several segments of blocks; a
    second case puts small images side by side."""
    from numconv.kernels.cpu.conv import _taps_tasks, conv_kernel as pick
    rng = np.random.default_rng(6)
    for N, S in ((6, 24), (40, 6)):
        x = rng.standard_normal((N, 40, S, S)).astype(np.float32)
        w = rng.standard_normal((80, 40, 3, 3)).astype(np.float32)
        dy = rng.standard_normal((N, 80, S, S)).astype(np.float32)
        assert pick(80, 40, 3, 3, 1, 1, 1) == pick(40, 80, 3, 3, 1, 1, 1) == "taps"
        side, rows = _taps_tasks(N, 1, S, S + 1, nc.config.CPU_TAPS_COLS)   # pitch S + 1
        assert (side > 1) == (S == 6) and -(-N // side) * -(-S // rows) >= 8
        out = {}
        for n in (1, 2):
            numba.set_num_threads(n)
            out[n] = (nc.conv2d(x, w, padding=1),
                      nc.conv2d_backward_input(dy, w, x.shape, padding=1),
                      nc.conv2d_backward_weight(dy, x, (3, 3), padding=1))
        for a, b in zip(out[1], out[2]):
            assert_bitwise_equal(a, b)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_shifted_conv1d_over_many_blocks_and_segments_is_thread_count_independent(
        restore_threads):
    """16 sentences of 200 tokens: the shifted products run in 8 blocks of rows and the weight
    gradient in 3 segments (a Kim-CNN-like layer of 40 maps)."""
    from numconv.kernels.cpu.conv import _shifted_rows
    assert -(-16 * 204 // _shifted_rows(16, 204)) == 8 and 16 * 204 // 1024 == 3
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 16, 200)).astype(np.float32)
    w = rng.standard_normal((40, 16, 5)).astype(np.float32)
    dy = rng.standard_normal((16, 40, 200)).astype(np.float32)
    out = {}
    for n in (1, 2):
        numba.set_num_threads(n)
        out[n] = (nc.conv1d(x, w, padding="same"),
                  nc.conv1d_backward_input(dy, w, x.shape, padding="same"),
                  nc.conv1d_backward_weight(dy, x, 5, padding="same"))
    for a, b in zip(out[1], out[2]):
        assert_bitwise_equal(a, b)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_repeats_are_bit_identical(op, dtype):
    d = _inputs(dtype)
    first = OPS[op](d)
    for _ in range(3):
        for a, b in zip(first, OPS[op](d)):
            assert_bitwise_equal(a, b, op)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_bit_identical_across_thread_counts(op, dtype, restore_threads):
    d = _inputs(dtype)
    results = {}
    for n in (1, 2):
        numba.set_num_threads(n)
        results[n] = OPS[op](d)
    for a, b in zip(results[1], results[2]):
        assert_bitwise_equal(a, b, op)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
@pytest.mark.parametrize("dtype", FLOATS)
def test_weight_gradient_over_several_segments_is_thread_count_independent(dtype,
                                                                          restore_threads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 8, 32, 32)).astype(dtype)      # 8192 columns: many tiles
    dy = rng.standard_normal((8, 16, 32, 32)).astype(dtype)
    out = {}
    for n in (1, 2, 1):
        numba.set_num_threads(n)
        out.setdefault(n, []).append(nc.conv2d_backward_weight(dy, x, (3, 3), padding=1))
    assert_bitwise_equal(out[1][0], out[2][0])
    assert_bitwise_equal(out[1][0], out[1][1])


@pytest.mark.parametrize("dtype", FLOATS)
def test_weight_gradient_with_several_chunks_per_segment(dtype, monkeypatch, restore_threads):
    """Few segments of several chunks each (the last one ragged): the chunks' products are summed
    into their segment in order, and the result is the reference's, on any thread count."""
    from numconv import config
    from numconv.kernels.cpu.conv import _wgrad_chunks
    monkeypatch.setattr(config, "CPU_WGRAD_CHUNK_BYTES", 1024)
    monkeypatch.setattr(config, "CPU_WGRAD_MAX_SEGMENTS", 3)
    monkeypatch.setattr(config, "CPU_TILE_MIN_COLS", 8)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 11, 13)).astype(dtype)
    dy = rng.standard_normal((3, 6, 6, 7)).astype(dtype)
    kw = dict(stride=2, padding=1)
    chunk, per_seg, nseg = _wgrad_chunks(4 * 9, x.itemsize, 3 * 6 * 7)
    assert per_seg > 1 and nseg == 3 and (3 * 6 * 7) % chunk
    want = nc.conv2d_backward_weight(dy, x, (3, 3), **kw, device="reference")
    runs = []
    for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(n)
        runs.append(nc.conv2d_backward_weight(dy, x, (3, 3), **kw))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(runs[0], want, rtol=tol, atol=tol)
    assert_bitwise_equal(runs[0], runs[1])


def test_blas_thread_count_is_left_as_it_was():
    """The CPU convolution pins BLAS to one thread while it runs, and must put it back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"]

    d = _inputs(np.float64, N=2, C=4, H=9, W=9, O=4)
    before = blas_threads()
    OPS["conv2d"](d)
    OPS["conv2d_dx"](d)
    OPS["conv2d_dw"](d)
    assert blas_threads() == before


# ------------------------------------------------------------------------ non-contiguous inputs

class _Recorder(dict):
    """The inputs dict, noting which entries an op reads."""

    def __init__(self, *args):
        super().__init__(*args)
        self.names = set()

    def __getitem__(self, name):
        self.names.add(name)
        return super().__getitem__(name)


def _views(a):
    """Arrays equal to `a` but not C-contiguous: transposed storage and Fortran order (2D and
    up), a strided slice of a larger array, reversed strides."""
    if a.ndim >= 2:
        yield "transposed", np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
        yield "fortran", np.asfortranarray(a)
    big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
    big[tuple(slice(1, None, 2) for _ in a.shape)] = a
    yield "strided", big[tuple(slice(1, None, 2) for _ in a.shape)]
    yield "reversed", np.flip(np.flip(a, -1).copy(), -1)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_non_contiguous_inputs_match_contiguous_copies(op, dtype):
    d = _inputs(dtype, N=2, C=4, H=7, W=6, O=4)
    used = _Recorder(d)
    want = OPS[op](used)
    for name in sorted(used.names):
        for kind, view in _views(d[name]):
            assert not view.flags.c_contiguous
            np.testing.assert_array_equal(view, d[name])
            got = OPS[op]({**d, name: view})
            for a, b in zip(got, want):
                assert_bitwise_equal(a, b, f"{op} with {name} {kind}")


# ------------------------------------------------------------------------------------ bad inputs

R = np.random.default_rng(0)
X = R.standard_normal((2, 3, 5, 5))
W = R.standard_normal((4, 3, 3, 3))
B = R.standard_normal(4)
DY = np.ones((2, 4, 3, 3))
X1 = R.standard_normal((2, 3, 7))
W1 = R.standard_normal((4, 3, 3))
YP, IDX = nc.max_pool2d(X, 2, return_indices=True)
DYP = np.ones(YP.shape)
YLP = nc.lp_pool2d(X, 2, 2)
GY, GIDX = nc.global_pool(X, "max", return_indices=True)

BAD = {
    # wrong number of dimensions
    "x-ndim": (lambda: nc.conv2d(X[0], W), ValueError, r"x must have 4 dimensions"),
    "w-ndim": (lambda: nc.conv2d(X, W[0]), ValueError, r"w must have 4 dimensions"),
    "conv1d-x-ndim": (lambda: nc.conv1d(X, W1), ValueError, r"x must have 3 dimensions"),
    "conv1d-w-ndim": (lambda: nc.conv1d(X1, W), ValueError, r"w must have 3 dimensions"),
    "dy-ndim": (lambda: nc.conv2d_backward_input(DY[0], W, X.shape), ValueError,
                r"dy must have 4 dimensions"),
    "db-dy-ndim": (lambda: nc.conv2d_backward_bias(DY[0]), ValueError, r"dy must have 4"),
    "pool-x-ndim": (lambda: nc.max_pool2d(X1, 2), ValueError, r"x must have 4 dimensions"),
    "pool1d-x-ndim": (lambda: nc.avg_pool1d(X, 2), ValueError, r"x must have 3 dimensions"),
    "global-x-ndim": (lambda: nc.global_pool(X[None], "avg"), ValueError, r"x must have"),
    "input_shape-len": (lambda: nc.conv2d_backward_input(DY, W, (2, 3, 5)), ValueError,
                        r"input_shape"),
    "pool-input_shape-len": (lambda: nc.max_pool2d_backward(DYP, IDX, (2, 3, 5), 2), ValueError,
                             r"input_shape"),
    "global-input_shape-len": (lambda: nc.global_pool_backward(GY, GIDX, (2, 3), "max"),
                               ValueError, r"input_shape"),
    # channels and groups
    "channel-mismatch": (lambda: nc.conv2d(X, W[:, :2]), ValueError,
                         r"channel mismatch: x has 3 channels"),
    "channel-mismatch-1d": (lambda: nc.conv1d(X1, W1[:, :1]), ValueError, r"channel mismatch"),
    "channel-mismatch-dx": (lambda: nc.conv2d_backward_input(DY, W, (2, 2, 5, 5)), ValueError,
                            r"channel mismatch"),
    "groups-not-dividing-C": (lambda: nc.conv2d(X, W[:, :1], groups=2), ValueError,
                              r"groups=2 does not divide the 3 input channels"),
    "groups-not-dividing-O": (lambda: nc.conv2d(np.ones((1, 4, 5, 5)), np.ones((3, 2, 3, 3)),
                                                groups=2), ValueError,
                              r"groups=2 does not divide the 3 output channels"),
    "groups-not-dividing-dw": (lambda: nc.conv2d_backward_weight(DY, X, 3, groups=2), ValueError,
                               r"groups=2 does not divide"),
    "groups-zero": (lambda: nc.conv2d(X, W, groups=0), ValueError, r"groups must be >= 1"),
    "groups-float": (lambda: nc.conv2d(X, W, groups=1.0), TypeError, r"groups must be"),
    # kernel extent
    "kernel-too-large": (lambda: nc.conv2d(X, np.ones((1, 3, 7, 7))), ValueError,
                         r"kernel extent 7 is larger than the padded input 5"),
    "dilated-kernel-too-large": (lambda: nc.conv2d(X, W, dilation=3), ValueError,
                                 r"kernel extent 7 is larger"),
    "kernel-too-large-1d": (lambda: nc.conv1d(X1, np.ones((1, 3, 9))), ValueError,
                            r"kernel extent 9 is larger than the padded input 7"),
    "kernel-too-large-dw": (lambda: nc.conv2d_backward_weight(DY, X, 6), ValueError,
                            r"kernel extent 6"),
    "pool-kernel-too-large": (lambda: nc.max_pool2d(X, 6), ValueError, r"kernel extent 6"),
    # non-positive sizes
    "stride-zero": (lambda: nc.conv2d(X, W, stride=0), ValueError, r"stride must be >= 1"),
    "stride-negative": (lambda: nc.conv2d(X, W, stride=(1, -1)), ValueError,
                        r"stride must be >= 1"),
    "dilation-zero": (lambda: nc.conv2d(X, W, dilation=0), ValueError, r"dilation must be >= 1"),
    "dilation-zero-1d": (lambda: nc.conv1d(X1, W1, dilation=0), ValueError, r"dilation"),
    "stride-wrong-length": (lambda: nc.conv2d(X, W, stride=(1, 1, 1)), TypeError,
                            r"stride must be an int or a tuple of 2 ints"),
    "stride-float": (lambda: nc.conv2d(X, W, stride=1.5), TypeError, r"stride"),
    "stride-bool": (lambda: nc.conv2d(X, W, stride=True), TypeError, r"stride"),
    "dw-kernel_size-zero": (lambda: nc.conv2d_backward_weight(DY, X, 0), ValueError,
                            r"kernel_size must be >= 1"),
    "pool-kernel_size-zero": (lambda: nc.max_pool2d(X, 0), ValueError,
                              r"kernel_size must be >= 1"),
    "pool-kernel_size-negative": (lambda: nc.avg_pool2d(X, (2, -1)), ValueError, r"kernel_size"),
    "pool-stride-zero": (lambda: nc.avg_pool1d(X1, 2, stride=0), ValueError,
                         r"stride must be >= 1"),
    "lp-kernel_size-zero": (lambda: nc.lp_pool2d(X, 2, 0), ValueError, r"kernel_size"),
    # padding
    "padding-mode-unknown": (lambda: nc.conv2d(X, W, padding="circular"), ValueError,
                             r"padding mode 'circular' is unknown"),
    "pool-padding-mode-unknown": (lambda: nc.max_pool2d(X, 2, padding="reflect"), ValueError,
                                  r"padding mode 'reflect' is unknown"),
    "padding-negative": (lambda: nc.conv2d(X, W, padding=-1), ValueError,
                         r"padding must be >= 0"),
    "padding-pair-negative": (lambda: nc.conv2d(X, W, padding=((0, -1), (0, 0))), ValueError,
                              r"padding must be >= 0"),
    "padding-wrong-count": (lambda: nc.conv2d(X, W, padding=(1, 1, 1)), ValueError,
                            r"padding .* must give 2 value"),
    "padding-float": (lambda: nc.conv2d(X, W, padding=1.5), TypeError, r"padding"),
    "padding-bad-entry": (lambda: nc.conv2d(X, W, padding=((1, 2, 3), 1)), TypeError,
                          r"padding"),
    "pool-padding-over-half": (lambda: nc.max_pool2d(X, 3, padding=2), ValueError,
                               r"padding 2 is more than half the kernel"),
    "pool-padding-pair-over-half": (lambda: nc.avg_pool2d(X, 3, padding=((0, 2), (0, 0))),
                                    ValueError, r"more than half the kernel"),
    "lp-padding-over-half": (lambda: nc.lp_pool1d(X1, 2, 2, padding=2), ValueError,
                             r"more than half the kernel"),
    "pool-full-padding": (lambda: nc.max_pool2d(X, 3, padding="full"), ValueError,
                          r"more than half the kernel"),
    "same-with-ceil_mode": (lambda: nc.max_pool2d(X, 2, padding="same", ceil_mode=True),
                            ValueError, r"padding='same'.*ceil_mode must be False"),
    "same-with-ceil_mode-avg-bwd": (lambda: nc.avg_pool2d_backward(
        DYP, X.shape, 2, padding="same", ceil_mode=True), ValueError, r"ceil_mode"),
    # dtypes
    "x-int": (lambda: nc.conv2d(X.astype(np.int64), W), TypeError, r"x has dtype int64"),
    "w-int": (lambda: nc.conv2d(X, W.astype(np.int32)), TypeError, r"w has dtype int32"),
    "b-int": (lambda: nc.conv2d(X, W, B.astype(np.int64)), TypeError, r"b has dtype int64"),
    "dy-int": (lambda: nc.conv2d_backward_weight(DY.astype(int), X, 3), TypeError,
               r"dy has dtype"),
    "x-float16": (lambda: nc.conv2d(X.astype(np.float16), W), TypeError, r"x has dtype float16"),
    "pool-x-int": (lambda: nc.max_pool2d(X.astype(np.int64), 2), TypeError, r"x has dtype"),
    "pool-dy-int": (lambda: nc.avg_pool2d_backward(DYP.astype(int), X.shape, 2), TypeError,
                    r"dy has dtype"),
    "global-x-int": (lambda: nc.global_pool(X.astype(np.int64), "sum"), TypeError,
                     r"x has dtype"),
    "x-list": (lambda: nc.conv2d(X.tolist(), W), TypeError, r"x must be a numpy array"),
    "pool-x-list": (lambda: nc.max_pool2d(X.tolist(), 2), TypeError, r"x must be a numpy array"),
    "mixed-x32-w64": (lambda: nc.conv2d(X.astype(np.float32), W), TypeError,
                      r"w is float64 but x is float32"),
    "mixed-b": (lambda: nc.conv2d(X, W, B.astype(np.float32)), TypeError,
                r"b is float32 but x is float64"),
    "mixed-dx": (lambda: nc.conv2d_backward_input(DY.astype(np.float32), W, X.shape), TypeError,
                 r"w is float64 but dy is float32"),
    "mixed-dw": (lambda: nc.conv2d_backward_weight(DY, X.astype(np.float32), 3), TypeError,
                 r"x is float32 but dy is float64"),
    "mixed-1d": (lambda: nc.conv1d(X1, W1.astype(np.float32)), TypeError, r"w is float32"),
    # empty arrays
    "x-empty": (lambda: nc.conv2d(np.empty((0, 3, 5, 5)), W), ValueError, r"x is empty"),
    "w-empty": (lambda: nc.conv2d(X, np.empty((0, 3, 3, 3))), ValueError, r"w is empty"),
    "b-empty": (lambda: nc.conv2d(X, W, np.empty(0)), ValueError, r"b is empty"),
    "dy-empty": (lambda: nc.conv2d_backward_bias(np.empty((2, 0, 3, 3))), ValueError,
                 r"dy is empty"),
    "pool-x-empty": (lambda: nc.avg_pool2d(np.empty((2, 3, 0, 5)), 2), ValueError,
                     r"x is empty"),
    "global-x-empty": (lambda: nc.global_pool(np.empty((2, 0, 4)), "max"), ValueError,
                       r"x is empty"),
    # bias
    "b-length": (lambda: nc.conv2d(X, W, B[:3]), ValueError,
                 r"b has 3 entries but w has 4 output channels"),
    "b-ndim": (lambda: nc.conv2d(X, W, B[None]), ValueError, r"b must have 1 dimensions"),
    # dy of the wrong shape
    "dy-shape-dx": (lambda: nc.conv2d_backward_input(DY[:, :, :2], W, X.shape), ValueError,
                    r"dy has shape \(2, 4, 2, 3\) but the convolution's output has shape"),
    "dy-shape-dw": (lambda: nc.conv2d_backward_weight(DY, X, 3, padding=1), ValueError,
                    r"dy has shape"),
    "dy-shape-dx-1d": (lambda: nc.conv1d_backward_input(np.ones((2, 4, 4)), W1, X1.shape),
                       ValueError, r"dy has shape"),
    "dy-shape-max": (lambda: nc.max_pool2d_backward(DYP[:1], IDX[:1], X.shape, 2, stride=1),
                     ValueError, r"dy has shape"),
    "dy-shape-avg": (lambda: nc.avg_pool2d_backward(DYP, X.shape, 2, ceil_mode=True), ValueError,
                     r"dy has shape"),
    "dy-shape-lp": (lambda: nc.lp_pool2d_backward(DYP, X, YLP, 2, 3), ValueError,
                    r"dy has shape"),
    "y-shape-lp": (lambda: nc.lp_pool2d_backward(DYP, X, YLP[:, :1], 2, 2), ValueError,
                   r"y must be the forward output"),
    "dy-shape-global": (lambda: nc.global_pool_backward(GY[:1], GIDX[:1], X.shape, "max"),
                        ValueError, r"dy has shape"),
    "idx-float": (lambda: nc.max_pool2d_backward(DYP, IDX.astype(float), X.shape, 2), ValueError,
                  r"idx must be the integer index array"),
    "idx-shape": (lambda: nc.max_pool2d_backward(DYP, IDX[:, :, :1], X.shape, 2), ValueError,
                  r"idx"),
    "idx-missing-global-max": (lambda: nc.global_pool_backward(GY, None, X.shape, "max"),
                               ValueError, r"needs idx"),
    # Lp norm order
    "p-below-1": (lambda: nc.lp_pool2d(X, 0.5, 2), ValueError, r"p must be >= 1"),
    "p-zero-bwd": (lambda: nc.lp_pool2d_backward(DYP, X, YLP, 0, 2), ValueError,
                   r"p must be >= 1"),
    "p-negative-1d": (lambda: nc.lp_pool1d(X1, -2, 2), ValueError, r"p must be >= 1"),
    "p-nan": (lambda: nc.lp_pool2d(X, math.nan, 2), ValueError, r"p must be >= 1"),
    "p-string": (lambda: nc.lp_pool2d(X, "two", 2), TypeError, r"p must be a number"),
    # global pooling kind
    "global-kind": (lambda: nc.global_pool(X, "median"), ValueError,
                    r"kind 'median' is unknown"),
    "global-kind-bwd": (lambda: nc.global_pool_backward(GY, GIDX, X.shape, "min"), ValueError,
                        r"kind 'min' is unknown"),
    # device
    "device-unknown": (lambda: nc.conv2d(X, W, device="tpu"), ValueError,
                       r"device 'tpu' is unknown"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_raise_naming_the_parameter(name):
    call, exc, match = BAD[name]
    with pytest.raises(exc, match=match):
        call()


def test_every_error_is_a_value_or_type_error_before_any_kernel_runs(monkeypatch):
    """Validation happens in the ops layer: with the kernels replaced by a tripwire, every bad
    input above still raises its error."""
    import numconv.ops._device as device

    def tripwire(_device):
        raise AssertionError("a kernel module was requested for invalid input")

    monkeypatch.setattr(device, "kernels_for", tripwire)
    import numconv.ops.conv as conv_ops
    import numconv.ops.pool as pool_ops
    monkeypatch.setattr(conv_ops, "kernels_for", tripwire)
    monkeypatch.setattr(pool_ops, "kernels_for", tripwire)
    for name, (call, exc, match) in BAD.items():
        if name == "device-unknown":
            continue
        with pytest.raises(exc, match=match):
            call()


# ---------------------------------------------------------------- validation gaps (numconv bugs)

@pytest.mark.parametrize("which", ["dy32", "y32", "x32"])
def test_lp_backward_rejects_mixed_dtypes(which):
    x, y, dy = X, YLP, np.ones(YLP.shape)
    if which == "dy32":
        dy = dy.astype(np.float32)
    elif which == "y32":
        y = y.astype(np.float32)
    else:
        x = x.astype(np.float32)
    with pytest.raises(TypeError, match=r"float32"):
        nc.lp_pool2d_backward(dy, x, y, 2, 2)


def test_global_pool_backward_rejects_idx_of_the_wrong_shape():
    with pytest.raises((ValueError, TypeError)) as info:
        nc.global_pool_backward(GY, GIDX[0], X.shape, "max")
    assert not isinstance(info.value, numba.core.errors.NumbaError)
    assert "idx" in str(info.value).splitlines()[0]


def test_global_pool_backward_rejects_idx_outside_the_input():
    with pytest.raises(ValueError, match=r"idx"):
        nc.global_pool_backward(GY, np.full(GY.shape, -1), X.shape, "max")


@pytest.mark.parametrize("device", ["cpu", "reference"])
def test_max_pool_backward_rejects_idx_outside_the_input(device):
    with pytest.raises(ValueError, match=r"idx"):
        nc.max_pool2d_backward(DYP, np.full(IDX.shape, 1000), X.shape, 2, device=device)


# ------------------------------------------------------------------------------ Linear on the CPU

def _linear_all(x, w, b, dy):
    from numconv.ops import nn as F
    y = F.linear_forward(x, w, b)
    dx, dw, db = F.linear_backward(dy, x, w)
    return y, dx, dw, db


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
@pytest.mark.parametrize("dtype", FLOATS)
def test_linear_over_many_blocks_matches_numpy_whatever_the_thread_count(dtype, monkeypatch,
                                                                         restore_threads):
    """Linear's products run as fixed blocks, one single-threaded BLAS call each: with blocks
    forced small (several rows and columns of blocks per product) the results agree with NumPy's
    products and are bit-identical on 1 and 2 threads; the BLAS thread count is put back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from numconv import config
    from numconv.kernels.cpu import linear
    monkeypatch.setattr(config, "CPU_LINEAR_BLOCK_FLOPS", 2 * 20 * 37 * 23 // 40)
    monkeypatch.setattr(config, "CPU_LINEAR_MIN_SIDE", 2)
    monkeypatch.setattr(config, "CPU_LINEAR_MAX_BLOCKS", 64)
    for shape in ((20, 37, 23), (20, 23, 37), (23, 20, 37)):      # forward, dx, dw products
        rows, cols = linear._blocks(*shape)
        assert rows > 1 and cols > 1, (shape, rows, cols)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20, 37)).astype(dtype)
    w = rng.standard_normal((23, 37)).astype(dtype)
    b = rng.standard_normal(23).astype(dtype)
    dy = rng.standard_normal((20, 23)).astype(dtype)

    def blas_threads():
        return [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"]
    before = blas_threads()
    results = {}
    for n in (1, 2):
        numba.set_num_threads(n)
        results[n] = _linear_all(x, w, b, dy)
    assert blas_threads() == before
    for a, c in zip(results[1], results[2]):
        assert_bitwise_equal(a, c, "linear")
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for got, want in zip(results[2], (x @ w.T + b, dy @ w, dy.T @ x, dy.sum(axis=0))):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)


def test_linear_accepts_views_and_mixed_precision():
    """Transposed (non-contiguous) inputs and a float32/float64 mix give NumPy's answer in the
    wider type."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    wT = rng.standard_normal((5, 4))                      # float64, used as w = wT.T (a view)
    dyT = rng.standard_normal((4, 7)).astype(np.float32)
    y, dx, dw, db = _linear_all(x, wT.T, None, dyT.T)
    assert y.dtype == dx.dtype == dw.dtype == db.dtype == np.float64
    x64, dy64 = x.astype(np.float64), dyT.T.astype(np.float64)
    np.testing.assert_allclose(y, x64 @ wT, rtol=1e-12)
    np.testing.assert_allclose(dx, dy64 @ wT.T, rtol=1e-12)
    np.testing.assert_allclose(dw, dy64.T @ x64, rtol=1e-12)
    np.testing.assert_allclose(db, dy64.sum(axis=0), rtol=1e-12)


def test_direct_and_taps_pitch_pays_for_two_sided_padding_once():
    """The flat rows' pitch: the zeros after one image's row are the next one's left padding."""
    from numconv.kernels.cpu.conv import _pitch
    assert _pitch(10, 14, 0, 4) == 14        # LeNet-5 C3 forward: no padding to share
    assert _pitch(14, 10, 4, 4) == 14        # its input gradient, dy padded by 4 each side: not 18
    assert _pitch(28, 28, 2, 4) == 30        # 'same' 5x5 at 28x28: pl + W, not 32
    assert _pitch(9, 4, 6, 2) == 10          # padding past the kernel's extent: pl + W
    from kernel_helpers import (numpy_conv2d, numpy_conv2d_backward_input,
                                numpy_conv2d_backward_weight)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 40, 9, 7))
    w = rng.standard_normal((40, 40, 3, 5))
    one = (1, 1)
    for kernel in ("direct", "taps"):
        with conv_kernel(kernel):
            for padding in (((1, 1), (4, 4)), ((0, 2), (6, 1)), ((2, 0), (0, 5))):
                y = nc.conv2d(x, w, padding=padding)
                dy = rng.standard_normal(y.shape)
                dx = nc.conv2d_backward_input(dy, w, x.shape, padding=padding)
                dw = nc.conv2d_backward_weight(dy, x, (3, 5), padding=padding)
                msg = f"{kernel} {padding}"
                np.testing.assert_allclose(y, numpy_conv2d(x, w, one, padding, one, 1),
                                           rtol=1e-10, atol=1e-10, err_msg=msg)
                np.testing.assert_allclose(
                    dx, numpy_conv2d_backward_input(dy, w, x.shape, one, padding, one, 1),
                    rtol=1e-10, atol=1e-10, err_msg=msg)
                np.testing.assert_allclose(
                    dw, numpy_conv2d_backward_weight(dy, x, (3, 5), one, padding, one, 1),
                    rtol=1e-10, atol=1e-10, err_msg=msg)


def _cpu_has_fma():
    try:
        with open("/proc/cpuinfo") as f:
            return " fma " in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _cpu_has_fma(), reason="needs an x86-64 CPU with FMA (/proc/cpuinfo)")
def test_blocked_kernel_compiles_to_packed_fmas_and_restores_the_slp_setting(tmp_path):
    """The blocked kernel's sums stay in vector registers only when Numba's SLP vectoriser runs
    as it compiles (blocked.slp_vectorized): compiled fresh (an empty cache) the inner loops of
    its forward pass and weight gradient have packed fused multiply-adds, and the setting is as
    it was afterwards."""
    import os
    import subprocess
    import sys
    code = (
        "import numba, numpy as np, re\n"
        "import numconv as nc\n"
        "from numconv.kernels.cpu import blocked\n"
        "x = np.ones((1, 6, 14, 14), np.float32); w = np.ones((16, 6, 5, 5), np.float32)\n"
        "nc.conv2d(x, w)\n"
        "nc.conv2d_backward_weight(np.ones((1, 16, 10, 10), np.float32), x, (5, 5))\n"
        "assert numba.config.SLP_VECTORIZE == 0, numba.config.SLP_VECTORIZE\n"
        "for f in (blocked._row_block, blocked._weight_block):\n"
        "    asm = ''.join(f.inspect_asm().values())\n"
        "    print(len(re.findall(r'vfmadd\\w*ps\\s[^\\n]*[yz]mm', asm)))\n"
        "print('gathers', *(''.join(f.inspect_asm().values()).count('gather')\n"
        "                   for f in (blocked._row_block, blocked._weight_block)))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_SLP_VECTORIZE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    counts = [int(v) for v in lines[-4:-2]]
    assert min(counts) >= 10, counts                # one block's ten packed multiply-adds
    # vectorised across lanes, not pixels: a form LLVM took for stores it saw as consecutive,
    # gathering the input, with packed FMAs too but 8 GFLOP/s instead of 200
    assert "gathers 0 0" in out.stdout, out.stdout


def test_cached_geometry_still_rejects_values_equal_to_a_cached_one():
    """conv_geometry caches what it derived for plain options; True == 1 and (1, True) == (1, 1),
    so a bool stride must not find stride=1's entry, and an error is raised every time."""
    x = np.ones((1, 1, 8, 8), np.float32)
    w = np.ones((2, 1, 3, 3), np.float32)
    assert nc.conv2d(x, w, stride=1, padding=(1, 1)).shape == (1, 2, 8, 8)
    assert nc.conv2d(x, w, stride=(1, 1), padding=(1, 1)).shape == (1, 2, 8, 8)
    for bad in (True, (1, True), (1.0, 1)):
        with pytest.raises(TypeError, match="stride"):
            nc.conv2d(x, w, stride=bad, padding=(1, 1))
    for _ in range(2):
        with pytest.raises(ValueError, match="groups"):
            nc.conv2d(x, w, groups=2)
    assert nc.conv2d(x, w, padding=[1, 1]).shape == (1, 2, 8, 8)    # a list: not cached
