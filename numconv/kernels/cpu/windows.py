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

Distinct ids. Where the layer's inputs are looked up in tables (the tagger's word, capitalisation
and feature embeddings), every occurrence of an id multiplies the same vector by the same weights.
For one table E (V, D) feeding channels [c0, c0 + D) of the layer, with M (D, K*H) the weight
block laid out as M[d, k*H + h] = W[h, c0 + d, k], each distinct id u is multiplied once:

    P       = E[u] @ M                                  (U, K*H): every tap's product of each id
    z[q]   += sum over k of P[inv[row(q) + k], k*H:(k+1)*H]     sum_tap_rows (a gather)
    G[u, k] = sum of dz[q] over the windows whose tap k reads id u  gather_tap_grads (a gather)
    dM      = E[u].T @ G,  dE[u] = G @ M.T

Here the rows of the batch that windows read (sentence n's first L + K - 1 rows) are laid end to
end, row(q) = starts[n] + n*(K - 1) + j for token j of sentence n, and inv maps each row to its
id's index among the distinct ids. The three products take U*D*K*H multiply-adds each against
Q*K*C*H on the windows: fewer where words repeat within a batch (real text, large batches).
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
def _window_rows(rows, ids, starts, K):
    """rows = each sentence's first L + K - 1 ids (the rows its windows read), end to end."""
    for n in prange(starts.shape[0] - 1):
        r0, L = starts[n] + n * (K - 1), starts[n + 1] - starts[n]
        rows[r0:r0 + L + K - 1] = ids[n, :L + K - 1]


@njit(parallel=True, cache=True)
def _sum_tap_rows(z, P, inv, starts, K):
    """z[q] += sum over k of P[inv[row(q) + k], k*H:(k+1)*H], taps in order; a task a sentence."""
    H = z.shape[1]
    for n in prange(starts.shape[0] - 1):
        r0 = starts[n] + n * (K - 1)
        for j in range(starts[n + 1] - starts[n]):
            out = z[starts[n] + j]
            for k in range(K):
                src = P[inv[r0 + j + k]]
                for h in range(H):
                    out[h] += src[k * H + h]


@njit(parallel=True, cache=True)
def _gather_tap_grads(G, dz, order, ustarts, row_n, row_p, starts, K):
    """G[u, k*H:(k+1)*H] = sum of dz over the windows whose tap k reads distinct id u: one task
    per (id, tap), its rows (order[ustarts[u]:ustarts[u + 1]], increasing) in order."""
    U, H = G.shape[0], dz.shape[1]
    for t in prange(U * K):
        u, k = t // K, t % K
        g = G[u, k * H:(k + 1) * H]
        g[:] = 0
        for i in range(ustarts[u], ustarts[u + 1]):
            r = order[i]
            n = row_n[r]
            j = row_p[r] - k
            if 0 <= j < starts[n + 1] - starts[n]:
                src = dz[starts[n] + j]
                for h in range(H):
                    g[h] += src[h]


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
    CPU_WINDOW_MIN_ROWS rows to share, at most CPU_MIN_TASKS, and a power of two (three equal
    segments on two cores leave one core idle for a third of the product). Shapes only."""
    if M < 2 * config.CPU_WINDOW_MIN_ROWS:
        return 1
    S = int(min(config.CPU_MIN_TASKS, max(2, M // config.CPU_WINDOW_SEGMENT_ROWS)))
    return 1 << (S.bit_length() - 1)


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


@njit(cache=True)
def group_ids(rows, V):
    """The distinct ids of rows (R,) in [0, V), increasing, by counting (O(R + V)): uniq (U,),
    inv (R,) each row's index in uniq, and the rows grouped by id, increasing within a group
    (order (R,), group u at order[ustarts[u]:ustarts[u + 1]]). The tagger's products by id and
    the Embedding layer's gradient (numconv.nn.embedding) both gather by these groups."""
    counts = np.zeros(V, np.int64)
    for r in range(rows.shape[0]):
        counts[rows[r]] += 1
    index = np.empty(V, np.int64)
    U = 0
    for v in range(V):
        index[v] = U
        if counts[v]:
            U += 1
    uniq, ustarts = np.empty(U, np.int64), np.zeros(U + 1, np.int64)
    for v in range(V):
        if counts[v]:
            uniq[index[v]] = v
            ustarts[index[v] + 1] = ustarts[index[v]] + counts[v]
    inv, order = np.empty_like(rows), np.empty_like(rows)
    fill = ustarts[:U].copy()
    for r in range(rows.shape[0]):
        u = index[rows[r]]
        inv[r] = u
        order[fill[u]] = r
        fill[u] += 1
    return uniq, inv, order, ustarts


class DistinctRows:
    """The distinct ids of one table (of V rows) among the rows a batch's windows read (see the
    module's docstring): ids (N, Tp) in [0, V) of a batch whose sentences start at `starts`
    (N + 1,), windows of K.

    uniq (U,) the distinct ids, increasing; inv (R,) each row's index in uniq; order and ustarts:
    the rows grouped by distinct id (row numbers increasing within a group)."""

    def __init__(self, ids, starts, K, V):
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        N = starts.shape[0] - 1
        lengths = np.diff(starts)
        rows = np.empty(int(starts[-1]) + N * (K - 1), np.int64)
        _window_rows(rows, ids, starts, K)
        self.uniq, self.inv, self.order, self.ustarts = group_ids(rows, V)
        self.row_n = np.repeat(np.arange(N, dtype=np.int64), lengths + K - 1)
        self.row_p = np.arange(rows.size, dtype=np.int64) - (starts[:-1] + np.arange(N) * (K - 1)
                                                            )[self.row_n]
        self.starts, self.K = starts, K


def sum_tap_rows(z, P, d):
    """z (Q, H) += each real token's sum over taps of its ids' rows of P (U, K*H)."""
    _sum_tap_rows(z, P, d.inv, d.starts, d.K)


def gather_tap_grads(G, dz, d):
    """G (U, K*H): per distinct id and tap, the sum of dz (Q, H) over the windows that read it."""
    _gather_tap_grads(G, dz, d.order, d.ustarts, d.row_n, d.row_p, d.starts, d.K)
