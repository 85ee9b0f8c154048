"""The arithmetic of one output element, written once as plain Python and compiled for each device.

Every function here computes one element of an op's output (or of a gradient) from whole arrays and
that element's indices, summing its terms in a fixed order. They hold no device-specific code, so
`compile_for(numba.njit)` makes CPU functions of them and `compile_for(numba.cuda.jit, device=True)`
CUDA device functions (`numconv.kernels.cuda.elementwise`); kernels on either device then only map
threads or loop iterations to elements. Called directly they run as Python, on NumPy arrays.

Accumulators start at the arrays' own zero (`a.dtype.type(0)`), so float32 data is summed in
float32, the GPU's fast path; the long reductions (global pooling) sum in float64, as the CPU
kernels do.
Indices follow `numconv.kernels.reference`: x (N, C, H, W), w (O, C // groups, KH, KW), y and dy
(N, O, OH, OW); a pooling window (i, j) covers rows i*sh - pt .. i*sh - pt + kh - 1 (likewise
columns); idx holds the flat index ih * W + iw of each max window's winner.
"""
from numconv.kernels._twins import compile_functions

__all__ = [
    # helpers first: `compile_for` compiles in this order, so callees exist before their callers
    "unravel4", "valid_range", "windows_containing", "avg_divisor",
    "conv_output", "conv_input_grad", "conv_weight_grad",
    "max_window", "max_gather", "avg_window", "avg_gather", "lp_window", "lp_gather",
    "global_reduce", "global_spread",
]

GLOBAL_KINDS = {"max": 0, "avg": 1, "sum": 2}


def compile_for(jit, **options):
    """Every function of `__all__` compiled with `jit(function, **options)`, as {name: compiled}
    (see `numconv.kernels._twins`)."""
    return compile_functions(globals(), __all__, jit, **options)


# ----------------------------------------------------------------------------------------- helpers

def unravel4(t, B, C, D):
    """(a, b, c, d) with t = ((a*B + b)*C + c)*D + d: a flat C-order index into (A, B, C, D)."""
    d = t % D
    t //= D
    c = t % C
    t //= C
    return t // B, t % B, c, d


def valid_range(start, step, size, count):
    """[a, b): the q in [0, count) with 0 <= start + q*step < size (a == b when there are none)."""
    a = 0
    if start < 0:
        a = (-start + step - 1) // step
    b = count
    if start >= size:
        b = 0
    elif start + (count - 1) * step >= size:
        b = (size - 1 - start) // step + 1
    if a > count:
        a = count
    if b < a:
        b = a
    return a, b


def windows_containing(pos, pad, k, s, n_out):
    """[lo, hi): the pooling windows (size k, stride s) whose span covers input index pos."""
    t = pos + pad - k + 1
    lo = 0 if t <= 0 else (t + s - 1) // s
    hi = (pos + pad) // s + 1
    if hi > n_out:
        hi = n_out
    if hi < lo:
        hi = lo
    return lo, hi


def avg_divisor(i, j, kh, kw, sh, sw, pt, pl, H, W, Hp, Wp, include_pad):
    """How many positions window (i, j) averages: clipped to the padded extent (Hp = pt + H + pb)
    with include_pad, to the input itself without."""
    h0 = i * sh - pt
    w0 = j * sw - pl
    if include_pad:
        rows = min(h0 + kh, Hp - pt) - max(h0, -pt)
        cols = min(w0 + kw, Wp - pl) - max(w0, -pl)
    else:
        rows = min(h0 + kh, H) - max(h0, 0)
        cols = min(w0 + kw, W) - max(w0, 0)
    return rows * cols


# ------------------------------------------------------------------------------------- convolution

