"""Layers on the numconv ops. Conv1d and Conv2d (and the 1D/2D pools) are siblings through one
rank-generic class, as in Keras and tinygrad: only the number of spatial dimensions differs.

Parameter names and layouts are PyTorch's (weight (O, C/groups, *k), bias (O,); Linear weight
(out, in); BatchNorm weight/bias/running_mean/running_var/num_batches_tracked).

Every layer runs on the GPU when its input is a device array (after `model.to("cuda")`): the
activations, Linear, batch norm, LRN, dropout and the loss through `numconv.ops.nn`, which
dispatches on its arguments, convolution and pooling through `numconv.nn.device`. Host inputs take
the CPU path, unchanged.
"""
import numpy as np

from numconv import ops
from numconv.nn import device as dev
from numconv.nn import init as initializers
from numconv.nn.module import Module
from numconv.ops import nn as F
from numconv.ops._args import int_tuple


# ------------------------------------------------------------------------------------- conv

class _ConvNd(Module):
    nd = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, init="kaiming", rng=None, dtype=np.float32):
        super().__init__()
        nd = self.nd
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = int_tuple("kernel_size", kernel_size, nd)
        self.stride = int_tuple("stride", stride, nd)
        self.dilation = int_tuple("dilation", dilation, nd)
        self.padding = padding
        rng = rng if rng is not None else np.random.default_rng(0)
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.add_param("weight", initializers.make(init, shape, rng, dtype))
        if bias:
            fan_in = shape[1] * int(np.prod(self.kernel_size))
            self.add_param("bias", initializers.bias(init, out_channels, fan_in, rng, dtype))
        self._x = None

    def _opts(self):
        return dict(stride=self.stride if self.nd == 2 else self.stride[0], padding=self.padding,
                    dilation=self.dilation if self.nd == 2 else self.dilation[0],
                    groups=self.groups)

    def forward(self, x):
        self._x = x
        w, b = self.params["weight"], self.params.get("bias")
        if dev.on_gpu(x) or dev.on_gpu(w):
            dev.same_place(x=x, weight=w)
            return dev.conv_forward(self.nd, x, w, b, **self._opts())
        f = ops.conv2d if self.nd == 2 else ops.conv1d
        return f(x, w, b, device=self.device, **self._opts())

    def backward(self, dy):
        x = self._x
        if dev.on_gpu(dy):
            w = self.params["weight"]
            F.accumulate(self.grads["weight"],
                         dev.conv_backward_weight(self.nd, dy, x, w.shape, **self._opts()))
            if "bias" in self.params:
                F.accumulate(self.grads["bias"], dev.conv_backward_bias(self.nd, dy))
            if not self.needs_input_grad:
                return None
            return dev.conv_backward_input(self.nd, dy, w, x.shape, **self._opts())
        k = self.kernel_size if self.nd == 2 else self.kernel_size[0]
        if self.nd == 2:
            bx, bw, bb = ops.conv2d_backward_input, ops.conv2d_backward_weight, \
                ops.conv2d_backward_bias
        else:
            bx, bw, bb = ops.conv1d_backward_input, ops.conv1d_backward_weight, \
                ops.conv1d_backward_bias
        self.grads["weight"] += bw(dy, x, k, device=self.device, **self._opts())
        if "bias" in self.params:
            self.grads["bias"] += bb(dy, device=self.device)
        if not self.needs_input_grad:
            return None
        return bx(dy, self.params["weight"], x.shape, device=self.device, **self._opts())

    needs_input_grad = True   # the first layer of a network can skip its input gradient

    def _geometry(self, in_shape):
        return ops.conv_geometry(self.nd, (1,) + tuple(in_shape),
                                 (self.out_channels, self.in_channels // self.groups)
                                 + self.kernel_size, **self._opts())

    def out_shape(self, in_shape):
        return self._geometry(in_shape).out_shape[1:]

    def macs(self, in_shape):
        out = self.out_shape(in_shape)
        return int(np.prod(out)) * (self.in_channels // self.groups) * int(np.prod(self.kernel_size))

    def window_for(self, in_shape):
        g = self._geometry(in_shape)
        pads = g.pads if self.nd == 2 else g.pads[1:]
        return tuple(((k - 1) * d + 1, s, p[0]) for k, d, s, p in
                     zip(self.kernel_size, self.dilation, self.stride, pads))


class Conv2d(_ConvNd):
    nd = 2


class Conv1d(_ConvNd):
    nd = 1


# ------------------------------------------------------------------------------------- pools

class _PoolNd(Module):
    nd = 2
    kind = "max"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 p=2.0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.p = p
        self._cache = None

    def _win(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode)

    def forward(self, x):
        two = self.nd == 2
        if dev.on_gpu(x):
            y, idx = dev.pool_forward(self.nd, self.kind, x, p=self.p,
                                      count_include_pad=self.count_include_pad, **self._win())
            self._cache = (x.shape, idx) if idx is not None else (x, y)
            return y
        if self.kind == "max":
            y, idx = (ops.max_pool2d if two else ops.max_pool1d)(
                x, return_indices=True, device=self.device, **self._win())
            self._cache = (x.shape, idx)
        elif self.kind == "avg":
            y = (ops.avg_pool2d if two else ops.avg_pool1d)(
                x, count_include_pad=self.count_include_pad, device=self.device, **self._win())
            self._cache = (x.shape,)
        else:
            y = (ops.lp_pool2d if two else ops.lp_pool1d)(x, self.p, device=self.device,
                                                          **self._win())
            self._cache = (x, y)
        return y

    def backward(self, dy):
        two = self.nd == 2
        if dev.on_gpu(dy):
            a, b = self._cache
            if dev.on_gpu(a):     # avg and lp pooling cached (x, y)
                return dev.pool_backward(self.nd, self.kind, dy, a.shape, x=a, y=b, p=self.p,
                                         count_include_pad=self.count_include_pad, **self._win())
            return dev.pool_backward(self.nd, self.kind, dy, a, idx=b, **self._win())
        if self.kind == "max":
            shape, idx = self._cache
            return (ops.max_pool2d_backward if two else ops.max_pool1d_backward)(
                dy, idx, shape, device=self.device, **self._win())
        if self.kind == "avg":
            return (ops.avg_pool2d_backward if two else ops.avg_pool1d_backward)(
                dy, self._cache[0], count_include_pad=self.count_include_pad, device=self.device,
                **self._win())
        x, y = self._cache
        return (ops.lp_pool2d_backward if two else ops.lp_pool1d_backward)(
            dy, x, y, self.p, device=self.device, **self._win())

    def _geometry(self, in_shape):
        return ops.pool_geometry(self.nd, (1,) + tuple(in_shape), **self._win())

    def out_shape(self, in_shape):
        return self._geometry(in_shape).out_shape[1:]

    def macs(self, in_shape):
        return 0

    def window_for(self, in_shape):
        g = self._geometry(in_shape)
        ks, ss, ps = g.kernel, g.stride, g.pads
        if self.nd == 1:
            ks, ss, ps = ks[1:], ss[1:], ps[1:]
        return tuple((k, s, p[0]) for k, s, p in zip(ks, ss, ps))


class MaxPool2d(_PoolNd):
    nd, kind = 2, "max"


class MaxPool1d(_PoolNd):
    nd, kind = 1, "max"


class AvgPool2d(_PoolNd):
    nd, kind = 2, "avg"


class AvgPool1d(_PoolNd):
    nd, kind = 1, "avg"


class LPPool2d(_PoolNd):
    nd, kind = 2, "lp"

    def __init__(self, p, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode, p=p)


class LPPool1d(_PoolNd):
    nd, kind = 1, "lp"

    def __init__(self, p, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode, p=p)


class GlobalPool(Module):
    """(N, C, ...) -> (N, C): max, average or sum over every position of each channel."""

    def __init__(self, kind="avg"):
        super().__init__()
        if kind not in ops.GLOBAL_KINDS:
            raise ValueError(f"global pooling kind {kind!r} is unknown; use one of "
                             f"{', '.join(ops.GLOBAL_KINDS)}")
        self.kind = kind

    def forward(self, x):
        if dev.on_gpu(x):
            y, idx = dev.global_pool(x, self.kind)
        else:
            y, idx = ops.global_pool(x, self.kind, return_indices=True, device=self.device)
        self._cache = (x.shape, idx)
        return y

    def backward(self, dy):
        shape, idx = self._cache
        if dev.on_gpu(dy):
            return dev.global_pool_backward(dy, idx, shape, self.kind)
        return ops.global_pool_backward(dy, idx, shape, self.kind, device=self.device)

    def out_shape(self, in_shape):
        return (in_shape[0],)

    def window_for(self, in_shape):
        return tuple((n, n, 0) for n in in_shape[1:])   # one window covering everything


# ------------------------------------------------------------------------------- activations

class ReLU(Module):
    def forward(self, x):
        self._y = F.relu_forward(x)
        return self._y

    def backward(self, dy):
        return F.relu_backward(dy, self._y)

    def backward_inplace(self, dy):
        """`backward`, overwriting dy (a host array the caller owns)."""
        return F.relu_backward(dy, self._y, inplace=True)


class Tanh(Module):
    """tanh, or LeCun's scaled A tanh(S a) with A = 1.7159, S = 2/3 when `lecun=True`."""

    def __init__(self, lecun=False):
        super().__init__()
        self.scale, self.slope = (F.LECUN_A, F.LECUN_S) if lecun else (1.0, 1.0)

    def forward(self, x):
        self._y = F.tanh_forward(x, self.scale, self.slope)
        return self._y

    def backward(self, dy):
        return F.tanh_backward(dy, self._y, self.scale, self.slope)


class Sigmoid(Module):
    def forward(self, x):
        self._y = F.sigmoid_forward(x)
        return self._y

    def backward(self, dy):
        return F.sigmoid_backward(dy, self._y)


class HardTanh(Module):
    def forward(self, x):
        self._x = x
        return F.hardtanh_forward(x)

    def backward(self, dy):
        return F.hardtanh_backward(dy, self._x)

    def backward_inplace(self, dy):
        """`backward`, overwriting dy (a host array the caller owns)."""
        return F.hardtanh_backward(dy, self._x, inplace=True)


class Identity(Module):
    def forward(self, x):
        return x

    def backward(self, dy):
        return dy


# ----------------------------------------------------------------------------------- dense

class Flatten(Module):
    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], x.size // x.shape[0]) if dev.on_gpu(x) else \
            x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._shape)

    def out_shape(self, in_shape):
        return (int(np.prod(in_shape)),)


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, init="kaiming", rng=None,
                 dtype=np.float32):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        self.in_features, self.out_features = in_features, out_features
        self.add_param("weight", initializers.make(init, (out_features, in_features), rng, dtype))
        if bias:
            self.add_param("bias", initializers.bias(init, out_features, in_features, rng, dtype))

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear expects input (N, {self.in_features}), got {x.shape}")
        self._x = x
        return F.linear_forward(x, self.params["weight"], self.params.get("bias"))

    def backward(self, dy):
        dx, dw, db = F.linear_backward(dy, self._x, self.params["weight"])
        F.accumulate(self.grads["weight"], dw)
        if "bias" in self.params:
            F.accumulate(self.grads["bias"], db)
        return dx

    def out_shape(self, in_shape):
        if tuple(in_shape) != (self.in_features,):
            raise ValueError(f"Linear expects {self.in_features} input features, gets "
                             f"{int(np.prod(in_shape))} (input shape {tuple(in_shape)})")
        return (self.out_features,)

    def macs(self, in_shape):
        return self.in_features * self.out_features


