"""Compiling a module's per-element functions for one device.

`numconv.kernels.elementwise`, `nn` and `optim` each write the arithmetic of one output element as
plain Python and compile it for the CPU (`numba.njit`) and for CUDA (`numba.cuda.jit(device=True)`);
this is the one place that does the compiling.
"""
import types


def compile_functions(namespace, names, jit, **options):
    """The functions `names` of `namespace` (a module's globals) compiled with
    `jit(function, **options)`, in that order (callees before their callers), as {name: compiled}.

    Calls between these functions go to the compiled versions: each is compiled from a copy whose
    globals map the other names to their compiled twins (Numba resolves globals when it compiles).
    """
    env = dict(namespace)
    compiled = {}
    for name in names:
        f = namespace[name]
        twin = types.FunctionType(f.__code__, env, f.__name__, f.__defaults__, f.__closure__)
        twin.__qualname__, twin.__module__, twin.__doc__ = f.__qualname__, f.__module__, f.__doc__
        env[name] = compiled[name] = jit(twin, **options)
    return compiled
