"""`numconv visualize filters|maximize|shift RUN ...`: pictures of what a trained CNN computes,
written as PNG files into the run directory (or --out)."""
import click

from cli._common import fail_cleanly

WHICH = click.option("--which", type=click.Choice(["best", "last"]), default="best",
                     show_default=True, help="Which checkpoint of the run to read.")
OUT = click.option("--out", type=click.Path(), default=None,
                   help="Output PNG file, or a folder for it (default: the run directory).")


def _channels(values):
    """--channel 3 --channel 5, or --channel 3,5 -> [3, 5]."""
    out = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(int(part))
            except ValueError:
                raise click.BadParameter(f"{part!r} is not a channel number; pass e.g. "
                                         f"--channel 3 or --channel 0,1,2",
                                         param_hint="--channel") from None
    return out


@click.group()
def visualize():
    """Filters, activation maximisation and shift equivariance of a saved run."""


@visualize.command()
@click.argument("run_dir", type=click.Path())
@click.option("--scale", type=int, default=None,
              help="Pixels per weight (default: enough for 32-pixel tiles).")
@click.option("--top", type=int, default=5, show_default=True,
              help="Text runs: n-grams listed per filter.")
@OUT
@WHICH
def filters(run_dir, scale, top, out, which):
    """Draw the first convolution's filters as a grid, each scaled to its own range (text runs:
    list the training n-grams that excite each filter most)."""
    from rich.console import Console

    from numconv import interpret
    from numconv.interpret.figures import output_path, write_filter_grid

    console = Console()
    if _is_text_run(run_dir):
        return _text_filters(console, run_dir, top, out, which)
    with fail_cleanly():
        if scale is not None and scale < 1:
            raise ValueError(f"--scale must be >= 1, got {scale}")
        interpret._render.require_pillow("numconv visualize filters")
        run = interpret.open_run(run_dir, which)
        grid = interpret.first_layer_grid(run.model, scale)
        path = write_filter_grid(grid, output_path(run_dir, out, grid.file_name))
    kind = "RGB" if grid.image.ndim == 3 else "greyscale"
    console.print(f"{grid.layer}: {grid.shape[0]} filters of shape "
                  f"{'x'.join(str(s) for s in grid.shape[1:])} ({kind}, each scaled to its own "
                  f"range) -> {path}")


def _is_text_run(run_dir):
    try:
        from numconv.text import is_text_run
    except ImportError:
        return False
    return is_text_run(str(run_dir))


def _text_filters(console, run_dir, top, out, which):
    from numconv.interpret.figures import output_path
    from numconv.interpret.text_filters import kim_filter_ngrams
    from numconv.train.checkpoint import atomic_write_text
    with fail_cleanly():
        if top < 1:
            raise ValueError(f"--top must be >= 1, got {top}")
        rows = kim_filter_ngrams(run_dir, top, which)
        lines = [f"{r.conv} (width {r.width}) filter {r.filter}: "
                 + ", ".join(f"'{g}' {v:.3g}" for g, v in r.top) for r in rows]
        path = output_path(run_dir, out, "filters-ngrams.txt")
        atomic_write_text(path, "\n".join(lines) + "\n")
    for line in lines:
        console.print(line, markup=False, highlight=False)
    console.print(f"wrote {path}")


@visualize.command()
@click.argument("run_dir", type=click.Path())
@click.option("--layer", required=True,
              help="Layer to excite (numconv describe shows the names); 'logits' for the class "
                   "scores.")
@click.option("--channel", "channels", multiple=True, required=True,
              help="Channel (or class) index; repeat it or give a comma list for several in one "
                   "grid.")
@click.option("--steps", type=int, default=200, show_default=True, help="Gradient-ascent steps.")
@click.option("--lr", type=float, default=0.1, show_default=True,
              help="Step size, in normalised pixel units (the gradient is scaled to mean 1).")
@click.option("--l2", type=float, default=0.01, show_default=True,
              help="Decay towards the dataset mean after each step (L2 regulariser).")
@click.option("--blur-every", type=int, default=4, show_default=True,
              help="Blur the image every N steps (0: never).")
