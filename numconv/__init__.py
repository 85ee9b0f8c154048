"""numconv: convolution, pooling and their gradients as readable Numba kernels, CPU and GPU.

    import numconv as nc
    y = nc.conv2d(x, w, b, stride=1, padding="same")
    dx = nc.conv2d_backward_input(dy, w, x.shape, padding="same")
"""
from numconv.ops import *  # noqa: F401,F403
from numconv.ops import __all__ as _ops_all

__version__ = "0.1.0"
__all__ = list(_ops_all)
