"""The rest of a training step besides convolution and pooling, forward and backward: activations,
fully-connected layers, batch norm, local response norm, dropout and softmax cross-entropy.

On the CPU most of these are NumPy expressions; Numba kernels run the piecewise activations (ReLU,
hardtanh) and the Linear layers' products (numconv.kernels.cpu.linear) in Numba's thread pool,
and the counter-based dropout generator, whose masks are a pure function of (seed, step, element
index) so that every device draws the same ones. Shapes are given in each docstring; the
layers in `numconv.nn` call these, never NumPy directly, so that another device can replace them.

Device dispatch: when the arrays passed are GPU device arrays (numba's, or anything with
`__cuda_array_interface__`), the same call runs the CUDA twin in `numconv.kernels.cuda.nn` and
returns device arrays; host arrays take the NumPy path below, unchanged. One call never mixes the
two (labels and example weights excepted: they are part of the batch and are copied over).
"""
import importlib

import numpy as np
from numba import njit, prange

from numconv import config
from numconv.kernels import nn as elements
from numconv.kernels.cpu import linear as cpu_linear
from numconv.ops import _buffers as buffers
from numconv.ops._device import kernels_for


def on_gpu(a):
    """True for an array that lives on the GPU (numba device arrays, CuPy, PyTorch CUDA tensors)."""
    if isinstance(a, np.ndarray):      # the CPU path's case, answered first
        return False
    return bool(getattr(a, "__cuda_ndarray__", False)) or hasattr(a, "__cuda_array_interface__")


def _gpu(**arrays):
    """`numconv.kernels.cuda.nn` when the named arrays live on the GPU, None when they live on the
    host; a mix of the two is an error naming which is where."""
    if all(a is None or isinstance(a, np.ndarray) for a in arrays.values()):
        return None
    where = {name: on_gpu(a) for name, a in arrays.items() if a is not None}
    if not any(where.values()):
        return None
    if not all(where.values()):
        on = ", ".join(k for k, v in where.items() if v)
        off = ", ".join(k for k, v in where.items() if not v)
        raise ValueError(f"{on} on the GPU but {off} on the host: one op needs all its arrays on "
                         f"one device. Move the model with model.to('cuda') and each batch with "
                         f"numconv.nn.to_device(x), or keep everything on the CPU")
    kernels_for("cuda")   # a clear error where CUDA cannot run
    return importlib.import_module("numconv.kernels.cuda.nn")


# ------------------------------------------------------------------------- array arithmetic

def add(a, b):
    gpu = _gpu(a=a, b=b)
    return gpu.add(a, b) if gpu else a + b


def accumulate(dst, src):
    """dst += src in place (gradients add up over a step); returns dst."""
    gpu = _gpu(dst=dst, src=src)
    if gpu:
        gpu.add_(dst, src)
    else:
        dst += src
    return dst


def multiply(a, b):
    gpu = _gpu(a=a, b=b)
    return gpu.multiply(a, b) if gpu else a * b


def scale(a, s):
    """s * a for a Python number s, in a's dtype."""
    gpu = _gpu(a=a)
    return gpu.scale(a, s) if gpu else s * a

# ------------------------------------------------------------------------------------ activations

LECUN_A, LECUN_S = 1.7159, 2.0 / 3.0   # LeCun et al. 1998, appendix A: f(a) = A tanh(S a)


# The per-element arithmetic is shared with the CUDA kernels (numconv.kernels.nn): one definition,
# compiled for each device. On the CPU the piecewise activations run as parallel loops over the
# flat arrays (NumPy's np.where built a mask and a copy, single-threaded: 4x slower on LeNet's
# first layer).
_shared = elements.compile_for(njit, cache=True)
_relu, _relu_grad = _shared["relu_element"], _shared["relu_grad_element"]
_hardtanh, _hardtanh_grad = _shared["hardtanh_element"], _shared["hardtanh_grad_element"]


@njit(parallel=True, cache=True)
def _relu_cpu(out, x):
    for i in prange(x.size):
        out[i] = _relu(x, i)


@njit(parallel=True, cache=True)
def _relu_grad_cpu(out, dy, y):
    for i in prange(dy.size):
        out[i] = _relu_grad(dy, y, i)


@njit(parallel=True, cache=True)
def _hardtanh_cpu(out, x):
    for i in prange(x.size):
        out[i] = _hardtanh(x, i)


@njit(parallel=True, cache=True)
def _hardtanh_grad_cpu(out, dy, x):
    for i in prange(dy.size):
        out[i] = _hardtanh_grad(dy, x, i)


@njit(parallel=True, cache=True)
def _zero_cpu(flat):
    for i in prange(flat.size):
        flat[i] = 0


