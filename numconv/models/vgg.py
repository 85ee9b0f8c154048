"""VGG (Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image
recognition"), configurations A, B, D and E of Table 1 (VGG-11, -13, -16, -19): 3x3 convolutions
with stride 1 and 'same' padding, ReLU after each, 2x2 stride-2 max-pooling after each stage (2.1),
FC 4096-4096-classes with ReLU and dropout 0.5 after the two hidden ones (3.1). Parameter counts:
132,863,336 / 133,047,848 / 138,357,544 / 143,667,240.

Names are torchvision's (features.N, classifier.0/3/6). torchvision's adaptive 7x7 average pool is
left out: at 224x224 it does nothing, and at other sizes the classifier's input size follows the
map instead (512 x h x w).

Initialisation (3.1): the paper trained A from N(0, 10^-2) and deeper nets from A's weights, and
notes that Glorot & Bengio's initialisation works without that pre-training; a net built here is
trained from scratch, so it uses Glorot (uniform) weights and zero biases.
"""
from numconv.nn import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential

from numconv.models._common import Network, check_input, dropout_seed, scaled

# Table 1: channels of each 3x3 convolution, 'M' for a max-pool.
CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),                 # A
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),        # B
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),                                                             # D
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),                                                        # E
}


def vgg(arch, num_classes, in_channels, input_size, width, rng):
    input_shape = (in_channels,) + tuple(input_size)
    layers, c = [], in_channels
    for v in CONFIGS[arch]:
        if v == "M":
            layers.append(MaxPool2d(2, 2))
        else:
            out = scaled(v, width)
            layers += [Conv2d(c, out, 3, padding=1, init="glorot", rng=rng), ReLU()]
            c = out
    features = Sequential(*layers)
    C, H, W = check_input(arch, [("features", features)], input_shape)
    hidden = scaled(4096, width)
    classifier = Sequential(
        Linear(C * H * W, hidden, init="glorot", rng=rng), ReLU(), Dropout(0.5, dropout_seed(rng)),
        Linear(hidden, hidden, init="glorot", rng=rng), ReLU(), Dropout(0.5, dropout_seed(rng)),
        Linear(hidden, num_classes, init="glorot", rng=rng))
    return Network(arch, input_shape, num_classes, {},
                   [("features", features), ("flatten", Flatten()), ("classifier", classifier)])
