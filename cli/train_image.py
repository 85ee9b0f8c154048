"""`numconv train-image`: train an image CNN; with no options, LeNet-5 on MNIST (or, offline with
nothing cached, on scikit-learn's bundled 8x8 digits, said in one line). --stream trains on a
dataset too large for memory."""
import click

from cli._common import (check_resume_options, fail_cleanly, pick_device, plot_curves,
                         run_options)


def _int_list(value):
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated epochs such as 91,136, got {value!r}")


def _float_list(value):
    if value is None:
        return None
    try:
        values = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        values = None
    if not values or not all(v > 0 for v in values):
        raise click.BadParameter(f"expected comma-separated positive rates such as 0.1,0.01, "
                                 f"got {value!r}")
    return values


def _check_option_conflicts(augment, opts):
    """Options that would do nothing with the rest of the command line are errors: momentum and
    Nesterov with Adam or Adadelta, milestones without the multistep schedule, and --augment where
    the recipe augments nothing and no --crop-padding or --flip says how."""
    from numconv.models.recipes import recipe
    ctx = click.get_current_context()

    def given(name):
        return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE

    try:
        rec = recipe(opts["model"], classic=opts.get("classic") or False)
    except (KeyError, ValueError):
        return                                   # an unknown model: the pipeline says so
    optimizer = opts["optimizer"] or rec.get("optimizer", "sgd")
    for name in ("momentum", "nesterov"):
        if given(name) and optimizer != "sgd":
            raise click.UsageError(f"--{name} applies to SGD only, and the optimiser is "
                                   f"{optimizer}; drop --{name} or give --optimizer sgd")
    schedule = opts["schedule"] or rec.get("schedule", "constant")
    for name, kinds in (("milestones", ("multistep",)), ("lr_values", ("multistep",)),
                        ("step_size", ("step",)), ("gamma", ("step", "multistep")),
                        ("factor", ("plateau",)), ("patience", ("plateau",))):
        if given(name) and schedule not in kinds:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{flag} applies to the {' and '.join(kinds)} schedule, and the "
                                   f"schedule is {schedule}; drop {flag} or give --schedule "
                                   f"{kinds[0]}")
    crop = opts["crop_padding"] if opts["crop_padding"] is not None else rec.get("crop_padding")
    flip = opts["flip"] if opts["flip"] is not None else rec.get("flip")
    if augment and not crop and not flip:
        raise click.UsageError(f"--augment keeps the recipe's augmentation, and {opts['model']}'s "
                               f"recipe has none; say which with --crop-padding N and/or --flip")


@click.command("train-image")
@click.option("--model", default="lenet5", show_default=True,
              help="Architecture: lenet5, smallcnn, alexnet, vgg11/13/16/19, googlenet, "
                   "resnet18..152, resnet20..110, plain20..110 (numconv describe MODEL shows "
                   "one).")
@click.option("--dataset", default="mnist", show_default=True,
              help="A name (mnist, fashion_mnist, cifar10, imagenette, tiny-imagenet, digits) or a "
                   "path (IDX folder, image folder, parquet/arrow/csv file).")
@click.option("--epochs", type=int, help="Epochs (default: the model's recipe).")
@click.option("--batch-size", type=int, help="Batch size (default: the recipe's).")
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adadelta"]),
              help="Optimiser (default: the recipe's).")
@click.option("--lr", type=float, help="Learning rate (default: the recipe's).")
@click.option("--momentum", type=float, help="SGD momentum.")
@click.option("--nesterov/--no-nesterov", default=None, help="Nesterov momentum for SGD.")
@click.option("--weight-decay", type=float, help="L2 weight decay.")
@click.option("--schedule", type=click.Choice(["constant", "step", "multistep", "cosine",
                                                "plateau"]),
              help="Learning-rate schedule.")
@click.option("--milestones", callback=lambda ctx, p, v: _int_list(v),
              help="Epochs where 'multistep' divides the rate, e.g. 91,136.")
@click.option("--lr-values", callback=lambda ctx, p, v: _float_list(v),
              help="'multistep': the rate in each interval between milestones, e.g. "
                   "0.01,0.001,0.0001 (default: the recipe's, else --lr times gamma per "
                   "milestone).")
