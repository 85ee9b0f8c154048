"""Pooling, validated: max, average, Lp-norm and global pooling in 1D and 2D, with gradients.

Pooling summarises each window and so makes features (nearly) invariant to small translations;
global pooling, which summarises the whole map, is exactly invariant to circular shifts.

- max: padding counts as -inf (it never wins); ties go to the first position in row-major window
  order, so the winner, and the gradient, are deterministic.
- average: padding counts as zero; `count_include_pad=True` divides by the window's size clipped to
  the padded input (PyTorch's rule), False by the number of real input positions it covers.
- Lp-norm: (sum |x|^p)^(1/p) over the window, p >= 1; p = 2 is the root-sum-square, and p = inf
  is max pooling (the limit of the Lp norm for the non-negative maps that follow a ReLU). PyTorch's
  lp_pool sums x^p without the absolute value, which agrees for non-negative inputs.
- global: max, average or sum over each whole channel: (N, C, H, W) -> (N, C).

Windows: size `kernel_size`, step `stride` (default: the kernel size), padding as for convolution
(at most half the kernel on each side, so every window sees the input), `ceil_mode` rounds the
output size up, keeping only windows that start inside the input or its leading padding.
"""
import math
from dataclasses import dataclass

import numpy as np

from numconv.ops import _buffers as buffers
from numconv.ops._args import as_float_array, int_tuple, output_size, resolve_padding, same_dtype
from numconv.ops._device import kernels_for

GLOBAL_KINDS = ("max", "avg", "sum")


@dataclass(frozen=True)
class PoolGeometry:
    nd: int
    N: int
    C: int
    H: int
    W: int
    kernel: tuple      # (kh, kw)
    stride: tuple      # (sh, sw)
    pads: tuple        # ((pt, pb), (pl, pr))
    OH: int
    OW: int

    @property
    def out_shape(self):
        return (self.N, self.C, self.OW) if self.nd == 1 else (self.N, self.C, self.OH, self.OW)

    @property
    def in_shape(self):
        return (self.N, self.C, self.W) if self.nd == 1 else (self.N, self.C, self.H, self.W)

    def window_args(self):
        (kh, kw), (sh, sw), ((pt, _), (pl, _)) = self.kernel, self.stride, self.pads
        return kh, kw, sh, sw, pt, pl


def _layout(nd):
    return "(N, C, L)" if nd == 1 else "(N, C, H, W)"


def pool_geometry(nd, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    kernel = int_tuple("kernel_size", kernel_size, nd)
    stride = kernel if stride is None else int_tuple("stride", stride, nd)
    N, C, *spatial = x_shape
    if isinstance(padding, str) and padding.lower() == "same" and ceil_mode:
        raise ValueError("padding='same' fixes the output size at ceil(input / stride); "
                         "ceil_mode must be False with it")
    pads = resolve_padding(padding, spatial, kernel, stride)
    for k, p in zip(kernel, pads):
        if max(p) > k // 2:
            raise ValueError(f"pooling padding {padding!r} is more than half the kernel size "
                             f"{kernel_size!r}; windows would lie wholly in the padding. Use at "
                             f"most {k // 2} per side")
    outs = [output_size(f"pooling dimension {i}", n, p, k, s, ceil_mode)
            for i, (n, p, k, s) in enumerate(zip(spatial, pads, kernel, stride))]
    if nd == 1:
        return PoolGeometry(1, N, C, 1, spatial[0], (1, kernel[0]), (1, stride[0]),
                            ((0, 0), pads[0]), 1, outs[0])
    return PoolGeometry(2, N, C, spatial[0], spatial[1], kernel, stride, pads, outs[0], outs[1])


def _as4d(a, nd):
    return a[:, :, None, :] if nd == 1 else a


def _check_dy(dy, geom):
    dy = as_float_array("dy", dy, geom.nd + 2, _layout(geom.nd))
    if dy.shape != geom.out_shape:
        raise ValueError(f"dy has shape {dy.shape} but the pooling's output has shape "
                         f"{geom.out_shape}; pass the gradient of this op's output")
    return dy


def _check_idx(idx, shape, plane):
    """The winners' flat indices from a forward max pooling: integers in [0, plane), dy's shape."""
    if not isinstance(idx, np.ndarray) or idx.dtype.kind not in "iu" or idx.shape != shape:
        got = f"{idx.dtype} array of shape {idx.shape}" if isinstance(idx, np.ndarray) \
            else type(idx).__name__
        raise ValueError(f"idx must be the integer index array returned by the forward max "
                         f"pooling (return_indices=True), of shape {shape}; got {got}")
    if idx.size and (idx.min() < 0 or idx.max() >= plane):
        raise ValueError(f"idx holds positions outside the input plane of {plane} pixels "
                         f"(min {idx.min()}, max {idx.max()}); pass the indices the forward "
                         f"pass returned for this input shape")
    return np.ascontiguousarray(idx, dtype=np.int64)


def _input_geometry(nd, input_shape, *window):
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != nd + 2:
        raise ValueError(f"input_shape must be the forward input's shape {_layout(nd)}, got "
                         f"{input_shape}")
    return pool_geometry(nd, input_shape, *window)


# ---------------------------------------------------------------------------------------------- max

def _max_forward(nd, x, kernel_size, stride, padding, ceil_mode, device):
    x = as_float_array("x", x, nd + 2, _layout(nd))
    g = pool_geometry(nd, x.shape, kernel_size, stride, padding, ceil_mode)
    y = buffers.empty((g.N, g.C, g.OH, g.OW), x.dtype)
    idx = buffers.empty((g.N, g.C, g.OH, g.OW), np.int64)
    kernels_for(device).maxpool2d_forward(y, idx, _as4d(x, nd), *g.window_args())
    return y.reshape(g.out_shape), idx.reshape(g.out_shape)


def _max_backward(nd, dy, idx, input_shape, kernel_size, stride, padding, ceil_mode, device):
    g = _input_geometry(nd, input_shape, kernel_size, stride, padding, ceil_mode)
    dy = _check_dy(dy, g)
    idx = _check_idx(idx, dy.shape, g.H * g.W)
    dx = buffers.empty((g.N, g.C, g.H, g.W), dy.dtype)
    kernels_for(device).maxpool2d_backward(dx, _as4d(dy, nd), _as4d(idx, nd),
                                           *g.window_args())
    return dx.reshape(g.in_shape)


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, *, return_indices=False,
               device="cpu"):
    """x (N, C, H, W) -> y (N, C, OH, OW) [, idx (N, C, OH, OW) int64, flat ih*W + iw]."""
    y, idx = _max_forward(2, x, kernel_size, stride, padding, ceil_mode, device)
    return (y, idx) if return_indices else y


