"""`numconv export RUN`: the run's weights as a safetensors file with PyTorch's parameter names and
layouts, loadable into the equivalent PyTorch model with load_state_dict."""
import click

from cli._common import fail_cleanly


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(), default=None,
              help="Output file (default: RUN/model.safetensors).")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
              show_default=True, help="Which checkpoint to export.")
def export(run_dir, out, checkpoint):
    """Write a run's weights as safetensors for PyTorch."""
    from numconv.train.export import export_safetensors

    with fail_cleanly():
        path, n = export_safetensors(run_dir, out, which=checkpoint)
    click.echo(f"wrote {n} tensors to {path}")
