"""CUDA pooling kernels: the twins of `numconv.kernels.cpu.pool`, same names and argument order.

One thread per output element: forward kernels reduce one window, backward kernels let one input
pixel gather the gradient of the windows that contain it (no two threads write the same element,
no atomics). The arithmetic of each element is a function of `numconv.kernels.elementwise`, shared
with the CPU. A window (i, j) covers rows i*sh - pt .. i*sh - pt + kh - 1 and the same for columns.

Shapes: x and dx (N, C, H, W); y, dy and idx (N, C, OH, OW); idx holds the flat index ih * W + iw
of each max window's winner (the first in row-major order on ties). Global pooling: y, dy and idx
(N, C). Launchers take NumPy or device arrays (see `_launch`).
"""
from numba import cuda

from numconv.kernels.cuda import _launch
from numconv.kernels.cuda import elementwise as ew
from numconv.kernels.elementwise import GLOBAL_KINDS

# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@cuda.jit
def _max_forward(y, idx, x, kh, kw, sh, sw, pt, pl):
    t = cuda.grid(1)
    if t < y.size:
        n, c, i, j = ew.unravel4(t, y.shape[1], y.shape[2], y.shape[3])
        best, arg = ew.max_window(x, n, c, i, j, kh, kw, sh, sw, pt, pl)
        y[n, c, i, j] = best
        idx[n, c, i, j] = arg


@cuda.jit
def _max_backward(dx, dy, idx, kh, kw, sh, sw, pt, pl):
    t = cuda.grid(1)
    if t < dx.size:
        n, c, ih, iw = ew.unravel4(t, dx.shape[1], dx.shape[2], dx.shape[3])
        dx[n, c, ih, iw] = ew.max_gather(dy, idx, n, c, ih, iw, dx.shape[3], kh, kw, sh, sw, pt,
                                         pl)


@cuda.jit
def _avg_forward(y, x, kh, kw, sh, sw, pt, pl, pb, pr, include_pad):
    t = cuda.grid(1)
    if t < y.size:
        n, c, i, j = ew.unravel4(t, y.shape[1], y.shape[2], y.shape[3])
        y[n, c, i, j] = ew.avg_window(x, n, c, i, j, kh, kw, sh, sw, pt, pl, pb, pr, include_pad)


@cuda.jit
def _avg_backward(dx, dy, kh, kw, sh, sw, pt, pl, pb, pr, include_pad):
    t = cuda.grid(1)
    if t < dx.size:
        n, c, ih, iw = ew.unravel4(t, dx.shape[1], dx.shape[2], dx.shape[3])
        dx[n, c, ih, iw] = ew.avg_gather(dy, n, c, ih, iw, dx.shape[2], dx.shape[3], kh, kw, sh,
                                         sw, pt, pl, pb, pr, include_pad)


@cuda.jit
def _lp_forward(y, x, p, kh, kw, sh, sw, pt, pl):
    t = cuda.grid(1)
    if t < y.size:
        n, c, i, j = ew.unravel4(t, y.shape[1], y.shape[2], y.shape[3])
        y[n, c, i, j] = ew.lp_window(x, n, c, i, j, p, kh, kw, sh, sw, pt, pl)


@cuda.jit
def _lp_backward(dx, dy, x, y, p, kh, kw, sh, sw, pt, pl):
    t = cuda.grid(1)
    if t < dx.size:
        n, c, ih, iw = ew.unravel4(t, dx.shape[1], dx.shape[2], dx.shape[3])
        dx[n, c, ih, iw] = ew.lp_gather(dy, x, y, n, c, ih, iw, p, kh, kw, sh, sw, pt, pl)


@cuda.jit
def _global_forward(y, idx, x, kind):
    t = cuda.grid(1)
    if t < y.size:
        n = t // y.shape[1]
        c = t - n * y.shape[1]
        value, arg = ew.global_reduce(x, n, c, kind)
        y[n, c] = value
        idx[n, c] = arg


@cuda.jit
def _global_backward(dx, dy, idx, kind):
    t = cuda.grid(1)
    if t < dx.size:
        n, c, ih, iw = ew.unravel4(t, dx.shape[1], dx.shape[2], dx.shape[3])
        dx[n, c, ih, iw] = ew.global_spread(dy, idx, n, c, ih, iw, dx.shape[2], dx.shape[3],
                                            kind)


# ----------------------------------------------------------------------------------------------
# Launchers: same names and argument order as the reference and the CPU kernels
# ----------------------------------------------------------------------------------------------


def _ints(*values):
    return tuple(int(v) for v in values)


def _run(kernel, outputs, inputs, *options):
    """Launch `kernel` with one thread per element of its first output, on (outputs..., inputs...,
    options...), copying host inputs in and host outputs back."""
    outs = [_launch.output(a) for a in outputs]
    ins = [_launch.to_device(a) for a in inputs]
    _launch.launch_1d(kernel, outs[0][0].size, *[d for d, _ in outs], *ins, *options)
    for d, host in outs:
        _launch.copy_back(d, host)


def maxpool2d_forward(y, idx, x, kh, kw, sh, sw, pt, pl):
    _run(_max_forward, (y, idx), (x,), *_ints(kh, kw, sh, sw, pt, pl))


def maxpool2d_backward(dx, dy, idx, kh, kw, sh, sw, pt, pl):
    _run(_max_backward, (dx,), (dy, idx), *_ints(kh, kw, sh, sw, pt, pl))


def avgpool2d_forward(y, x, kh, kw, sh, sw, pt, pl, pb, pr, count_include_pad):
    _run(_avg_forward, (y,), (x,), *_ints(kh, kw, sh, sw, pt, pl, pb, pr),
         bool(count_include_pad))


def avgpool2d_backward(dx, dy, kh, kw, sh, sw, pt, pl, pb, pr, count_include_pad):
    _run(_avg_backward, (dx,), (dy,), *_ints(kh, kw, sh, sw, pt, pl, pb, pr),
         bool(count_include_pad))


def lppool2d_forward(y, x, p, kh, kw, sh, sw, pt, pl):
    _run(_lp_forward, (y,), (x,), float(p), *_ints(kh, kw, sh, sw, pt, pl))


def lppool2d_backward(dx, dy, x, y, p, kh, kw, sh, sw, pt, pl):
    _run(_lp_backward, (dx,), (dy, x, y), float(p), *_ints(kh, kw, sh, sw, pt, pl))


def global_pool2d_forward(y, idx, x, kind):
    _run(_global_forward, (y, idx), (x,), GLOBAL_KINDS[kind])


def global_pool2d_backward(dx, dy, idx, kind):
    _run(_global_backward, (dx,), (dy, idx), GLOBAL_KINDS[kind])
