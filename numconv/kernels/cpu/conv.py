"""CPU convolution kernels. Six forms, chosen by the layer's shape (conv_kernel, blocked_applies
and the launchers below; config.CPU_CONV_KERNEL forces im2col, direct, taps or blocked), all
with gathered gradients.

im2col on tiles (the general case). The output pixels of a whole batch are numbered j = n * P + p
(P = OH * OW) and cut into tiles of `tn` consecutive columns. For a tile, im2col writes the
receptive field of each of its pixels as a column of `col` (rows r = (c, m, k) in the weight's
order), and the tile's outputs are one matrix product W_g (Og, Cg*KH*KW) @ col (Cg*KH*KW, tn).
Tiles are independent, so they run in parallel with no shared writes; tile sizes depend only on
shapes (numconv.config), never on the thread count.

- forward: y = W @ col per tile, scattered back to (N, O, OH, OW) with the bias added.
- weight gradient: dW = sum over column chunks of dY_chunk @ col_chunk^T, chunks larger than the
  forward's tiles (a long reduction per product). Chunks are grouped into fixed segments whose
  partial sums are reduced in a fixed order: no atomics, the same bits every run.
- input gradient: dcol = W^T @ dY for a block of output rows, then each input pixel *gathers* the
  dcol entries that read it (col2im as a gather), so no two tasks write the same dx element.

The other forms:
- direct forward (stride 1, few output channels per group, e.g. LeNet's 6 and 16 maps, or
  depthwise): with the padded input rows laid end to end at pitch Wp = Wi, at most pl + W + pr
  (and small images side by side, Wp = images * Wi), output pixel (r, ow) of a block of rows is
  flat position q = r*Wp + ow and tap (m, k) reads flat position q + m*dh*Wp + k*dw. So each tap
  adds w[o, c, m, k] times one contiguous run of the input to one contiguous run of
  accumulators: a long loop the compiler vectorises, with no im2col at all. The positions past
  OW in each image's row (at most KW - 1: the zeros between images serve as one's right padding
  and the next one's left, see _pitch) are computed and dropped (the price of the long runs).
- taps (stride 1, more output channels and at least CPU_TAPS_MIN_CHANNELS input channels per
  group: ResNet's, VGG's and AlexNet's layers): the direct form's flat layout, but each tap is one
  BLAS product, W[:, :, m, k] (Og, Cg) @ xp[:, off:off + Q] (Cg, Q), accumulated in place. The
  shifted window is a strided view of the padded rows that BLAS reads as it lies (kernels.cpu.
  _gemm), so nothing is copied KH*KW times as im2col does; blocks of about CPU_TAPS_COLS
  positions keep the product's operands in cache. The input gradient is the same full
  correlation as the direct one's; the weight gradient is, per tap, dY_block @ xp_window^T summed
  over blocks in fixed segments.
- conv1d with stride 1 and one group (the Kim CNN's layers), where im2col is used otherwise: with
  x copied channels last and padded, (N * Lp, C) at Lp = pl + L + pr rows an image, output row
  q = n * Lp + t is the sum over taps k of x_rows[q + k*dw] @ W_k.T (C, O): K matrix products over
  shifted row ranges of one array, no im2col (the rows t >= OL of each image are computed and
  dropped). Its input gradient runs the same products backwards (dy's rows shifted back by k*dw,
  times W_k), its weight gradient one product per tap over fixed row segments.
- register-blocked (numconv.kernels.cpu.blocked; float32 forward passes that measured faster
  with it: LeNet-5's C3, strided layers larger than 1x1, see config.CPU_BLOCKED_MIN_TAPS): the
  output channels in the vector lanes, a block of pixels' sums held in registers. The input
  gradient of a stride-1 layer, the full correlation below, runs it too where its channels fit,
  and so do weight gradients of kernels of at least 5 x 2 taps (a block of taps, not pixels).
- a kernel that covers the whole input (no padding, one output position, one group: LeNet-5's C5)
  is a fully-connected layer on the flattened image, and runs as one (numconv.kernels.cpu.linear).
- direct gradients (the same shapes): the input gradient is the direct forward pass of dy with
  the rotated, channel-swapped filter over dy padded by the kernel's extent (a full correlation);
  the weight gradient is, per tap, a dot product of dy's flat rows with the input run the tap
  reads, summed over (image, row block) units in fixed segments as above.
- conv1d followed by max over positions (Kim's max-over-time pooling): dy is zero but at one
  winning window per (n, o), so the backward visits only those windows, N*O*C*K multiply-adds
  per gradient instead of OL times as many, channels last so that each window is a contiguous run.

Shapes: x (N, C, H, W), w (O, Cg, KH, KW), y and dy (N, O, OH, OW). Arguments: outputs first, then
(sh, sw) stride, (pt, pl) top/left padding, (dh, dw) dilation, groups.
"""
import math

import numpy as np
from numba import njit, prange

from numconv import config
from numconv.kernels.cpu import blocked, linear
from numconv.kernels.cpu._blas import single_threaded_blas
from numconv.kernels.cpu._gemm import gemm
from numconv.kernels.cpu.windows import _transpose_into

