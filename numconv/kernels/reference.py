"""The definition of every numconv op, as plain NumPy loops.

Slow and obvious on purpose: each function is the formula from the course written out, so that the
fast kernels (CPU and CUDA) can be checked against it and `numconv gradcheck` can use it. Signatures
match the kernels exactly: outputs first, then inputs, then normalised integer options.

Shapes: x (N, C, H, W), w (O, C // groups, KH, KW), y (N, O, OH, OW). Padding is given by its top
and left amounts (pt, pl); the bottom and right amounts are implied by the output's shape.
"""
import math

import numpy as np


def _padded_value(x, n, c, ih, iw, fill=0.0):
    """x[n, c, ih, iw], or `fill` when (ih, iw) lies in the padding."""
    H, W = x.shape[2], x.shape[3]
    if 0 <= ih < H and 0 <= iw < W:
        return x[n, c, ih, iw]
    return fill


# ----------------------------------------------------------------------------------------------
# Convolution (deep-learning convention: cross-correlation; true convolution flips w first)
# ----------------------------------------------------------------------------------------------

def conv2d_forward(y, x, w, b, sh, sw, pt, pl, dh, dw, groups):
    """y[n, o, i, j] = b[o] + sum_{c, m, k} x[n, g*Cg + c, i*sh - pt + m*dh, j*sw - pl + k*dw] w[o, c, m, k]."""
    N, O, OH, OW = y.shape
    Cg, KH, KW = w.shape[1], w.shape[2], w.shape[3]
    Og = O // groups
    for n in range(N):
        for o in range(O):
            g = o // Og
            for i in range(OH):
                for j in range(OW):
                    acc = 0.0 if b is None else float(b[o])
                    for c in range(Cg):
                        for m in range(KH):
                            for k in range(KW):
                                acc += _padded_value(x, n, g * Cg + c, i * sh - pt + m * dh,
                                                     j * sw - pl + k * dw) * w[o, c, m, k]
                    y[n, o, i, j] = acc


def conv2d_backward_input(dx, dy, w, sh, sw, pt, pl, dh, dw, groups):
    """dx = dL/dx: every output that read x[n, c, ih, iw] sends back dy times the weight it used.

    Written as a gather over the outputs (i, j) with i*sh - pt + m*dh == ih: for stride 1 and no
    dilation this is exactly the full convolution of dy with the 180-degree-rotated filter.
    """
    N, C, H, W = dx.shape
    O, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    Cg, KH, KW = w.shape[1], w.shape[2], w.shape[3]
    Og = O // groups
    for n in range(N):
        for cc in range(C):
            g, c = cc // Cg, cc % Cg
            for ih in range(H):
                for iw in range(W):
                    acc = 0.0
                    for o in range(g * Og, (g + 1) * Og):
                        for m in range(KH):
                            for k in range(KW):
                                ti, tj = ih + pt - m * dh, iw + pl - k * dw
                                if ti % sh or tj % sw:
                                    continue
                                i, j = ti // sh, tj // sw
                                if 0 <= i < OH and 0 <= j < OW:
                                    acc += dy[n, o, i, j] * w[o, c, m, k]
                    dx[n, cc, ih, iw] = acc


def conv2d_backward_weight(dwt, dy, x, sh, sw, pt, pl, dh, dw, groups):
    """dw[o, c, m, k] = sum_{n, i, j} dy[n, o, i, j] x[n, g*Cg + c, i*sh - pt + m*dh, j*sw - pl + k*dw]:
    the correlation of the input with the output gradient."""
    O, Cg, KH, KW = dwt.shape
    N, _, OH, OW = dy.shape
    Og = O // groups
    for o in range(O):
        g = o // Og
        for c in range(Cg):
            for m in range(KH):
                for k in range(KW):
                    acc = 0.0
                    for n in range(N):
                        for i in range(OH):
                            for j in range(OW):
                                acc += dy[n, o, i, j] * _padded_value(
                                    x, n, g * Cg + c, i * sh - pt + m * dh, j * sw - pl + k * dw)
                    dwt[o, c, m, k] = acc


def conv2d_backward_bias(db, dy):
    """db[o] = sum of dy over batch and positions."""
    for o in range(dy.shape[1]):
        db[o] = dy[:, o].astype(np.float64).sum()


def conv1d_max_backward(dxt, dwt, db, dm, idx, xt, wt, s, pl, d):
    """The gradients of m[n, o] = max_t y[n, o, t], y = conv1d(x, w, b) (max-over-time pooling),
    given dm = dL/dm and the winning positions idx[n, o]. Channels last: xt and dxt (N, L, C), wt
    and dwt (O, K, C), i.e. w[o, c, k] = wt[o, k, c].

    Only the winning window of each (n, o) has a gradient, dL/dy[n, o, idx[n, o]] = dm[n, o], so
    the three gradients of conv1d reduce to sums over those windows:
      dw[o, c, k] = sum_n dm[n, o] x[n, c, idx[n, o]*s - pl + k*d]
      db[o]       = sum_n dm[n, o]
      dx[n, c, i] = sum_{o, k : idx[n, o]*s - pl + k*d == i} dm[n, o] w[o, c, k]
    (terms whose input position lies in the padding are dropped)."""
    N, L, C = xt.shape
    O, K = wt.shape[0], wt.shape[1]
    dxt[...] = 0
    dwt[...] = 0
    for o in range(O):
        db[o] = dm[:, o].astype(np.float64).sum()
    for n in range(N):
        for o in range(O):
            for k in range(K):
                i = idx[n, o] * s - pl + k * d
                if 0 <= i < L:
                    for c in range(C):
                        dwt[o, k, c] += dm[n, o] * xt[n, i, c]
                        dxt[n, i, c] += dm[n, o] * wt[o, k, c]


