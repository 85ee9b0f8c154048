"""Convolution, validated: conv1d/conv2d forward and the three gradients, correlation or true
convolution.

Deep-learning "convolution" is cross-correlation: the kernel slides over the input unflipped,

    correlate:  S(i, j) = sum_{m, n} I(i + m, j + n) K(m, n)
    convolve:   S(i, j) = sum_{m, n} I(i - m, j - n) K(m, n)   (the mathematical operator)

and true convolution equals correlation with the kernel rotated by 180 degrees. With the course's
worked example, correlating the 5x5 input [[3,3,2,1,0],[0,0,1,3,1],[3,1,2,2,3],[2,0,0,2,2],
[2,0,0,0,1]] with K = [[0,1,2],[2,2,0],[0,1,2]] gives [[12,12,17],[10,17,19],[9,6,14]]; convolving
it (K flipped to [[2,1,0],[0,2,2],[2,1,0]]) gives a different map. `conv2d` correlates (as PyTorch,
TensorFlow and every CNN paper do); `convolve2d` convolves, and both share one set of kernels.

Layouts follow PyTorch: x (N, C, H, W) or (N, C, L), w (O, C // groups, KH, KW) or (O, C // groups,
K), b (O,). Padding: an int, one int per spatial dimension, one (before, after) pair per dimension,
or 'valid' / 'same' / 'full' (see `numconv.ops._args.resolve_padding`; 'same' also works for
stride > 1 and splits odd totals as TensorFlow does, the extra row/column after).

Backprop through a convolution (what the gradient functions compute):
- the input gradient is the *full* convolution of dy with the filter rotated by 180 degrees
  (for strides > 1, with dy spread out by the stride);
- the filter gradient is the correlation of the input with dy;
- the bias gradient is dy summed over batch and positions.
"""
import functools
from dataclasses import dataclass

import numpy as np

