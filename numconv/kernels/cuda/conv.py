"""CUDA convolution kernels: the twins of `numconv.kernels.cpu.conv`, same names and argument order.

Each thread computes whole elements of an output, summing their terms in a fixed order with the
per-element functions of `numconv.kernels.elementwise` (shared with the CPU): no atomics, so the
same inputs give the same bits on every run.

- forward: a tiled implicit GEMM (default, `config.CUDA_CONV_FORWARD = "tiled"`): a block of
  T x T threads computes T output channels by T output pixels; each step stages T weights
  (rows r = (c, m, k)) and the matching T x T receptive-field values in shared memory, so each
  value read from global memory is used T times. "direct" runs one thread per output element.
- input gradient: one thread per dx element gathers the dy entries that read it.
- weight gradient: one thread per (segment, dw element) sums its terms over one fixed segment of
  `config.CUDA_WGRAD_SEGMENT` output positions; a second kernel adds the segments in order (the
  CPU kernel's scheme). Segments give enough threads when there are few weights and many pixels.
- conv1d followed by max over positions: one thread per dw element and per dx element, each
  visiting only the winning windows (see the CPU twin).
- bias gradient: one block per output channel; each thread sums a fixed stride of dy in float64,
  then the block adds the partial sums in a fixed tree order in shared memory.

Shapes: x (N, C, H, W), w (O, C/groups, KH, KW), y and dy (N, O, OH, OW). Arguments: outputs first,
then (sh, sw) stride, (pt, pl) top/left padding, (dh, dw) dilation, groups. Launchers take NumPy or
device arrays (see `_launch`).
"""
import functools

import numba
from numba import cuda

from numconv import config
from numconv.kernels.cuda import _launch
from numconv.kernels.cuda import elementwise as ew

# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@cuda.jit
def _forward_direct(y, x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups):
    t = cuda.grid(1)
    if t < y.size:
        n, o, i, j = ew.unravel4(t, y.shape[1], y.shape[2], y.shape[3])
        y[n, o, i, j] = ew.conv_output(x, w, b, has_bias, n, o, i, j, sh, sw, pt, pl, dh, dw,
                                       groups)


