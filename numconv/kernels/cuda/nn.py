"""CUDA twins of `numconv.ops.nn`: activations, Linear, batch norm, LRN, dropout, softmax
cross-entropy, plus the array plumbing a training step needs (add, multiply, fill, channel
concatenation and split, transposes, masking of padded positions).

The launchers have the names and argument order of `numconv.ops.nn` and return new device arrays
(inputs may be NumPy arrays, which are copied in). The arithmetic of each element is a function of
`numconv.kernels.nn`, shared with the CPU. Everything gathers: each thread writes its own elements,
reductions run one block per output with a fixed stride per thread and a fixed tree, so the same
inputs give the same bits on every run (no atomics anywhere).

- Linear layers: a tiled shared-memory matrix multiply (blocks of CUDA_TILE x CUDA_TILE threads,
  one output element each; every value staged in shared memory is used CUDA_TILE times).
- Per-channel reductions (batch statistics, dgamma, dbeta), and every scalar (the loss): one block
  of CUDA_THREADS_PER_BLOCK threads per output, summed in float64.
Launch configuration: `numconv.config`.
"""
import functools
import math

import numba
import numpy as np
from numba import cuda

from numconv import config
from numconv.kernels.cuda import _launch
from numconv.kernels.cuda import nn_elements as ne

SUM, SQUARED_DEVIATION, PRODUCT = 0, 1, 2   # what `_channel_sums` adds up

# ----------------------------------------------------------------------------------------------
# Elementwise kernels: flat arrays, one thread per element
# ----------------------------------------------------------------------------------------------


@cuda.jit
def _relu_forward(y, x):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = ne.relu_element(x, i)


@cuda.jit
def _relu_backward(dx, dy, y):
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = ne.relu_grad_element(dy, y, i)


@cuda.jit
def _tanh_forward(y, x, scale, slope):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = ne.tanh_element(x, i, scale, slope)


@cuda.jit
def _tanh_backward(dx, dy, y, scale, slope):
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = ne.tanh_grad_element(dy, y, i, scale, slope)


@cuda.jit
def _sigmoid_forward(y, x):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = ne.sigmoid_element(x, i)


@cuda.jit
def _sigmoid_backward(dx, dy, y):
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = ne.sigmoid_grad_element(dy, y, i)


@cuda.jit
def _hardtanh_forward(y, x):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = ne.hardtanh_element(x, i)


@cuda.jit
def _hardtanh_backward(dx, dy, x):
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = ne.hardtanh_grad_element(dy, x, i)


@cuda.jit
def _dropout_mask(mask, seed, step, keep):
    i = cuda.grid(1)
    if i < mask.size:
        mask[i] = ne.dropout_keep(ne.dropout_key(seed, step), i, keep, 1.0 / keep)


@cuda.jit
def _add(out, a, b):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] + b[i]


@cuda.jit
def _multiply(out, a, b):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] * b[i]


@cuda.jit
def _scale(out, a, s):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] * out.dtype.type(s)


@cuda.jit
def _fill(out, value):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = value


# ----------------------------------------------------------------------------------------------
# Reductions: one block per output, a fixed stride per thread, a fixed tree
# ----------------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _tree_sum(part, t, width):
    """Fold part[0:width] (shared, one entry per thread) into part[0]: the upper half onto the
    lower half until one sum is left, the same tree for any width."""
    while width > 1:
        half = (width + 1) // 2
        if t < width - half:
            part[t] += part[t + half]
        cuda.syncthreads()
        width = half


@functools.lru_cache(maxsize=None)
def _channel_sums(threads):
    """The per-channel reduction for blocks of `threads` threads (the shared array's size)."""

    @cuda.jit
    def channel_sums(out, a, b, center, kind, divisor):
        # a, b (A, C, S) -> out (C,): the sum over (n, s) of a (SUM), (a - center[c])^2
        # (SQUARED_DEVIATION) or a * b (PRODUCT, the product in a's dtype), divided by `divisor`.
        c = cuda.blockIdx.x
        t = cuda.threadIdx.x
        A, S = a.shape[0], a.shape[2]
        acc = 0.0
        for e in range(t, A * S, threads):
            n = e // S
            s = e - n * S
            if kind == SUM:
                acc += float(a[n, c, s])
            elif kind == SQUARED_DEVIATION:
                d = float(a[n, c, s]) - center[c]
                acc += d * d
            else:
                acc += float(a[n, c, s] * b[n, c, s])
        part = cuda.shared.array(threads, dtype=numba.float64)
        part[t] = acc
        cuda.syncthreads()
        _tree_sum(part, t, threads)
        if t == 0:
            out[c] = part[0] / divisor

    return channel_sums


