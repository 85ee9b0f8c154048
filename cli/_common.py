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
