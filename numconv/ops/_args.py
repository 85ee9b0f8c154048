"""Validation and normalisation shared by every op: arrays, dtypes, sizes and padding.

Every error names the parameter, the value it got and what would fix it, and is raised here, before
any kernel runs.
"""
import numbers

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)
PADDING_MODES = ("valid", "same", "full")


def as_float_array(name, a, ndim, layout):
    """`a` as a C-contiguous float32/float64 array of `ndim` dimensions (copied only if needed)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of shape {layout}, got {type(a).__name__}; "
                        f"wrap it with np.asarray(..., dtype=np.float32)")
    if a.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {a.dtype}; numconv computes in float32 or float64: "
                        f"convert with {name}.astype(np.float32)")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}); every dimension of {layout} must be "
                         f"at least 1")
    return np.ascontiguousarray(a)


def same_dtype(**arrays):
    """All named arrays must share one dtype: mixing float32 and float64 is an error, not a cast."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    first_name, first = items[0]
    for name, a in items[1:]:
        if a.dtype != first.dtype:
            raise TypeError(f"{name} is {a.dtype} but {first_name} is {first.dtype}; use one dtype, "
                            f"e.g. {name}.astype(np.{first.dtype})")


def int_tuple(name, value, nd, minimum=1):
    """An int or a tuple of `nd` ints, each >= minimum, as a tuple of `nd` Python ints."""
    if type(value) is int and value >= minimum:       # the common cases, checked in one test
        return (value,) * nd
    if type(value) is tuple and len(value) == nd and all(type(v) is int and v >= minimum
                                                         for v in value):
        return value
    vals = (value,) * nd if isinstance(value, numbers.Integral) else value
    try:
        vals = tuple(vals)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of {nd} ints, got {value!r}") from None
    if len(vals) != nd or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                  for v in vals):
        raise TypeError(f"{name} must be an int or a tuple of {nd} ints, got {value!r}")
    for v in vals:
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum} in every dimension, got {value!r}")
    return tuple(int(v) for v in vals)


def resolve_padding(padding, in_sizes, kernel_extents, strides):
    """Padding as ((before, after), ...) per spatial dimension.

    Accepts an int, one int per dimension, one (before, after) pair per dimension, or a mode:
    'valid' (none), 'full' (extent - 1 on each side: every partial overlap) and 'same' (output size
    ceil(in / stride); the total padding max((out - 1) * stride + extent - in, 0) is split as in
    TensorFlow: before = total // 2, after = total - before, the extra pixel going after, i.e. to the
    bottom/right). `kernel_extents` are the dilated kernel sizes (k - 1) * dilation + 1.
    """
    nd = len(in_sizes)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in PADDING_MODES:
            raise ValueError(f"padding mode {padding!r} is unknown; use one of "
                             f"{', '.join(PADDING_MODES)}, an int, or per-dimension values")
        if mode == "valid":
            return tuple((0, 0) for _ in range(nd))
        if mode == "full":
            return tuple((e - 1, e - 1) for e in kernel_extents)
        pads = []
        for n, e, s in zip(in_sizes, kernel_extents, strides):
            out = -(-n // s)
            total = max((out - 1) * s + e - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        pads = ((int(padding), int(padding)),) * nd
    else:
        try:
            items = tuple(padding)
        except TypeError:
            raise TypeError(f"padding must be an int, a tuple or a mode string, got {padding!r}") \
                from None
        if len(items) != nd:
            raise ValueError(f"padding {padding!r} must give {nd} value(s), one per spatial "
                             f"dimension (or (before, after) pairs)")
        pads = []
        for p in items:
            if isinstance(p, numbers.Integral) and not isinstance(p, bool):
                pads.append((int(p), int(p)))
            elif isinstance(p, (tuple, list)) and len(p) == 2 and all(
                    isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in p):
                pads.append((int(p[0]), int(p[1])))
            else:
                raise TypeError(f"padding {padding!r}: each entry must be an int or a "
                                f"(before, after) pair of ints, got {p!r}")
        pads = tuple(pads)
    for p in pads:
        if p[0] < 0 or p[1] < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
    return pads


def output_size(name, n, pad, extent, stride, ceil_mode=False):
    """Number of windows of size `extent` and step `stride` over n + pads positions."""
    padded = n + pad[0] + pad[1]
    if extent > padded:
        raise ValueError(f"{name}: the kernel extent {extent} is larger than the padded input "
                         f"{padded} (input {n} + padding {pad[0]}+{pad[1]}); use a smaller kernel "
                         f"or dilation, more padding, or a larger input")
    if not ceil_mode:
        return (padded - extent) // stride + 1
    out = -(-(padded - extent) // stride) + 1
    # The last window must start inside the input or its leading padding (PyTorch's rule).
    if (out - 1) * stride >= n + pad[0]:
        out -= 1
    return out
