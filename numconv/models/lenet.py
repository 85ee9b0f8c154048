"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
recognition", section II.B and Fig. 2): 32x32 input, C1 6@5x5, S2, C3 16@5x5, S4, C5 120@5x5, F6 84,
output 10. Children are named after the paper's layers (c1, s2, c3, s4, c5, f6, output).

Two variants:

- modern (default): ReLU, 2x2 max-pooling, a linear output layer: 61,706 parameters.
- classic=True: as published. Units compute A tanh(S a) (appendix A); S2 and S4 add each 2x2
  window's four inputs, multiply by a trainable coefficient and add a trainable bias per map
  (`Subsampling`); C3 connects its 16 maps to the 6 maps of S2 as Table I says (`MaskedConv2d`);
  weights and biases start uniform in +-2.4 / fan-in (section V.A / appendix C). C1..F6 hold exactly
  60,000 trainable parameters; the linear 10-way output (here instead of the paper's Euclidean RBF
  units, whose parameters were fixed) adds 850.
"""
import numpy as np

from numconv import ops
from numconv.nn import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Tanh
from numconv.nn import device as dev
from numconv.ops import nn as F

from numconv.models._common import Network, check_input, scaled

# Table I: the S2 maps (columns of the table's rows) each C3 map reads. The first six read three
# contiguous maps, the next six four contiguous, the next three four discontinuous, the last all.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


def c3_mask(kernel_size=5):
    """(16, 6, k, k) 0/1 mask of Table I: mask[o, c] = 1 where C3 map o reads S2 map c."""
    mask = np.zeros((16, 6, kernel_size, kernel_size), dtype=bool)
    for o, inputs in enumerate(C3_TABLE):
        mask[o, list(inputs)] = True
    return mask


class MaskedConv2d(Conv2d):
    """A Conv2d whose weight is multiplied by a fixed 0/1 mask in the forward pass and whose weight
    gradient is masked in the backward pass, so the masked-out entries never act and never learn.
    `param_masks` tells parameter counting (numconv.describe, numconv.models.count_parameters) to
    count only the kept entries."""

    def __init__(self, in_channels, out_channels, kernel_size, mask, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.params["weight"].shape:
            raise ValueError(f"mask shape {mask.shape} must equal the weight shape "
                             f"{self.params['weight'].shape}")
        self.mask = mask
        self.param_masks = {"weight": mask}
        self.params["weight"][~mask] = 0

    def _mask_like(self, w):
        """The mask as an array of w's dtype on w's device (uploaded once, then kept)."""
        if not dev.on_gpu(w):
            return self.mask
        if getattr(self, "_device_mask", None) is None:
            self._device_mask = dev.to_device(self.mask.astype(w.dtype))
        return self._device_mask

    def forward(self, x):
        self._x = x
        w = self.params["weight"]
        if dev.on_gpu(x) or dev.on_gpu(w):
            dev.same_place(x=x, weight=w)
            self._w = F.multiply(w, self._mask_like(w))
            return dev.conv_forward(2, x, self._w, self.params.get("bias"), **self._opts())
        self._w = w * self.mask
        return ops.conv2d(x, self._w, self.params.get("bias"), device=self.device, **self._opts())

    def backward(self, dy):
        x, opts = self._x, self._opts()
        if dev.on_gpu(dy):
            w = self.params["weight"]
            dw = dev.conv_backward_weight(2, dy, x, w.shape, **opts)
            F.accumulate(self.grads["weight"], F.multiply(dw, self._mask_like(w)))
            if "bias" in self.params:
                F.accumulate(self.grads["bias"], dev.conv_backward_bias(2, dy))
            if not self.needs_input_grad:
                return None
            return dev.conv_backward_input(2, dy, self._w, x.shape, **opts)
        dw = ops.conv2d_backward_weight(dy, x, self.kernel_size, device=self.device, **opts)
        self.grads["weight"] += dw * self.mask
        if "bias" in self.params:
            self.grads["bias"] += ops.conv2d_backward_bias(dy, device=self.device)
        if not self.needs_input_grad:
            return None
        return ops.conv2d_backward_input(dy, self._w, x.shape, device=self.device, **opts)

    def macs(self, in_shape):
        OH_OW = int(np.prod(self.out_shape(in_shape)[1:]))
        return OH_OW * int(np.count_nonzero(self.mask))


class Subsampling(AvgPool2d):
    """LeNet-5's S2/S4: each unit adds the k x k inputs of its window (k times k times their
    average), multiplies by its map's trainable coefficient and adds its map's trainable bias.
    Parameters 'weight' (C,) and 'bias' (C,); (N, C, H, W) -> (N, C, H/k, W/k)."""

    def __init__(self, channels, kernel_size=2, init="lecun", rng=None, dtype=np.float32):
        super().__init__(kernel_size)
        rng = rng if rng is not None else np.random.default_rng(0)
        self.area = float(kernel_size * kernel_size)
        a = 2.4 / self.area if init == "lecun" else 1.0   # fan-in: the window's inputs
        self.add_param("weight", rng.uniform(-a, a, channels).astype(dtype) if init == "lecun"
                       else np.ones(channels, dtype))
        self.add_param("bias", rng.uniform(-a, a, channels).astype(dtype) if init == "lecun"
                       else np.zeros(channels, dtype))

    def forward(self, x):
        if dev.on_gpu(x):
            return self._forward_gpu(x)
        s = super().forward(x) * self.area           # window sums
        self._s = s
        shape = (1, -1, 1, 1)
        return (s * self.params["weight"].reshape(shape)
                + self.params["bias"].reshape(shape)).astype(x.dtype, copy=False)

    # On the GPU the per-map affine s * weight + bias is batch norm's eval-mode transform with mean
    # 0 and variance 1 (eps 0, so 1 / sqrt(var + eps) is exactly 1): the same kernels give y, and in
    # the backward pass dweight = sum(dy * s), dbias = sum(dy) and ds = dy * weight.
    def _unit_statistics(self, like):
        C = self.params["weight"].shape[0]
        if getattr(self, "_unit", None) is None:
            self._unit = (dev.to_device(np.zeros(C, like.dtype)),
                          dev.to_device(np.ones(C, like.dtype)))
        return self._unit

    def _forward_gpu(self, x):
        s = F.scale(super().forward(x), self.area)      # window sums
        mean, var = self._unit_statistics(s)
        y, self._s, self._inv = F.batchnorm_forward(s, self.params["weight"], self.params["bias"],
                                                    mean, var, 0.0)
        return y

    def backward(self, dy):
        if dev.on_gpu(dy):
            ds, dw, db = F.batchnorm_backward(dy, self._s, self.params["weight"], self._inv, False)
            F.accumulate(self.grads["weight"], dw)
            F.accumulate(self.grads["bias"], db)
            return super().backward(F.scale(ds, self.area))
        self.grads["weight"] += (dy * self._s).sum(axis=(0, 2, 3)).astype(dy.dtype, copy=False)
        self.grads["bias"] += dy.sum(axis=(0, 2, 3)).astype(dy.dtype, copy=False)
        ds = dy * (self.params["weight"].reshape(1, -1, 1, 1) * self.area)
        return super().backward(ds.astype(dy.dtype, copy=False))

    def macs(self, in_shape):
        return int(np.prod(self.out_shape(in_shape)))   # one multiply by the coefficient per unit


def _lecun_rows(w, b, fan_ins, rng):
    """Re-draw each output map's weights and bias uniform in +-2.4 / (that map's fan-in)."""
    for o, fan_in in enumerate(fan_ins):
        a = 2.4 / fan_in
        w[o] = rng.uniform(-a, a, w[o].shape).astype(w.dtype)
        b[o] = rng.uniform(-a, a)


def lenet5(num_classes, in_channels, input_size, width, rng, classic=False):
    input_shape = (in_channels,) + tuple(input_size)
    if classic and width != 1.0:
        raise ValueError(f"classic LeNet-5's C3 connection table (Table I) is fixed for 6 S2 and "
                         f"16 C3 maps; use width=1 with classic=True (got width={width})")
    c1, c3, c5, f6 = (scaled(c, width) for c in (6, 16, 120, 84))
    if classic:
        init = "lecun"
        act = lambda: Tanh(lecun=True)   # noqa: E731
        conv3 = MaskedConv2d(c1, c3, 5, c3_mask(5), init=init, rng=rng)
        _lecun_rows(conv3.params["weight"], conv3.params["bias"],
                    [len(cols) * 25 for cols in C3_TABLE], rng)
        conv3.params["weight"][~conv3.mask] = 0
        body = [("c1", Conv2d(in_channels, c1, 5, init=init, rng=rng)), ("act1", act()),
                ("s2", Subsampling(c1, 2, rng=rng)), ("act2", act()),
                ("c3", conv3), ("act3", act()),
                ("s4", Subsampling(c3, 2, rng=rng)), ("act4", act()),
                ("c5", Conv2d(c3, c5, 5, init=init, rng=rng)), ("act5", act())]
    else:
        init = "kaiming"
        act = ReLU
        body = [("c1", Conv2d(in_channels, c1, 5, init=init, rng=rng)), ("act1", act()),
                ("s2", MaxPool2d(2)),
                ("c3", Conv2d(c1, c3, 5, init=init, rng=rng)), ("act3", act()),
                ("s4", MaxPool2d(2)),
                ("c5", Conv2d(c3, c5, 5, init=init, rng=rng)), ("act5", act())]
    C, H, W = check_input("lenet5", body, input_shape)
    head = [("flatten", Flatten()),
            ("f6", Linear(C * H * W, f6, init=init, rng=rng)), ("act6", act()),
            ("output", Linear(f6, num_classes, init=init, rng=rng))]
    return Network("lenet5", input_shape, num_classes, {"classic": classic}, body + head)
