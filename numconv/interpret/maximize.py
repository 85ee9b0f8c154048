"""Activation maximisation: gradient ascent on an input image to excite one channel of a layer
(or one class logit), with the usual regularisers so that the result looks like an image.

Each step: jitter (roll the image by a random offset), run the model up to the layer, set the
gradient of the objective (the channel's mean activation) at the layer and backpropagate it to the
input with the training backward kernels, undo the jitter, take a step along the gradient scaled
to unit mean magnitude, decay the image towards the dataset mean (L2), blur it every few steps
(a depthwise 3x3 binomial convolution through numconv.ops), and clip it to valid pixels.
All the channels asked for are optimised together, one image each, in one batch.
"""
from dataclasses import dataclass

import numpy as np

from numconv import ops
from numconv.interpret.layers import backward_from, forward_to, get_layer


@dataclass
class MaxSettings:
    steps: int = 200
    lr: float = 0.1            # step size in normalised input units (the gradient has mean |g| 1)
    l2: float = 0.01           # x <- (1 - l2) x after each step: decay towards the dataset mean
    blur_every: int = 4        # blur the image every this many steps (0: never)
    jitter: int = 1            # random roll of up to this many pixels before each step
    start: str = "noise"       # "noise" or "mean" (the dataset mean image)
    noise: float = 0.1         # starting noise, in pixel units (0..1)
    seed: int = 0
    objective: str = "mean"    # "mean" of the channel's map, or its "center" unit (a spatial
                               # layer's mean is often best served by a flat image)


@dataclass
class MaxResult:
    layer: str
    channels: list
    images: np.ndarray         # (K, C, H, W) normalised inputs, one per channel
    start_activation: np.ndarray   # (K,) objective at the starting image
    final_activation: np.ndarray   # (K,) objective at the result (no jitter)
    history: np.ndarray        # (steps, K) objective during the ascent (with jitter)


def _center(shape):
    return tuple(n // 2 for n in shape)


def channel_objective(a, channels, objective="mean"):
    """(K,) activation of channel channels[i] in row i of `a` ((K, C, ...) or (K, F)): the mean
    over its positions, or its centre unit."""
    rows = np.arange(len(channels))
    picked = a[rows, channels]
    if objective == "center" and picked.ndim > 1:
        return picked[(slice(None),) + _center(picked.shape[1:])].astype(np.float64)
    return picked.reshape(len(channels), -1).mean(axis=1).astype(np.float64)


def check_channels(model, layer, channels, input_shape):
    """Channel indices as ints; ValueError when one is out of range for the layer."""
    a = forward_to(model, np.zeros((1,) + tuple(input_shape), np.float32), layer)
    count = a.shape[1]
    if not channels:
        raise ValueError(f"no channel given; pass --channel K with K in 0..{count - 1}")
    out = []
    for k in channels:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < count:
            raise ValueError(f"channel {k} is out of range for layer {layer}, which has {count} "
                             f"channels; use 0..{count - 1}")
        out.append(int(k))
    return out, a.shape[1:]


def _blur(x):
    """Depthwise 3x3 binomial blur, (N, C, H, W) -> same shape (zero padding = the mean image)."""
    k1 = np.array([1.0, 2.0, 1.0], np.float32) / 4
    kernel = np.outer(k1, k1).astype(np.float32)
    C = x.shape[1]
    w = np.ascontiguousarray(np.broadcast_to(kernel, (C, 1, 3, 3)))
    return ops.conv2d(np.ascontiguousarray(x), w, None, padding=1, groups=C)


def maximize(model, layer, channels, input_shape, mean, std, settings=None):
    """Optimise one input per channel to maximise its mean activation at `layer`.

    model: in eval mode; layer: a name from numconv.interpret.layer_names (or 'logits');
    channels: channel (or class) indices; input_shape: (C, H, W); mean, std: the run's per-channel
    normalisation (pixel units), which set the starting image and the valid pixel range."""
    s = settings or MaxSettings()
    if s.steps < 1:
        raise ValueError(f"steps must be >= 1, got {s.steps}")
    if s.start not in ("noise", "mean"):
        raise ValueError(f"start {s.start!r} is unknown; use 'noise' or 'mean'")
    if s.objective not in ("mean", "center"):
        raise ValueError(f"objective {s.objective!r} is unknown; use 'mean' or 'center'")
    name = get_layer(model, layer).name
    channels, out_shape = check_channels(model, layer, list(channels), input_shape)
    C, H, W = input_shape
    K = len(channels)
    std_c = np.resize(np.where(np.asarray(std) < 1e-6, 1.0, std), C).reshape(1, C, 1, 1)
    mean_c = np.resize(np.asarray(mean), C).reshape(1, C, 1, 1)
    lo, hi = ((0.0 - mean_c) / std_c).astype(np.float32), ((1.0 - mean_c) / std_c).astype(np.float32)
    rng = np.random.default_rng(s.seed)
    x = np.zeros((K, C, H, W), np.float32)
    if s.start == "noise":
        x += (s.noise * rng.standard_normal(x.shape) / std_c).astype(np.float32)
    x = np.clip(x, lo, hi)
    start = channel_objective(forward_to(model, x, layer), channels, s.objective)

    spatial = tuple(out_shape[1:])
    center = s.objective == "center" and len(spatial) > 0
    per_unit = 1.0 if center else 1.0 / max(1, int(np.prod(spatial)))
    history = np.zeros((s.steps, K))
    rows = np.arange(K)
    for step in range(s.steps):
        oy, ox = (rng.integers(-s.jitter, s.jitter + 1, 2) if s.jitter else (0, 0))
        xj = np.roll(x, (oy, ox), axis=(2, 3))
        a = forward_to(model, xj, layer)
        history[step] = channel_objective(a, channels, s.objective)
        da = np.zeros_like(a)
        if center:
            da[(rows, channels) + tuple(np.full(K, c) for c in _center(spatial))] = per_unit
        else:
            da[rows, channels] = per_unit
        g = np.roll(backward_from(model, layer, da), (-oy, -ox), axis=(2, 3))
        scale = np.abs(g).reshape(K, -1).mean(axis=1).reshape(K, 1, 1, 1) + 1e-12
        x = x + np.float32(s.lr) * (g / scale).astype(np.float32)
        x *= np.float32(1.0 - s.l2)
        if s.blur_every and (step + 1) % s.blur_every == 0:
            x = _blur(x)
        x = np.clip(x, lo, hi).astype(np.float32)
    model.zero_grad()
    final = channel_objective(forward_to(model, x, layer), channels, s.objective)
    return MaxResult(name, channels, x, start, final, history)