@click.option("--step-size", type=click.IntRange(min=1),
              help="'step': epochs between drops (default: the recipe's).")
@click.option("--gamma", type=click.FloatRange(min=0, min_open=True),
              help="'step' and 'multistep': the factor at each drop (default: the recipe's).")
@click.option("--factor", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              help="'plateau': the factor when validation stops improving (default: the "
                   "recipe's).")
@click.option("--patience", type=click.IntRange(min=0),
              help="'plateau': epochs without improvement before a drop (default: the recipe's).")
@click.option("--warmup", "warmup_epochs", type=float, help="Linear warm-up, in epochs.")
@click.option("--augment/--no-augment", default=None,
              help="Random crop and horizontal flip as the recipe says (--no-augment: none).")
@click.option("--crop-padding", type=click.IntRange(min=0),
              help="Random-crop augmentation: pad each side by this many pixels, then crop back "
                   "to the input size at a random offset (0: no crop; default: the recipe's).")
@click.option("--flip/--no-flip", default=None,
              help="Random horizontal flips (default: the recipe's).")
@click.option("--label-smoothing", type=float, help="Label smoothing for the loss.")
@click.option("--width", type=float, default=1.0, show_default=True,
              help="Width multiplier: scales every layer's channel count.")
@click.option("--input-size", type=int, help="Square input size (default: the model's).")
@click.option("--classic", is_flag=True, help="LeNet-5 only: the 1998 tanh/average-pool variant.")
@click.option("--aux", is_flag=True, help="GoogLeNet only: train the auxiliary classifiers too.")
@click.option("--limit", type=click.IntRange(min=1),
              help="Use only the first N training images (quick runs).")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Fraction of training data held out for validation when none is given.")
@click.option("--stream/--no-stream", default=None,
              help="Stream the data instead of loading it whole (hub datasets, parquet/arrow/csv/"
                   "jsonl, image folders; not IDX). Default: stream a local dataset whose files "
                   "take more than a quarter of this machine's memory.")
@click.option("--shuffle-buffer", type=int,
              help="Streaming: rows held by the shuffle buffer (default 10000; 0: source order).")
@click.option("--stats-sample", type=int,
              help="Streaming: training images the normalisation statistics come from "
                   "(default 10000).")
@run_options("metrics", "runs/latest")
def train_image(resume_dir, augment, device, **opts):
    """Train an image CNN and report its test error."""
    from rich.console import Console

    from cli._progress import ProgressPrinter
    from numconv.train.image import ImageConfig, train_image as run

    check_resume_options(resume_dir)
    _check_option_conflicts(augment, opts)
    console = Console()
    if device is not None:
        chosen = pick_device(device)
        if device == "auto":
            console.print(f"--device auto: running on {chosen}")
        device = chosen
    cfg = ImageConfig(**{k: v for k, v in opts.items()}, device=device)
    if augment is False:
        if cfg.crop_padding or cfg.flip:
            raise click.UsageError("--no-augment turns off --crop-padding and --flip; give "
                                   "one or the other")
        cfg.crop_padding, cfg.flip = 0, False
    if resume_dir:
        cfg.run_dir = resume_dir
    with fail_cleanly(), ProgressPrinter(console, "images") as printer:
        summary = run(cfg, callbacks=printer.callbacks(), resume=bool(resume_dir),
                      progress=printer.data_progress)
    console.print(f"trained {summary['model']} on {summary['dataset']}; "
                  f"best validation accuracy {summary['best_val_acc']:.2%} "
                  f"(epoch {summary['best_epoch']})")
    if summary.get("test"):
        t = summary["test"]
        console.print(f"test: top-1 error {t['top1_error']:.2%}, top-5 error "
                      f"{t['top5_error']:.2%} on {t['count']} images; report in "
                      f"{summary['run_dir']}/report.json")
        plot_curves(console, summary["run_dir"])
    else:
        console.print(f"stopped early; continue with: numconv train-image --resume "
                      f"{summary['run_dir']}")

