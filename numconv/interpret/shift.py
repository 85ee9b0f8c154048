"""Equivariance, measured: a convolution commutes with translation, so shifting the input by d
pixels shifts a conv layer's maps by d / jump units (jump: the layer's cumulative stride), exactly,
away from the borders. Pooling with stride s keeps this only for shifts that are multiples of s;
global pooling turns it into (approximate) invariance.

For each conv layer (and each residual or inception block) the error is measured on the interior:
the units whose receptive field, in the shifted image, lies inside the image and inside the part
that holds shifted content (not the fill that came in at the edge). There the maps of the shifted
image are compared with the shifted maps of the image:

    error = ||f(shift(x)) - shift(f(x))|| / ||shift(f(x))||    (over the interior, all channels)

~0 (float rounding) when d is a multiple of the jump; otherwise the maps are compared at the
rounded shift and the error shows what the pooling lost.
"""
from dataclasses import dataclass, field

import numpy as np

from numconv import ops
from numconv.describe import describe
from numconv.interpret.layers import forward_all, get_layer, layer_stages
from numconv.nn.layers import Conv2d, GlobalPool


def shift_image(x, dy, dx, fill):
    """x (N, C, H, W) moved down by dy and right by dx pixels (negative: up / left); the uncovered
    border takes `fill` (C,) per channel."""
    x = np.asarray(x)
    N, C, H, W = x.shape
    out = np.empty_like(x)
    out[...] = np.asarray(fill, x.dtype).reshape(1, C, 1, 1)
    if abs(dy) < H and abs(dx) < W:
        out[:, :, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
            x[:, :, max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
    return out


def _interior_1d(n, L, rf, d, s):
    """Output positions q (of n) of the shifted image's map whose field lies in the image and in
    its shifted content, with q - s also a valid position. rf = (size, jump, start)."""
    size, jump, start = rf
    q = np.arange(n)
    lo = start + q * jump - (size - 1) / 2
    hi = start + q * jump + (size - 1) / 2
    ok = (lo >= max(0, d) - 1e-9) & (hi <= min(L - 1, L - 1 + d) + 1e-9)
    ok &= (q - s >= 0) & (q - s < n)
    return q[ok]


@dataclass
class LayerShift:
    name: str
    kind: str
    jump: tuple            # (jy, jx) input pixels between neighbouring units
    shift: tuple           # (sy, sx) the shift compared, in units of the map
    exact: bool            # the input shift is a multiple of the jump (equivariance expected)
    interior: int          # units per channel in the compared region (0: none)
    error: float           # relative error over the interior (nan when it is empty)


@dataclass
class ShiftReport:
    dy: int
    dx: int
    layers: list           # [LayerShift] for the conv layers and blocks, in forward order
    pooled: str            # what the invariance was measured on
    invariance: float      # ||g(shift(x)) - g(x)|| / ||g(x)|| after global pooling
    maps: dict = field(default_factory=dict)   # name -> (map of x, map of shift(x)), first example
    inputs: tuple = ()     # (x, shift(x)) model inputs, first example


def _rel(diff, ref):
    num, den = float(np.linalg.norm(diff)), float(np.linalg.norm(ref))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def compared_layers(model):
    """Names of the stages the report covers: convolutions and blocks with branches."""
    return [n for n, m in layer_stages(model)
            if isinstance(m, Conv2d) or callable(getattr(m, "branches", None))]


def measure_shift(model, x, dy, dx, fill, keep_maps=()):
    """Shift x (1, C, H, W) (normalised) by (dy, dx) input pixels and measure the equivariance
    error of every conv layer or block and the invariance error after global pooling."""
    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {x.shape}")
    dy, dx = int(dy), int(dx)
    C, H, W = x.shape[1:]
    if abs(dy) >= H or abs(dx) >= W:
        raise ValueError(f"shift ({dy}, {dx}) moves the whole {H}x{W} input out of view; use "
                         f"|dy| < {H} and |dx| < {W}")
    xs = shift_image(x, dy, dx, fill)
    rows = {r.name: r for r in describe(model, (C, H, W))}
    stages = layer_stages(model)
    names = [n for n, _ in stages]
    conv_names = compared_layers(model)
    pool_name = next((n for n, m in stages if isinstance(m, GlobalPool)), None)
    # Without a global pooling layer of its own (LeNet-5), pool the last map larger than 1x1.
    spatial = [n for n in names if n in rows and len(rows[n].out_shape) == 3]
    wide = [n for n in spatial if np.prod(rows[n].out_shape[1:]) > 1] or spatial
    if pool_name is None and not wide:
        raise ValueError("the model has no spatial layer to pool")
    keep_maps = [get_layer(model, n).name for n in keep_maps]
    wanted = set(conv_names) | set(keep_maps) | ({pool_name} if pool_name else {wide[-1]})
    both = np.concatenate([x, xs])
    acts = forward_all(model, both, [n for n in names if n in wanted])

    layers = []
    for n in conv_names:
        a, b = acts[n][:len(x)], acts[n][len(x):]
        (sy_rf, sx_rf) = rows[n].rf
        jy, jx = sy_rf[1], sx_rf[1]
        exact = dy % jy == 0 and dx % jx == 0 if a.ndim == 4 else False
        if a.ndim != 4:
            layers.append(LayerShift(n, type(dict(stages)[n]).__name__, (jy, jx), (0, 0), False,
                                     0, float("nan")))
            continue
        sy, sx = int(round(dy / jy)), int(round(dx / jx))
        qy = _interior_1d(a.shape[2], H, sy_rf, dy, sy)
        qx = _interior_1d(a.shape[3], W, sx_rf, dx, sx)
        if len(qy) and len(qx):
            got = b[:, :, qy][:, :, :, qx]
            want = a[:, :, qy - sy][:, :, :, qx - sx]
            err = _rel(got.astype(np.float64) - want, want.astype(np.float64))
        else:
            err = float("nan")
        layers.append(LayerShift(n, type(dict(stages)[n]).__name__, (jy, jx), (sy, sx), exact,
                                 len(qy) * len(qx), err))

    if pool_name is not None:
        g = acts[pool_name]
        pooled = f"{pool_name} (the model's global pooling)"
    else:
        g = ops.global_pool(np.ascontiguousarray(acts[wide[-1]]), "avg")
        pooled = f"global average pool of {wide[-1]}"
    inv = _rel(g[len(x):].astype(np.float64) - g[:len(x)], g[:len(x)].astype(np.float64))
    maps = {n: (acts[n][0], acts[n][len(x)]) for n in keep_maps}
    return ShiftReport(dy, dx, layers, pooled, inv, maps, (x[0], xs[0]))
