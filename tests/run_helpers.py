"""Shared by the training-pipeline tests: a stand-in for Ctrl-C and metric comparison."""


class StopAfter:
    """A stop flag that trips after `n` batches, as Ctrl-C would."""

    def __init__(self, n):
        self.n, self.seen, self.stop = n, 0, False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def tick(self, *args):
        self.seen += 1
        if self.seen >= self.n:
            self.stop = True


def strip_timings(history):
    """Metrics without wall-clock fields, which legitimately differ between runs."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "items_per_s")} for r in history]
