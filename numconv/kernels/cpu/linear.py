"""CPU fully-connected kernels: matrix products cut into fixed blocks, one BLAS call per block.

Why not `x @ w.T` in NumPy: NumPy's BLAS keeps a thread pool of its own, and on a small machine its
threads and Numba's (still spinning after the last convolution) fight over the same cores, so every
parallel region waits a scheduler time slice; a LeNet-5 step ran 2-3x slower for it. Here Numba's
pool is the only one: each parallel task multiplies one block with BLAS held to a single thread
(numconv.kernels.cpu._blas), blocks depend only on shapes (numconv.config), and so results are
bit-identical whatever the thread count, as for the convolutions.

A product out (M, P) = a (M, K) @ b (K, P) is cut along P first (a block of columns reads only its
own slice of b: a large weight matrix is read once, not once per row) and then along M, into
blocks of about CPU_LINEAR_BLOCK_FLOPS; a small product is one block.

Shapes: x (N, I), w (O, I) (PyTorch's layout), b (O,), y and dy (N, O).
- forward:         y  = x @ w.T + b (a block of w's rows, transposed: no copy)
- input gradient:  dx = dy @ w
- weight gradient: dw = dy.T @ x, from a contiguous copy of dy.T
- bias gradient:   db[o] = sum over n of dy[n, o], in increasing n
"""
import numpy as np
from numba import njit, prange

from numconv import config
from numconv.kernels.cpu._blas import single_threaded_blas


@njit(cache=True, inline="always")
def _block(t, M, P, row_blocks, col_blocks):
    """Rows [r0, r1) and columns [c0, c1) of block t of an (M, P) result cut into near-equal
    row_blocks x col_blocks blocks."""
    rb = t // col_blocks
    cb = t % col_blocks
    return (rb * M // row_blocks, (rb + 1) * M // row_blocks,
            cb * P // col_blocks, (cb + 1) * P // col_blocks)


@njit(parallel=True, cache=True)
def _product_nn(out, a, b, row_blocks, col_blocks):
    """out = a @ b, one task per block (a block of b's columns is copied out contiguous: one pass
    over b in all)."""
    M, P = out.shape
    for t in prange(row_blocks * col_blocks):
        r0, r1, c0, c1 = _block(t, M, P, row_blocks, col_blocks)
        if col_blocks == 1:
            out[r0:r1] = np.dot(a[r0:r1], b)
        else:
            out[r0:r1, c0:c1] = np.dot(a[r0:r1], np.ascontiguousarray(b[:, c0:c1]))


@njit(parallel=True, cache=True)
def _product_nt(out, a, bt, row_blocks, col_blocks):
    """out = a @ bt.T, one task per block; a block of bt's rows is contiguous already."""
    M, P = out.shape
    for t in prange(row_blocks * col_blocks):
        r0, r1, c0, c1 = _block(t, M, P, row_blocks, col_blocks)
        out[r0:r1, c0:c1] = np.dot(a[r0:r1], bt[c0:c1].T)


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


def _blocks(M, K, P):
    """(row blocks, column blocks) for an (M, K) @ (K, P) product: about CPU_LINEAR_BLOCK_FLOPS
    each, columns cut first, no block narrower than CPU_LINEAR_MIN_SIDE where avoidable."""
    side = config.CPU_LINEAR_MIN_SIDE
    tasks = -(-2 * M * K * P // config.CPU_LINEAR_BLOCK_FLOPS)
    tasks = max(1, min(tasks, config.CPU_LINEAR_MAX_BLOCKS))
    cols = max(1, min(tasks, P // side))
    rows = max(1, min(-(-tasks // cols), M // side))
    return rows, cols


def linear_forward(y, x, w, b):
    """y (N, O) = x (N, I) @ w (O, I).T + b (O,) (b may be None)."""
    N, I = x.shape
    with single_threaded_blas():
        _product_nt(y, x, w, *_blocks(N, I, w.shape[0]))
    if b is not None:
        _add_bias(y, b)


def linear_backward_input(dx, dy, w):
    """dx (N, I) = dy (N, O) @ w (O, I)."""
    N, O = dy.shape
    with single_threaded_blas():
        _product_nn(dx, dy, w, *_blocks(N, O, w.shape[1]))


def linear_backward_weight(dw, dy, x):
    """dw (O, I) = dy (N, O).T @ x (N, I)."""
    N, O = dy.shape
    with single_threaded_blas():
        _product_nn(dw, np.ascontiguousarray(dy.T), x, *_blocks(O, N, x.shape[1]))


def linear_backward_bias(db, dy):
    """db (O,) = dy (N, O) summed over the batch."""
    _column_sums(db, dy)
