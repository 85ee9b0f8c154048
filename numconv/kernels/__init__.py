"""Kernels: the arithmetic of every op, on each device, with one slow reference beside them.

`reference` defines each op in plain NumPy loops; `cpu` holds the @njit kernels; `cuda` (imported
lazily) the @cuda.jit twins. All three take the same arguments in the same order, outputs first,
already validated and normalised by `numconv.ops`.
"""
