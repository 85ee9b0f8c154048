"""Run directories and checkpoints, written atomically (write to a temporary file in the same
folder, flush, then rename over the target), so a crash never leaves a broken file behind.

A checkpoint is an .npz read with allow_pickle=False: no code, only arrays. Keys:
  model/<PyTorch name>        parameters and buffers
  optim/<param>/<buffer>      optimiser state
  sched/<name>                schedule state
  meta                        a JSON document (epoch, step, metrics, config) as uint8 bytes
"""
import contextlib
import json
import os
import shutil
import tempfile

import numpy as np

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or does not match the model."""


def atomic_write_bytes(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _atomic_savez(path, arrays):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path, model_state, optim_state=None, sched_state=None, meta=None):
    arrays = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    for k, v in (optim_state or {}).items():
        arrays[f"optim/{k}"] = np.asarray(v)
    for k, v in (sched_state or {}).items():
        arrays[f"sched/{k}"] = np.asarray(v)
    arrays["meta"] = np.frombuffer(json.dumps(meta or {}, sort_keys=True).encode(), dtype=np.uint8)
    _atomic_savez(path, arrays)


def load_checkpoint(path):
    """-> (model_state, optim_state, sched_state, meta). Raises CheckpointError with the reason."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(bytes(data.pop("meta")).decode())
    except Exception as exc:  # zip, npy and JSON errors alike: the file is not a good checkpoint
        raise CheckpointError(f"checkpoint {path} is corrupt or not a numconv checkpoint "
                              f"({type(exc).__name__}: {exc})") from None
    parts = {"model": {}, "optim": {}, "sched": {}}
    for key, arr in data.items():
        head, _, rest = key.partition("/")
        if head not in parts:
            raise CheckpointError(f"checkpoint {path} has an unknown entry {key!r}")
        parts[head][rest] = arr
    return parts["model"], parts["optim"], parts["sched"], meta


@contextlib.contextmanager
def removed_if_unstarted(run_dir, resume, markers=("config.json",)):
    """Around a run: a run directory it created that holds none of `markers` when the run fails
    (it failed before writing its configuration) is removed, so nothing is left half-way."""
    run_dir = os.path.abspath(run_dir)
    fresh = not resume and not os.path.exists(run_dir)
    try:
        yield
    except BaseException:
        if fresh and not any(os.path.exists(os.path.join(run_dir, m)) for m in markers):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def prepare_run_dir(run_dir, resume=False):
    """Create (or, when resuming, find) the run directory; fail early if it cannot be written."""
    run_dir = os.path.abspath(run_dir)
    saved = os.path.exists(checkpoint_path(run_dir))
    if resume:
        if not os.path.isdir(run_dir):
            raise CheckpointError(f"run directory {run_dir} does not exist; nothing to resume")
        if os.path.exists(os.path.join(run_dir, "config.json")) and not saved:
            raise CheckpointError(f"run directory {run_dir} has no checkpoint: its run stopped "
                                  f"before it saved one; start it again with --run-dir {run_dir}")
    else:
        # a run that stopped before its first checkpoint (a NaN loss in its first epoch) left
        # only its configuration: a new run may take the directory over
        if os.path.exists(os.path.join(run_dir, "config.json")) and saved:
            raise CheckpointError(f"run directory {run_dir} already holds a run; use --resume "
                                  f"{run_dir} to continue it, or choose another --run-dir")
        try:
            os.makedirs(os.path.join(run_dir, CHECKPOINT_DIR), exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create run directory {run_dir}: {exc.strerror}") \
                from None
    probe = os.path.join(run_dir, ".write-test")
    try:
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as exc:
        raise CheckpointError(f"run directory {run_dir} is not writable: {exc.strerror}") \
            from None
    return run_dir


def checkpoint_path(run_dir, which="last"):
    return os.path.join(run_dir, CHECKPOINT_DIR, f"{which}.npz")


def restore_training_state(run_dir, model, optimizer, schedule, model_state, optim_state,
                           sched_state):
    """Load a checkpoint's three parts into a freshly built model, optimiser and schedule; a
    mismatch (another architecture, another optimiser) is a CheckpointError naming the run."""
    try:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        schedule.load_state_dict(sched_state)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint in {run_dir} does not match its configuration: "
                              f"{exc}") from None
