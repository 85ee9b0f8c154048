"""`numconv describe MODEL`: a model's layers (output shape, parameters, multiply-accumulates,
receptive field), its totals and its paper's training recipe, as rich tables.

Receptive fields are in input pixels: size (extent seen by one unit), jump (distance between
neighbouring units) and start (the input coordinate of the first unit's centre, pixel centres at
0, 1, 2, ...)."""
import click


def parse_input(text):
    """'3x224x224' (or '224', or '3,224,224') -> (C, H, W); None if it does not parse."""
    parts = text.lower().replace(",", "x").replace("*", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        return None
    if len(sizes) == 1:
        sizes = [None, sizes[0], sizes[0]]
    if len(sizes) != 3 or any(s is not None and s < 1 for s in sizes):
        return None
    return tuple(sizes)


def _rf(rf):
    """Receptive field per dimension as ('size/jump', 'start'), e.g. ('11/4', '5'); one entry when
    the dimensions agree, 'a x b' otherwise."""
    def one(parts):
        return parts[0] if len(set(parts)) == 1 else " x ".join(parts)
    return (one([f"{int(size)}/{int(jump)}" for size, jump, _ in rf]),
            one([f"{start:g}" for _, _, start in rf]))


def _shape(shape):
    return "x".join(str(s) for s in shape)


@click.command()
@click.argument("model")
@click.option("--input", "input_text", default=None, metavar="CxHxW",
              help="Input shape of one example, e.g. 3x224x224 (default: the paper's).")
@click.option("--classes", type=click.IntRange(min=1), default=None,
              help="Number of classes (default: the paper's).")
@click.option("--width", type=float, default=1.0, show_default=True,
              help="Width multiplier: scales every layer's channel count.")
@click.option("--classic", is_flag=True, help="LeNet-5 only: the 1998 tanh/subsampling variant.")
@click.option("--aux", is_flag=True, help="GoogLeNet only: include the auxiliary classifiers.")
@click.option("--joins/--no-joins", default=True, show_default=True,
              help="Show the rows that close residual and inception blocks (add / concat).")
def describe(model, input_text, classes, width, classic, aux, joins):
    """Show MODEL's layers: output shapes, parameters, MACs and receptive fields."""
    from rich.console import Console
    from rich.table import Table

    from numconv import models
    from numconv.describe import describe as describe_model
    from numconv.describe import totals

    if model not in models.MODELS:
        raise click.ClickException(f"model {model!r} is unknown; choose one of "
                                   f"{', '.join(models.MODELS)}")
    C, H, W = models.default_input(model)
    if input_text is not None:
        parsed = parse_input(input_text)
        if parsed is None:
            raise click.ClickException(f"--input {input_text!r} is not an input shape; write "
                                       f"CxHxW with positive sizes, e.g. {C}x{H}x{W}")
        C, H, W = (C if parsed[0] is None else parsed[0]), parsed[1], parsed[2]
    if not width > 0:
        raise click.ClickException(f"--width must be > 0, got {width}")
    options = {}
    if classic:
        options["classic"] = True
    if aux:
        options["aux"] = True
    try:
        net = models.build_model(model, num_classes=classes, in_channels=C, input_size=(H, W),
                                 width=width, initialize=False, **options)
        rows = describe_model(net, (C, H, W))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    total = totals(rows)

    console = Console()
    table = Table(title=f"{model} on {_shape((C, H, W))}"
                        + (f", width {width:g}" if width != 1 else "")
                        + "".join(f", {k}" for k in options))
    for col, just in (("layer", "left"), ("type", "left"), ("output", "right"),
                      ("params", "right"), ("MACs", "right"), ("RF size/jump", "right"),
                      ("RF start", "right")):
        table.add_column(col, justify=just, overflow="fold")
    for r in rows:
        if r.kind == "join" and not joins:
            continue
        style = "dim" if r.kind == "join" else None
        table.add_row(r.name, r.type, _shape(r.out_shape), f"{r.params:,}" if r.params else "",
                      f"{r.macs:,}" if r.macs else "", *_rf(r.rf), style=style)
    console.print(table)
    n_params = models.count_parameters(net)
    console.print(f"parameters: {n_params:,} trainable"
                  + (f" (of {net.num_parameters():,} stored)"
                     if n_params != net.num_parameters() else "")
                  + f"   MACs per example: {total.macs:,}   output: {_shape(total.out_shape)}")

    rec = models.recipe(model, classic=classic)
    recipe = Table(title=f"training recipe ({rec.pop('source')})", show_header=False)
    recipe.add_column("key")
    recipe.add_column("value")
    note = rec.pop("note", None)
    unused = {"step": ("factor", "patience"), "plateau": ("step_size", "gamma"),
              "cosine": ("step_size", "gamma", "factor", "patience"),
              "constant": ("step_size", "gamma", "factor", "patience")}.get(rec["schedule"], ())
    for key, value in rec.items():
        if value is not None and key not in unused:
            recipe.add_row(key, str(value))
    if note:
        recipe.add_row("note", note)
    console.print(recipe)
