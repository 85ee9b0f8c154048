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
from numconv.kernels.cuda import embedding as gpu_embedding  # noqa: E402
from numconv.kernels.cuda import nn as gpu_nn  # noqa: E402
from numconv.kernels.cuda import nn_elements as gpu_nn_elements  # noqa: E402
from numconv.kernels.cuda import optim as gpu_optim  # noqa: E402
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
    xt, wt = arr(2, 7, 4), arr(6, 3, 4)          # conv1d + max over positions, channels last
    gpu.conv1d_max_backward(np.empty_like(xt), np.empty_like(wt), arr(6), arr(2, 6),
                            np.zeros((2, 6), np.int64), xt, wt, 1, 1, 1)

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
    _call_every_nn_launcher(arr, dtype)


def _call_every_nn_launcher(arr, dtype):
    """The launchers of numconv.kernels.cuda.nn and .embedding, every code path."""
    x, dy, y = arr(2, 3, 4, 5), arr(2, 3, 4, 5), arr(2, 3, 4, 5)
    flat = x.reshape(-1)
    gpu_nn.relu_forward(x), gpu_nn.relu_backward(dy, y)
    gpu_nn.tanh_forward(x, 1.7, 0.6), gpu_nn.tanh_backward(dy, y, 1.7, 0.6)
    gpu_nn.sigmoid_forward(x), gpu_nn.sigmoid_backward(dy, y)
    gpu_nn.hardtanh_forward(x), gpu_nn.hardtanh_backward(dy, x)
    gpu_nn.add(x, y), gpu_nn.add_(x, y), gpu_nn.multiply(x, y), gpu_nn.scale(x, 0.5)
    gpu_nn.fill_(flat, 0), gpu_nn.zeros((3, 4), dtype)
    a, w, b, g = arr(5, 7), arr(4, 7), arr(4), arr(5, 4)
    gpu_nn.linear_forward(a, w, b), gpu_nn.linear_forward(a, w, None)
    gpu_nn.linear_backward(g, a, w)
    for bn_x, bn_dy in ((x, dy), (a, arr(5, 7))):
        C = bn_x.shape[1]
        mean, var = gpu_nn.batch_statistics(bn_x)
        gamma, beta = arr(C), arr(C)
        for stats in ((mean, var), (arr(C), arr(C))):      # batch (float64) and running stats
            out, x_hat, inv = gpu_nn.batchnorm_forward(bn_x, gamma, beta, *stats, 1e-5)
        gpu_nn.batchnorm_update_running(arr(C), arr(C), mean, var, 0.1, 10)
        for training in (True, False):
            gpu_nn.batchnorm_backward(bn_dy, x_hat, gamma, inv, training)
    out, s = gpu_nn.lrn_forward(x, 5, 1e-4, 0.75, 2.0)
    gpu_nn.lrn_backward(dy, x, s, 5, 1e-4, 0.75)
    gpu_nn.dropout_mask((3, 4), 0.5, 1, 2, dtype)
    labels = np.arange(5) % 4
    for weights in (None, np.ones(5)):
        gpu_nn.softmax_cross_entropy(g, labels, 0.1, weights)
    gpu_nn.count_correct(g, labels)
    gpu_nn.max_norm_rows_(w, 3.0)
    gpu_nn.concat_channels([x, y]), gpu_nn.split_channels(x, 1, 2), gpu_nn.transpose(a[None])
    gpu_nn.fill_outside_(x.reshape(2, 3, 20), np.array([3, 5]), 1, 2, -np.inf)
    ids = np.array([3, 1, 3, 0])
    table, dout = arr(5, 4), arr(4, 4)
    gpu_embedding.embedding_forward(dout, table, ids)
    gpu_embedding.embedding_backward(table, dout, np.argsort(ids, kind="stable"),
                                     np.array([0, 1, 2, 4]), np.array([0, 1, 3]))
    p, grad, m, v = flat, y.reshape(-1), dy.reshape(-1), x.reshape(-1).copy()
    for momentum, nesterov in ((0.0, False), (0.9, True)):
        gpu_optim.sgd_update(p, grad, v, 0.1, 1e-4, momentum, nesterov, False)
    gpu_optim.adam_update(p, grad, m, v, 0.01, 0.9, 0.999, 1e-8, 0.0, 0.5)
    gpu_optim.adadelta_update(p, grad, m, v, 1.0, 0.95, 1e-6, 0.0)


@pytest.fixture(scope="module")
def launches():
    """{(kernel, argument types)} over every launcher, float32 and float64."""
    seen = {}

    def record(kernel, *args):
        seen[kernel.py_func, tuple(numba.typeof(a) for a in args)] = kernel

    patches = dict(to_device=np.ascontiguousarray, output=lambda a: (a, None), to_host=np.asarray,
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
    for mod in (gpu_conv, gpu_pool, gpu_nn, gpu_embedding, gpu_optim):
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
    assert len(factories) >= 4, ("the tiled forward, bias-gradient, matmul and channel-sum kernels "
                                 "were not all launched")


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
    functions = [(name, getattr(mod, name)) for mod in (gpu_elementwise, gpu_nn_elements)
                 for name in mod.__all__]
    functions += [("_tree_sum", gpu_nn._tree_sum)] + sorted(gpu_optim._device.items())
    for name, fn in functions:
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


@pytest.mark.parametrize("shared", ["elementwise", "nn"])
def test_device_functions_come_from_the_shared_source(shared):
    import importlib
    source = importlib.import_module(f"numconv.kernels.{shared}")
    compiled = gpu_elementwise if shared == "elementwise" else gpu_nn_elements
    for name in source.__all__:
        fn = getattr(compiled, name)
        assert fn.py_func.__code__ is getattr(source, name).__code__
        assert inspect.getsourcefile(fn.py_func) == inspect.getsourcefile(source)