@cuda.jit
def _column_sums(out, a):
    # out (K,) = a (M, K) summed over rows, in float64 and row order.
    j = cuda.grid(1)
    if j < out.size:
        acc = 0.0
        for i in range(a.shape[0]):
            acc += float(a[i, j])
        out[j] = acc


# ----------------------------------------------------------------------------------------------
# Linear: a tiled matrix multiply
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _matmul_tiled(T):
    """The tiled multiply for T x T tiles (shared-memory shapes are compile-time constants)."""

    @cuda.jit
    def matmul_tiled(c, a, b, trans_a, trans_b, bias, has_bias):
        # c (M, N) = A @ B (+ bias (N,)), A = a.T if trans_a else a, B = b.T if trans_b else b.
        # Block (bx, by) computes rows by*T .. +T-1 and columns bx*T .. +T-1 of c; each step
        # stages a T x T tile of A and of B, each thread loading one value of each.
        M, N = c.shape
        K = a.shape[0] if trans_a else a.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        i = cuda.blockIdx.y * T + ty
        j = cuda.blockIdx.x * T + tx
        a_tile = cuda.shared.array((T, T), dtype=a.dtype)    # a_tile[i - by*T, k - k0]
        b_tile = cuda.shared.array((T, T), dtype=b.dtype)    # b_tile[k - k0, j - bx*T]
        zero = c.dtype.type(0)
        acc = zero
        for k0 in range(0, K, T):
            k = k0 + tx
            v = zero
            if i < M and k < K:
                v = a[k, i] if trans_a else a[i, k]
            a_tile[ty, tx] = v
            k = k0 + ty
            v = zero
            if j < N and k < K:
                v = b[j, k] if trans_b else b[k, j]
            b_tile[ty, tx] = v
            cuda.syncthreads()
            for s in range(min(T, K - k0)):
                acc += a_tile[ty, s] * b_tile[s, tx]
            cuda.syncthreads()
        if i < M and j < N:
            if has_bias:
                acc += bias[j]
            c[i, j] = acc

    return matmul_tiled


# ----------------------------------------------------------------------------------------------
# Batch norm, LRN, softmax cross-entropy: (N, C, S) views, one thread per element or row
# ----------------------------------------------------------------------------------------------


@cuda.jit
def _batchnorm_prepare(mean_t, inv, mean, var, eps):
    # Per channel: the mean in x's dtype and 1 / sqrt(var + eps), computed in var's dtype.
    c = cuda.grid(1)
    if c < inv.size:
        t = var.dtype.type
        mean_t[c] = mean[c]
        inv[c] = t(1) / math.sqrt(var[c] + t(eps))


@cuda.jit
def _batchnorm_running(running_mean, running_var, mean, var, momentum, count, denom):
    # PyTorch's running averages, the variance unbiased by count / denom; (1 - m) * running in
    # its dtype, the rest in float64, in NumPy's order (the CPU layer's expression).
    c = cuda.grid(1)
    if c < running_mean.size:
        t = running_mean.dtype.type
        running_mean[c] = t(1 - momentum) * running_mean[c] + momentum * mean[c]
        running_var[c] = t(1 - momentum) * running_var[c] + momentum * var[c] * count / denom