# ----------------------------------------------------------------------------------------------
# Shared pieces (serial; called from inside parallel loops)
# ----------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _valid_range(start, step, size, count):
    """Indices q in [0, count) with 0 <= start + q*step < size, as a half-open range [a, b) with
    0 <= a <= b <= count (empty when no q qualifies)."""
    a = 0
    if start < 0:
        a = min(count, (-start + step - 1) // step)
    b = count
    last = start + (count - 1) * step
    if last >= size:
        b = (size - 1 - start) // step + 1 if size - 1 >= start else 0
    if b < a:
        b = a
    return a, b


@njit(cache=True, inline="always")
def _run_range(start, step, size, count):
    """_valid_range without a division in the common stride-1 case."""
    if step == 1:
        a = min(count, max(0, -start))
        b = max(a, min(count, size - start))
        return a, b
    return _valid_range(start, step, size, count)


@njit(cache=True)
def _im2col_tile(col, x, c0, KH, KW, sh, sw, pt, pl, dh, dw, OW, P, j0):
    """col[r, q] = x[n, c0 + c, ih, iw] for column j0 + q, r = (c, m, k); 0 in the padding.

    The tile's columns are walked in runs along one output row; a run's valid span for each k is
    found once and reused for every (c, m), so the work per element is a copy."""
    R, m_cols = col.shape
    H, W = x.shape[2], x.shape[3]
    Cg = R // (KH * KW)
    ak = np.empty(KW, np.int64)
    bk = np.empty(KW, np.int64)
    sk = np.empty(KW, np.int64)
    q = 0
    while q < m_cols:
        j = j0 + q
        n = j // P
        p = j - n * P
        oh = p // OW
        ow0 = p - oh * OW
        run = min(OW - ow0, m_cols - q)
        for k in range(KW):
            sk[k] = ow0 * sw - pl + k * dw
            ak[k], bk[k] = _run_range(sk[k], sw, W, run)
        for c in range(Cg):
            for m in range(KH):
                ih = oh * sh - pt + m * dh
                r0 = (c * KH + m) * KW
                if ih < 0 or ih >= H:
                    for k in range(KW):
                        for t in range(run):
                            col[r0 + k, q + t] = 0
                    continue
                src = x[n, c0 + c, ih]
                for k in range(KW):
                    a, b, start = ak[k], bk[k], sk[k]
                    dst = col[r0 + k, q:q + run]
                    dst[:a] = 0
                    if sw == 1:
                        dst[a:b] = src[start + a:start + b]
                    else:
                        for t in range(a, b):
                            dst[t] = src[start + t * sw]
                    dst[b:] = 0
        q += run


@njit(cache=True)
def _gather_tile(buf, src, o0, P, j0):
    """buf[o, q] = src[n, o0 + o, p] for column j0 + q: a (N, O, P) tile as a contiguous matrix."""
    Og, m_cols = buf.shape
    q = 0
    while q < m_cols:
        j = j0 + q
        n = j // P
        p = j - n * P
        run = min(P - p, m_cols - q)
        for o in range(Og):
            buf[o, q:q + run] = src[n, o0 + o, p:p + run]
        q += run


# ----------------------------------------------------------------------------------------------
# Parallel bodies
# ----------------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _forward_tiles(y3, x, w3, b, has_bias, KH, KW, sh, sw, pt, pl, dh, dw, OW, tn):
    N, O, P = y3.shape
    G, Og, R = w3.shape
    Cg = R // (KH * KW)
    ncols = N * P
    ntiles = (ncols + tn - 1) // tn
    for t in prange(ntiles * G):
        g = t % G
        j0 = (t // G) * tn
        m_cols = min(ncols, j0 + tn) - j0
        col = np.empty((R, m_cols), dtype=x.dtype)
        _im2col_tile(col, x, g * Cg, KH, KW, sh, sw, pt, pl, dh, dw, OW, P, j0)
        out = np.dot(w3[g], col)
        q = 0
        while q < m_cols:
            j = j0 + q
            n = j // P
            p = j - n * P
            run = min(P - p, m_cols - q)
            for o in range(Og):
                bias = b[g * Og + o] if has_bias else 0
                for s in range(run):
                    y3[n, g * Og + o, p + s] = out[o, q + s] + bias
            q += run


@njit(cache=True)
def _pitch(OW, W, pl, ext):
    """Columns per image in the direct and taps kernels' flat rows (stride 1, ext = (KW-1)*dw):
    the image's W columns at offset pl, then zeros. Output j reads columns j .. j + ext; those
    past the pitch fall on the first pl columns of the next image or row, zeros as well, so the
    zeros serve as the right padding of one image and the left padding of the next: a side
    padded on both sides pays for it once. (LeNet-5's C3 input gradient, 14 outputs a row of a
    5x5 kernel over dy padded by 4: a pitch of 14, not 18.)"""
    return max(pl + W, OW, OW + ext - pl)


@njit(cache=True)
def _padded_rows(x, n0, nb, c0, Cg, oh0, hin, pt, pl, Wi):
    """The direct kernels' input layout: xp[c, i*Wp + b*Wi + j] = x[n0 + b, c0 + c, oh0 - pt + i,
    j - pl] for nb images side by side (Wp = nb * Wi, Wi = _pitch(...)), hin rows, zero outside
    the input; pl more zeros at the end, which the last row's last taps read."""
    H, W = x.shape[2], x.shape[3]
    Wp = nb * Wi
    xp = np.zeros((Cg, hin * Wp + pl), dtype=x.dtype)
    i0 = max(0, pt - oh0)
    i1 = min(hin, H + pt - oh0)
    for b_ in range(nb):
        for c in range(Cg):
            for i in range(i0, i1):
                d0 = i * Wp + b_ * Wi + pl
                xp[c, d0:d0 + W] = x[n0 + b_, c0 + c, oh0 - pt + i]
    return xp


@njit(cache=True)
def _block(N, OH, OW, Wi, KH, dh, side, rows, ni, blk):
    """The direct and taps kernels' block `blk` of output rows of the ni-th group of `side`
    images: (n0, nb, Wp, oh0, nr, hin, Q) = first image, images, pitch of one row of all of them,
    first output row, output rows, padded input rows read, flat positions computed."""
    n0 = ni * side
    nb = min(N, n0 + side) - n0
    Wp = nb * Wi
    oh0 = blk * rows
    nr = min(OH, oh0 + rows) - oh0
    hin = nr + (KH - 1) * dh
    return n0, nb, Wp, oh0, nr, hin, (nr - 1) * Wp + (nb - 1) * Wi + OW


@njit(cache=True, inline="always")
def _padded_dy(dy, n0, nb, o0, Og, oh0, nr, Wi, Q):
    """dy's block in the same flat layout: gp[o, i*Wp + b*Wi + j] = dy[n0 + b, o0 + o, oh0 + i, j]
    (Wp = nb * Wi), zero in the positions past OW that the forward pass drops, so that the weight
    gradients' products over whole runs add nothing there. Inlined: called as a function, its
    fresh array came back as any array, and LeNet-5's C1 weight gradient ran 1.2x slower."""
    OW = dy.shape[3]
    Wp = nb * Wi
    gp = np.zeros((Og, Q), dtype=dy.dtype)
    for b_ in range(nb):
        for o in range(Og):
            for i in range(nr):
                q0 = i * Wp + b_ * Wi
                gp[o, q0:q0 + OW] = dy[n0 + b_, o0 + o, oh0 + i]
    return gp


@njit(parallel=True, cache=True, fastmath={"contract"})
def _direct_forward(y, x, w, b, has_bias, pt, pl, dh, dw, groups, rows, side):
    """Stride 1. Each task owns `rows` output rows of `side` consecutive images (laid side by side,
    so that small images still give long runs) and one group (all its Og channels).

    For each input channel and kernel row, the taps are taken up to five at a time (a 5x5
    kernel's row in one pass) and the output maps two at a time, three on five-tap rows: one pass
    over two or three accumulator rows per group of taps, loading and storing each once and
    loading each input run once for all of them (the memory traffic that bounds this loop; four
    taps a pass ran 1.4-1.6x faster than one, five 1.2x faster than four and one on 5x5 kernels,
    pairs of maps 1.2x faster than single maps, triples 1.07-1.18x faster than pairs on LeNet-5's
    C1 and C3, forward and input gradient). The code is written out per group size: moved into
    a helper function, the loops ran 1.2-1.9x slower. fastmath 'contract' fuses each multiply and
    add into one FMA (1.12x faster on LeNet-5's C3, forward and input gradient); the order of the
    sums is unchanged, and each map's sum is the same expression in a pair or a triple."""
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    OH, OW = y.shape[2], y.shape[3]
    Og = O // groups
    Wi = _pitch(OW, W, pl, (KW - 1) * dw)
    nblk = (OH + rows - 1) // rows
    nside = (N + side - 1) // side
    for t in prange(nside * groups * nblk):
        g = (t // nblk) % groups
        n0, nb, Wp, oh0, nr, hin, Q = _block(N, OH, OW, Wi, KH, dh, side, rows,
                                             t // (nblk * groups), t % nblk)
        xp = _padded_rows(x, n0, nb, g * Cg, Cg, oh0, hin, pt, pl, Wi)
        acc = np.empty((Og, Q), dtype=y.dtype)
        for o in range(Og):
            acc[o, :] = b[g * Og + o] if has_bias else 0
        for m in range(KH):
            # the block's rows whose kernel row m reads a row of x and not the zero padding above
            # or below it: the others would only add zeros (the full correlation of the input
            # gradient pads dy by KH - 1 rows each side: 29 % of LeNet-5 C3's row-taps)
            i_lo = max(0, pt - oh0 - m * dh)
            i_hi = min(nr, H + pt - oh0 - m * dh)
            if i_hi <= i_lo:
                continue
            q0 = i_lo * Wp
            Qm = (i_hi - 1) * Wp + (nb - 1) * Wi + OW - q0
            for c in range(Cg):
                k = 0
                while k < KW:
                    nk = min(5, KW - k)
                    off = m * dh * Wp + k * dw + q0
                    # tap k + j reads sj[q]; taps past nk read s0 with a zero weight (never used)
                    s0 = xp[c, off:off + Qm]
                    s1 = xp[c, off + dw:off + dw + Qm] if nk > 1 else s0
                    s2 = xp[c, off + 2 * dw:off + 2 * dw + Qm] if nk > 2 else s0
                    s3 = xp[c, off + 3 * dw:off + 3 * dw + Qm] if nk > 3 else s0
                    s4 = xp[c, off + 4 * dw:off + 4 * dw + Qm] if nk > 4 else s0
                    o = 0
                    while o < Og:
                        left = Og - o
                        if nk == 5 and left >= 3 and left != 4:
                            # three maps a pass on five-tap rows, or two where three would
                            # leave one alone (16 maps: 3+3+3+3+2+2)
                            wr, vr = w[g * Og + o, c, m], w[g * Og + o + 1, c, m]
                            ur = w[g * Og + o + 2, c, m]
                            a, a2 = acc[o, q0:q0 + Qm], acc[o + 1, q0:q0 + Qm]
                            a3 = acc[o + 2, q0:q0 + Qm]
                            w0, w1, w2, w3, w4 = wr[k], wr[k + 1], wr[k + 2], wr[k + 3], wr[k + 4]
                            v0, v1, v2, v3, v4 = vr[k], vr[k + 1], vr[k + 2], vr[k + 3], vr[k + 4]
                            u0, u1, u2, u3, u4 = ur[k], ur[k + 1], ur[k + 2], ur[k + 3], ur[k + 4]
                            for q in range(Qm):
                                t0, t1, t2, t3, t4 = s0[q], s1[q], s2[q], s3[q], s4[q]
                                a[q] += w0 * t0 + w1 * t1 + w2 * t2 + w3 * t3 + w4 * t4
                                a2[q] += v0 * t0 + v1 * t1 + v2 * t2 + v3 * t3 + v4 * t4
                                a3[q] += u0 * t0 + u1 * t1 + u2 * t2 + u3 * t3 + u4 * t4
                            o += 3
                            continue
                        # two output maps a pass where there are two: both read the same runs
                        two = o + 1 < Og
                        wr = w[g * Og + o, c, m]
                        vr = w[g * Og + o + 1, c, m] if two else wr
                        a = acc[o, q0:q0 + Qm]
                        a2 = acc[o + 1, q0:q0 + Qm] if two else a
                        if nk == 5:
                            w0, w1, w2, w3, w4 = wr[k], wr[k + 1], wr[k + 2], wr[k + 3], wr[k + 4]
                            v0, v1, v2, v3, v4 = vr[k], vr[k + 1], vr[k + 2], vr[k + 3], vr[k + 4]
                            if two:
                                for q in range(Qm):
                                    t0, t1, t2, t3, t4 = s0[q], s1[q], s2[q], s3[q], s4[q]
                                    a[q] += w0 * t0 + w1 * t1 + w2 * t2 + w3 * t3 + w4 * t4
                                    a2[q] += v0 * t0 + v1 * t1 + v2 * t2 + v3 * t3 + v4 * t4
                            else:
                                for q in range(Qm):
                                    a[q] += (w0 * s0[q] + w1 * s1[q] + w2 * s2[q] + w3 * s3[q]
                                             + w4 * s4[q])
                        elif nk == 4:
                            w0, w1, w2, w3 = wr[k], wr[k + 1], wr[k + 2], wr[k + 3]
                            v0, v1, v2, v3 = vr[k], vr[k + 1], vr[k + 2], vr[k + 3]
                            if two:
                                for q in range(Qm):
                                    t0, t1, t2, t3 = s0[q], s1[q], s2[q], s3[q]
                                    a[q] += w0 * t0 + w1 * t1 + w2 * t2 + w3 * t3
                                    a2[q] += v0 * t0 + v1 * t1 + v2 * t2 + v3 * t3
                            else:
                                for q in range(Qm):
                                    a[q] += w0 * s0[q] + w1 * s1[q] + w2 * s2[q] + w3 * s3[q]
                        elif nk == 3:
                            w0, w1, w2 = wr[k], wr[k + 1], wr[k + 2]
                            v0, v1, v2 = vr[k], vr[k + 1], vr[k + 2]
                            if two:
                                for q in range(Qm):
                                    t0, t1, t2 = s0[q], s1[q], s2[q]
                                    a[q] += w0 * t0 + w1 * t1 + w2 * t2
                                    a2[q] += v0 * t0 + v1 * t1 + v2 * t2
                            else:
                                for q in range(Qm):
                                    a[q] += w0 * s0[q] + w1 * s1[q] + w2 * s2[q]
                        elif nk == 2:
                            w0, w1, v0, v1 = wr[k], wr[k + 1], vr[k], vr[k + 1]
                            if two:
                                for q in range(Qm):
                                    t0, t1 = s0[q], s1[q]
                                    a[q] += w0 * t0 + w1 * t1
                                    a2[q] += v0 * t0 + v1 * t1
                            else:
                                for q in range(Qm):
                                    a[q] += w0 * s0[q] + w1 * s1[q]
                        else:
                            w0, v0 = wr[k], vr[k]
                            if two:
                                for q in range(Qm):
                                    t0 = s0[q]
                                    a[q] += w0 * t0
                                    a2[q] += v0 * t0
                            else:
                                for q in range(Qm):
                                    a[q] += w0 * s0[q]
                        o += 2 if two else 1
                    k += nk
        for b_ in range(nb):
            for o in range(Og):
                for i in range(nr):
                    q0 = i * Wp + b_ * Wi
                    y[n0 + b_, g * Og + o, oh0 + i, :] = acc[o, q0:q0 + OW]


@njit(parallel=True, cache=True)
def _taps_forward(y, x, wt, b, has_bias, KH, KW, pt, pl, dh, dw, rows, side):
    """Stride 1, one matrix product per tap. The block layout of _direct_forward (`rows` padded
    input rows of `side` images laid end to end at pitch Wp), but the taps run as BLAS products:
    tap (m, k) adds wt[g, m*KW + k] (Og, Cg) @ xp[:, off:off + Q] (Cg, Q) to the block's
    accumulators (Og, Q), off = m*dh*Wp + k*dw. The shifted window is a strided view that BLAS
    reads in place (gemm), so there is no im2col copy, and blocks of about CPU_TAPS_COLS
    positions keep all three operands in the core's caches. wt is (G, KH*KW, Og, Cg)."""
    N, C, H, W = x.shape
    G, T, Og, Cg = wt.shape
    OH, OW = y.shape[2], y.shape[3]
    Wi = _pitch(OW, W, pl, (KW - 1) * dw)
    nblk = (OH + rows - 1) // rows
    nside = (N + side - 1) // side
    for t in prange(nside * G * nblk):
        g = (t // nblk) % G
        n0, nb, Wp, oh0, nr, hin, Q = _block(N, OH, OW, Wi, KH, dh, side, rows,
                                             t // (nblk * G), t % nblk)
        xp = _padded_rows(x, n0, nb, g * Cg, Cg, oh0, hin, pt, pl, Wi)
        acc = np.empty((Og, Q), dtype=y.dtype)
        for m in range(KH):
            for k in range(KW):
                off = m * dh * Wp + k * dw
                gemm(wt[g, m * KW + k], xp[:, off:off + Q], acc, 1.0 if m + k > 0 else 0.0)
        for b_ in range(nb):
            for o in range(Og):
                bias = b[g * Og + o] if has_bias else 0
                for i in range(nr):
                    q0 = i * Wp + b_ * Wi
                    dst = y[n0 + b_, g * Og + o, oh0 + i]
                    for j in range(OW):
                        dst[j] = acc[o, q0 + j] + bias


@njit(parallel=True, cache=True)
def _taps_weight_partials(part, dy, x, KH, KW, pt, pl, dh, dw, rows, side, units_per_seg):
    """Stride 1. part[s, g, m*KW + k] (Og, Cg) = sum over the units (blocks as in _taps_forward)
    of segment s, in unit order, of dy's block (Og, Q) @ xp[:, off:off + Q].T: per tap, one
    product whose inner dimension runs over the block's positions. dy's copy is zero in the
    KW - 1 dropped positions of each row, so they add nothing."""
    S, G, T, Og, Cg = part.shape
    N, C, H, W = x.shape
    OH, OW = dy.shape[2], dy.shape[3]
    Wi = _pitch(OW, W, pl, (KW - 1) * dw)
    nblk = (OH + rows - 1) // rows
    units = ((N + side - 1) // side) * nblk
    for t in prange(S * G):
        g = t % G
        s = t // G
        acc = part[s, g]
        u0 = s * units_per_seg
        for u in range(u0, min(units, u0 + units_per_seg)):
            n0, nb, Wp, oh0, nr, hin, Q = _block(N, OH, OW, Wi, KH, dh, side, rows, u // nblk,
                                                 u % nblk)
            xp = _padded_rows(x, n0, nb, g * Cg, Cg, oh0, hin, pt, pl, Wi)
            gp = _padded_dy(dy, n0, nb, g * Og, Og, oh0, nr, Wi, Q)
            for m in range(KH):
                for k in range(KW):
                    off = m * dh * Wp + k * dw
                    gemm(gp, xp[:, off:off + Q].T, acc[m * KW + k], 1.0 if u > u0 else 0.0)


@njit(parallel=True, cache=True)
def _reduce_tap_partials(dwt, part):
    """dwt[g*Og + o, c, m, k] = sum over s of part[s, g, m*KW + k, o, c], s in increasing order."""
    S, G, T, Og, Cg = part.shape
    KH, KW = dwt.shape[2], dwt.shape[3]
    for t in prange(G * Og):
        g = t // Og
        o = t % Og
        for c in range(Cg):
            for m in range(KH):
                for k in range(KW):
                    tap = m * KW + k
                    acc = part[0, g, tap, o, c]
                    for s in range(1, S):
                        acc += part[s, g, tap, o, c]
                    dwt[t, c, m, k] = acc


@njit(parallel=True, cache=True)
def _channels_last_1d(xt, x, pl):
    """xt[n, pl + i, c] = x[n, c, 0, i] for xt (N, Lp, C); the padding rows zero."""
    N, C, _, W = x.shape
    for n in prange(N):
        plane = xt[n]
        plane[:pl] = 0
        plane[pl + W:] = 0
        for c in range(C):
            src = x[n, c, 0]
            for i in range(W):
                plane[pl + i, c] = src[i]


@njit(parallel=True, cache=True)
def _shifted_forward_1d(y3, xf, wt, b, has_bias, dw, Lp, rows):
    """y3 (N, O, OL); xf (rows of x channels last, (N * Lp + spare, C)); wt (K, C, O). Each task
    owns `rows` consecutive output rows q = n * Lp + t: the K products over shifted row ranges,
    then its rows with t < OL written out with the bias."""
    N, O, OW = y3.shape
    K = wt.shape[0]
    total = N * Lp
    for blk in prange((total + rows - 1) // rows):
        r0 = blk * rows
        r1 = min(total, r0 + rows)
        acc = np.dot(xf[r0:r1], wt[0])
        if K > 1:
            tmp = np.empty_like(acc)
            for k in range(1, K):
                np.dot(xf[r0 + k * dw:r1 + k * dw], wt[k], tmp)
                acc += tmp
        n = r0 // Lp
        while n * Lp < r1:
            t0 = max(r0, n * Lp) - n * Lp
            t1 = min(r1 - n * Lp, OW)
            for o in range(O):
                bias = b[o] if has_bias else 0
                yr = y3[n, o]
                for t in range(t0, t1):
                    yr[t] = acc[n * Lp + t - r0, o] + bias
            n += 1


@njit(parallel=True, cache=True)
def _rows_last_1d(dyf, dy3, Lp, front):
    """dyf[front + n*Lp + t, o] = dy3[n, o, t] for t < OL; every other row zero."""
    N, O, OW = dy3.shape
    dyf[:front] = 0
    for n in prange(N):
        base = front + n * Lp
        dyf[base + OW:base + Lp] = 0
        for o in range(O):
            src = dy3[n, o]
            for t in range(OW):
                dyf[base + t, o] = src[t]


@njit(parallel=True, cache=True)
def _shifted_input_1d(dx3, dyf, wk, dw, Lp, pl, rows):
    """dx3 (N, C, L) from dyf (front zero rows, then dy's rows channels last) and wk (K, O, C):
    each task owns `rows` rows p = n * Lp + j of the padded input's gradient, the sum over taps k
    of dyf[front + p - k*dw] @ W_k, and writes those with j - pl inside the input."""
    N, C, W = dx3.shape
    K = wk.shape[0]
    front = (K - 1) * dw
    total = N * Lp
    for blk in prange((total + rows - 1) // rows):
        r0 = blk * rows
        r1 = min(total, r0 + rows)
        acc = np.dot(dyf[front + r0:front + r1], wk[0])
        if K > 1:
            tmp = np.empty_like(acc)
            for k in range(1, K):
                np.dot(dyf[front + r0 - k * dw:front + r1 - k * dw], wk[k], tmp)
                acc += tmp
        n = r0 // Lp
        while n * Lp < r1:
            j0 = max(r0 - n * Lp, pl)
            j1 = min(r1 - n * Lp, pl + W)
            for c in range(C):
                xr = dx3[n, c]
                for j in range(j0, j1):
                    xr[j - pl] = acc[n * Lp + j - r0, c]
            n += 1


@njit(parallel=True, cache=True)
def _shifted_weight_1d(part, dyf, xf, dw):
    """part[s, k] (O, C) = dy rows of segment s, transposed, @ x rows shifted by k*dw: segment s
    covers rows [s*M//S, (s+1)*M//S) of dyf past its front padding (M = N * Lp)."""
    S, K, O, C = part.shape
    front = (K - 1) * dw
    M = dyf.shape[0] - front
    for s in prange(S):
        r0, r1 = s * M // S, (s + 1) * M // S
        gt = np.empty((O, r1 - r0), dtype=dyf.dtype)
        _transpose_into(gt, dyf[front + r0:front + r1])
        for k in range(K):
            np.dot(gt, xf[r0 + k * dw:r1 + k * dw], part[s, k])


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dw_single_taps(acc, gp, xp, o, c, r, off, dw, nk, Q):
    """acc[o, r + j] += the dot product of gp[o, :Q] with xp[c, off + j*dw:][:Q], j < nk (1-5):
    one pass over dy's row feeds nk sums."""
    g = gp[o]
    s0 = xp[c, off:off + Q]
    if nk == 5:
        s1, s2 = xp[c, off + dw:off + dw + Q], xp[c, off + 2 * dw:off + 2 * dw + Q]
        s3, s4 = xp[c, off + 3 * dw:off + 3 * dw + Q], xp[c, off + 4 * dw:off + 4 * dw + Q]
        d0, d1, d2, d3, d4 = acc[o, r], acc[o, r + 1], acc[o, r + 2], acc[o, r + 3], acc[o, r + 4]
        for q in range(Q):
            gq = g[q]
            d0 += gq * s0[q]
            d1 += gq * s1[q]
            d2 += gq * s2[q]
            d3 += gq * s3[q]
            d4 += gq * s4[q]
        acc[o, r], acc[o, r + 1], acc[o, r + 2], acc[o, r + 3], acc[o, r + 4] = d0, d1, d2, d3, d4
    elif nk == 4:
        s1, s2 = xp[c, off + dw:off + dw + Q], xp[c, off + 2 * dw:off + 2 * dw + Q]
        s3 = xp[c, off + 3 * dw:off + 3 * dw + Q]
        d0, d1, d2, d3 = acc[o, r], acc[o, r + 1], acc[o, r + 2], acc[o, r + 3]
        for q in range(Q):
            gq = g[q]
            d0 += gq * s0[q]
            d1 += gq * s1[q]
            d2 += gq * s2[q]
            d3 += gq * s3[q]
        acc[o, r], acc[o, r + 1], acc[o, r + 2], acc[o, r + 3] = d0, d1, d2, d3
    elif nk == 3:
        s1, s2 = xp[c, off + dw:off + dw + Q], xp[c, off + 2 * dw:off + 2 * dw + Q]
        d0, d1, d2 = acc[o, r], acc[o, r + 1], acc[o, r + 2]
        for q in range(Q):
            gq = g[q]
            d0 += gq * s0[q]
            d1 += gq * s1[q]
            d2 += gq * s2[q]
        acc[o, r], acc[o, r + 1], acc[o, r + 2] = d0, d1, d2
    elif nk == 2:
        s1 = xp[c, off + dw:off + dw + Q]
        d0, d1 = acc[o, r], acc[o, r + 1]
        for q in range(Q):
            gq = g[q]
            d0 += gq * s0[q]
            d1 += gq * s1[q]
        acc[o, r], acc[o, r + 1] = d0, d1
    else:
        d0 = acc[o, r]
        for q in range(Q):
            d0 += g[q] * s0[q]
        acc[o, r] = d0


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dw_pair_taps(acc, gp, xp, o, c, r, off, dw, nk, Q):
    """_dw_single_taps for maps o and o + 1 together, nk of 3-5 taps: each input run is loaded
    once for both maps' sums (1.2-1.5x faster than one map a pass)."""
    g, h = gp[o], gp[o + 1]
    s0, s1 = xp[c, off:off + Q], xp[c, off + dw:off + dw + Q]
    s2 = xp[c, off + 2 * dw:off + 2 * dw + Q]
    if nk == 5:
        s3, s4 = xp[c, off + 3 * dw:off + 3 * dw + Q], xp[c, off + 4 * dw:off + 4 * dw + Q]
        d0, d1, d2, d3, d4 = acc[o, r], acc[o, r + 1], acc[o, r + 2], acc[o, r + 3], acc[o, r + 4]
        e0, e1, e2 = acc[o + 1, r], acc[o + 1, r + 1], acc[o + 1, r + 2]
        e3, e4 = acc[o + 1, r + 3], acc[o + 1, r + 4]
        for q in range(Q):
            gq, hq = g[q], h[q]
            t0, t1, t2, t3, t4 = s0[q], s1[q], s2[q], s3[q], s4[q]
            d0 += gq * t0
            d1 += gq * t1
            d2 += gq * t2
            d3 += gq * t3
            d4 += gq * t4
            e0 += hq * t0
            e1 += hq * t1
            e2 += hq * t2
            e3 += hq * t3
            e4 += hq * t4
        acc[o, r], acc[o, r + 1], acc[o, r + 2], acc[o, r + 3], acc[o, r + 4] = d0, d1, d2, d3, d4
        acc[o + 1, r], acc[o + 1, r + 1], acc[o + 1, r + 2] = e0, e1, e2
        acc[o + 1, r + 3], acc[o + 1, r + 4] = e3, e4
    elif nk == 4:
        s3 = xp[c, off + 3 * dw:off + 3 * dw + Q]
        d0, d1, d2, d3 = acc[o, r], acc[o, r + 1], acc[o, r + 2], acc[o, r + 3]
        e0, e1, e2, e3 = acc[o + 1, r], acc[o + 1, r + 1], acc[o + 1, r + 2], acc[o + 1, r + 3]
        for q in range(Q):
            gq, hq = g[q], h[q]
            t0, t1, t2, t3 = s0[q], s1[q], s2[q], s3[q]
            d0 += gq * t0
            d1 += gq * t1
            d2 += gq * t2
            d3 += gq * t3
            e0 += hq * t0
            e1 += hq * t1
            e2 += hq * t2
            e3 += hq * t3
        acc[o, r], acc[o, r + 1], acc[o, r + 2], acc[o, r + 3] = d0, d1, d2, d3
        acc[o + 1, r], acc[o + 1, r + 1], acc[o + 1, r + 2], acc[o + 1, r + 3] = e0, e1, e2, e3
    else:
        d0, d1, d2 = acc[o, r], acc[o, r + 1], acc[o, r + 2]
        e0, e1, e2 = acc[o + 1, r], acc[o + 1, r + 1], acc[o + 1, r + 2]
        for q in range(Q):
            gq, hq = g[q], h[q]
            t0, t1, t2 = s0[q], s1[q], s2[q]
            d0 += gq * t0
            d1 += gq * t1
            d2 += gq * t2
            e0 += hq * t0
            e1 += hq * t1
            e2 += hq * t2
        acc[o, r], acc[o, r + 1], acc[o, r + 2] = d0, d1, d2
        acc[o + 1, r], acc[o + 1, r + 1], acc[o + 1, r + 2] = e0, e1, e2


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dw_triple_taps(acc, gp, xp, o, c, r, off, dw, Q):
    """_dw_pair_taps for maps o, o + 1 and o + 2 and five taps: fifteen sums from one pass, each
    input run loaded once for the three maps' dy rows."""
    g, h, f = gp[o], gp[o + 1], gp[o + 2]
    s0, s1 = xp[c, off:off + Q], xp[c, off + dw:off + dw + Q]
    s2, s3 = xp[c, off + 2 * dw:off + 2 * dw + Q], xp[c, off + 3 * dw:off + 3 * dw + Q]
    s4 = xp[c, off + 4 * dw:off + 4 * dw + Q]
    d0, d1, d2, d3, d4 = acc[o, r], acc[o, r + 1], acc[o, r + 2], acc[o, r + 3], acc[o, r + 4]
    e0, e1, e2 = acc[o + 1, r], acc[o + 1, r + 1], acc[o + 1, r + 2]
    e3, e4 = acc[o + 1, r + 3], acc[o + 1, r + 4]
    u0, u1, u2 = acc[o + 2, r], acc[o + 2, r + 1], acc[o + 2, r + 2]
    u3, u4 = acc[o + 2, r + 3], acc[o + 2, r + 4]
    for q in range(Q):
        gq, hq, fq = g[q], h[q], f[q]
        t0, t1, t2, t3, t4 = s0[q], s1[q], s2[q], s3[q], s4[q]
        d0 += gq * t0
        d1 += gq * t1
        d2 += gq * t2
        d3 += gq * t3
        d4 += gq * t4
        e0 += hq * t0
        e1 += hq * t1
        e2 += hq * t2
        e3 += hq * t3
        e4 += hq * t4
        u0 += fq * t0
        u1 += fq * t1
        u2 += fq * t2
        u3 += fq * t3
        u4 += fq * t4
    acc[o, r], acc[o, r + 1], acc[o, r + 2], acc[o, r + 3], acc[o, r + 4] = d0, d1, d2, d3, d4
    acc[o + 1, r], acc[o + 1, r + 1], acc[o + 1, r + 2] = e0, e1, e2
    acc[o + 1, r + 3], acc[o + 1, r + 4] = e3, e4
    acc[o + 2, r], acc[o + 2, r + 1], acc[o + 2, r + 2] = u0, u1, u2
    acc[o + 2, r + 3], acc[o + 2, r + 4] = u3, u4


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _direct_weight_partials(part, dy, x, KH, KW, pt, pl, dh, dw, rows, side, units_per_seg):
    """Stride 1. part[s, g, o, r] = sum over the units (`side` images side by side, a block of
    output rows) of segment s of the dot product of dy's rows with the input run that tap
    r = (c, m, k) reads, in unit order. Flat at pitch Wp as in _direct_forward, dy's copy zero in
    the KW - 1 dropped positions of each row; taps up to five at a time, so that one pass over dy
    feeds five sums, and output maps two at a time where there are two and 3-5 taps.

    fastmath 'reassoc' lets the compiler split each dot product into vector lanes: the order of
    summation is then fixed by the compiled code and the shapes, still the same bits on any
    thread count; 'contract' fuses multiply and add into FMAs (1.12-1.17x faster on LeNet-5's
    C1 and C3)."""
    S, G, Og, R = part.shape
    N, C, H, W = x.shape
    OH, OW = dy.shape[2], dy.shape[3]
    Cg = C // G
    Wi = _pitch(OW, W, pl, (KW - 1) * dw)
    nblk = (OH + rows - 1) // rows
    units = ((N + side - 1) // side) * nblk
    for t in prange(S * G):
        g = t % G
        s = t // G
        acc = part[s, g]
        acc[:] = 0
        for u in range(s * units_per_seg, min(units, (s + 1) * units_per_seg)):
            n0, nb, Wp, oh0, nr, hin, Q = _block(N, OH, OW, Wi, KH, dh, side, rows, u // nblk,
                                                 u % nblk)
            xp = _padded_rows(x, n0, nb, g * Cg, Cg, oh0, hin, pt, pl, Wi)
            gp = _padded_dy(dy, n0, nb, g * Og, Og, oh0, nr, Wi, Q)
            o = 0
            while o < Og:
                # maps three at a time, or two where three would leave one alone (16 = 3*4 + 2*2)
                left = Og - o
                group = 3 if left >= 3 and left != 4 else min(2, left)
                for c in range(Cg):
                    for m in range(KH):
                        k = 0
                        while k < KW:
                            nk = min(5, KW - k)
                            off = m * dh * Wp + k * dw
                            r = (c * KH + m) * KW + k
                            if group == 3 and nk == 5:
                                # three output maps a pass: their dot products read the same runs
                                _dw_triple_taps(acc, gp, xp, o, c, r, off, dw, Q)
                            elif group >= 2 and nk >= 3:
                                _dw_pair_taps(acc, gp, xp, o, c, r, off, dw, nk, Q)
                                if group == 3:
                                    _dw_single_taps(acc, gp, xp, o + 2, c, r, off, dw, nk, Q)
                            else:
                                for oo in range(o, o + group):
                                    _dw_single_taps(acc, gp, xp, oo, c, r, off, dw, nk, Q)
                            k += nk
                o += group


@njit(parallel=True, cache=True)
def _weight_partials(part, dy3, x, KH, KW, sh, sw, pt, pl, dh, dw, OW, chunk, chunks_per_seg):
    """part[s, g] = sum over the chunks of segment s of dY_chunk @ col_chunk^T, in chunk order.

    A segment's buffers are allocated once and reused for each of its chunks; the first chunk's
    product is written straight into part[s, g] and later ones are added to it, so a segment of
    one chunk is a single matrix product with no copy."""
    S, G, Og, R = part.shape
    N, O, P = dy3.shape
    Cg = R // (KH * KW)
    ncols = N * P
    nchunks = (ncols + chunk - 1) // chunk
    for t in prange(S * G):
        g = t % G
        s = t // G
        first = s * chunks_per_seg
        last = min(nchunks, first + chunks_per_seg)
        width = min(chunk, ncols - first * chunk)
        # flat buffers, so that a ragged last chunk is still a C-contiguous matrix for BLAS
        col = np.empty(R * width, dtype=x.dtype)
        dyt = np.empty(Og * width, dtype=dy3.dtype)
        acc = part[s, g]
        tmp = np.empty((Og, R), dtype=part.dtype) if last - first > 1 else acc
        for c in range(first, last):
            j0 = c * chunk
            m_cols = min(ncols, j0 + chunk) - j0
            cv = col[:R * m_cols].reshape((R, m_cols))
            dv = dyt[:Og * m_cols].reshape((Og, m_cols))
            _im2col_tile(cv, x, g * Cg, KH, KW, sh, sw, pt, pl, dh, dw, OW, P, j0)
            _gather_tile(dv, dy3, g * Og, P, j0)
            if c == first:
                np.dot(dv, cv.T, acc)
            else:
                np.dot(dv, cv.T, tmp)
                acc += tmp


@njit(parallel=True, cache=True)
def _reduce_partials(dw2, part):
    """dw2[g*Og + o, r] = sum over s of part[s, g, o, r], s in increasing order."""
    S, G, Og, R = part.shape
    for t in prange(G * Og):
        g = t // Og
        o = t % Og
        for r in range(R):
            acc = part[0, g, o, r]
            for s in range(1, S):
                acc += part[s, g, o, r]
            dw2[t, r] = acc


@njit(parallel=True, cache=True)
def _input_blocks(dx, dy3, wT3, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, rows_per_block):
    """Each task owns rows [ih0, ih1) of one image and group of dx; it computes the dcol entries of
    the output rows that read those input rows, then every dx element gathers its own terms."""
    N, C, H, W = dx.shape
    G, R, Og = wT3.shape
    Cg = C // G
    nblocks = (H + rows_per_block - 1) // rows_per_block
    for t in prange(N * G * nblocks):
        blk = t % nblocks
        g = (t // nblocks) % G
        n = t // (nblocks * G)
        ih0 = blk * rows_per_block
        ih1 = min(H, ih0 + rows_per_block)
        # Output rows i with i*sh - pt + m*dh in [ih0, ih1) for some m.
        lo = ih0 + pt - (KH - 1) * dh
        oh_lo = max(0, (lo + sh - 1) // sh) if lo > 0 else 0
        oh_hi = min(OH, (ih1 - 1 + pt) // sh + 1)
        if oh_hi <= oh_lo:
            for c in range(Cg):
                for ih in range(ih0, ih1):
                    for iw in range(W):
                        dx[n, g * Cg + c, ih, iw] = 0
            continue
        m_cols = (oh_hi - oh_lo) * OW
        dyt = np.empty((Og, m_cols), dtype=dy3.dtype)
        for o in range(Og):
            dyt[o, :] = dy3[n, g * Og + o, oh_lo * OW:oh_hi * OW]
        dcol = np.dot(wT3[g], dyt)
        # col2im as a gather: this task owns rows [ih0, ih1) of dx[n, g*Cg:(g+1)*Cg]; each row r =
        # (c, m, k) of dcol adds its entries to the dx pixels they were read from, in a fixed order.
        for c in range(Cg):
            for ih in range(ih0, ih1):
                for iw in range(W):
                    dx[n, g * Cg + c, ih, iw] = 0
            for m in range(KH):
                for ih in range(ih0, ih1):
                    ti = ih + pt - m * dh
                    if ti < 0 or ti % sh != 0:
                        continue
                    i = ti // sh
                    if i < oh_lo or i >= oh_hi:
                        continue
                    base = (i - oh_lo) * OW
                    for k in range(KW):
                        r = (c * KH + m) * KW + k
                        # Output columns j with iw = j*sw - pl + k*dw inside [0, W).
                        start = -pl + k * dw
                        a, b = _valid_range(start, sw, W, OW)
                        for j in range(a, b):
                            dx[n, g * Cg + c, ih, start + j * sw] += dcol[r, base + j]


@njit(parallel=True, cache=True, fastmath={"reassoc"})
def _bias_partials(part, dy3):
    """part[s, o] = dy3[n, o, :] summed over the images n of segment s, in float64. fastmath
    'reassoc' lets each plane's sum run in vector lanes (an order fixed by the compiled code and
    the shapes: the same bits on any thread count)."""
    S, O = part.shape
    N = dy3.shape[0]
    for t in prange(S * O):
        o = t % O
        s = t // O
        acc = 0.0
        for n in range(s * N // S, (s + 1) * N // S):
            row = dy3[n, o]
            for p in range(row.shape[0]):
                acc += row[p]
        part[s, o] = acc


@njit(cache=True)
def _sum_bias_partials(db, part):
    """db[o] = sum over s of part[s, o], s in increasing order."""
    for o in range(part.shape[1]):
        acc = part[0, o]
        for s in range(1, part.shape[0]):
            acc += part[s, o]
        db[o] = acc


@njit(parallel=True, cache=True)
def _max_weight_grad(dwt, db, dm, idx, xt, s, pl, d):
    """dwt (O, K, C), db (O,): each task owns one output channel and visits its N winners."""
    O, K, C = dwt.shape
    N, L = xt.shape[0], xt.shape[1]
    for o in prange(O):
        acc = dwt[o]
        acc[:] = 0
        bsum = 0.0
        for n in range(N):
            g = dm[n, o]
            if g == 0:
                continue
            bsum += g
            t = idx[n, o]
            for k in range(K):
                i = t * s - pl + k * d
                if 0 <= i < L:
                    row = xt[n, i]
                    for c in range(C):
                        acc[k, c] += g * row[c]
        db[o] = bsum


@njit(parallel=True, cache=True)
def _max_input_grad(dxt, dm, idx, wt, s, pl, d):
    """dxt (N, L, C): each task owns one sentence and adds the winners' weights, o then k."""
    N, L, C = dxt.shape
    O, K = wt.shape[0], wt.shape[1]
    for n in prange(N):
        plane = dxt[n]
        plane[:] = 0
        for o in range(O):
            g = dm[n, o]
            if g == 0:
                continue
            t = idx[n, o]
            for k in range(K):
                i = t * s - pl + k * d
                if 0 <= i < L:
                    row = plane[i]
                    wr = wt[o, k]
                    for c in range(C):
                        row[c] += g * wr[c]


# ----------------------------------------------------------------------------------------------
# Launchers: same names and argument order as the reference
# ----------------------------------------------------------------------------------------------


def _tile_cols(R, itemsize):
    tn = config.CPU_TILE_BYTES // max(1, R * itemsize)
    return int(min(config.CPU_TILE_MAX_COLS, max(config.CPU_TILE_MIN_COLS, tn)))


def conv_kernel(O, Cg, KH, KW, sh, sw, groups):
    """'direct', 'taps' or 'im2col': the kernel for a layer of this shape (its forward pass and
    weight gradient; the input gradient asks with the channel axes swapped). config.CPU_CONV_KERNEL
    'auto' picks direct for stride 1 with at most CPU_DIRECT_MAX_CHANNELS output channels per
    group, or up to twice as many where each output has at most CPU_DIRECT_FEW_TAPS taps
    (Cg*KH*KW): there im2col's matrix product has too few rows to run near the BLAS peak. Other
    stride-1 layers with at least CPU_TAPS_MIN_CHANNELS input channels per group run the taps
    kernels, the rest im2col. A forced 'direct' or 'taps' still needs stride 1."""
    mode = _kernel_mode()
    if sh != 1 or sw != 1 or mode == "im2col":
        return "im2col"
    if mode not in ("auto", "blocked"):         # blocked is a forward pass only: these choose
        return mode                             # as under auto
    Og, taps = O // groups, Cg * KH * KW
    few = taps <= config.CPU_DIRECT_FEW_TAPS
    if Og <= config.CPU_DIRECT_MAX_CHANNELS * (2 if few else 1):
        return "direct"
    return "taps" if Cg >= config.CPU_TAPS_MIN_CHANNELS else "im2col"


def weight_grad_kernel(O, Cg, KH, KW, sh, sw, groups):
    """The kernel for the weight gradient of a layer of this shape where the blocked one does not
    apply: as conv_kernel, but under 'auto' the direct kernel's layers with at least
    CPU_TAPS_WGRAD_MIN_CHANNELS input and CPU_TAPS_WGRAD_MIN_MAPS output channels a group run
    the taps kernel (see config)."""
    kind = conv_kernel(O, Cg, KH, KW, sh, sw, groups)
    if (kind == "direct" and _kernel_mode() in ("auto", "blocked")
            and Cg >= config.CPU_TAPS_WGRAD_MIN_CHANNELS
            and O // groups >= config.CPU_TAPS_WGRAD_MIN_MAPS):
        return "taps"
    return kind


def _kernel_mode():
    mode = config.CPU_CONV_KERNEL
    if mode not in ("auto", "direct", "taps", "im2col", "blocked"):
        raise ValueError(f"numconv.config.CPU_CONV_KERNEL is {mode!r}; set it to 'auto', "
                         f"'direct', 'taps', 'im2col' or 'blocked'")
    return mode


def blocked_applies(dtype, O, Cg, KH, KW, sh, sw, groups, OH, OW, N=None):
    """Whether a forward pass (or the input gradient's full correlation, with the channel axes
    swapped) of this shape runs the register-blocked kernel (numconv.kernels.cpu.blocked): under
    'blocked' wherever its output holds one block of PIXELS pixels, under 'auto' where it measured
    faster (config.CPU_BLOCKED_MIN_TAPS says where). With the batch size N, the share of
    its work that is output is that of the tasks it would cut (see blocked_cover)."""
    mode = _kernel_mode()
    if OH * OW < blocked.PIXELS or mode not in ("auto", "blocked"):
        return False                            # not one block of pixels
    if mode == "blocked":
        return True
    if np.dtype(dtype) != np.float32:
        return False
    Og = O // groups
    lanes = -(-Og // blocked.LANES) * blocked.LANES
    if OH == 1:                                 # a conv1d
        return (KH * KW > 1 and 4 * Og >= 3 * lanes
                and Cg * KH * KW >= config.CPU_BLOCKED_MIN_TAPS)
    if sh == 1 and sw == 1:
        if Og % blocked.LANES or Cg * KH * KW < config.CPU_BLOCKED_MIN_TAPS:
            return False
        if conv_kernel(O, Cg, KH, KW, sh, sw, groups) == "direct":
            return True
        nblk = 1 if N is None else _blocked_row_blocks(N, groups, OH, OW)
        return KH * KW > 1 and blocked_cover(OH, OW, nblk) >= config.CPU_BLOCKED_MIN_COVER
    return KH * KW > 1 and 4 * Og >= 3 * lanes


def _blocked_forward(y, x, w, b, sh, sw, pt, pl, dh, dw, groups, rotated=False):
    """The register-blocked forward pass of x with w (and b, or None) into y: row blocks enough
    for CPU_MIN_TASKS tasks and for each task's copy of its input rows to stay within
    CPU_BLOCKED_INPUT_BYTES, each of at least one block of pixels. With rotated=True, with the
    weights of the input gradient of a layer of weights w (blocked.lane_weights)."""
    N, O, OH, OW = y.shape
    KH, KW = w.shape[2], w.shape[3]
    Cg = x.shape[1] // groups
    width = (OW - 1) * sw + (KW - 1) * dw + 1
    row_bytes = Cg * width * x.itemsize * sh
    fit = max(1, (config.CPU_BLOCKED_INPUT_BYTES - Cg * width * x.itemsize * (KH - 1) * dh)
              // max(1, row_bytes))
    nblk = _blocked_row_blocks(N, groups, OH, OW, -(-OH // fit))
    wt, bt = blocked.lane_weights(w, b, groups, rotated)
    out = y if y.flags.c_contiguous else np.empty(y.shape, y.dtype)   # (it writes by address)
    with blocked.slp_vectorized():
        blocked.blocked_forward(out, np.ascontiguousarray(x), wt, bt, KH, KW, sh, sw, pt, pl,
                                dh, dw, O // groups, nblk)
    if out is not y:
        y[...] = out


def _blocked_row_blocks(N, groups, OH, OW, for_cache=1):
    """Into how many row blocks the blocked forward pass cuts each image: enough for
    CPU_MIN_TASKS tasks (and at least `for_cache`), each of at least one block of pixels."""
    nblk = max(-(-config.CPU_MIN_TASKS // (N * groups)), for_cache)
    rows = -(-blocked.PIXELS // OW)             # a task's rows hold at least one block
    return int(max(1, min(nblk, OH // rows)))


def blocked_cover(OH, OW, nblk=1):
    """The share of the blocked kernel's work that is output where each image is cut into nblk
    balanced row blocks: each task's blocks of PIXELS consecutive pixels (along its rows) cover
    its pixels with the last block moved back over its neighbour."""
    done = 0
    for t in range(nblk):
        P = ((t + 1) * OH // nblk - t * OH // nblk) * OW
        done += -(-P // blocked.PIXELS) * blocked.PIXELS
    return OH * OW / done


def blocked_weight_applies(dtype, O, Cg, KH, KW, sh, sw, groups):
    """Whether a weight gradient of this shape runs the register-blocked kernel: one group, a
    kernel at least COLS wide and either ROWS tall or of two or more input channels (a block of
    taps: COLS x ROWS of a channel, or COLS of a kernel row of two channels); under 'blocked'
    always, under 'auto' in float32 where at least three-quarters of the lanes hold output
    channels (see config.CPU_BLOCKED_MIN_TAPS for what was measured)."""
    mode = _kernel_mode()
    if (groups != 1 or KW < blocked.COLS or (KH < blocked.ROWS and Cg < 2)
            or mode not in ("auto", "blocked")):
        return False
    if mode == "blocked":
        return True
    lanes = -(-O // blocked.LANES) * blocked.LANES
    return np.dtype(dtype) == np.float32 and 4 * O >= 3 * lanes


def _blocked_weight(dwt, dy, x, sh, sw, pt, pl, dh, dw):
    """The register-blocked weight gradient: the batch cut into segments whose channels-last dy
    holds about CPU_BLOCKED_INPUT_BYTES (each task's sums read it once per block of taps, so it
    should stay in the core's cache), and enough of them for CPU_MIN_TASKS tasks."""
    O, C, KH, KW = dwt.shape
    N, _, OH, OW = dy.shape
    OB = -(-O // blocked.LANES)
    per_image = OH * OW * blocked.LANES * dy.itemsize
    S = max(-(-N * per_image // config.CPU_BLOCKED_INPUT_BYTES),
            -(-config.CPU_MIN_TASKS // (OB * C)))
    S = int(max(1, min(N, S)))
    dyt = np.empty((OB, N, OH * OW, blocked.LANES), dtype=dy.dtype)
    blocked.lane_rows(dyt, dy)
    part = np.empty((S, OB, C, KH, KW, blocked.LANES), dtype=dwt.dtype)
    with blocked.slp_vectorized():
        blocked.blocked_weight_partials(part, dyt, np.ascontiguousarray(x), KH, KW, sh, sw, pt, pl,
                                        dh, dw, OH, OW)
    blocked.sum_weight_partials(dwt, part)


def input_grad_kernel(C, Og, KH, KW, sh, sw, groups, H, OH, OW, pt, dh, dw):
    """The kernel of an input gradient (C input channels, Og output channels per group): 'direct'
    or 'taps' (the full correlation of dy with the rotated filter), 'conv1d' (the shifted
    products) or 'im2col'. conv_kernel decides with the channel axes swapped, then under 'auto':
    the full correlation visits (OH + eh) x (OW + 2*ew) positions per plane (its padding included)
    where im2col visits OH x OW, so past CPU_DIRECT_MAX_WASTE times as many, im2col; the Kim
    CNN's conv1d layers keep the shifted products; and layers with at least
    CPU_IM2COL_DX_MIN_MAPS output channels and fewer than CPU_IM2COL_DX_MAX_CHANNELS input
    channels per group run im2col, a long product W^T @ dY where each tap's would be thin."""
    kind = conv_kernel(C, Og, KH, KW, sh, sw, groups)
    if _kernel_mode() not in ("auto", "blocked"):
        return kind
    close = (OH + (KH - 1) * dh) * (OW + 2 * (KW - 1) * dw) <= config.CPU_DIRECT_MAX_WASTE * OH * OW
    if kind == "direct" and close:
        return kind
    if _conv1d_shifted(H, KH, OH, pt, sw, groups):
        return "conv1d"
    thin = Og >= config.CPU_IM2COL_DX_MIN_MAPS and C // groups < config.CPU_IM2COL_DX_MAX_CHANNELS
    return "taps" if kind == "taps" and close and not thin else "im2col"


def _tap_weights(w, groups):
    """w (O, Cg, KH, KW) as the taps kernels read it: (groups, KH*KW, Og, Cg), contiguous."""
    O, Cg, KH, KW = w.shape
    return np.ascontiguousarray(w.reshape(groups, O // groups, Cg, KH * KW).transpose(0, 3, 1, 2))


def _taps_tasks(N, groups, OH, Wi, cols):
    """(images side by side, output rows) per taps block, from shapes only: about `cols` output
    positions a block (small images side by side, else a few rows of one), and at least
    CPU_MIN_TASKS blocks where the shapes allow."""
    side = max(1, min(cols // (OH * Wi), (N * groups) // config.CPU_MIN_TASKS, N))
    tasks = -(-N // side) * groups
    rows = max(1, min(OH, cols // (side * Wi)))
    if tasks * -(-OH // rows) < config.CPU_MIN_TASKS:
        rows = max(1, -(-OH // -(-config.CPU_MIN_TASKS // tasks)))
    return int(side), int(rows)


def _stride1_forward(kind, y, x, w, bias, has_bias, pt, pl, dh, dw, groups):
    """The direct or the taps forward pass (stride 1) of x with w into y."""
    N, O, OH, OW = y.shape
    Wi = _pitch(OW, x.shape[3], pl, (w.shape[3] - 1) * dw)
    if kind == "direct":
        side, rows = _direct_tasks(N, groups, OH, O // groups, Wi, x.itemsize)
        _direct_forward(y, x, w, bias, has_bias, pt, pl, dh, dw, groups, rows, side)
        return
    side, rows = _taps_tasks(N, groups, OH, Wi, config.CPU_TAPS_COLS)
    with single_threaded_blas():
        _taps_forward(y, x, _tap_weights(w, groups), bias, has_bias, w.shape[2], w.shape[3], pt,
                      pl, dh, dw, rows, side)


def _conv1d_shifted(H, KH, OH, pt, sw, groups):
    """A conv1d (one input row, a one-row kernel, no top padding: one output row reading input
    row 0) with stride 1 and one group, under 'auto': the shifted-products kernels. (One output
    row alone is not enough: a vertical stride above H, or top padding, gives one too.)"""
    return (config.CPU_CONV_KERNEL == "auto" and H == 1 and KH == 1 and pt == 0 and OH == 1
            and sw == 1 and groups == 1)


def _whole_input(x_shape, w_shape, y_shape, pt, pl, dh, dw, groups):
    """The kernel covers the whole unpadded input once: a Linear layer on the flattened image
    (under config.CPU_CONV_KERNEL 'auto'; a forced kernel runs as it says)."""
    return (config.CPU_CONV_KERNEL == "auto" and groups == 1 and pt == 0 and pl == 0 and y_shape[2] == y_shape[3] == 1
            and (w_shape[2] - 1) * dh + 1 == x_shape[2] == w_shape[2]
            and (w_shape[3] - 1) * dw + 1 == x_shape[3] == w_shape[3])


def _direct_tasks(N, groups, OH, Og, Wi, itemsize):
    """(images side by side, output rows) per direct task, from shapes only: small images are
    laid side by side until a task's run of positions reaches about CPU_DIRECT_RUN (long loops
    run 1.5-2.5x faster than LeNet C3's 136) while at least CPU_MIN_TASKS tasks remain; then
    enough row blocks for CPU_MIN_TASKS where the batch alone gives fewer; accumulators
    (Og x rows x side*Wi) of at most CPU_DIRECT_ACC_BYTES."""
    tasks = N * groups
    side = max(1, min(-(-config.CPU_DIRECT_RUN // (OH * Wi)), tasks // config.CPU_MIN_TASKS,
                      N))
    tasks = -(-N // side) * groups
    want = -(-config.CPU_MIN_TASKS // tasks) if tasks < config.CPU_MIN_TASKS else 1
    rows = -(-OH // want)
    rows = min(rows, config.CPU_DIRECT_ACC_BYTES // max(1, Og * side * Wi * itemsize))
    return int(side), int(max(1, min(rows, OH)))


def conv2d_forward(y, x, w, b, sh, sw, pt, pl, dh, dw, groups):
    """y (N, O, OH, OW) = correlation of x (N, C, H, W) with w (O, C/groups, KH, KW), plus b (O,)."""
    N, O, OH, OW = y.shape
    _, Cg, KH, KW = w.shape
    has_bias = b is not None
    bias = b if has_bias else np.zeros(1, dtype=x.dtype)
    if _whole_input(x.shape, w.shape, y.shape, pt, pl, dh, dw, groups):
        linear.linear_forward(y.reshape(N, O), np.ascontiguousarray(x).reshape(N, -1),
                              np.ascontiguousarray(w).reshape(O, -1), b)
        return
    if blocked_applies(x.dtype, O, Cg, KH, KW, sh, sw, groups, OH, OW, N):
        _blocked_forward(y, x, w, b, sh, sw, pt, pl, dh, dw, groups)
        return
    kind = conv_kernel(O, Cg, KH, KW, sh, sw, groups)
    if kind == "direct":
        _stride1_forward(kind, y, x, w, bias, has_bias, pt, pl, dh, dw, groups)
        return
    if _conv1d_shifted(x.shape[2], KH, OH, pt, sw, groups):
        _conv1d_shifted_forward(y, x, w, bias, has_bias, pl, dw)
        return
    if kind == "taps":
        _stride1_forward(kind, y, x, w, bias, has_bias, pt, pl, dh, dw, groups)
        return
    w3 = w.reshape(groups, O // groups, Cg * KH * KW)
    tn = _tile_cols(Cg * KH * KW, x.itemsize)
    with single_threaded_blas():
        _forward_tiles(y.reshape(N, O, OH * OW), x, w3, bias, has_bias, KH, KW, sh, sw, pt, pl,
                       dh, dw, OW, tn)


def _conv1d_shifted_forward(y, x, w, bias, has_bias, pl, dw):
    """Stride-1, one-group conv1d (x (N, C, 1, L)) as K products over shifted rows of x channels
    last; 1.1-1.3x im2col's speed on the Kim CNN's layers."""
    N, C, _, W = x.shape
    O, _, _, KW = w.shape
    OW = y.shape[3]
    Lp = OW + (KW - 1) * dw                  # = pl + L + pr
    xt = np.empty((N + 1, Lp, C), dtype=x.dtype)
    xt[N] = 0                                # spare zero rows: the last rows' taps read past the end
    _channels_last_1d(xt[:N], x, pl)
    wt = np.ascontiguousarray(w[:, :, 0, :].transpose(2, 1, 0))
    with single_threaded_blas():
        _shifted_forward_1d(y.reshape(N, O, OW), xt.reshape((N + 1) * Lp, C), wt, bias,
                            has_bias, dw, Lp, _shifted_rows(N, Lp))


def _shifted_rows(N, Lp):
    """Rows per task of the shifted conv1d products: at least CPU_MIN_TASKS blocks where there
    are enough rows (a batch of one too), each of 64 to 1024 rows. Shapes only."""
    return int(min(1024, max(64, -(-N * Lp // config.CPU_MIN_TASKS))))


def _conv1d_shifted_input(dx, dy, w, pl, dw):
    """The input gradient of _conv1d_shifted_forward: K products of dy's rows (channels last,
    shifted back by k*dw) with W_k (O, C), summed, the padding's rows dropped."""
    N, C, _, W = dx.shape
    O, _, _, KW = w.shape
    OW = dy.shape[3]
    Lp = OW + (KW - 1) * dw
    front = (KW - 1) * dw
    dyf = np.empty((front + N * Lp, O), dtype=dy.dtype)
    _rows_last_1d(dyf, dy.reshape(N, O, OW), Lp, front)
    wk = np.ascontiguousarray(w[:, :, 0, :].transpose(2, 0, 1))          # (K, O, C)
    with single_threaded_blas():
        _shifted_input_1d(dx.reshape(N, C, W), dyf, wk, dw, Lp, pl, _shifted_rows(N, Lp))


def _conv1d_shifted_weight(dwt, dy, x, pl, dw):
    """The weight gradient of _conv1d_shifted_forward: per tap k, dy's rows transposed @ x's rows
    shifted by k*dw, over fixed row segments whose partial sums are added in order."""
    N, C, _, W = x.shape
    O, _, _, KW = dwt.shape
    OW = dy.shape[3]
    Lp = OW + (KW - 1) * dw
    front = (KW - 1) * dw
    xt = np.empty((N + 1, Lp, C), dtype=x.dtype)
    xt[N] = 0
    _channels_last_1d(xt[:N], x, pl)
    dyf = np.empty((front + N * Lp, O), dtype=dy.dtype)
    _rows_last_1d(dyf, dy.reshape(N, O, OW), Lp, front)
    # segments of at least 1,024 rows: each product's reduction long enough for BLAS (the Kim
    # CNN's 3,200 rows in 3 segments ran 1.2-1.5x faster than in 6)
    S = int(max(1, min(config.CPU_MIN_TASKS, N * Lp // 1024)))
    part = np.empty((S, KW, O, C), dtype=dwt.dtype)
    with single_threaded_blas():
        _shifted_weight_1d(part, dyf, xt.reshape((N + 1) * Lp, C), dw)
    total = np.empty((KW, O * C), dtype=dwt.dtype)    # segments added in order, as im2col's
    _reduce_partials(total, part.reshape(S, 1, KW, O * C))
    dwt[:, :, 0, :] = total.reshape(KW, O, C).transpose(1, 2, 0)


def _wgrad_chunks(R, itemsize, ncols):
    """(columns per chunk, chunks per segment, segments) of a weight gradient: chunks of about
    CPU_WGRAD_CHUNK_BYTES of im2col (fewer columns when that would leave fewer than CPU_MIN_TASKS
    chunks), grouped into at most CPU_WGRAD_MAX_SEGMENTS segments. Shapes only."""
    chunk = config.CPU_WGRAD_CHUNK_BYTES // max(1, R * itemsize)
    chunk = min(chunk, -(-ncols // config.CPU_MIN_TASKS))
    chunk = int(min(config.CPU_TILE_MAX_COLS, max(config.CPU_TILE_MIN_COLS, chunk)))
    nchunks = -(-ncols // chunk)
    per_seg = -(-nchunks // config.CPU_WGRAD_MAX_SEGMENTS)
    return chunk, per_seg, -(-nchunks // per_seg)


def conv2d_backward_weight(dwt, dy, x, sh, sw, pt, pl, dh, dw, groups):
    """dwt (O, C/groups, KH, KW) = correlation of x with dy, summed over the batch."""
    O, Cg, KH, KW = dwt.shape
    N, _, OH, OW = dy.shape
    R = Cg * KH * KW
    if _whole_input(x.shape, dwt.shape, dy.shape, pt, pl, dh, dw, groups):
        linear.linear_backward_weight(dwt.reshape(O, R), np.ascontiguousarray(dy).reshape(N, O),
                                      np.ascontiguousarray(x).reshape(N, R))
        return
    if blocked_weight_applies(x.dtype, O, Cg, KH, KW, sh, sw, groups):
        _blocked_weight(dwt, dy, x, sh, sw, pt, pl, dh, dw)
        return
    kind = weight_grad_kernel(O, Cg, KH, KW, sh, sw, groups)
    if kind == "direct":
        Wi = _pitch(OW, x.shape[3], pl, (KW - 1) * dw)
        side, rows = _direct_tasks(N, groups, OH, O // groups, Wi, x.itemsize)
        units = -(-N // side) * -(-OH // rows)
        per_seg = -(-units // config.CPU_WGRAD_MAX_SEGMENTS)
        part = np.empty((-(-units // per_seg), groups, O // groups, R), dtype=dwt.dtype)
        _direct_weight_partials(part, dy, x, KH, KW, pt, pl, dh, dw, rows, side, per_seg)
        _reduce_partials(dwt.reshape(O, R), part)
        return
    if _conv1d_shifted(x.shape[2], KH, OH, pt, sw, groups):
        _conv1d_shifted_weight(dwt, dy, x, pl, dw)
        return
    if kind == "taps":
        Wi = _pitch(OW, x.shape[3], pl, (KW - 1) * dw)
        side, rows = _taps_tasks(N, groups, OH, Wi, config.CPU_TAPS_WGRAD_COLS)
        units = -(-N // side) * -(-OH // rows)
        per_seg = -(-units // config.CPU_WGRAD_MAX_SEGMENTS)
        part = np.empty((-(-units // per_seg), groups, KH * KW, O // groups, Cg), dtype=dwt.dtype)
        with single_threaded_blas():
            _taps_weight_partials(part, dy, x, KH, KW, pt, pl, dh, dw, rows, side, per_seg)
        _reduce_tap_partials(dwt, part)
        return
    chunk, per_seg, nseg = _wgrad_chunks(R, x.itemsize, N * OH * OW)
    part = np.empty((nseg, groups, O // groups, R), dtype=dwt.dtype)
    with single_threaded_blas():
        _weight_partials(part, dy.reshape(N, O, OH * OW), x, KH, KW, sh, sw, pt, pl, dh, dw, OW,
                         chunk, per_seg)
    _reduce_partials(dwt.reshape(O, R), part)


def _rotated_swapped(w, groups):
    """w (O, Cg, KH, KW) rotated by 180 degrees, its channel axes swapped within each group:
    (C, Og, KH, KW), the weights of the input gradient's full correlation."""
    O, Cg, KH, KW = w.shape
    Og = O // groups
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].reshape(groups, Og, Cg, KH, KW)
                                .transpose(0, 2, 1, 3, 4).reshape(Cg * groups, Og, KH, KW))


def conv2d_backward_input(dx, dy, w, sh, sw, pt, pl, dh, dw, groups):
    """dx (N, C, H, W) = the gradient of the loss with respect to x, given dy (N, O, OH, OW)."""
    N, C, H, W = dx.shape
    O, Cg, KH, KW = w.shape
    OH, OW = dy.shape[2], dy.shape[3]
    Og = O // groups
    if _whole_input(dx.shape, w.shape, dy.shape, pt, pl, dh, dw, groups):
        linear.linear_backward_input(dx.reshape(N, -1), np.ascontiguousarray(dy).reshape(N, O),
                                     np.ascontiguousarray(w).reshape(O, -1))
        return
    eh, ew = (KH - 1) * dh, (KW - 1) * dw
    kind = input_grad_kernel(C, Og, KH, KW, sh, sw, groups, H, OH, OW, pt, dh, dw)
    Hp, Wp = OH + eh, OW + ew                  # the padded input: pt + H + pb by pl + W + pr
    inner = max(pt, Hp - H - pt) <= eh and max(pl, Wp - W - pl) <= ew
    if (sh == 1 and sw == 1 and inner
            and blocked_applies(dx.dtype, C, Og, KH, KW, 1, 1, groups, H, W, N)
            and (kind == "conv1d" or config.CPU_CONV_KERNEL == "blocked"
                 or (2 * (eh - pt) <= eh and 2 * (ew - pl) <= ew))):
        # The full correlation below, in the blocked kernel, over dx's own rows and columns.
        # It computes the zero rows of dy's padding that the direct kernel skips: under 'auto'
        # it runs where the padding is at most half the extent ('same' 3x3 and 5x5 layers:
        # CIFAR ResNet's 32 -> 32 1.25x the direct kernel, AlexNet's conv2 1.1x im2col, where
        # LeNet-5's 16 -> 16 5x5 'valid' ran 0.83x) and on conv1d layers in its one-row form
        # (the Kim CNN's 1.1-1.2x the shifted products).
        _blocked_forward(dx, dy, w, None, 1, 1, eh - pt, ew - pl, dh, dw, groups, rotated=True)
        return
    if kind in ("direct", "taps"):
        # The course's identity, computed as it reads: dx is the full correlation of dy with the
        # filter rotated by 180 degrees and its channel axes swapped, i.e. a stride-1 forward
        # pass (the direct or the taps kernel) of dy padded by the kernel's extent less one on
        # every side. It gives the gradient of the padded input; dx is its interior.
        zero = np.zeros(1, dx.dtype)
        if inner:
            # the usual case, no side padded by more than the kernel's extent: dy padded by the
            # rest of the extent gives dx's own rows and columns, not the padding's
            _stride1_forward(kind, dx, dy, _rotated_swapped(w, groups), zero, False, eh - pt,
                             ew - pl, dh, dw, groups)
            return
        dxp = np.empty((N, C, Hp, Wp), dtype=dx.dtype)
        _stride1_forward(kind, dxp, dy, _rotated_swapped(w, groups), zero, False, eh, ew, dh, dw,
                         groups)
        dx[...] = dxp[:, :, pt:pt + H, pl:pl + W]
        return
    if kind == "conv1d":
        _conv1d_shifted_input(dx, dy, w, pl, dw)
        return
    R = Cg * KH * KW
    wT3 = np.ascontiguousarray(w.reshape(groups, O // groups, R).transpose(0, 2, 1))
    # Enough row blocks that a small batch still spreads over the cores, but blocks tall enough
    # that the output rows shared by neighbouring blocks (the halo) stay a small fraction.
    tasks = N * groups
    halo = max(1, (KH - 1) * dh)
    want = -(-config.CPU_MIN_TASKS // tasks) if tasks < config.CPU_MIN_TASKS else 1
    rows = max(-(-H // want), 4 * halo, 1)
    rows = min(rows, H)
    with single_threaded_blas():
        _input_blocks(dx, dy.reshape(N, O, OH * OW), wT3, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW,
                      rows)


def conv2d_backward_bias(db, dy):
    """db (O,) = dy summed over batch and positions."""
    N, O, OH, OW = dy.shape
    # a few output maps (LeNet's 6) would leave most cores idle: segments of images make at
    # least CPU_MIN_TASKS tasks, their float64 partial sums added in order
    S = int(min(N, max(1, -(-config.CPU_MIN_TASKS // O))))
    part = np.empty((S, O), np.float64)
    _bias_partials(part, dy.reshape(N, O, OH * OW))
    _sum_bias_partials(db, part)


def conv1d_max_backward(dxt, dwt, db, dm, idx, xt, wt, s, pl, d):
    """The gradients of m (N, O) = max over positions of conv1d(x, w, b), given dm and the winning
    positions idx (N, O). Channels last: xt and dxt (N, L, C), wt and dwt (O, K, C)."""
    _max_weight_grad(dwt, db, dm, idx, xt, s, pl, d)
    _max_input_grad(dxt, dm, idx, wt, s, pl, d)
