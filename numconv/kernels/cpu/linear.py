"""CPU fully-connected kernels: matrix products on fixed blocks of rows, one BLAS call per block.

Why not `x @ w.T` in NumPy: NumPy's BLAS keeps a thread pool of its own, and on a small machine its
threads and Numba's (still spinning after the last convolution) fight over the same cores, so every
parallel region waits a scheduler time slice; a LeNet-5 step ran 2-3x slower for it. Here Numba's
pool is the only one: each parallel task multiplies one block of rows with BLAS held to a single
thread (numconv.kernels.cpu._blas), blocks depend only on shapes (numconv.config), and so results
are bit-identical whatever the thread count, as for the convolutions.

Shapes: x (N, I), w (O, I) (PyTorch's layout), b (O,), y and dy (N, O).
- forward:         y[n0:n1]  = x[n0:n1] @ w.T + b
- input gradient:  dx[n0:n1] = dy[n0:n1] @ w
- weight gradient: dw[o0:o1] = dy[:, o0:o1].T @ x, from a contiguous copy of dy.T
- bias gradient:   db[o]     = sum over n of dy[n, o], in increasing n
"""
import numpy as np
from numba import njit, prange

from numconv import config
from numconv.kernels.cpu._blas import single_threaded_blas


@njit(parallel=True, cache=True)
def _rows_times(out, a, bT, rows):
    """out[r0:r1] = a[r0:r1] @ bT for blocks of `rows` rows."""
    n = a.shape[0]
    for t in prange((n + rows - 1) // rows):
        r0 = t * rows
        r1 = min(n, r0 + rows)
        out[r0:r1] = np.dot(a[r0:r1], bT)


@njit(parallel=True, cache=True)
def _add_bias(y, b):
    for n in prange(y.shape[0]):
        for o in range(y.shape[1]):
            y[n, o] += b[o]


@njit(cache=True)
def _column_sums(db, dy):
    db[:] = 0
    for n in range(dy.shape[0]):
        for o in range(dy.shape[1]):
            db[o] += dy[n, o]


def _block_rows(n, flops_per_row):
    """Rows per parallel task: enough that a task's product is worth a thread (config)."""
    return int(min(n, max(1, -(-config.CPU_LINEAR_BLOCK_FLOPS // max(1, flops_per_row)))))


def linear_forward(y, x, w, b):
    """y (N, O) = x (N, I) @ w (O, I).T + b (O,) (b may be None)."""
    N, I = x.shape
    O = w.shape[0]
    with single_threaded_blas():
        _rows_times(y, x, w.T, _block_rows(N, 2 * I * O))
    if b is not None:
        _add_bias(y, b)


def linear_backward_input(dx, dy, w):
    """dx (N, I) = dy (N, O) @ w (O, I)."""
    N, O = dy.shape
    I = w.shape[1]
    with single_threaded_blas():
        _rows_times(dx, dy, w, _block_rows(N, 2 * I * O))


def linear_backward_weight(dw, dy, x):
    """dw (O, I) = dy (N, O).T @ x (N, I)."""
    N, O = dy.shape
    I = x.shape[1]
    dyT = np.ascontiguousarray(dy.T)
    with single_threaded_blas():
        _rows_times(dw, dyT, x, _block_rows(O, 2 * N * I))


def linear_backward_bias(db, dy):
    """db (O,) = dy (N, O) summed over the batch."""
    _column_sums(db, dy)
