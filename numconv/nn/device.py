"""Arrays on the GPU for the layers: moving them, allocating them, and checking that one call does
not mix host and device arrays.

A model lives on the GPU after `model.to("cuda")`: its parameters, gradients and buffers become
numba device arrays, and every layer, given a device array, runs the CUDA kernels and returns
device arrays. A training step then moves only the batch in (`to_device`) and the loss (a float)
out. numba.cuda is imported on first use, never by `import numconv`.
"""
import numpy as np

from numconv.ops._device import kernels_for
from numconv.ops.nn import on_gpu

DEVICES = ("cpu", "cuda")


def _cuda():
    kernels_for("cuda")       # a one-line reason where CUDA cannot run
    from numba import cuda
    return cuda


def check_device(device):
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is unknown; use one of {', '.join(DEVICES)}")
    return device


def to_device(a):
    """A device copy of a host array (C order); device arrays are returned as they are."""
    if on_gpu(a):
        return a
    return _cuda().to_device(np.ascontiguousarray(a))


def to_host(a):
    """A NumPy copy of a device array; host values are returned as they are."""
    if on_gpu(a):
        return a.copy_to_host() if hasattr(a, "copy_to_host") else \
            _cuda().as_cuda_array(a).copy_to_host()
    return a


def empty(shape, dtype):
    return _cuda().device_array(tuple(shape), dtype=np.dtype(dtype))


def zeros(shape, dtype):
    from numconv.kernels.cuda import nn as gpu
    return gpu.zeros(tuple(shape), np.dtype(dtype))


def same_place(**arrays):
    """Raise a clear error when the named arrays (None ignored) are not all on one device."""
    where = {k: on_gpu(a) for k, a in arrays.items() if a is not None}
    if len(set(where.values())) > 1:
        on = ", ".join(k for k, v in where.items() if v)
        off = ", ".join(k for k, v in where.items() if not v)
        raise ValueError(f"{on} on the GPU but {off} on the host; move the model with "
                         f"model.to('cuda') and each batch with numconv.nn.device.to_device(x)")
