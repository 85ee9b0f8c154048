"""Residual networks (He, Zhang, Ren & Sun 2015, "Deep residual learning for image recognition").

ImageNet (Table 1), in torchvision's layout and names (conv1, bn1, relu, maxpool, layer1..layer4,
avgpool, fc): a 7x7/2 convolution with 64 maps, a 3x3/2 max-pool, four stages of basic (18, 34) or
bottleneck (50, 101, 152) blocks with 64/128/256/512 maps (x4 out of a bottleneck), the first block
of stages 2-4 halving the map with stride 2, global average pooling and a linear classifier.
Shortcuts that change shape are projections (option B, 3.3). Parameters: 11,689,512 / 21,797,672 /
25,557,032 / 44,549,160 / 60,192,808. Bottlenecks stride on the 3x3 convolution as torchvision
does (the paper strides the first 1x1); the parameter count is the same.

CIFAR-10 (4.2): a 3x3 convolution with 16 maps, three stages of n basic blocks with 16/32/64 maps
(depth 6n + 2: 20, 32, 44, 56, 110), parameter-free zero-padding shortcuts (option A), global
average pooling and a 10-way classifier: 0.27M/0.46M/0.66M/0.85M/1.7M parameters. The plain nets of
Fig. 6 are the same stacks without shortcuts.

Initialisation: He et al.'s (their ref. [13]); batch norm after every convolution, no dropout.
"""
from numconv.nn import BasicBlock, BatchNorm2d, Bottleneck, Conv2d, GlobalPool, Linear, MaxPool2d, \
    ReLU, Sequential

from numconv.models._common import Network, check_input, scaled

IMAGENET = {  # Table 1: block type and blocks per stage
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}

CIFAR_DEPTHS = (20, 32, 44, 56, 110)


def resnet_imagenet(arch, num_classes, in_channels, input_size, width, rng, shortcut="B"):
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut {shortcut!r} is unknown; use 'A' (zero padding) or 'B' "
                         f"(projections where the shape changes)")
    input_shape = (in_channels,) + tuple(input_size)
    block, counts = IMAGENET[arch]
    stem = scaled(64, width)
    children = [("conv1", Conv2d(in_channels, stem, 7, 2, 3, bias=False, init="kaiming_out",
                                 rng=rng)),
                ("bn1", BatchNorm2d(stem)), ("relu", ReLU()), ("maxpool", MaxPool2d(3, 2, 1))]
    c = stem
    for i, n in enumerate(counts):
        planes = scaled(64 * 2 ** i, width)
        blocks = []
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            blocks.append(block(c, planes, stride, shortcut=shortcut, rng=rng))
            c = planes * block.expansion
        children.append((f"layer{i + 1}", Sequential(*blocks)))
    check_input(arch, children, input_shape)
    children += [("avgpool", GlobalPool("avg")),
                 ("fc", Linear(c, num_classes, init="kaiming", rng=rng))]
    return Network(arch, input_shape, num_classes, {"shortcut": shortcut}, children)


def resnet_cifar(arch, num_classes, in_channels, input_size, width, rng):
    """resnetN / plainN with N = 6n + 2."""
    plain = arch.startswith("plain")
    depth = int(arch[5:] if plain else arch[6:])
    n = (depth - 2) // 6
    input_shape = (in_channels,) + tuple(input_size)
    c = scaled(16, width)
    children = [("conv1", Conv2d(in_channels, c, 3, 1, 1, bias=False, init="kaiming_out", rng=rng)),
                ("bn1", BatchNorm2d(c)), ("relu", ReLU())]
    for i in range(3):
        maps = scaled(16 * 2 ** i, width)
        blocks = []
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            blocks.append(BasicBlock(c, maps, stride, shortcut="A", plain=plain, rng=rng))
            c = maps
        children.append((f"layer{i + 1}", Sequential(*blocks)))
    check_input(arch, children, input_shape)
    children += [("avgpool", GlobalPool("avg")),
                 ("fc", Linear(c, num_classes, init="kaiming", rng=rng))]
    return Network(arch, input_shape, num_classes, {}, children)
