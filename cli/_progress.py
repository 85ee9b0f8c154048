"""Rendering training progress with rich: one progress bar per epoch (loss, accuracy, items/s) and a
summary line per epoch printed above the bars. Shared by train-image and train-text."""
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressPrinter:
    def __init__(self, console=None, unit="images"):
        self.console = console or Console()
        self.unit = unit
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.2%}  "
                       "{task.fields[rate]:.0f} " + unit + "/s"),
            TimeElapsedColumn(), console=self.console, transient=True)
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def callbacks(self):
        from numconv.train.loop import Callbacks
        return Callbacks(epoch_start=self.epoch_start, batch_end=self.batch_end,
                         epoch_end=self.epoch_end, message=self.message)

    def epoch_start(self, epoch, n):
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=n, epoch=epoch + 1, loss=0.0, acc=0.0,
                                           rate=0.0)

    def batch_end(self, epoch, i, n, stats):
        self.progress.update(self.task, completed=i + 1, loss=stats["loss"], acc=stats["acc"],
                             rate=stats["items_per_s"])

    def epoch_end(self, r):
        self.console.print(
            f"epoch {r['epoch']:3d}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.2%}  "
            f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.2%}  lr {r['lr']:.3g}  "
            f"{r['items_per_s']:.0f} {self.unit}/s")

    def message(self, text):
        self.console.print(text)