class Dropout(Module):
    """Inverted dropout. Masks come from a counter-based generator keyed by (seed, step), so a run
    resumed at step s draws exactly the masks the uninterrupted run drew; the trainer sets `step`."""

    def __init__(self, p=0.5, seed=0):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.seed, self.step = p, seed, 0

    def forward(self, x):
        if not self.training or self.p == 0:
            self._mask = None
            return x
        self._mask = F.dropout_mask(x.shape, self.p, self.seed, self.step, x.dtype,
                                    device="cuda" if dev.on_gpu(x) else "cpu")
        return F.multiply(x, self._mask)

    def backward(self, dy):
        return dy if self._mask is None else F.multiply(dy, self._mask)


class BatchNorm(Module):
    """Batch normalisation over (N, C, ...): batch statistics in training (and running averages
    updated with `momentum`, PyTorch's convention), running statistics in eval."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.add_param("weight", np.ones(num_features, dtype))
        self.add_param("bias", np.zeros(num_features, dtype))
        self.add_buffer("running_mean", np.zeros(num_features, dtype))
        self.add_buffer("running_var", np.ones(num_features, dtype))
        self.add_buffer("num_batches_tracked", np.zeros((), np.int64))

    def forward(self, x):
        if self.training:
            mean, var = F.batch_statistics(x)
            F.batchnorm_update_running(self.buffers["running_mean"], self.buffers["running_var"],
                                       mean, var, self.momentum, x.size // x.shape[1])
            self.buffers["num_batches_tracked"][...] += 1
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        y, self._xhat, self._inv = F.batchnorm_forward(x, self.params["weight"],
                                                       self.params["bias"], mean, var, self.eps)
        self._mode = self.training
        return y if dev.on_gpu(y) else y.astype(x.dtype, copy=False)

    def backward(self, dy):
        dx, dg, db = F.batchnorm_backward(dy, self._xhat, self.params["weight"], self._inv,
                                          self._mode)
        F.accumulate(self.grads["weight"], dg)
        F.accumulate(self.grads["bias"], db)
        return dx


BatchNorm2d = BatchNorm
BatchNorm1d = BatchNorm


class LocalResponseNorm(Module):
    """AlexNet's LRN: b_c = a_c / (k + alpha sum_{|c'-c| <= n/2} a_c'^2)^beta, the paper's
    formula (k=2, n=5, alpha=1e-4, beta=0.75). PyTorch's LocalResponseNorm divides alpha by n:
    the equivalent there is LocalResponseNorm(n, alpha * n, beta, k)."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        self._x = x
        y, self._s = F.lrn_forward(x, self.size, self.alpha, self.beta, self.k)
        return y if dev.on_gpu(y) else y.astype(x.dtype, copy=False)

    def backward(self, dy):
        return F.lrn_backward(dy, self._x, self._s, self.size, self.alpha, self.beta)


