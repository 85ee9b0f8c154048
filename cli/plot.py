"""`numconv plot RUN [RUN...]`: loss and accuracy per epoch, train and validation, runs overlaid."""
import os

import click

from cli._common import fail_cleanly


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(), default=None,
              help="Output PNG (default: RUN/curves.png for one run, "
                   "FIRST_RUN/curves-compare.png for several).")
def plot(run_dirs, out):
    """Plot training curves of one or more runs."""
    from rich.console import Console

    from numconv import interpret
    from numconv.interpret.figures import output_path

    console = Console()
    name = interpret.CURVES_FILE if len(run_dirs) == 1 else "curves-compare.png"
    with fail_cleanly():
        interpret.require_matplotlib("numconv plot")
        path = interpret.plot_runs(list(run_dirs), output_path(run_dirs[0], out, name))
    console.print(f"wrote {os.path.normpath(path)}")
