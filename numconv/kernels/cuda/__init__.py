"""@cuda.jit kernels: the same names and argument order as `numconv.kernels.reference` and `cpu`.

Convolution and pooling are exported here; the rest of a training step (activations, Linear, batch
norm, LRN, dropout, the loss) lives in `numconv.kernels.cuda.nn`, the twin of `numconv.ops.nn`, and
the embedding kernels in `numconv.kernels.cuda.embedding`.

Imported lazily, through `numconv.ops._device.kernels_for("cuda")`, which first checks that a GPU
(or the CUDA simulator, NUMBA_ENABLE_CUDASIM=1) is usable. Launchers accept NumPy arrays (copied to
the device and back) or device arrays (used in place). Launch configuration: `numconv.config`.
"""
from numconv.kernels.cuda.conv import (conv1d_max_backward, conv2d_backward_bias,
                                       conv2d_backward_input, conv2d_backward_weight,
                                       conv2d_forward)
from numconv.kernels.cuda.pool import (avgpool2d_backward, avgpool2d_forward,
                                       global_pool2d_backward, global_pool2d_forward,
                                       lppool2d_backward, lppool2d_forward, maxpool2d_backward,
                                       maxpool2d_forward)

__all__ = [
    "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias",
    "conv1d_max_backward",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "lppool2d_forward", "lppool2d_backward", "global_pool2d_forward", "global_pool2d_backward",
]
