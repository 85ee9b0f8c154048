"""The per-element functions of `numconv.kernels.elementwise`, compiled as CUDA device functions.

One source for both devices: the same Python functions compile to @njit functions for the CPU and
to the device functions here, which the kernels of `conv` and `pool` call with their thread's
indices.
"""
from numba import cuda

from numconv.kernels import elementwise as _source

globals().update(_source.compile_for(cuda.jit, device=True))

__all__ = list(_source.__all__)
