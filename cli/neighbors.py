"""`numconv neighbors RUN IMAGE... --layer NAME -k 6`: the training images nearest to each image in
a layer's feature space, one row per query."""
import click

from cli._common import fail_cleanly


@click.command()
@click.argument("run_dir", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--layer", default=None,
              help="Layer whose activations are compared (default: the last hidden layer).")
@click.option("-k", "k", type=int, default=6, show_default=True,
              help="Neighbours per image.")
@click.option("--no-cache", is_flag=True,
              help="Recompute the training features instead of reading or writing the cache.")
@click.option("--out", type=click.Path(), default=None,
              help="Output PNG file, or a folder for it (default: the run directory).")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which checkpoint of the run to read.")
def neighbors(run_dir, images, layer, k, no_cache, out, which):
    """Show the k training images closest to each image in feature space."""
    from rich.console import Console

    from numconv import interpret
    from numconv.interpret.figures import neighbors_figure, output_path

    console = Console()
    with fail_cleanly():
        interpret.require_matplotlib("numconv neighbors")
        if k < 1:
            raise ValueError(f"-k must be >= 1, got {k}")
        run = interpret.open_run(run_dir, which)
        if layer is not None:
            interpret.get_layer(run.model, layer)   # a bad name fails before the data loads
        split = run.training_split()
        stored, x = interpret.load_images_for(run, images, tuple(split.x.shape[2:]))
        result = interpret.neighbors(run, x, layer, min(k, len(split.y)),
                                     use_cache=not no_cache)
        path = neighbors_figure(stored, result, split.x, split.y, run.classes,
                                output_path(run_dir, out, f"neighbors-{result.layer}.png"))
    bank = result.bank
    if run.note:
        console.print(run.note)
    console.print(f"features at {result.layer} ({bank.features.shape[1]} values) for "
                  f"{len(bank.features)} training images: "
                  f"{'read from' if bank.cached else 'computed, cached in'} {bank.path}")
    for q, image in enumerate(images):
        shown = ", ".join(f"#{int(i)} {run.classes[int(split.y[i])]} ({d:.3g})"
                          for i, d in zip(result.indices[q], result.distances[q]))
        console.print(f"{image}: {shown}")
    console.print(f"wrote {path}")
