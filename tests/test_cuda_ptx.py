"""Every CUDA kernel and device function compiles to PTX for real targets (sm_80 and sm_90).

The simulator runs kernels as Python and accepts code the real compiler rejects, so this compiles
each with `numba.cuda.compile_ptx`, which needs NVVM (numba-cuda[cu13] installs it as a wheel) but
no GPU. The signatures are the launchers' own: every launcher is called, in float32 and float64,
with `numconv.kernels.cuda._launch` swapped for a recorder that notes each kernel and the Numba
types of its arguments instead of launching (NumPy arrays type as the device arrays they stand
for). The device functions are compiled with the argument types the kernels call them with.

Skipped, with the reason, where numba-cuda or NVVM is not installed.
"""
import importlib.util
import inspect

import numpy as np
import pytest

if importlib.util.find_spec("numba_cuda") is None:
    pytest.skip("numba-cuda is not installed (pip install 'numconv[cuda]')",
                allow_module_level=True)

import numba  # noqa: E402
from numba import cuda  # noqa: E402
from numba.cuda.core import config as cuda_config  # noqa: E402

if cuda_config.ENABLE_CUDASIM:
    pytest.skip("the CUDA simulator is on in this process; PTX needs the real compiler",
                allow_module_level=True)
try:
    from numba.cuda.cudadrv import nvvm  # noqa: E402
    _NVVM = nvvm.is_available()
except Exception:  # pragma: no cover - depends on the installation
    _NVVM = False
if not _NVVM:
    pytest.skip("NVVM is not installed (pip install 'numba-cuda[cu13]')", allow_module_level=True)

import numba.cuda.dispatcher as cuda_dispatcher  # noqa: E402

from numconv import config  # noqa: E402
from numconv.kernels import cuda as gpu  # noqa: E402
from numconv.kernels.cuda import _launch  # noqa: E402
from numconv.kernels.cuda import conv as gpu_conv  # noqa: E402
from numconv.kernels.cuda import elementwise as gpu_elementwise  # noqa: E402
from numconv.kernels.cuda import pool as gpu_pool  # noqa: E402

TARGETS = [(8, 0), (9, 0)]
FLOATS = (np.float32, np.float64)


# ------------------------------------------------------------------------ recording the launches

def _call_every_launcher(dtype):
    """Call each launcher once per code path on small host arrays of `dtype`."""
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x, w, b = arr(2, 4, 6, 5), arr(6, 2, 3, 3), arr(6)
    y, dy, dx, dwt, db = arr(2, 6, 6, 5), arr(2, 6, 6, 5), arr(2, 4, 6, 5), arr(6, 2, 3, 3), arr(6)
    conv = (1, 1, 1, 1, 1, 1, 2)   # sh, sw, pt, pl, dh, dw, groups
    for forward in ("tiled", "direct"):
        config.CUDA_CONV_FORWARD = forward
        gpu.conv2d_forward(y, x, w, b, *conv)
        gpu.conv2d_forward(y, x, w, None, *conv)
    gpu.conv2d_backward_input(dx, dy, w, *conv)
    for segment in (10**9, 7):          # one segment (no partial sums) and several
        config.CUDA_WGRAD_SEGMENT = segment
        gpu.conv2d_backward_weight(dwt, dy, x, *conv)
    gpu.conv2d_backward_bias(db, dy)

    p, idx = arr(2, 4, 3, 3), np.zeros((2, 4, 3, 3), np.int64)
    window = (2, 2, 2, 2, 0, 0)        # kh, kw, sh, sw, pt, pl
    gpu.maxpool2d_forward(p, idx, x, *window)
    gpu.maxpool2d_backward(dx, p, idx, *window)
    gpu.avgpool2d_forward(p, x, *window, 0, 0, True)
    gpu.avgpool2d_backward(dx, p, *window, 0, 0, False)
    gpu.lppool2d_forward(p, x, 2.0, *window)
    gpu.lppool2d_backward(dx, p, x, p, 2.0, *window)
    g, gidx = arr(2, 4), np.zeros((2, 4), np.int64)
    for kind in ("max", "avg", "sum"):
        gpu.global_pool2d_forward(g, gidx, x, kind)
        gpu.global_pool2d_backward(dx, g, gidx, kind)


