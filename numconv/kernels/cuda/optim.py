"""CUDA twins of the fused optimiser updates in `numconv.kernels.optim`: the same per-element
functions, compiled as device functions, one thread per parameter element.

The launchers have the CPU drivers' names and arguments and update flat device arrays in place.
Scalars are handed over as NumPy float64 so that every term is computed in float64 on both devices
(and in the simulator, where a bare Python float would meet float32 data as float32).
"""
import numpy as np
from numba import cuda

from numconv.kernels import optim as _source
from numconv.kernels.cuda import _launch

_device = _source.compile_for(cuda.jit, device=True)
_sgd, _adam = _device["sgd_element"], _device["adam_element"]
_adadelta = _device["adadelta_element"]


@cuda.jit
def _sgd_update(p, g, v, lr, wd, momentum, nesterov, first):
    i = cuda.grid(1)
    if i < p.size:
        _sgd(p, g, v, i, lr, wd, momentum, nesterov, first)


@cuda.jit
def _adam_update(p, g, m, v, step, beta1, beta2, eps, wd, correction2):
    i = cuda.grid(1)
    if i < p.size:
        _adam(p, g, m, v, i, step, beta1, beta2, eps, wd, correction2)


@cuda.jit
def _adadelta_update(p, g, sq, acc, lr, rho, eps, wd):
    i = cuda.grid(1)
    if i < p.size:
        _adadelta(p, g, sq, acc, i, lr, rho, eps, wd)


def _f64(*values):
    return tuple(np.float64(v) for v in values)


def sgd_update(p, g, v, lr, wd, momentum, nesterov, first):
    """In place on flat device arrays p and v (v unused when momentum is 0)."""
    _launch.launch_1d(_sgd_update, p.size, p, g, v, *_f64(lr, wd, momentum), bool(nesterov),
                      bool(first))


def adam_update(p, g, m, v, step, beta1, beta2, eps, wd, correction2):
    _launch.launch_1d(_adam_update, p.size, p, g, m, v, *_f64(step, beta1, beta2, eps, wd,
                                                               correction2))


def adadelta_update(p, g, sq, acc, lr, rho, eps, wd):
    _launch.launch_1d(_adadelta_update, p.size, p, g, sq, acc, *_f64(lr, rho, eps, wd))
