"""Shared pieces of the test suite: random valid configurations, tolerances and comparisons.

Configurations are drawn from a seeded `numpy.random.Generator`, so a failing case is reproduced by
its seed alone; every configuration is validated with `numconv.conv_geometry` / `pool_geometry`
before it is returned, so the sweeps only ever exercise valid inputs (the errors have their own
tests).
"""
import contextlib
from dataclasses import dataclass, field

import numpy as np

import numconv as nc
from numconv import config

FLOATS = (np.float32, np.float64)


# ---------------------------------------------------------------------------------------- compare

def assert_close(got, want, dtype=None, factor=1.0, err_msg=""):
    """`got` equals `want` within numconv's tolerances for `dtype`, the absolute one scaled by the
    size of the values (a sum of many terms carries an error relative to its terms, not to 1)."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}. {err_msg}"
    name = np.dtype(dtype if dtype is not None else got.dtype).name
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=config.RTOL[name] * factor,
                               atol=config.ATOL[name] * factor * scale, err_msg=err_msg)


def assert_bitwise_equal(a, b, err_msg=""):
    """Same shape, dtype and bits (NaN-safe and sign-of-zero-safe)."""
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, f"{a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    assert a.tobytes() == b.tobytes(), f"results differ in their bits. {err_msg}"


# ------------------------------------------------------------------------------------ convolution

CONV_KERNELS = ("auto", "im2col", "direct", "taps", "blocked")


@contextlib.contextmanager
def conv_kernel(method):
    """Set the CPU convolution kernels ('auto' picks by shape; 'im2col', 'direct' or 'taps'
    force one, and direct and taps need stride 1, so a strided layer still runs im2col;
    'blocked' forces the register-blocked forward pass and input gradient wherever the output
    holds 10 pixels (one block), and its weight gradient for kernels of 5x2 taps or more) for
    the block."""
    saved = config.CPU_CONV_KERNEL
    config.CPU_CONV_KERNEL = method
    try:
        yield
    finally:
        config.CPU_CONV_KERNEL = saved


@dataclass
class ConvCase:
    nd: int
    x_shape: tuple
    w_shape: tuple
    kwargs: dict = field(default_factory=dict)   # stride, padding, dilation, groups

    @property
    def geometry(self):
        return nc.conv_geometry(self.nd, self.x_shape, self.w_shape, **self.kwargs)

    @property
    def kernel_size(self):
        return self.w_shape[2:]

    def pads(self):
        """Resolved padding, ((before, after), ...) per spatial dimension of the caller."""
        g = self.geometry
        return g.pads[-self.nd:]

    def arrays(self, rng, dtype, bias=True):
        x = rng.standard_normal(self.x_shape).astype(dtype)
        w = rng.standard_normal(self.w_shape).astype(dtype)
        b = rng.standard_normal(self.w_shape[0]).astype(dtype) if bias else None
        return x, w, b

    def __str__(self):
        return f"{self.nd}d x{self.x_shape} w{self.w_shape} {self.kwargs}"


def _random_padding(rng, nd, max_pad):
    kind = rng.integers(0, 6)
    if kind == 0:
        return int(rng.integers(0, max_pad + 1))
    if kind == 1:
        return tuple(int(v) for v in rng.integers(0, max_pad + 1, size=nd))
    if kind == 2:   # per-side pairs, usually asymmetric
        return tuple((int(a), int(b)) for a, b in rng.integers(0, max_pad + 1, size=(nd, 2)))
    return ("valid", "same", "full")[kind - 3]


def random_conv_case(rng, nd, max_size=7, max_kernel=3, max_channels=2, max_batch=2):
    """A valid convolution: odd and even sizes, strides up to above the kernel, dilation, groups
    (depthwise included), every padding form."""
    while True:
        form = rng.integers(0, 4)
        Cg, Og = (int(v) for v in rng.integers(1, max_channels + 1, size=2))
        if form == 0:          # plain
            groups = 1
        elif form == 1:        # grouped
            groups = int(rng.integers(2, 4))
        elif form == 2:        # depthwise (one input channel per group, maybe a multiplier)
            groups, Cg, Og = int(rng.integers(2, 4)), 1, int(rng.integers(1, 3))
        else:                  # one channel in and out
            groups, Cg, Og = 1, 1, 1
        N = int(rng.integers(1, max_batch + 1))
        spatial = tuple(int(v) for v in rng.integers(1, max_size + 1, size=nd))
        kernel = tuple(int(v) for v in rng.integers(1, max_kernel + 1, size=nd))
        stride = tuple(int(v) for v in rng.integers(1, 5, size=nd))
        dilation = tuple(int(v) for v in rng.integers(1, 3, size=nd))
        kwargs = dict(
            stride=stride if rng.random() < 0.5 else stride[0],
            padding=_random_padding(rng, nd, max_pad=3),
            dilation=dilation if rng.random() < 0.5 else dilation[0],
            groups=groups,
        )
        case = ConvCase(nd, (N, Cg * groups) + spatial, (Og * groups, Cg) + kernel, kwargs)
        try:
            case.geometry
        except ValueError:
            continue
        return case


# ---------------------------------------------------------------------------------------- pooling

@dataclass
class PoolCase:
    nd: int
    x_shape: tuple
    kernel_size: object
    kwargs: dict = field(default_factory=dict)   # stride, padding, ceil_mode

    @property
    def geometry(self):
        return nc.pool_geometry(self.nd, self.x_shape, self.kernel_size, **self.kwargs)

    @property
    def out_shape(self):
        return self.geometry.out_shape

    def window(self):
        """(kernel_size, stride, padding, ceil_mode) in the backward functions' positional order."""
        k = self.kwargs
        return (self.kernel_size, k.get("stride"), k.get("padding", 0), k.get("ceil_mode", False))

    def __str__(self):
        return f"{self.nd}d x{self.x_shape} k={self.kernel_size} {self.kwargs}"