@cuda.jit
def _batchnorm_forward(y, x_hat, x, mean_t, inv, gamma, beta):
    t = cuda.grid(1)
    if t < y.size:
        C, S = y.shape[1], y.shape[2]
        n = t // (C * S)
        c = (t // S) % C
        s = t % S
        xh, yv = ne.batchnorm_element(x, mean_t, inv, gamma, beta, n, c, s)
        x_hat[n, c, s] = xh
        y[n, c, s] = yv


@cuda.jit
def _batchnorm_backward(dx, dy, x_hat, gamma, inv, dgamma, dbeta, m, training):
    t = cuda.grid(1)
    if t < dx.size:
        C, S = dx.shape[1], dx.shape[2]
        n = t // (C * S)
        c = (t // S) % C
        s = t % S
        dx[n, c, s] = ne.batchnorm_grad_element(dy, x_hat, gamma, inv, dgamma, dbeta, n, c, s, m,
                                                training)


@cuda.jit
def _lrn_forward(y, s, x, size, alpha, beta, k):
    t = cuda.grid(1)
    if t < y.size:
        C, P = y.shape[1], y.shape[2]
        n = t // (C * P)
        c = (t // P) % C
        p = t % P
        s[n, c, p] = ne.lrn_denominator(x, n, c, p, size, alpha, k)
        y[n, c, p] = ne.lrn_element(x, s, n, c, p, beta)


@cuda.jit
def _lrn_backward(dx, dy, x, s, size, beta, two_alpha_beta):
    t = cuda.grid(1)
    if t < dx.size:
        C, P = dx.shape[1], dx.shape[2]
        n = t // (C * P)
        c = (t // P) % C
        p = t % P
        dx[n, c, p] = ne.lrn_grad_element(dy, x, s, n, c, p, size, beta, two_alpha_beta)


@cuda.jit
def _cross_entropy_rows(rows, dlogits, logits, labels, weights, has_weights, smoothing, total):
    # rows (N,, 1, 1): each row's weighted loss over the total weight; dlogits (N, K).
    n = cuda.grid(1)
    if n < logits.shape[0]:
        tot = max(total[0, 0, 0], 1e-12) if has_weights else 1.0 * logits.shape[0]
        rows[n, 0, 0] = ne.cross_entropy_row(dlogits, logits, labels, weights, has_weights, n,
                                             smoothing, tot) / tot


@cuda.jit
def _max_norm_rows(w, max_norm):
    # one thread per row of w (O, I): its norm, then its rescaling, in order
    r = cuda.grid(1)
    if r < w.shape[0]:
        scale = w.dtype.type(ne.max_norm_scale(w, r, max_norm))
        for k in range(w.shape[1]):
            w[r, k] *= scale


@cuda.jit
def _correct_rows(hits, logits, labels):
    n = cuda.grid(1)
    if n < logits.shape[0]:
        hits[n, 0, 0] = 1.0 if ne.argmax_row(logits, n) == labels[n] else 0.0


# ----------------------------------------------------------------------------------------------
# Plumbing: channel copies, transposes, masking
# ----------------------------------------------------------------------------------------------


@cuda.jit
def _copy_channels(dst, src, dst_start, src_start, count):
    # dst[n, dst_start + c, s] = src[n, src_start + c, s] for c < count; (N, C, S) views.
    t = cuda.grid(1)
    S = src.shape[2]
    if t < src.shape[0] * count * S:
        n = t // (count * S)
        c = (t // S) % count
        s = t % S
        dst[n, dst_start + c, s] = src[n, src_start + c, s]


@cuda.jit
def _transpose(out, a):
    # out (N, B, A) = a (N, A, B) with its last two axes swapped.
    t = cuda.grid(1)
    if t < out.size:
        B, A = out.shape[1], out.shape[2]
        n = t // (B * A)
        j = (t // A) % B
        i = t % A
        out[n, j, i] = a[n, i, j]


@cuda.jit
def _fill_outside(y, lengths, start, end_offset, value):
    # y (N, C, T): positions t outside [start, lengths[n] + end_offset) become `value`.
    t = cuda.grid(1)
    if t < y.size:
        C, T = y.shape[1], y.shape[2]
        n = t // (C * T)
        p = t % T
        if p < start or p >= lengths[n] + end_offset:
            y[n, (t // T) % C, p] = value


# ----------------------------------------------------------------------------------------------
# Launchers: the names and argument order of numconv.ops.nn; they return device arrays
# ----------------------------------------------------------------------------------------------


def _flat(a):
    return a.reshape(a.size)


def _as3d(a):
    """(N, C, S) view of a C-contiguous (N, C, ...) array (S = 1 for (N, C))."""
    return a.reshape(a.shape[0], a.shape[1], a.size // max(a.shape[0] * a.shape[1], 1))


def _map(kernel, like, *args):
    """A new array shaped like `like`, one thread per element: kernel(out, *args) on flat views of
    the array arguments (scalars passed as they are)."""
    out = _launch.empty(like.shape, like.dtype)
    flat = [_flat(a) if hasattr(a, "shape") else a for a in args]
    _launch.launch_1d(kernel, out.size, _flat(out), *flat)
    return out


def _channel_reduce(a, b=None, center=None, kind=SUM, divisor=1.0, dtype=np.float64):
    """(C,) sums over (n, s) of an (N, C, S) view; see `_channel_sums`."""
    threads = int(config.CUDA_THREADS_PER_BLOCK)
    out = _launch.empty(a.shape[1], dtype)
    if center is None:
        center = _launch.empty(1, np.float64)     # read only by SQUARED_DEVIATION
    _launch.launch(_channel_sums(threads), a.shape[1], threads, out, a, a if b is None else b,
                   center, kind, float(divisor))
    return out


def zeros(shape, dtype):
    out = _launch.empty(shape, dtype)
    fill_(out, 0)
    return out


def fill_(a, value):
    """a[...] = value, in place."""
    _launch.launch_1d(_fill, a.size, _flat(a), a.dtype.type(value))


def add(a, b):
    return _map(_add, a, _launch.to_device(a), _launch.to_device(b))


def add_(a, b):
    """a += b, in place (gradient accumulation)."""
    _launch.launch_1d(_add, a.size, _flat(a), _flat(a), _flat(_launch.to_device(b)))


def multiply(a, b):
    return _map(_multiply, a, _launch.to_device(a), _launch.to_device(b))


def scale(a, s):
    return _map(_scale, a, _launch.to_device(a), float(s))


def relu_forward(x):
    return _map(_relu_forward, x, _launch.to_device(x))


def relu_backward(dy, y):
    return _map(_relu_backward, dy, _launch.to_device(dy), _launch.to_device(y))


def tanh_forward(x, scale=1.0, slope=1.0):
    return _map(_tanh_forward, x, _launch.to_device(x), float(scale), float(slope))


def tanh_backward(dy, y, scale=1.0, slope=1.0):
    return _map(_tanh_backward, dy, _launch.to_device(dy), _launch.to_device(y), float(scale),
                float(slope))


def sigmoid_forward(x):
    return _map(_sigmoid_forward, x, _launch.to_device(x))


def sigmoid_backward(dy, y):
    return _map(_sigmoid_backward, dy, _launch.to_device(dy), _launch.to_device(y))


def hardtanh_forward(x):
    return _map(_hardtanh_forward, x, _launch.to_device(x))


def hardtanh_backward(dy, x):
    return _map(_hardtanh_backward, dy, _launch.to_device(dy), _launch.to_device(x))


def matmul(a, b, trans_a=False, trans_b=False, bias=None):
    """A @ B (+ bias), A = a.T if trans_a else a, B = b.T if trans_b else b: (M, K) @ (K, N)."""
    a, b = _launch.to_device(a), _launch.to_device(b)
    M = a.shape[1] if trans_a else a.shape[0]
    N = b.shape[0] if trans_b else b.shape[1]
    out = _launch.empty((M, N), a.dtype)
    has_bias = bias is not None
    bias = _launch.to_device(bias) if has_bias else _launch.empty(1, a.dtype)
    T = int(config.CUDA_TILE)
    _launch.launch(_matmul_tiled(T), (-(-N // T), -(-M // T)), (T, T), out, a, b, bool(trans_a),
                   bool(trans_b), bias, has_bias)
    return out


def linear_forward(x, w, b):
    """x (N, I), w (O, I), b (O,) or None -> y (N, O) = x @ w.T + b."""
    return matmul(x, w, trans_b=True, bias=b)


def linear_backward(dy, x, w, need_input=True):
    """-> dx (N, I) = dy @ w or None, dw (O, I) = dy.T @ x, db (O,) = dy summed over rows."""
    dy = _launch.to_device(dy)
    dx = matmul(dy, w) if need_input else None
    db = _launch.empty(dy.shape[1], dy.dtype)
    _launch.launch_1d(_column_sums, db.size, db, dy)
    return dx, matmul(dy, x, trans_a=True), db


def batch_statistics(x):
    """Per-channel mean and biased variance (float64, (C,)) of x (N, C, ...): two passes."""
    x3 = _as3d(_launch.to_device(x))
    m = x3.shape[0] * x3.shape[2]
    mean = _channel_reduce(x3, kind=SUM, divisor=m)
    var = _channel_reduce(x3, center=mean, kind=SQUARED_DEVIATION, divisor=m)
    return mean, var


def batchnorm_forward(x, gamma, beta, mean, var, eps):
    """-> y, x_hat (both shaped like x) and inv (C,) = 1 / sqrt(var + eps) in x's dtype."""
    x = _launch.to_device(x)
    C = x.shape[1]
    mean_t, inv = _launch.empty(C, x.dtype), _launch.empty(C, x.dtype)
    _launch.launch_1d(_batchnorm_prepare, C, mean_t, inv, _launch.to_device(mean),
                      _launch.to_device(var), float(eps))
    y, x_hat = _launch.empty(x.shape, x.dtype), _launch.empty(x.shape, x.dtype)
    _launch.launch_1d(_batchnorm_forward, x.size, _as3d(y), _as3d(x_hat), _as3d(x), mean_t, inv,
                      _launch.to_device(gamma), _launch.to_device(beta))
    return y, x_hat, inv


def batchnorm_update_running(running_mean, running_var, mean, var, momentum, count):
    """In place: running = (1 - m) running + m batch, the variance unbiased by count/(count-1)."""
    _launch.launch_1d(_batchnorm_running, running_mean.size, running_mean, running_var,
                      _launch.to_device(mean), _launch.to_device(var), float(momentum),
                      int(count), int(max(count - 1, 1)))


def batchnorm_backward(dy, x_hat, gamma, inv, training):
    """-> dx, dgamma (C,), dbeta (C,)."""
    dy3, xh3 = _as3d(_launch.to_device(dy)), _as3d(_launch.to_device(x_hat))
    dgamma = _channel_reduce(dy3, xh3, kind=PRODUCT, dtype=dy3.dtype)
    dbeta = _channel_reduce(dy3, kind=SUM, dtype=dy3.dtype)
    dx = _launch.empty(dy.shape, dy3.dtype)
    _launch.launch_1d(_batchnorm_backward, dx.size, _as3d(dx), dy3, xh3, _launch.to_device(gamma),
                      _launch.to_device(inv), dgamma, dbeta, dy3.shape[0] * dy3.shape[2],
                      bool(training))
    return dx, dgamma, dbeta


def lrn_forward(x, size, alpha, beta, k):
    """-> y and the denominator base s, both shaped like x (N, C, ...)."""
    x = _launch.to_device(x)
    y, s = _launch.empty(x.shape, x.dtype), _launch.empty(x.shape, x.dtype)
    _launch.launch_1d(_lrn_forward, x.size, _as3d(y), _as3d(s), _as3d(x), int(size),
                      float(alpha), float(beta), float(k))
    return y, s


def lrn_backward(dy, x, s, size, alpha, beta):
    dy = _launch.to_device(dy)
    dx = _launch.empty(dy.shape, dy.dtype)
    _launch.launch_1d(_lrn_backward, dx.size, _as3d(dx), _as3d(dy), _as3d(_launch.to_device(x)),
                      _as3d(_launch.to_device(s)), int(size), float(beta),
                      2 * float(alpha) * float(beta))
    return dx


def dropout_mask(shape, p, seed, step, dtype=np.float32):
    """The inverted-dropout mask of `numconv.ops.nn.dropout_mask`, bit for bit, on the device."""
    mask = _launch.empty(tuple(shape), np.dtype(dtype))
    _launch.launch_1d(_dropout_mask, mask.size, _flat(mask), np.uint64(seed), np.uint64(step),
                      1.0 - float(p))
    return mask


def softmax_cross_entropy(logits, labels, label_smoothing=0.0, weights=None):
    """-> (loss as a Python float: the one value copied to the host, dlogits (N, K) on the
    device). Shapes and meaning as `numconv.ops.nn.softmax_cross_entropy`."""
    logits = _launch.to_device(logits)
    N = logits.shape[0]
    labels = _launch.to_device(np.asarray(labels, dtype=np.int64) if not
                               _launch.is_device_array(labels) else labels)
    has_weights = weights is not None
    if has_weights:
        weights = _launch.to_device(np.asarray(weights, dtype=np.float64) if not
                                    _launch.is_device_array(weights) else weights)
        total = _channel_reduce(weights.reshape(N, 1, 1), kind=SUM).reshape(1, 1, 1)
    else:
        weights, total = _launch.empty(1, np.float64), _launch.empty((1, 1, 1), np.float64)
    rows = _launch.empty((N, 1, 1), np.float64)
    dlogits = _launch.empty(logits.shape, logits.dtype)
    _launch.launch_1d(_cross_entropy_rows, N, rows, dlogits, logits, labels, weights, has_weights,
                      float(label_smoothing), total)
    loss = _channel_reduce(rows.reshape(1, 1, N), kind=SUM)
    return float(_launch.to_host(loss)[0]), dlogits


def count_correct(logits, labels):
    """How many rows of logits (N, K) have their first maximum at the label (an int, copied to
    the host)."""
    logits = _launch.to_device(logits)
    N = logits.shape[0]
    labels = _launch.to_device(np.asarray(labels, dtype=np.int64) if not
                               _launch.is_device_array(labels) else labels)
    hits = _launch.empty((N, 1, 1), np.float64)
    _launch.launch_1d(_correct_rows, N, hits, logits, labels)
    return int(round(float(_launch.to_host(_channel_reduce(hits.reshape(1, 1, N)))[0])))


def max_norm_rows_(w, max_norm):
    """In place: every row of w (O, I) longer than `max_norm` (L2) scaled back to it."""
    _launch.launch_1d(_max_norm_rows, w.shape[0], w, float(max_norm))


def concat_channels(arrays):
    """Arrays (N, C_i, ...) with equal other axes -> (N, sum C_i, ...)."""
    arrays = [_launch.to_device(a) for a in arrays]
    first = arrays[0]
    C = sum(a.shape[1] for a in arrays)
    out = _launch.empty((first.shape[0], C) + tuple(first.shape[2:]), first.dtype)
    start = 0
    for a in arrays:
        a3 = _as3d(a)
        _launch.launch_1d(_copy_channels, a3.size, _as3d(out), a3, start, 0, a3.shape[1])
        start += a3.shape[1]
    return out


def split_channels(a, start, count):
    """a[:, start:start + count] as a new C-contiguous array."""
    a = _launch.to_device(a)
    out = _launch.empty((a.shape[0], count) + tuple(a.shape[2:]), a.dtype)
    out3 = _as3d(out)
    _launch.launch_1d(_copy_channels, out3.size, out3, _as3d(a), 0, int(start), int(count))
    return out


def transpose(a):
    """(N, A, B) -> (N, B, A), C-contiguous."""
    a = _launch.to_device(a)
    out = _launch.empty((a.shape[0], a.shape[2], a.shape[1]), a.dtype)
    _launch.launch_1d(_transpose, out.size, out, a)
    return out


def fill_outside_(y, lengths, start, end_offset, value):
    """In place on y (N, C, T): positions outside [start, lengths[n] + end_offset) := value."""
    lengths = _launch.to_device(np.asarray(lengths, dtype=np.int64) if not
                                _launch.is_device_array(lengths) else lengths)
    _launch.launch_1d(_fill_outside, y.size, y, lengths, int(start), int(end_offset),
                      y.dtype.type(value))
