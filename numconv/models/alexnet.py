"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet classification with deep convolutional
neural networks"), the two-GPU original of section 3.5 and Fig. 2: 96-256-384-384-256 maps, conv1
11x11 stride 4, conv2 5x5, conv3-5 3x3; conv2, conv4 and conv5 see only the maps on their own GPU
(groups=2), conv3 sees both; ReLU after every layer (3.1), local response normalisation after the
ReLUs of conv1 and conv2 (3.3: k=2, n=5, alpha=1e-4, beta=0.75), overlapping 3x3 stride-2
max-pooling after both normalisations and after conv5 (3.4), dropout 0.5 on the two hidden
fully-connected layers (4.2), FC 4096-4096-classes: 60,965,224 parameters.

Input: 3x227x227 by default. The paper says 224x224, but an 11x11 window with stride 4 and no
padding gives the 55x55 maps of Fig. 2 only from 227 pixels ((227 - 11) / 4 + 1 = 55); from 224
the last window would hang over the edge.

Names follow torchvision's scheme (features.N, classifier.N), with the LRN layers as extra features
and the dropout placed as in the paper and Caffe's reference (after fc6 and fc7), so the indices do
not line up with torchvision's AlexNet (which is the one-GPU variant without LRN anyway).

Initialisation (5): weights N(0, 0.01^2); biases 1 in conv2, conv4, conv5 and the hidden
fully-connected layers, 0 elsewhere. The classifier's input size follows the input: 256 x 6 x 6 at
227x227, 256 x h x w in general.
"""
from numconv.nn import Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, ReLU, \
    Sequential

from numconv.models._common import Network, check_input, dropout_seed, scaled


def alexnet(num_classes, in_channels, input_size, width, rng):
    input_shape = (in_channels,) + tuple(input_size)
    c1, c2, c3, c4, c5 = (scaled(c, width, 2) for c in (96, 256, 384, 384, 256))
    hidden = scaled(4096, width)
    init = "normal0.01"
    convs = [Conv2d(in_channels, c1, 11, stride=4, init=init, rng=rng),
             Conv2d(c1, c2, 5, padding=2, groups=2, init=init, rng=rng),
             Conv2d(c2, c3, 3, padding=1, init=init, rng=rng),
             Conv2d(c3, c4, 3, padding=1, groups=2, init=init, rng=rng),
             Conv2d(c4, c5, 3, padding=1, groups=2, init=init, rng=rng)]
    for i in (1, 3, 4):
        convs[i].params["bias"][...] = 1.0

    def lrn():
        return LocalResponseNorm(5, 1e-4, 0.75, 2.0)

    layers = [convs[0], ReLU(), lrn(), MaxPool2d(3, 2),
              convs[1], ReLU(), lrn(), MaxPool2d(3, 2),
              convs[2], ReLU(), convs[3], ReLU(), convs[4], ReLU(), MaxPool2d(3, 2)]
    features = Sequential(*layers)
    C, H, W = check_input("alexnet", [("features", features)], input_shape)
    fc6 = Linear(C * H * W, hidden, init=init, rng=rng)
    fc7 = Linear(hidden, hidden, init=init, rng=rng)
    fc8 = Linear(hidden, num_classes, init=init, rng=rng)
    fc6.params["bias"][...] = 1.0
    fc7.params["bias"][...] = 1.0
    classifier = Sequential(fc6, ReLU(), Dropout(0.5, dropout_seed(rng)),
                            fc7, ReLU(), Dropout(0.5, dropout_seed(rng)),
                            fc8)
    return Network("alexnet", input_shape, num_classes, {},
                   [("features", features), ("flatten", Flatten()), ("classifier", classifier)])