def conv_output(x, w, b, has_bias, n, o, i, j, sh, sw, pt, pl, dh, dw, groups):
    """y[n, o, i, j] = b[o] + sum over (c, m, k) of x[n, g*Cg + c, i*sh - pt + m*dh, j*sw - pl +
    k*dw] * w[o, c, m, k], terms outside the input left out."""
    H, W = x.shape[2], x.shape[3]
    Cg, KH, KW = w.shape[1], w.shape[2], w.shape[3]
    c0 = (o // (w.shape[0] // groups)) * Cg
    m0, m1 = valid_range(i * sh - pt, dh, H, KH)
    k0, k1 = valid_range(j * sw - pl, dw, W, KW)
    acc = b[o] if has_bias else x.dtype.type(0)
    for c in range(Cg):
        for m in range(m0, m1):
            ih = i * sh - pt + m * dh
            for k in range(k0, k1):
                acc += x[n, c0 + c, ih, j * sw - pl + k * dw] * w[o, c, m, k]
    return acc


def conv_input_grad(dy, w, n, cc, ih, iw, sh, sw, pt, pl, dh, dw, groups):
    """dx[n, cc, ih, iw]: the sum over the outputs (o, i, j) that read x[n, cc, ih, iw] through
    weight (m, k), i*sh - pt + m*dh == ih, of dy[n, o, i, j] * w[o, c, m, k]; order (o, m, k)."""
    OH, OW = dy.shape[2], dy.shape[3]
    O, Cg, KH, KW = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    Og = O // groups
    g = cc // Cg
    c = cc - g * Cg
    acc = dy.dtype.type(0)
    for o in range(g * Og, (g + 1) * Og):
        for m in range(KH):
            ti = ih + pt - m * dh
            if ti < 0 or ti % sh != 0 or ti // sh >= OH:
                continue
            i = ti // sh
            for k in range(KW):
                tj = iw + pl - k * dw
                if tj < 0 or tj % sw != 0 or tj // sw >= OW:
                    continue
                acc += dy[n, o, i, tj // sw] * w[o, c, m, k]
    return acc


def conv_weight_grad(dy, x, o, c, m, k, q0, q1, sh, sw, pt, pl, dh, dw, groups):
    """The part of dw[o, c, m, k] from output positions q in [q0, q1), q = (n*OH + i)*OW + j: the
    sum of dy[n, o, i, j] * x[n, g*Cg + c, i*sh - pt + m*dh, j*sw - pl + k*dw] in order of q.
    q0 = 0, q1 = N*OH*OW gives the whole element."""
    OH, OW = dy.shape[2], dy.shape[3]
    H, W = x.shape[2], x.shape[3]
    Cg = x.shape[1] // groups
    cc = (o // (dy.shape[1] // groups)) * Cg + c
    i0, i1 = valid_range(m * dh - pt, sh, H, OH)     # output rows that read an input row
    j0, j1 = valid_range(k * dw - pl, sw, W, OW)
    acc = dy.dtype.type(0)
    q = q0
    while q < q1:
        row = q // OW                     # n*OH + i
        j = q - row * OW
        n = row // OH
        i = row - n * OH
        end = min(q1, q + OW - j)         # the rest of this output row
        if i0 <= i < i1:
            ih = i * sh - pt + m * dh
            for jj in range(max(j, j0), min(j + end - q, j1)):
                acc += dy[n, o, i, jj] * x[n, cc, ih, jj * sw - pl + k * dw]
        q = end
    return acc


# ----------------------------------------------------------------------------------------- pooling

def max_window(x, n, c, i, j, kh, kw, sh, sw, pt, pl):
    """(max, flat index ih*W + iw of the first maximum in row-major order) of window (i, j);
    padding never wins."""
    H, W = x.shape[2], x.shape[3]
    h0 = i * sh - pt
    w0 = j * sw - pl
    best = x[n, c, max(h0, 0), max(w0, 0)]
    arg = -1
    for m in range(max(0, -h0), min(kh, H - h0)):
        for k in range(max(0, -w0), min(kw, W - w0)):
            v = x[n, c, h0 + m, w0 + k]
            if arg < 0 or v > best:
                best = v
                arg = (h0 + m) * W + w0 + k
    return best, arg


def max_gather(dy, idx, n, c, ih, iw, W, kh, kw, sh, sw, pt, pl):
    """dx[n, c, ih, iw]: the sum of dy over the windows that x[n, c, ih, iw] won."""
    ilo, ihi = windows_containing(ih, pt, kh, sh, dy.shape[2])
    jlo, jhi = windows_containing(iw, pl, kw, sw, dy.shape[3])
    me = ih * W + iw
    acc = dy.dtype.type(0)
    for i in range(ilo, ihi):
        for j in range(jlo, jhi):
            if idx[n, c, i, j] == me:
                acc += dy[n, c, i, j]
    return acc


def avg_window(x, n, c, i, j, kh, kw, sh, sw, pt, pl, pb, pr, include_pad):
    """The mean of window (i, j): padding counts as zero, and in the divisor with include_pad."""
    H, W = x.shape[2], x.shape[3]
    h0 = i * sh - pt
    w0 = j * sw - pl
    s = x.dtype.type(0)
    for m in range(max(0, -h0), min(kh, H - h0)):
        for k in range(max(0, -w0), min(kw, W - w0)):
            s += x[n, c, h0 + m, w0 + k]
    d = avg_divisor(i, j, kh, kw, sh, sw, pt, pl, H, W, pt + H + pb, pl + W + pr, include_pad)
    return s / x.dtype.type(d)


def avg_gather(dy, n, c, ih, iw, H, W, kh, kw, sh, sw, pt, pl, pb, pr, include_pad):
    """dx[n, c, ih, iw]: the sum over the windows containing it of dy / that window's divisor."""
    ilo, ihi = windows_containing(ih, pt, kh, sh, dy.shape[2])
    jlo, jhi = windows_containing(iw, pl, kw, sw, dy.shape[3])
    acc = dy.dtype.type(0)
    for i in range(ilo, ihi):
        for j in range(jlo, jhi):
            d = avg_divisor(i, j, kh, kw, sh, sw, pt, pl, H, W, pt + H + pb, pl + W + pr,
                            include_pad)
            acc += dy[n, c, i, j] / dy.dtype.type(d)
    return acc


def lp_window(x, n, c, i, j, p, kh, kw, sh, sw, pt, pl):
    """(sum over window (i, j) of |x|^p)^(1/p); padding contributes zero."""
    H, W = x.shape[2], x.shape[3]
    h0 = i * sh - pt
    w0 = j * sw - pl
    pp = x.dtype.type(p)
    s = x.dtype.type(0)
    for m in range(max(0, -h0), min(kh, H - h0)):
        for k in range(max(0, -w0), min(kw, W - w0)):
            s += abs(x[n, c, h0 + m, w0 + k]) ** pp
    return s ** (x.dtype.type(1) / pp)


def lp_gather(dy, x, y, n, c, ih, iw, p, kh, kw, sh, sw, pt, pl):
    """dx[n, c, ih, iw] = sign(v) |v|^(p-1) * sum over the windows containing v = x[n, c, ih, iw]
    of dy / y^(p-1); windows whose norm y is 0 contribute 0, as does v = 0."""
    v = x[n, c, ih, iw]
    acc = dy.dtype.type(0)
    if v == 0:
        return acc
    q = dy.dtype.type(p) - dy.dtype.type(1)
    ilo, ihi = windows_containing(ih, pt, kh, sh, dy.shape[2])
    jlo, jhi = windows_containing(iw, pl, kw, sw, dy.shape[3])
    for i in range(ilo, ihi):
        for j in range(jlo, jhi):
            yy = y[n, c, i, j]
            if yy != 0:
                acc += dy[n, c, i, j] / yy ** q
    sign = dy.dtype.type(1) if v > 0 else dy.dtype.type(-1)
    return acc * sign * abs(v) ** q


def global_reduce(x, n, c, kind):
    """(value, arg) for plane x[n, c]: kind 0 max (arg: flat index of the first maximum), 1 mean,
    2 sum (arg 0); means and sums accumulate in float64."""
    H, W = x.shape[2], x.shape[3]
    if kind == 0:
        best = x[n, c, 0, 0]
        arg = 0
        for ih in range(H):
            for iw in range(W):
                if x[n, c, ih, iw] > best:
                    best = x[n, c, ih, iw]
                    arg = ih * W + iw
        return 1.0 * best, arg
    s = 0.0
    for ih in range(H):
        for iw in range(W):
            s += x[n, c, ih, iw]
    return (s / (H * W) if kind == 1 else s), 0


def global_spread(dy, idx, n, c, ih, iw, H, W, kind):
    """dx[n, c, ih, iw] for global pooling: dy to the max's winner, dy / (H*W) for a mean, dy for
    a sum."""
    if kind == 0:
        return dy[n, c] if idx[n, c] == ih * W + iw else dy.dtype.type(0)
    if kind == 1:
        return dy[n, c] / dy.dtype.type(H * W)
    return dy[n, c]
