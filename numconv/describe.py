"""A model, layer by layer: output shape, trainable parameters, multiply-accumulates and receptive
field of every leaf layer, for one example of a given input shape.

The walk follows the forward pass:

- a leaf layer (no children) maps its input shape to `out_shape(in_shape)`; layers with a spatial
  window (convolutions, pools, GlobalPool, ZeroPadShortcut) report it through
  `window_for(in_shape)` and move the receptive field on with `receptive_field_step`; a layer that
  turns a map into a vector without a window of its own (Flatten) sees the whole map;
- a block (a module with `branches()` and `join`) runs every branch from the block's input, each
  branch starting from the block's receptive field; the join ('add' or 'concat') closes it with a
  row of its own, and its receptive field per dimension is the largest of the branches' (their
  jumps must agree);
- any other module with children runs them in order; a module with side outputs (GoogLeNet's
  auxiliary classifiers) lists them in `taps` = {child it reads: (side children,)}, and the walk
  visits each side branch right after the child it reads, without leaving the main path.

The receptive field per spatial dimension is (size, jump, start): the extent in input pixels seen
by one unit, the distance in input pixels between neighbouring units, and the input coordinate of
the centre of the first unit's field (pixel centres are at 0, 1, 2, ...).

Trainable parameters exclude weights held at zero by a fixed mask (a module lists such masks in
`param_masks` = {parameter name: 0/1 array of its shape}), as in LeNet-5's C3.
"""
from dataclasses import dataclass

import numpy as np

from numconv.nn.layers import receptive_field_step


@dataclass
class LayerRow:
    name: str           # full name as in the state dict ("layer1.0.conv1"); a join: the block's
    type: str           # class name; a join: "BasicBlock (add)", "Inception (concat)", or
                        # "BasicBlock (no shortcut)" for a plain net's block
    out_shape: tuple    # one example, no batch axis
    params: int         # trainable parameters (masked-out weights excluded)
    macs: int           # multiply-accumulates of the forward pass for one example
    rf: tuple           # per spatial dimension (size, jump, start), in input pixels
    kind: str = "layer"  # "layer", or "join" for the add/concat that closes a block


@dataclass
class Totals:
    params: int
    macs: int
    out_shape: tuple
    rf: tuple


class InputTooSmall(ValueError):
    """A layer's window does not fit the map it receives."""

    def __init__(self, layer, layer_type, in_shape, window, reason):
        self.layer, self.layer_type = layer, layer_type
        self.in_shape, self.window = in_shape, window
        super().__init__(f"layer {layer} ({layer_type}) gets a {_hw(in_shape[1:])} map, too small "
                         f"for its {_hw(window)} window: {reason}")


def _hw(sizes):
    return "x".join(str(int(s)) for s in sizes)


def trainable_count(module):
    """Trainable entries of `module`'s own parameters (not its children's); a masked parameter
    counts only the entries its `param_masks` mask keeps."""
    masks = getattr(module, "param_masks", {})
    return int(sum(int(np.count_nonzero(masks[n])) if n in masks else p.size
                   for n, p in module.params.items()))


def _extent(module, nd):
    """A windowed layer's window size per spatial dimension (for error messages)."""
    k = getattr(module, "kernel_size", None)
    if k is None:
        return None
    k = tuple(k) if isinstance(k, (tuple, list)) else (int(k),) * nd
    d = getattr(module, "dilation", (1,) * nd)
    d = tuple(d) if isinstance(d, (tuple, list)) else (int(d),) * nd
    return tuple((kk - 1) * dd + 1 for kk, dd in zip(k, d))


