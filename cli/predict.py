"""`numconv predict RUN INPUT...`: the label and class probabilities of each image (image runs) or
sentence (text runs; tagging runs print each word with its tag)."""
import click

from cli._common import DEVICE_HELP, fail_cleanly, pick_device


@click.command()
@click.argument("run_dir", type=click.Path())
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top", type=int, default=3, show_default=True, help="How many classes to show.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
              show_default=True, help="Where to run the model: " + DEVICE_HELP)
def predict(run_dir, inputs, top, device):
    """Classify image files, or sentences with a text run."""
    from rich.console import Console

    from numconv.text import is_text_run
    from numconv.train.image import predict_files

    console = Console()
    device = pick_device(device)
    if is_text_run(run_dir):
        from numconv.text.train import predict_text
        with fail_cleanly():
            results = predict_text(run_dir, list(inputs), device=device)
        for r in results:
            if "tags" in r:
                console.print(" ".join(f"{w}/{t}" for w, t in zip(r["tokens"], r["tags"])))
            else:
                probs = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:max(1, top)]
                shown = ", ".join(f"{c} {p:.1%}" for c, p in probs)
                console.print(f"{r['input']!r}: [bold]{r['label']}[/]  ({shown})")
        return
    with fail_cleanly():
        results = predict_files(run_dir, list(inputs), device=device)
    for path, probs, classes in results:
        order = probs.argsort()[::-1][:max(1, top)]
        shown = ", ".join(f"{classes[i]} {probs[i]:.1%}" for i in order)
        console.print(f"{path}: [bold]{classes[order[0]]}[/]  ({shown})")
