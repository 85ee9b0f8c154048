"""Training curves: loss and accuracy per epoch, train and validation, from each run's
metrics.jsonl; several runs overlaid (one colour per run, train solid, validation dashed)."""
import json
import os

from numconv.interpret._render import new_figure, save_figure

CURVES_FILE = "curves.png"
SERIES = (("loss", "train_loss", "val_loss"), ("accuracy", "train_acc", "val_acc"))


def load_metrics(run_dir):
    """The epoch records of a run (metrics.jsonl), oldest first; ValueError when there are none."""
    path = os.path.join(str(run_dir), "metrics.jsonl")
    if not os.path.isdir(str(run_dir)):
        raise ValueError(f"run directory {run_dir} does not exist")
    if not os.path.exists(path):
        raise ValueError(f"{run_dir} has no metrics.jsonl: no epoch has finished yet; train it "
                         f"first")
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    raise ValueError(f"{path} line {n} is not JSON; the file is corrupt") from None
    if not records:
        raise ValueError(f"{path} is empty: no epoch has finished yet; train it first")
    return records


def _labels(run_dirs):
    """Short, distinct legend labels: base names, or more of the path where base names clash."""
    paths = [os.path.normpath(os.path.abspath(str(r))) for r in run_dirs]
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    return [os.path.relpath(p, common) for p in paths]


def plot_runs(run_dirs, out_path):
    """Draw the curves of `run_dirs` (one or more) into the PNG `out_path` (written atomically).
    Returns out_path. Raises ValueError for a run without metrics, VizUnavailable without
    matplotlib."""
    run_dirs = [str(r) for r in run_dirs]
    if not run_dirs:
        raise ValueError("no run directory given; pass at least one")
    histories = [load_metrics(r) for r in run_dirs]
    fig = new_figure(11, 4.2, "numconv plot")
    axes = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(run_dirs))]
    for label, colour, records in zip(_labels(run_dirs), colours, histories):
        epochs = [r.get("epoch", i + 1) for i, r in enumerate(records)]
        for ax, (title, train_key, val_key) in zip(axes, SERIES):
            for key, style, part in ((train_key, "-", "train"), (val_key, "--", "val")):
                pts = [(e, r[key]) for e, r in zip(epochs, records) if r.get(key) is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour,
                            marker="o", markersize=3, label=f"{label} {part}")
    for ax, (title, _, _) in zip(axes, SERIES):
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, str(out_path))
