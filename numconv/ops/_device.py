"""Which kernel module runs an op: 'cpu' (@njit), 'cuda' (@cuda.jit, imported lazily) or
'reference' (the plain NumPy definition, slow)."""
import importlib

DEVICES = ("cpu", "cuda", "reference")


def kernels_for(device):
    if device == "cpu":
        return importlib.import_module("numconv.kernels.cpu")
    if device == "reference":
        return importlib.import_module("numconv.kernels.reference")
    if device == "cuda":
        try:
            return importlib.import_module("numconv.kernels.cuda")
        except ModuleNotFoundError as exc:
            if exc.name == "numconv.kernels.cuda":
                reason = "this build of numconv has no CUDA kernels yet"
            else:
                reason = f"{exc.name} is not installed (pip install 'numconv[cuda]')"
            raise RuntimeError(f"device 'cuda' is not available: {reason}; use device='cpu'") \
                from None
    raise ValueError(f"device {device!r} is unknown; use one of {', '.join(DEVICES)}")
