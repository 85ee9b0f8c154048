"""The model zoo: LeNet-5, AlexNet, VGG, GoogLeNet and ResNet as their papers describe them, plus
`smallcnn`, the common two-convolution baseline for MNIST-like data (no paper's network).

    from numconv import models
    net = models.build_model("resnet20")              # CIFAR-10 ResNet-20, 269,722 parameters
    net = models.build_model("vgg16", num_classes=10, input_size=32, width=0.25)
    models.default_input("alexnet")                   # (3, 227, 227)
    models.recipe("resnet50")                         # the paper's optimiser, schedule, ...

`build_model` defaults are each paper's: 1000 classes and 3x224x224 for the ImageNet models
(3x227x227 for AlexNet, see numconv.models.alexnet), 10 classes and 3x32x32 for the CIFAR-10
ResNets and plain nets, 10 classes and 1x32x32 for LeNet-5, 10 classes and 1x28x28 for smallcnn.
Any class count, channel count and input size large enough for the layers works; `width` scales
every channel count (and the hidden widths of the fully-connected layers). Every model is a
`numconv.nn.Module` whose forward maps (N, C, H, W) to logits (N, num_classes).
"""
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np

from numconv.describe import trainable_count
from numconv.models._common import Network, ZeroDraws
from numconv.models.alexnet import alexnet
from numconv.models.googlenet import GoogLeNet, aux_loss, googlenet
from numconv.models.lenet import MaskedConv2d, Subsampling, lenet5
from numconv.models.recipes import recipe
from numconv.models.resnet import CIFAR_DEPTHS, IMAGENET, resnet_cifar, resnet_imagenet
from numconv.models.smallcnn import smallcnn
from numconv.models.vgg import CONFIGS as VGG_CONFIGS
from numconv.models.vgg import vgg


@dataclass(frozen=True)
class ModelSpec:
    builder: Callable          # (num_classes, in_channels, (H, W), width, rng, **options) -> Module
    input_shape: tuple         # the paper's (C, H, W)
    num_classes: int           # the paper's
    options: dict = field(default_factory=dict)   # option -> default
    paper: str = ""


_IMAGENET = (3, 224, 224)
MODELS = {
    "lenet5": ModelSpec(lenet5, (1, 32, 32), 10, {"classic": False}, "LeCun et al. 1998"),
    "alexnet": ModelSpec(alexnet, (3, 227, 227), 1000, {}, "Krizhevsky et al. 2012"),
    **{name: ModelSpec(partial(vgg, name), _IMAGENET, 1000, {}, "Simonyan & Zisserman 2015")
       for name in VGG_CONFIGS},
    "googlenet": ModelSpec(googlenet, _IMAGENET, 1000, {"aux": False}, "Szegedy et al. 2014"),
    **{name: ModelSpec(partial(resnet_imagenet, name), _IMAGENET, 1000, {"shortcut": "B"},
                       "He et al. 2015") for name in IMAGENET},
    **{f"{kind}{d}": ModelSpec(partial(resnet_cifar, f"{kind}{d}"), (3, 32, 32), 10, {},
                               "He et al. 2015, section 4.2")
       for kind in ("resnet", "plain") for d in CIFAR_DEPTHS},
    "smallcnn": ModelSpec(smallcnn, (1, 28, 28), 10, {},
                          "none: the common two-convolution baseline for MNIST-like data"),
}


def _unknown(name):
    return ValueError(f"model {name!r} is unknown; choose one of {', '.join(MODELS)}")


def default_input(name):
    """The paper's input shape (C, H, W) for model `name`."""
    if name not in MODELS:
        raise _unknown(name)
    return MODELS[name].input_shape


def _positive_int(what, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def build_model(name, num_classes=None, in_channels=None, input_size=None, width=1.0, seed=0,
                initialize=True, **options):
    """Model `name` (a key of MODELS) as a Module.

    num_classes, in_channels: None for the paper's; input_size: an int (square) or (H, W), None for
    the paper's; width: channel multiplier (> 0; counts round to >= 1, multiples of the groups);
    seed: the generator every initialiser draws from; initialize=False skips the random draws
    (all weights zero), for counting and describing only; options: 'classic' (lenet5), 'aux'
    (googlenet), 'shortcut' ('A' or 'B', ImageNet ResNets).
    Raises ValueError for an unknown model or option, or an input too small for some layer (the
    message names the layer and the smallest input that works)."""
    if name not in MODELS:
        raise _unknown(name)
    spec = MODELS[name]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        valid = ", ".join(spec.options) or "none"
        raise ValueError(f"option {unknown[0]!r} does not apply to {name}; its options: {valid}")
    C, H, W = spec.input_shape
    num_classes = spec.num_classes if num_classes is None else _positive_int("num_classes",
                                                                             num_classes)
    in_channels = C if in_channels is None else _positive_int("in_channels", in_channels)
    if input_size is None:
        size = (H, W)
    elif isinstance(input_size, (tuple, list)) and len(input_size) == 2:
        size = tuple(_positive_int("input_size", s) for s in input_size)
    else:
        size = (_positive_int("input_size", input_size),) * 2
    if not (isinstance(width, (int, float)) and not isinstance(width, bool) and width > 0):
        raise ValueError(f"width must be a number > 0, got {width!r}")
    rng = np.random.default_rng(seed) if initialize else ZeroDraws()
    return spec.builder(num_classes, in_channels, size, float(width), rng,
                        **{**spec.options, **options})


def count_parameters(model):
    """Trainable parameters of `model`: every entry of every parameter, except weights held at zero
    by a fixed connection mask (LeNet-5's C3)."""
    return sum(trainable_count(m) for _, m in model.modules())


__all__ = ["MODELS", "ModelSpec", "build_model", "default_input", "recipe", "count_parameters",
           "Network", "GoogLeNet", "aux_loss", "MaskedConv2d", "Subsampling"]