# ----------------------------------------------------------------------------------- loss

class SoftmaxCrossEntropy:
    """Mean softmax cross-entropy over integer labels, with optional label smoothing."""

    def __init__(self, label_smoothing=0.0):
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def __call__(self, logits, labels, weights=None):
        """-> (loss, dlogits)."""
        return F.softmax_cross_entropy(logits, labels, self.label_smoothing, weights)


def receptive_field_step(rf, window):
    """Receptive field after one layer: rf is (size, jump, start) per spatial dimension, window
    (extent, stride, pad_before) per dimension. size grows by (extent - 1) * jump, the jump
    multiplies by the stride, and the centre of the first unit moves by ((extent - 1)/2 - pad) * jump."""
    out = []
    for (size, jump, start), (extent, stride, pad) in zip(rf, window):
        out.append((size + (extent - 1) * jump, jump * stride,
                    start + ((extent - 1) / 2 - pad) * jump))
    return tuple(out)


__all__ = [
    "Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "LPPool1d", "LPPool2d",
    "GlobalPool", "ReLU", "Tanh", "Sigmoid", "HardTanh", "Identity", "Flatten", "Linear", "Dropout",
    "BatchNorm", "BatchNorm1d", "BatchNorm2d", "LocalResponseNorm", "SoftmaxCrossEntropy",
    "receptive_field_step",
]
