"""What the model builders share: channel scaling, the model container, the input-size check, and a
generator that draws nothing (for building a model only to count or describe it)."""
import numpy as np

from numconv.describe import InputTooSmall, trace
from numconv.nn import Conv2d, ReLU, Sequential


class Network(Sequential):
    """A built model: children run in order, plus what it was built for.

    arch         registry name ("resnet50")
    input_shape  (C, H, W) it was built for (AlexNet's and VGG's classifiers depend on it)
    num_classes  outputs of the last layer
    options      the model options it was built with (classic, aux, ...)
    aux_outputs  auxiliary logits of the last training forward pass (GoogLeNet with aux=True; empty
                 for every other model)
    """

    def __init__(self, arch, input_shape, num_classes, options, children):
        super().__init__(*[m for _, m in children], names=[n for n, _ in children])
        self.arch, self.input_shape, self.num_classes = arch, tuple(input_shape), num_classes
        self.options = dict(options)
        self.aux_outputs = []

    def first_layer(self):
        """The layer that reads the input: the first leaf, depth first (a convolution in every
        model of the registry)."""
        return next(m for _, m in self.modules() if not m.children)

    def skip_input_gradient(self, skip=True):
        """Training needs no gradient with respect to the images: with skip, the first layer's
        backward stops at its parameters and `backward` returns None (as PyTorch, whose inputs do
        not require grad). Gradient checks and saliency maps leave it on."""
        layer = self.first_layer()
        if hasattr(layer, "needs_input_grad"):
            layer.needs_input_grad = not skip


class ConvReLU(Sequential):
    """Convolution then ReLU, children 'conv' and 'relu': torchvision's BasicConv2d without the
    batch norm (GoogLeNet's convolutions as published: biases, no batch norm)."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, init="glorot", rng=None,
                 bias_value=0.0):
        conv = Conv2d(in_ch, out_ch, kernel_size, stride, padding, init=init, rng=rng)
        conv.params["bias"][...] = bias_value
        super().__init__(conv, ReLU(), names=["conv", "relu"])


class ZeroDraws:
    """Stands in for a numpy Generator when a model is built only to be counted or described: every
    draw is zeros, so building VGG-19 takes a fraction of a second instead of seconds."""

    def normal(self, loc=0.0, scale=1.0, size=None):
        return 0.0 if size is None else np.zeros(size)

    def uniform(self, low=0.0, high=1.0, size=None):
        return 0.0 if size is None else np.zeros(size)

    def standard_normal(self, size=None, dtype=np.float64):
        return 0.0 if size is None else np.zeros(size, dtype)

    def integers(self, low, high=None, size=None, dtype=np.int64):
        return np.zeros(size, dtype) if size is not None else 0


def scaled(channels, width, multiple=1):
    """`channels` times the width multiplier, rounded to a multiple of `multiple` (>= multiple),
    so that grouped convolutions stay valid."""
    return max(multiple, int(round(channels * width / multiple)) * multiple)


def dropout_seed(rng):
    return int(rng.integers(0, 2**31 - 1))


def fmt_shape(shape):
    return "x".join(str(int(s)) for s in shape)


def smallest_square(pairs, channels, prefix=""):
    """The smallest side s for which (channels, s, s) passes through every pair (sizes grow
    monotonically with the input, so a bisection finds it)."""
    def fits(s):
        try:
            trace(pairs, (channels, s, s), prefix)
            return True
        except InputTooSmall:
            return False

    hi = 1
    while not fits(hi):
        hi *= 2
        if hi > 1 << 16:
            return None
    lo = hi // 2   # fails (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def check_input(arch, pairs, input_shape, prefix=""):
    """Output shape of `pairs` for one example of `input_shape`. An input too small for some layer
    raises ValueError naming the layer and the smallest square input that works."""
    try:
        return trace(pairs, input_shape, prefix)
    except InputTooSmall as exc:
        side = smallest_square(pairs, input_shape[0], prefix)
        fix = (f"use at least {fmt_shape((input_shape[0], side, side))}" if side
               else "no input size fits")
        raise ValueError(f"input {fmt_shape(input_shape)} is too small for {arch}: layer "
                         f"{exc.layer} ({exc.layer_type}) would get a "
                         f"{fmt_shape(exc.in_shape[1:])} map, smaller than its "
                         f"{fmt_shape(exc.window)} window; {fix}") from None
