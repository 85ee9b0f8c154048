"""First-layer filters as an image grid: each filter scaled to its own range, RGB for 3-channel
inputs, greyscale otherwise (a tile per input channel when there are neither 1 nor 3)."""
import math
from dataclasses import dataclass

import numpy as np

from numconv.interpret.layers import first_conv

TILE_PIXELS = 32      # filters are enlarged (nearest neighbour) to at least this many pixels a side
SEPARATOR = 128       # grey lines between tiles


def normalise_filters(w):
    """w (O, C, KH, KW) -> float64 of the same shape in [0, 1]: each filter (all its input channels
    together, so an RGB filter keeps its colours) mapped from its own min..max; a constant filter
    becomes 0.5."""
    w = np.asarray(w, dtype=np.float64)
    flat = w.reshape(w.shape[0], -1)
    lo = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - lo
    out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1.0), 0.5)
    return out.reshape(w.shape)


def to_pixels(normalised):
    """[0, 1] -> uint8 0..255 (rounded): the value a grid pixel holds."""
    return np.rint(np.asarray(normalised) * 255.0).astype(np.uint8)


@dataclass
class FilterGrid:
    image: np.ndarray     # uint8 (H, W) or (H, W, 3)
    layer: str            # full name of the convolution
    shape: tuple          # its weight shape (O, C, KH, KW)
    scale: int            # each weight is scale x scale pixels
    tiles: dict           # (filter, input channel or None for RGB) -> (top, left) of the tile

    @property
    def file_name(self):
        return f"filters-{self.layer}-{'x'.join(str(s) for s in self.shape)}.png"


def filter_grid(weight, layer="conv", scale=None, columns=None):
    """The grid of `weight` (O, C, KH, KW): one tile per filter (RGB when C == 3, grey when C == 1)
    or one row of C grey tiles per filter otherwise, 1-pixel grey lines between tiles."""
    w = np.asarray(weight)
    if w.ndim != 4:
        raise ValueError(f"filter grids need 2-D convolution weights (O, C, KH, KW); {layer} has "
                         f"shape {w.shape}")
    O, C, KH, KW = w.shape
    scale = scale or max(1, math.ceil(TILE_PIXELS / max(KH, KW)))
    pix = to_pixels(normalise_filters(w))
    rgb = C == 3
    if rgb or C == 1:
        items = [(o, None) for o in range(O)]
        columns = columns or math.ceil(math.sqrt(O))
    else:
        items = [(o, c) for o in range(O) for c in range(C)]
        columns = C
    rows = math.ceil(len(items) / columns)
    th, tw = KH * scale, KW * scale
    shape = (rows * (th + 1) + 1, columns * (tw + 1) + 1) + ((3,) if rgb else ())
    grid = np.full(shape, SEPARATOR, dtype=np.uint8)
    tiles = {}
    for n, (o, c) in enumerate(items):
        top, left = 1 + (n // columns) * (th + 1), 1 + (n % columns) * (tw + 1)
        tile = np.transpose(pix[o], (1, 2, 0)) if rgb else pix[o, c or 0]
        tile = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
        grid[top:top + th, left:left + tw] = tile
        tiles[(o, c)] = (top, left)
    return FilterGrid(grid, layer, tuple(w.shape), scale, tiles)


def first_layer_grid(model, scale=None):
    """The filter grid of `model`'s first convolution."""
    name, conv = first_conv(model)
    return filter_grid(conv.params["weight"], name, scale)
