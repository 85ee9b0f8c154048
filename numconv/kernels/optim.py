"""Optimiser updates, one parameter element at a time, written once and compiled for each device.

Each `*_element` function updates element i of a parameter and its state buffers in place, reading
that element's gradient; nothing else is touched, so any number of threads may run different i
at once. `compile_for(numba.njit)` gives CPU functions (driven by the loops below) and
`compile_for(numba.cuda.jit, device=True)` CUDA device functions, so both devices apply the same
arithmetic. All arrays are flat (a parameter's `reshape(-1)`); scalars arrive as float64, and each
update is computed in float64 and stored in the parameter's dtype.

The rules are PyTorch's (see `numconv.optim`), with L2 weight decay added to the gradient:
  SGD:      g += wd p;  v = g (first step) or mu v + g;  p -= lr (g + mu v if nesterov else v)
  Adam:     g += wd p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
            p -= lr/(1-b1^t) m / (sqrt(v/(1-b2^t)) + eps)
  Adadelta: g += wd p;  s = rho s + (1-rho) g^2;  d = sqrt(a + eps)/sqrt(s + eps) g;
            a = rho a + (1-rho) d^2;  p -= lr d
"""
import math

from numba import njit, prange

from numconv.kernels._twins import compile_functions

__all__ = ["sgd_element", "adam_element", "adadelta_element"]

# Below this many elements a parameter is updated by one thread: a parallel region costs more
# than it saves on LeNet-sized tensors.
PARALLEL_MIN = 1 << 15


def compile_for(jit, **options):
    """Every function of `__all__` compiled with `jit(function, **options)`, as {name: compiled}
    (see `numconv.kernels._twins`)."""
    return compile_functions(globals(), __all__, jit, **options)


def sgd_element(p, g, v, i, lr, wd, momentum, nesterov, first):
    gi = g[i] + wd * p[i]
    if momentum != 0.0:
        vi = gi if first else momentum * v[i] + gi
        v[i] = vi
        gi = gi + momentum * vi if nesterov else vi
    p[i] = p[i] - lr * gi


def adam_element(p, g, m, v, i, step, beta1, beta2, eps, wd, correction2):
    gi = g[i] + wd * p[i]
    mi = beta1 * m[i] + (1.0 - beta1) * gi
    vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
    m[i] = mi
    v[i] = vi
    p[i] = p[i] - step * mi / (math.sqrt(vi / correction2) + eps)


def adadelta_element(p, g, sq, acc, i, lr, rho, eps, wd):
    gi = g[i] + wd * p[i]
    si = rho * sq[i] + (1.0 - rho) * gi * gi
    d = math.sqrt(acc[i] + eps) / math.sqrt(si + eps) * gi
    sq[i] = si
    acc[i] = rho * acc[i] + (1.0 - rho) * d * d
    p[i] = p[i] - lr * d


# ------------------------------------------------------------------------------- CPU drivers

_cpu = compile_for(njit, cache=True)
_sgd, _adam, _adadelta = _cpu["sgd_element"], _cpu["adam_element"], _cpu["adadelta_element"]


@njit(cache=True)
def _sgd_serial(p, g, v, lr, wd, momentum, nesterov, first):
    for i in range(p.size):
        _sgd(p, g, v, i, lr, wd, momentum, nesterov, first)


@njit(cache=True, parallel=True)
def _sgd_parallel(p, g, v, lr, wd, momentum, nesterov, first):
    for i in prange(p.size):
        _sgd(p, g, v, i, lr, wd, momentum, nesterov, first)


@njit(cache=True)
def _adam_serial(p, g, m, v, step, beta1, beta2, eps, wd, correction2):
    for i in range(p.size):
        _adam(p, g, m, v, i, step, beta1, beta2, eps, wd, correction2)


@njit(cache=True, parallel=True)
def _adam_parallel(p, g, m, v, step, beta1, beta2, eps, wd, correction2):
    for i in prange(p.size):
        _adam(p, g, m, v, i, step, beta1, beta2, eps, wd, correction2)


@njit(cache=True)
def _adadelta_serial(p, g, sq, acc, lr, rho, eps, wd):
    for i in range(p.size):
        _adadelta(p, g, sq, acc, i, lr, rho, eps, wd)


@njit(cache=True, parallel=True)
def _adadelta_parallel(p, g, sq, acc, lr, rho, eps, wd):
    for i in prange(p.size):
        _adadelta(p, g, sq, acc, i, lr, rho, eps, wd)


def sgd_update(p, g, v, lr, wd, momentum, nesterov, first):
    """In place on flat p and v (v unused when momentum is 0)."""
    kernel = _sgd_parallel if p.size >= PARALLEL_MIN else _sgd_serial
    kernel(p, g, v, float(lr), float(wd), float(momentum), bool(nesterov), bool(first))


def adam_update(p, g, m, v, step, beta1, beta2, eps, wd, correction2):
    kernel = _adam_parallel if p.size >= PARALLEL_MIN else _adam_serial
    kernel(p, g, m, v, float(step), float(beta1), float(beta2), float(eps), float(wd),
           float(correction2))


def adadelta_update(p, g, sq, acc, lr, rho, eps, wd):
    kernel = _adadelta_parallel if p.size >= PARALLEL_MIN else _adadelta_serial
    kernel(p, g, sq, acc, float(lr), float(rho), float(eps), float(wd))