# ----------------------------------------------------------------------------------------------
# Pooling. A window (i, j) covers rows i*sh - pt ... i*sh - pt + kh - 1 (likewise columns).
# ----------------------------------------------------------------------------------------------

def maxpool2d_forward(y, idx, x, kh, kw, sh, sw, pt, pl):
    """y = max over each window (padding counts as -inf); idx = flat index ih*W + iw of the winner.
    Ties go to the first position in row-major window order."""
    N, C, OH, OW = y.shape
    H, W = x.shape[2], x.shape[3]
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best, arg = -math.inf, -1
                    for m in range(kh):
                        for k in range(kw):
                            ih, iw = i * sh - pt + m, j * sw - pl + k
                            if 0 <= ih < H and 0 <= iw < W and (x[n, c, ih, iw] > best or arg < 0):
                                best, arg = x[n, c, ih, iw], ih * W + iw
                    y[n, c, i, j] = best
                    idx[n, c, i, j] = arg


def maxpool2d_backward(dx, dy, idx, kh, kw, sh, sw, pt, pl):
    """Each output's gradient goes to the input that won its window."""
    dx[...] = 0
    N, C, OH, OW = dy.shape
    W = dx.shape[3]
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    a = idx[n, c, i, j]
                    dx[n, c, a // W, a % W] += dy[n, c, i, j]


def _avg_divisor(i, j, kh, kw, sh, sw, pt, pl, H, W, Hp, Wp, count_include_pad):
    """How many positions an average window divides by. With count_include_pad the window is
    clipped to the padded extent (Hp = pt + H + pb), otherwise to the input itself."""
    h0, w0 = i * sh - pt, j * sw - pl
    lo_h, lo_w = (-pt, -pl) if count_include_pad else (0, 0)
    hi_h, hi_w = (Hp - pt, Wp - pl) if count_include_pad else (H, W)
    rows = min(h0 + kh, hi_h) - max(h0, lo_h)
    cols = min(w0 + kw, hi_w) - max(w0, lo_w)
    return rows * cols


def avgpool2d_forward(y, x, kh, kw, sh, sw, pt, pl, pb, pr, count_include_pad):
    """y = mean over each window; padding counts as zeros (and in the divisor if count_include_pad)."""
    N, C, OH, OW = y.shape
    H, W = x.shape[2], x.shape[3]
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    s = 0.0
                    for m in range(kh):
                        for k in range(kw):
                            s += _padded_value(x, n, c, i * sh - pt + m, j * sw - pl + k)
                    y[n, c, i, j] = s / _avg_divisor(i, j, kh, kw, sh, sw, pt, pl, H, W,
                                                     pt + H + pb, pl + W + pr, count_include_pad)


def avgpool2d_backward(dx, dy, kh, kw, sh, sw, pt, pl, pb, pr, count_include_pad):
    """Each output's gradient is shared equally by the inputs of its window."""
    dx[...] = 0
    N, C, OH, OW = dy.shape
    H, W = dx.shape[2], dx.shape[3]
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    d = dy[n, c, i, j] / _avg_divisor(i, j, kh, kw, sh, sw, pt, pl, H, W,
                                                      pt + H + pb, pl + W + pr, count_include_pad)
                    for m in range(kh):
                        for k in range(kw):
                            ih, iw = i * sh - pt + m, j * sw - pl + k
                            if 0 <= ih < H and 0 <= iw < W:
                                dx[n, c, ih, iw] += d


def lppool2d_forward(y, x, p, kh, kw, sh, sw, pt, pl):
    """y = (sum over the window of |x|^p)^(1/p); padding contributes zero."""
    N, C, OH, OW = y.shape
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    s = 0.0
                    for m in range(kh):
                        for k in range(kw):
                            s += abs(_padded_value(x, n, c, i * sh - pt + m, j * sw - pl + k)) ** p
                    y[n, c, i, j] = s ** (1.0 / p)


def lppool2d_backward(dx, dy, x, y, p, kh, kw, sh, sw, pt, pl):
    """d y / d x = sign(x) |x|^(p-1) / y^(p-1); taken as 0 where the window's norm y is 0."""
    dx[...] = 0
    N, C, OH, OW = dy.shape
    H, W = x.shape[2], x.shape[3]
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    if y[n, c, i, j] == 0:
                        continue
                    scale = dy[n, c, i, j] / y[n, c, i, j] ** (p - 1)
                    for m in range(kh):
                        for k in range(kw):
                            ih, iw = i * sh - pt + m, j * sw - pl + k
                            if 0 <= ih < H and 0 <= iw < W:
                                v = x[n, c, ih, iw]
                                dx[n, c, ih, iw] += scale * np.sign(v) * abs(v) ** (p - 1)


def global_pool2d_forward(y, idx, x, kind):
    """y[n, c] = max, mean or sum of the whole plane x[n, c]; idx = flat winner index for 'max'."""
    N, C, H, W = x.shape
    for n in range(N):
        for c in range(C):
            plane = x[n, c].ravel()
            if kind == "max":
                idx[n, c] = int(np.argmax(plane))  # first maximum wins ties
                y[n, c] = plane[idx[n, c]]
            elif kind == "avg":
                y[n, c] = plane.astype(np.float64).sum() / (H * W)
            else:
                y[n, c] = plane.astype(np.float64).sum()


def global_pool2d_backward(dx, dy, idx, kind):
    N, C, H, W = dx.shape
    dx[...] = 0
    for n in range(N):
        for c in range(C):
            if kind == "max":
                dx[n, c, idx[n, c] // W, idx[n, c] % W] = dy[n, c]
            elif kind == "avg":
                dx[n, c] = dy[n, c] / (H * W)
            else:
                dx[n, c] = dy[n, c]
