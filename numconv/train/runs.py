"""Opening a saved run: its configuration, its model with the best (or last) weights."""
import json
import os

from numconv import models
from numconv.train.image import model_options
from numconv.train.checkpoint import CheckpointError, checkpoint_path, load_checkpoint


def load_run(run_dir, which="best"):
    """-> (config dict, model in eval mode). Falls back to the last checkpoint if no best exists."""
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if not os.path.exists(cfg_path):
        raise CheckpointError(f"{run_dir} has no config.json: not a numconv run directory")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path} is corrupt: {exc}") from None
    path = checkpoint_path(run_dir, which)
    if not os.path.exists(path):
        path = checkpoint_path(run_dir, "last")
    if not os.path.exists(path):
        raise CheckpointError(f"{run_dir} has no checkpoint yet (checkpoints/best.npz or "
                              f"last.npz); train it first")
    state, _, _, meta = load_checkpoint(path)
    C, H, W = cfg["input_shape"]
    model = models.build_model(cfg["model"], num_classes=len(cfg["classes"]), in_channels=C,
                               input_size=(H, W), width=cfg.get("width", 1.0), seed=0,
                               **model_options(cfg["model"], cfg.get("classic", False),
                                               cfg.get("aux", False)))
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} does not match the run's model "
                              f"{cfg['model']}: {exc}") from None
    model.eval()
    return cfg, model
