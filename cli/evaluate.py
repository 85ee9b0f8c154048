"""`numconv evaluate RUN`: the saved model's top-1/top-5 error and confusion matrix on the test split."""
import click

from cli._common import DEVICE_HELP, fail_cleanly, pick_device


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
              show_default=True, help="Which checkpoint to evaluate.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Evaluation batch.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
              show_default=True, help="Where to run the model: " + DEVICE_HELP)
def evaluate(run_dir, checkpoint, batch_size, device):
    """Evaluate a saved run on its test split."""
    from rich.console import Console
    from rich.table import Table

    from numconv.text import is_text_run
    from numconv.train.image import evaluate_run

    console = Console()
    device = pick_device(device)
    if is_text_run(run_dir):
        from numconv.text.train import evaluate_text_run
        with fail_cleanly():
            report = evaluate_text_run(run_dir, which=checkpoint, device=device)
        f1 = f", chunk F1 {report['f1']:.2f}" if "f1" in report else ""
        console.print(f"test: accuracy {report['acc']:.2%}{f1}")
        return
    with fail_cleanly():
        report = evaluate_run(run_dir, which=checkpoint, batch_size=batch_size, device=device)
    console.print(f"test: {report['count']} images, top-1 error {report['top1_error']:.2%}, "
                  f"top-5 error {report['top5_error']:.2%}, loss {report['loss']:.4f}")
    classes = report["classes"]
    if len(classes) <= 20:
        table = Table(title="confusion matrix (rows: true class, columns: predicted)")
        table.add_column("")
        for c in classes:
            table.add_column(str(c), justify="right")
        for c, row in zip(classes, report["confusion_matrix"]):
            table.add_row(str(c), *[str(v) for v in row])
        console.print(table)
