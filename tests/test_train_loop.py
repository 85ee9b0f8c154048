"""The shared training loop: model selection by the validation score that `evaluate` names."""
import json
import os

import numpy as np

from numconv.nn import Linear, SoftmaxCrossEntropy
from numconv.optim import SGD, Schedule
from numconv.train import loop
from numconv.train.checkpoint import checkpoint_path, load_checkpoint


def _fit(tmp_path, figures):
    """Three epochs of a tiny Linear model whose validation figures are scripted per epoch."""
    os.makedirs(os.path.join(tmp_path, "checkpoints"))   # the trainers make it with the run
    rng = np.random.default_rng(0)
    model = Linear(4, 3, rng=rng)
    opt = SGD(model.named_parameters(), 0.1, 0.0)
    loss_fn = SoftmaxCrossEntropy()
    batches = [(rng.standard_normal((5, 4)).astype(np.float32), rng.integers(0, 3, 5))]

    def step_fn(m, batch):
        loss, d = loss_fn(m.forward(batch[0]), batch[1])
        m.backward(d)
        return loss, 0, len(batch[1])
    seen = iter(figures)
    state, finished = loop.fit(model, opt, Schedule("constant", 0.1, 3), epochs=3,
                               batches_for_epoch=lambda e: batches, step_fn=step_fn,
                               evaluate=lambda m: dict(next(seen)), run_dir=str(tmp_path))
    assert finished
    return state


def test_best_epoch_follows_the_score_when_evaluate_gives_one(tmp_path):
    figures = [{"loss": 1.0, "acc": 0.5, "score": 0.7, "f1": 70.0},
               {"loss": 0.9, "acc": 0.9, "score": 0.6, "f1": 60.0},     # best accuracy
               {"loss": 0.8, "acc": 0.6, "score": 0.8, "f1": 80.0}]     # best score
    state = _fit(tmp_path, figures)
    assert (state.best_epoch, state.best_val_score) == (3, 0.8)
    assert load_checkpoint(checkpoint_path(str(tmp_path), "best"))[3]["best_epoch"] == 3
    log = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
    assert [r["val_score"] for r in log] == [0.7, 0.6, 0.8]
    assert [r["val_f1"] for r in log] == [70.0, 60.0, 80.0]
    assert [r["val_acc"] for r in log] == [0.5, 0.9, 0.6]


def test_without_a_score_the_best_epoch_is_the_most_accurate(tmp_path):
    figures = [{"loss": 1.0, "acc": 0.5}, {"loss": 0.9, "acc": 0.9}, {"loss": 0.8, "acc": 0.6}]
    state = _fit(tmp_path, figures)
    assert (state.best_epoch, state.best_val_score) == (2, 0.9)
    log = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
    assert "val_score" not in log[0]
    # a checkpoint written before the score existed ("best_val_acc") still resumes
    meta = dict(state.to_meta())
    meta["best_val_acc"] = meta.pop("best_val_score")
    assert loop.TrainState.from_meta(meta).best_val_score == 0.9
