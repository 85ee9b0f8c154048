"""The validated functional API: every op checks its inputs, allocates outputs, picks the device's
kernels and calls them."""
from numconv.ops.conv import (ConvGeometry, conv1d, conv1d_backward_bias, conv1d_backward_input,
                              conv1d_backward_weight, conv1d_max_backward, conv2d, conv2d_backward_bias,
                              conv2d_backward_input, conv2d_backward_weight, conv_geometry,
                              convolve1d, convolve2d)
from numconv.ops.pool import (GLOBAL_KINDS, PoolGeometry, avg_pool1d, avg_pool1d_backward,
                              avg_pool2d, avg_pool2d_backward, global_pool, global_pool_backward,
                              lp_pool1d, lp_pool1d_backward, lp_pool2d, lp_pool2d_backward,
                              max_pool1d, max_pool1d_backward, max_pool2d, max_pool2d_backward,
                              pool_geometry)

__all__ = [name for name in dir() if not name.startswith("_")]
