"""Viterbi decoding of tagger scores under the transitions seen in training."""
import itertools

import numpy as np

from numconv.text.decode import allowed_transitions, log_softmax, viterbi


def _brute_force(logits, allowed):
    T, K = logits.shape
    scores = log_softmax(logits.astype(np.float64))
    best, best_path = -np.inf, None
    for path in itertools.product(range(K), repeat=T):
        prev, ok = K, True
        for t in path:
            ok &= allowed[prev, t]
            prev = t
        if ok:
            total = sum(scores[i, t] for i, t in enumerate(path))
            if total > best:
                best, best_path = total, path
    return best_path


def test_allowed_transitions_marks_starts_and_successions():
    a = allowed_transitions([np.array([0, 1, 1, 2]), np.array([2, 0])], 3)
    assert a.shape == (4, 3)
    assert a[3].tolist() == [True, False, True]          # sentences began with 0 and 2
    assert a[0, 1] and a[1, 1] and a[1, 2] and a[2, 0]
    assert not a[0, 0] and not a[2, 1] and a.sum() == 6


def test_viterbi_is_the_best_allowed_sequence():
    rng = np.random.default_rng(0)
    for _ in range(40):
        K, T = int(rng.integers(2, 5)), int(rng.integers(1, 6))
        allowed = rng.random((K + 1, K)) < 0.6
        allowed[:, 0] = True                               # some path always exists
        logits = rng.standard_normal((T, K)).astype(np.float32) * 3
        path = viterbi(logits, allowed)
        assert tuple(path) == _brute_force(logits, allowed)


def test_viterbi_repairs_an_impossible_chunk_and_falls_back_to_argmax():
    B_NP, I_NP, B_VP = 0, 1, 2
    allowed = allowed_transitions([np.array([B_NP, I_NP, B_VP]), np.array([B_VP, B_NP])], 3)
    # token 2 prefers I-NP by a hair, but I-NP never follows B-VP in training
    logits = np.log(np.array([[0.1, 0.1, 0.8], [0.1, 0.46, 0.44]]))
    assert np.argmax(logits, axis=1).tolist() == [B_VP, I_NP]
    assert viterbi(logits, allowed).tolist() == [B_VP, B_NP]
    nothing = np.zeros((4, 3), bool)
    assert viterbi(logits, nothing).tolist() == [B_VP, I_NP]
    assert viterbi(np.zeros((0, 3)), allowed).shape == (0,)