class _Walk:
    def __init__(self):
        self.rows = []

    def path(self, pairs, prefix, shape, rf):
        for name, module in pairs:
            shape, rf = self.module(module, f"{prefix}.{name}" if prefix else name, shape, rf)
        return shape, rf

    def module(self, m, name, shape, rf):
        if callable(getattr(m, "branches", None)) and getattr(m, "join", None):
            return self.block(m, name, shape, rf)
        if m.children:
            taps = getattr(m, "taps", {})
            sides = {s for group in taps.values() for s in group}
            for child_name, child in m.children.items():
                if child_name in sides:
                    continue
                full = f"{name}.{child_name}" if name else child_name
                shape, rf = self.module(child, full, shape, rf)
                for side in taps.get(child_name, ()):
                    if side in m.children:
                        self.module(m.children[side], f"{name}.{side}" if name else side, shape,
                                    rf)
            return shape, rf
        return self.leaf(m, name, shape, rf)

    def leaf(self, m, name, shape, rf):
        kind = type(m).__name__
        try:
            out = tuple(int(s) for s in m.out_shape(shape))
            window = m.window_for(shape) if hasattr(m, "window_for") else None
        except ValueError as exc:
            if hasattr(m, "window_for") and len(shape) > 1:
                raise InputTooSmall(name, kind, shape, _extent(m, len(shape) - 1) or shape[1:],
                                    str(exc)) from None
            raise ValueError(f"layer {name} ({kind}) cannot take input {_hw(shape)}: {exc}") \
                from None
        if window is None and len(shape) > 1 and len(out) == 1:
            window = tuple((n, n, 0) for n in shape[1:])   # flattening: every unit sees it all
        if window is not None and len(window) == len(rf):
            rf = receptive_field_step(rf, window)
        self.rows.append(LayerRow(name, kind, out, trainable_count(m), int(m.macs(shape)), rf))
        return out, rf

    def block(self, m, name, shape, rf):
        outs = [self.path(path, name, shape, rf) for path in m.branches()]
        shapes = [s for s, _ in outs]
        kind = f"{type(m).__name__} ({m.join if len(outs) > 1 else 'no shortcut'})"
        if m.join == "add":
            if len(set(shapes)) != 1:
                raise ValueError(f"block {name} ({kind}): its branches give different shapes "
                                 f"{shapes}; they cannot be added")
            out = shapes[0]
        elif m.join == "concat":
            if len({s[1:] for s in shapes}) != 1:
                raise ValueError(f"block {name} ({kind}): its branches give different spatial "
                                 f"sizes {shapes}; they cannot be concatenated")
            out = (sum(s[0] for s in shapes),) + shapes[0][1:]
        else:
            raise ValueError(f"block {name}: join {m.join!r} is unknown; use 'add' or 'concat'")
        rf = self._join_rf(name, [r for _, r in outs])
        self.rows.append(LayerRow(name, kind, out, trainable_count(m), 0, rf, kind="join"))
        return out, rf

    @staticmethod
    def _join_rf(name, rfs):
        joined = []
        for dim in zip(*rfs):
            if len({j for _, j, _ in dim}) != 1:
                raise ValueError(f"block {name}: its branches step through the input with "
                                 f"different jumps {[j for _, j, _ in dim]}; their outputs do not "
                                 f"line up")
            joined.append(max(dim, key=lambda r: r[0]))
        return tuple(joined)


def _check_shape(input_shape):
    shape = tuple(input_shape)
    if len(shape) < 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape):
        raise ValueError(f"input shape {input_shape!r} must be (C, H, W) or (C, L) with every "
                         f"size a positive int")
    return tuple(int(s) for s in shape)


def describe(model, input_shape):
    """Rows (LayerRow) for every leaf layer of `model` and every join, in forward order, for one
    example of shape `input_shape` ((C, H, W), no batch axis). Raises InputTooSmall (a ValueError
    naming the layer) when a window does not fit its map."""
    shape = _check_shape(input_shape)
    walk = _Walk()
    walk.module(model, "", shape, tuple((1, 1, 0.0) for _ in shape[1:]))
    return walk.rows


def totals(rows):
    """Parameters and MACs summed over the rows; the last row's shape and receptive field."""
    last = rows[-1] if rows else None
    return Totals(sum(r.params for r in rows), sum(r.macs for r in rows),
                  last.out_shape if last else (), last.rf if last else ())


def trace(pairs, input_shape, prefix=""):
    """Output shape of the (name, module) pairs applied in order to one example of `input_shape`;
    raises InputTooSmall / ValueError naming the layer (full name under `prefix`)."""
    shape = _check_shape(input_shape)
    out, _ = _Walk().path(pairs, prefix, shape, tuple((1, 1, 0.0) for _ in shape[1:]))
    return out
