"""@njit CPU kernels: the same names and argument order as `numconv.kernels.reference`."""
from numconv.kernels.cpu.conv import (conv1d_max_backward, conv2d_backward_bias,
                                      conv2d_backward_input, conv2d_backward_weight,
                                      conv2d_forward)
from numconv.kernels.cpu.pool import (avgpool2d_backward, avgpool2d_forward, global_pool2d_backward,
                                      global_pool2d_forward, lppool2d_backward, lppool2d_forward,
                                      maxpool2d_backward, maxpool2d_forward)

__all__ = [
    "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias",
    "conv1d_max_backward",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "lppool2d_forward", "lppool2d_backward", "global_pool2d_forward", "global_pool2d_backward",
]
