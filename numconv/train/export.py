"""Export a run's weights as safetensors: PyTorch's names and layouts, no pickled code."""
import os

import numpy as np

from numconv.train.checkpoint import atomic_write_bytes
from numconv.train.runs import load_run


def export_safetensors(run_dir, out=None, which="best"):
    from safetensors.numpy import save

    from numconv.text import is_text_run
    if is_text_run(run_dir):
        from numconv.text.train import load_text_run
        model = load_text_run(run_dir, which)[3]
    else:
        _, model = load_run(run_dir, which)
    tensors = {k: np.ascontiguousarray(v) for k, v in model.state_dict().items()}
    path = out or os.path.join(run_dir, "model.safetensors")
    atomic_write_bytes(path, save(tensors, metadata={"format": "pt"}))
    return path, len(tensors)
