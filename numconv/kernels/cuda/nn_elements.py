"""The per-element functions of `numconv.kernels.nn`, compiled as CUDA device functions.

One source for both devices: the CPU compiles the same Python functions with numba.njit (the
dropout generator) or follows their arithmetic in NumPy; the kernels of `numconv.kernels.cuda.nn`
call these with their thread's indices.
"""
from numba import cuda

from numconv.kernels import nn as _source

globals().update(_source.compile_for(cuda.jit, device=True))

__all__ = list(_source.__all__)