def zero_(a):
    """a[...] = 0 in place, on either device; a large C-contiguous host array is cleared by
    Numba's threads (an embedding table's gradient is megabytes, cleared every step)."""
    if on_gpu(a):
        from numconv.kernels.cuda.nn import fill_
        fill_(a, 0)
    elif a.size >= config.CPU_PARALLEL_ZERO_MIN and a.flags.c_contiguous:
        _zero_cpu(a.reshape(-1))
    else:
        a[...] = 0


def _flat_map(kernel, *arrays, into_first=False):
    """kernel(out, *flat arrays) over C-contiguous copies of `arrays`, all of the first's shape
    and dtype; returns out in that shape. into_first=True writes out into the first array when it
    is a writeable C-contiguous array of its own dtype (each element is read before it is
    overwritten), with no new allocation."""
    first = arrays[0]
    for name, a in zip(("second", "third"), arrays[1:]):
        if a.shape != first.shape:
            raise ValueError(f"activation gradient: shapes differ, {first.shape} and {a.shape} "
                             f"({name} argument)")
    flat = [np.ascontiguousarray(a, first.dtype).reshape(-1) for a in arrays]
    in_place = into_first and first.flags.c_contiguous and first.flags.writeable
    out = flat[0] if in_place else buffers.empty((first.size,), first.dtype)
    kernel(out, *flat)
    return out.reshape(first.shape)


def relu_forward(x):
    gpu = _gpu(x=x)
    if gpu:
        return gpu.relu_forward(x)
    return _flat_map(_relu_cpu, x)


def relu_backward(dy, y, inplace=False):
    """dx = dy where the unit was active (y > 0); the kink at 0 takes the zero side.
    inplace=True: dx overwrites dy (a host array the caller owns), with no new allocation."""
    gpu = _gpu(dy=dy, y=y)
    if gpu:
        return gpu.relu_backward(dy, y)
    return _flat_map(_relu_grad_cpu, dy, y, into_first=inplace)


def tanh_forward(x, scale=1.0, slope=1.0):
    gpu = _gpu(x=x)
    if gpu:
        return gpu.tanh_forward(x, scale, slope)
    return (scale * np.tanh(slope * x)).astype(x.dtype, copy=False)


def tanh_backward(dy, y, scale=1.0, slope=1.0):
    """d/da [A tanh(S a)] = S (A - y^2 / A)."""
    gpu = _gpu(dy=dy, y=y)
    if gpu:
        return gpu.tanh_backward(dy, y, scale, slope)
    return (dy * (slope * (scale - y * y / scale))).astype(dy.dtype, copy=False)


def sigmoid_forward(x):
    gpu = _gpu(x=x)
    if gpu:
        return gpu.sigmoid_forward(x)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(x.dtype, copy=False)  # stable for any |x|


def sigmoid_backward(dy, y):
    gpu = _gpu(dy=dy, y=y)
    if gpu:
        return gpu.sigmoid_backward(dy, y)
    return dy * y * (1 - y)


def hardtanh_forward(x):
    gpu = _gpu(x=x)
    if gpu:
        return gpu.hardtanh_forward(x)
    return _flat_map(_hardtanh_cpu, x)


def hardtanh_backward(dy, x, inplace=False):
    """dx = dy where -1 < x < 1; inplace=True as for relu_backward."""
    gpu = _gpu(dy=dy, x=x)
    if gpu:
        return gpu.hardtanh_backward(dy, x)
    return _flat_map(_hardtanh_grad_cpu, dy, x, into_first=inplace)


# ---------------------------------------------------------------------------------------- linear

def linear_forward(x, w, b):
    """x (N, I), w (O, I) (PyTorch's layout), b (O,) or None -> y (N, O)."""
    gpu = _gpu(x=x, w=w, b=b)
    if gpu:
        return gpu.linear_forward(x, w, b)
    dt = np.result_type(x, w)
    x, w = np.ascontiguousarray(x, dt), np.ascontiguousarray(w, dt)
    y = buffers.empty((x.shape[0], w.shape[0]), dt)
    cpu_linear.linear_forward(y, x, w, None if b is None else np.ascontiguousarray(b, dt))
    return y


def linear_backward(dy, x, w, need_input=True):
    """-> dx (N, I) or None, dw (O, I), db (O,)."""
    gpu = _gpu(dy=dy, x=x, w=w)
    if gpu:
        return gpu.linear_backward(dy, x, w, need_input)
    dt = np.result_type(dy, x, w)
    dy, x, w = (np.ascontiguousarray(a, dt) for a in (dy, x, w))
    dx = None
    if need_input:
        dx = buffers.empty((dy.shape[0], w.shape[1]), dt)
        cpu_linear.linear_backward_input(dx, dy, w)
    dw = np.empty(w.shape, dtype=dt)
    cpu_linear.linear_backward_weight(dw, dy, x)
    db = np.empty(dy.shape[1], dtype=dt)
    cpu_linear.linear_backward_bias(db, dy)
    return dx, dw, db


