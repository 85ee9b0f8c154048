"""`numconv predict RUN IMAGE...`: the label and class probabilities of each image."""
import click

from cli._common import fail_cleanly


@click.command()
@click.argument("run_dir", type=click.Path())
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top", type=int, default=3, show_default=True, help="How many classes to show.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
              show_default=True, help="Where to run.")
def predict(run_dir, inputs, top, device):
    """Classify images (files) with a saved run."""
    from rich.console import Console

    from numconv.train.image import predict_files

    console = Console()
    if device == "cuda":
        raise click.ClickException("device 'cuda' is not available in this build; use --device cpu")
    with fail_cleanly():
        results = predict_files(run_dir, list(inputs))
    for path, probs, classes in results:
        order = probs.argsort()[::-1][:max(1, top)]
        shown = ", ".join(f"{classes[i]} {probs[i]:.1%}" for i in order)
        console.print(f"{path}: [bold]{classes[order[0]]}[/]  ({shown})")
