"""Which kernel module runs an op: 'cpu' (@njit), 'cuda' (@cuda.jit, imported lazily) or
'reference' (the plain NumPy definition, slow)."""
import functools
import importlib
import importlib.util

DEVICES = ("cpu", "cuda", "reference")


def kernels_for(device):
    if device == "cpu":
        return _cpu_kernels()
    if device == "reference":
        return importlib.import_module("numconv.kernels.reference")
    if device == "cuda":
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"device 'cuda' is not available: {reason}; use device='cpu'")
        return importlib.import_module("numconv.kernels.cuda")
    raise ValueError(f"device {device!r} is unknown; use one of {', '.join(DEVICES)}")


@functools.lru_cache(maxsize=None)
def _cpu_kernels():
    return importlib.import_module("numconv.kernels.cpu")


def resolve_device(device):
    """'auto' -> 'cuda' where the CUDA kernels can run, else 'cpu'; any other name unchanged."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return device


def cuda_available():
    """True when the CUDA kernels can run here: a usable GPU, or the CUDA simulator."""
    return cuda_unavailable_reason() is None


@functools.lru_cache(maxsize=None)
def cuda_unavailable_reason():
    """None when the CUDA kernels can run here, else why not, in a few words (one line).

    The simulator (NUMBA_ENABLE_CUDASIM=1, set before numba is imported) counts as available.
    Checked once per process: the driver does not come and go.
    """
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed (pip install 'numconv[cuda]')"
    try:
        from numba import cuda
        from numba.cuda.core import config as cuda_config
    except ImportError as exc:   # e.g. the CUDA Python bindings are missing
        return f"numba-cuda cannot be imported ({_one_line(exc)})"
    if cuda_config.ENABLE_CUDASIM:
        return None
    from numba.cuda.cudadrv import driver
    try:
        driver_ok = driver.driver.is_available
    except Exception:   # the driver raises CudaSupportError on a failed cuInit
        driver_ok = False
    if not driver_ok:
        error = _one_line(driver.driver.initialization_error or "unknown error")
        if "cannot be found" in error:
            return "no NVIDIA driver was found (libcuda.so is not on the library path)"
        if "NO_DEVICE" in error:
            return "the NVIDIA driver found no CUDA device"
        if "NUMBA_DISABLE_CUDA" in error:
            return "CUDA is disabled (NUMBA_DISABLE_CUDA=1)"
        return f"the NVIDIA driver failed to initialise ({error})"
    try:
        from numba.cuda.cudadrv import nvvm
        nvvm_ok = nvvm.is_available()
    except Exception:
        nvvm_ok = False
    if not nvvm_ok:
        return "NVVM is not installed (pip install 'numba-cuda[cu13]')"
    try:
        n_gpus = len(cuda.gpus)
    except Exception as exc:
        return f"the CUDA devices cannot be listed ({_one_line(exc)})"
    if n_gpus == 0:
        return "the NVIDIA driver found no CUDA device"
    return None


def _one_line(message):
    return " ".join(str(message).split())