@functools.lru_cache(maxsize=None)
def _forward_tiled(T):
    """The tiled forward kernel for T x T tiles (shared-memory shapes are compile-time
    constants, so each tile size is its own kernel)."""

    @cuda.jit
    def forward_tiled(y, x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups):
        # Block (bx, by): output pixels q = bx*T .. bx*T + T-1 (q = n*OH*OW + i*OW + j) and output
        # channels g*Og + ot*T .. + T-1, by = g * (tiles per group) + ot. Thread (tx, ty) owns the
        # output (channel ty, pixel tx) of that tile and loads one weight and one input per step.
        N, O, OH, OW = y.shape
        H, W = x.shape[2], x.shape[3]
        Cg, KH, KW = w.shape[1], w.shape[2], w.shape[3]
        Og = O // groups
        R = Cg * KH * KW
        P = OH * OW
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        o_tiles = (Og + T - 1) // T
        g = cuda.blockIdx.y // o_tiles
        o_local = (cuda.blockIdx.y - g * o_tiles) * T + ty
        o = g * Og + o_local
        q = cuda.blockIdx.x * T + tx
        n = q // P
        p = q - n * P
        i = p // OW
        j = p - i * OW
        q_ok = q < N * P
        o_ok = o_local < Og
        ws = cuda.shared.array((T, T), dtype=w.dtype)    # ws[o_local, r - r0]
        xs = cuda.shared.array((T, T), dtype=x.dtype)    # xs[r - r0, q - bx*T]
        zero = x.dtype.type(0)
        acc = b[o] if has_bias and o_ok else zero
        for r0 in range(0, R, T):
            r = r0 + tx
            wv = zero
            if o_ok and r < R:
                c = r // (KH * KW)
                m = (r // KW) % KH
                wv = w[o, c, m, r % KW]
            ws[ty, tx] = wv
            r = r0 + ty
            xv = zero
            if q_ok and r < R:
                c = r // (KH * KW)
                m = (r // KW) % KH
                ih = i * sh - pt + m * dh
                iw = j * sw - pl + (r % KW) * dw
                if 0 <= ih < H and 0 <= iw < W:
                    xv = x[n, g * Cg + c, ih, iw]
            xs[ty, tx] = xv
            cuda.syncthreads()
            for s in range(min(T, R - r0)):
                acc += ws[ty, s] * xs[s, tx]
            cuda.syncthreads()
        if q_ok and o_ok:
            y[n, o, i, j] = acc

    return forward_tiled


@cuda.jit
def _backward_input(dx, dy, w, sh, sw, pt, pl, dh, dw, groups):
    t = cuda.grid(1)
    if t < dx.size:
        n, cc, ih, iw = ew.unravel4(t, dx.shape[1], dx.shape[2], dx.shape[3])
        dx[n, cc, ih, iw] = ew.conv_input_grad(dy, w, n, cc, ih, iw, sh, sw, pt, pl, dh, dw,
                                               groups)


@cuda.jit
def _weight_segments(part, dy, x, seg, sh, sw, pt, pl, dh, dw, groups):
    # part (S, O, Cg, KH, KW): part[s] holds the sums over output positions [s*seg, (s+1)*seg).
    t = cuda.grid(1)
    if t < part.size:
        S, O, Cg, KH, KW = part.shape
        e = t % (O * Cg * KH * KW)
        s = t // (O * Cg * KH * KW)
        o, c, m, k = ew.unravel4(e, Cg, KH, KW)
        q0 = s * seg
        q1 = min(q0 + seg, dy.shape[0] * dy.shape[2] * dy.shape[3])
        part[s, o, c, m, k] = ew.conv_weight_grad(dy, x, o, c, m, k, q0, q1, sh, sw, pt, pl,
                                                  dh, dw, groups)


@cuda.jit
def _sum_segments(dwt, part):
    t = cuda.grid(1)
    if t < dwt.size:
        o, c, m, k = ew.unravel4(t, dwt.shape[1], dwt.shape[2], dwt.shape[3])
        acc = part[0, o, c, m, k]
        for s in range(1, part.shape[0]):
            acc += part[s, o, c, m, k]
        dwt[o, c, m, k] = acc


@functools.lru_cache(maxsize=None)
def _bias_grad(threads):
    """The bias-gradient kernel for blocks of `threads` threads (the shared array's size)."""

    @cuda.jit
    def bias_grad(db, dy):
        o = cuda.blockIdx.x
        t = cuda.threadIdx.x
        N, O, OH, OW = dy.shape
        P = OH * OW
        acc = 0.0
        for e in range(t, N * P, threads):
            n = e // P
            p = e - n * P
            acc += dy[n, o, p // OW, p % OW]
        part = cuda.shared.array(threads, dtype=numba.float64)
        part[t] = acc
        cuda.syncthreads()
        # Fold the upper half onto the lower half until one sum is left: a fixed tree, any size.
        width = threads
        while width > 1:
            half = (width + 1) // 2
            if t < width - half:
                part[t] += part[t + half]
            cuda.syncthreads()
            width = half
        if t == 0:
            db[o] = part[0]

    return bias_grad


@cuda.jit
def _max_weight_grad(dwt, dm, idx, xt, s, pl, d):
    # One thread per dwt element (o, k, c), channels last; the batch's winners in order of n.
    t = cuda.grid(1)
    if t < dwt.size:
        O, K, C = dwt.shape
        o = t // (K * C)
        k = (t // C) % K
        c = t % C
        acc = dwt.dtype.type(0)
        for n in range(xt.shape[0]):
            g = dm[n, o]
            i = idx[n, o] * s - pl + k * d
            if g != 0 and 0 <= i < xt.shape[1]:
                acc += g * xt[n, i, c]
        dwt[o, k, c] = acc


@cuda.jit
def _max_bias_grad(db, dm):
    o = cuda.grid(1)
    if o < db.shape[0]:
        acc = 0.0
        for n in range(dm.shape[0]):
            acc += dm[n, o]
        db[o] = acc


@cuda.jit
def _max_input_grad(dxt, dm, idx, wt, s, pl, d):
    # One thread per dxt element (n, i, c): the winning windows that cover i, in order of o; the
    # tap k of window t reading i is (i + pl - t*s) / d when that is a whole number in [0, K).
    t = cuda.grid(1)
    if t < dxt.size:
        N, L, C = dxt.shape
        n = t // (L * C)
        i = (t // C) % L
        c = t % C
        K = wt.shape[1]
        acc = dxt.dtype.type(0)
        for o in range(wt.shape[0]):
            g = dm[n, o]
            r = i + pl - idx[n, o] * s
            if g != 0 and r >= 0 and r % d == 0 and r // d < K:
                acc += g * wt[o, r // d, c]
        dxt[n, i, c] = acc


# ----------------------------------------------------------------------------------------------
# Launchers: same names and argument order as the reference and the CPU kernels
# ----------------------------------------------------------------------------------------------


def _ints(*values):
    return tuple(int(v) for v in values)


def conv2d_forward(y, x, w, b, sh, sw, pt, pl, dh, dw, groups):
    """y (N, O, OH, OW) = correlation of x (N, C, H, W) with w (O, C/groups, KH, KW) plus b (O,)."""
    opts = _ints(sh, sw, pt, pl, dh, dw, groups)
    d_y, host = _launch.output(y)
    d_x = _launch.to_device(x)
    d_w = _launch.to_device(w)
    has_bias = b is not None
    d_b = _launch.to_device(b) if has_bias else _launch.empty(1, d_w.dtype)
    if config.CUDA_CONV_FORWARD == "tiled":
        T = int(config.CUDA_TILE)
        N, O, OH, OW = d_y.shape
        Og = O // opts[-1]
        blocks = (-(-N * OH * OW // T), opts[-1] * -(-Og // T))
        _launch.launch(_forward_tiled(T), blocks, (T, T), d_y, d_x, d_w, d_b, has_bias, *opts)
    else:
        _launch.launch_1d(_forward_direct, d_y.size, d_y, d_x, d_w, d_b, has_bias, *opts)
    _launch.copy_back(d_y, host)


def conv2d_backward_input(dx, dy, w, sh, sw, pt, pl, dh, dw, groups):
    """dx (N, C, H, W) = the gradient of the loss with respect to x, given dy (N, O, OH, OW)."""
    d_dx, host = _launch.output(dx)
    _launch.launch_1d(_backward_input, d_dx.size, d_dx, _launch.to_device(dy), _launch.to_device(w),
                      *_ints(sh, sw, pt, pl, dh, dw, groups))
    _launch.copy_back(d_dx, host)


def conv2d_backward_weight(dwt, dy, x, sh, sw, pt, pl, dh, dw, groups):
    """dwt (O, C/groups, KH, KW) = correlation of x with dy, summed over the batch."""
    d_dw, host = _launch.output(dwt)
    d_dy = _launch.to_device(dy)
    d_x = _launch.to_device(x)
    N, _, OH, OW = d_dy.shape
    seg = int(config.CUDA_WGRAD_SEGMENT)
    n_seg = max(1, -(-N * OH * OW // seg))
    opts = _ints(sh, sw, pt, pl, dh, dw, groups)
    if n_seg == 1:
        part = d_dw.reshape((1,) + tuple(d_dw.shape))
    else:
        part = _launch.empty((n_seg,) + tuple(d_dw.shape), d_dw.dtype)
    _launch.launch_1d(_weight_segments, n_seg * d_dw.size, part, d_dy, d_x, seg, *opts)
    if n_seg > 1:
        _launch.launch_1d(_sum_segments, d_dw.size, d_dw, part)
    _launch.copy_back(d_dw, host)


def conv2d_backward_bias(db, dy):
    """db (O,) = dy summed over batch and positions."""
    d_db, host = _launch.output(db)
    threads = int(config.CUDA_THREADS_PER_BLOCK)
    _launch.launch(_bias_grad(threads), d_db.shape[0], threads, d_db, _launch.to_device(dy))
    _launch.copy_back(d_db, host)


def conv1d_max_backward(dxt, dwt, db, dm, idx, xt, wt, s, pl, d):
    """The gradients of m (N, O) = max over positions of conv1d(x, w, b), given dm and the winning
    positions idx (N, O). Channels last: xt and dxt (N, L, C), wt and dwt (O, K, C)."""
    opts = _ints(s, pl, d)
    d_dm, d_idx = _launch.to_device(dm), _launch.to_device(idx)
    d_dw, host_dw = _launch.output(dwt)
    d_db, host_db = _launch.output(db)
    d_dx, host_dx = _launch.output(dxt)
    _launch.launch_1d(_max_weight_grad, d_dw.size, d_dw, d_dm, d_idx, _launch.to_device(xt),
                      *opts)
    _launch.launch_1d(_max_bias_grad, d_db.size, d_db, d_dm)
    _launch.launch_1d(_max_input_grad, d_dx.size, d_dx, d_dm, d_idx, _launch.to_device(wt),
                      *opts)
    for dev, host in ((d_dw, host_dw), (d_db, host_db), (d_dx, host_dx)):
        _launch.copy_back(dev, host)
