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


def move_model(model, device):
    """model.to(device) for a training or evaluation run, in place; returns the model. A model with
    a layer that has no GPU path (`supports_cuda = False`) is a one-line error naming the fix."""
    check_device(device)
    if device == model.device:
        return model
    try:
        return model.to(device)
    except ValueError as exc:
        reason = str(exc).split("; train it with")[0]   # Module.to's fix names the library call
        raise ValueError(f"--device {device}: {reason}; use --device cpu") from None


def forward_to_host(model, x):
    """The model's output for one batch as a host array. On a GPU model, an array batch goes to
    the device first (a tuple, such as the Kim CNN's (ids, lengths), goes as it is: its layers take
    host ids) and only the output comes back."""
    if model.device == "cpu":
        return model.forward(x)
    return to_host(model.forward(to_device(x) if isinstance(x, np.ndarray) else x))


def empty(shape, dtype):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return _cuda().device_array(shape, dtype=np.dtype(dtype))


def zeros(shape, dtype):
    return _nn().zeros(tuple(shape), np.dtype(dtype))


def _nn():
    kernels_for("cuda")
    from numconv.kernels.cuda import nn as gpu
    return gpu


def concat_channels(arrays):
    """np.concatenate(arrays, axis=1) for device arrays."""
    return _nn().concat_channels(arrays)


def split_channels(a, start, count):
    """np.ascontiguousarray(a[:, start:start + count]) for a device array."""
    return _nn().split_channels(a, start, count)


def transpose(a):
    """np.ascontiguousarray(a.transpose(0, 2, 1)) for a device array (N, A, B)."""
    return _nn().transpose(a)


def fill_outside_(y, lengths, start, end_offset, value):
    """In place on y (N, C, T): positions outside [start, lengths[n] + end_offset) := value."""
    _nn().fill_outside_(y, lengths, start, end_offset, value)


def same_place(**arrays):
    """Raise a clear error when the named arrays (None ignored) are not all on one device."""
    where = {k: on_gpu(a) for k, a in arrays.items() if a is not None}
    if len(set(where.values())) > 1:
        on = ", ".join(k for k, v in where.items() if v)
        off = ", ".join(k for k, v in where.items() if not v)
        raise ValueError(f"{on} on the GPU but {off} on the host; move the model with "
                         f"model.to('cuda') and each batch with numconv.nn.device.to_device(x)")


# ----------------------------------------------------------------------------------------------
# Convolution and pooling on device arrays. numconv.ops validates and allocates NumPy arrays; these
# do the same for arrays already on the GPU (the same geometry checks, outputs allocated on the
# device) and call the same CUDA launchers. 1D runs as 2D with H = 1, as in numconv.ops.
# ----------------------------------------------------------------------------------------------

def _gpu_kernels():
    return kernels_for("cuda")


def _as4d(a, nd):
    return a.reshape(a.shape[0], a.shape[1], 1, a.shape[2]) if nd == 1 else a


def _check(name, a, ndim, dtype=None):
    if not on_gpu(a):
        raise ValueError(f"{name} is on the host but the layer's other arrays are on the GPU; "
                         f"move the batch with numconv.nn.device.to_device(x)")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(a.shape)}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} is {a.dtype} but the layer computes in {dtype}; use one dtype, "
                        f"e.g. {name}.astype(np.{dtype})")
    return a


def conv_forward(nd, x, w, b, stride=1, padding=0, dilation=1, groups=1):
    """ops.conv1d / conv2d (correlation) for device arrays."""
    from numconv import ops
    _check("x", x, nd + 2, w.dtype)
    geom = ops.conv_geometry(nd, x.shape, w.shape, stride, padding, dilation, groups)
    y = empty((geom.N, geom.O, geom.OH, geom.OW), x.dtype)
    _gpu_kernels().conv2d_forward(y, _as4d(x, nd), _as4d(w, nd), b, *geom.kernel_args())
    return y.reshape(geom.out_shape)


def conv_backward_input(nd, dy, w, input_shape, stride=1, padding=0, dilation=1, groups=1):
    from numconv import ops
    _check("dy", dy, nd + 2, w.dtype)
    geom = ops.conv_geometry(nd, tuple(input_shape), w.shape, stride, padding, dilation, groups)
    dx = empty((geom.N, geom.C, geom.H, geom.W), dy.dtype)
    _gpu_kernels().conv2d_backward_input(dx, _as4d(dy, nd), _as4d(w, nd), *geom.kernel_args())
    return dx.reshape(geom.in_shape)