def random_pool_case(rng, nd, max_size=8, max_kernel=4, symmetric=False, allow_padding=True):
    """A valid pooling: stride None (= kernel), below or above the kernel, padding up to half the
    kernel (asymmetric unless `symmetric`, or 'same'/'valid'), ceil_mode on or off."""
    while True:
        N = int(rng.integers(1, 3))
        C = int(rng.integers(1, 4))
        spatial = tuple(int(v) for v in rng.integers(1, max_size + 1, size=nd))
        kernel = tuple(int(v) for v in rng.integers(1, max_kernel + 1, size=nd))
        kernel_size = kernel
        if rng.random() < 0.3:   # one int for every dimension
            kernel_size = kernel[0]
            kernel = (kernel_size,) * nd
        r = rng.random()
        stride = None if r < 0.25 else tuple(int(v) for v in rng.integers(1, 5, size=nd))
        ceil_mode = bool(rng.random() < 0.4)
        if not allow_padding:
            padding = 0
        elif symmetric:
            padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        else:
            kind = rng.integers(0, 5)
            if kind == 0:
                padding = int(rng.integers(0, min(kernel) // 2 + 1))
            elif kind == 1:
                padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
            elif kind == 2:
                padding = tuple((int(rng.integers(0, k // 2 + 1)), int(rng.integers(0, k // 2 + 1)))
                                for k in kernel)
            elif kind == 3:
                padding, ceil_mode = "same", False
            else:
                padding = "valid"
        kwargs = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
        case = PoolCase(nd, (N, C) + spatial, kernel_size, kwargs)
        try:
            case.geometry
        except ValueError:
            continue
        return case


def distinct_values(rng, shape, spacing=1e-2, dtype=np.float64):
    """Values at least `spacing` apart, in random order: max pooling has no ties and a finite
    difference step far below `spacing` never changes a window's winner."""
    n = int(np.prod(shape))
    v = (rng.permutation(n) - n / 2) * spacing
    return v.reshape(shape).astype(dtype)


def away_from_zero(rng, shape, low=0.3, dtype=np.float64, signed=True):
    """Values with |v| >= low: Lp pooling's |x| has its kink at 0."""
    v = low + rng.random(shape)
    if signed:
        v *= rng.choice([-1.0, 1.0], size=shape)
    return v.astype(dtype)


# ------------------------------------------------------------- a vectorised NumPy oracle for conv
# Independent of both numconv implementations (windows via sliding_window_view, products via
# einsum), and fast enough for shapes that span many of the CPU kernels' tiles, where the loop
# reference would take seconds.

def _pad4(x, pads):
    (pt, pb), (pl, pr) = pads
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))


def numpy_conv2d(x, w, stride, pads, dilation, groups):
    """Cross-correlation of x (N, C, H, W) with w (O, C/g, KH, KW); pads ((pt, pb), (pl, pr))."""
    (sh, sw), (dh, dw) = stride, dilation
    O, Cg, KH, KW = w.shape
    xp = _pad4(x, pads)
    eh, ew = (KH - 1) * dh + 1, (KW - 1) * dw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]                      # (N, C, OH, OW, KH, KW)
    Og = O // groups
    out = [np.einsum("ncijmk,ocmk->noij", win[:, g * Cg:(g + 1) * Cg], w[g * Og:(g + 1) * Og])
           for g in range(groups)]
    return np.concatenate(out, axis=1)


def numpy_conv2d_backward_weight(dy, x, kernel, stride, pads, dilation, groups):
    (sh, sw), (dh, dw), (KH, KW) = stride, dilation, kernel
    O, C = dy.shape[1], x.shape[1]
    Cg, Og = C // groups, O // groups
    OH, OW = dy.shape[2], dy.shape[3]
    xp = _pad4(x, pads)
    eh, ew = (KH - 1) * dh + 1, (KW - 1) * dw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :OH, :OW]
    out = [np.einsum("noij,ncijmk->ocmk", dy[:, g * Og:(g + 1) * Og], win[:, g * Cg:(g + 1) * Cg])
           for g in range(groups)]
    return np.concatenate(out, axis=0)


def numpy_conv2d_backward_input(dy, w, x_shape, stride, pads, dilation, groups):
    """Scatter-add over the kernel taps: each tap (m, k) sends dy, times its weights, back to the
    strided grid of padded-input positions it read."""
    (sh, sw), (dh, dw) = stride, dilation
    (pt, pb), (pl, pr) = pads
    N, C, H, W = x_shape
    O, Cg, KH, KW = w.shape
    Og = O // groups
    OH, OW = dy.shape[2], dy.shape[3]
    dxp = np.zeros((N, C, H + pt + pb, W + pl + pr), dtype=np.float64)
    for g in range(groups):
        dyg = dy[:, g * Og:(g + 1) * Og]
        for m in range(KH):
            for k in range(KW):
                contrib = np.einsum("noij,oc->ncij", dyg, w[g * Og:(g + 1) * Og, :, m, k])
                dxp[:, g * Cg:(g + 1) * Cg, m * dh:m * dh + (OH - 1) * sh + 1:sh,
                    k * dw:k * dw + (OW - 1) * sw + 1:sw] += contrib
    return dxp[:, :, pt:pt + H, pl:pl + W]




def assert_layers_match_across_devices(make_net, x, rng, factor=10):
    """Build `make_net()` twice, one copy on the GPU, and check forward, backward (dx) and every
    parameter gradient against the CPU copy to float32 tolerance. -> (cpu net, gpu net)."""
    from numconv.nn.device import to_device
    cpu, gpu = make_net(), make_net().to("cuda")
    y = cpu.forward(x)
    assert_close(gpu.forward(to_device(x)).copy_to_host(), y, np.float32, factor=factor)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = cpu.backward(dy)
    assert_close(gpu.backward(to_device(dy)).copy_to_host(), dx, np.float32, factor=factor)
    grads = {n: g for n, _, g in gpu.named_parameters()}
    for name, _, g in cpu.named_parameters():
        assert_close(grads[name].copy_to_host(), g, np.float32, factor=factor, err_msg=name)
    return cpu, gpu
