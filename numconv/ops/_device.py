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
        except ImportError as exc:
            raise RuntimeError(f"device 'cuda' is not available: {exc}; use device='cpu'") from None
    raise ValueError(f"device {device!r} is unknown; use one of {', '.join(DEVICES)}")