# ------------------------------------------------------------------------------------ batch norm

def batchnorm_forward(x, gamma, beta, mean, var, eps):
    """Normalise x (N, C, ...) per channel with the given statistics, then scale and shift.
    Returns y, x_hat (kept for the backward pass) and inv = 1 / sqrt(var + eps) (C,)."""
    gpu = _gpu(x=x, gamma=gamma, beta=beta, mean=mean, var=var)
    if gpu:
        return gpu.batchnorm_forward(x, gamma, beta, mean, var, eps)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    x_hat = (x - mean.reshape(shape).astype(x.dtype)) * inv.reshape(shape)
    return x_hat * gamma.reshape(shape) + beta.reshape(shape), x_hat, inv


def batch_statistics(x):
    """Per-channel mean and biased variance of x (N, C, ...), accumulated in float64."""
    gpu = _gpu(x=x)
    if gpu:
        return gpu.batch_statistics(x)
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64)
    var = x.var(axis=axes, dtype=np.float64)
    return mean, var


def batchnorm_backward(dy, x_hat, gamma, inv, training):
    """-> dx, dgamma, dbeta. In training the statistics depend on x (the full formula); in eval
    they are constants and dx is just dy * gamma * inv."""
    gpu = _gpu(dy=dy, x_hat=x_hat, gamma=gamma, inv=inv)
    if gpu:
        return gpu.batchnorm_backward(dy, x_hat, gamma, inv, training)
    axes = (0,) + tuple(range(2, dy.ndim))
    shape = (1, -1) + (1,) * (dy.ndim - 2)
    dgamma = (dy * x_hat).sum(axis=axes, dtype=np.float64).astype(dy.dtype)
    dbeta = dy.sum(axis=axes, dtype=np.float64).astype(dy.dtype)
    scale = (gamma * inv).reshape(shape)
    if not training:
        return dy * scale, dgamma, dbeta
    m = dy.size // dy.shape[1]
    dx = scale * (dy - (dbeta.reshape(shape) + x_hat * dgamma.reshape(shape)) / m)
    return dx.astype(dy.dtype, copy=False), dgamma, dbeta


def batchnorm_update_running(running_mean, running_var, mean, var, momentum, count):
    """In place, PyTorch's convention: running = (1 - m) running + m batch statistic, the variance
    unbiased by count / (count - 1) (count: values per channel in the batch)."""
    gpu = _gpu(running_mean=running_mean, running_var=running_var, mean=mean, var=var)
    if gpu:
        gpu.batchnorm_update_running(running_mean, running_var, mean, var, momentum, count)
        return
    m = momentum
    running_mean[...] = (1 - m) * running_mean + m * mean
    running_var[...] = (1 - m) * running_var + m * var * count / max(count - 1, 1)


# --------------------------------------------------------------------------- local response norm

