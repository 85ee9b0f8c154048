"""Composite blocks: residual blocks (basic and bottleneck, with projection or parameter-free
shortcuts, or none for the 'plain' nets) and inception blocks (parallel branches concatenated on
channels). Child names follow torchvision's, so state dicts map onto its models.

Every block is a Module with `branches()`: the parallel paths it joins, each a list of
(name, module) applied in order; `join` says how: 'add' (then ReLU) or 'concat'. `numconv describe`
walks these to report shapes and receptive fields through the joins.
"""
import numpy as np

from numconv.nn import device as dev
from numconv.nn.layers import BatchNorm2d, Conv2d, ReLU
from numconv.nn.module import Module, Sequential
from numconv.ops import nn as F


class ZeroPadShortcut(Module):
    """The ResNet paper's option A: identity with stride-s subsampling, extra channels zero.
    On the GPU the subsampling x[:, :, ::s, ::s] is average pooling with a 1x1 window and stride s
    (each output is one input divided by 1: exact), and its backward pass puts dy back on that
    grid with zeros elsewhere; the extra channels are a zero block concatenated on channels."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        self._shape = x.shape
        s = self.stride
        if dev.on_gpu(x):
            sub, _ = dev.pool_forward(2, "avg", x, kernel_size=1, stride=s)
            extra = self.out_channels - self.in_channels
            if not extra:
                return sub
            zeros = dev.zeros((sub.shape[0], extra) + tuple(sub.shape[2:]), sub.dtype)
            return dev.concat_channels([sub, zeros])
        sub = x[:, :, ::s, ::s]
        y = np.zeros((x.shape[0], self.out_channels) + sub.shape[2:], dtype=x.dtype)
        y[:, :self.in_channels] = sub
        return y

    def backward(self, dy):
        s = self.stride
        if dev.on_gpu(dy):
            dsub = dy if self.out_channels == self.in_channels else \
                dev.split_channels(dy, 0, self.in_channels)
            return dev.pool_backward(2, "avg", dsub, self._shape, kernel_size=1, stride=s)
        dx = np.zeros(self._shape, dtype=dy.dtype)
        dx[:, :, ::s, ::s] = dy[:, :self.in_channels]
        return dx

    def out_shape(self, in_shape):
        s = self.stride
        return (self.out_channels,) + tuple(-(-n // s) for n in in_shape[1:])

    def window_for(self, in_shape):
        return tuple((1, self.stride, 0) for _ in in_shape[1:])


class _ResidualBlock(Module):
    """y = relu(F(x) + shortcut(x)); shortcut is identity, a projection ('downsample': 1x1 conv +
    BN, option B), zero-padding (option A), or absent (plain=True)."""
    join = "add"

    def _add_shortcut(self, in_ch, out_ch, stride, shortcut, plain, rng):
        self.plain = plain
        if plain or (stride == 1 and in_ch == out_ch):
            return
        if shortcut == "A":
            self.add("shortcut", ZeroPadShortcut(in_ch, out_ch, stride))
        else:
            self.add("downsample", Sequential(
                Conv2d(in_ch, out_ch, 1, stride=stride, bias=False, init="kaiming_out", rng=rng),
                BatchNorm2d(out_ch)))

    def _main(self):
        return [(n, m) for n, m in self.children.items() if n not in ("downsample", "shortcut")]

    def _short(self):
        return [(n, m) for n, m in self.children.items() if n in ("downsample", "shortcut")]

    def branches(self):
        paths = [self._main()]
        if not self.plain:
            paths.append(self._short())   # an empty path is the identity
        return paths

    def forward(self, x):
        out = x
        for _, m in self._main():
            out = m.forward(out)
        if not self.plain:
            short = x
            for _, m in self._short():
                short = m.forward(short)
            out = F.add(out, short)
        self._y = F.relu_forward(out)
        return self._y

    def backward(self, dy):
        d = F.relu_backward(dy, self._y)
        dmain = d
        for _, m in reversed(self._main()):
            dmain = m.backward(dmain)
        if self.plain:
            return dmain
        dshort = d
        for _, m in reversed(self._short()):
            dshort = m.backward(dshort)
        return F.add(dmain, dshort)

    def out_shape(self, in_shape):
        for _, m in self._main():
            in_shape = m.out_shape(in_shape)
        return in_shape


class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR ResNets)."""
    expansion = 1

    def __init__(self, in_ch, out_ch, stride=1, shortcut="B", plain=False, rng=None):
        super().__init__()
        self.add("conv1", Conv2d(in_ch, out_ch, 3, stride, 1, bias=False, init="kaiming_out",
                                 rng=rng))
        self.add("bn1", BatchNorm2d(out_ch))
        self.add("relu1", ReLU())
        self.add("conv2", Conv2d(out_ch, out_ch, 3, 1, 1, bias=False, init="kaiming_out", rng=rng))
        self.add("bn2", BatchNorm2d(out_ch))
        self._add_shortcut(in_ch, out_ch, stride, shortcut, plain, rng)


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50/101/152); the stride sits on the 3x3 as in
    torchvision (ResNet v1.5) — the parameter count is the same either way."""
    expansion = 4

    def __init__(self, in_ch, width, stride=1, shortcut="B", plain=False, rng=None):
        super().__init__()
        out_ch = width * 4
        self.add("conv1", Conv2d(in_ch, width, 1, bias=False, init="kaiming_out", rng=rng))
        self.add("bn1", BatchNorm2d(width))
        self.add("relu1", ReLU())
        self.add("conv2", Conv2d(width, width, 3, stride, 1, bias=False, init="kaiming_out",
                                 rng=rng))
        self.add("bn2", BatchNorm2d(width))
        self.add("relu2", ReLU())
        self.add("conv3", Conv2d(width, out_ch, 1, bias=False, init="kaiming_out", rng=rng))
        self.add("bn3", BatchNorm2d(out_ch))
        self._add_shortcut(in_ch, out_ch, stride, shortcut, plain, rng)


class Concat(Module):
    """Parallel branches on the same input, outputs concatenated on channels (inception)."""
    join = "concat"

    def __init__(self, **branches):
        super().__init__()
        for name, module in branches.items():
            self.add(name, module)

    def branches(self):
        return [[(n, m)] for n, m in self.children.items()]

    def forward(self, x):
        outs = [m.forward(x) for m in self.children.values()]
        self._sizes = [o.shape[1] for o in outs]
        if dev.on_gpu(x):
            return dev.concat_channels(outs)
        return np.concatenate(outs, axis=1)

    def backward(self, dy):
        dx, start = None, 0
        for m, size in zip(self.children.values(), self._sizes):
            part = (dev.split_channels(dy, start, size) if dev.on_gpu(dy)
                    else np.ascontiguousarray(dy[:, start:start + size]))
            d = m.backward(part)
            start += size
            dx = d if dx is None else F.add(dx, d)
        return dx

    def out_shape(self, in_shape):
        shapes = [m.out_shape(in_shape) for m in self.children.values()]
        if len({s[1:] for s in shapes}) != 1:
            raise ValueError(f"inception branches disagree on spatial size: {shapes}")
        return (sum(s[0] for s in shapes),) + shapes[0][1:]