def conv_backward_weight(nd, dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1):
    from numconv import ops
    _check("dy", dy, nd + 2, x.dtype)
    geom = ops.conv_geometry(nd, x.shape, tuple(w_shape), stride, padding, dilation, groups)
    dw = empty((geom.O, geom.C // geom.groups, geom.KH, geom.KW), x.dtype)
    _gpu_kernels().conv2d_backward_weight(dw, _as4d(dy, nd), _as4d(x, nd), *geom.kernel_args())
    return dw.reshape(geom.weight_shape)


def conv1d_max_backward(dm, idx, xt, w):
    """ops.conv1d_max_backward for device arrays, channels last: dm and idx (N, O), xt (N, L, C),
    w (O, C, K) -> (dxt (N, L, C), dw (O, C, K), db (O,)). Stride 1, no padding or dilation (the
    Kim CNN's convolutions)."""
    from numconv import ops
    _check("xt", xt, 3, w.dtype)
    _check("dm", dm, 2, w.dtype)
    N, L, C = xt.shape
    geom = ops.conv_geometry(1, (N, C, L), tuple(w.shape))
    if tuple(dm.shape) != (N, geom.O) or tuple(idx.shape) != (N, geom.O):
        raise ValueError(f"dm and idx must have shape {(N, geom.O)}, got {tuple(dm.shape)} and "
                         f"{tuple(idx.shape)}")
    wt = transpose(w)
    dxt, dwt, db = empty(xt.shape, xt.dtype), empty(wt.shape, w.dtype), empty(geom.O, w.dtype)
    _gpu_kernels().conv1d_max_backward(dxt, dwt, db, dm, idx, xt, wt, 1, 0, 1)
    return dxt, transpose(dwt), db


def conv_backward_bias(nd, dy):
    db = empty(dy.shape[1], dy.dtype)
    _gpu_kernels().conv2d_backward_bias(db, _as4d(dy, nd))
    return db


def pool_forward(nd, kind, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, p=2.0):
    """max (-> y, idx), avg or lp (-> y, None) pooling of a device array."""
    from numconv import ops
    _check("x", x, nd + 2)
    g = ops.pool_geometry(nd, x.shape, kernel_size, stride, padding, ceil_mode)
    k = _gpu_kernels()
    y = empty((g.N, g.C, g.OH, g.OW), x.dtype)
    idx = None
    if kind == "max" or (kind == "lp" and p == float("inf")):
        idx = empty(y.shape, np.int64)
        k.maxpool2d_forward(y, idx, _as4d(x, nd), *g.window_args())
        idx = idx.reshape(g.out_shape)
    elif kind == "avg":
        k.avgpool2d_forward(y, _as4d(x, nd), *g.window_args(), g.pads[0][1], g.pads[1][1],
                            bool(count_include_pad))
    else:
        k.lppool2d_forward(y, _as4d(x, nd), float(p), *g.window_args())
    return y.reshape(g.out_shape), idx


def pool_backward(nd, kind, dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                  count_include_pad=True, p=2.0, idx=None, x=None, y=None):
    """dx for `pool_forward`: max needs its idx, lp its x and y."""
    from numconv import ops
    _check("dy", dy, nd + 2)
    g = ops.pool_geometry(nd, tuple(input_shape), kernel_size, stride, padding, ceil_mode)
    k = _gpu_kernels()
    dx = empty((g.N, g.C, g.H, g.W), dy.dtype)
    if idx is not None:
        k.maxpool2d_backward(dx, _as4d(dy, nd), _as4d(idx, nd), *g.window_args())
    elif kind == "avg":
        k.avgpool2d_backward(dx, _as4d(dy, nd), *g.window_args(), g.pads[0][1], g.pads[1][1],
                             bool(count_include_pad))
    else:
        k.lppool2d_backward(dx, _as4d(dy, nd), _as4d(x, nd), _as4d(y, nd), float(p),
                            *g.window_args())
    return dx.reshape(g.in_shape)


def global_pool(x, kind):
    """(N, C, ...) -> (y (N, C), idx (N, C)) on the device."""
    from numconv import ops
    if kind not in ops.GLOBAL_KINDS:
        raise ValueError(f"global pooling kind {kind!r} is unknown; use one of "
                         f"{', '.join(ops.GLOBAL_KINDS)}")
    _check("x", x, x.ndim)
    N, C = x.shape[:2]
    y, idx = empty((N, C), x.dtype), zeros((N, C), np.int64)
    _gpu_kernels().global_pool2d_forward(y, idx, _as4d(x, 1) if x.ndim == 3 else x, kind)
    return y, idx


def global_pool_backward(dy, idx, input_shape, kind):
    _check("dy", dy, 2)
    shape4 = tuple(input_shape) if len(input_shape) == 4 else \
        tuple(input_shape[:2]) + (1,) + tuple(input_shape[2:])
    dx = empty(shape4, dy.dtype)
    _gpu_kernels().global_pool2d_backward(dx, dy, idx, kind)
    return dx.reshape(tuple(input_shape))
