"""A model as a chain of named stages, so that interpretation can stop the forward pass at any
layer and start the backward pass there.

A built model runs its children in order (`Sequential.forward`); containers that do the same
(VGG's `features`, a ResNet stage `layer1`, GoogLeNet's `ConvReLU`) are opened up, so their
children get names of their own ("features.3", "layer1.0", "conv2.conv"). Blocks whose forward is
more than a chain (residual blocks, inception modules) stay one stage: "layer1.0" is a layer name,
"layer1.0.conv1" is not, because its output alone does not feed the rest of the network.
GoogLeNet's auxiliary classifiers are side branches and are left out (they do not run in eval mode).

Every stage is run with the model's own `forward`/`backward`, so activations and input gradients
are the ones training computes.

    stages = layer_stages(model)          # [(name, module)] in forward order
    a = forward_to(model, x, "c3")        # activation of c3 for x (N, C, H, W)
    dx = backward_from(model, "c3", da)   # gradient of sum(a * da) with respect to x
"""
from dataclasses import dataclass

import numpy as np

from numconv.nn.layers import Conv1d, Conv2d
from numconv.nn.module import Sequential


@dataclass(frozen=True)
class Layer:
    """A name you can pass as --layer: `stop` is the index of the last stage it covers."""
    name: str
    stop: int
    module: object


def _opens(module):
    """The (name, child) pairs `module` runs in order, or None when it is one stage."""
    if not module.children:
        return None
    if type(module).forward is Sequential.forward:
        return list(module.children.items())
    main = getattr(module, "_main", None)
    if callable(main) and getattr(module, "taps", None) is not None:   # GoogLeNet: main path only
        return list(main())
    return None


def _walk(module, prefix, stages, layers):
    pairs = _opens(module)
    if pairs is None:
        stages.append((prefix, module))
        if prefix:
            layers.append(Layer(prefix, len(stages) - 1, module))
        return
    for name, child in pairs:
        _walk(child, f"{prefix}.{name}" if prefix else name, stages, layers)
    if prefix and stages:
        layers.append(Layer(prefix, len(stages) - 1, module))


def _index(model):
    stages, layers = [], []
    _walk(model, "", stages, layers)
    if stages and stages[0][0] == "":
        raise ValueError(f"{type(model).__name__} does not run its children in order; "
                         f"interpretation needs a built numconv model")
    return stages, {layer.name: layer for layer in layers}


def layer_stages(model):
    """[(full name, module)] of the stages `model` runs, in forward order."""
    return list(_index(model)[0])


def layer_names(model):
    """Every name `get_layer` accepts, in forward order (a container after its children)."""
    return list(_index(model)[1])


def get_layer(model, name):
    """The Layer called `name`; a ValueError listing the valid names otherwise. 'logits' names the
    last stage."""
    stages, layers = _index(model)
    if name == "logits":
        return Layer(stages[-1][0], len(stages) - 1, stages[-1][1])
    if name not in layers:
        raise ValueError(f"layer {name!r} is unknown; valid layers: {', '.join(layers)}")
    return layers[name]


def default_feature_layer(model):
    """The last hidden layer: the stage before the last one (the classifier)."""
    stages, _ = _index(model)
    if len(stages) < 2:
        raise ValueError("the model has a single stage; name a layer with --layer")
    return stages[-2][0]


def first_conv(model):
    """(full name, module) of the first convolution in forward order."""
    for name, module in model.modules():
        if isinstance(module, (Conv2d, Conv1d)):
            return name, module
    raise ValueError(f"{getattr(model, 'arch', type(model).__name__)} has no convolution layer")


def forward_to(model, x, name):
    """Run `x` (N, C, H, W) through the stages up to and including layer `name`; returns its
    activation. Each stage caches what its backward needs, as in training."""
    stages, _ = _index(model)
    stop = get_layer(model, name).stop
    for _, module in stages[:stop + 1]:
        x = module.forward(x)
    return x


def forward_all(model, x, names):
    """{name: activation} for every layer in `names`, in one forward pass up to the deepest."""
    stages, _ = _index(model)
    want = {}
    for n in names:
        want.setdefault(get_layer(model, n).stop, []).append(n)
    out = {}
    for i, (_, module) in enumerate(stages[:max(want) + 1]):
        x = module.forward(x)
        for n in want.get(i, ()):
            out[n] = x
    return out


def backward_from(model, name, dy):
    """After `forward_to(model, x, name)`: the gradient with respect to x of sum(activation * dy),
    through the same backward kernels as training. Parameter gradients accumulate into the model's
    `grads` as a side effect (call `model.zero_grad()` before training again)."""
    stages, _ = _index(model)
    stop = get_layer(model, name).stop
    first = stages[0][1]
    # The first convolution of a network may skip its input gradient; here it is the point.
    skips = getattr(first, "needs_input_grad", True) is False
    if skips:
        first.needs_input_grad = True
    try:
        for _, module in reversed(stages[:stop + 1]):
            dy = module.backward(np.ascontiguousarray(dy))
    finally:
        if skips:
            first.needs_input_grad = False
    return dy
