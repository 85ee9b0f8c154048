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


def check_resume_options(resume_dir, allowed=("resume_dir", "device", "threads")):
    """--resume continues a run with the configuration it saved (that is what makes it exact):
    any other option given on the command line would be ignored, so it is an error instead."""
    if not resume_dir:
        return
    ctx = click.get_current_context()
    given = [p for p in ctx.command.params if p.name not in allowed
             and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        names = ", ".join(p.opts[0] for p in given)
        raise click.UsageError(f"--resume continues {resume_dir} with its saved configuration "
                               f"(config.json), so {names} would be ignored; drop "
                               f"{'them' if len(given) > 1 else 'it'} (only --device and "
                               f"--threads may change), or start a new run with --run-dir")


def plot_curves(console, run_dir):
    """Training curves into the run directory, when the plotting extra is installed."""
    import os

    from numconv.interpret import CURVES_FILE, VizUnavailable, plot_runs
    try:
        console.print(f"curves: {plot_runs([run_dir], os.path.join(run_dir, CURVES_FILE))}")
    except VizUnavailable as exc:
        console.print(str(exc))


DEVICE_HELP = ("cpu, cuda (an NVIDIA GPU through numba-cuda) or auto (cuda where a GPU is usable, "
               "else cpu). Checkpoints are host arrays: a run trained on one device evaluates, "
               "predicts and resumes on the other.")


def pick_device(device):
    """--device cpu|cuda|auto -> 'cpu' or 'cuda'. cuda where it cannot run is a one-line error
    that says why (no driver, no device, numba-cuda missing) and what to use instead."""
    from numconv.ops._device import cuda_unavailable_reason, resolve_device
    if device == "cuda":
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise click.ClickException(f"--device cuda: CUDA is not usable here: {reason}; use "
                                       f"--device cpu (or --device auto, which falls back to it)")
    return resolve_device(device)


def run_options(what, default_run_dir):
    """The options every training command ends with: --device, --threads, --seed, --run-dir and
    --resume (`what`: what the run directory holds besides the configuration and checkpoints)."""
    options = [
        click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]),
                     help="Where to train: " + DEVICE_HELP + " Default: cpu; a resumed run keeps "
                          "the device it was trained on."),
        click.option("--threads", type=click.IntRange(min=1),
                     help="CPU threads (default: all cores)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed for everything."),
        click.option("--run-dir", default=default_run_dir, show_default=True,
                     help=f"Where the configuration, {what}, checkpoints and report go."),
        click.option("--resume", "resume_dir", type=click.Path(), default=None,
                     help="Continue the interrupted run in this directory exactly where it "
                          "stopped."),
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate

