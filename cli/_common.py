"""Helpers shared by the commands: turning expected failures into one-line errors."""
import contextlib

import click


@contextlib.contextmanager
def fail_cleanly():
    """Expected errors (bad input, bad checkpoints, a diverged run) become one line and exit 1;
    anything else is a bug and keeps its traceback."""
    from numconv.train.checkpoint import CheckpointError
    from numconv.train.loop import TrainingDiverged
    try:
        yield
    except (ValueError, TypeError, CheckpointError, TrainingDiverged, FileNotFoundError,
            RuntimeError) as exc:
        raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) \
            from None


def plot_curves(console, run_dir):
    """Training curves into the run directory, when the plotting extra is installed."""
    import os

    from numconv.interpret import CURVES_FILE, VizUnavailable, plot_runs
    try:
        console.print(f"curves: {plot_runs([run_dir], os.path.join(run_dir, CURVES_FILE))}")
    except VizUnavailable as exc:
        console.print(str(exc))
