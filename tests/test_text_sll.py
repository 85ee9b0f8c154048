"""Sentence-level log-likelihood (numconv.text.sll) against its definition by enumeration of every
tag path, gradients against finite differences, Viterbi over learned scores against brute force,
and `train-text --loss sll` end to end (training, checkpoint, resume, predict, errors)."""
import itertools
import json
import os

import numba
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from numconv.text.decode import viterbi_scores
from numconv.text.sll import sentence_loss
from numconv.text.train import (TextConfig, _splits, encode_split, evaluate_text_run,
                                 load_data, load_text_run, make_preparer, predict_logits,
                                 predict_text, train_text)
from numconv.train import loop
from numconv.train.checkpoint import checkpoint_path, load_checkpoint
from run_helpers import StopAfter, strip_timings
from test_text_train import _tiny_conll


def _path_score(f, A, y):
    K = f.shape[1]
    return A[K, y[0]] + f[0, y[0]] + sum(A[y[t - 1], y[t]] + f[t, y[t]] for t in range(1, len(y)))


def _nll_by_enumeration(logits, A, tags, lengths):
    """-log p(gold path), p over all K^L paths, summed over sentences / real tokens."""
    K = logits.shape[1]
    total = 0.0
    for n, L in enumerate(lengths):
        if L == 0:
            continue
        f = logits[n, :, :L].T
        scores = [_path_score(f, A, y) for y in itertools.product(range(K), repeat=L)]
        m = max(scores)
        total += m + np.log(np.sum(np.exp(np.array(scores) - m))) - _path_score(f, A, tags[n, :L])
    return total / max(1, sum(lengths))


def _problem(seed=0, N=4, K=3, T=4, lengths=(4, 2, 0, 3)):
    rng = np.random.default_rng(seed)
    logits = 2 * rng.standard_normal((N, K, T))
    A = rng.standard_normal((K + 1, K))
    tags = rng.integers(0, K, (N, T))
    return logits, A, tags, np.array(lengths)


def test_loss_is_the_enumerated_negative_log_likelihood():
    logits, A, tags, lengths = _problem()
    loss, _, _ = sentence_loss(logits, A, tags, lengths)
    assert loss == pytest.approx(_nll_by_enumeration(logits, A, tags, lengths), rel=1e-12)
    # tags past a sentence's end (even out of range) are never read
    tags2 = tags.copy()
    tags2[1, 2:] = 99
    assert sentence_loss(logits, A, tags2, lengths)[0] == loss


def test_gradients_match_central_differences():
    logits, A, tags, lengths = _problem(seed=1)
    _, dlogits, dA = sentence_loss(logits, A, tags, lengths)
    eps = 1e-6
    for arr, grad in ((logits, dlogits), (A, dA)):
        num = np.zeros_like(arr)
        for i in np.ndindex(*arr.shape):
            e = np.zeros_like(arr)
            e[i] = eps
            args = [(logits + e, A), (logits - e, A)] if arr is logits else \
                [(logits, A + e), (logits, A - e)]
            num[i] = (_nll_by_enumeration(*args[0], tags, lengths)
                      - _nll_by_enumeration(*args[1], tags, lengths)) / (2 * eps)
        np.testing.assert_allclose(grad, num, atol=1e-8)
    assert np.all(dlogits[2] == 0) and np.all(dlogits[1, :, 2:] == 0)   # no gradient on padding


def test_float32_scores_keep_their_dtype_and_large_scores_do_not_overflow():
    logits, A, tags, lengths = _problem(seed=2)
    loss, dl, dA = sentence_loss((500 * logits).astype(np.float32), A.astype(np.float32), tags,
                                 lengths)
    assert np.isfinite(loss) and dl.dtype == np.float32 and dA.dtype == np.float32
    assert np.all(np.isfinite(dl)) and np.all(np.isfinite(dA))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_same_bits_whatever_the_thread_count():
    logits, A, tags, lengths = _problem(seed=3, N=9, K=5, T=7, lengths=(7, 1, 3, 5, 7, 2, 6, 4, 7))
    before = numba.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            numba.set_num_threads(n)
            out.append(sentence_loss(logits, A, tags, lengths))
    finally:
        numba.set_num_threads(before)
    assert out[0][0] == out[1][0]
    for a, b in zip(out[0][1:], out[1][1:]):
        np.testing.assert_array_equal(a, b)