@pytest.fixture(scope="module")
def launches():
    """{(kernel, argument types)} over every launcher, float32 and float64."""
    seen = {}

    def record(kernel, *args):
        seen[kernel.py_func, tuple(numba.typeof(a) for a in args)] = kernel

    patches = dict(to_device=np.ascontiguousarray, output=lambda a: (a, None),
                   empty=lambda shape, dtype: np.empty(shape, dtype),
                   copy_back=lambda dev, host: None,
                   launch_1d=lambda kernel, total, *args: record(kernel, *args),
                   launch=lambda kernel, blocks, threads, *args: record(kernel, *args))
    saved = {name: getattr(_launch, name) for name in patches}
    saved_config = {k: getattr(config, k) for k in ("CUDA_CONV_FORWARD", "CUDA_WGRAD_SEGMENT")}
    try:
        for name, f in patches.items():
            setattr(_launch, name, f)
        for dtype in FLOATS:
            _call_every_launcher(dtype)
    finally:
        for name, f in saved.items():
            setattr(_launch, name, f)
        for k, v in saved_config.items():
            setattr(config, k, v)
    return seen


class _Device:
    def __init__(self, cc):
        self.compute_capability = cc


def _compile_all(launches, cc):
    """Compile every launched kernel for `cc`; returns the failures, one line each."""
    failures = []
    for py_func, sig in launches:
        label = f"{py_func.__module__}.{py_func.__qualname__}{sig}"
        try:
            ptx, _ = cuda.compile_ptx(py_func, sig, cc=cc)
        except Exception as exc:
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        if f".target sm_{cc[0]}{cc[1]}" not in ptx:
            failures.append(f"{label}: the PTX is not for sm_{cc[0]}{cc[1]}")
    return failures


@pytest.fixture(scope="module")
def kernel_failures(launches):
    """{cc: failures} from compiling every launched kernel for each target.

    numba-cuda compiles a device function called from a kernel for the *current* device's compute
    capability, which it asks the driver for (numba/cuda/dispatcher.py, compile_device), even
    under compile_ptx. With no GPU here, it is told the target being compiled for instead.
    Device functions are typed once, for the first target, and their compiled IR is linked into
    the kernels of both; test_device_functions_compile_to_ptx compiles each for each target.
    """
    real = cuda_dispatcher.get_current_device
    results = {}
    try:
        for cc in TARGETS:
            cuda_dispatcher.get_current_device = lambda cc=cc: _Device(cc)
            results[cc] = _compile_all(launches, cc)
    finally:
        cuda_dispatcher.get_current_device = real
    return results


def _module_kernels():
    """Every @cuda.jit kernel defined at module level in numconv.kernels.cuda, by name."""
    found = {}
    for mod in (gpu_conv, gpu_pool):
        for name, obj in vars(mod).items():
            if isinstance(obj, cuda_dispatcher.CUDADispatcher) and not obj.targetoptions.get(
                    "device"):
                found[f"{mod.__name__}.{name}"] = obj
    return found


# ---------------------------------------------------------------------------------------- tests

def test_every_kernel_is_launched_by_some_launcher(launches):
    launched = {f for f, _ in launches}
    missing = [name for name, k in _module_kernels().items() if k.py_func not in launched]
    assert not missing, f"kernels no launcher runs (so not compiled below): {missing}"
    factories = [f for f in launched if f.__qualname__.count("<locals>")]
    assert len(factories) >= 2, "the tiled forward and bias-gradient kernels were not launched"


@pytest.mark.parametrize("cc", TARGETS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def test_kernels_compile_to_ptx(launches, kernel_failures, cc):
    assert not kernel_failures[cc], "\n".join(kernel_failures[cc])
    dtypes = {str(t.dtype) for _, sig in launches for t in sig if isinstance(t, numba.types.Array)}
    assert {"float32", "float64"} <= dtypes


@pytest.mark.parametrize("cc", TARGETS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def test_device_functions_compile_to_ptx(kernel_failures, cc):
    # Compiling the kernels typed each device function for the arguments the kernels pass it
    # (its overloads); compile each of those signatures on its own.
    failures, unused = [], []
    for name in gpu_elementwise.__all__:
        fn = getattr(gpu_elementwise, name)
        assert fn.targetoptions.get("device"), f"{name} is not a device function"
        if not fn.overloads:
            unused.append(name)
        for args in list(fn.overloads):
            try:
                ptx, _ = cuda.compile_ptx(fn.py_func, args, device=True, cc=cc)
                assert f".target sm_{cc[0]}{cc[1]}" in ptx
            except Exception as exc:
                failures.append(f"{name}{args}: {type(exc).__name__}: {exc}")
    assert not unused, f"device functions no kernel calls: {unused}"
    assert not failures, "\n".join(failures)


def test_device_functions_come_from_the_shared_source():
    from numconv.kernels import elementwise
    for name in elementwise.__all__:
        fn = getattr(gpu_elementwise, name)
        assert fn.py_func.__code__ is getattr(elementwise, name).__code__
        assert inspect.getsourcefile(fn.py_func) == inspect.getsourcefile(elementwise)