def max_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, *, return_indices=False,
               device="cpu"):
    """x (N, C, L) -> y (N, C, OL) [, idx]."""
    y, idx = _max_forward(1, x, kernel_size, stride, padding, ceil_mode, device)
    return (y, idx) if return_indices else y


def max_pool2d_backward(dy, idx, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, *, device="cpu"):
    """dL/dx (N, C, H, W): each window's gradient goes to its winner."""
    return _max_backward(2, dy, idx, input_shape, kernel_size, stride, padding, ceil_mode, device)


def max_pool1d_backward(dy, idx, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, *, device="cpu"):
    return _max_backward(1, dy, idx, input_shape, kernel_size, stride, padding, ceil_mode, device)


# ---------------------------------------------------------------------------------------------- avg

def _avg(nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, device):
    x = as_float_array("x", x, nd + 2, _layout(nd))
    g = pool_geometry(nd, x.shape, kernel_size, stride, padding, ceil_mode)
    y = buffers.empty((g.N, g.C, g.OH, g.OW), x.dtype)
    kernels_for(device).avgpool2d_forward(y, _as4d(x, nd), *g.window_args(), g.pads[0][1],
                                          g.pads[1][1], bool(count_include_pad))
    return y.reshape(g.out_shape)


def _avg_backward(nd, dy, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                  device):
    g = _input_geometry(nd, input_shape, kernel_size, stride, padding, ceil_mode)
    dy = _check_dy(dy, g)
    dx = buffers.empty((g.N, g.C, g.H, g.W), dy.dtype)
    kernels_for(device).avgpool2d_backward(dx, _as4d(dy, nd), *g.window_args(), g.pads[0][1],
                                           g.pads[1][1], bool(count_include_pad))
    return dx.reshape(g.in_shape)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               *, device="cpu"):
    """x (N, C, H, W) -> y (N, C, OH, OW), the mean of each window."""
    return _avg(2, x, kernel_size, stride, padding, ceil_mode, count_include_pad, device)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               *, device="cpu"):
    return _avg(1, x, kernel_size, stride, padding, ceil_mode, count_include_pad, device)


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, *, device="cpu"):
    return _avg_backward(2, dy, input_shape, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, device)


def avg_pool1d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, *, device="cpu"):
    return _avg_backward(1, dy, input_shape, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, device)


# ----------------------------------------------------------------------------------------------- lp

def _check_p(p):
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise TypeError(f"p must be a number >= 1 (or math.inf), got {p!r}") from None
    if not p >= 1:
        raise ValueError(f"p must be >= 1 for an Lp norm (p=1: sum of |x|, p=2: root of sum of "
                         f"squares, p=inf: max), got {p!r}")
    return p