@click.option("--jitter", type=int, default=1, show_default=True,
              help="Roll the image by up to this many pixels before each step.")
@click.option("--start", type=click.Choice(["noise", "mean"]), default="noise",
              show_default=True, help="Start from noise or from the dataset mean image.")
@click.option("--objective", type=click.Choice(["mean", "center"]), default="mean",
              show_default=True,
              help="Maximise the channel's mean over its map, or its centre unit only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for noise and jitter.")
@OUT
@WHICH
def maximize(run_dir, layer, channels, steps, lr, l2, blur_every, jitter, start, objective, seed,
             out, which):
    """Optimise an input image to excite one channel (or class logit) of a layer."""
    from rich.console import Console

    from numconv import interpret
    from numconv.interpret.figures import maximize_figure, output_path

    console = Console()
    ks = _channels(channels)
    with fail_cleanly():
        interpret.require_matplotlib("numconv visualize maximize")
        run = interpret.open_run(run_dir, which)
        logits = layer == "logits" or interpret.get_layer(run.model, layer).stop == \
            len(interpret.layer_stages(run.model)) - 1
        settings = interpret.MaxSettings(steps=steps, lr=lr, l2=l2, blur_every=blur_every,
                                         jitter=jitter, start=start, seed=seed,
                                         objective=objective)
        result = interpret.maximize(run.model, layer, ks, run.input_shape, run.mean, run.std,
                                    settings)
        name = f"maximize-{result.layer}-{'_'.join(str(k) for k in result.channels)}.png"
        path = maximize_figure(result, run.mean, run.std, output_path(run_dir, out, name),
                               run.classes, logits)
    for i, k in enumerate(result.channels):
        what = f"class {run.classes[k]}" if logits else f"channel {k}"
        console.print(f"{result.layer} {what}: {objective} activation {result.start_activation[i]:.4g} "
                      f"-> {result.final_activation[i]:.4g}")
    console.print(f"wrote {path}")


@visualize.command()
@click.argument("run_dir", type=click.Path())
@click.argument("image", type=click.Path())
@click.option("--dx", type=int, default=3, show_default=True,
              help="Shift right by this many input pixels (negative: left).")
@click.option("--dy", type=int, default=0, show_default=True,
              help="Shift down by this many input pixels (negative: up).")
@click.option("--layer", default=None,
              help="Layer whose maps are drawn (default: the first convolution).")
@OUT
@WHICH
def shift(run_dir, image, dx, dy, layer, out, which):
    """Feature maps of an image and its shifted copy, with each conv layer's equivariance error."""
    from rich.console import Console
    from rich.table import Table

    from numconv import interpret
    from numconv.interpret.figures import output_path, shift_figure

    console = Console()
    with fail_cleanly():
        interpret.require_matplotlib("numconv visualize shift")
        run = interpret.open_run(run_dir, which)
        layer = interpret.get_layer(run.model, layer).name if layer else \
            interpret.first_conv(run.model)[0]
        _, x = interpret.load_images_for(run, [image],
                                         lambda: run.training_split().x.shape[2:])
        report = interpret.measure_shift(run.model, x, dy, dx, run.black(), keep_maps=[layer])
        path = shift_figure(report, layer, run.mean, run.std,
                            output_path(run_dir, out, f"shift-{layer}-dy{dy}-dx{dx}.png"))
    table = Table(title=f"shift ({dy}, {dx}) input pixels")
    for col in ("layer", "type", "stride", "map shift", "interior", "equivariance error"):
        table.add_column(col)
    for r in report.layers:
        err = "n/a (no interior)" if r.error != r.error else f"{r.error:.2e}"
        if r.error == r.error and not r.exact:
            err += " (shift not a multiple of the stride)"
        table.add_row(r.name, r.kind, f"{r.jump[0]}x{r.jump[1]}", f"({r.shift[0]}, {r.shift[1]})",
                      str(r.interior), err)
    console.print(table)
    console.print(f"invariance error after {report.pooled}: {report.invariance:.2e}")
    console.print(f"wrote {path}")
