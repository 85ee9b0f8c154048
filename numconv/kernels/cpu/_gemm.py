"""gemm(a, b, c, beta): c = a @ b + beta * c on strided 2-D views, callable inside @njit code.

Numba's np.dot needs contiguous operands and always overwrites its output. The convolution kernels
want more: the product of a weight block with a *shifted window* of a larger array (a view whose
rows are longer than its width), accumulated into a view of the output in place. BLAS takes both
(leading dimensions, beta), so this calls the same BLAS routine as np.dot (the `numba_xxgemm`
helper Numba exports, over SciPy's BLAS) with the views' own strides. The helper is linked by
name, so functions that call gemm cache to disk like any other.

Every operand needs one unit-stride axis: a row-major view (last axis contiguous) or the
transpose of one (a.T, first axis contiguous), which BLAS reads as a transposed operand.
"""
import numpy as np
from numba import types
from numba.extending import overload
from numba.np.linalg import ensure_blas

ensure_blas()


def _xxgemm(dtype):
    p = types.CPointer(dtype)
    sig = types.intc(types.char, types.char, types.char,      # kind, transa, transb
                     types.intp, types.intp, types.intp,      # m, n, k
                     p, p, types.intp, p, types.intp,         # alpha, a, lda, b, ldb
                     p, p, types.intp)                        # beta, c, ldc
    return types.ExternalFunction("numba_xxgemm", sig)


_SGEMM = _xxgemm(types.float32)
_DGEMM = _xxgemm(types.float64)


def gemm(a, b, c, beta):
    """c[...] = a @ b + beta * c (NumPy version of the @njit one, for reference)."""
    c[...] = a @ b + beta * c


@overload(gemm, jit_options={"cache": True})
def _gemm_jit(a, b, c, beta):
    if a.dtype == types.float32:
        fn, kind = _SGEMM, ord("s")
    elif a.dtype == types.float64:
        fn, kind = _DGEMM, ord("d")
    else:
        return None

    def impl(a, b, c, beta):
        M, K = a.shape
        N = b.shape[1]
        if b.shape[0] != K or c.shape[0] != M or c.shape[1] != N:
            raise ValueError("numconv gemm: operand shapes do not chain (a @ b into c)")
        if M == 0 or N == 0:
            return
        isz = a.itemsize
        # BLAS is column-major: the row-major c (M, N) is its (N, M) matrix c' = b' @ a', each
        # operand read as stored (row-major, 'n') or as the transpose of what is stored ('t').
        if b.strides[1] == isz or N == 1:
            tb, ldb = ord("n"), max(b.strides[0] // isz, N)
        else:
            tb, ldb = ord("t"), max(b.strides[1] // isz, K)
        if a.strides[1] == isz or K == 1:
            ta, lda = ord("n"), max(a.strides[0] // isz, K)
        else:
            ta, lda = ord("t"), max(a.strides[1] // isz, M)
        ldc = max(c.strides[0] // isz, N)
        one = np.ones(1, a.dtype)
        bt = np.full(1, beta, a.dtype)
        status = fn(kind, tb, ta, N, M, K, one.ctypes, b.ctypes, ldb, a.ctypes, lda,
                    bt.ctypes, c.ctypes, ldc)
        if status != 0:
            raise RuntimeError("numconv: BLAS is not available (numba found no SciPy BLAS)")

    return impl