def _lp(nd, x, p, kernel_size, stride, padding, ceil_mode, device):
    p = _check_p(p)
    if math.isinf(p):
        return _max_forward(nd, x, kernel_size, stride, padding, ceil_mode, device)[0]
    x = as_float_array("x", x, nd + 2, _layout(nd))
    g = pool_geometry(nd, x.shape, kernel_size, stride, padding, ceil_mode)
    y = buffers.empty((g.N, g.C, g.OH, g.OW), x.dtype)
    kernels_for(device).lppool2d_forward(y, _as4d(x, nd), p, *g.window_args())
    return y.reshape(g.out_shape)


def _lp_backward(nd, dy, x, y, p, kernel_size, stride, padding, ceil_mode, device):
    p = _check_p(p)
    x = as_float_array("x", x, nd + 2, _layout(nd))
    if math.isinf(p):
        _, idx = _max_forward(nd, x, kernel_size, stride, padding, ceil_mode, device)
        return _max_backward(nd, dy, idx, x.shape, kernel_size, stride, padding, ceil_mode, device)
    g = pool_geometry(nd, x.shape, kernel_size, stride, padding, ceil_mode)
    dy = _check_dy(dy, g)
    y = as_float_array("y", y, nd + 2, _layout(nd))
    same_dtype(dy=dy, x=x, y=y)
    if y.shape != dy.shape:
        raise ValueError(f"y must be the forward output, of shape {dy.shape}; got {y.shape}")
    dx = buffers.empty((g.N, g.C, g.H, g.W), dy.dtype)
    kernels_for(device).lppool2d_backward(dx, _as4d(dy, nd), _as4d(x, nd), _as4d(y, nd), p,
                                          *g.window_args())
    return dx.reshape(g.in_shape)


def lp_pool2d(x, p, kernel_size, stride=None, padding=0, ceil_mode=False, *, device="cpu"):
    """x (N, C, H, W) -> y (N, C, OH, OW) = (sum over window of |x|^p)^(1/p)."""
    return _lp(2, x, p, kernel_size, stride, padding, ceil_mode, device)


def lp_pool1d(x, p, kernel_size, stride=None, padding=0, ceil_mode=False, *, device="cpu"):
    return _lp(1, x, p, kernel_size, stride, padding, ceil_mode, device)


def lp_pool2d_backward(dy, x, y, p, kernel_size, stride=None, padding=0, ceil_mode=False, *,
                       device="cpu"):
    """dL/dx given the forward input x and output y."""
    return _lp_backward(2, dy, x, y, p, kernel_size, stride, padding, ceil_mode, device)


def lp_pool1d_backward(dy, x, y, p, kernel_size, stride=None, padding=0, ceil_mode=False, *,
                       device="cpu"):
    return _lp_backward(1, dy, x, y, p, kernel_size, stride, padding, ceil_mode, device)


# ------------------------------------------------------------------------------------------- global

def _check_kind(kind):
    if kind not in GLOBAL_KINDS:
        raise ValueError(f"global pooling kind {kind!r} is unknown; use one of "
                         f"{', '.join(GLOBAL_KINDS)}")
    return kind


def global_pool(x, kind="avg", *, return_indices=False, device="cpu"):
    """x (N, C, L) or (N, C, H, W) -> y (N, C): max, mean ('avg') or sum of each channel."""
    _check_kind(kind)
    nd = x.ndim - 2 if isinstance(x, np.ndarray) and x.ndim in (3, 4) else 2
    x = as_float_array("x", x, nd + 2, _layout(nd))
    N, C = x.shape[:2]
    y = np.empty((N, C), dtype=x.dtype)
    idx = np.zeros((N, C), dtype=np.int64)
    kernels_for(device).global_pool2d_forward(y, idx, _as4d(x, nd), kind)
    return (y, idx) if return_indices else y


def global_pool_backward(dy, idx, input_shape, kind="avg", *, device="cpu"):
    """dL/dx of the input's shape from dy (N, C); idx from the forward pass (used by 'max')."""
    _check_kind(kind)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (3, 4):
        raise ValueError(f"input_shape must be (N, C, L) or (N, C, H, W), got {input_shape}")
    dy = as_float_array("dy", dy, 2, "(N, C)")
    if dy.shape != input_shape[:2]:
        raise ValueError(f"dy has shape {dy.shape}, expected {input_shape[:2]}")
    plane = int(np.prod(input_shape[2:]))
    if kind == "max":
        if idx is None:
            raise ValueError("global max pooling's gradient needs idx from the forward pass "
                             "(return_indices=True)")
        idx = _check_idx(idx, dy.shape, plane)
    else:
        idx = np.zeros(dy.shape, dtype=np.int64)   # unused by 'avg' and 'sum'
    shape4 = input_shape if len(input_shape) == 4 else input_shape[:2] + (1,) + input_shape[2:]
    dx = buffers.empty(shape4, dy.dtype)
    kernels_for(device).global_pool2d_backward(dx, dy, idx, kind)
    return dx.reshape(input_shape)