from numconv.ops import _buffers as buffers
from numconv.ops._args import as_float_array, int_tuple, output_size, resolve_padding, same_dtype
from numconv.ops._device import kernels_for


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about one convolution that follows from shapes and options (2D form)."""
    nd: int            # 1 or 2: the caller's number of spatial dimensions
    N: int
    C: int
    H: int
    W: int
    O: int
    KH: int
    KW: int
    stride: tuple      # (sh, sw)
    pads: tuple        # ((pt, pb), (pl, pr))
    dilation: tuple    # (dh, dw)
    groups: int
    OH: int
    OW: int

    @property
    def out_shape(self):
        return (self.N, self.O, self.OW) if self.nd == 1 else (self.N, self.O, self.OH, self.OW)

    @property
    def in_shape(self):
        return (self.N, self.C, self.W) if self.nd == 1 else (self.N, self.C, self.H, self.W)

    @property
    def weight_shape(self):
        Cg = self.C // self.groups
        return (self.O, Cg, self.KW) if self.nd == 1 else (self.O, Cg, self.KH, self.KW)

    def kernel_args(self):
        (sh, sw), ((pt, _), (pl, _)), (dh, dw) = self.stride, self.pads, self.dilation
        return sh, sw, pt, pl, dh, dw, self.groups


def _layout(nd, what):
    return {("x", 1): "(N, C, L)", ("x", 2): "(N, C, H, W)", ("w", 1): "(O, C/groups, K)",
            ("w", 2): "(O, C/groups, KH, KW)"}[(what, nd)]


def _check_groups(groups):
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"groups must be a positive int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return int(groups)


def conv_geometry(nd, x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1):
    """Validate shapes and options and derive the output size. Raises ValueError/TypeError.
    Options of plain ints, strings and tuples of them (what layers pass) are looked up in a
    cache of the geometries already derived: a training step asks the same few questions."""
    args = (nd, tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups)
    if all(_plain(a) for a in args[1:]):
        return _cached_geometry(*args)
    return _geometry(*args)


def _plain(v):
    """Whether v is an int, a str or a tuple of such (nested once): a key that compares equal
    only to a value of the same types (True == 1, but stride=True is an error)."""
    t = type(v)
    if t is int or t is str:
        return True
    return t is tuple and all(type(e) is int or type(e) is str
                              or (type(e) is tuple and all(type(f) is int for f in e)) for e in v)


@functools.lru_cache(maxsize=256)
def _cached_geometry(nd, x_shape, w_shape, stride, padding, dilation, groups):
    return _geometry(nd, x_shape, w_shape, stride, padding, dilation, groups)


def _geometry(nd, x_shape, w_shape, stride, padding, dilation, groups):
    stride = int_tuple("stride", stride, nd)
    dilation = int_tuple("dilation", dilation, nd)
    groups = _check_groups(groups)
    N, C, *spatial = x_shape
    O, Cg, *kernel = w_shape
    for k in kernel:
        if k < 1:
            raise ValueError(f"kernel size must be >= 1, got weight shape {tuple(w_shape)}")
    if C % groups:
        raise ValueError(f"groups={groups} does not divide the {C} input channels; choose groups "
                         f"among the divisors of {C}")
    if O % groups:
        raise ValueError(f"groups={groups} does not divide the {O} output channels (weight "
                         f"shape {tuple(w_shape)}); make O a multiple of groups")
    if Cg * groups != C:
        raise ValueError(f"channel mismatch: x has {C} channels, so with groups={groups} the weight "
                         f"needs {C // groups} input channels (shape[1]), but its shape is "
                         f"{tuple(w_shape)}")
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    pads = resolve_padding(padding, spatial, extents, stride)
    outs = [output_size(f"dimension {i}", n, p, e, s)
            for i, (n, p, e, s) in enumerate(zip(spatial, pads, extents, stride))]
    if nd == 1:
        return ConvGeometry(1, N, C, 1, spatial[0], O, 1, kernel[0], (1, stride[0]),
                            ((0, 0), pads[0]), (1, dilation[0]), int(groups), 1, outs[0])
    return ConvGeometry(2, N, C, spatial[0], spatial[1], O, kernel[0], kernel[1], stride, pads,
                        dilation, int(groups), outs[0], outs[1])


def _as4d(a, nd):
    return a[:, :, None, :] if nd == 1 else a


def _flip(w):
    return np.ascontiguousarray(w[..., ::-1, ::-1])


def _check_dy(dy, geom):
    dy = as_float_array("dy", dy, geom.nd + 2, _layout(geom.nd, "x").replace("C", "O"))
    if dy.shape != geom.out_shape:
        raise ValueError(f"dy has shape {dy.shape} but the convolution's output has shape "
                         f"{geom.out_shape}; pass the gradient of this op's output")
    return dy


# ----------------------------------------------------------------------------------------------
# Rank-generic implementations (1D runs as 2D with H = 1: one set of kernels)
# ----------------------------------------------------------------------------------------------

def _forward(nd, x, w, b, stride, padding, dilation, groups, flip, device):
    x = as_float_array("x", x, nd + 2, _layout(nd, "x"))
    w = as_float_array("w", w, nd + 2, _layout(nd, "w"))
    if b is not None:
        b = as_float_array("b", b, 1, "(O,)")
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"b has {b.shape[0]} entries but w has {w.shape[0]} output channels; "
                             f"give one bias per output channel")
    same_dtype(x=x, w=w, b=b)
    geom = conv_geometry(nd, x.shape, w.shape, stride, padding, dilation, groups)
    w4 = _as4d(w, nd)
    if flip:
        w4 = _flip(w4)
    y = buffers.empty((geom.N, geom.O, geom.OH, geom.OW), x.dtype)
    kernels_for(device).conv2d_forward(y, _as4d(x, nd), w4, b, *geom.kernel_args())
    return y.reshape(geom.out_shape)


def _backward_input(nd, dy, w, input_shape, stride, padding, dilation, groups, flip, device):
    w = as_float_array("w", w, nd + 2, _layout(nd, "w"))
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != nd + 2:
        raise ValueError(f"input_shape must be the forward input's shape {_layout(nd, 'x')}, "
                         f"got {input_shape}")
    geom = conv_geometry(nd, input_shape, w.shape, stride, padding, dilation, groups)
    dy = _check_dy(dy, geom)
    same_dtype(dy=dy, w=w)
    w4 = _as4d(w, nd)
    if flip:
        w4 = _flip(w4)
    dx = buffers.empty((geom.N, geom.C, geom.H, geom.W), dy.dtype)
    kernels_for(device).conv2d_backward_input(dx, _as4d(dy, nd), w4, *geom.kernel_args())
    return dx.reshape(geom.in_shape)


def _backward_weight(nd, dy, x, kernel_size, stride, padding, dilation, groups, flip, device):
    x = as_float_array("x", x, nd + 2, _layout(nd, "x"))
    dy = as_float_array("dy", dy, nd + 2, _layout(nd, "x").replace("C", "O"))
    kernel = int_tuple("kernel_size", kernel_size, nd)
    groups = _check_groups(groups)
    w_shape = (dy.shape[1], x.shape[1] // groups) + kernel
    geom = conv_geometry(nd, x.shape, w_shape, stride, padding, dilation, groups)
    dy = _check_dy(dy, geom)
    same_dtype(dy=dy, x=x)
    dw4 = np.empty((geom.O, geom.C // geom.groups, geom.KH, geom.KW), dtype=x.dtype)
    kernels_for(device).conv2d_backward_weight(dw4, _as4d(dy, nd), _as4d(x, nd),
                                               *geom.kernel_args())
    if flip:
        dw4 = _flip(dw4)
    return dw4.reshape(geom.weight_shape)


def _backward_bias(nd, dy, device):
    dy = as_float_array("dy", dy, nd + 2, _layout(nd, "x").replace("C", "O"))
    db = np.empty(dy.shape[1], dtype=dy.dtype)
    kernels_for(device).conv2d_backward_bias(db, _as4d(dy, nd))
    return db


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, device="cpu"):
    """Cross-correlation, the deep-learning 'convolution'. x (N, C, H, W), w (O, C/groups, KH, KW),
    b (O,) or None -> y (N, O, OH, OW)."""
    return _forward(2, x, w, b, stride, padding, dilation, groups, False, device)


def convolve2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, device="cpu"):
    """True convolution (the kernel flipped in both spatial axes). Shapes as `conv2d`."""
    return _forward(2, x, w, b, stride, padding, dilation, groups, True, device)


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, device="cpu"):
    """Cross-correlation over one axis. x (N, C, L), w (O, C/groups, K), b (O,) -> y (N, O, OL)."""
    return _forward(1, x, w, b, stride, padding, dilation, groups, False, device)


def convolve1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, device="cpu"):
    """True convolution over one axis (the kernel reversed). Shapes as `conv1d`."""
    return _forward(1, x, w, b, stride, padding, dilation, groups, True, device)


def conv2d_backward_input(dy, w, input_shape, stride=1, padding=0, dilation=1, groups=1, *,
                          flip=False, device="cpu"):
    """dL/dx (N, C, H, W) from dy (N, O, OH, OW); `flip=True` for `convolve2d`."""
    return _backward_input(2, dy, w, input_shape, stride, padding, dilation, groups, flip, device)


def conv2d_backward_weight(dy, x, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                           flip=False, device="cpu"):
    """dL/dw (O, C/groups, KH, KW) from dy (N, O, OH, OW) and x (N, C, H, W)."""
    return _backward_weight(2, dy, x, kernel_size, stride, padding, dilation, groups, flip, device)


def conv2d_backward_bias(dy, *, device="cpu"):
    """dL/db (O,) from dy (N, O, OH, OW)."""
    return _backward_bias(2, dy, device)


def conv1d_backward_input(dy, w, input_shape, stride=1, padding=0, dilation=1, groups=1, *,
                          flip=False, device="cpu"):
    """dL/dx (N, C, L) from dy (N, O, OL); `flip=True` for `convolve1d`."""
    return _backward_input(1, dy, w, input_shape, stride, padding, dilation, groups, flip, device)


def conv1d_backward_weight(dy, x, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                           flip=False, device="cpu"):
    """dL/dw (O, C/groups, K) from dy (N, O, OL) and x (N, C, L)."""
    return _backward_weight(1, dy, x, kernel_size, stride, padding, dilation, groups, flip, device)


def conv1d_backward_bias(dy, *, device="cpu"):
    """dL/db (O,) from dy (N, O, OL)."""
    return _backward_bias(1, dy, device)


# ----------------------------------------------------------------------------------------------
# conv1d followed by max over positions (max-over-time pooling): the backward at the winners
# ----------------------------------------------------------------------------------------------

def conv1d_max_backward(dm, idx, x, w, stride=1, padding=0, dilation=1, *, device="cpu"):
    """The gradients of m = max over positions of conv1d(x, w, b), Kim (2014)'s max-over-time
    pooling: dm (N, O) = dL/dm, idx (N, O) the winning output positions (from
    `global_pool(y, 'max', return_indices=True)`), x (N, C, L) and w (O, C, K) the convolution's
    input and weight -> (dx (N, C, L), dw (O, C, K), db (O,)).

    The same numbers as `conv1d_backward_*` applied to `global_pool_backward(dm, idx, y.shape,
    'max')`, but only the winning window of each (n, o) is visited: N*O*C*K multiply-adds per
    gradient instead of OL times as many. Channels-last memory is what it reads and writes: x
    passed as `xt.transpose(0, 2, 1)` of an (N, L, C) array is used without a copy, and dx comes
    back as such a view (dx.transpose(0, 2, 1) is C-contiguous). groups=1 only."""
    for name, a in (("x", x), ("w", w)):
        if isinstance(a, np.ndarray) and a.ndim != 3:
            raise ValueError(f"{name} must have 3 dimensions {_layout(1, name)}, got shape "
                             f"{a.shape}")
    xt = as_float_array("x", x.transpose(0, 2, 1) if isinstance(x, np.ndarray) else x, 3,
                        "(N, C, L)")
    w = as_float_array("w", w, 3, _layout(1, "w"))
    same_dtype(x=xt, w=w)
    geom = conv_geometry(1, (xt.shape[0], xt.shape[2], xt.shape[1]), w.shape, stride, padding,
                         dilation, 1)
    dm = as_float_array("dm", dm, 2, "(N, O)")
    if dm.shape != (geom.N, geom.O):
        raise ValueError(f"dm has shape {dm.shape} but max pooling over the convolution's output "
                         f"gives {(geom.N, geom.O)}; pass the gradient of the pooled output")
    same_dtype(x=xt, dm=dm)
    if not isinstance(idx, np.ndarray) or idx.dtype.kind not in "iu" or idx.shape != dm.shape:
        got = f"{idx.dtype} array of shape {idx.shape}" if isinstance(idx, np.ndarray) \
            else type(idx).__name__
        raise ValueError(f"idx must be the integer winner positions returned by "
                         f"global_pool(y, 'max', return_indices=True), of shape {dm.shape}; "
                         f"got {got}")
    if idx.min() < 0 or idx.max() >= geom.OW:
        raise ValueError(f"idx holds positions outside the convolution's {geom.OW} outputs "
                         f"(min {idx.min()}, max {idx.max()}); pass the winners of this "
                         f"convolution's output")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    (_, s), ((_, _), (pl, _)), (_, d) = geom.stride, geom.pads, geom.dilation
    wt = np.ascontiguousarray(w.transpose(0, 2, 1))
    dxt = np.empty_like(xt)
    dwt = np.empty_like(wt)
    db = np.empty(geom.O, dtype=xt.dtype)
    kernels_for(device).conv1d_max_backward(dxt, dwt, db, dm, idx, xt, wt, s, pl, d)
    return dxt.transpose(0, 2, 1), np.ascontiguousarray(dwt.transpose(0, 2, 1)), db