def test_bad_shapes_are_named():
    logits, A, tags, lengths = _problem()
    with pytest.raises(ValueError, match="transitions must be"):
        sentence_loss(logits, A[:-1], tags, lengths)
    with pytest.raises(ValueError, match="lengths must be"):
        sentence_loss(logits, A, tags, np.array([5, 1, 1, 1]))
    with pytest.raises(ValueError, match="tags must lie"):
        sentence_loss(logits, A, np.full_like(tags, 3), lengths)


def test_viterbi_scores_finds_the_best_path():
    rng = np.random.default_rng(4)
    K = 3
    for T in (1, 2, 5):
        f = rng.standard_normal((T, K))
        A = rng.standard_normal((K + 1, K))
        best = max(itertools.product(range(K), repeat=T), key=lambda y: _path_score(f, A, y))
        np.testing.assert_array_equal(viterbi_scores(f, A), best)
    assert viterbi_scores(np.zeros((0, K)), A).shape == (0,)


def _train(tmp_path, name, *extra):
    run = str(tmp_path / name)
    result = CliRunner().invoke(main, ["train-text", "--model", "window", "--dataset",
                                       str(tmp_path), "--epochs", "3", "--hidden", "32",
                                       "--lr", "0.01", "--loss", "sll", "--run-dir", run,
                                       "--threads", "2", *extra])
    assert result.exit_code == 0, result.output
    return run


def test_train_text_with_sentence_level_loss(tmp_path):
    """The tagger learns transition scores (saved with the weights), tags the toy chunking task,
    decodes with its learned scores, and resumes exactly."""
    _tiny_conll(tmp_path)
    run = _train(tmp_path, "sll")
    report = json.loads(open(os.path.join(run, "report.json")).read())
    assert report["acc"] > 0.95 and report["f1"] > 90
    assert json.loads(open(os.path.join(run, "config.json")).read())["loss"] == "sll"
    state = load_checkpoint(checkpoint_path(run, "best"))[0]
    trans = state["transitions"]
    classes = json.loads(open(os.path.join(run, "config.json")).read())["classes"]
    K = len(classes)
    assert trans.shape == (K + 1, K) and np.abs(trans).max() > 0    # learned, not left at 0
    # I-NP never follows B-VP in the data: the learned score says so
    assert trans[classes.index("B-VP"), classes.index("I-NP")] < \
        trans[classes.index("B-NP"), classes.index("I-NP")]
    # the reported loss is the sentence-level one, per token (not a token softmax's)
    report = evaluate_text_run(run)
    doc, cfg, vocab, model = load_text_run(run)
    data = load_data(cfg)
    test = encode_split(_splits(cfg, data, None)[2], vocab, cfg, doc["classes"],
                        cfg.feature_vocabs)
    logits = predict_logits(model, test, make_preparer(cfg, model.pad))
    lengths = np.array([len(t) for t in test.y])
    padded = np.zeros((len(lengths), K, lengths.max()))
    gold = np.zeros((len(lengths), lengths.max()), np.int64)
    for n, (l, t) in enumerate(zip(logits, test.y)):
        padded[n, :, :len(t)], gold[n, :len(t)] = l.T, t
    want = sentence_loss(padded, model.params["transitions"], gold, lengths)[0]
    assert report["loss"] == pytest.approx(want, rel=1e-6)
    out = predict_text(run, ["the cat sees IBM ."])
    assert out[0]["tags"] == ["B-NP", "I-NP", "B-VP", "B-NP", "O"]

    # stopped after 7 batches (144 training sentences / 32 = 5 an epoch) and resumed: the same
    # metrics as the uninterrupted run, transition scores and their optimiser state included
    cfg = dict(model="window", dataset=str(tmp_path), epochs=3, hidden=32, lr=0.01, loss="sll",
               threads=2)
    full = train_text(TextConfig(**cfg, run_dir=str(tmp_path / "full")))
    flag = StopAfter(7)
    part = train_text(TextConfig(**cfg, run_dir=str(tmp_path / "part")),
                      callbacks=loop.Callbacks(batch_end=flag.tick), stop_flag=flag)
    assert not part["finished"]
    resumed = train_text(TextConfig(run_dir=str(tmp_path / "part")), resume=True)
    assert strip_timings(resumed["history"]) == strip_timings(full["history"])
    assert resumed["test"] == full["test"]


def test_sentence_level_loss_is_for_taggers(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\n" * 10)
    result = CliRunner().invoke(main, ["train-text", "--dataset", str(tmp_path / "train.csv"),
                                       "--loss", "sll", "--run-dir", str(tmp_path / "r")])
    assert result.exit_code != 0 and "--loss sll" in result.output
    assert "Traceback" not in result.output
