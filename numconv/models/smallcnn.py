"""A small two-block CNN: the common baseline for MNIST-like data (MNIST, Fashion-MNIST), not any
paper's network. Two stages of a 3x3 'same' convolution, ReLU and a 2x2 stride-2 max-pool (32, then
64 maps), then a 128-unit hidden layer with ReLU and dropout 0.5, and a linear output layer.

At 1x28x28 with 10 classes: 28 -> 14 -> 7, so the hidden layer reads 64 x 7 x 7 = 3,136 features;
421,642 parameters (320 + 18,496 + 401,536 + 1,290). At other input sizes the hidden layer's input
follows the map (64 x h x w), as in VGG here.

Names follow a PyTorch nn.Sequential twin written the usual way: features.0 and features.3 are the
convolutions, classifier.0 and classifier.3 the linear layers. Weights are He-initialised (normal,
std sqrt(2 / fan-in), as for any ReLU net), biases zero.
"""
from numconv.nn import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential

from numconv.models._common import Network, check_input, dropout_seed, scaled

CHANNELS = (32, 64)   # the two convolutions' maps at width 1
HIDDEN = 128          # the hidden fully-connected layer's units at width 1


def smallcnn(num_classes, in_channels, input_size, width, rng):
    input_shape = (in_channels,) + tuple(input_size)
    layers, c = [], in_channels
    for maps in CHANNELS:
        out = scaled(maps, width)
        layers += [Conv2d(c, out, 3, padding=1, init="kaiming", rng=rng), ReLU(),
                   MaxPool2d(2, 2)]
        c = out
    features = Sequential(*layers)
    C, H, W = check_input("smallcnn", [("features", features)], input_shape)
    hidden = scaled(HIDDEN, width)
    classifier = Sequential(
        Linear(C * H * W, hidden, init="kaiming", rng=rng), ReLU(),
        Dropout(0.5, dropout_seed(rng)),
        Linear(hidden, num_classes, init="kaiming", rng=rng))
    return Network("smallcnn", input_shape, num_classes, {},
                   [("features", features), ("flatten", Flatten()), ("classifier", classifier)])
