"""Rendering training progress with rich: one progress bar per epoch (loss, accuracy, items/s) and a
summary line per epoch printed above the bars; before them, a bar per data-loading stage, which
pulses with a running count when its total is not known. Shared by train-image and train-text."""
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressPrinter:
    def __init__(self, console=None, unit="images"):
        self.console = console or Console()
        self.unit = unit
        self.progress = Progress(
            TextColumn("[bold]{task.fields[label]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=self.console,
            transient=True)
        self.task = None
        self.data_task = self.data_stage = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def callbacks(self):
        from numconv.train.loop import Callbacks
        return Callbacks(epoch_start=self.epoch_start, batch_end=self.batch_end,
                         epoch_end=self.epoch_end, message=self.message)

    def data_progress(self, stage, done, total):
        """Data loading: one bar per stage; with total None (rows still being counted) the bar
        pulses and shows the count so far."""
        if self.data_task is None or self.data_stage != stage:
            if self.data_task is not None:
                self.progress.remove_task(self.data_task)
            self.data_task = self.progress.add_task(stage, total=total, label=stage, stats="")
            self.data_stage = stage
        self.progress.update(self.data_task, completed=done, total=total)

    def epoch_start(self, epoch, n):
        if self.data_task is not None:
            self.progress.remove_task(self.data_task)
            self.data_task = None
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=n, label=f"epoch {epoch + 1}",
                                           stats=self._stats(0.0, 0.0, 0.0))

    def _stats(self, loss, acc, rate):
        return f"loss {loss:.4f}  acc {acc:.2%}  {rate:.0f} {self.unit}/s"

    def batch_end(self, epoch, i, n, stats):
        self.progress.update(self.task, completed=i + 1,
                             stats=self._stats(stats["loss"], stats["acc"], stats["items_per_s"]))

    def epoch_end(self, r):
        self.console.print(
            f"epoch {r['epoch']:3d}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.2%}  "
            f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.2%}  lr {r['lr']:.3g}  "
            f"{r['items_per_s']:.0f} {self.unit}/s")

    def message(self, text):
        self.console.print(text)
