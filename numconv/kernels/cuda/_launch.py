"""Moving arrays to and from the GPU, and launch geometry: the only place launchers touch either.

Launchers take NumPy arrays or device arrays (numba's, or anything with `__cuda_array_interface__`:
CuPy, PyTorch). A NumPy input is copied to the device; a NumPy output gets a device twin that is
copied back into it after the launch; device arrays are used in place, so data can stay on the GPU
from one op to the next. Block sizes come from `numconv.config`.
"""
import math

import numpy as np
from numba import cuda

from numconv import config


def is_device_array(a):
    """True for arrays that live on the GPU (the simulator's fake device arrays included)."""
    return bool(getattr(a, "__cuda_ndarray__", False)) or hasattr(a, "__cuda_array_interface__")


def _as_numba(a):
    """A numba device array for any device array (a zero-copy view of CuPy or PyTorch memory)."""
    return a if getattr(a, "__cuda_ndarray__", False) else cuda.as_cuda_array(a)


def to_device(a):
    """An input on the device: device arrays as they are, host arrays copied (C order)."""
    if is_device_array(a):
        return _as_numba(a)
    return cuda.to_device(np.ascontiguousarray(a))


def output(a):
    """(device array to write, host array to copy it back into or None) for an output `a`."""
    if is_device_array(a):
        return _as_numba(a), None
    return cuda.device_array(a.shape, dtype=a.dtype), a


def empty(shape, dtype):
    """Device scratch memory (partial sums, a placeholder for a missing bias)."""
    return cuda.device_array(shape, dtype=dtype)


def to_host(a):
    """A NumPy copy of a device array (host arrays as they are): for the few scalars a training
    step reports, checkpoints and evaluation."""
    return _as_numba(a).copy_to_host() if is_device_array(a) else np.asarray(a)


def copy_back(dev, host):
    """Copy an output computed on the device into the caller's host array (no-op without one)."""
    if host is None:
        return
    if host.flags.c_contiguous:
        dev.copy_to_host(host)
    else:
        host[...] = dev.copy_to_host()


def launch_1d(kernel, total, *args):
    """Run `kernel` with one thread per element of a flat range of `total` elements."""
    if total <= 0:
        return
    tpb = config.CUDA_THREADS_PER_BLOCK
    kernel[math.ceil(total / tpb), tpb](*args)


def launch(kernel, blocks, threads, *args):
    """Run `kernel` on an explicit grid (tuples or ints): for tiled and per-block kernels."""
    kernel[blocks, threads](*args)
