"""The training loop shared by the image and text pipelines.

`fit` runs epochs of `step_fn` (forward, loss, backward for one batch: gradients accumulate in the
model) followed by the optimiser's update, evaluates on the validation split after each epoch, and
keeps the run directory up to date: metrics.jsonl (one JSON line per epoch), checkpoints/last.npz
(everything needed to continue) and checkpoints/best.npz (best validation accuracy).

Reproducibility: batches are a pure function of (seed, epoch) and dropout masks of the global step,
so a run resumed from any checkpoint — an epoch boundary or the batch where Ctrl-C stopped it —
continues exactly as the uninterrupted run would have. Ctrl-C finishes the current step, saves, and
returns; a non-finite loss stops the run before anything is saved, so the last good checkpoint
stays. Progress is reported through `callbacks`; nothing here prints.
"""
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from numconv.kernels.cpu._blas import single_threaded_blas
from numconv.ops import _buffers as buffers
from numconv.train.checkpoint import atomic_write_text, checkpoint_path, save_checkpoint


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Callbacks:
    epoch_start: object = None     # (epoch, n_batches)
    batch_end: object = None       # (epoch, i, n_batches, stats dict)
    epoch_end: object = None       # (record dict)
    message: object = None         # (text)

    def call(self, name, *args):
        fn = getattr(self, name)
        if fn is not None:
            fn(*args)


@dataclass
class TrainState:
    epoch: int = 0            # the epoch in progress (0-based)
    batch: int = 0            # batches of it already done
    step: int = 0             # optimiser steps so far
    sums: dict = field(default_factory=lambda: {"loss": 0.0, "correct": 0, "count": 0,
                                                "seconds": 0.0})
    best_val_score: float = -1.0   # the best validation score (`evaluate`'s "score", else "acc")
    best_epoch: int = -1
    history: list = field(default_factory=list)

    def to_meta(self):
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step, "sums": self.sums,
                "best_val_score": self.best_val_score, "best_epoch": self.best_epoch,
                "history": self.history}

    @classmethod
    def from_meta(cls, meta):
        best = meta["best_val_score"] if "best_val_score" in meta else meta["best_val_acc"]
        return cls(meta["epoch"], meta["batch"], meta["step"], dict(meta["sums"]), best,
                   meta["best_epoch"], list(meta["history"]))


def set_dropout_step(model, step):
    for _, m in model.modules():
        if hasattr(m, "step") and hasattr(m, "p") and hasattr(m, "seed"):
            m.step = step


class _StopFlag:
    """SIGINT sets a flag that the loop checks between steps (a step is never cut in half)."""

    def __init__(self):
        self.stop = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.stop:   # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _write_metrics(run_dir, history):
    atomic_write_text(os.path.join(run_dir, "metrics.jsonl"),
                      "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))


def fit(model, optimizer, schedule, *, epochs, batches_for_epoch, step_fn, evaluate, run_dir,
        state=None, callbacks=None, after_step=None, extra_meta=None, stop_flag=None):
    """Train until `epochs` epochs are done, or Ctrl-C. Returns (state, finished: bool).

    batches_for_epoch(epoch) -> list of batches (deterministic for the epoch)
    step_fn(model, batch) -> (loss, correct, count)  forward + backward, gradients accumulated
    evaluate(model) -> dict with at least 'loss' and 'acc' on the validation split, and optionally
                       'score': the figure to select the best epoch by, if not 'acc' (higher is
                       better; a chunker's F1); any other entries are logged as val_<name>
    after_step(model) optional, e.g. a max-norm constraint applied after each update
    """
    cb = callbacks or Callbacks()
    st = state or TrainState()
    meta_extra = extra_meta or {}

    def save(which, st_):
        save_checkpoint(checkpoint_path(run_dir, which), model.state_dict(),
                        optimizer.state_dict(), schedule.state_dict(),
                        dict(meta_extra, **st_.to_meta()))

    try:
        with (stop_flag or _StopFlag()) as flag, single_threaded_blas():
            while st.epoch < epochs:
                batches = batches_for_epoch(st.epoch)
                n = len(batches)
                cb.call("epoch_start", st.epoch, n)
                model.train()
                for i in range(st.batch, n):
                    t0 = time.perf_counter()
                    optimizer.lr = schedule.lr(st.epoch + i / max(n, 1))
                    model.zero_grad()
                    set_dropout_step(model, st.step)
                    loss, correct, count = step_fn(model, batches[i])
                    if not math.isfinite(loss):
                        raise TrainingDiverged(
                            f"the loss became {loss} at epoch {st.epoch + 1}, batch {i + 1}; stopped "
                            f"without saving, the last good checkpoint is kept. Try a lower learning "
                            f"rate (now {optimizer.lr:g})")
                    optimizer.step()
                    if after_step is not None:
                        after_step(model)
                    st.step += 1
                    st.batch = i + 1
                    s = st.sums
                    s["loss"] += loss * count
                    s["correct"] += int(correct)
                    s["count"] += int(count)
                    s["seconds"] += time.perf_counter() - t0
                    cb.call("batch_end", st.epoch, i, n, {
                        "loss": s["loss"] / s["count"], "acc": s["correct"] / s["count"],
                        "items_per_s": s["count"] / max(s["seconds"], 1e-9), "lr": optimizer.lr})
                    if flag.stop and st.batch < n:
                        save("last", st)
                        cb.call("message", f"interrupted at epoch {st.epoch + 1}, batch {st.batch}; "
                                           f"saved {checkpoint_path(run_dir, 'last')}")
                        return st, False
                model.eval()
                val = evaluate(model)
                s = st.sums
                record = {"epoch": st.epoch + 1, "train_loss": s["loss"] / max(s["count"], 1),
                          "train_acc": s["correct"] / max(s["count"], 1),
                          "val_loss": val["loss"], "val_acc": val["acc"], "lr": optimizer.lr,
                          "items_per_s": s["count"] / max(s["seconds"], 1e-9),
                          "seconds": s["seconds"]}
                # further validation figures (chunk F1, ...) go into the log as val_<name>; "score",
                # when given, is what model selection and the plateau schedule maximise (else acc)
                record.update({f"val_{k}": v for k, v in val.items() if k not in ("loss", "acc")})
                score = val.get("score", val["acc"])
                schedule.end_epoch(score)
                st.history.append(record)
                improved = score > st.best_val_score
                if improved:
                    st.best_val_score, st.best_epoch = score, st.epoch + 1
                st.epoch += 1
                st.batch = 0
                st.sums = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
                if improved:
                    save("best", st)
                save("last", st)
                _write_metrics(run_dir, st.history)
                cb.call("epoch_end", record)
                if flag.stop:
                    cb.call("message", f"interrupted after epoch {st.epoch}; saved "
                                       f"{checkpoint_path(run_dir, 'last')}")
                    return st, st.epoch >= epochs
        return st, True
    finally:
        buffers.release()   # the steps' recycled buffers go back to the allocator


def classification_report(logits, labels, num_classes):
    """Top-1 and top-5 error (the ILSVRC metric) and the confusion matrix (rows: true class)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    order = np.argsort(-logits, axis=1, kind="stable")
    top1 = order[:, 0]
    k = min(5, logits.shape[1])
    in_top5 = (order[:, :k] == labels[:, None]).any(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, top1), 1)
    return {"count": int(len(labels)), "top1_error": float(np.mean(top1 != labels)),
            "top5_error": float(1 - np.mean(in_top5)), "accuracy": float(np.mean(top1 == labels)),
            "confusion_matrix": confusion.tolist()}