def _channel_window_sum(a, size):
    """s[:, c] = sum of a[:, c'] for c' in [c - size//2, c + (size-1)//2] within range."""
    C = a.shape[1]
    cs = np.concatenate([np.zeros_like(a[:, :1]), np.cumsum(a, axis=1, dtype=np.float64)], axis=1)
    lo = np.clip(np.arange(C) - size // 2, 0, C)
    hi = np.clip(np.arange(C) + (size - 1) // 2 + 1, 0, C)
    return (cs[:, hi] - cs[:, lo]).astype(a.dtype)


def lrn_forward(x, size, alpha, beta, k):
    """AlexNet's local response normalisation across channels (Krizhevsky et al. 2012, sec. 3.3):
    b_c = a_c / (k + alpha * sum_{c' near c} a_c'^2)^beta. (PyTorch divides alpha by `size`.)
    Returns y and the denominator base s (kept for backward)."""
    gpu = _gpu(x=x)
    if gpu:
        return gpu.lrn_forward(x, size, alpha, beta, k)
    s = k + alpha * _channel_window_sum(x * x, size)
    return x * s ** -beta, s


def lrn_backward(dy, x, s, size, alpha, beta):
    """dx_c = dy_c s_c^-beta - 2 alpha beta x_c sum_{j: c in window(j)} dy_j x_j s_j^(-beta-1)."""
    gpu = _gpu(dy=dy, x=x, s=s)
    if gpu:
        return gpu.lrn_backward(dy, x, s, size, alpha, beta)
    t = dy * x * s ** (-beta - 1)
    # The windows are symmetric for odd sizes; for even sizes, "c in window(j)" is the mirror.
    C = x.shape[1]
    cs = np.concatenate([np.zeros_like(t[:, :1]), np.cumsum(t, axis=1, dtype=np.float64)], axis=1)
    lo = np.clip(np.arange(C) - (size - 1) // 2, 0, C)
    hi = np.clip(np.arange(C) + size // 2 + 1, 0, C)
    back = (cs[:, hi] - cs[:, lo]).astype(x.dtype)
    return (dy * s ** -beta - 2 * alpha * beta * x * back).astype(dy.dtype, copy=False)


# -------------------------------------------------------------------------------------- dropout

# The generator's arithmetic is shared with the CUDA kernel (numconv.kernels.nn): one definition,
# so both devices draw bit-identical masks.
_dropout_key, _dropout_keep = _shared["dropout_key"], _shared["dropout_keep"]


@njit(parallel=True, cache=True)
def _dropout_mask(mask, seed, step, keep):
    """mask[i] = 1/keep if uniform(seed, step, i) < keep else 0, a pure function of its counter."""
    key = _dropout_key(seed, step)
    scale = 1.0 / keep
    for i in prange(mask.size):
        mask[i] = _dropout_keep(key, i, keep, scale)


def dropout_mask(shape, p, seed, step, dtype=np.float32, device="cpu"):
    """Inverted-dropout mask: each element kept with probability 1 - p and scaled by 1/(1 - p).
    device='cuda' draws the same bits on the GPU and returns a device array."""
    if device == "cuda":
        kernels_for("cuda")
        return importlib.import_module("numconv.kernels.cuda.nn").dropout_mask(shape, p, seed,
                                                                               step, dtype)
    mask = np.empty(int(np.prod(shape)), dtype=dtype)
    _dropout_mask(mask, np.uint64(seed), np.uint64(step), 1.0 - p)
    return mask.reshape(shape)


# ------------------------------------------------------------------------ softmax cross-entropy

def softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, labels, label_smoothing=0.0, weights=None):
    """Mean cross-entropy of softmax(logits (N, K)) against integer labels (N,), computed from
    log-sum-exp so that large logits never overflow. With label smoothing e the target is
    (1 - e) one_hot + e / K. `weights` (N,) weight each example (e.g. a mask for padding tokens);
    the mean is over their sum. Returns (loss as float, dlogits (N, K)).
    With logits on the GPU, dlogits stays there and only the loss is copied back."""
    gpu = _gpu(logits=logits)
    if gpu:
        return gpu.softmax_cross_entropy(logits, labels, label_smoothing, weights)
    N, K = logits.shape
    w = np.ones(N) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    total = max(float(w.sum()), 1e-12)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if labels.shape != (N,) or (N and (labels.min() < 0 or labels.max() >= K)):
        raise ValueError(f"labels must be {N} class indices in [0, {K}) for logits of shape "
                         f"{logits.shape}; got shape {labels.shape}"
                         + (f", values {labels.min()}..{labels.max()}" if labels.size else ""))
    dlogits = np.empty((N, K), dtype=logits.dtype)
    row_loss = np.empty(N)
    _softmax_xent_rows(dlogits, row_loss, np.ascontiguousarray(logits), labels,
                       float(label_smoothing), w, total)
    return float(row_loss.sum() / total), dlogits


@njit(parallel=True, cache=True)
def _softmax_xent_rows(dlogits, row_loss, logits, labels, smoothing, w, total):
    """Row n's weighted cross-entropy (float64, from log-sum-exp) into row_loss[n] and its
    gradient into dlogits[n]; rows are independent, the caller sums row_loss in order. (The
    arithmetic of numconv.kernels.nn.cross_entropy_row, which the CUDA kernel runs; compiled
    here with explicit float64 casts and np.exp, that row function lost about 1e-7 of the loss
    for float32 logits, against 1e-15 for this one.)"""
    N, K = logits.shape
    off = smoothing / K
    for n in prange(N):
        top = np.float64(logits[n, 0])
        for k in range(1, K):
            top = max(top, np.float64(logits[n, k]))
        s = 0.0
        for k in range(K):
            s += np.exp(np.float64(logits[n, k]) - top)
        lse = np.log(s)
        acc = 0.0
        scale = w[n] / total
        for k in range(K):
            logp = np.float64(logits[n, k]) - top - lse
            t = off + (1.0 - smoothing if k == labels[n] else 0.0)
            acc -= t * logp
            dlogits[n, k] = (np.exp(logp) - t) * scale
        row_loss[n] = w[n] * acc


def count_correct(logits, labels):
    """How many rows of logits (N, K) have their first maximum at the integer label (an int; on
    the GPU only this count is copied back)."""
    gpu = _gpu(logits=logits)
    if gpu:
        return gpu.count_correct(logits, labels)
    return int(np.sum(np.argmax(logits, axis=1) == labels))
