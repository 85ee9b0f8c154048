"""Keep BLAS single-threaded while our parallel kernels call it.

The CPU convolution kernels run matrix products (np.dot inside @njit, which calls the BLAS that SciPy
ships) on fixed tiles, one tile per parallel task. A multithreaded BLAS would both oversubscribe the
cores and, worse, change its summation order with its thread count: OpenBLAS results differ in the
last bits between 1 and 2 threads. With one BLAS thread per tile, every number depends only on the
tile, and tiles depend only on shapes, so results are bit-identical whatever the thread count.
"""
import contextlib

_blas_libs = None


def _libs():
    global _blas_libs
    if _blas_libs is None:
        import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS that numba's np.dot uses)
        from threadpoolctl import ThreadpoolController
        _blas_libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    return _blas_libs


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS on one thread inside the block, as it was after. Where it already is (inside an outer
    block: the training loop holds one for a whole run), nothing is set, which saves the setting
    and restoring on each of the step's many products."""
    libs = _libs()
    saved = [lib.get_num_threads() for lib in libs]
    if all(n == 1 for n in saved):
        yield
        return
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, saved):
            lib.set_num_threads(n)
