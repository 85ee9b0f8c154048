"""CPU kernels of a 'same' conv1d over a batch of sentences, computed on the real tokens' windows
only (the window tagger's layers).

A batch laid out as (N, Tp, C) channels-last rows (each sentence's tokens after `pad` padding
rows, then padding to the longest sentence) has one window per real token: token j of sentence n
reads rows [j, j + K) of xt[n], which in channels-last memory is one contiguous run of K*C values.
Numbering the real tokens q = starts[n] + j (starts: the running sum of the lengths), the layer is

    col[q]  = xt[n, j:j + K].ravel()             gather_windows (im2col without batch padding)
    z       = col @ W2.T + b                       W2 (O, K*C): the (O, C, K) weight as (O, K, C)
    dW2     = dz.T @ col,  dcol = dz @ W2
    dxt[n, r] = sum over k of dcol[starts[n] + r - k, k*C:(k+1)*C]   scatter_windows (a gather)

Products are cut into fixed row blocks, one single-threaded BLAS call each (as numconv's other
CPU kernels), and the weight gradient into fixed row segments whose partial products are added in
order; blocks depend only on shapes, so results are the same bits on any thread count.

Shapes: xt and dxt (N, Tp, C); col and dcol (Q, K*C); starts (N + 1,) int64.
"""
import numpy as np
from numba import njit, prange

from numconv import config
from numconv.kernels.cpu._blas import single_threaded_blas
from numconv.kernels.cpu.linear import linear_backward_bias


@njit(parallel=True, cache=True)
def _gather_windows(col, xt, starts, K):
    N, C = xt.shape[0], xt.shape[2]
    for n in prange(N):
        for j in range(starts[n + 1] - starts[n]):
            col[starts[n] + j, :] = xt[n, j:j + K].ravel()


@njit(parallel=True, cache=True)
def _scatter_windows(dxt, dcol, starts, K):
    """Each task owns one sentence's rows; row r collects the K windows that read it, k in order."""
    N, Tp, C = dxt.shape
    for n in prange(N):
        L = starts[n + 1] - starts[n]
        plane = dxt[n]
        plane[:] = 0
        for r in range(min(Tp, L + K - 1)):
            row = plane[r]
            for k in range(K):
                j = r - k
                if 0 <= j < L:
                    src = dcol[starts[n] + j, k * C:(k + 1) * C]
                    for c in range(C):
                        row[c] += src[c]


@njit(parallel=True, cache=True)
def _rows_nn(out, a, b, blocks):
    """out = a @ b, one task per block of rows (b may be a transposed view: BLAS reads it so)."""
    M = out.shape[0]
    for t in prange(blocks):
        r0, r1 = t * M // blocks, (t + 1) * M // blocks
        if r1 > r0:
            np.dot(a[r0:r1], b, out[r0:r1])


@njit(cache=True)
def _transpose_into(dst, src):
    """dst (P, M) = src (M, P).T, in 32 x 32 blocks (both sides stay in cache)."""
    M, P = src.shape
    for i0 in range(0, M, 32):
        i1 = min(M, i0 + 32)
        for j0 in range(0, P, 32):
            for j in range(j0, min(P, j0 + 32)):
                for i in range(i0, i1):
                    dst[j, i] = src[i, j]


@njit(parallel=True, cache=True)
def _segments_tn(part, a, b):
    """part[s] = a[rows of s].T @ b[rows of s]; an empty segment is zero. Each segment of `a` is
    first transposed into a contiguous buffer: BLAS runs a plain product some 15 % faster than
    one that reads its first operand transposed, and the copy is P*rows moves against the
    product's P*rows*R multiply-adds."""
    S = part.shape[0]
    M, P = a.shape
    for s in prange(S):
        r0, r1 = s * M // S, (s + 1) * M // S
        if r1 > r0:
            at = np.empty((P, r1 - r0), a.dtype)
            _transpose_into(at, a[r0:r1])
            np.dot(at, b[r0:r1], part[s])
        else:
            part[s] = 0


@njit(parallel=True, cache=True)
def _sum_parts(out, part):
    """out[i, j] = sum over s of part[s, i, j], s in increasing order."""
    S, P = part.shape[0], part.shape[1]
    for i in prange(P):
        out[i] = part[0, i]
        for s in range(1, S):
            out[i] += part[s, i]


def _row_blocks(M):
    """Blocks of at least CPU_WINDOW_MIN_ROWS rows, at most CPU_MIN_TASKS of them. Shapes only."""
    return int(max(1, min(config.CPU_MIN_TASKS, M // config.CPU_WINDOW_MIN_ROWS)))


def _row_segments(M):
    """Segments of a reduction over M rows: at least CPU_WINDOW_SEGMENT_ROWS rows each (a long
    reduction per product; the partial sums cost a pass each), at least two where there are
    CPU_WINDOW_MIN_ROWS rows to share, at most CPU_MIN_TASKS. Shapes only."""
    if M < 2 * config.CPU_WINDOW_MIN_ROWS:
        return 1
    return int(min(config.CPU_MIN_TASKS, max(2, M // config.CPU_WINDOW_SEGMENT_ROWS)))


# ----------------------------------------------------------------------------------------------
# Launchers: outputs first
# ----------------------------------------------------------------------------------------------

def gather_windows(col, xt, starts, K):
    """col (Q, K*C): the window of each real token, from xt (N, Tp, C)."""
    _gather_windows(col, xt, starts, K)


def scatter_windows(dxt, dcol, starts, K):
    """dxt (N, Tp, C): the windows' gradients dcol (Q, K*C) added back to the rows they read."""
    _scatter_windows(dxt, dcol, starts, K)


def matmul_nt(out, a, bt):
    """out (M, P) = a (M, K) @ bt (P, K).T."""
    with single_threaded_blas():
        _rows_nn(out, a, bt.T, _row_blocks(a.shape[0]))


def matmul_nn(out, a, b):
    """out (M, P) = a (M, K) @ b (K, P)."""
    with single_threaded_blas():
        _rows_nn(out, a, b, _row_blocks(a.shape[0]))


def matmul_tn(out, a, b):
    """out (P, R) = a (M, P).T @ b (M, R), summed over fixed row segments in order."""
    S = _row_segments(a.shape[0])
    if S == 1:
        with single_threaded_blas():
            _rows_nn(out, np.ascontiguousarray(a.T), b, 1)
        return
    part = np.empty((S,) + out.shape, dtype=out.dtype)
    with single_threaded_blas():
        _segments_tn(part, a, b)
    _sum_parts(out, part)


def column_sums(out, a):
    """out (P,) = a (M, P) summed over its rows, in increasing row order (the Linear layers'
    bias gradient)."""
    linear_backward_bias(out, a)
